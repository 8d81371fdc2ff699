/**
 * Processes of a trial: spawning inside a namespace pinned to a CPU with stdout collected and
 * stderr watched, and reading what the kernel says about a process (per-thread run time from
 * schedstat, resident memory, children), plus the scan for forwarders that must not run
 * during a trial.
 */
import { readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import type { Subprocess } from "bun";
import type { Topology } from "../lib/netns.ts";

/** A spawned process whose stdout is collected whole and whose stderr is kept and searchable. */
export interface Spawned {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  pid: number;
  /** Resolves with everything the process wrote to stdout, once it exited. */
  stdout: Promise<string>;
  /** stderr so far. */
  stderr(): string;
  /** Resolves when `text` appears on stderr; rejects on timeout or if the process exits first. */
  waitFor(text: string, timeoutMs: number): Promise<void>;
  exited: Promise<number>;
}

/** Limits on what is kept of one process's stderr. */
const STDERR_KEEP_BYTES_MAX = 64 * 1024;

export function spawnIn(topo: Topology, ns: string, cpu: number | null, argv: string[]): Spawned {
  const pinned = cpu === null ? argv : ["taskset", "-c", String(cpu), ...argv];
  const proc = topo.spawn(ns, pinned, { stdout: "pipe", stderr: "pipe", killGraceMs: 3_000 });
  let err = "";
  const waiters: { text: string; resolve: () => void }[] = [];
  const pump = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr) {
      err += decoder.decode(chunk, { stream: true });
      if (err.length > STDERR_KEEP_BYTES_MAX) err = err.slice(-STDERR_KEEP_BYTES_MAX);
      for (const w of [...waiters]) {
        if (err.includes(w.text)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    }
  })();
  const stdout = new Response(proc.stdout).text();
  const exited = Promise.all([proc.exited, pump]).then(([code]) => code);
  return {
    proc,
    pid: proc.pid,
    stdout,
    stderr: () => err,
    exited,
    waitFor(text, timeoutMs) {
      if (err.includes(text)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${argv[0]}: no "${text}" on stderr within ${timeoutMs} ms: ${tail(err)}`)), timeoutMs);
        waiters.push({
          text,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
        void exited.then((code) => {
          clearTimeout(timer);
          reject(new Error(`${argv.join(" ")} exited (code ${code}) before "${text}": ${tail(err)}`));
        });
      });
    },
  };
}

/** Processes started outside the namespaces (perf): killed by `killHostProcesses` on the way out. */
const hostProcs = new Set<Subprocess<"ignore", "ignore", "ignore">>();

export function spawnHost(argv: string[]): Subprocess<"ignore", "ignore", "ignore"> {
  const proc = Bun.spawn({ cmd: argv, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  hostProcs.add(proc);
  void proc.exited.then(() => hostProcs.delete(proc));
  return proc;
}

export function killHostProcesses(): void {
  for (const p of hostProcs) {
    try {
      p.kill("SIGKILL");
    } catch {
      // Gone already.
    }
  }
}

export function tail(text: string, chars = 600): string {
  const t = text.trim();
  return t.length > chars ? `...${t.slice(-chars)}` : t;
}

/** Sends SIGINT and waits for the exit; SIGKILL after `graceMs`. Returns stdout. */
export async function interruptAndCollect(s: Spawned, graceMs = 5_000): Promise<string> {
  if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill("SIGINT");
  const done = await Promise.race([s.exited.then(() => true), Bun.sleep(graceMs).then(() => false)]);
  if (!done) {
    s.proc.kill("SIGKILL");
    await s.exited;
  }
  return s.stdout;
}

/** Parses the JSON document a `--json` command printed, naming the command on failure. */
export function parseJson<T>(what: string, text: string, stderr: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`${what}: no JSON on stdout (${JSON.stringify(tail(text, 200))}); stderr: ${tail(stderr)}`);
  }
}

// ---------------------------------------------------------------------------------------
// /proc readers

function readText(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

/** Run time on a CPU of every thread of `pid`, in ns (schedstat's first field), and the thread count. */
export function schedstatNs(pid: number): { ns: number; threads: number } {
  let ns = 0;
  let threads = 0;
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return { ns: 0, threads: 0 };
  }
  for (const tid of tids) {
    const text = readText(`/proc/${pid}/task/${tid}/schedstat`);
    if (text === null) continue;
    const first = Number(text.split(/\s+/)[0]);
    if (Number.isFinite(first)) {
      ns += first;
      threads += 1;
    }
  }
  return { ns, threads };
}

/** VmRSS and VmHWM of `pid` in KiB (0 when the process is gone). */
export function memoryKib(pid: number): { rss: number; hwm: number } {
  const text = readText(`/proc/${pid}/status`) ?? "";
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, "m").exec(text)?.[1] ?? 0);
  return { rss: field("VmRSS"), hwm: field("VmHWM") };
}

interface ProcEntry {
  pid: number;
  ppid: number;
  comm: string;
  argv: string[];
  netns: string;
}

function procEntry(pid: number): ProcEntry | null {
  const stat = readText(`/proc/${pid}/stat`);
  if (stat === null) return null;
  // comm is in parentheses and may contain spaces; ppid is the second field after it.
  const close = stat.lastIndexOf(")");
  const comm = stat.slice(stat.indexOf("(") + 1, close);
  const ppid = Number(stat.slice(close + 2).split(" ")[1]);
  const argv = (readText(`/proc/${pid}/cmdline`) ?? "").split("\0").filter((a) => a.length > 0);
  let netns = "";
  try {
    netns = readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    // Exited, or a kernel thread.
  }
  return { pid, ppid, comm, argv, netns };
}

export function allProcesses(): ProcEntry[] {
  const out: ProcEntry[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const e = procEntry(Number(name));
    if (e) out.push(e);
  }
  return out;
}

/** Direct children of `pid` (this kernel has no /proc/<pid>/task/<tid>/children). */
export function childrenOf(pid: number): number[] {
  return allProcesses()
    .filter((p) => p.ppid === pid)
    .map((p) => p.pid);
}

/** The network namespace of a named namespace, as /proc/<pid>/ns/net shows it ("net:[inode]"). */
export function netnsId(name: string): string {
  return `net:[${statSync(`/run/netns/${name}`).ino}]`;
}

export interface Forwarder {
  pid: number;
  what: string;
  netns: string;
}

/**
 * Processes that forward multicast: smcrouted, socat, mcrd (acooks/mcr), mrouted/pimd, `mcrelay forward` and its
 * workers. Anything in this list running before a trial competes with the contender.
 */
export function findForwarders(): Forwarder[] {
  const found: Forwarder[] = [];
  for (const p of allProcesses()) {
    if (p.pid === process.pid) continue;
    const exe = (p.argv[0] ?? "").split("/").pop() ?? "";
    const names = new Set([p.comm, exe]);
    const isPeer = ["smcrouted", "socat", "mrouted", "pimd", "pimd-dense", "igmpproxy", "mcproxy", "mcrd"].some((n) => names.has(n));
    const isRelay = (names.has("mcrelay") || p.argv.some((a) => a.endsWith("/mcrelay") || a.endsWith("main.ts"))) &&
      p.argv.some((a) => a === "forward" || a === "_worker" || a === "daemon" || a === "run");
    if (isPeer || isRelay) found.push({ pid: p.pid, what: p.argv.join(" ").slice(0, 160) || p.comm, netns: p.netns });
  }
  return found;
}
