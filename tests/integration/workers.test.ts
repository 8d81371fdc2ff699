// Kernel integration tests of the worker model: what a worker holds after dropping privileges
// (read from /proc, every thread), a supervisor that is not root, a worker SIGKILLed under
// load, a crash-looping worker's backoff, drift repair, the supervisor's own death and restart,
// a daemon confined to a namespace, graceful stop, and several workers per interface with the
// rules split between them. Real namespaces, real traffic from `mcrelay gen`, assertions on what
// `mcrelay sink` received; the relay's counters and /proc only where a receiver cannot tell.
//
// MCR_TEST_METRICS=1 prints what was measured (restart time, loss, backoff gaps, stop time).
import { describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { workerSlot } from "../../src/rules/flow-hash.ts";
import type { WorkerInfo } from "../../src/supervisor/worker-pool.ts";
import { lookupUser } from "../../src/supervisor/user.ts";
import {
  helloClient,
  percentile,
  perTestTopology,
  pidAlive,
  ruleNamed,
  sink,
  sinkReport,
  stopStream,
  type TempDir,
  TestDaemon,
  waitFor,
  type ListedRule,
  type StatsResult,
} from "../support/daemon-harness.ts";
import { netnsAvailable } from "../../scripts/lib/netns.ts";
import {
  COMPILED_PATH,
  LoggedProcess,
  MAIN_TS,
  mcrelayCommand,
  note,
  READY,
  READY_TIMEOUT_MS,
  runGen,
  startLogged,
  stream,
  type ForwardReport,
  type RelayTopology,
} from "../support/relay-harness.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
/** Generous: two cores shared with other test runs, and every test starts many bun processes. */
const T = 240_000;
const NOBODY = lookupUser("nobody");
/** The specification the tests hold the worker manager to (src/supervisor/worker-pool.ts). */
const PING_INTERVAL_MS = 1_000;
const PING_DEADLINE_MS = 1_000;
const BACKOFF_FIRST_MS = 250;

const perTest = perTestTopology(T, "mcr-w-");

// ---------------------------------------------------------------------------------------
// Config and daemon

interface RuleText {
  name: string;
  from: string;
  to: string[];
}

function configText(rules: RuleText[], workers?: Record<string, number>): string {
  return JSON.stringify(workers ? { workers, rules } : { rules }, null, 2);
}

interface StartOptions {
  config?: string;
  /** `mcrelay run --workers N`. */
  workers?: number;
  /** Added to the daemon's environment (workers get only what they read, never a test hook). */
  env?: Record<string, string>;
  /** More `mcrelay run` options (`--test-hook NAME=N`). */
  extraArgs?: string[];
  socket?: string;
  stateDir?: string;
  label?: string;
  /** A command the daemon is started through (`setsid`: its own process group, as a shell's job). */
  prefix?: string[];
}

/** `mcrelay run` in the relay namespace (like TestDaemon.start, plus --workers and environment), waited for until it answers ping. */
async function startDaemon(rt: RelayTopology, dir: TempDir, o: StartOptions = {}): Promise<TestDaemon> {
  const socket = o.socket ?? dir.join("ctl.sock");
  const stateDir = o.stateDir ?? dir.join("state");
  const configPath = o.config === undefined ? undefined : dir.file("mcrelay.json5", o.config);
  const argv = [...(o.prefix ?? []), ...mcrelayCommand("bun"), "run", "--socket", socket, "--state-dir", stateDir];
  if (configPath) argv.push("--config", configPath);
  if (o.workers !== undefined) argv.push("--workers", String(o.workers));
  argv.push(...(o.extraArgs ?? []));
  const proc = rt.topo.spawn(rt.relay, argv, { stdout: "pipe", stderr: "pipe", env: o.env, killGraceMs: 5_000 });
  const d = new TestDaemon(rt, new LoggedProcess(proc, o.label ?? "daemon"), socket, stateDir, configPath, "bun");
  await d.waitReady();
  return d;
}

async function workerRows(d: TestDaemon): Promise<WorkerInfo[]> {
  return ((await d.call("workers")) as { workers: WorkerInfo[] }).workers;
}

/** Waits until exactly `n` workers are listed, all running with a pid. */
async function runningWorkers(d: TestDaemon, n: number, timeoutMs = 30_000): Promise<WorkerInfo[]> {
  return waitFor(`${n} running workers`, async () => {
    const rows = await workerRows(d);
    return rows.length === n && rows.every((w) => w.state === "running" && w.pid !== null) ? rows : undefined;
  }, timeoutMs, 100);
}

async function stats(d: TestDaemon): Promise<StatsResult> {
  return (await d.call("stats")) as StatsResult;
}

function ifaceCounters(s: StatsResult, ifname: string): Record<string, number> {
  const i = s.interfaces.find((x) => x.interface === ifname);
  if (!i) throw new Error(`no interface ${ifname} in stats: ${JSON.stringify(s.interfaces.map((x) => x.interface))}`);
  return i.counters;
}

// ---------------------------------------------------------------------------------------
// Processes seen through /proc

type Status = Record<string, string>;

function readStatus(path: string): Status | null {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return null; // gone meanwhile
  }
  const out: Status = {};
  for (const line of text.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((s) => s.length > 0);
  } catch {
    return [];
  }
}

/** The process group and session of `pid` (fields 5 and 6 of /proc/PID/stat, after the name). */
function groupAndSession(pid: number): { pgrp: number; session: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { pgrp: Number(f[2]), session: Number(f[3]) };
}

/** Live children of `pid` (every thread's children) running `mcrelay _worker`. */
function workerChildren(pid: number): number[] {
  const found = new Set<number>();
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  for (const tid of tasks) {
    let text = "";
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8");
    } catch {
      continue;
    }
    for (const word of text.split(/\s+/)) {
      const child = Number.parseInt(word, 10);
      if (Number.isInteger(child) && cmdline(child).includes("_worker") && pidAlive(child)) found.add(child);
    }
  }
  return [...found].sort((a, b) => a - b);
}

/**
 * What must hold for a worker, for its main status and for every thread: ids all `user`, no
 * supplementary groups, no capabilities in any set, no_new_privs. Returns one line per problem.
 */
function privilegeProblems(pid: number, user: { uid: number; gid: number }): { threads: number; problems: string[] } {
  const problems: string[] = [];
  const paths = [`/proc/${pid}/status`];
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    problems.push(`pid ${pid}: no /proc/${pid}/task (process gone?)`);
  }
  for (const tid of tids) paths.push(`/proc/${pid}/task/${tid}/status`);
  for (const path of paths) {
    const s = readStatus(path);
    if (!s) {
      if (path === paths[0]) problems.push(`${path}: unreadable (process gone?)`);
      continue; // a thread that ended meanwhile
    }
    const ids = (f: string) => (s[f] ?? "").split(/\s+/).map(Number);
    if (ids("Uid").length !== 4 || !ids("Uid").every((u) => u === user.uid)) problems.push(`${path}: Uid '${s.Uid}', expected ${user.uid} x4`);
    if (ids("Gid").length !== 4 || !ids("Gid").every((g) => g === user.gid)) problems.push(`${path}: Gid '${s.Gid}', expected ${user.gid} x4`);
    if ((s.Groups ?? "x") !== "") problems.push(`${path}: Groups '${s.Groups}', expected none`);
    for (const cap of ["CapPrm", "CapEff", "CapInh", "CapAmb"]) {
      if (!/^0+$/.test(s[cap] ?? "")) problems.push(`${path}: ${cap} ${s[cap]}, expected 0`);
    }
    if (s.NoNewPrivs !== "1") problems.push(`${path}: NoNewPrivs '${s.NoNewPrivs}', expected 1`);
    // The worker's seccomp filter (zig/seccomp.zig), synchronized to every thread.
    if (s.Seccomp !== "2") problems.push(`${path}: Seccomp '${s.Seccomp}', expected 2 (filter)`);
  }
  // Not dumpable is the M7 test's: checked here, it would hold on most hosts whatever the
  // worker does (see withSuidDumpable).
  return { threads: tids.length, problems };
}

/** fs.suid_dumpable: what a change of a process's ids sets its dumpable flag to. */
const SUID_DUMPABLE = "/proc/sys/fs/suid_dumpable";

/**
 * Runs `fn` with fs.suid_dumpable at `value` and puts the old value back as soon as `fn` is
 * done or failed. With 0 (this kernel's default) or 2, the kernel itself makes a worker not
 * dumpable when it changes its ids, and a test of the worker's own PR_SET_DUMPABLE could not
 * fail; with 1 the change leaves it dumpable. The setting is global (other processes of the
 * host see it meanwhile): `fn` must be short and bounded.
 */
async function withSuidDumpable<T>(value: 0 | 1 | 2, fn: () => Promise<T>): Promise<T> {
  const old = readFileSync(SUID_DUMPABLE, "utf8").trim();
  writeFileSync(SUID_DUMPABLE, String(value));
  try {
    return await fn();
  } finally {
    writeFileSync(SUID_DUMPABLE, old);
  }
}

/**
 * The owner of /proc/self/fd of a process (python, as root) that changes its ids to `user`
 * without exec and without PR_SET_DUMPABLE: `user.uid` when the kernel left it dumpable, 0
 * when it made it not dumpable.
 */
async function procOwnerAfterIdChange(user: { uid: number; gid: number }): Promise<number> {
  const script = `import os; os.setresgid(${user.gid}, ${user.gid}, ${user.gid}); os.setresuid(${user.uid}, ${user.uid}, ${user.uid}); print(os.stat("/proc/self/fd").st_uid)`;
  const p = Bun.spawn({ cmd: ["/usr/bin/python3", "-c", script], stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`python3 (change of ids): exit code ${code}: ${err}`);
  return Number(out.trim());
}

/** Milliseconds until none of `pids` is alive (polled every 10 ms), or null after `timeoutMs`. */
async function msUntilGone(pids: number[], since: number, timeoutMs: number): Promise<number | null> {
  for (;;) {
    const now = performance.now();
    if (pids.every((p) => !pidAlive(p))) return now - since;
    if (now - since > timeoutMs) return null;
    await Bun.sleep(10);
  }
}

/** The network namespace of a process, as (dev, inode) of its nsfs file. */
function netnsId(path: string): string {
  const st = statSync(path);
  return `${st.dev}:${st.ino}`;
}

/** A generator started in the background (MCRELAY_LOG_LEVEL=debug: it says when it starts sending). */
async function startGen(rt: RelayTopology, args: string[], label: string): Promise<LoggedProcess> {
  const proc = rt.topo.spawn(rt.gen, [...mcrelayCommand("bun"), "gen", ...args, "--json"], {
    stdout: "pipe",
    stderr: "pipe",
    env: { MCRELAY_LOG_LEVEL: "debug" },
  });
  const p = new LoggedProcess(proc, label);
  await p.waitForStderr(/sending to /, READY_TIMEOUT_MS);
  return p;
}

/** Groups 239.1.1.1, 239.1.1.2, ... in order, the first one that lands on each slot of `members`. */
function groupPerSlot(members: number): string[] {
  const out: string[] = [];
  for (let slot = 0; slot < members; slot++) {
    for (let k = 1; k < 255; k++) {
      const g = `239.1.1.${k}`;
      if (workerSlot(g, 5000, members) === slot) {
        out.push(g);
        break;
      }
    }
  }
  if (out.length !== members) throw new Error(`no group for every slot of ${members}`);
  return out;
}

// ---------------------------------------------------------------------------------------

describe_netns("workers (kernel, under bun)", () => {
  test.each([1, 2])(
    "with %d worker(s) on the interface every worker and every thread runs as nobody (named mcrelay-worker) with no groups, no capabilities, no_new_privs and the seccomp filter, each worker saw its 13 confinement probes refused, and still forwards",
    async (n) => {
      const rt = await perTest.relay({ label: `priv${n}` });
      const dir = perTest.tempDir();
      // One rule per worker slot so that every worker carries traffic.
      const groups = groupPerSlot(2);
      const rules = groups.map((g, i) => ({ name: `p${i + 1}`, from: `${g}:5000@r0`, to: ["239.2.2.2:6000@r1"] }));
      const d = await startDaemon(rt, dir, { config: configText(rules), workers: n });
      const rows = await runningWorkers(d, n);
      expect(rows.map((w) => w.workers_on_interface)).toEqual(new Array(n).fill(n));
      const pids = rows.map((w) => w.pid!).sort((a, b) => a - b);
      // The listed pids are the daemon's worker children, and nothing else runs as a worker.
      expect(workerChildren(d.pid)).toEqual(pids);
      // The premise: the supervisor itself is root (so the drop is the worker's doing), and
      // the check below does see privileges where they are.
      expect(readStatus(`/proc/${d.pid}/status`)?.Uid).toBe("0\t0\t0\t0");
      expect(privilegeProblems(d.pid, NOBODY).problems.length).toBeGreaterThan(0);
      for (const pid of pids) {
        const { threads, problems } = privilegeProblems(pid, NOBODY);
        // The worker is the Zig executable: one thread, the dataplane's (no runtime threads).
        expect(threads).toBe(1);
        expect(problems).toEqual([]);
        // Named for ps/top/perf (PR_SET_NAME). Under bun it is exec'd as zig-out/bin/mcrelay-worker,
        // named so anyway: tests/compiled/binary.test.ts checks the memfd start ("43" without it).
        expect(readFileSync(`/proc/${pid}/comm`, "utf8")).toBe("mcrelay-worker\n");
      }
      expect(NOBODY.uid).not.toBe(0);
      // Each worker probed its own confinement after the drop (raw/packet/netlink/Unix sockets,
      // filter and SOL_PACKET options, write and dup on the packet socket, execve, ptrace, bpf)
      // and saw every probe refused; a worker that does not refuses to run.
      for (const w of rows) expect(w.confinement?.probes).toBe(13);
      note(`confinement probes ${n} worker(s)`, rows.map((w) => w.confinement));

      const count = 2_000;
      const s = await sink(rt, rt.sinks[0]!.ns, "239.2.2.2:6000@s0", ["--expect", String(count)]);
      const gens = await Promise.all(
        groups.map((g, i) => runGen(rt.topo, rt.gen, "bun", ["--to", `${g}:5000@g0`, "--rate", "2000", "--count", String(count), "--size", "256", "--stream", String(i + 1)])),
      );
      const report = await sinkReport(s);
      note(`privileges ${n} worker(s)`, { pids, sink: report.totals });
      for (const g of gens) expect(g.sent).toBe(count);
      for (let i = 0; i < groups.length; i++) {
        expect(stream(report, i + 1)).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0 });
      }
      // Still the same workers: none had to be restarted to get here.
      expect((await workerRows(d)).map((w) => w.pid!).sort((a, b) => a - b)).toEqual(pids);
    },
    T,
  );

  test(
    "a supervisor running as a non-root user with only CAP_NET_RAW, CAP_SETUID and CAP_SETGID forwards every packet, its workers as that user without capabilities",
    async () => {
      const rt = await perTest.relay({ label: "nonroot" });
      const setpriv = Bun.which("setpriv") ?? Bun.which("setpriv", { PATH: "/usr/bin:/bin:/usr/sbin:/sbin" });
      if (!setpriv) throw new Error("setpriv (util-linux) is needed to start the supervisor with chosen capabilities");
      const runAs = lookupUser("daemon");
      const caps = "+net_raw,+setuid,+setgid";
      const privs = [setpriv, `--reuid=${runAs.uid}`, `--regid=${runAs.gid}`, "--clear-groups", `--inh-caps=-all,${caps}`, `--ambient-caps=-all,${caps}`, `--bounding-set=-all,${caps}`];
      // bun and the repository must be readable by that user; if they are not, the compiled
      // executable is copied to a directory everyone can read.
      let command = [process.execPath, MAIN_TS];
      let how = "bun src/main.ts";
      const probe = await rt.topo.exec(rt.relay, [...privs, ...command, "version", "--json"], { timeoutMs: 60_000 });
      if (probe.exitCode !== 0) {
        const dir = perTest.tempDir();
        chmodSync(dir.path, 0o755);
        const copy = join(dir.path, "mcrelay");
        copyFileSync(COMPILED_PATH, copy);
        chmodSync(copy, 0o755);
        command = [copy];
        how = `copy of dist/mcrelay (bun src/main.ts failed as uid ${runAs.uid}: ${probe.stderr.trim().split("\n")[0]})`;
        const again = await rt.topo.exec(rt.relay, [...privs, copy, "version", "--json"], { timeoutMs: 60_000 });
        if (again.exitCode !== 0) throw new Error(`mcrelay cannot run as uid ${runAs.uid} at all:\n${probe.stderr}\n${again.stderr}`);
      }

      // Workers of another user could not be stopped without CAP_KILL: --user is refused.
      const refused = await rt.topo.exec(rt.relay, [...privs, ...command, "forward", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--user", "nobody"], { timeoutMs: 60_000 });
      expect(refused.exitCode).toBe(2);
      expect(refused.stderr).toContain("CAP_KILL");

      const count = 5_000;
      const fwd = startLogged(rt.topo, rt.relay, [...privs, ...command, "forward", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--json"], "forward (non-root)");
      await fwd.waitForStderr(READY.forward, READY_TIMEOUT_MS);
      // The premise: the supervisor really is uid `daemon` with exactly these three capabilities.
      const sup = readStatus(`/proc/${fwd.proc.pid}/status`)!;
      expect(sup.Uid).toBe(new Array(4).fill(runAs.uid).join("\t"));
      const CAPS_MASK = (1n << 13n) | (1n << 7n) | (1n << 6n); // net_raw, setuid, setgid
      expect(BigInt(`0x${sup.CapEff}`)).toBe(CAPS_MASK);
      expect(BigInt(`0x${sup.CapBnd}`)).toBe(CAPS_MASK);
      const workers = workerChildren(fwd.proc.pid);
      expect(workers).toHaveLength(1);
      // The worker keeps the supervisor's user and has shed every capability on every thread
      // (main thread: all sets; other threads may keep an inert inheritable set).
      const workerStatus = readStatus(`/proc/${workers[0]!}/status`)!;
      expect(workerStatus.Uid).toBe(new Array(4).fill(runAs.uid).join("\t"));
      for (const cap of ["CapInh", "CapPrm", "CapEff", "CapAmb"]) expect(BigInt(`0x${workerStatus[cap]}`)).toBe(0n);
      expect(workerStatus.NoNewPrivs).toBe("1");
      for (const tid of readdirSync(`/proc/${workers[0]!}/task`)) {
        const t = readStatus(`/proc/${workers[0]!}/task/${tid}/status`);
        if (!t) continue;
        for (const cap of ["CapPrm", "CapEff", "CapAmb"]) expect(BigInt(`0x${t[cap]}`)).toBe(0n);
        expect(t.NoNewPrivs).toBe("1");
      }

      const s = await sink(rt, rt.sinks[0]!.ns, "239.2.2.2:6000@s0", ["--expect", String(count)]);
      const gen = await runGen(rt.topo, rt.gen, "bun", ["--to", "239.1.1.1:5000@g0", "--rate", "5000", "--count", String(count), "--size", "512"]);
      const report = await sinkReport(s);
      const relay = await fwd.stopJson<ForwardReport>("SIGINT");
      note("non-root supervisor", { how, sink: report.totals, relay_packets: relay.rules[0]?.packets });
      expect(gen.sent).toBe(count);
      expect(report.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0 });
      expect(relay.rules[0]!.packets).toBe(count);
    },
    T,
  );

  test(
    "a supervisor that is a member of supplementary groups starts workers with none (Groups: empty on every thread), and they forward",
    async () => {
      const rt = await perTest.relay({ label: "groups" });
      const setpriv = Bun.which("setpriv") ?? Bun.which("setpriv", { PATH: "/usr/bin:/bin:/usr/sbin:/sbin" });
      if (!setpriv) throw new Error("setpriv (util-linux) is needed to start the supervisor with supplementary groups");
      // Root with two supplementary groups (adm and disk exist on every Debian-like system; any gid works).
      const groups = [4, 6];
      const count = 2_000;
      const fwd = startLogged(rt.topo, rt.relay, [setpriv, `--groups=${groups.join(",")}`, "--", ...mcrelayCommand("bun"), "forward", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--json"], "forward (with groups)");
      await fwd.waitForStderr(READY.forward, READY_TIMEOUT_MS);
      // The premise: the supervisor does hold the groups, so an empty list in the worker is its own doing.
      expect(readStatus(`/proc/${fwd.proc.pid}/status`)?.Groups).toBe(groups.join(" "));
      const workers = workerChildren(fwd.proc.pid);
      expect(workers).toHaveLength(1);
      const tids = readdirSync(`/proc/${workers[0]!}/task`);
      expect(tids.length).toBe(1); // the Zig worker's one thread
      for (const path of [`/proc/${workers[0]!}/status`, ...tids.map((t) => `/proc/${workers[0]!}/task/${t}/status`)]) {
        const st = readStatus(path);
        if (st) expect({ path, groups: st.Groups }).toEqual({ path, groups: "" });
      }
      expect(privilegeProblems(workers[0]!, NOBODY).problems).toEqual([]);

      const s = await sink(rt, rt.sinks[0]!.ns, "239.2.2.2:6000@s0", ["--expect", String(count)]);
      const gen = await runGen(rt.topo, rt.gen, "bun", ["--to", "239.1.1.1:5000@g0", "--rate", "4000", "--count", String(count), "--size", "256"]);
      const report = await sinkReport(s);
      const relay = await fwd.stopJson<ForwardReport>("SIGINT");
      expect(gen.sent).toBe(count);
      expect(report.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, datagrams: count });
      expect(relay.rules[0]!.packets).toBe(count);
    },
    T,
  );

  test(
    "a worker SIGKILLed under 10,000 pps is replaced by a running worker within 1 s, the stream loses nothing, at most one group of ring slots is sent twice, and the rule's count equals what the receiver got",
    async () => {
      const rt = await perTest.relay({ label: "kill" });
      const dir = perTest.tempDir();
      // Riding out a restart (250 ms backoff plus start-up) at 10,000 pps takes a few thousand
      // ring slots; 64 MiB holds 32,768 (docs/operations.md, ring sizing), a margin for a slow
      // start-up on a loaded machine.
      const config = JSON.stringify({ ring_mib: { r0: 64 }, rules: [{ name: "a", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }] });
      const d = await startDaemon(rt, dir, { config });
      const [first] = await runningWorkers(d, 1);
      const rate = 10_000;
      const count = 60_000;
      const s = await sink(rt, rt.sinks[0]!.ns, "239.2.2.2:6000@s0", ["--expect", String(count)], 3);
      const gen = runGen(rt.topo, rt.gen, "bun", ["--to", "239.1.1.1:5000@g0", "--rate", String(rate), "--count", String(count), "--size", "256"], 180_000);
      const c = await helloClient(d.socket);
      try {
        const packets = async () => ruleNamed(((await c.call("stats")) as StatsResult).rules, "a").packets;
        // Mid-stream: at least a second of traffic went through, most of it is still to come.
        await waitFor("traffic through the relay", async () => (await packets()) >= rate, 60_000, 20);
        const killedAt = performance.now();
        process.kill(first!.pid!, "SIGKILL");
        const replaced = await waitFor("a new worker running", async () => {
          const w = ((await c.call("workers")) as { workers: WorkerInfo[] }).workers[0];
          return w && w.pid !== null && w.pid !== first!.pid && w.state === "running" ? w : undefined;
        }, 30_000, 5);
        const restartMs = performance.now() - killedAt;
        const atRestart = await packets();
        // The replacement forwards: the rule's count moves on after it took over.
        const moved = await waitFor("packets forwarded by the new worker", async () => {
          const p = await packets();
          return p >= atRestart + rate / 10 ? p : undefined;
        }, 10_000, 20);
        const sent = await gen;
        const report = await sinkReport(s);
        const st = ((await c.call("stats")) as StatsResult);
        const row = st.workers[0]!;
        note("worker SIGKILL", {
          restart_ms: Math.round(restartMs),
          sent: sent.sent,
          received: report.totals.received,
          lost: report.totals.lost,
          duplicates: report.totals.duplicates,
          reordered: report.totals.reordered,
          rule_packets: ruleNamed(st.rules, "a").packets,
          kernel_drops: ifaceCounters(st, "r0").kernel_drops,
          moved_by: moved - atRestart,
        });
        expect(sent.sent).toBe(count);
        // A kill by someone else is a failure, and logged as one.
        expect(d.proc.stderr).toMatch(new RegExp(`\\[warn\\] \\[workers\\] worker 0 \\(pid ${first!.pid}\\) exited \\(SIGKILL\\)`));
        expect(row).toMatchObject({ pid: replaced.pid, state: "running", restarts: 1 });
        expect(restartMs).toBeLessThanOrEqual(1_000);
        // The packet socket outlives its worker: the replacement picks up the ring's backlog, so
        // nothing is lost (measured: 0 of 60,000, every run). It resumes after the last slot the
        // killed worker released, so what that worker had already sent of the group it was
        // working on is sent again: duplicates are bounded by one group of runs of slots
        // (runs_per_flush_max runs of a block's worth of slots each).
        const block_packets_max = 8 * (replaced.ring!.block_bytes / replaced.ring!.frame_bytes);
        expect(report.totals).toMatchObject({ received: count, lost: 0, pattern_errors: 0, datagrams: count + report.totals.duplicates });
        expect(report.totals.duplicates).toBeLessThanOrEqual(block_packets_max);
        // The killed worker's counts are kept: the rule's total is every datagram the receiver got.
        expect(ruleNamed(st.rules, "a").packets).toBe(report.totals.datagrams);
      } finally {
        c.close();
      }
    },
    T,
  );

  test(
    "a crash-looping worker is restarted after 250, 500, 1000, 2000 and 4000 ms, workers shows the failure streak and backoff, ping stays fast",
    async () => {
      const rt = await perTest.relay({ label: "backoff" });
      const dir = perTest.tempDir();
      const d = await startDaemon(rt, dir, { config: configText([{ name: "a", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }]) });
      const [first] = await runningWorkers(d, 1);
      const kills = 5;
      const expected = Array.from({ length: kills }, (_, i) => BACKOFF_FIRST_MS * 2 ** i);

      // Pings over one connection every 100 ms for the whole crash loop.
      const pinger = await helloClient(d.socket);
      const pingMs: number[] = [];
      let pinging = true;
      const pingLoop = (async () => {
        while (pinging) {
          const t = performance.now();
          const r = await pinger.call("ping", undefined, 5_000);
          if (r?.pong !== true) throw new Error(`ping answered ${JSON.stringify(r)}`);
          pingMs.push(performance.now() - t);
          await Bun.sleep(100);
        }
      })();
      // What `workers` says between the kills.
      const watcher = await helloClient(d.socket);
      const seen: { failures: number; backoff_ms: number; state: string; restarts: number }[] = [];
      let watching = true;
      const watchLoop = (async () => {
        while (watching) {
          const w = ((await watcher.call("workers")) as { workers: WorkerInfo[] }).workers[0];
          if (w && w.state === "backoff") seen.push({ failures: w.consecutive_failures, backoff_ms: w.backoff_ms, state: w.state, restarts: w.restarts });
          await Bun.sleep(25);
        }
      })();

      const killedAt: number[] = [];
      const spawnedAt: number[] = [];
      const killed = new Set<number>();
      try {
        let victim = first!.pid!;
        for (let i = 0; i < kills; i++) {
          killed.add(victim);
          process.kill(victim, "SIGKILL");
          killedAt.push(performance.now());
          // The next worker, killed the moment it exists.
          const deadline = performance.now() + expected[i]! + 20_000;
          let next: number | undefined;
          while (next === undefined) {
            next = workerChildren(d.pid).find((p) => !killed.has(p));
            if (next !== undefined) break;
            if (performance.now() > deadline) throw new Error(`no new worker within ${expected[i]! + 20_000} ms after kill ${i + 1}:\n${d.proc.output()}`);
            await Bun.sleep(5);
          }
          spawnedAt.push(performance.now());
          victim = next;
        }
        // The sixth worker is left alone: it must come up and forward.
        const [last] = await runningWorkers(d, 1);
        expect(last!.pid).toBe(victim);
        pinging = false;
        watching = false;
        await Promise.all([pingLoop, watchLoop]);

        const delays = spawnedAt.map((t, i) => t - killedAt[i]!);
        const gaps = spawnedAt.slice(1).map((t, i) => t - spawnedAt[i]!);
        const states = new Map<number, { backoff_ms: number }>();
        for (const s of seen) states.set(s.failures, s);
        note("crash loop", {
          expected_ms: expected,
          kill_to_respawn_ms: delays.map(Math.round),
          respawn_gaps_ms: gaps.map(Math.round),
          backoff_rows_seen: [...states].map(([f, s]) => ({ consecutive_failures: f, backoff_ms: s.backoff_ms })),
          ping_ms: { n: pingMs.length, p50: Math.round(percentile(pingMs, 50)), p99: Math.round(percentile(pingMs, 99)), max: Math.round(Math.max(...pingMs)) },
        });

        for (let i = 0; i < kills; i++) {
          // Never sooner than the backoff; not much later either (100 ms tick, exit detection, a busy machine).
          expect(delays[i]!).toBeGreaterThanOrEqual(0.8 * expected[i]!);
          expect(delays[i]!).toBeLessThanOrEqual(expected[i]! + 2_000);
        }
        for (let i = 1; i < gaps.length; i++) expect(gaps[i]!).toBeGreaterThanOrEqual(gaps[i - 1]!);
        // Every backoff row `workers` showed is consistent, and the long ones were all seen.
        for (const s of seen) expect(s.backoff_ms).toBe(BACKOFF_FIRST_MS * 2 ** (s.failures - 1));
        for (let f = 2; f <= kills; f++) expect(states.get(f)?.backoff_ms).toBe(expected[f - 1]);
        expect(last).toMatchObject({ state: "running", restarts: kills, consecutive_failures: kills, backoff_ms: 0 });
        // The control socket kept answering quickly while workers died and were respawned.
        expect(pingMs.length).toBeGreaterThan(20);
        expect(Math.max(...pingMs)).toBeLessThan(1_000);

        // The worker that finally stayed up forwards everything.
        const count = 3_000;
        const s = await sink(rt, rt.sinks[0]!.ns, "239.2.2.2:6000@s0", ["--expect", String(count)]);
        await runGen(rt.topo, rt.gen, "bun", ["--to", "239.1.1.1:5000@g0", "--rate", "3000", "--count", String(count), "--size", "256"]);
        expect((await sinkReport(s)).totals).toMatchObject({ received: count, lost: 0, duplicates: 0 });
      } finally {
        pinging = false;
        watching = false;
        await Promise.allSettled([pingLoop, watchLoop]);
        pinger.close();
        watcher.close();
      }
    },
    T,
  );

  test(
    "a worker whose table diverges is found at the next ping and resynced, and the stream flows on after the repair",
    async () => {
      const rt = await perTest.relay({ label: "drift" });
      const dir = perTest.tempDir();
      const rate = 1_000;
      const divergeAfterMs = 2_000;
      // Sink and generator first, so that traffic crosses the relay from the worker's first
      // moment and the divergence (2 s after the worker started) surely hits it.
      const s = await sink(rt, rt.sinks[0]!.ns, "239.2.2.2:6000@s0", [], 3);
      const gen1 = await startGen(rt, ["--to", "239.1.1.1:5000@g0", "--rate", String(rate), "--duration", "600", "--size", "256", "--stream", "1"], "gen stream 1");
      const d = await startDaemon(rt, dir, {
        config: configText([{ name: "a", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }]),
        env: { MCRELAY_LOG_FORMAT: "json" },
        extraArgs: ["--test-hook", `MCRELAY_TEST_DIVERGE_AFTER_MS=${divergeAfterMs}`],
      });
      const [first] = await runningWorkers(d, 1);
      const repaired = await waitFor("a drift repair", async () => {
        const w = (await workerRows(d))[0];
        return w && w.drift_repairs >= 1 ? w : undefined;
      }, 30_000, 50);
      const atRepair = ruleNamed((await stats(d)).rules, "a").packets;
      // A second stream sent entirely after the repair must arrive complete.
      const count2 = 2_000;
      const gen2 = await runGen(rt.topo, rt.gen, "bun", ["--to", "239.1.1.1:5000@g0", "--rate", String(rate), "--count", String(count2), "--size", "256", "--stream", "2"]);
      const sent1 = await stopStream(gen1);
      const report = await sinkReport(s);
      const st = await stats(d);
      const counters = ifaceCounters(st, "r0");
      const rulePackets = ruleNamed(st.rules, "a").packets;

      // The worker's "dropping" and the supervisor's "resyncing", from the JSON log lines.
      const logs = d.proc.stderr.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { time: string; msg: string });
      const dropped = logs.find((l) => l.msg.includes("test hook: dropping"));
      const resynced = logs.find((l) => l.msg.includes("resyncing"));
      if (!dropped || !resynced) throw new Error(`log lines of the divergence and its repair not found:\n${d.proc.output()}`);
      const detectMs = Date.parse(resynced.time) - Date.parse(dropped.time);
      const lossWindowMs = (counters.no_match! / rate) * 1000;
      note("drift", {
        detect_ms: detectMs,
        no_match: counters.no_match,
        matched: counters.matched,
        loss_window_ms: Math.round(lossWindowMs),
        stream1: { sent: sent1.sent, ...stream(report, 1) },
        stream2: { sent: gen2.sent, ...stream(report, 2) },
        rule_packets: rulePackets,
      });

      // Repaired in place: the same worker, no restart.
      expect(repaired).toMatchObject({ pid: first!.pid, restarts: 0, state: "running" });
      expect(detectMs).toBeGreaterThanOrEqual(0);
      expect(detectMs).toBeLessThanOrEqual(PING_INTERVAL_MS + PING_DEADLINE_MS);
      // The divergence really cost packets (it hit live traffic), but no more than the probe window.
      expect(counters.no_match!).toBeGreaterThan(0);
      expect(counters.no_match!).toBeLessThanOrEqual(((PING_INTERVAL_MS + PING_DEADLINE_MS) / 1000) * rate);
      // Everything sent after the repair arrived; stream 1 went on after it too.
      expect(gen2.sent).toBe(count2);
      expect(stream(report, 2)).toMatchObject({ received: count2, lost: 0, duplicates: 0 });
      expect(rulePackets - atRepair - count2).toBeGreaterThan(0);
      // What the relay matched is exactly what the sink got. (The interface's counter, not the
      // rule's: the divergence's empty table zeroes the rule's count in the worker.)
      expect(report.totals.received).toBe(counters.matched!);
      expect(report.totals.duplicates).toBe(0);
    },
    T,
  );

  test(
    "supervisor resyncs rules on restart",
    async () => {
      const rt = await perTest.relay({ label: "resync" });
      const dir = perTest.tempDir();
      const d1 = await startDaemon(rt, dir, { label: "daemon#1" });
      await d1.json(["add", "--name", "rt1", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      const rows = await runningWorkers(d1, 1);
      const workers = workerChildren(d1.pid);
      expect(workers).toEqual([rows[0]!.pid!]);

      // The supervisor dies without a chance to clean up: its workers must not outlive it.
      const killedAt = performance.now();
      process.kill(d1.pid, "SIGKILL");
      const goneMs = await msUntilGone(workers, killedAt, 10_000);
      await d1.proc.exited;
      const leftovers = (await rt.topo.exec(rt.relay, ["ip", "netns", "pids", rt.relay])).stdout.trim();
      note("supervisor SIGKILL", { workers, workers_gone_ms: goneMs === null ? null : Math.round(goneMs) });
      expect(goneMs).not.toBeNull();
      expect(goneMs!).toBeLessThanOrEqual(1_000);
      expect(leftovers.split(/\s+/).filter((p) => p && cmdline(Number(p)).includes("_worker"))).toEqual([]);

      // A new supervisor on the same state directory (and the stale socket path) has the rule.
      const d2 = await startDaemon(rt, dir, { socket: d1.socket, stateDir: d1.stateDir, label: "daemon#2" });
      const listed = (await d2.json<{ rules: ListedRule[] }>(["list"])).rules;
      expect(listed).toHaveLength(1);
      expect(ruleNamed(listed, "rt1")).toMatchObject({ origin: "runtime", input: "239.1.1.1:5000@r0", outputs: [{ to: "239.2.2.2:6000@r1" }], state: "active" });
      const [w2] = await runningWorkers(d2, 1);
      expect(workers).not.toContain(w2!.pid);

      const count = 3_000;
      const s = await sink(rt, rt.sinks[0]!.ns, "239.2.2.2:6000@s0", ["--expect", String(count)]);
      await runGen(rt.topo, rt.gen, "bun", ["--to", "239.1.1.1:5000@g0", "--rate", "3000", "--count", String(count), "--size", "256"]);
      expect((await sinkReport(s)).totals).toMatchObject({ received: count, lost: 0, duplicates: 0 });
      expect(ruleNamed((await stats(d2)).rules, "rt1").packets).toBe(count);
    },
    T,
  );

  test(
    "supervisor in namespace: a daemon started inside a namespace forwards between that namespace's interfaces and a client there controls it",
    async () => {
      const rt = await perTest.relay({ label: "inns", sinks: 2 });
      const dir = perTest.tempDir();
      const d = await startDaemon(rt, dir);
      // The daemon lives in the relay namespace, not in ours.
      const relayNs = netnsId(`/run/netns/${rt.relay}`);
      expect(netnsId(`/proc/${d.pid}/ns/net`)).toBe(relayNs);
      expect(netnsId("/proc/self/ns/net")).not.toBe(relayNs);

      // Every client call below runs inside the relay namespace (ip netns exec).
      const ping = await d.cli(["ping"]);
      expect(ping.exitCode).toBe(0);
      await d.json(["add", "--name", "in-ns", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--to", "239.2.2.2:6000@r2"]);
      const listed = (await d.json<{ rules: ListedRule[] }>(["list"])).rules;
      expect(ruleNamed(listed, "in-ns")).toMatchObject({ state: "active", reasons: [] });
      const workers = (await d.json<{ workers: WorkerInfo[] }>(["workers"])).workers;
      expect(workers).toHaveLength(1);
      expect(workers[0]).toMatchObject({ interface: "r0", state: "running" });
      expect(netnsId(`/proc/${workers[0]!.pid}/ns/net`)).toBe(relayNs);

      const count = 3_000;
      const sinks = await Promise.all(rt.sinks.map((side) => sink(rt, side.ns, "239.2.2.2:6000@s0", ["--expect", String(count)])));
      await runGen(rt.topo, rt.gen, "bun", ["--to", "239.1.1.1:5000@g0", "--rate", "3000", "--count", String(count), "--size", "256"]);
      for (const s of sinks) expect((await sinkReport(s)).totals).toMatchObject({ received: count, lost: 0, duplicates: 0 });

      // The client in the namespace removes the rule and stops the flow.
      const removed = await d.json(["remove", "in-ns"]);
      expect(removed).toMatchObject({ removed: "in-ns" });
      expect((await d.json<{ rules: ListedRule[] }>(["list"])).rules).toEqual([]);
      const quiet = await sink(rt, rt.sinks[0]!.ns, "239.2.2.2:6000@s0");
      const unrelayed = await runGen(rt.topo, rt.gen, "bun", ["--to", "239.1.1.1:5000@g0", "--rate", "1000", "--count", "1000", "--size", "256"]);
      await Bun.sleep(500);
      expect(unrelayed.sent).toBe(1000);
      expect((await quiet.stopJson<{ totals: { datagrams: number } }>("SIGINT")).totals.datagrams).toBe(0);
    },
    T,
  );

  test(
    "SIGTERM to a supervisor with 2 workers under traffic stops both workers within 2 s and the process exits 0",
    async () => {
      const rt = await perTest.relay({ label: "stop" });
      const dir = perTest.tempDir();
      const groups = groupPerSlot(2);
      const rules = groups.map((g, i) => ({ name: `s${i + 1}`, from: `${g}:5000@r0`, to: ["239.2.2.2:6000@r1"] }));
      const d = await startDaemon(rt, dir, { config: configText(rules, { r0: 2 }) });
      const rows = await runningWorkers(d, 2);
      const pids = rows.map((w) => w.pid!);
      expect(workerChildren(d.pid)).toEqual([...pids].sort((a, b) => a - b));
      const gens = await Promise.all(groups.map((g, i) => startGen(rt, ["--to", `${g}:5000@g0`, "--rate", "2000", "--duration", "600", "--size", "256", "--stream", String(i + 1)], `gen ${g}`)));
      await waitFor("traffic on both workers", async () => {
        const st = await stats(d);
        return rules.every((r) => ruleNamed(st.rules, r.name).packets > 1_000) ? true : undefined;
      }, 30_000, 50);

      const termAt = performance.now();
      let exitMs = NaN;
      void d.proc.proc.exited.then(() => (exitMs = performance.now() - termAt));
      d.proc.proc.kill("SIGTERM");
      const workersGoneMs = await msUntilGone(pids, termAt, 10_000);
      const code = await d.proc.wait(20_000);
      for (const g of gens) await stopStream(g);
      note("graceful stop", { workers_gone_ms: workersGoneMs === null ? null : Math.round(workersGoneMs), exit_ms: Math.round(exitMs), code });
      expect(workersGoneMs).not.toBeNull();
      expect(workersGoneMs!).toBeLessThanOrEqual(2_000);
      expect(code).toBe(0);
      expect(d.proc.proc.signalCode ?? null).toBeNull();
      expect(exitMs).toBeLessThanOrEqual(3_000);
      expect(d.proc.stderr).toMatch(/final: rule s1: \d+ packets/);
      // Workers stopped by the supervisor are no failures: nothing about them at warn or error.
      expect(d.proc.stderr).not.toMatch(/\[(warn|error)\] \[workers\]/);
    },
    T,
  );

  test(
    "a stop signal that reaches the workers too (Ctrl-C to the process group, SIGTERM to every process as systemd's KillMode=control-group sends) is logged as a stop, not as worker failures; a worker SIGTERMed alone is still a warning",
    async () => {
      const rt = await perTest.relay({ label: "sigall" });
      const dir = perTest.tempDir();
      const groups = groupPerSlot(2);
      const rules = groups.map((g, i) => ({ name: `s${i + 1}`, from: `${g}:5000@r0`, to: ["239.2.2.2:6000@r1"] }));
      // Through setsid, as a shell starts a foreground job: the daemon leads its own process group.
      const d = await startDaemon(rt, dir, { config: configText(rules, { r0: 2 }), prefix: ["setsid"] });
      const rows = await runningWorkers(d, 2);
      expect(groupAndSession(d.pid).pgrp).toBe(d.pid);
      // Each worker in a session of its own: what is sent to the daemon's group misses them.
      for (const w of rows) expect(groupAndSession(w.pid!)).toEqual({ pgrp: w.pid!, session: w.pid! });

      // Someone else's SIGTERM to one worker while the supervisor goes on: a warning, and a restart.
      const victim = rows.find((w) => w.worker === 1)!.pid!;
      process.kill(victim, "SIGTERM");
      await d.proc.waitForStderr(new RegExp(`\\[warn\\] \\[workers\\] worker 1 \\(pid ${victim}\\) exited \\(SIGTERM\\)`), 10_000);
      const now = await waitFor("worker 1 replaced", async () => {
        const r = await workerRows(d);
        return r.length === 2 && r.every((w) => w.state === "running" && w.pid !== null) && !r.some((w) => w.pid === victim) ? r : undefined;
      }, 30_000, 100);
      const mark = d.proc.stderr.length;

      // Ctrl-C, and SIGTERM to every process of the service at the same moment.
      process.kill(-d.pid, "SIGINT");
      for (const w of now) process.kill(w.pid!, "SIGTERM");
      const code = await d.proc.wait(20_000);
      const tail = d.proc.stderr.slice(mark);
      note("stop signal to every process", tail.split("\n").filter((l) => /\[workers\]|stopping|final/.test(l)));
      expect(code).toBe(0);
      expect(tail).toMatch(/stopping \(SIGINT\)/);
      expect(tail).toMatch(/final: rule s1: \d+ packets/);
      expect(tail).not.toMatch(/\[(warn|error)\] \[workers\]/);
    },
    T,
  );

  test(
    "M7: a worker started where fs.suid_dumpable=1 leaves a change of ids dumpable is not dumpable (its /proc files are root's), and another process of the workers' user cannot reach its packet socket: /proc/PID/fd, pidfd_getfd and ptrace are refused",
    async () => {
      const rt = await perTest.relay({ label: "reach" });
      const dir = perTest.tempDir();
      const d = await startDaemon(rt, dir, { config: configText([{ name: "h", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }]) });
      const [first] = await runningWorkers(d, 1);
      // The worker examined is the replacement of a killed one, started (and dropped to
      // nobody) while fs.suid_dumpable is 1: only its own PR_SET_DUMPABLE makes it not
      // dumpable. The setting is on for the replacement's start only, and checked to work.
      const windowAt = performance.now();
      const { row, plainOwner } = await withSuidDumpable(1, async () => {
        const plainOwner = await procOwnerAfterIdChange(NOBODY);
        process.kill(first!.pid!, "SIGKILL");
        const row = await waitFor("a replacement worker running", async () => {
          const w = (await workerRows(d))[0];
          return w && w.state === "running" && w.pid !== null && w.pid !== first!.pid ? w : undefined;
        }, 20_000, 20);
        return { row, plainOwner };
      });
      const windowMs = Math.round(performance.now() - windowAt);
      // The premise: under that setting a change of ids alone leaves a process dumpable.
      expect(plainOwner).toBe(NOBODY.uid);
      const pid = row.pid!;
      // Not dumpable: the kernel gives its /proc files to root.
      expect({ fd: statSync(`/proc/${pid}/fd`).uid, mem: statSync(`/proc/${pid}/mem`).uid }).toEqual({ fd: 0, mem: 0 });
      // The worker's packet socket: a descriptor of the worker that is an AF_PACKET socket.
      const inodes = new Set(readFileSync(`/proc/${pid}/net/packet`, "utf8").trim().split("\n").slice(1).map((l) => l.trim().split(/\s+/).at(-1)));
      const packetFd = readdirSync(`/proc/${pid}/fd`).find((fd) => {
        try {
          return inodes.has(/socket:\[(\d+)\]/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1] ?? "");
        } catch {
          return false;
        }
      });
      expect(packetFd).toBeDefined();
      // As nobody, like the worker: each way to get hold of that descriptor, with its errno.
      const script = `
import ctypes, errno, json, os, sys
pid, fd = int(sys.argv[1]), int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
out = {}
try:
    os.listdir(f"/proc/{pid}/fd"); out["proc_fd"] = "ok"
except OSError as e:
    out["proc_fd"] = errno.errorcode[e.errno]
try:
    pidfd = os.pidfd_open(pid)
    r = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
    out["pidfd_getfd"] = "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
except OSError as e:
    out["pidfd_getfd"] = errno.errorcode[e.errno]
r = libc.ptrace(16, pid, 0, 0)  # PTRACE_ATTACH
out["ptrace"] = "ok" if r == 0 else errno.errorcode[ctypes.get_errno()]
print(json.dumps(out))
`;
      const p = Bun.spawn({ cmd: ["setpriv", `--reuid=${NOBODY.uid}`, `--regid=${NOBODY.gid}`, "--clear-groups", "/usr/bin/python3", "-c", script, String(pid), packetFd!], stdout: "pipe", stderr: "pipe" });
      const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
      expect(code).toBe(0);
      const got = JSON.parse(out);
      note("reach a worker", { ...got, suid_dumpable_1_ms: windowMs });
      expect(got).toEqual({ proc_fd: "EACCES", pidfd_getfd: "EPERM", ptrace: "EPERM" });
      expect(await d.stop()).toBe(0);
    },
    T,
  );

  test(
    "M4: a SIGSTOPped worker fails one health check and counts as one failure (restarts 1, streak 1), not two",
    async () => {
      const rt = await perTest.relay({ label: "stuck" });
      const dir = perTest.tempDir();
      const d = await startDaemon(rt, dir, { config: configText([{ name: "h", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }]) });
      const [row] = await runningWorkers(d, 1);
      process.kill(row!.pid!, "SIGSTOP");
      const next = await waitFor("a new running worker", async () => {
        const rows = await workerRows(d);
        return rows.length === 1 && rows[0]!.state === "running" && rows[0]!.pid !== row!.pid ? rows[0] : undefined;
      }, 20_000, 50);
      // Settle: a second, late failure of the same kill would show up now.
      await Bun.sleep(1_500);
      const after = (await workerRows(d))[0]!;
      note("stuck worker", { before: row, replaced_by: next, after });
      expect(after.pid).toBe(next!.pid);
      expect({ restarts: after.restarts, consecutive_failures: after.consecutive_failures }).toEqual({ restarts: 1, consecutive_failures: 1 });
      expect(await d.stop()).toBe(0);
    },
    T,
  );

  test(
    "a daemon whose worker is stuck (SIGSTOPped) stops within 1.5 s of SIGTERM and exits 0",
    async () => {
      const rt = await perTest.relay({ label: "stuckstop" });
      const dir = perTest.tempDir();
      const d = await startDaemon(rt, dir, { config: configText([{ name: "h", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }]) });
      const [row] = await runningWorkers(d, 1);
      process.kill(row!.pid!, "SIGSTOP");
      const termAt = performance.now();
      d.proc.proc.kill("SIGTERM");
      const code = await d.proc.wait(20_000);
      const exitMs = performance.now() - termAt;
      note("stop with a stuck worker", { exit_ms: Math.round(exitMs), code });
      expect(code).toBe(0);
      expect(exitMs).toBeLessThanOrEqual(1_500);
      expect(pidAlive(row!.pid!)).toBe(false);
    },
    T,
  );

  test(
    "2 workers carry 20 streams between them (every packet once, split by the flow hash), and after a reload to 3 workers still every packet, the first two workers not restarted",
    async () => {
      const rt = await perTest.relay({ label: "twenty" });
      const dir = perTest.tempDir();
      const streams = 20;
      const count = 1_000;
      const groups = Array.from({ length: streams }, (_, i) => `239.1.1.${i + 1}`);
      const rules = groups.map((g, i) => ({ name: `f${i + 1}`, from: `${g}:5000@r0`, to: ["239.2.2.2:6000@r1"] }));
      const d = await startDaemon(rt, dir, { config: configText(rules, { r0: 2 }) });

      /** One round: 20 generators at 250 pps each (5,000 pps in all), one sink counting each stream. */
      const round = async (members: number) => {
        const rows = await runningWorkers(d, members);
        const slotOf = groups.map((g) => workerSlot(g, 5000, members));
        // The premise: every worker holds some of the rules, and `workers` agrees with the hash.
        for (let slot = 0; slot < members; slot++) {
          const want = slotOf.filter((s) => s === slot).length;
          expect(want).toBeGreaterThan(0);
          expect(rows.find((w) => w.slot === slot)).toMatchObject({ workers_on_interface: members, rules: want, state: "running" });
        }
        const before = await stats(d);
        const s = await sink(rt, rt.sinks[0]!.ns, "239.2.2.2:6000@s0", ["--expect", String(count)], 5);
        const gens = await Promise.all(
          groups.map((g, i) => runGen(rt.topo, rt.gen, "bun", ["--to", `${g}:5000@g0`, "--rate", "250", "--count", String(count), "--size", "256", "--stream", String(i + 1)], 120_000)),
        );
        const report = await sinkReport(s);
        const after = await stats(d);
        const delta = (name: string) => ruleNamed(after.rules, name).packets - ruleNamed(before.rules, name).packets;
        const perSlot = new Array<number>(members).fill(0);
        rules.forEach((r, i) => (perSlot[slotOf[i]!]! += delta(r.name)));
        const c0 = ifaceCounters(before, "r0");
        const c1 = ifaceCounters(after, "r0");
        return { rows, report, gens, perSlot, delta, matched: c1.matched! - c0.matched!, noMatch: c1.no_match! - c0.no_match! };
      };
      const check = (r: Awaited<ReturnType<typeof round>>, members: number) => {
        for (const g of r.gens) expect(g.sent).toBe(count);
        expect(r.report.streams).toHaveLength(streams);
        for (let i = 1; i <= streams; i++) {
          expect({ stream: i, ...stream(r.report, i) }).toMatchObject({ stream: i, received: count, lost: 0, duplicates: 0, pattern_errors: 0 });
        }
        expect(r.report.totals.received).toBe(streams * count);
        for (const rule of rules) expect(r.delta(rule.name)).toBe(count);
        expect(r.perSlot).toHaveLength(members);
        for (const n of r.perSlot) expect(n).toBeGreaterThan(0);
        expect(r.perSlot.reduce((a, b) => a + b, 0)).toBe(streams * count);
        expect(r.matched).toBe(streams * count);
        expect(r.noMatch).toBe(0);
      };

      const two = await round(2);
      note("20 streams over 2 workers", { per_worker_packets: two.perSlot, matched: two.matched, no_match: two.noMatch, sink: two.report.totals });
      check(two, 2);

      // Three workers instead of two: the config's worker count changes and is reloaded.
      dir.file("mcrelay.json5", configText(rules, { r0: 3 }));
      const reloaded = await d.json(["reload"]);
      expect(reloaded).toMatchObject({ added: [], removed: [], changed: [] });
      const three = await round(3);
      note("20 streams over 3 workers", { per_worker_packets: three.perSlot, matched: three.matched, no_match: three.noMatch, sink: three.report.totals });
      // The interface's sockets were rebuilt for 3 members inside the running worker processes:
      // workers 0 and 1 kept running (same pids), a third one started.
      for (const old of two.rows) {
        expect(pidAlive(old.pid!)).toBe(true);
        expect(three.rows.find((w) => w.slot === old.slot)?.pid).toBe(old.pid);
      }
      check(three, 3);
    },
    T,
  );
});
