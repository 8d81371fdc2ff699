/**
 * Real network topologies in network namespaces, for tests and scripts.
 *
 * Every namespace a Topology creates is named `mcr-<pid>-<rand>-<name>`: the pid of the
 * creating process makes names unique across parallel runs and lets `sweepStale` recognise
 * leftovers of a process that died; the random part keeps several topologies of one process
 * apart. Namespaces are removed by `destroy()`, and, as safety nets, by a synchronous handler
 * on process exit / SIGINT / SIGTERM and by a reaper process that deletes them when the
 * creating process dies in any way (bun test does not emit "exit"; SIGKILL emits nothing).
 *
 * Only addresses in 10.0.0.0/8 and fd00::/8 are accepted: they live inside our namespaces, and
 * nothing here may send traffic anywhere else.
 */
import type { Subprocess } from "bun";
import consola from "consola";

const log = consola.withTag("netns");

/** Every namespace created by this project's tests and scripts starts with this. */
export const NETNS_PREFIX = "mcr-";
/** Time a spawned process gets between SIGTERM and SIGKILL in `destroy()`. */
export const KILL_GRACE_MS_DEFAULT = 2_000;
/** Default limit for one `exec`. */
export const EXEC_TIMEOUT_MS_DEFAULT = 30_000;
/** Linux IFNAMSIZ is 16 including the terminating NUL. */
const IFNAME_LEN_MAX = 15;

const ip_bin = Bun.which("ip") ?? Bun.which("ip", { PATH: "/usr/sbin:/sbin:/usr/bin:/bin" }) ?? "ip";

export class NetnsError extends Error {
  constructor(
    message: string,
    readonly argv: readonly string[] = [],
    readonly exitCode: number | null = null,
    readonly stderr: string = "",
  ) {
    super(message);
    this.name = "NetnsError";
  }
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface ExecOptions {
  /** Throw NetnsError on a non-zero exit (default false: the caller inspects exitCode). */
  check?: boolean;
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed. */
  stdin?: string | Uint8Array;
  env?: Record<string, string | undefined>;
  cwd?: string;
}

type Stdio = "pipe" | "inherit" | "ignore";

export interface SpawnOptions<In extends "pipe" | "ignore", Out extends Stdio, Err extends Stdio> {
  /** Default "ignore". */
  stdin?: In;
  /** Default "ignore": a "pipe" that nobody reads fills up and blocks the child. */
  stdout?: Out;
  /** Default "inherit", so diagnostics reach the test output. */
  stderr?: Err;
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** SIGTERM-to-SIGKILL grace period used by `destroy()` for this process. */
  killGraceMs?: number;
}

export interface LinkEnd {
  /** Full namespace name, as returned by `Topology.ns()`. */
  ns: string;
  /** Interface name inside that namespace, at most 15 characters. */
  ifname: string;
  /** "10.x.y.z/len" or "fdxx::x/len"; optional. */
  addr?: string;
  mtu?: number;
}

interface Tracked {
  proc: Pick<Subprocess, "kill" | "exited" | "exitCode" | "signalCode">;
  killGraceMs: number;
}

// ---------------------------------------------------------------------------------------
// ip(8) wrappers

function ipSync(args: string[]): ExecResult {
  const r = Bun.spawnSync({ cmd: [ip_bin, ...args], stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  return { stdout: r.stdout.toString(), stderr: r.stderr.toString(), exitCode: r.exitCode ?? -1 };
}

async function run(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const proc = Bun.spawn({
    cmd,
    stdin: opts.stdin === undefined ? "ignore" : new Blob([opts.stdin as BlobPart]),
    stdout: "pipe",
    stderr: "pipe",
    env: opts.env === undefined ? undefined : { ...process.env, ...opts.env },
    cwd: opts.cwd,
    timeout: opts.timeoutMs ?? EXEC_TIMEOUT_MS_DEFAULT,
    killSignal: "SIGKILL",
  });
  const [stdout, stderr, exitCode] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  const result = { stdout, stderr, exitCode };
  if (opts.check && exitCode !== 0) {
    const why = proc.signalCode ? `killed by ${proc.signalCode}` : `exit code ${exitCode}`;
    throw new NetnsError(`${cmd.join(" ")}: ${why}: ${stderr.trim()}`, cmd, exitCode, stderr);
  }
  return result;
}

async function ip(args: string[]): Promise<ExecResult> {
  return run([ip_bin, ...args], { check: true });
}

/** True when this process can build namespaces: root, with iproute2 installed. */
export function netnsAvailable(): boolean {
  return process.getuid?.() === 0 && (ip_bin.startsWith("/") || Bun.which(ip_bin) !== null);
}

/** Names of all network namespaces on this machine (from `ip netns list`). */
export function listNamespaces(): string[] {
  const r = ipSync(["netns", "list"]);
  if (r.exitCode !== 0) throw new NetnsError(`ip netns list: ${r.stderr.trim()}`, ["netns", "list"], r.exitCode, r.stderr);
  return r.stdout
    .split("\n")
    .map((line) => line.trim().split(/\s+/)[0] ?? "")
    .filter((name) => name.length > 0);
}

export function namespaceExists(name: string): boolean {
  return listNamespaces().includes(name);
}

/** SIGKILL every process in the namespace, then delete it. Silent when it is already gone. */
function deleteNamespaceSync(name: string): boolean {
  const pids = ipSync(["netns", "pids", name]);
  for (const word of pids.stdout.split(/\s+/)) {
    const pid = Number.parseInt(word, 10);
    if (Number.isInteger(pid) && pid > 1 && pid !== process.pid) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
  }
  const r = ipSync(["netns", "del", name]);
  if (r.exitCode !== 0 && namespaceExists(name)) {
    log.warn(`could not delete namespace ${name}: ${r.stderr.trim()}`);
    return false;
  }
  return r.exitCode === 0;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The pid encoded in `mcr-<pid>-...`, or null when the name does not follow the scheme. */
export function creatorPid(name: string, prefix = NETNS_PREFIX): number | null {
  if (!name.startsWith(prefix)) return null;
  const digits = /^(\d+)-/.exec(name.slice(prefix.length))?.[1];
  return digits === undefined ? null : Number.parseInt(digits, 10);
}

/**
 * Deletes namespaces named `<prefix><pid>-...` whose creating pid is no longer alive (left by
 * a crashed run on this machine), killing any process still inside. Returns the names deleted.
 */
export function sweepStale(prefix = NETNS_PREFIX): string[] {
  const deleted: string[] = [];
  for (const name of listNamespaces()) {
    const pid = creatorPid(name, prefix);
    if (pid === null || pidAlive(pid)) continue;
    if (deleteNamespaceSync(name)) deleted.push(name);
  }
  return deleted;
}

/** Deletes every namespace starting with `prefix`, live creator or not. Returns the names deleted. */
export function sweepAll(prefix = NETNS_PREFIX): string[] {
  if (prefix.length === 0) throw new NetnsError("sweepAll: refusing an empty prefix");
  return listNamespaces()
    .filter((name) => name.startsWith(prefix))
    .filter((name) => deleteNamespaceSync(name));
}

// ---------------------------------------------------------------------------------------
// Safety nets

const live = new Set<Topology>();
let hooks_installed = false;

function onExit(): void {
  for (const topo of [...live]) topo.destroySync();
}

function onSignal(signal: NodeJS.Signals): void {
  onExit();
  // Leave the exit to the program's own handler when it has one; otherwise die as the
  // signal would have made us.
  if (process.listenerCount(signal) <= 1) process.exit(signal === "SIGINT" ? 130 : 143);
}

function installHooks(): void {
  if (hooks_installed) return;
  hooks_installed = true;
  process.on("exit", onExit);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
}

function removeHooks(): void {
  if (!hooks_installed || live.size > 0) return;
  hooks_installed = false;
  process.off("exit", onExit);
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
}

/**
 * A shell that waits for EOF on its stdin (the creator closing it, or dying), then deletes
 * every namespace with `name_prefix`. It ignores INT/TERM/HUP so a Ctrl-C to the process group
 * does not take it down before it has cleaned up, and holds none of the creator's output pipes
 * (a runner waiting for EOF on them would otherwise wait for the reaper).
 */
const reaper_script = `
trap '' INT TERM HUP PIPE
while read -r _; do :; done
for ns in $("$1" netns list 2>/dev/null | awk '{print $1}'); do
  case "$ns" in "$2"*) ;; *) continue ;; esac
  for p in $("$1" netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  "$1" netns del "$ns" 2>/dev/null
done
exit 0
`;

function startReaper(name_prefix: string): Subprocess<"pipe", "ignore", "ignore"> {
  const proc = Bun.spawn({
    cmd: ["sh", "-c", reaper_script, "mcr-netns-reaper", ip_bin, name_prefix],
    stdin: "pipe",
    stdout: "ignore",
    stderr: "ignore",
  });
  proc.unref();
  return proc;
}

// ---------------------------------------------------------------------------------------
// Topology

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]+$/;

function randomTag(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(2));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Accepts only addresses private to our namespaces: 10.0.0.0/8 and fd00::/8, with a prefix length. */
export function checkTestAddress(addr: string): void {
  const v4 = /^10\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(addr);
  if (v4) {
    const octets = v4.slice(1, 4).map(Number);
    const len = Number(v4[4]);
    if (octets.every((o) => o <= 255) && len >= 8 && len <= 32) return;
  } else if (/^fd[0-9a-f]{0,2}:[0-9a-f:]*\/\d{1,3}$/i.test(addr)) {
    const len = Number(addr.split("/")[1]);
    if (len >= 8 && len <= 128) return;
  }
  throw new NetnsError(
    `address ${JSON.stringify(addr)}: must be 10.x.y.z/len (len 8..32) or fdxx::/len (len 8..128), ` +
      "so test traffic stays inside our namespaces",
  );
}

function checkIfname(ifname: string): void {
  if (ifname.length === 0 || ifname.length > IFNAME_LEN_MAX || !IFNAME_RE.test(ifname)) {
    throw new NetnsError(
      `interface name ${JSON.stringify(ifname)}: must be 1..${IFNAME_LEN_MAX} characters of [A-Za-z0-9_.-]`,
    );
  }
}

/** sysctl key in dotted ("net.ipv4.ip_forward") or slashed ("net/ipv4/conf/eth0.5/rp_filter") form. */
function sysctlPath(key: string): string {
  if (!/^[A-Za-z0-9_./-]+$/.test(key) || key.includes("..")) {
    throw new NetnsError(`sysctl key ${JSON.stringify(key)}: must be [A-Za-z0-9_./-] without ".."`);
  }
  return `/proc/sys/${key.includes("/") ? key : key.replaceAll(".", "/")}`;
}

export class Topology {
  /** `mcr-<pid>-<rand>-`: every namespace of this topology starts with it. */
  readonly prefix: string;
  private readonly namespaces = new Map<string, string>();
  private readonly procs = new Set<Tracked>();
  private readonly reaper: Subprocess<"pipe", "ignore", "ignore">;
  private destroyed = false;

  private constructor(prefix: string) {
    this.prefix = prefix;
    this.reaper = startReaper(prefix);
  }

  /** `label` is only for humans reading `ip netns list`; it is shortened to 12 characters. */
  static async create(label?: string): Promise<Topology> {
    const tag = label === undefined ? "" : label.replace(/[^A-Za-z0-9]/g, "").slice(0, 12);
    const existing = listNamespaces();
    for (;;) {
      const prefix = `${NETNS_PREFIX}${process.pid}-${randomTag()}${tag ? `-${tag}` : ""}-`;
      if (existing.some((name) => name.startsWith(prefix))) continue;
      const topo = new Topology(prefix);
      live.add(topo);
      installHooks();
      return topo;
    }
  }

  /** Full names of the namespaces created so far, by short name. */
  get names(): ReadonlyMap<string, string> {
    return this.namespaces;
  }

  /** Creates namespace `<prefix><name>` with `lo` up; returns its full name. */
  async ns(name: string): Promise<string> {
    this.checkAlive();
    if (!NAME_RE.test(name)) {
      throw new NetnsError(`namespace name ${JSON.stringify(name)}: must match ${NAME_RE}`);
    }
    if (this.namespaces.has(name)) throw new NetnsError(`namespace ${name}: already created in this topology`);
    const full = `${this.prefix}${name}`;
    // Recorded before creation so a failure half-way is still cleaned up.
    this.namespaces.set(name, full);
    await ip(["netns", "add", full]);
    await ip(["-n", full, "link", "set", "lo", "up"]);
    return full;
  }

  /** Creates a veth pair between two of our namespaces, sets addresses and MTU, brings both ends up. */
  async link(a: LinkEnd, b: LinkEnd): Promise<void> {
    this.checkAlive();
    for (const end of [a, b]) {
      this.checkOwned(end.ns);
      checkIfname(end.ifname);
      if (end.addr !== undefined) checkTestAddress(end.addr);
      if (end.mtu !== undefined && !(Number.isInteger(end.mtu) && end.mtu >= 68 && end.mtu <= 65535)) {
        throw new NetnsError(`mtu ${end.mtu} on ${end.ifname}: must be an integer in 68..65535`);
      }
    }
    if (a.ns === b.ns && a.ifname === b.ifname) {
      throw new NetnsError(`link: both ends are ${a.ifname} in ${a.ns}`);
    }
    // Created inside `a` with the peer placed straight into `b`: the host namespace never
    // sees either name, so parallel runs cannot collide on interface names.
    await ip(["-n", a.ns, "link", "add", a.ifname, "type", "veth", "peer", "name", b.ifname, "netns", b.ns]);
    for (const end of [a, b]) {
      if (end.addr !== undefined) {
        const extra = end.addr.includes(":") ? ["nodad"] : [];
        await ip(["-n", end.ns, "addr", "add", end.addr, "dev", end.ifname, ...extra]);
      }
      const mtu = end.mtu === undefined ? [] : ["mtu", String(end.mtu)];
      await ip(["-n", end.ns, "link", "set", end.ifname, ...mtu, "up"]);
    }
  }

  /** Writes a sysctl inside the namespace (dotted or slashed key). */
  async sysctl(ns: string, key: string, value: string | number): Promise<void> {
    this.checkOwned(ns);
    const path = sysctlPath(key);
    // /proc/sys/net shows the namespace of the process that opens it.
    await run([ip_bin, "netns", "exec", ns, "sh", "-c", 'printf "%s\\n" "$1" > "$2"', "sh", String(value), path], {
      check: true,
    });
  }

  /** Reads a sysctl inside the namespace. */
  async sysctlGet(ns: string, key: string): Promise<string> {
    this.checkOwned(ns);
    const r = await run([ip_bin, "netns", "exec", ns, "cat", sysctlPath(key)], { check: true });
    return r.stdout.trim();
  }

  /** Adds (or replaces) `224.0.0.0/4 dev <dev>`: a sender needs a route for multicast. */
  async addMulticastRoute(ns: string, dev: string): Promise<void> {
    this.checkOwned(ns);
    checkIfname(dev);
    await ip(["-n", ns, "route", "replace", "224.0.0.0/4", "dev", dev]);
  }

  /** Sets rp_filter on all, default and every existing interface (the kernel uses the maximum). */
  async setRpFilter(ns: string, mode: 0 | 1 | 2): Promise<void> {
    this.checkOwned(ns);
    const r = await ip(["-n", ns, "-o", "link", "show"]);
    const ifnames = r.stdout
      .split("\n")
      .map((line) => /^\d+:\s+([^:@\s]+)/.exec(line)?.[1])
      .filter((n): n is string => n !== undefined);
    for (const dev of ["all", "default", ...ifnames]) {
      await this.sysctl(ns, `net/ipv4/conf/${dev}/rp_filter`, mode);
    }
  }

  async disableRpFilter(ns: string): Promise<void> {
    await this.setRpFilter(ns, 0);
  }

  async enableRpFilter(ns: string, mode: 1 | 2 = 1): Promise<void> {
    await this.setRpFilter(ns, mode);
  }

  /** Runs a command inside the namespace to completion. */
  async exec(ns: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.checkAlive();
    this.checkOwned(ns);
    if (argv.length === 0) throw new NetnsError("exec: empty argv");
    return run([ip_bin, "netns", "exec", ns, ...argv], opts);
  }

  /**
   * Starts a long-running process inside the namespace. `destroy()` stops it (SIGTERM, then
   * SIGKILL after the grace period). `ip netns exec` execs the command, so the pid is its own.
   */
  spawn<
    const In extends "pipe" | "ignore" = "ignore",
    const Out extends Stdio = "ignore",
    const Err extends Stdio = "inherit",
  >(ns: string, argv: string[], opts: SpawnOptions<In, Out, Err> = {}): Subprocess<In, Out, Err> {
    this.checkAlive();
    this.checkOwned(ns);
    if (argv.length === 0) throw new NetnsError("spawn: empty argv");
    const proc = Bun.spawn({
      cmd: [ip_bin, "netns", "exec", ns, ...argv],
      stdin: (opts.stdin ?? "ignore") as In,
      stdout: (opts.stdout ?? "ignore") as Out,
      stderr: (opts.stderr ?? "inherit") as Err,
      env: opts.env === undefined ? undefined : { ...process.env, ...opts.env },
      cwd: opts.cwd,
    });
    const tracked: Tracked = { proc, killGraceMs: opts.killGraceMs ?? KILL_GRACE_MS_DEFAULT };
    this.procs.add(tracked);
    void proc.exited.then(() => this.procs.delete(tracked));
    return proc;
  }

  /** Stops tracked processes and deletes every namespace of this topology. Idempotent. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await Promise.all([...this.procs].map((t) => stopProcess(t)));
    this.procs.clear();
    this.deleteNamespaces();
    this.finish();
  }

  /** Synchronous variant for exit handlers: SIGKILLs tracked processes without a grace period. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const t of this.procs) {
      try {
        t.proc.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }
    this.procs.clear();
    this.deleteNamespaces();
    this.finish();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.destroy();
  }

  private deleteNamespaces(): void {
    const present = new Set(listNamespaces());
    for (const full of this.namespaces.values()) {
      if (present.has(full)) deleteNamespaceSync(full);
    }
  }

  private finish(): void {
    // Closing the reaper's stdin makes it run one last (normally empty) pass and exit.
    try {
      void this.reaper.stdin.end();
    } catch {
      // The reaper is already gone.
    }
    live.delete(this);
    removeHooks();
  }

  private checkAlive(): void {
    if (this.destroyed) throw new NetnsError(`topology ${this.prefix}: already destroyed`);
  }

  private checkOwned(ns: string): void {
    if (![...this.namespaces.values()].includes(ns)) {
      throw new NetnsError(`namespace ${JSON.stringify(ns)}: not created by topology ${this.prefix}`);
    }
  }
}

async function stopProcess(t: Tracked): Promise<void> {
  const { proc } = t;
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill("SIGTERM");
  const exited = await Promise.race([proc.exited.then(() => true), Bun.sleep(t.killGraceMs).then(() => false)]);
  if (!exited) {
    proc.kill("SIGKILL");
    await proc.exited;
  }
}

/** Creates a topology, runs `fn`, and destroys the topology whatever `fn` does. */
export async function withTopology<T>(label: string, fn: (topo: Topology) => Promise<T>): Promise<T> {
  const topo = await Topology.create(label);
  try {
    return await fn(topo);
  } finally {
    await topo.destroy();
  }
}
