// A worker that reports `fatal` after it was ready, seen from the worker pool of a real daemon
// (src/supervisor/worker-pool.ts #exited): the pool logs and records the worker's own reason,
// not a bare "exited (code 1)", replaces the worker, and the replacement serves the interface.
//
// The one `fatal` a ready worker sends is the confinement check of a ring added at run time
// (zig/worker.zig ring-add): the supervisor locks every packet socket's filter, so a correct
// daemon never triggers it. tests/support/unlocked-filter.py runs the daemon under a seccomp
// filter that, while a switch file exists, answers the supervisor's setsockopt(SO_LOCK_FILTER)
// with success without running it: the ring added then reaches the worker unlocked, and the
// worker refuses it with `fatal` and exits 1 (as root only: the check runs in a worker that
// dropped to `nobody`).
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { WorkerInfo } from "../../src/supervisor/worker-pool.ts";
import { burst, pidAlive, TempDir, TestDaemon, waitFor } from "../support/daemon-harness.ts";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, LoggedProcess, mcrelayCommand, note, type RelayTopology } from "../support/relay-harness.ts";

const root = process.getuid?.() === 0;
const describe_netns = describe.skipIf(!netnsAvailable() || !root);
/** Generous: two cores shared with other test runs, and every step starts bun processes. */
const T = 240_000;
const UNLOCKED_FILTER = join(import.meta.dir, "../support/unlocked-filter.py");
/** What the worker reports about a packet socket whose filter is not locked (its first probe). */
const UNLOCKED = "confinement not verified: getsockopt(SO_LOCK_FILTER) of the packet socket is 1: got 0, expected 1";

let topo: Topology | undefined;
const dirs: TempDir[] = [];

afterEach(async () => {
  await topo?.destroy();
  topo = undefined;
  for (const d of dirs.splice(0)) d.remove();
}, T);

async function workerRows(d: TestDaemon): Promise<WorkerInfo[]> {
  return ((await d.call("workers")) as { workers: WorkerInfo[] }).workers;
}

/** The daemon's JSON log lines (workers' lines included), parsed. */
function logLines(d: TestDaemon): { level: string; tag: string; msg: string }[] {
  return d.proc.stderr
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { level: string; tag: string; msg: string });
}

describe_netns("a worker's fatal after ready, through the worker pool of a real daemon", () => {
  test(
    "a ready worker whose ring added at run time fails its confinement check: the pool logs and records the worker's own reason, replaces it, and the replacement forwards the interface",
    async () => {
      topo = await Topology.create("fatal");
      const rt: RelayTopology = await buildRelayTopology(topo, { label: "fatal", sinks: 2 });
      const dir = new TempDir("mcr-f-");
      dirs.push(dir);
      const unlock = dir.join("unlock");
      const socket = dir.join("ctl.sock");
      const config = dir.file("mcrelay.json5", JSON.stringify({ rules: [{ name: "a", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }] }));
      const argv = ["python3", UNLOCKED_FILTER, unlock, "--", ...mcrelayCommand("bun"), "run", "--socket", socket, "--state-dir", dir.join("state"), "--config", config];
      const proc = rt.topo.spawn(rt.relay, argv, { stdout: "pipe", stderr: "pipe", env: { MCRELAY_LOG_FORMAT: "json" }, killGraceMs: 5_000 });
      const d = new TestDaemon(rt, new LoggedProcess(proc, "daemon"), socket, dir.join("state"), config, "bun");
      await d.waitReady();

      const first = await waitFor("worker 0 running", async () => {
        const w = (await workerRows(d))[0];
        return w && w.state === "running" && w.pid !== null ? w : undefined;
      }, 30_000);
      // The premise: the worker dropped to `nobody` (its confinement is checked) and forwards.
      expect(first.confinement).not.toBeNull();
      const before = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", count: 500, stream: 1 });
      expect(before.sink.totals).toMatchObject({ received: 500, lost: 0 });

      // A second interface while the lock is switched off: its ring goes to the running worker
      // (no restart), which is ready, checks the ring's socket, reports `fatal` and exits 1.
      writeFileSync(unlock, "");
      const added = await d.cli(["add", "--name", "b", "--from", "239.1.1.5:5000@r2", "--to", "239.2.2.5:6000@r1"]);
      const ownReason = `worker 0 (pid ${first.pid}) ${UNLOCKED} (exited, code 1)`;
      await waitFor(`the pool's log line '${ownReason}'`, () => logLines(d).some((l) => l.msg === ownReason), 30_000).catch((err: Error) => {
        throw new Error(`${err.message}\nadd: exit ${added.exitCode} ${added.stdout}${added.stderr}\n${d.proc.output()}`);
      });
      // Switched on again before anything else: only b's socket is unlocked.
      rmSync(unlock);
      expect(d.proc.stderr).toContain("unlocked-filter: SO_LOCK_FILTER of fd");
      expect(pidAlive(first.pid!)).toBe(false);
      // The exit is told with the worker's reason, never as a bare exit status, and counted as
      // the worker's first failure: its restart is scheduled right then, with the first backoff.
      const pool = logLines(d).filter((l) => l.tag === "workers");
      expect(pool.some((l) => l.msg === `worker 0 (pid ${first.pid}) exited (code 1)`)).toBe(false);
      const told = pool.findIndex((l) => l.msg === ownReason);
      expect(pool[told]!.level).toBe("warn");
      expect(pool[told + 1]?.msg).toBe("worker 0: restart in 250 ms (failure 1)");
      // Counted as a failure and recorded: `workers` names the confinement problem. (The
      // replacement meets b's unlocked socket at its own start and refuses it the same way,
      // before `ready`; either way last_error is the worker's reason.)
      const failed = await waitFor("worker 0's failure recorded", async () => {
        const rows = await workerRows(d);
        return rows.length === 2 && rows.every((w) => w.restarts >= 1 && w.last_error?.startsWith(UNLOCKED)) ? rows : undefined;
      }, 30_000);
      expect(failed.map((w) => w.interface).sort()).toEqual(["r0", "r2"]);

      // Without b (its unlocked socket closed), the replacement serves r0 again...
      await d.cli(["remove", "b"]);
      const replaced = await waitFor("a replacement worker running", async () => {
        const rows = await workerRows(d);
        return rows.length === 1 && rows[0]!.state === "running" && rows[0]!.pid !== null && rows[0]!.pid !== first.pid ? rows[0]! : undefined;
      }, 60_000);
      const after = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", count: 500, stream: 2 });
      expect(after.sink.totals).toMatchObject({ received: 500, lost: 0 });
      // ...and b, added again with its filter locked, goes to that running worker like any ring.
      await d.cli(["add", "--name", "b", "--from", "239.1.1.5:5000@r2", "--to", "239.2.2.5:6000@r1"]);
      const both = await waitFor("the replacement serving r0 and r2", async () => {
        const rows = await workerRows(d);
        return rows.length === 2 && rows.every((w) => w.state === "running" && w.pid === replaced.pid && w.applied_hash === w.table_hash) ? rows : undefined;
      }, 30_000);
      note("fatal after ready", { first_pid: first.pid, replacement_pid: replaced.pid, restarts: both[0]!.restarts });
      expect(existsSync(unlock)).toBe(false);
      expect(await d.stop()).toBe(0);
    },
    T,
  );
});
