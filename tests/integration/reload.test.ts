// Reload (`mcrelay reload` and SIGHUP) against a live daemon with real traffic: a bad file
// changes nothing and says so; a good file applies only the difference, without a single lost
// packet on a rule it did not touch; runtime rules survive every reload.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, note, type RelayTopology } from "../support/relay-harness.ts";
import {
  TempDir,
  TestDaemon,
  burst,
  helloClient,
  killBackground,
  ruleNamed,
  sink,
  sinkReport,
  startStream,
  stopStream,
  waitFor,
  type ListedRule,
  type StatsResult,
  type WorkerRow,
} from "../support/daemon-harness.ts";
import type { Status as StatusResult } from "../../src/control/responses.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 180_000;

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir | undefined;
let daemon: TestDaemon | undefined;

interface Spec {
  name: string;
  from: string;
  to: string[];
  ttl?: number;
}

/** Rules on r0 (the generator side): input 239.1.1.N:5000, output 239.2.2.N:600N on `out`. */
function rule(name: string, n: number, out = "r1"): Spec {
  return { name, from: `239.1.1.${n}:5000@r0`, to: [`239.2.2.${n}:600${n}@${out}`] };
}

function writeConfig(path: string, rules: Spec[]): void {
  writeFileSync(path, JSON.stringify({ rules }, null, 2));
}

async function start(rules: Spec[]): Promise<TestDaemon> {
  dir = new TempDir();
  const configPath = dir.join("mcrelay.json5");
  writeConfig(configPath, rules);
  daemon = await TestDaemon.start(rt, dir, { configPath });
  return daemon;
}

async function list(d: TestDaemon): Promise<ListedRule[]> {
  return (await d.json<{ rules: ListedRule[] }>(["list"])).rules;
}

describe_netns("reload (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("reload");
    rt = await buildRelayTopology(topo, { label: "reload", sinks: 2 });
  }, T);

  afterEach(async () => {
    await killBackground();
    if (daemon?.running) expect(await daemon.stop()).toBe(0);
    daemon = undefined;
    dir?.remove();
    dir = undefined;
  }, T);

  afterAll(async () => {
    await topo?.destroy();
  }, T);

  test(
    "a reload with a bad file is refused (exit 6, config_invalid), says nothing changed, names the problem, and changes nothing",
    async () => {
      const d = await start([rule("a", 1), rule("b", 2)]);
      const before = await list(d);
      const workersBefore = (await d.json<{ workers: WorkerRow[] }>(["workers"])).workers;
      // A file that would remove b and add c, but has one unknown key.
      writeFileSync(d.configPath!, JSON.stringify({ rules: [rule("a", 1), { ...rule("c", 3), bogus: true }] }));
      const r = await d.cli(["reload", "--json"]);
      // With --json the refusal is also the JSON document on stdout, with the daemon's code.
      expect({ code: r.exitCode, stdout: JSON.parse(r.stdout) }).toEqual({
        code: 6,
        stdout: { ok: false, error: { kind: "refused", code: "config_invalid", exit_code: 6, message: expect.stringContaining("rules[1].bogus: unknown key") } },
      });
      expect(r.stderr).toContain("reload refused, nothing changed");
      expect(r.stderr).toContain("rules[1].bogus: unknown key");
      // The raw answer carries the documented code.
      const c = await helloClient(d.socket);
      try {
        expect(await c.request("reload")).toMatchObject({ ok: false, error: { code: "config_invalid" } });
      } finally {
        c.close();
      }

      // Not JSON5 at all, and a file that vanished: refused the same way.
      writeFileSync(d.configPath!, "{ rules: [ ");
      const notJson = await d.cli(["reload"]);
      expect(notJson.exitCode).toBe(6);
      expect(notJson.stderr).toContain("not valid JSON5");
      expect(await list(d)).toEqual(before);
      const workersAfter = (await d.json<{ workers: WorkerRow[] }>(["workers"])).workers;
      // Same workers, same table: nothing was touched.
      expect(workersAfter.map((w) => [w.interface, w.pid, w.table_hash])).toEqual(workersBefore.map((w) => [w.interface, w.pid, w.table_hash]));
      // And the rules still forward.
      const a = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.1:6001@s0", count: 500 });
      expect(a.sink.totals).toMatchObject({ received: 500, lost: 0, duplicates: 0, datagrams: 500 });
    },
    T,
  );

  test(
    "after a refused reload `status` says the running rules are not the file's: when it was loaded, when the reload failed, who asked and every problem; a good reload clears it",
    async () => {
      const d = await start([rule("a", 1), rule("b", 2)]);
      const good = await d.json<StatusResult>(["status"]);
      expect(good.config_file).toBe(d.configPath!);
      expect(good.config).toEqual({ file: d.configPath!, loaded_at: expect.any(String), reload_error: null });
      expect(Date.parse(good.config!.loaded_at)).toBeGreaterThanOrEqual(Date.parse(good.started_at));
      const human = await d.cli(["status"]);
      expect(human.stdout).toContain(`config: ${d.configPath}, loaded ${good.config!.loaded_at}`);
      expect(human.stdout).not.toContain("FAILED");

      // The file now drops b and adds c, with two mistakes: the reload is refused.
      writeFileSync(d.configPath!, JSON.stringify({ rules: [rule("a", 1), { ...rule("c", 3), bogus: true }], surprise: 1 }, null, 2));
      const refused = await d.cli(["reload", "--json"]);
      expect(refused.exitCode).toBe(6);
      const refusal = JSON.parse(refused.stdout).error.message as string;
      expect(refusal).toStartWith("reload refused, nothing changed: ");

      const bad = await d.json<StatusResult>(["status"]);
      // Every existing field as before; `config` tells what runs.
      expect(bad.config_file).toBe(d.configPath!);
      expect(bad.config!.loaded_at).toBe(good.config!.loaded_at);
      const failure = bad.config!.reload_error!;
      expect(failure).toEqual({ at: expect.any(String), requested_by: expect.stringMatching(/^uid 0 pid \d+$/), message: refusal, problems: expect.any(Array) });
      expect(Date.parse(failure.at)).toBeGreaterThan(Date.parse(bad.config!.loaded_at));
      // The problems are the refusal's lines, each with its place in the file.
      expect(failure.problems.map((p) => `${p.file}:${p.line}:${p.column}: ${p.message}`).join("\n")).toBe(refusal.replace("reload refused, nothing changed: ", ""));
      expect(failure.problems.map((p) => p.path).sort()).toEqual(["rules[1].bogus", "surprise"]);
      expect(failure.problems.every((p) => p.file === d.configPath && p.line !== null)).toBe(true);
      // The old rules still run, and forward.
      expect(bad.rules).toMatchObject({ total: 2, active: 2 });
      expect((await list(d)).map((r) => [r.name, r.state])).toEqual([
        ["a", "active"],
        ["b", "active"],
      ]);
      const bFlow = await burst(rt, { to: "239.1.1.2:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6002@s0", count: 300 });
      expect(bFlow.sink.totals).toMatchObject({ received: 300, lost: 0 });
      // The human form says it before the counts, with each problem.
      const humanBad = (await d.cli(["status"])).stdout;
      expect(humanBad).toContain(`config: last reload FAILED at ${failure.at} (asked by ${failure.requested_by}); the rules loaded at ${good.config!.loaded_at} still run:`);
      for (const p of failure.problems) expect(humanBad).toContain(`  ${p.file}:${p.line}:${p.column}: ${p.message}`);

      // A SIGHUP reload of the same file: refused too, and status names SIGHUP.
      d.proc.proc.kill("SIGHUP");
      const byHup = await waitFor("the SIGHUP refusal in status", async () => {
        const st = await d.json<StatusResult>(["status"]);
        return st.config?.reload_error?.requested_by === "SIGHUP" ? st : undefined;
      }, 10_000, 100);
      expect(byHup.config!.reload_error!.message).toBe(refusal);

      // Fixed: the reload applies, the failure is gone, loaded_at moves on.
      writeConfig(d.configPath!, [rule("a", 1), rule("c", 3)]);
      expect(await d.json(["reload"])).toMatchObject({ added: ["c"], removed: ["b"] });
      const fixed = await d.json<StatusResult>(["status"]);
      expect(fixed.config).toEqual({ file: d.configPath!, loaded_at: expect.any(String), reload_error: null });
      expect(Date.parse(fixed.config!.loaded_at)).toBeGreaterThanOrEqual(Date.parse(byHup.config!.reload_error!.at));
      expect((await d.cli(["status"])).stdout).not.toContain("FAILED");
    },
    T,
  );

  test(
    "a reload that adds one rule and removes another applies just that, while a third rule's stream loses nothing",
    async () => {
      const d = await start([rule("a", 1), rule("b", 2), rule("c", 3, "r2")]);
      const before = await list(d);
      const s = await sink(rt, rt.sinks[1]!.ns, "239.2.2.3:6003@s0");
      const gen = startStream(rt, { to: "239.1.1.3:5000@g0", ratePps: 5000, size: 300 });
      await waitFor("rule c to forward", async () => ruleNamed((await d.json<StatsResult>(["stats", "c"])).rules, "c").packets > 2000, 20_000, 200);

      writeConfig(d.configPath!, [rule("a", 1), rule("c", 3, "r2"), rule("d", 4)]);
      const result = await d.json(["reload"]);
      expect(result).toEqual({ added: ["d"], removed: ["b"], changed: [], unchanged: 2, warnings: [] });
      // Back and forth a few more times while the stream runs: each reload rewrites r0's table.
      for (let i = 0; i < 3; i++) {
        writeConfig(d.configPath!, [rule("a", 1), rule("b", 2), rule("c", 3, "r2")]);
        expect(await d.json(["reload"])).toMatchObject({ added: ["b"], removed: ["d"] });
        writeConfig(d.configPath!, [rule("a", 1), rule("c", 3, "r2"), rule("d", 4)]);
        expect(await d.json(["reload"])).toMatchObject({ added: ["d"], removed: ["b"] });
      }
      await Bun.sleep(500);
      const sent = (await stopStream(gen)).sent;
      const got = await sinkReport(s);
      note("reload zero loss", { sent, sink: got.totals });
      expect(got.totals).toMatchObject({ received: sent, lost: 0, duplicates: 0 });

      const after = await list(d);
      expect(after.map((r) => [r.name, r.origin, r.state])).toEqual([
        ["a", "config", "active"],
        ["c", "config", "active"],
        ["d", "config", "active"],
      ]);
      // Untouched rules keep their ids.
      expect(ruleNamed(after, "a").id).toBe(ruleNamed(before, "a").id);
      expect(ruleNamed(after, "c").id).toBe(ruleNamed(before, "c").id);
      const cStats = ruleNamed((await d.json<StatsResult>(["stats", "c"])).rules, "c");
      expect(cStats.packets).toBe(sent);

      // The added rule forwards; the removed one does not.
      const dFlow = await burst(rt, { to: "239.1.1.4:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.4:6004@s0", count: 500 });
      expect(dFlow.sink.totals).toMatchObject({ received: 500, lost: 0, duplicates: 0, datagrams: 500 });
      const bFlow = await burst(rt, { to: "239.1.1.2:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6002@s0", count: 500, expectNothing: true });
      expect(bFlow.gen.sent).toBe(500);
      expect(bFlow.sink.totals.datagrams).toBe(0);
    },
    T,
  );

  test(
    "SIGHUP reloads the file like `mcrelay reload` and never stops the daemon; a bad file on SIGHUP changes nothing",
    async () => {
      const d = await start([rule("a", 1)]);
      writeConfig(d.configPath!, [rule("a", 1), rule("e", 5)]);
      d.proc.proc.kill("SIGHUP");
      const withE = await waitFor("rule e to appear after SIGHUP", async () => {
        const rules = await list(d);
        return rules.some((r) => r.name === "e") ? rules : undefined;
      });
      expect(withE.map((r) => [r.name, r.origin, r.state])).toEqual([
        ["a", "config", "active"],
        ["e", "config", "active"],
      ]);
      const eFlow = await burst(rt, { to: "239.1.1.5:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.5:6005@s0", count: 500 });
      expect(eFlow.sink.totals).toMatchObject({ received: 500, lost: 0, duplicates: 0, datagrams: 500 });

      writeFileSync(d.configPath!, JSON.stringify({ rules: [rule("a", 1)], surprise: 1 }));
      d.proc.proc.kill("SIGHUP");
      await waitFor("the daemon to log the refused SIGHUP reload", () => /SIGHUP reload failed: reload refused, nothing changed[\s\S]*surprise: unknown key/.test(d.proc.stderr), 10_000);
      expect(d.running).toBe(true);
      expect((await d.json(["ping"])).pong).toBe(true);
      expect((await list(d)).map((r) => r.name)).toEqual(["a", "e"]);
    },
    T,
  );

  test(
    "a reload where one rule takes another's input while that one moves on is applied, and the moved input forwards to its new rule",
    async () => {
      const d = await start([rule("x", 1), rule("y", 2)]);
      const ids = (await list(d)).map((r) => [r.name, r.id]);
      // x takes y's input (239.1.1.2), y moves to 239.1.1.3; y comes later in the file.
      const x = { ...rule("x", 1), from: "239.1.1.2:5000@r0" };
      const y = { ...rule("y", 2), from: "239.1.1.3:5000@r0" };
      writeConfig(d.configPath!, [x, y]);
      expect(await d.json(["reload"])).toEqual({ added: [], removed: [], changed: ["x", "y"], unchanged: 0, warnings: [] });
      const rules = await list(d);
      expect(rules.map((r) => [r.name, r.id])).toEqual(ids);
      expect(rules.map((r) => [r.name, r.input])).toEqual([
        ["x", "239.1.1.2:5000@r0"],
        ["y", "239.1.1.3:5000@r0"],
      ]);
      // What was y's input now reaches x's output.
      const flow = await burst(rt, { to: "239.1.1.2:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.1:6001@s0", count: 500 });
      expect(flow.sink.totals).toMatchObject({ received: 500, lost: 0, duplicates: 0, datagrams: 500 });
    },
    T,
  );

  test(
    "runtime rules survive reloads, keep their origin and win over a config rule of the same name",
    async () => {
      const d = await start([rule("a", 1)]);
      const added = await d.json(["add", "--name", "rt", "--from", "239.1.1.6:5000@r0", "--to", "239.2.2.6:6006@r2"]);
      expect(added.rule.origin).toBe("runtime");

      // The file now changes a, and also defines a rule named rt (different output).
      writeConfig(d.configPath!, [rule("a", 1, "r2"), rule("rt", 6)]);
      const r1 = await d.json(["reload"]);
      expect(r1).toMatchObject({ added: [], removed: [], changed: ["a"] });
      expect(r1.warnings).toEqual([expect.stringContaining("rule rt: a runtime rule of that name is kept")]);
      let rules = await list(d);
      expect(ruleNamed(rules, "rt")).toEqual(added.rule);
      expect(ruleNamed(rules, "a").outputs.map((o) => o.to)).toEqual(["239.2.2.1:6001@r2"]);

      // A file with no rules at all: config rules go, the runtime rule stays.
      writeConfig(d.configPath!, []);
      expect(await d.json(["reload"])).toEqual({ added: [], removed: ["a"], changed: [], unchanged: 0, warnings: [] });
      rules = await list(d);
      expect(rules).toEqual([added.rule]);
      const flow = await burst(rt, { to: "239.1.1.6:5000@g0", sinkNs: rt.sinks[1]!.ns, listen: "239.2.2.6:6006@s0", count: 500 });
      expect(flow.sink.totals).toMatchObject({ received: 500, lost: 0, duplicates: 0, datagrams: 500 });
      // And it is still in the state file for the next start.
      const state = JSON.parse(await Bun.file(`${d.stateDir}/rules.json`).text());
      expect(state.rules.map((x: { spec: { name: string } }) => x.spec.name)).toEqual(["rt"]);
    },
    T,
  );
});
