// The CLI against a live daemon (`mcrelay run` in a relay namespace) with real traffic from
// `mcrelay gen` to `mcrelay sink` in their own namespaces: add, list, stats, replace, remove,
// workers, config show, all with --json parsed here; config check offline; ping and version;
// exit codes for a refused request and for a daemon that is not there.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { PROTOCOL_VERSION as P } from "../../src/version.ts";
import { existsSync } from "node:fs";
import pkg from "../../package.json" with { type: "json" };
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, note, runGen, type RelayTopology } from "../support/relay-harness.ts";
import {
  TempDir,
  TestDaemon,
  killBackground,
  ruleNamed,
  runMcrelay,
  sink,
  sinkReport,
  startStream,
  stopStream,
  waitFor,
  type ListedRule,
  type StatsResult,
  type WorkerRow,
} from "../support/daemon-harness.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 180_000;

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir | undefined;
let daemon: TestDaemon | undefined;

async function startDaemon(configText?: string): Promise<TestDaemon> {
  dir = new TempDir();
  const configPath = configText === undefined ? undefined : dir.file("mcrelay.json5", configText);
  daemon = await TestDaemon.start(rt, dir, { configPath });
  return daemon;
}

async function stats(d: TestDaemon, rule?: string): Promise<StatsResult> {
  return d.json<StatsResult>(rule ? ["stats", rule] : ["stats"]);
}

/** Polls `stats --json` until `pred` holds for the rule named `name`. */
async function statsUntil(d: TestDaemon, name: string, what: string, pred: (r: StatsResult["rules"][number]) => boolean, timeoutMs = 20_000) {
  return waitFor(what, async () => {
    const r = ruleNamed((await stats(d)).rules, name);
    return pred(r) ? r : undefined;
  }, timeoutMs, 250);
}

describe_netns("daemon CLI round trip (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("daemoncli");
    rt = await buildRelayTopology(topo, { label: "daemoncli", sinks: 3 });
  }, T);

  afterEach(async () => {
    await killBackground();
    if (daemon?.running) {
      // A clean stop is part of the contract; a test that left it running checks it here.
      expect(await daemon.stop()).toBe(0);
    }
    daemon = undefined;
    dir?.remove();
    dir = undefined;
  }, T);

  afterAll(async () => {
    await topo?.destroy();
  }, T);

  test(
    "add, list, stats, workers and remove with --json; stats counts a live stream exactly; a removed rule stops forwarding",
    async () => {
      const d = await startDaemon();
      const added = await d.json(["add", "--name", "tv", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--ttl", "4"]);
      expect(added).toMatchObject({
        replaced: false,
        warnings: [],
        rule: { name: "tv", origin: "runtime", input: "239.1.1.1:5000@r0", source: null, outputs: [{ to: "239.2.2.2:6000@r1", ttl: 4 }], state: "active", reasons: [] },
      });
      const id = added.rule.id as string;
      expect(id).toMatch(/^\d+$/);

      const listed = await d.json<{ rules: ListedRule[] }>(["list"]);
      expect(listed.rules).toEqual([added.rule]);

      const s = await sink(rt, rt.sinks[0]!.ns, "239.2.2.2:6000@s0");
      const gen = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 5000, size: 300 });
      const first = await statsUntil(d, "tv", "the rule to count packets", (r) => r.packets > 0);
      // A rate needs two of the daemon's once-a-second samples.
      const second = await statsUntil(d, "tv", "a packet rate", (r) => r.pps > 0 && r.packets > first.packets);
      // Counters grow while traffic flows, and the rate is about what the generator sends.
      expect(second.outputs[0]!.packets).toBeGreaterThan(first.outputs[0]!.packets);
      // (Wide bounds: a starved generator catches up in bursts on a busy machine.)
      expect(second.pps).toBeGreaterThan(2500);
      expect(second.pps).toBeLessThan(8000);
      expect(second.outputs[0]!.pps).toBeGreaterThan(2500);
      const sent = (await stopStream(gen)).sent;
      const got = await sinkReport(s);
      expect(got.totals).toMatchObject({ received: sent, lost: 0, duplicates: 0 });
      // Every packet sent is counted once on the rule and on its output (counters are read
      // from the worker: wait for the last second's to be visible).
      const final = await statsUntil(d, "tv", `the rule to count all ${sent} packets`, (r) => r.packets >= sent);
      expect(final).toMatchObject({ name: "tv", id, origin: "runtime", state: "active", packets: sent, bytes: sent * 300 });
      expect(final.outputs).toEqual([expect.objectContaining({ to: "239.2.2.2:6000@r1", ttl: 4, packets: sent, bytes: sent * 300, send_errors: {} })]);
      // `stats NAME` and `stats ID` select the rule.
      expect((await stats(d, "tv")).rules.map((r) => r.name)).toEqual(["tv"]);
      expect((await stats(d, id)).rules.map((r) => r.name)).toEqual(["tv"]);
      note("daemon-cli stats", { sent, received: got.totals.received, first: first.packets, second: second.packets, pps: second.pps });

      const workers = await d.json<{ workers: WorkerRow[] }>(["workers"]);
      expect(workers.workers).toHaveLength(1);
      expect(workers.workers[0]).toMatchObject({ interface: "r0", state: "running", rules: 1, restarts: 0, last_error: null });
      expect(workers.workers[0]!.applied_hash).toBe(workers.workers[0]!.table_hash);

      expect(await d.json(["remove", "tv"])).toEqual({ removed: "tv", id, warnings: [] });
      expect((await d.json<{ rules: ListedRule[] }>(["list"])).rules).toEqual([]);
      await waitFor("the worker of r0 to stop", async () => (await d.json<{ workers: WorkerRow[] }>(["workers"])).workers.length === 0);

      // Nothing is forwarded after the removal.
      const after = await sink(rt, rt.sinks[0]!.ns, "239.2.2.2:6000@s0", ["--duration", "3"]);
      const burst = await runGen(rt.topo, rt.gen, "bun", ["--to", "239.1.1.1:5000@g0", "--rate", "2000", "--count", "1000", "--size", "300"]);
      expect(burst.sent).toBe(1000);
      expect((await sinkReport(after)).totals.datagrams).toBe(0);
    },
    T,
  );

  test(
    "a refused request exits 6 with the daemon's reason: duplicate name, unknown rule, replace of a missing rule",
    async () => {
      const d = await startDaemon();
      await d.json(["add", "--name", "a", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      const dup = await d.cli(["add", "--name", "a", "--from", "239.1.1.9:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      expect({ code: dup.exitCode, stdout: dup.stdout }).toEqual({ code: 6, stdout: "" });
      expect(dup.stderr).toContain("a rule named 'a' exists");
      const missing = await d.cli(["remove", "nope"]);
      expect(missing.exitCode).toBe(6);
      expect(missing.stderr).toContain("no rule named or numbered 'nope'");
      const statsMissing = await d.cli(["stats", "nope", "--json"]);
      expect(statsMissing.exitCode).toBe(6);
      const replaceMissing = await d.cli(["add", "--replace", "--name", "b", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      expect(replaceMissing.exitCode).toBe(6);
      expect(replaceMissing.stderr).toContain("no rule named 'b' to replace");
      // Nothing of that changed the rules.
      const rules = (await d.json<{ rules: ListedRule[] }>(["list"])).rules;
      expect(rules.map((r) => [r.name, r.input, r.outputs.map((o) => o.to)])).toEqual([["a", "239.1.1.1:5000@r0", ["239.2.2.2:6000@r1"]]]);
    },
    T,
  );

  test(
    "an invalid endpoint or TTL given to add is a usage error (exit 2) naming the flag, as for forward, and changes nothing",
    async () => {
      const d = await startDaemon();
      const badTtl = await d.cli(["add", "--name", "c", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--ttl", "300"]);
      expect(badTtl.exitCode).toBe(2);
      expect(badTtl.stderr).toContain("--ttl");
      // errors.ts: exit 2 is "wrong command-line usage: unknown flag, bad endpoint, value out of range".
      const badPort = await d.cli(["add", "--name", "c", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:70000@r1"]);
      expect({ code: badPort.exitCode, stdout: badPort.stdout }).toEqual({ code: 2, stdout: "" });
      expect(badPort.stderr).toContain("--to");
      expect(badPort.stderr).toContain("239.2.2.2:70000@r1");
      expect(badPort.stderr).toContain("1-65535");
      const noIface = await d.cli(["add", "--name", "c", "--from", "239.1.1.1:5000", "--to", "239.2.2.2:6000@r1"]);
      expect(noIface.exitCode).toBe(2);
      expect(noIface.stderr).toContain("--from");
      expect((await d.json<{ rules: ListedRule[] }>(["list"])).rules).toEqual([]);
    },
    T,
  );

  test(
    "add --replace with a changed output moves traffic to the new output while the unchanged output keeps forwarding every packet",
    async () => {
      const d = await startDaemon();
      const [s1, s2, s3] = rt.sinks;
      const before = await d.json(["add", "--name", "fan", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--to", "239.2.2.2:6000@r2"]);
      const sinks = await Promise.all([s1, s2, s3].map((s) => sink(rt, s!.ns, "239.2.2.2:6000@s0", [], 3)));
      const gen = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 5000, size: 300 });
      const flowing = await statsUntil(d, "fan", "both outputs to forward", (r) => r.outputs.every((o) => o.packets > 500));

      const replaced = await d.json(["add", "--replace", "--name", "fan", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--to", "239.2.2.2:6000@r3"]);
      expect(replaced).toMatchObject({ replaced: true, rule: { name: "fan", id: before.rule.id, outputs: [{ to: "239.2.2.2:6000@r1" }, { to: "239.2.2.2:6000@r3" }], state: "active" } });
      await statsUntil(d, "fan", "the new output to forward", (r) => (r.outputs.find((o) => o.to.endsWith("@r3"))?.packets ?? 0) > 500);
      const sent = (await stopStream(gen)).sent;
      const [k1, k2, k3] = await Promise.all(sinks.map((p) => sinkReport(p)));
      note("replace", { sent, unchanged: k1!.totals, old: k2!.totals, new: k3!.totals, flowing_before: flowing.outputs.map((o) => o.packets) });

      // The output kept by the replace never missed a packet.
      expect(k1!.totals).toMatchObject({ received: sent, lost: 0, duplicates: 0 });
      // The dropped output got the beginning only, the new one the rest; every packet went to exactly one of them.
      expect(k2!.totals.received).toBeGreaterThan(0);
      expect(k2!.totals.received).toBeLessThan(sent);
      expect(k3!.totals.received).toBeGreaterThan(0);
      expect(k2!.totals.received + k3!.totals.received).toBe(sent);
      expect(k2!.totals.duplicates + k3!.totals.duplicates).toBe(0);

      const after = await statsUntil(d, "fan", "all packets counted", (r) => r.packets >= sent);
      expect(after.id).toBe(before.rule.id);
      expect(after.outputs.map((o) => o.to)).toEqual(["239.2.2.2:6000@r1", "239.2.2.2:6000@r3"]);
      // The unchanged output kept its counters across the replace.
      expect(after.outputs[0]!.packets).toBe(sent);
      expect(after.outputs[1]!.packets).toBe(k3!.totals.received);
      expect(after.packets).toBe(sent);
    },
    T,
  );

  test(
    "config show and list give each rule's origin; removing a config rule warns that a reload brings it back",
    async () => {
      const d = await startDaemon(`{ rules: [ { name: "fromfile", from: "239.1.1.5:5000@r0", to: ["239.2.2.5:6000@r1"] } ] }`);
      await d.json(["add", "--name", "atruntime", "--from", "239.1.1.6:5000@r0", "--to", "239.2.2.6:6000@r2", "--ttl", "3"]);
      const list = (await d.json<{ rules: ListedRule[] }>(["list"])).rules;
      expect(list.map((r) => [r.name, r.origin, r.state])).toEqual([
        ["fromfile", "config", "active"],
        ["atruntime", "runtime", "active"],
      ]);
      const shown = await d.json(["config", "show"]);
      expect(shown).toMatchObject({ config_file: d.configPath, state_dir: d.stateDir });
      expect(shown.rules).toEqual([
        { name: "fromfile", from: "239.1.1.5:5000@r0", to: ["239.2.2.5:6000@r1"], origin: "config", id: list[0]!.id },
        { name: "atruntime", from: "239.1.1.6:5000@r0", to: ["239.2.2.6:6000@r2"], ttl: 3, origin: "runtime", id: list[1]!.id },
      ]);
      const removed = await d.json(["remove", "fromfile"]);
      expect(removed.warnings).toEqual([expect.stringContaining("reload brings it back")]);
    },
    T,
  );

  test(
    "ping answers with the rule and worker counts; version --json shows the client's and the daemon's versions",
    async () => {
      const d = await startDaemon(`{ rules: [ { name: "one", from: "239.1.1.7:5000@r0", to: ["239.2.2.7:6000@r1"] } ] }`);
      const pong = await d.json(["ping"]);
      expect(pong).toMatchObject({ pong: true, rules: 1, workers: 1, daemon: pkg.version });
      expect(pong.rtt_ms).toBeGreaterThan(0);
      const plain = await d.cli(["ping"]);
      expect(plain.exitCode).toBe(0);
      expect(plain.stdout).toContain(`pong from mcrelay ${pkg.version}`);
      const v = await d.json(["version"]);
      expect(v).toMatchObject({ version: pkg.version, protocol: P, daemon: { version: pkg.version, protocol: P } });
      expect(v.daemon.error).toBeUndefined();
    },
    T,
  );

  test(
    "SIGTERM stops the daemon promptly: exit 0 within 3 s, workers gone, socket removed, final counts logged",
    async () => {
      const d = await startDaemon(`{ rules: [ { name: "one", from: "239.1.1.7:5000@r0", to: ["239.2.2.7:6000@r1"] } ] }`);
      const pids = (await d.json<{ workers: WorkerRow[] }>(["workers"])).workers.map((w) => w.pid);
      expect(pids).toHaveLength(1);
      const t = performance.now();
      expect(await d.stop()).toBe(0);
      const stopMs = performance.now() - t;
      note("sigterm", { stop_ms: Math.round(stopMs) });
      // Workers get 1.5 s before SIGKILL; the whole daemon is gone well within 3 s, even right after start.
      expect(stopMs).toBeLessThan(3000);
      expect(existsSync(d.socket)).toBe(false);
      for (const pid of pids) expect(() => process.kill(pid!, 0)).toThrow();
      expect(d.proc.stderr).toContain("final: rule one");
    },
    T,
  );
});

describe("daemon CLI without a daemon", () => {
  let tmp: TempDir;
  beforeAll(() => {
    tmp = new TempDir();
  });
  afterAll(() => tmp.remove());

  test(
    "every client verb against a missing socket exits 4 saying the daemon is not running; version still answers",
    async () => {
      const sock = tmp.join("absent.sock");
      for (const args of [["ping"], ["list", "--json"], ["stats"], ["workers"], ["reload"], ["remove", "x"], ["config", "show"], ["add", "--name", "x", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]]) {
        const r = await runMcrelay([...args, "--socket", sock]);
        // With --json the error is also the one JSON document on stdout; without, stdout stays empty.
        const stdout = args.includes("--json") ? JSON.parse(r.stdout) : r.stdout;
        const expected = args.includes("--json") ? { ok: false, error: { kind: "not_running", message: expect.stringContaining("not running"), exit_code: 4 } } : "";
        expect({ args, code: r.exitCode, stdout }).toEqual({ args, code: 4, stdout: expected });
        expect(r.stderr).toContain("not running");
      }
      const v = await runMcrelay(["version", "--json", "--socket", sock]);
      expect(v.exitCode).toBe(0);
      expect(JSON.parse(v.stdout)).toMatchObject({ version: pkg.version, protocol: P, daemon: { version: null, error: "not running" } });
    },
    T,
  );

  test(
    "config check: a good file exits 0 and lists its rules; a bad one exits 3 naming the key path; a missing one exits 3",
    async () => {
      const good = tmp.file("good.json5", `{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"], ttl: 2 } ] }`);
      const ok = await runMcrelay(["config", "check", good, "--json"]);
      expect(ok.exitCode).toBe(0);
      expect(JSON.parse(ok.stdout)).toEqual({
        file: good,
        ok: true,
        format: "mcrelay",
        rules: [{ name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"], ttl: 2 }],
        workers: {},
        workers_default: null,
        warnings: [],
        errors: [],
      });
      const plain = await runMcrelay(["config", "check", good]);
      expect(plain.stdout).toBe(`${good}: ok, 1 rules\n`);

      const bad = tmp.file("bad.json5", `{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"], bogus: 1 } ] }`);
      const r = await runMcrelay(["config", "check", bad]);
      expect({ code: r.exitCode, stdout: r.stdout }).toEqual({ code: 3, stdout: "" });
      expect(r.stderr).toContain("rules[0].bogus: unknown key");
      expect(r.stderr).toContain(bad);

      const endpoint = tmp.file("endpoint.json5", `{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:0@eth1"] } ] }`);
      const e = await runMcrelay(["config", "check", endpoint]);
      expect(e.exitCode).toBe(3);
      expect(e.stderr).toContain("rules[0] (a): to[0]: '239.2.2.2:0@eth1': port 0 is out of range (1-65535)");

      const missing = await runMcrelay(["config", "check", tmp.join("nope.json5")]);
      expect(missing.exitCode).toBe(3);
      expect(missing.stderr).toContain("ENOENT");
    },
    T,
  );

  test(
    "config check accepts the earlier Rust format (input/outputs, multicast_ttl) and shows it converted",
    async () => {
      const legacy = tmp.file(
        "legacy.json5",
        `{
          "multicast_ttl": 4,
          "rules": [
            { "name": "old", "input": { "interface": "eth0", "group": "239.1.1.1", "port": 5000 },
              "outputs": [ { "group": "239.2.2.2", "port": 6000, "interface": "eth1" }, { "group": "239.2.2.3", "port": 6001, "interface": "eth2", "ttl": 4 } ] }
          ]
        }`,
      );
      const r = await runMcrelay(["config", "check", legacy, "--json"]);
      expect(r.exitCode).toBe(0);
      expect(JSON.parse(r.stdout).rules).toEqual([{ name: "old", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1", "239.2.2.3:6001@eth2"], ttl: 4 }]);
      const bad = tmp.file("legacy-bad.json5", `{ rules: [ { input: { interface: "eth0", group: "239.1.1.1", port: 5000 }, outputs: [ { group: "239.2.2.2", port: 6000, interface: "eth1", colour: "red" } ] } ] }`);
      const b = await runMcrelay(["config", "check", bad]);
      expect(b.exitCode).toBe(3);
      expect(b.stderr).toContain("rules[0].outputs[0].colour: unknown key");
    },
    T,
  );
});
