// What the state directory keeps across a daemon restart (clean stop, then start with the same
// state dir): a removed runtime rule stays removed; config-file rules keep their ids, compared
// whole, ids included; a saved runtime rule that cannot be loaded at start (here: it clashes with
// a config rule's input) is reported, kept in the state file through later changes, and loads
// again once the clash is gone. Every rule that is said to forward is checked at a receiver.
// A state file the daemon must not drop (a newer version's) or must not trust (a directory
// others may write) stops the start; one that does not parse is set aside, visibly.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, mcrelayCommand, type RelayTopology } from "../support/relay-harness.ts";
import { TempDir, TestDaemon, burst, killBackground, type ListedRule } from "../support/daemon-harness.ts";
import { httpGet, parseExposition, sampleOf } from "../support/prom.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 180_000;

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir | undefined;
const daemons: TestDaemon[] = [];

async function start(configText?: string, extraArgs?: string[]): Promise<TestDaemon> {
  const configPath = configText === undefined ? undefined : dir!.file("mcrelay.json5", configText);
  const d = await TestDaemon.start(rt, dir!, { configPath, extraArgs });
  daemons.push(d);
  return d;
}

async function list(d: TestDaemon): Promise<ListedRule[]> {
  return (await d.json<{ rules: ListedRule[] }>(["list"])).rules;
}

async function savedNames(d: TestDaemon): Promise<string[]> {
  const state = JSON.parse(await Bun.file(`${d.stateDir}/rules.json`).text());
  return state.rules.map((r: { spec: { name: string } }) => r.spec.name).sort();
}

/** 500 packets into `group` on r0; the sink behind r1 must get each exactly once. */
async function expectForwards(group: string, out: string): Promise<void> {
  const b = await burst(rt, { to: `${group}:5000@g0`, sinkNs: rt.sinks[0]!.ns, listen: `${out}@s0`, count: 500 });
  expect(b.gen.sent).toBe(500);
  expect(b.sink.totals).toMatchObject({ received: 500, lost: 0, duplicates: 0, datagrams: 500 });
}

describe_netns("persistence across restarts (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("persist");
    rt = await buildRelayTopology(topo, { label: "persist", sinks: 1 });
  }, T);

  afterEach(async () => {
    await killBackground();
    for (const d of daemons.splice(0)) if (d.running) await d.kill9();
    dir?.remove();
    dir = undefined;
  }, T);

  afterAll(async () => {
    await topo?.destroy();
  }, T);

  test(
    "a removed runtime rule stays removed after a restart, and the rule kept beside it comes back",
    async () => {
      dir = new TempDir();
      const d1 = await start();
      await d1.json(["add", "--name", "gone", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.1:6001@r1"]);
      await d1.json(["add", "--name", "kept", "--from", "239.1.1.2:5000@r0", "--to", "239.2.2.2:6002@r1"]);
      expect((await d1.json(["remove", "gone"])).removed).toBe("gone");
      const before = await list(d1);
      expect(await d1.stop()).toBe(0);

      const d2 = await start();
      expect(await list(d2)).toEqual(before);
      expect((await list(d2)).map((r) => r.name)).toEqual(["kept"]);
      expect(await savedNames(d2)).toEqual(["kept"]);
      await expectForwards("239.1.1.2", "239.2.2.2:6002");
      // And the removed one does not forward.
      const none = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.1:6001@s0", count: 300, expectNothing: true });
      expect(none.gen.sent).toBe(300);
      expect(none.sink.totals.datagrams).toBe(0);
      expect(await d2.stop()).toBe(0);
    },
    T,
  );

  test(
    "config-file rules keep their ids across restarts: the whole list, ids included, is the same after a restart",
    async () => {
      dir = new TempDir();
      const config = `{ rules: [
        { name: "c1", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"] },
        { name: "c2", from: "239.1.1.2:5000@r0", to: ["239.2.2.2:6002@r1"] },
      ] }`;
      const d1 = await start(config);
      await d1.json(["add", "--name", "rt", "--from", "239.1.1.3:5000@r0", "--to", "239.2.2.3:6003@r1"]);
      // A runtime rule added and removed: its id is used up, so a fresh id would differ from c1's and c2's.
      await d1.json(["add", "--name", "tmp", "--from", "239.1.1.4:5000@r0", "--to", "239.2.2.4:6004@r1"]);
      await d1.json(["remove", "tmp"]);
      const before = await list(d1);
      expect(before.map((r) => [r.name, r.origin])).toEqual([["c1", "config"], ["c2", "config"], ["rt", "runtime"]]);
      expect(await d1.stop()).toBe(0);

      const d2 = await start(config);
      expect(await list(d2)).toEqual(before);
      expect(await d2.stop()).toBe(0);
      // A third start, with the config rules listed in the other order: still the same ids.
      const d3 = await start(`{ rules: [
        { name: "c2", from: "239.1.1.2:5000@r0", to: ["239.2.2.2:6002@r1"] },
        { name: "c1", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"] },
      ] }`);
      expect(await list(d3)).toEqual(before);
      await expectForwards("239.1.1.1", "239.2.2.1:6001");
      expect(await d3.stop()).toBe(0);
    },
    T,
  );

  test(
    "a saved rule that cannot be loaded is reported, kept in the state file through later changes, and loads once it can",
    async () => {
      dir = new TempDir();
      const d1 = await start();
      await d1.json(["add", "--name", "clash", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.1:6001@r1"]);
      expect(await d1.stop()).toBe(0);

      // Now a config rule relays the same input: the saved rule cannot be loaded beside it.
      const d2 = await start(`{ rules: [ { name: "cfg", from: "239.1.1.1:5000@r0", to: ["239.2.2.5:6005@r1"] } ] }`);
      expect((await list(d2)).map((r) => [r.name, r.origin])).toEqual([["cfg", "config"]]);
      expect(d2.proc.stderr).toMatch(/saved rule clash is not loaded .*it stays in the state file/);
      expect(await savedNames(d2)).toEqual(["clash"]);
      // A later change rewrites the state file: the unloadable rule is still in it.
      await d2.json(["add", "--name", "other", "--from", "239.1.1.2:5000@r0", "--to", "239.2.2.2:6002@r1"]);
      expect(await savedNames(d2)).toEqual(["clash", "other"]);
      expect(await d2.stop()).toBe(0);

      // Without the clashing config rule it loads, with its id, and forwards.
      const d3 = await start();
      const rules = await list(d3);
      expect(rules.map((r) => [r.name, r.origin, r.state])).toEqual([["clash", "runtime", "active"], ["other", "runtime", "active"]]);
      expect(d3.proc.stderr).not.toContain("is not loaded");
      await expectForwards("239.1.1.1", "239.2.2.1:6001");
      expect(await d3.stop()).toBe(0);
    },
    T,
  );
  test(
    "a state file of a newer version stops the start (exit 3, naming the file, the version and what to do) and is left as it was",
    async () => {
      dir = new TempDir();
      const d1 = await start();
      await d1.json(["add", "--name", "kept", "--from", "239.1.1.2:5000@r0", "--to", "239.2.2.2:6002@r1"]);
      expect(await d1.stop()).toBe(0);
      const file = `${d1.stateDir}/rules.json`;
      const newer = readFileSync(file, "utf8").replace('"version": 1', '"version": 2');
      writeFileSync(file, newer);
      const r = await rt.topo.exec(rt.relay, [...mcrelayCommand("bun"), "run", "--socket", dir.join("v2.sock"), "--state-dir", d1.stateDir], { timeoutMs: 30_000 });
      expect(r.exitCode).toBe(3);
      expect(r.stderr).toContain(`state file ${file} has version 2, written by a newer mcrelay (this one reads version 1); run the newer mcrelay, or move the file away`);
      expect(r.stderr).not.toMatch(/^\s+at /m);
      expect(readFileSync(file, "utf8")).toBe(newer);
      expect(readdirSync(d1.stateDir)).toEqual(["rules.json"]);
    },
    T,
  );

  test(
    "a state directory writable by others is refused (exit 3, naming it, its owner and mode, and the fix)",
    async () => {
      dir = new TempDir();
      const stateDir = dir.join("state");
      mkdirSync(stateDir);
      chmodSync(stateDir, 0o777);
      const r = await rt.topo.exec(rt.relay, [...mcrelayCommand("bun"), "run", "--socket", dir.join("w.sock"), "--state-dir", stateDir], { timeoutMs: 30_000 });
      expect(r.exitCode).toBe(3);
      expect(r.stderr).toContain(`state directory ${stateDir} (owner uid 0, mode 0777) is writable by its group or others`);
      expect(r.stderr).toContain(`chown 0 ${stateDir} && chmod go-w ${stateDir}`);
      expect(readdirSync(stateDir)).toEqual([]);
    },
    T,
  );

  test(
    "a state file that does not parse is set aside; status and /metrics say so until the next start",
    async () => {
      dir = new TempDir();
      const d1 = await start();
      await d1.json(["add", "--name", "lost", "--from", "239.1.1.2:5000@r0", "--to", "239.2.2.2:6002@r1"]);
      expect(await d1.stop()).toBe(0);
      const file = `${d1.stateDir}/rules.json`;
      writeFileSync(file, readFileSync(file, "utf8").slice(0, 40));

      const listen = "127.0.0.1:9469";
      const d2 = await start(undefined, ["--metrics", listen]);
      expect(await list(d2)).toEqual([]);
      const aside = readdirSync(d2.stateDir).filter((f) => f.startsWith("rules.json.corrupt-"));
      expect(aside).toHaveLength(1);
      const status = await d2.json<{ state: { file: string; set_aside: { path: string; reason: string; at: string } | null; unloaded: unknown[] } }>(["status"]);
      expect(status.state).toEqual({ file, set_aside: { path: `${d2.stateDir}/${aside[0]}`, reason: expect.any(String), at: expect.any(String) }, unloaded: [] });
      const human = await d2.cli(["status"]);
      expect(human.stdout).toContain(`state: ${file} did not load at ${status.state.set_aside!.at} (${status.state.set_aside!.reason}); set aside as ${d2.stateDir}/${aside[0]}; started without runtime rules`);
      const metrics = parseExposition((await httpGet(rt.topo, rt.relay, `http://${listen}/metrics`)).body);
      expect(sampleOf(metrics, "mcrelay_state_file_set_aside", {})).toBe(1);
      expect(await d2.stop()).toBe(0);

      // The next start loads the file written since: nothing is set aside any more.
      const d3 = await start();
      expect((await d3.json<{ state: unknown }>(["status"])).state).toEqual({ file, set_aside: null, unloaded: [] });
      expect(await d3.stop()).toBe(0);
    },
    T,
  );

  test(
    "a saved rule that was not loaded is listed by status (name, id, reason) and removed by remove NAME or ID, from the state file only",
    async () => {
      dir = new TempDir();
      const d1 = await start();
      const added = await d1.json<{ rule: { id: string } }>(["add", "--name", "clash", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.1:6001@r1"]);
      await d1.json(["add", "--name", "clash2", "--from", "239.1.1.3:5000@r0", "--to", "239.2.2.3:6003@r1"]);
      expect(await d1.stop()).toBe(0);

      // A config rule takes both saved rules' inputs: neither loads.
      const d2 = await start(
        `{ rules: [ { name: "cfg", from: "239.1.1.1:5000@r0", to: ["239.2.2.5:6005@r1"] }, { name: "cfg2", from: "239.1.1.3:5000@r0", to: ["239.2.2.6:6006@r1"] } ] }`,
      );
      const status = await d2.json<{ state: { unloaded: { name: string; id: string; reason: string }[] } }>(["status"]);
      expect(status.state.unloaded.map((u) => [u.name, u.id])).toEqual([
        ["clash", added.rule.id],
        ["clash2", expect.any(String)],
      ]);
      const reason = status.state.unloaded[0]!.reason;
      expect(reason).toContain("cfg");
      const human = await d2.cli(["status"]);
      expect(human.stdout).toContain(`state: saved rule clash (id ${added.rule.id}) is not loaded: ${reason}; \`mcrelay remove ${added.rule.id}\` drops it`);

      // By id, then by name: each leaves the state file, the config rules stay and forward.
      const byId = await d2.cli(["remove", added.rule.id]);
      expect(byId.exitCode).toBe(0);
      expect(byId.stdout).toContain(`removed saved rule clash (id ${added.rule.id}) from the state file; it was not loaded: ${reason}`);
      expect(await savedNames(d2)).toEqual(["clash2"]);
      const byName = await d2.json<{ removed: string; not_loaded: string }>(["remove", "clash2"]);
      expect(byName).toMatchObject({ removed: "clash2", not_loaded: expect.stringContaining("cfg2") });
      expect(await savedNames(d2)).toEqual([]);
      expect((await d2.json<{ state: { unloaded: unknown[] } }>(["status"])).state.unloaded).toEqual([]);
      expect((await d2.cli(["remove", "clash"])).exitCode).not.toBe(0);
      expect((await list(d2)).map((r) => r.name)).toEqual(["cfg", "cfg2"]);
      await expectForwards("239.1.1.1", "239.2.2.5:6005");
      expect(await d2.stop()).toBe(0);

      // Gone for good: the next start without the config file has no runtime rules.
      const d3 = await start();
      expect(await list(d3)).toEqual([]);
      expect(d3.proc.stderr).not.toContain("is not loaded");
      expect(await d3.stop()).toBe(0);
    },
    T,
  );
});
