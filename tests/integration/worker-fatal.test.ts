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
import { describe, expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SOCKET_FAILURES_MAX, type WorkerInfo } from "../../src/supervisor/worker-pool.ts";
import { burst, perTestTopology, pidAlive, TestDaemon, waitFor } from "../support/daemon-harness.ts";
import { netnsAvailable } from "../../scripts/lib/netns.ts";
import { LoggedProcess, mcrelayCommand, note, type RelayTopology } from "../support/relay-harness.ts";

const root = process.getuid?.() === 0;
const describe_netns = describe.skipIf(!netnsAvailable() || !root);
/** Generous: two cores shared with other test runs, and every step starts bun processes. */
const T = 240_000;
const UNLOCKED_FILTER = join(import.meta.dir, "../support/unlocked-filter.py");
/** What the worker reports about a packet socket whose filter is not locked (its first probe). */
const UNLOCKED = "confinement not verified: getsockopt(SO_LOCK_FILTER) of the packet socket is 1: got 0, expected 1";

const perTest = perTestTopology(T, "mcr-f-");

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

/**
 * A daemon (rule a: r0 -> r1) under unlocked-filter.py, in a topology of its own with two sink
 * namespaces (r1, r2), and its worker 0 running. Its lock is switched off while the file
 * `unlock` exists. The premise every test needs is checked: the worker dropped to `nobody`
 * (its confinement is checked, so it checks a ring's lock).
 */
async function daemonWithLockSwitch(label: string): Promise<{ rt: RelayTopology; d: TestDaemon; unlock: string; first: WorkerInfo }> {
  const rt = await perTest.relay({ label, sinks: 2 });
  const dir = perTest.tempDir();
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
  expect(first.confinement).not.toBeNull();
  return { rt, d, unlock, first };
}

describe_netns("a worker's fatal after ready, through the worker pool of a real daemon", () => {
  test(
    "a ready worker whose ring added at run time fails its confinement check: the pool logs and records the worker's own reason, replaces it, and the replacement forwards the interface",
    async () => {
      const { rt, d, unlock, first } = await daemonWithLockSwitch("fatal");
      const before = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", count: 500, stream: 1 });
      expect(before.sink.totals).toMatchObject({ received: 500, lost: 0 });

      // A second interface while the lock is switched off: its ring goes to the running worker
      // (no restart), which is ready, checks the ring's socket, reports `fatal` and exits 1.
      writeFileSync(unlock, "");
      // (`add` answers once the rule settled, after the replacement's start: not awaited first.)
      const adding = d.cli(["add", "--name", "b", "--from", "239.1.1.5:5000@r2", "--to", "239.2.2.5:6000@r1"]);
      const ownReason = `worker 0 (pid ${first.pid}) ${UNLOCKED} (exited, code 1)`;
      await waitFor(`the pool's log line '${ownReason}'`, () => logLines(d).some((l) => l.msg === ownReason), 30_000, 5).catch(async (err: Error) => {
        const added = await adding;
        throw new Error(`${err.message}\nadd: exit ${added.exitCode} ${added.stdout}${added.stderr}\n${d.proc.output()}`);
      });
      // Switched on again before anything else (the restart waits 250 ms): only b's first socket is unlocked.
      rmSync(unlock);
      await adding;
      expect(d.proc.stderr).toContain("unlocked-filter: SO_LOCK_FILTER of fd");
      expect(pidAlive(first.pid!)).toBe(false);
      // The exit is told with the worker's reason, never as a bare exit status, and counted as
      // the worker's first failure: its restart is scheduled right then, with the first backoff.
      const pool = logLines(d).filter((l) => l.tag === "workers");
      expect(pool.some((l) => l.msg === `worker 0 (pid ${first.pid}) exited (code 1)`)).toBe(false);
      const told = pool.findIndex((l) => l.msg === ownReason);
      expect(pool[told]!.level).toBe("warn");
      expect(pool[told + 1]?.msg).toBe("worker 0: restart in 250 ms (failure 1)");
      // b's socket is rebuilt, never handed to the replacement (which refused the same socket at
      // its own start, again after every backoff: a restart loop that also stopped r0). With the
      // lock switched on again, the replacement serves r0 and r2 (a new, locked socket), b kept.
      expect(pool[told + 2]?.msg).toBe(`worker r2: rebuilding its packet socket (refused 1 of at most ${SOCKET_FAILURES_MAX} times)`);
      const both = await waitFor("a replacement serving r0 and r2", async () => {
        const rows = await workerRows(d);
        const pid = rows[0]?.pid;
        return rows.length === 2 && pid !== null && pid !== first.pid && rows.every((w) => w.state === "running" && w.pid === pid && w.applied_hash === w.table_hash) ? rows : undefined;
      }, 60_000).catch(async (err: Error) => {
        throw new Error(`${err.message}\n${JSON.stringify(await workerRows(d))}\n${d.proc.output()}`);
      });
      // (A second refusal is possible if the switch went off after the rebuild: still bounded.)
      expect(both[0]!.restarts).toBeLessThan(SOCKET_FAILURES_MAX);
      const after = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", count: 500, stream: 2 });
      expect(after.sink.totals).toMatchObject({ received: 500, lost: 0 });
      note("fatal after ready", { first_pid: first.pid, replacement_pid: both[0]!.pid, restarts: both[0]!.restarts });
      expect(await d.stop()).toBe(0);
    },
    T,
  );
});

// A packet socket that fails its worker's check again and again (the lock stays switched off),
// in a real daemon: each refused socket is rebuilt, never handed to the next worker; after
// SOCKET_FAILURES_MAX refusals the ring is given up (its rule `error` with the reason), the
// worker serves its other interface, and nothing restarts any more. Each failure's reason is
// logged once (by the pool), not again by the worker handle and the worker itself.
describe_netns("a packet socket its workers keep refusing, in a real daemon (src/supervisor/worker-pool.ts #socketRefused)", () => {
  test(
    "b's socket refused at run time and at every start-up: rebuilt each time, given up after the bound (b `error`, a forwards, no more restarts), each reason logged once; b added again with the lock on is served",
    async () => {
      const { rt, d, unlock, first } = await daemonWithLockSwitch("sockfail");

      // The lock stays off: b's socket, and every one rebuilt for it, reaches a worker unlocked.
      // Refused at ring-add (after ready), then at each replacement's start-up (before ready).
      writeFileSync(unlock, "");
      await d.cli(["add", "--name", "b", "--from", "239.1.1.5:5000@r2", "--to", "239.2.2.5:6000@r1"]);
      const gaveUp = `worker r2: gave up after ${SOCKET_FAILURES_MAX} refused packet sockets; its rules are in error until they change or the interface is recreated`;
      await waitFor("the pool giving up on r2", () => logLines(d).some((l) => l.msg === gaveUp), 60_000).catch((err: Error) => {
        throw new Error(`${err.message}\n${d.proc.output()}`);
      });
      // The replacement serves r0 alone and forwards it; r2 is shown failing, with the reason.
      const settled = await waitFor("worker 0 serving r0 without r2", async () => {
        const rows = await workerRows(d);
        const r0 = rows.find((w) => w.interface === "r0");
        const r2 = rows.find((w) => w.interface === "r2");
        return r0 && r2 && r0.state === "running" && r0.pid !== null && r0.pid !== first.pid && r0.applied_hash === r0.table_hash && r2.pid === null ? { r0, r2 } : undefined;
      }, 30_000);
      expect(settled.r2.state).toBe("backoff");
      expect(settled.r2.last_error).toBe(`worker r2 refused ${SOCKET_FAILURES_MAX} packet sockets in a row: ${UNLOCKED}`);
      expect(settled.r0.restarts).toBe(SOCKET_FAILURES_MAX);
      const listed = (await d.call("list")) as { rules: { name: string; state: string; reasons: string[] }[] };
      expect(listed.rules.map((r) => [r.name, r.state])).toEqual([
        ["a", "active"],
        ["b", "error"],
      ]);
      expect(listed.rules[1]!.reasons).toEqual([settled.r2.last_error!]);
      const during = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", count: 500, stream: 3 });
      expect(during.sink.totals).toMatchObject({ received: 500, lost: 0 });
      // Bounded: no restart since (before, one per backoff, up to 16 s apart, for ever).
      await Bun.sleep(3_000);
      const later = (await workerRows(d)).find((w) => w.interface === "r0")!;
      expect([later.pid, later.restarts]).toEqual([settled.r0.pid, SOCKET_FAILURES_MAX]);

      // Each failure's reason was logged once, by the pool (the exit after ready at warn, each
      // start-up refusal at error), not again by the handle or the worker's own log line.
      const lines = logLines(d);
      const reasons = lines.filter((l) => l.msg.includes("SO_LOCK_FILTER) of the packet socket"));
      const restarts = lines.filter((l) => l.tag === "workers" && /^worker 0: restart in \d+ ms/.test(l.msg));
      expect(restarts).toHaveLength(SOCKET_FAILURES_MAX);
      expect(reasons.map((l) => [l.tag, l.level, l.msg.replace(/\(pid \d+\)/, "(pid N)")])).toEqual([
        ["workers", "warn", `worker 0 (pid N) ${UNLOCKED} (exited, code 1)`],
        ...Array.from({ length: SOCKET_FAILURES_MAX - 1 }, () => ["workers", "error", `worker 0: ${UNLOCKED}`]),
      ]);

      // b added again (its rules changed) with the lock on: a new socket, served by the running worker.
      rmSync(unlock);
      await d.cli(["remove", "b"]);
      await d.cli(["add", "--name", "b", "--from", "239.1.1.5:5000@r2", "--to", "239.2.2.5:6000@r1"]);
      const both = await waitFor("the worker serving r0 and r2", async () => {
        const rows = await workerRows(d);
        return rows.length === 2 && rows.every((w) => w.state === "running" && w.pid === settled.r0.pid && w.applied_hash === w.table_hash) ? rows : undefined;
      }, 30_000);
      expect(both.map((w) => w.last_error)).toEqual([null, null]);
      expect(((await d.call("list")) as { rules: { state: string }[] }).rules.map((r) => r.state)).toEqual(["active", "active"]);
      note("socket refused", { restarts: later.restarts, refusals: reasons.length });
      expect(await d.stop()).toBe(0);
    },
    T,
  );
});
