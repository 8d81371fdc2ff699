// The supervisor's side of one worker process (the Zig executable zig/worker.zig): acquire the
// AF_PACKET sockets and counter memory first, then spawn the worker, hand them over SCM_RIGHTS,
// and talk to it with validated request/response messages, each with a deadline, all on the
// socketpair (src/worker/messages.ts). One worker serves the rings of several input
// interfaces, each at a position among its packet sockets; rings are added and dropped while
// it runs.
import * as v from "valibot";
import { logger, getLogFormat, getLogLevel } from "../log.ts";
import { fdClose, fdInherit, scmPair, scmSend, SharedStats, workerExecutable } from "../native/lib.ts";
import { decodeStats } from "../stats/decode.ts";
import type { RingGeometry } from "../native/abi.ts";
import type { WorkerUser } from "./user.ts";
import type { DataplaneSnapshot } from "../stats/decode.ts";
import { FromWorkerSchema, RingSchema, ToWorkerSchema, WorkerSetupSchema, type FromWorker, type ToWorker } from "../worker/messages.ts";
import { withGeneration } from "../rules/wire.ts";
import { NativeError } from "../errors.ts";

const log = logger("workers");

export const READY_TIMEOUT_MS = 5000;
export const REQUEST_TIMEOUT_MS = 2000;
/**
 * A worker asked to stop is killed after this long, so the daemon stops within 1.5 s even with
 * a stuck (SIGSTOPped) worker; a healthy one stops within one 50 ms dataplane slice.
 */
export const STOP_TIMEOUT_MS = 1000;

type Pending = { resolve: (m: FromWorker) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> };
type Request = ToWorker extends infer T ? (T extends { id: number } ? Omit<T, "id"> : never) : never;

/** Signals a worker; a failure (the worker is gone, or EPERM) is logged, never thrown. */
function safeKill(proc: ReturnType<typeof Bun.spawn>, signal: NodeJS.Signals): void {
  try {
    proc.kill(signal);
  } catch (err) {
    log.warn(`cannot send ${signal} to worker pid ${proc.pid}: ${(err as Error).message}`);
  }
}

/**
 * Signals that ask a process to end (a service manager's stop, Ctrl-C), as opposed to a crash
 * (SIGSEGV, SIGABRT) or a kill (SIGKILL): a worker ended by one of them while the supervisor
 * stops it, or stops itself, was stopped, not failed.
 */
export const STOP_SIGNALS: ReadonlySet<string> = new Set(["SIGTERM", "SIGINT"]);

/**
 * Test hooks the worker executable reads (zig/worker.zig run). Never taken from the supervisor's
 * environment: a test passes them as an option of the supervisor (`run --test-hook NAME=VALUE`,
 * WorkerOptions.testHooks), so a stray MCRELAY_TEST_* in a service's environment changes no worker.
 */
export const WORKER_TEST_HOOKS = ["MCRELAY_TEST_TABLE_RULES_MAX", "MCRELAY_TEST_DIVERGE_AFTER_MS"] as const;

/**
 * The worker's whole environment: what it reads (zig/worker.zig main and run), nothing else. The
 * supervisor's own environment is not passed on, so a stray variable there changes no worker.
 * PATH only so that the test suite's stand-in (a script) finds its interpreter; test hooks only
 * as given.
 */
function workerEnv(index: number, testHooks: Readonly<Record<string, string>>): Record<string, string> {
  const env: Record<string, string> = {
    MCRELAY_LOG_IDENTITY: `worker:${index}`,
    MCRELAY_LOG_LEVEL: getLogLevel(),
    MCRELAY_LOG_FORMAT: getLogFormat(),
  };
  // Under systemd: whether stderr is the journal's stream (its lines then carry priorities).
  for (const name of ["JOURNAL_STREAM", "PATH"]) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  for (const [name, value] of Object.entries(testHooks)) {
    // A bug in the caller, not an operating error: only test hooks go this way.
    if (!name.startsWith("MCRELAY_TEST_")) throw new Error(`test hook ${name}: not an MCRELAY_TEST_* name`);
    env[name] = value;
  }
  return env;
}

export class WorkerError extends Error {
  override name = "WorkerError";
  /** The worker put the failure on its packet socket at this position (`fatal` with `position`), or null. */
  readonly position: number | null;

  constructor(message: string, position: number | null = null) {
    super(message);
    this.position = position;
  }
}

/** The worker answered the request with an error: it is alive and kept its previous state. */
export class WorkerRefusedError extends WorkerError {
  override name = "WorkerRefusedError";
}

/** A ring a worker serves: the packet socket at `position`, set up for an interface. */
export interface RingSpec {
  position: number;
  ifname: string;
  ifindex: number;
  /** The socket's index among the interface's sockets (its fanout member), and how many. */
  slot: number;
  members: number;
  geometry: RingGeometry;
}

export interface WorkerOptions {
  /** This worker's index among the workers, and how many there are. */
  index: number;
  workers: number;
  /**
   * Its packet sockets by position, set up by the supervisor (kept by it): for an interface
   * (named in `rings`) or blank, to be set up when an interface is added.
   */
  sockets: number[];
  rings: RingSpec[];
  /** The CPU the worker pins its dataplane thread to (mcr's `pinning`), or null. */
  cpu: number | null;
  /** The unprivileged user the worker becomes; null keeps the supervisor's credentials. */
  user: WorkerUser | null;
  /**
   * Test hooks for the worker's environment (MCRELAY_TEST_* names), given by a test through the
   * supervisor's options; never read from the supervisor's environment.
   */
  testHooks?: Readonly<Record<string, string>>;
  /** Called when the worker process exits, expectedly or not. */
  onExit?: (code: number | null, signal: string | null) => void;
}

/** A ring's counter memory (shared with the worker) and what it was set up as. */
interface RingState {
  spec: RingSpec;
  shared: SharedStats;
}

/** What a send to (or a read from) a worker whose end is closed (it exited or was killed) fails with. */
const PEER_GONE = new Set(["EPIPE", "ECONNRESET", "ENOTCONN"]);

/** A reply line longer than this is no reply (they are a few hundred bytes). */
const REPLY_BYTES_MAX = 64 * 1024;

/**
 * Reads the worker's replies off the socketpair: one JSON object per line, each validated.
 * Resolves when the worker's end is closed (it exited) or reading fails.
 */
async function readReplies(fd: number, name: string, onMessage: (m: FromWorker) => void): Promise<void> {
  const reader = Bun.file(fd).stream().getReader();
  const decoder = new TextDecoder();
  let pending = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      pending += decoder.decode(value, { stream: true });
      for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        let raw: unknown;
        try {
          raw = JSON.parse(line);
        } catch {
          log.warn(`${name}: malformed message ignored: not JSON: ${line.slice(0, 200)}`);
          continue;
        }
        const parsed = v.safeParse(FromWorkerSchema, raw);
        if (!parsed.success) {
          log.warn(`${name}: malformed message ignored: ${v.summarize(parsed.issues)}`);
          continue;
        }
        onMessage(parsed.output);
      }
      if (pending.length > REPLY_BYTES_MAX) {
        log.warn(`${name}: ${pending.length} bytes without a line end from the worker, dropped`);
        pending = "";
      }
    }
  } catch (err) {
    // The worker's end closed with our last message unread: it exited (a signal), and the
    // exit is reported with its cause (a warning, or a stop) by the pool. Only the rest is news.
    const code = (err as NodeJS.ErrnoException).code ?? /^([A-Z]+):/.exec((err as Error).message)?.[1];
    if (code !== undefined && PEER_GONE.has(code)) log.debug(`${name}: its channel closed: ${code}`);
    else log.warn(`${name}: reading its channel failed: ${(err as Error).message}`);
  } finally {
    reader.releaseLock();
  }
}

/** A ring message, checked against its schema on the way out (the worker refuses a bad one). */
function ringMessage(spec: RingSpec): Uint8Array {
  const { position, ifname, ifindex, slot, members, geometry } = spec;
  return new TextEncoder().encode(JSON.stringify(v.parse(RingSchema, { kind: "ring", position, ifname, ifindex, slot, members, geometry })));
}

export class WorkerHandle {
  /** "worker N" in messages. */
  readonly name: string;
  readonly index: number;
  readonly pid: number;
  readonly startedAt = Date.now();
  /** The confinement probes the worker saw refused after its drop (null: it did not drop; 0 probes: it dropped with no packet socket set up yet). */
  readonly confinement: { probes: number; ms: number } | null;
  readonly #proc: ReturnType<typeof Bun.spawn>;
  readonly #channel: number;
  readonly #rings: Map<number, RingState>;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #exited = false;
  #killed = false;
  /** What the worker reported with `fatal` after `ready` (it exits next), or null. */
  #fatal: string | null = null;
  /** The packet socket position that `fatal` named (its socket failed the worker's check), or null. */
  #fatalPosition: number | null = null;
  #exitReason: string | null = null;
  readonly exited: Promise<number | null>;

  private constructor(index: number, proc: ReturnType<typeof Bun.spawn>, channel: number, replies: Promise<void>, ready: FromWorker & { type: "ready" }, rings: Map<number, RingState>) {
    this.index = index;
    this.name = `worker ${index}`;
    this.#rings = rings;
    this.pid = proc.pid;
    this.#proc = proc;
    this.#channel = channel;
    this.confinement = ready.confinement;
    // The channel is closed once the worker exited and its replies were read to the end.
    this.exited = Promise.all([proc.exited, replies]).then(([code]) => {
      this.#exited = true;
      const how = proc.signalCode === null || proc.signalCode === undefined ? `code ${code}` : String(proc.signalCode);
      // The worker's own reason (`fatal`, read to the end before this), not only the exit.
      this.#exitReason = this.#fatal === null ? `exited (${how})` : `${this.#fatal} (exited, ${how})`;
      for (const [, p] of this.#pending) {
        clearTimeout(p.timer);
        p.reject(new WorkerError(`${this.name} (pid ${this.pid})${this.#fatal === null ? " " : ": "}${this.#exitReason}`));
      }
      this.#pending.clear();
      fdClose(channel);
      return code;
    });
  }

  static async start(opts: WorkerOptions): Promise<WorkerHandle> {
    const name = `worker ${opts.index}`;
    // Resources first, then the process: a failure leaves no orphan.
    const rings = new Map<number, RingState>();
    const releaseRings = () => {
      for (const r of rings.values()) {
        r.shared.closeFd();
        r.shared.release();
      }
    };
    let pair: [number, number];
    try {
      for (const spec of opts.rings) rings.set(spec.position, { spec, shared: SharedStats.create() });
      pair = scmPair();
    } catch (err) {
      releaseRings();
      throw err;
    }
    const [mine, theirs] = pair;
    let handle: WorkerHandle | null = null;
    let readyResolve!: (m: FromWorker & { type: "ready" }) => void;
    let readyReject!: (e: Error) => void;
    const ready = new Promise<FromWorker & { type: "ready" }>((res, rej) => {
      readyResolve = res;
      readyReject = rej;
    });
    const onMessage = (msg: FromWorker) => {
      if (msg.type === "ready") return readyResolve(msg);
      if (msg.type === "fatal") {
        // Told once, by the pool, with what follows (a restart, a rebuilt socket): the start
        // fails with it before `ready`; after, the exit that follows is told with it.
        log.debug(`${name}: fatal: ${msg.message}${msg.position === undefined ? "" : ` (position ${msg.position})`}`);
        if (handle) {
          handle.#fatal = msg.message;
          handle.#fatalPosition = msg.position ?? null;
        }
        readyReject(new WorkerError(msg.message, msg.position ?? null));
        return;
      }
      if (handle) handle.#settle(msg);
    };
    let proc: ReturnType<typeof Bun.spawn>;
    try {
      fdInherit(theirs);
      // argv keeps `_worker`: ps shows `mcrelay _worker --index N`.
      proc = Bun.spawn([workerExecutable(), "_worker", "--index", String(opts.index)], {
        argv0: "mcrelay",
        // Its own session (setsid): a terminal's Ctrl-C or a signal to the supervisor's process
        // group reaches the supervisor only, which stops its workers itself (counters kept);
        // the worker still ends when the supervisor does (its channel hangs up).
        detached: true,
        stdio: ["ignore", "inherit", "inherit", theirs],
        env: workerEnv(opts.index, opts.testHooks ?? {}),
      });
    } catch (err) {
      fdClose(mine);
      releaseRings();
      throw err;
    } finally {
      fdClose(theirs);
    }
    try {
      const setup = v.parse(WorkerSetupSchema, { kind: "worker", index: opts.index, workers: opts.workers, positions: opts.sockets.length, rings: rings.size, cpu: opts.cpu, user: opts.user });
      // The worker gets its own references; ours keep the sockets (and their fanout slots and
      // rings) alive for the next worker if this one dies.
      scmSend(mine, new TextEncoder().encode(JSON.stringify(setup)), opts.sockets);
      for (const r of rings.values()) scmSend(mine, ringMessage(r.spec), [r.shared.fd]);
    } catch (err) {
      // No ready timer and no reader yet: left alone, the worker would wait for the rest of its
      // start-up messages (up to its own bound) holding the packet sockets it already got.
      safeKill(proc, "SIGKILL");
      fdClose(mine);
      for (const r of rings.values()) r.shared.release();
      throw err;
    } finally {
      for (const r of rings.values()) r.shared.closeFd();
    }
    const replies = readReplies(mine, name, onMessage);
    const timer = setTimeout(() => readyReject(new WorkerError(`${name} not ready within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
    // After its replies are read to the end: a worker that refuses to run says why (`fatal`)
    // just before it exits, and that reason, not the bare exit, is what the rule shows.
    void Promise.all([proc.exited, replies]).then(([code]) => readyReject(new WorkerError(`${name} exited during start-up (code ${code})`)));
    let readyMsg: FromWorker & { type: "ready" };
    try {
      readyMsg = await ready;
    } catch (err) {
      safeKill(proc, "SIGKILL");
      await Promise.race([Promise.all([proc.exited, replies]), Bun.sleep(STOP_TIMEOUT_MS)]);
      fdClose(mine);
      for (const r of rings.values()) r.shared.release();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    handle = new WorkerHandle(opts.index, proc, mine, replies, readyMsg, rings);
    handle.exited.then((code) => opts.onExit?.(code, proc.signalCode === null || proc.signalCode === undefined ? null : String(proc.signalCode)));
    log.debug(`${name} ready (pid ${proc.pid}), ${rings.size} ring(s): ${[...rings.values()].map((r) => r.spec.ifname).join(", ")}`);
    return handle;
  }

  /** Whether the worker serves (or was given) the ring at this position. */
  hasRing(position: number): boolean {
    return this.#rings.has(position);
  }

  /** The rings this worker serves, by position. */
  rings(): RingSpec[] {
    return [...this.#rings.values()].map((r) => r.spec);
  }

  /**
   * Adds a ring to the running worker: its socket (already one of the worker's, set up now by
   * the supervisor) and fresh counter memory. Other rings keep forwarding meanwhile.
   */
  async addRing(spec: RingSpec): Promise<void> {
    if (this.#exited) throw new WorkerError(`${this.name} is not running`);
    if (this.#rings.has(spec.position)) throw new WorkerError(`${this.name}: position ${spec.position} is in use`);
    const shared = SharedStats.create();
    try {
      this.#send(ringMessage(spec), [shared.fd]);
    } catch (err) {
      shared.closeFd();
      shared.release();
      throw err;
    }
    shared.closeFd();
    this.#rings.set(spec.position, { spec, shared });
    try {
      await this.request({ type: "ring-add", position: spec.position });
    } catch (err) {
      // Unless the worker is gone (then its counters are read as it exits): nothing counted yet.
      if (!this.#exited && err instanceof WorkerRefusedError) {
        this.#rings.delete(spec.position);
        shared.release();
      }
      throw err;
    }
  }

  /**
   * The worker stops serving a ring and closes its reference to the socket; returns the ring's
   * final counters (exact: shared memory) and unmaps them.
   */
  /** `keep`: the worker leaves the packet socket open (the position is reused). */
  async dropRing(position: number, keep = false): Promise<DataplaneSnapshot | null> {
    const r = this.#rings.get(position);
    if (!r) return null;
    // Ours from now on: release() (the worker stopped meanwhile) leaves its memory mapped until
    // the final counts are read below.
    this.#rings.delete(position);
    if (!this.#exited) {
      try {
        await this.request({ type: "ring-drop", position, keep });
      } catch (err) {
        log.warn((err as Error).message);
      }
    }
    const final = decodeStats(r.shared.words);
    r.shared.release();
    return final;
  }

  /**
   * Sends one message on the socketpair without blocking; a channel too full to take it throws.
   * A worker that is gone (its end closed) is not an error here: its exit rejects every pending
   * request, so that exit is the one failure the pool counts, not this send too.
   */
  #send(data: Uint8Array, fds: readonly number[] = []): void {
    try {
      scmSend(this.#channel, data, fds, true);
    } catch (err) {
      if (err instanceof NativeError && PEER_GONE.has(err.code)) return;
      throw err;
    }
  }

  #settle(msg: FromWorker): void {
    if (!("id" in msg)) return;
    const p = this.#pending.get(msg.id);
    if (!p) return; // answered after its deadline: already reported
    this.#pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.type === "error") p.reject(new WorkerRefusedError(`${this.name}: ${msg.message}`));
    else p.resolve(msg);
  }

  request(req: Request, timeoutMs = REQUEST_TIMEOUT_MS): Promise<FromWorker> {
    if (this.#exited) return Promise.reject(new WorkerError(`${this.name} is not running`));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new WorkerError(`${this.name} did not answer '${req.type}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      // On the socketpair, whose readability also ends the worker's dataplane run. Never blocks:
      // a channel too full to take it fails the request now.
      try {
        // Validated on the way out, as the set-up and ring messages are: a malformed request is a
        // bug here, not something for the worker to log and ignore.
        this.#send(new TextEncoder().encode(JSON.stringify(v.parse(ToWorkerSchema, { ...req, id }))));
      } catch (err) {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(new WorkerError(`${this.name}: cannot send '${req.type}': ${(err as Error).message}`));
      }
    });
  }

  /**
   * Gives the worker a complete table: its bytes (what Zig's table builder reads) on the
   * socketpair, then the request naming their length, generation and hash. Never blocks: a
   * channel too full to take it fails this apply (retried at the next tick).
   */
  async applyTable(position: number, table: Uint8Array, generation: number, hash: string): Promise<void> {
    if (this.#exited) throw new WorkerError(`${this.name} is not running`);
    this.#send(withGeneration(table, generation));
    const reply = await this.request({ type: "table", position, generation, hash, bytes: table.length });
    if (reply.type !== "applied" || reply.hash !== hash) {
      throw new WorkerError(`${this.name} applied table hash ${"hash" in reply ? reply.hash : "?"}, expected ${hash}`);
    }
  }

  /** Health probe: answers with the table the worker says it holds for this ring. */
  async ping(position: number, timeoutMs: number): Promise<{ generation: number; hash: string }> {
    const reply = await this.request({ type: "ping", position }, timeoutMs);
    if (reply.type !== "pong") throw new WorkerError(`${this.name}: unexpected reply ${reply.type}`);
    return { generation: reply.generation, hash: reply.hash };
  }

  async setLogLevel(level: string): Promise<void> {
    await this.request({ type: "log-level", level: level as never });
  }

  /** A ring's counters, read from shared memory (exact even after the worker died). */
  snapshot(position: number): DataplaneSnapshot | null {
    const r = this.#rings.get(position);
    return r && !r.shared.released ? decodeStats(r.shared.words) : null;
  }

  /** A ring's trace memory (shared memory), or null once released. Use it synchronously. */
  traceMemory(position: number): Uint8Array | null {
    const r = this.#rings.get(position);
    return r && !r.shared.released ? r.shared.trace : null;
  }

  /** Unmaps every ring's shared counters; call after their last snapshots. */
  release(): void {
    for (const r of this.#rings.values()) r.shared.release();
    this.#rings.clear();
  }

  /** Unmaps a ring's shared counters; call after its last snapshot. */
  releaseRing(position: number): void {
    const r = this.#rings.get(position);
    if (!r) return;
    r.shared.release();
    this.#rings.delete(position);
  }

  /**
   * Asks the worker to stop and waits for it; kills it after the deadline. An exit before the
   * answer (it was ending anyway, e.g. a stop signal sent to the whole service) is the stop that
   * was asked for, not a failure; a worker that neither answers nor exits is.
   */
  async stop(): Promise<void> {
    if (this.#exited) return;
    const timer = setTimeout(() => safeKill(this.#proc, "SIGKILL"), STOP_TIMEOUT_MS);
    try {
      await this.request({ type: "stop" }, STOP_TIMEOUT_MS);
    } catch (err) {
      const signal = this.#proc.signalCode === null || this.#proc.signalCode === undefined ? null : String(this.#proc.signalCode);
      if (this.#exited && this.#fatal === null && (signal === null ? this.#proc.exitCode === 0 : STOP_SIGNALS.has(signal))) {
        log.info(`${this.name} (pid ${this.pid}) ${this.#exitReason} while being stopped`);
      } else if (this.#exited) {
        log.warn(`${this.name} (pid ${this.pid}) ${this.#exitReason} while being stopped`);
      } else {
        log.warn(`${(err as Error).message}: killing it`);
        safeKill(this.#proc, "SIGKILL");
      }
    }
    await this.exited;
    clearTimeout(timer);
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (signal === "SIGKILL") this.#killed = true;
    if (!this.#exited) safeKill(this.#proc, signal);
  }

  /** What the worker reported with `fatal` after it was ready (it then exits), or null. */
  get fatal(): string | null {
    return this.#fatal;
  }

  /** The position of the packet socket the worker's `fatal` after `ready` blamed, or null. */
  get fatalPosition(): number | null {
    return this.#fatalPosition;
  }

  /**
   * Why the process ended, once `exited` resolved (null before): its `fatal` message with the
   * exit status (`confinement not verified: ... (exited, code 1)`), else `exited (code N)` or
   * `exited (SIGKILL)`.
   */
  get exitReason(): string | null {
    return this.#exitReason;
  }

  /** SIGKILL was sent: the worker is on its way out. */
  get killed(): boolean {
    return this.#killed;
  }
}
