/**
 * Pieces of the daemon tests: a real `mcrelay run` in the relay namespace of a relay topology
 * (see relay-harness.ts), waited for by pinging its control socket; the CLI run against it; a
 * raw line client of the control protocol for the tests that must send what the CLI never
 * would; a background traffic stream that runs until it is stopped; temporary directories; a
 * topology and directories made per test and removed after each one.
 *
 * A path-named Unix socket is reached through the file system, not the network namespace: the
 * test process talks to a daemon inside a namespace directly.
 */
import { afterEach } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket } from "bun";
import { Topology, type ExecResult } from "../../scripts/lib/netns.ts";
import * as v from "valibot";
import type { OutputReport, RuleReport, RuleView, Stats, WorkerInfo } from "../../src/control/responses.ts";
import { GenOutputSchema, VERB_OUTPUT_SCHEMAS } from "../../src/cli/output-schemas.ts";
import {
  buildRelayTopology,
  LoggedProcess,
  SINK_JSON,
  mcrelayCommand,
  parseDocument,
  startLogged,
  startSink,
  type GenReport,
  type Mode,
  type RelayTopology,
  type RelayTopologyOptions,
  type SinkReport,
} from "./relay-harness.ts";

import { PROTOCOL_VERSION } from "../../src/version.ts";

export const PROTOCOL = PROTOCOL_VERSION;
/** A daemon on a busy 2-core machine: bun start, native load, workers started and acknowledged. */
export const DAEMON_READY_TIMEOUT_MS = 30_000;
/** One CLI invocation (bun start-up included). */
export const CLI_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------
// Temporary directories

/** A directory under the system temp dir, removed by `remove()`. Paths stay short (socket paths max 107 bytes). */
export class TempDir {
  readonly path: string;

  constructor(prefix = "mcr-d-") {
    this.path = mkdtempSync(join(tmpdir(), prefix));
  }

  /** Writes `text` to `name` inside the directory and returns the full path. */
  file(name: string, text: string): string {
    const p = join(this.path, name);
    writeFileSync(p, text);
    return p;
  }

  join(name: string): string {
    return join(this.path, name);
  }

  remove(): void {
    rmSync(this.path, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------
// A topology per test

/**
 * What a test builds for itself and must not leave behind: relay topologies (namespaces with
 * unique names, see Topology.create) and temporary directories. Made by `perTestTopology`,
 * which removes them after every test of the file.
 */
export class PerTestTopology {
  readonly #topos: Topology[] = [];
  readonly #dirs: TempDir[] = [];

  constructor(readonly dirPrefix: string) {}

  /** A relay topology in new namespaces labelled `opts.label` (relay-harness.ts). */
  async relay(opts: RelayTopologyOptions): Promise<RelayTopology> {
    const topo = await Topology.create(opts.label);
    this.#topos.push(topo);
    return buildRelayTopology(topo, opts);
  }

  /** A temporary directory (prefix `dirPrefix` unless given), removed after the test. */
  tempDir(prefix = this.dirPrefix): TempDir {
    const d = new TempDir(prefix);
    this.#dirs.push(d);
    return d;
  }

  /**
   * Stops every process the topologies started (daemons, sinks, generators), kills whatever is
   * left inside their namespaces (workers included), deletes them, then the directories.
   */
  async teardown(): Promise<void> {
    try {
      for (const topo of this.#topos.splice(0)) await topo.destroy();
    } finally {
      for (const d of this.#dirs.splice(0)) d.remove();
    }
  }
}

/**
 * Per-test topologies and directories for the calling test file: registers their teardown
 * with afterEach (`timeoutMs`: stopping daemons on a busy machine takes a while), so it runs
 * after every test, also one that failed half-way. Call at the top level of the file.
 */
export function perTestTopology(timeoutMs: number, dirPrefix = "mcr-d-"): PerTestTopology {
  const scope = new PerTestTopology(dirPrefix);
  afterEach(() => scope.teardown(), timeoutMs);
  return scope;
}

// ---------------------------------------------------------------------------------------
// Polling

/** Calls `probe` until it returns something other than undefined/false, or fails after the deadline. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const r = await probe();
      if (r !== undefined && r !== false) return r;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ""}`);
    await Bun.sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------
// Raw protocol client

export interface RawResponse {
  v: number;
  id: string | number | null;
  ok: boolean;
  result?: any;
  error?: { code: string; message: string };
}

/**
 * One connection to the control socket that sends whatever it is given (bytes, text, objects)
 * and hands back each line the daemon writes. Writes honour back-pressure; a write to a
 * connection the daemon closed resolves (it does not hang) and `closed` becomes true.
 */
export class RawClient {
  readonly #socket: Socket<undefined>;
  readonly #lines: string[] = [];
  #partial = new Uint8Array(0);
  #wake: (() => void) | null = null;
  #queue: Uint8Array[] = [];
  #drained: (() => void)[] = [];
  #closed = false;
  #writeFailed = false;
  #nextId = 1;
  readonly closedPromise: Promise<void>;
  #resolveClosed!: () => void;

  private constructor(socket: Socket<undefined>) {
    this.#socket = socket;
    this.closedPromise = new Promise((r) => (this.#resolveClosed = r));
  }

  static async connect(path: string, timeoutMs = 5_000): Promise<RawClient> {
    let client: RawClient | null = null;
    const early: Uint8Array[] = [];
    let earlyClose = false;
    const socket = await Promise.race([
      Bun.connect({
        unix: path,
        socket: {
          data(_s, chunk) {
            if (client) client.#onData(chunk);
            else early.push(new Uint8Array(chunk));
          },
          drain() {
            if (client) client.#flush();
          },
          close() {
            if (client) client.#onClose();
            else earlyClose = true;
          },
          error() {
            // A failed write (EPIPE after the daemon hung up) ends writing; what the daemon
            // wrote before hanging up is still read, until the close event.
            if (client) client.#onWriteError();
          },
        },
      }),
      Bun.sleep(timeoutMs).then(() => {
        throw new Error(`connect ${path}: no answer within ${timeoutMs} ms`);
      }),
    ]);
    client = new RawClient(socket);
    for (const c of early) client.#onData(c);
    if (earlyClose) client.#onClose();
    return client;
  }

  /** The daemon closed the connection (everything it wrote before has been received). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Writing failed (the daemon hung up) or the connection is closed. */
  get writeFailed(): boolean {
    return this.#writeFailed;
  }

  /** Lines received and not yet taken. */
  get buffered(): number {
    return this.#lines.length;
  }

  #onData(chunk: Uint8Array): void {
    const all = new Uint8Array(this.#partial.length + chunk.length);
    all.set(this.#partial);
    all.set(chunk, this.#partial.length);
    let start = 0;
    for (let i = 0; i < all.length; i++) {
      if (all[i] !== 0x0a) continue;
      this.#lines.push(new TextDecoder().decode(all.subarray(start, i)));
      start = i + 1;
    }
    this.#partial = all.slice(start);
    this.#notify();
  }

  #onWriteError(): void {
    this.#writeFailed = true;
    this.#queue = [];
    for (const d of this.#drained.splice(0)) d();
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#writeFailed = true;
    this.#queue = [];
    for (const d of this.#drained.splice(0)) d();
    this.#resolveClosed();
    this.#notify();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  #flush(): void {
    while (this.#queue.length > 0 && !this.#writeFailed) {
      const head = this.#queue[0]!;
      const n = this.#socket.write(head);
      if (n < 0) return this.#onWriteError();
      if (n < head.length) {
        this.#queue[0] = head.subarray(n);
        return;
      }
      this.#queue.shift();
    }
    if (this.#queue.length === 0) for (const d of this.#drained.splice(0)) d();
  }

  /** Writes bytes or text as they are; resolves when the kernel took all of it (or the connection closed). */
  write(data: string | Uint8Array): Promise<void> {
    if (this.#writeFailed) return Promise.resolve();
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    this.#queue.push(bytes);
    const done = new Promise<void>((r) => this.#drained.push(r));
    this.#flush();
    return done;
  }

  /** Writes one JSON message and a newline. */
  send(message: unknown): Promise<void> {
    return this.write(`${JSON.stringify(message)}\n`);
  }

  /** The next line the daemon wrote; null when the connection closed first; throws on timeout. */
  async nextLine(timeoutMs = 10_000): Promise<string | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = this.#lines.shift();
      if (line !== undefined) return line;
      if (this.#closed) return null;
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`no line from the daemon within ${timeoutMs} ms`);
      await Promise.race([new Promise<void>((r) => (this.#wake = r)), Bun.sleep(Math.min(remaining, 200))]);
    }
  }

  /** The next line parsed as a response; throws when the connection closed or the line is not JSON. */
  async next(timeoutMs = 10_000): Promise<RawResponse> {
    const line = await this.nextLine(timeoutMs);
    if (line === null) throw new Error("the daemon closed the connection instead of answering");
    return JSON.parse(line) as RawResponse;
  }

  /** Sends one well-formed request with a fresh numeric id and waits for its response. */
  async request(cmd: string, args?: unknown, timeoutMs = 10_000): Promise<RawResponse> {
    const id = this.#nextId++;
    await this.send(args === undefined ? { v: PROTOCOL, id, cmd } : { v: PROTOCOL, id, cmd, args });
    const r = await this.next(timeoutMs);
    if (r.id !== id) throw new Error(`response id ${JSON.stringify(r.id)} to request ${id} (${cmd}): ${JSON.stringify(r)}`);
    return r;
  }

  /** `request` that requires ok: true and returns the result. */
  async call(cmd: string, args?: unknown, timeoutMs = 10_000): Promise<any> {
    const r = await this.request(cmd, args, timeoutMs);
    if (!r.ok) throw new Error(`${cmd} refused: ${r.error?.code}: ${r.error?.message}`);
    return r.result;
  }

  async hello(client = "mcrelay-test"): Promise<any> {
    return this.call("hello", { client });
  }

  /** Resolves true when the daemon closed the connection within the time. */
  async waitClosed(timeoutMs = 5_000): Promise<boolean> {
    await Promise.race([this.closedPromise, Bun.sleep(timeoutMs)]);
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#socket.end();
    this.#onClose();
  }
}

/** Connects and says hello; the client is ready for requests. */
export async function helloClient(path: string): Promise<RawClient> {
  const c = await RawClient.connect(path);
  await c.hello();
  return c;
}

// ---------------------------------------------------------------------------------------
// The daemon

export interface DaemonStartOptions {
  /** Control socket path (default: `<dir>/ctl.sock`). */
  socket?: string;
  /** State directory (default: `<dir>/state`). */
  stateDir?: string;
  /** Config file path, passed as --config. */
  configPath?: string;
  mode?: Mode;
  label?: string;
  /** More `run` options (e.g. --metrics 127.0.0.1:9464, --watch-config). */
  extraArgs?: string[];
  /** A command the daemon is started through (e.g. prlimit --nofile=1024:1024 --). */
  prefix?: string[];
  /** Added to the daemon's environment (its workers inherit it). */
  env?: Record<string, string>;
}

/** A `mcrelay run` process in the relay namespace, with the CLI pointed at its socket. */
export class TestDaemon {
  constructor(
    readonly rt: RelayTopology,
    readonly proc: LoggedProcess,
    readonly socket: string,
    readonly stateDir: string,
    readonly configPath: string | undefined,
    readonly mode: Mode,
  ) {}

  /** Starts the daemon and waits until it answers `ping` on its socket. */
  static async start(rt: RelayTopology, dir: TempDir, o: DaemonStartOptions = {}): Promise<TestDaemon> {
    const mode = o.mode ?? "bun";
    const socket = o.socket ?? dir.join("ctl.sock");
    const stateDir = o.stateDir ?? dir.join("state");
    const argv = [...(o.prefix ?? []), ...mcrelayCommand(mode), "run", "--socket", socket, "--state-dir", stateDir];
    if (o.configPath) argv.push("--config", o.configPath);
    argv.push(...(o.extraArgs ?? []));
    const label = o.label ?? "daemon";
    const proc = o.env === undefined
      ? startLogged(rt.topo, rt.relay, argv, label)
      : new LoggedProcess(rt.topo.spawn(rt.relay, argv, { stdout: "pipe", stderr: "pipe", env: o.env, killGraceMs: 5_000 }), label);
    const d = new TestDaemon(rt, proc, socket, stateDir, o.configPath, mode);
    await d.waitReady();
    return d;
  }

  get pid(): number {
    return this.proc.proc.pid;
  }

  get running(): boolean {
    return this.proc.running;
  }

  /**
   * Polls hello+ping on the socket until it answers and start-up is over (workers applied
   * their tables or failed once; the socket answers earlier, with `starting: true`); fails
   * early if the daemon exits.
   */
  async waitReady(timeoutMs = DAEMON_READY_TIMEOUT_MS): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running) {
        await this.proc.exited;
        throw new Error(`daemon ended (${this.proc.describeExit()}) before answering on ${this.socket}:\n${this.proc.output()}`);
      }
      try {
        const c = await RawClient.connect(this.socket, 1_000);
        try {
          await c.hello();
          const pong = await c.call("ping", undefined, 2_000);
          if (pong?.pong === true && pong.starting !== true) return;
        } finally {
          c.close();
        }
      } catch {
        // not there yet
      }
      if (Date.now() > deadline) throw new Error(`daemon did not answer ping on ${this.socket} within ${timeoutMs} ms:\n${this.proc.output()}`);
      await Bun.sleep(100);
    }
  }

  /** `mcrelay <args> --socket S` in the relay namespace; the caller checks the exit code. */
  async cli(args: string[], timeoutMs = CLI_TIMEOUT_MS): Promise<ExecResult> {
    return this.rt.topo.exec(this.rt.relay, [...mcrelayCommand(this.mode), ...args, "--socket", this.socket], { timeoutMs, env: { NO_COLOR: "1" } });
  }

  /**
   * `mcrelay <args> --socket S --json`: requires exit code 0 and parses stdout, which must fit
   * the verb's documented schema (src/cli/output-schemas.ts).
   */
  async json<T = any>(args: string[], timeoutMs = CLI_TIMEOUT_MS): Promise<T> {
    const r = await this.cli([...args, "--json"], timeoutMs);
    if (r.exitCode !== 0) throw new Error(`mcrelay ${args.join(" ")} --json: exit code ${r.exitCode}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`);
    try {
      return parseDocument<T>(r.stdout, verbSchema(args), `mcrelay ${args.join(" ")} --json`);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${r.stderr}`);
    }
  }

  /** One request over a fresh in-process connection (cheaper than a CLI process). */
  async call(cmd: string, args?: unknown): Promise<any> {
    const c = await helloClient(this.socket);
    try {
      return await c.call(cmd, args);
    } finally {
      c.close();
    }
  }

  /** SIGTERM and wait for a clean exit; returns the exit code. */
  async stop(timeoutMs = 20_000): Promise<number> {
    if (this.running) this.proc.proc.kill("SIGTERM");
    return this.proc.wait(timeoutMs);
  }

  /** SIGKILL, as a crash would; waits until the process is gone. */
  async kill9(): Promise<void> {
    if (this.running) this.proc.proc.kill("SIGKILL");
    await this.proc.exited;
  }
}

// ---------------------------------------------------------------------------------------
// Rules and reports as the daemon returns them

export type ListedRule = RuleView;
export type StatsRule = RuleReport;
export type StatsOutput = OutputReport;
export type StatsResult = Stats;
export type WorkerRow = WorkerInfo;

/** The schema of `mcrelay ARGS --json`'s document: the verb (or `config show`) picks it. */
export function verbSchema(args: readonly string[]): v.GenericSchema | undefined {
  const words = args.filter((a) => !a.startsWith("-"));
  const verb = words[0] === "config" ? `config ${words[1]}` : words[0] === "stats" && args.includes("--watch") ? "stats --watch" : words[0];
  return verb ? VERB_OUTPUT_SCHEMAS[verb] : undefined;
}

export function ruleNamed<T extends { name: string }>(rules: T[], name: string): T {
  const r = rules.find((x) => x.name === name);
  if (!r) throw new Error(`no rule named ${name} in ${JSON.stringify(rules.map((x) => x.name))}`);
  return r;
}

// ---------------------------------------------------------------------------------------
// Traffic

export interface StreamOptions {
  /** gen --to, e.g. 239.1.1.1:5000@g0. */
  to: string;
  ratePps: number;
  size?: number;
  stream?: number;
  mode?: Mode;
}

/**
 * `mcrelay gen` in the generator namespace, sending until `stopStream` (SIGINT). Its report
 * says how many packets went out, so a sink can be held to exactly that number.
 */
export function startStream(rt: RelayTopology, o: StreamOptions, label = `gen ${o.to}`): LoggedProcess {
  const argv = [...mcrelayCommand(o.mode ?? "bun"), "gen", "--to", o.to, "--rate", String(o.ratePps), "--duration", "600", "--size", String(o.size ?? 256), "--stream", String(o.stream ?? 1), "--json"];
  return track(startLogged(rt.topo, rt.gen, argv, label));
}

/**
 * Streams and sinks started by these helpers, so a test that fails half-way does not leave a
 * stream running into the next test of the same topology: call `killBackground()` in afterEach.
 */
const background = new Set<LoggedProcess>();

function track(p: LoggedProcess): LoggedProcess {
  background.add(p);
  void p.exited.then(() => background.delete(p));
  return p;
}

/** SIGKILLs every stream and sink still running and waits for them. */
export async function killBackground(): Promise<void> {
  const running = [...background];
  background.clear();
  for (const p of running) if (p.running) p.proc.kill("SIGKILL");
  await Promise.all(running.map((p) => p.exited.catch(() => undefined)));
}

export async function stopStream(p: LoggedProcess): Promise<GenReport> {
  if (!p.running) throw new Error(`${p.label} ended before it was stopped (${p.describeExit()}):\n${p.output()}`);
  return p.stopJson<GenReport>("SIGINT", 30_000, { schema: GenOutputSchema });
}

/** A sink started and joined; it stops by itself `idleS` seconds after the last packet. */
export async function sink(rt: RelayTopology, ns: string, listen: string, extra: string[] = [], idleS = 2): Promise<LoggedProcess> {
  return track(await startSink(rt.topo, ns, "bun", ["--listen", listen, "--idle", String(idleS), ...extra], `sink ${listen}`));
}

/** Waits for a sink to idle out (SIGINT after `graceMs`) and returns its report. */
export async function sinkReport(p: LoggedProcess, graceMs = 30_000): Promise<SinkReport> {
  await Promise.race([p.exited, Bun.sleep(graceMs)]);
  return p.stopJson<SinkReport>("SIGINT", 30_000, SINK_JSON);
}

/** Percentile (0..100) of a list of numbers, nearest rank. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

/** Is a process with this pid alive (zombies excluded)? */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** `mcrelay <args>` in this process's namespace (for verbs that need no interface: config check, version, clients of a missing socket). */
export async function runMcrelay(args: string[], mode: Mode = "bun", timeoutMs = CLI_TIMEOUT_MS): Promise<ExecResult> {
  const p = Bun.spawn({
    cmd: [...mcrelayCommand(mode), ...args],
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, NO_COLOR: "1" },
    timeout: timeoutMs,
    killSignal: "SIGKILL",
  });
  const [stdout, stderr, exitCode] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { stdout, stderr, exitCode };
}

export interface BurstOptions {
  /** gen --to (e.g. 239.1.1.4:5000@g0). */
  to: string;
  /** Namespace and --listen of the receiving sink. */
  sinkNs: string;
  listen: string;
  count: number;
  ratePps?: number;
  /** The sink is expected to see nothing: it listens for a fixed time instead of idling out. */
  expectNothing?: boolean;
  stream?: number;
}

/** A sink joined first, then `count` packets from gen; returns what the sink saw. */
export async function burst(rt: RelayTopology, o: BurstOptions): Promise<{ gen: GenReport; sink: SinkReport }> {
  const rate = o.ratePps ?? 2000;
  const extra = o.expectNothing ? ["--duration", String(Math.ceil(o.count / rate) + 2)] : ["--expect", String(o.count)];
  const s = await sink(rt, o.sinkNs, o.listen, extra, 1);
  const argv = [...mcrelayCommand("bun"), "gen", "--to", o.to, "--rate", String(rate), "--count", String(o.count), "--size", "200", "--stream", String(o.stream ?? 7), "--json"];
  const r = await rt.topo.exec(rt.gen, argv, { timeoutMs: 60_000 });
  if (r.exitCode !== 0) throw new Error(`gen ${o.to}: exit code ${r.exitCode}: ${r.stderr}`);
  const gen = JSON.parse(r.stdout) as GenReport;
  return { gen, sink: await sinkReport(s) };
}
