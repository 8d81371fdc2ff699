// What the reading verbs print against a live daemon: every --json document fits its
// documented schema (src/cli/output-schemas.ts), human `list` shows each rule's source and the
// TTL of each output, human `stats` shows a non-zero drop reason, `status` counts rules,
// workers and interfaces, `config show` prints a file that `config check` accepts and that
// gives a new daemon the same rules, `sink --expect N` exits 9 when fewer arrive, and the
// compiled binary reads option groups (`-wjn1`) and `--` as getopt does.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as v from "valibot";
import { readFileSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, mcrelayCommand, runGen, type RelayTopology } from "../support/relay-harness.ts";
import { TempDir, TestDaemon, runMcrelay, sink, waitFor, type ListedRule, type StatsResult } from "../support/daemon-harness.ts";
import { VERB_OUTPUT_SCHEMAS, SinkOutputSchema } from "../../src/cli/output-schemas.ts";
import { schemaProblems } from "../../src/control/responses.ts";
import { EXIT } from "../../src/errors.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 180_000;

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir;

const CONFIG = `{
  workers: { r0: 2 },
  rules: [
    { name: "plain", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1", "239.2.2.3:6000@r2"], ttl: 5 },
    // Only from 10.9.9.9: the generator's packets are counted as source_mismatch.
    { name: "filtered", from: "239.1.1.2:5000@r0", to: ["239.2.2.4:6000@r1"], source: "10.9.9.9" },
    { name: "tagged", from: "239.1.1.5:5000@r0,vlan=100", to: ["239.2.2.7:6000@r2,ttl=9,dscp=46"] },
  ],
}`;

describe_netns("reading verbs against a live daemon (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("clioutput");
    rt = await buildRelayTopology(topo, { label: "clioutput", sinks: 2 });
    dir = new TempDir();
  }, T);

  afterAll(async () => {
    dir?.remove();
    await topo?.destroy();
  }, T);

  test(
    "every reading verb's --json fits its schema; human list shows source, VLAN and per-output settings; human stats shows source_mismatch; status counts it all",
    async () => {
      const d = await TestDaemon.start(rt, dir, { configPath: dir.file("mcrelay.json5", CONFIG), stateDir: dir.join("state1") });
      try {
        await d.json(["add", "--name", "late", "--from", "239.1.1.3:5000@nosuch0", "--to", "239.2.2.5:6000@r1"]);
        // d.json checks each document against VERB_OUTPUT_SCHEMAS (tests/support/daemon-harness.ts).
        const checked: string[] = [];
        for (const args of [["status"], ["list"], ["stats"], ["stats", "plain"], ["workers"], ["log-level"], ["ping"], ["version"], ["config", "show"]]) {
          await d.json(args);
          checked.push(args.join(" "));
        }
        expect(checked).toHaveLength(9);

        // A schema check that can fail: a document with one more key does not fit.
        const list = await d.json<{ rules: ListedRule[] }>(["list"]);
        expect(schemaProblems(VERB_OUTPUT_SCHEMAS.list!, { ...list, extra: 1 })).toEqual([expect.stringContaining("extra")]);

        const status = await d.json(["status"]);
        expect(status).toMatchObject({ mode: "daemon", config_file: d.configPath, rules: { total: 4, active: 3, pending: 1, error: 0, join_failed: 0 } });
        expect(status.workers.total).toBe(2); // workers: { r0: 2 }
        expect(status.interfaces).toEqual([
          { name: "nosuch0", state: "missing", inputs: 1, outputs: 0, workers: 0 },
          { name: "r0", state: "up", inputs: 3, outputs: 0, workers: 2 },
          { name: "r1", state: "up", inputs: 0, outputs: 3, workers: 0 },
          { name: "r2", state: "up", inputs: 0, outputs: 2, workers: 0 },
        ]);

        const human = await d.cli(["list"]);
        expect(human.exitCode).toBe(0);
        const lines = human.stdout.split("\n");
        expect(lines[0]).toMatch(/^name\s+id\s+state\s+origin\s+input\s+outputs\s+why$/);
        expect(lines.find((l) => l.startsWith("plain"))).toMatch(/239\.1\.1\.1:5000@r0\s+239\.2\.2\.2:6000@r1 ttl=5 dscp=copy gso=on$/);
        expect(lines.some((l) => /^\s+239\.2\.2\.3:6000@r2 ttl=5 dscp=copy gso=on$/.test(l))).toBe(true);
        expect(lines.find((l) => l.startsWith("filtered"))).toMatch(/239\.1\.1\.2:5000@r0 from 10\.9\.9\.9\s+239\.2\.2\.4:6000@r1 ttl=8 /);
        expect(lines.find((l) => l.startsWith("late"))).toMatch(/pending .*nosuch0/);
        expect(lines.find((l) => l.startsWith("tagged"))).toMatch(/239\.1\.1\.5:5000@r0,vlan=100\s+239\.2\.2\.7:6000@r2 ttl=9 dscp=46 gso=on$/);

        const sent = (await runGen(rt.topo, rt.gen, "bun", ["--to", "239.1.1.2:5000@g0", "--rate", "2000", "--count", "300", "--size", "200"])).sent;
        expect(sent).toBe(300);
        const drops = await waitFor("source_mismatch to count every packet", async () => {
          const s = await d.json<StatsResult>(["stats"]);
          const r0 = s.interfaces.filter((i) => i.interface === "r0");
          const n = r0.reduce((sum, i) => sum + i.counters.source_mismatch, 0);
          return n >= sent ? n : undefined;
        });
        expect(drops).toBe(sent);
        const humanStats = await d.cli(["stats"]);
        expect(humanStats.exitCode).toBe(0);
        expect(humanStats.stdout).toMatch(/interface r0: .*drops: .*source_mismatch 300/);
        expect(humanStats.stdout).toContain("filtered (active) 239.1.1.2:5000@r0 from 10.9.9.9: 0 packets");
        expect(humanStats.stdout).toMatch(/^filtered .*; drops: source_mismatch 300$/m);
      } finally {
        expect(await d.stop()).toBe(0);
      }
    },
    T,
  );

  test(
    "config show prints a file that config check accepts and that gives a new daemon the same rules",
    async () => {
      const d1 = await TestDaemon.start(rt, dir, { configPath: dir.file("first.json5", CONFIG), stateDir: dir.join("state2"), socket: dir.join("one.sock") });
      let shownText: string;
      let before: ListedRule[];
      try {
        await d1.json(["add", "--name", "runtime1", "--from", "239.1.1.4:5000@r0", "--to", "239.2.2.6:6000@r2", "--ttl", "3"]);
        before = (await d1.json<{ rules: ListedRule[] }>(["list"])).rules;
        const shown = await d1.cli(["config", "show"]);
        expect(shown.exitCode).toBe(0);
        shownText = shown.stdout;
      } finally {
        expect(await d1.stop()).toBe(0);
      }
      // The runtime rule is marked in a comment just above it.
      const lines = shownText.split("\n");
      const at = lines.findIndex((l) => l.includes('name: "runtime1"'));
      expect(lines[at - 1]).toMatch(/^\s+\/\/ id \d+: runtime rule/);
      expect(lines.filter((l) => /\/\/ id \d+: runtime rule/.test(l))).toHaveLength(1);
      expect(lines.filter((l) => /\/\/ id \d+: from the config file/.test(l))).toHaveLength(3);

      const file = dir.file("shown.json5", shownText);
      const check = await runMcrelay(["config", "check", file, "--json"]);
      expect(check.exitCode).toBe(0);
      const doc = JSON.parse(check.stdout);
      expect(schemaProblems(VERB_OUTPUT_SCHEMAS["config check"]!, doc)).toEqual([]);
      expect(doc).toMatchObject({ ok: true, format: "mcrelay", workers: { r0: 2 }, errors: [], warnings: [] });

      // A new daemon (fresh state) started with the shown file runs the same rules.
      const d2 = await TestDaemon.start(rt, dir, { configPath: file, stateDir: dir.join("state3"), socket: dir.join("two.sock") });
      try {
        const after = (await d2.json<{ rules: ListedRule[] }>(["list"])).rules;
        const shape = (rules: ListedRule[]) => rules.map(({ name, input, source, vlan, outputs }) => ({ name, input, source, vlan, outputs: outputs.map(({ to, ttl, dscp, gso }) => ({ to, ttl, dscp, gso })) }));
        expect(shape(after)).toEqual(shape(before));
        expect(after.map((r) => r.origin)).toEqual(["config", "config", "config", "config"]);
        expect((await d2.json(["workers"])).workers.filter((w: { interface: string }) => w.interface === "r0")).toHaveLength(2);
      } finally {
        expect(await d2.stop()).toBe(0);
      }
    },
    T,
  );

  test(
    "mcr's pinning gives an interface one worker per CPU listed, each pinned to its CPU, moved to another CPU at a reload without counting a failure; unpinned workers keep every CPU",
    async () => {
      const cpus = availableParallelism();
      const last = cpus - 1;
      const config = dir.file(
        "mcr-pinning.json5",
        `{ pinning: { r0: [${last}] },
           rules: [ { name: "pinned", input: { interface: "r0", group: "239.1.1.8", port: 5000 },
                      outputs: [ { group: "239.2.2.8", port: 6000, interface: "r1" } ] } ] }`,
      );
      const d = await TestDaemon.start(rt, dir, { configPath: config, stateDir: dir.join("state-pin"), socket: dir.join("pin.sock") });
      try {
        const workers = (await d.json(["workers"])).workers as { interface: string; pid: number | null; state: string }[];
        expect(workers.map((w) => [w.interface, w.state])).toEqual([["r0", "running"]]);
        const allowed = readFileSync(`/proc/${workers[0]!.pid}/status`, "utf8").match(/^Cpus_allowed_list:\s*(\S+)/m)?.[1];
        expect(allowed).toBe(String(last));
        // The rule is read with mcr's TTL default.
        expect((await d.json<{ rules: ListedRule[] }>(["list"])).rules[0]!.outputs[0]!.ttl).toBe(1);
        if (cpus > 1) {
          // Another CPU at a reload: the worker is started again on it, not counted as a failure.
          writeFileSync(config, readFileSync(config, "utf8").replace(`r0: [${last}]`, "r0: [0]"));
          await d.json(["reload"]);
          const moved = await waitFor("the worker running again on CPU 0", async () => {
            const w = ((await d.json(["workers"])).workers as { pid: number | null; state: string; restarts: number; applied_hash: string | null; table_hash: string }[])[0];
            return w && w.pid !== null && w.pid !== workers[0]!.pid && w.state === "running" && w.applied_hash === w.table_hash ? w : undefined;
          }, 20_000);
          expect(moved.restarts).toBe(0);
          expect(readFileSync(`/proc/${moved.pid}/status`, "utf8").match(/^Cpus_allowed_list:\s*(\S+)/m)?.[1]).toBe("0");
        }
      } finally {
        expect(await d.stop()).toBe(0);
      }
      // Without pinning the worker may run on any CPU.
      const plain = await TestDaemon.start(rt, dir, { configPath: dir.file("plain.json5", CONFIG), stateDir: dir.join("state-plain"), socket: dir.join("plain.sock") });
      try {
        const w = (await plain.json(["workers"])).workers.find((x: { interface: string }) => x.interface === "r0") as { pid: number };
        const allowed = readFileSync(`/proc/${w.pid}/status`, "utf8").match(/^Cpus_allowed_list:\s*(\S+)/m)?.[1];
        expect(allowed).toBe(cpus === 1 ? "0" : `0-${last}`);
      } finally {
        expect(await plain.stop()).toBe(0);
      }
    },
    T,
  );

  test(
    "the compiled binary reads option groups as getopt does and -- as the end of options: a rule named -dash added with -n-dash -tADDR, watched with stats -wjn1 -- -dash, removed with remove -- -dash; a word after -- where none is taken is refused",
    async () => {
      const d = await TestDaemon.start(rt, dir, { stateDir: dir.join("state-dash"), socket: dir.join("dash.sock") });
      try {
        // The control socket is a path: the binary reaches it from this namespace.
        const bin = (args: string[]) => runMcrelay(args, "compiled");
        const added = await bin(["add", `-js${d.socket}`, "-n-dash", "-f", "239.1.1.9:5000@r0", "-t239.2.2.9:6000@r1", "-t", "239.2.2.10:6000@r2"]);
        expect({ exitCode: added.exitCode, stderr: added.stderr }).toEqual({ exitCode: 0, stderr: added.stderr });
        const rule = JSON.parse(added.stdout).rule as { name: string; outputs: { to: string }[] };
        expect({ name: rule.name, outputs: rule.outputs.map((o) => o.to) }).toEqual({ name: "-dash", outputs: ["239.2.2.9:6000@r1", "239.2.2.10:6000@r2"] });

        // stats -wjn1: --watch, --json, --interval 1; the rule named after --. One JSON line a second.
        const watch = Bun.spawn({ cmd: [...mcrelayCommand("compiled"), "stats", "-wjn1", "-s", d.socket, "--", "-dash"], stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
        try {
          const reader = watch.stdout.getReader();
          let text = "";
          const deadline = Date.now() + 15_000;
          while (!text.includes("\n") && Date.now() < deadline) {
            const { value, done } = await reader.read();
            if (done) break;
            text += new TextDecoder().decode(value);
          }
          const first = JSON.parse(text.slice(0, text.indexOf("\n"))) as { time: string; rules: { name: string }[] };
          expect(first.rules.map((r) => r.name)).toEqual(["-dash"]);
        } finally {
          watch.kill();
          await watch.exited;
        }

        const stray = await bin(["list", "-s", d.socket, "--", "-dash"]);
        expect(stray.exitCode).toBe(EXIT.usage);
        expect(stray.stderr).toContain("unexpected argument after '--': '-dash' (this command takes no arguments");
        const unguarded = await bin(["remove", "-s", d.socket, "-dash"]);
        expect(unguarded.exitCode).toBe(EXIT.usage);
        expect(unguarded.stderr).toContain("to pass '-dash' as an argument, put it after '--'");
        const removed = await bin(["remove", "-s", d.socket, "--", "-dash"]);
        expect({ exitCode: removed.exitCode, stdout: removed.stdout }).toEqual({ exitCode: 0, stdout: expect.stringContaining("removed rule -dash") });
      } finally {
        expect(await d.stop()).toBe(0);
      }
    },
    T,
  );

  test(
    "the compiled binary runs the values it checked: a word starting with --no- taken as an option's value stays that value, and on/off options end as last given (citty dropped such words, emptied the option and applied --no-X last)",
    async () => {
      const d = await TestDaemon.start(rt, dir, { stateDir: dir.join("state-nowords"), socket: dir.join("nowords.sock") });
      try {
        const bin = (args: string[]) => runMcrelay(args, "compiled");
        const rule = ["--from", "239.1.1.11:5000@r0", "--to", "239.2.2.11:6000@r1"];
        // `--source $SRC --no-loop-guard` with SRC unset: the source filter is '--no-loop-guard', refused (the rule was added with no filter).
        const unset = await bin(["add", "-s", d.socket, "--name", "nofilter", ...rule, "--source", "--no-loop-guard"]);
        expect({ exitCode: unset.exitCode, stdout: unset.stdout }).toEqual({ exitCode: EXIT.usage, stdout: "" });
        expect(unset.stderr).toContain("--source: '--no-loop-guard'");
        // --no-loop-guard --loop-guard: the last wins, as it was checked (citty turned the guard off).
        const guarded = await bin(["add", "-s", d.socket, "--name", "guarded", ...rule, "--no-loop-guard", "--loop-guard", "--json"]);
        expect({ exitCode: guarded.exitCode, stderr: guarded.stderr }).toEqual({ exitCode: 0, stderr: guarded.stderr });
        expect(JSON.parse(guarded.stdout).rule.loop_guard).toBe(true);
        const names = async () => (await d.json<{ rules: ListedRule[] }>(["list"])).rules.map((r) => r.name);
        expect(await names()).toEqual(["guarded"]);
        // --no-json --json: the verb prints JSON, as main.ts reads it (it printed text).
        const json = await bin(["list", "-s", d.socket, "--no-json", "--json"]);
        expect(json.exitCode).toBe(0);
        expect(JSON.parse(json.stdout).rules.map((r: { name: string }) => r.name)).toEqual(["guarded"]);
        // `remove RULE -s $SOCK --no-json` with SOCK unset: the socket is '--no-json' (it talked to the default socket).
        const removed = await bin(["remove", "guarded", "-s", "--no-json"]);
        expect(removed.exitCode).toBe(EXIT.notRunning);
        expect(removed.stderr).toContain("no control socket at --no-json");
        expect(await names()).toEqual(["guarded"]);
        // `run ... --config $CFG --no-watch-config` with CFG unset: the config file is '--no-watch-config', which
        // does not exist (exit 3); the daemon started with no rules, exit 0 on SIGTERM.
        const daemon = await rt.topo.exec(rt.relay, [...mcrelayCommand("compiled"), "run", "--socket", dir.join("nocfg.sock"), "--state-dir", dir.join("state-nocfg"), "--config", "--no-watch-config"], { timeoutMs: 15_000, env: { NO_COLOR: "1" } });
        expect({ exitCode: daemon.exitCode, ready: daemon.stderr.includes("ready:") }).toEqual({ exitCode: EXIT.config, ready: false });
        expect(daemon.stderr).toContain("--no-watch-config");
      } finally {
        expect(await d.stop()).toBe(0);
      }
    },
    T,
  );

  test(
    "sink --expect N exits 9 when fewer than N arrive (and 0 when all do), printing its report either way",
    async () => {
      const run = async (expectN: number, sendN: number) => {
        const s = await sink(rt, rt.gen, "10.99.1.1:7000", ["--expect", String(expectN)], 1);
        // gen and sink in one namespace over its own address: no relay involved.
        await runGen(rt.topo, rt.gen, "bun", ["--to", "10.99.1.1:7000", "--rate", "5000", "--count", String(sendN), "--size", "100"]);
        const code = await s.wait(30_000);
        const report = JSON.parse(s.stdout);
        expect(schemaProblems(SinkOutputSchema, report)).toEqual([]);
        return { code, report: report as v.InferOutput<typeof SinkOutputSchema>, stderr: s.stderr };
      };
      const short = await run(500, 200);
      expect(short.code).toBe(EXIT.shortfall);
      expect(short.report).toMatchObject({ expect: 500, complete: false, totals: { received: 200, lost: 300 } });
      expect(short.stderr).toContain("expected 500 packets per stream: stream 1 received 200");
      const full = await run(200, 200);
      expect(full.code).toBe(0);
      expect(full.report).toMatchObject({ expect: 200, complete: true, totals: { received: 200, lost: 0 } });
    },
    T,
  );
});
