// A supervisor killed with SIGKILL and started again with the same state directory: the
// runtime rules come back exactly (names, ids, origins, outputs), the stale control socket is
// replaced, and traffic flows again. A live daemon's socket is never taken over, and a corrupt
// state file is set aside rather than stopping the start.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, mcrelayCommand, note, startLogged, type RelayTopology } from "../support/relay-harness.ts";
import {
  TempDir,
  TestDaemon,
  burst,
  killBackground,
  pidAlive,
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

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 180_000;

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir | undefined;
const daemons: TestDaemon[] = [];

async function start(o: { configPath?: string } = {}): Promise<TestDaemon> {
  const d = await TestDaemon.start(rt, dir!, o);
  daemons.push(d);
  return d;
}

async function list(d: TestDaemon): Promise<ListedRule[]> {
  return (await d.json<{ rules: ListedRule[] }>(["list"])).rules;
}

async function workerPids(d: TestDaemon): Promise<number[]> {
  return (await d.json<{ workers: WorkerRow[] }>(["workers"])).workers.map((w) => w.pid).filter((p): p is number => p !== null);
}

describe_netns("restart (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("restart");
    rt = await buildRelayTopology(topo, { label: "restart", sinks: 2 });
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
    "after kill -9 of the supervisor a restart with the same state dir lists the same rules and forwards again",
    async () => {
      dir = new TempDir();
      const configPath = dir.file("mcrelay.json5", `{ rules: [ { name: "cfg", from: "239.1.1.9:5000@r0", to: ["239.2.2.9:6009@r1"] } ] }`);
      const d1 = await start({ configPath });
      await d1.json(["add", "--name", "rt1", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.1:6001@r1"]);
      await d1.json(["add", "--name", "rt2", "--from", "239.1.1.2:5000@r0", "--to", "239.2.2.2:6002@r2", "--ttl", "3"]);
      await d1.json(["add", "--name", "later", "--from", "239.1.1.3:5000@nosuch0", "--to", "239.2.2.3:6003@r2"]);
      const before = await list(d1);
      expect(before.map((r) => [r.name, r.origin, r.state])).toEqual([
        ["cfg", "config", "active"],
        ["rt1", "runtime", "active"],
        ["rt2", "runtime", "active"],
        ["later", "runtime", "pending"],
      ]);
      const oldWorkers = await workerPids(d1);
      expect(oldWorkers.length).toBeGreaterThan(0);

      // A stream through rt1 that keeps running across the crash and the restart.
      const s = await sink(rt, rt.sinks[0]!.ns, "239.2.2.1:6001@s0", [], 3);
      const gen = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 2000, size: 200 });
      const beforeKill = await waitFor("rt1 to forward", async () => {
        const r = ruleNamed((await d1.json<StatsResult>(["stats", "rt1"])).rules, "rt1");
        return r.packets > 1000 ? r.packets : undefined;
      });

      await d1.kill9();
      expect(existsSync(d1.socket)).toBe(true); // the stale socket is still there
      // Workers die with their supervisor (parent-death signal). Any left over are killed here so
      // the restart is tested on its own; they are reported at the end of the test.
      const leftover = await waitFor("old workers to exit", () => (oldWorkers.every((p) => !pidAlive(p)) ? [] : undefined), 5_000).catch(() => oldWorkers.filter((p) => pidAlive(p)));
      for (const p of leftover) process.kill(p, "SIGKILL");

      const d2 = await start({ configPath });
      expect(d2.proc.stderr).toContain("replacing stale socket");
      const after = await list(d2);
      // Every rule comes back exactly, ids included: runtime rules from the state file, config
      // rules from the file with the ids the state file kept for them.
      expect(after).toEqual(before);
      const newWorkers = await workerPids(d2);
      expect(newWorkers.length).toBe(oldWorkers.length);
      for (const p of newWorkers) expect(oldWorkers).not.toContain(p);

      // The running stream is forwarded again by the new workers, and reaches the sink.
      await waitFor("rt1 to forward after the restart", async () => ruleNamed((await d2.json<StatsResult>(["stats", "rt1"])).rules, "rt1").packets > 1000);
      const sent = (await stopStream(gen)).sent;
      const got = await sinkReport(s);
      const afterRestart = await waitFor("rt1's count to settle", async () => {
        const a = ruleNamed((await d2.json<StatsResult>(["stats", "rt1"])).rules, "rt1").packets;
        await Bun.sleep(300);
        const b = ruleNamed((await d2.json<StatsResult>(["stats", "rt1"])).rules, "rt1").packets;
        return a === b ? b : undefined;
      });
      note("restart", { sent, received: got.totals.received, before_kill: beforeKill, after_restart: afterRestart, leftover_workers: leftover });
      expect(got.totals.duplicates).toBe(0);
      expect(got.totals.received).toBeGreaterThanOrEqual(beforeKill + afterRestart);
      expect(got.totals.received).toBeLessThanOrEqual(sent);

      // Each restored rule forwards every packet of a fresh burst.
      const b1 = await burst(rt, { to: "239.1.1.2:5000@g0", sinkNs: rt.sinks[1]!.ns, listen: "239.2.2.2:6002@s0", count: 1000 });
      expect(b1.sink.totals).toMatchObject({ received: 1000, lost: 0, duplicates: 0 });
      const b2 = await burst(rt, { to: "239.1.1.9:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.9:6009@s0", count: 1000 });
      expect(b2.sink.totals).toMatchObject({ received: 1000, lost: 0, duplicates: 0 });

      // Ids are never reused after a restart.
      const fresh = await d2.json(["add", "--name", "fresh", "--from", "239.1.1.4:5000@r0", "--to", "239.2.2.4:6004@r1"]);
      const maxBefore = Math.max(...before.map((r) => Number(r.id)));
      expect(Number(fresh.rule.id)).toBeGreaterThan(maxBefore);

      expect(await d2.stop()).toBe(0);
      // Reported last so the restart itself is judged first: no worker outlived its supervisor.
      expect({ leftover_workers_after_sigkill: leftover }).toEqual({ leftover_workers_after_sigkill: [] });
    },
    T,
  );

  test(
    "a second daemon on a socket where one answers exits 8 without forwarding anything, and the first keeps serving",
    async () => {
      dir = new TempDir();
      const configPath = dir.file("mcrelay.json5", `{ rules: [ { name: "keep", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"] } ] }`);
      const d1 = await start({ configPath });
      // Same config, same socket, its own state dir: it must give up, not run a second set of workers.
      const second = startLogged(rt.topo, rt.relay, [...mcrelayCommand("bun"), "run", "--config", configPath, "--socket", d1.socket, "--state-dir", dir.join("other-state")], "second daemon");
      try {
        await Promise.race([second.exited, Bun.sleep(15_000)]);
        // Whatever the second one does meanwhile, the stream is relayed once, not twice.
        const b = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.1:6001@s0", count: 1000 });
        note("second daemon", { running_after_15s: second.running, exit: second.running ? null : second.describeExit(), sink: b.sink.totals });
        expect(b.sink.totals).toMatchObject({ received: 1000, lost: 0, duplicates: 0 });
        expect({ running: second.running, exit: second.proc.exitCode }).toEqual({ running: false, exit: 8 });
        expect(second.stderr).toContain("another mcrelay daemon is running");
      } finally {
        if (second.running) second.proc.kill("SIGKILL");
        await second.exited;
      }
      expect((await d1.json(["ping"])).pong).toBe(true);
      expect((await list(d1)).map((r) => r.name)).toEqual(["keep"]);
      expect(await d1.stop()).toBe(0);
    },
    T,
  );

  test(
    "M8: a second daemon on the same state directory (another socket) exits 8 at once, forwards nothing, and the first keeps its rules",
    async () => {
      dir = new TempDir();
      const d1 = await start();
      await d1.json(["add", "--name", "only", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.1:6001@r1"]);
      const t0 = performance.now();
      const second = startLogged(rt.topo, rt.relay, [...mcrelayCommand("bun"), "run", "--socket", dir.join("other.sock"), "--state-dir", d1.stateDir], "second daemon");
      try {
        await Promise.race([second.exited, Bun.sleep(15_000)]);
        const exitMs = performance.now() - t0;
        note("second daemon on the state dir", { exit_ms: Math.round(exitMs), exit: second.running ? null : second.describeExit() });
        expect({ running: second.running, exit: second.proc.exitCode }).toEqual({ running: false, exit: 8 });
        expect(second.stderr).toContain(`state directory ${d1.stateDir} is locked by another daemon`);
        // Before netlink, workers or the socket: it never forwarded (one copy reaches the sink).
        expect(second.stderr).not.toContain("ready:");
        const b = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.1:6001@s0", count: 500 });
        expect(b.sink.totals).toMatchObject({ received: 500, lost: 0, duplicates: 0 });
      } finally {
        if (second.running) second.proc.kill("SIGKILL");
        await second.exited;
      }
      expect((await list(d1)).map((r) => r.name)).toEqual(["only"]);
      expect(await d1.stop()).toBe(0);
    },
    T,
  );

  test(
    "M5: a state file with a duplicate id, an id of 2^64 and a bad entry loads its good rules, which forward, with no crash loop delaying the socket",
    async () => {
      dir = new TempDir();
      const stateDir = dir.join("state");
      mkdirSync(stateDir);
      const spec = (n: number) => ({ name: `s${n}`, from: `239.1.1.${n}:5000@r0`, to: [`239.2.2.${n}:600${n}@r1`] });
      writeFileSync(
        `${stateDir}/rules.json`,
        JSON.stringify({
          version: 1,
          next_id: "4",
          rules: [
            { id: "1", spec: spec(1) },
            { id: "1", spec: spec(2) }, // the same id: would be EEXIST in the worker, a crash loop
            { id: "18446744073709551617", spec: spec(3) }, // 2^64 + 1 wraps to 1 in a u64
            { id: "2", spec: { name: "broken", from: "239.1.1.4:5000@r0" } },
          ],
        }),
      );
      const t0 = performance.now();
      const d = await start();
      const readyMs = performance.now() - t0;
      expect((await list(d)).map((r) => [r.name, r.id, r.state])).toEqual([["s1", "1", "active"]]);
      for (const why of ["id 1 is already used", "id 18446744073709551617 is out of range", "rules[3]"]) expect(d.proc.stderr).toContain(why);
      expect(readdirSync(stateDir).filter((f) => f.startsWith("rules.json.rejected-"))).toHaveLength(1);
      const b = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.1:6001@s0", count: 500 });
      expect(b.sink.totals).toMatchObject({ received: 500, lost: 0, duplicates: 0 });
      const workers = (await d.json<{ workers: WorkerRow[] }>(["workers"])).workers;
      expect(workers.map((w) => [w.state, w.restarts])).toEqual([["running", 0]]);
      // No crash loop held the socket back: a plain start, not 10 s of waiting for workers.
      note("state restore per rule", { ready_ms: Math.round(readyMs) });
      expect(readyMs).toBeLessThan(8_000);
      expect(await d.stop()).toBe(0);
    },
    T,
  );

  test(
    "a corrupt state file in a read-only state directory: run exits 3 naming the file, without a stack trace",
    async () => {
      dir = new TempDir();
      const stateDir = dir.join("state");
      mkdirSync(stateDir);
      writeFileSync(`${stateDir}/rules.json`, "{ not json");
      // A read-only bind mount in a mount namespace of its own (root ignores file modes).
      const script = `mount --bind ${stateDir} ${stateDir} && mount -o remount,bind,ro ${stateDir} && exec "$@"`;
      const r = await rt.topo.exec(rt.relay, ["unshare", "-m", "sh", "-c", script, "sh", ...mcrelayCommand("bun"), "run", "--socket", dir.join("ro.sock"), "--state-dir", stateDir], { timeoutMs: 30_000 });
      expect(r.exitCode).toBe(3);
      expect(r.stderr).toContain(`state file ${stateDir}/rules.json is corrupt`);
      expect(r.stderr).toContain("cannot be set aside");
      expect(r.stderr).not.toMatch(/^\s+at /m);
      expect(readFileSync(`${stateDir}/rules.json`, "utf8")).toBe("{ not json");
    },
    T,
  );

  test(
    "a corrupt state file is set aside on start: the daemon runs with its config rules and says so",
    async () => {
      dir = new TempDir();
      const configPath = dir.file("mcrelay.json5", `{ rules: [ { name: "cfg", from: "239.1.1.9:5000@r0", to: ["239.2.2.9:6009@r1"] } ] }`);
      const d1 = await start({ configPath });
      await d1.json(["add", "--name", "rt1", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.1:6001@r1"]);
      expect(await d1.stop()).toBe(0);
      writeFileSync(`${d1.stateDir}/rules.json`, '{"version": 1, "next_id": "3", "rules": [ {"id": "2", "spe');

      const d2 = await start({ configPath });
      expect((await list(d2)).map((r) => [r.name, r.origin])).toEqual([["cfg", "config"]]);
      expect(d2.proc.stderr).toMatch(/state file .* is corrupt/);
      const files = readdirSync(d2.stateDir);
      expect(files.filter((f) => f.startsWith("rules.json.corrupt-"))).toHaveLength(1);
      // A new runtime rule is saved normally.
      await d2.json(["add", "--name", "rt2", "--from", "239.1.1.2:5000@r0", "--to", "239.2.2.2:6002@r2"]);
      const state = JSON.parse(await Bun.file(`${d2.stateDir}/rules.json`).text());
      expect(state.rules.map((r: { spec: { name: string } }) => r.spec.name)).toEqual(["rt2"]);
      expect(await d2.stop()).toBe(0);
    },
    T,
  );
});
