// The supervisor's side of one worker process: acquire the AF_PACKET socket first, then spawn
// the worker, hand the socket over SCM_RIGHTS, and talk to it with validated request/response
// messages, each with a deadline.
import * as v from "valibot";
import { logger, getLogFormat, getLogLevel } from "../log.ts";
import { fdClose, fdInherit, scmPair, scmSend, scmWake, SharedStats } from "../native/lib.ts";
import { decodeStats } from "../stats/decode.ts";
import type { RingGeometry } from "../native/abi.ts";
import { selfCommand } from "../self-command.ts";
import type { WorkerUser } from "./user.ts";
import type { DataplaneSnapshot } from "../stats/decode.ts";
import { FromWorkerSchema, type FromWorker, type ToWorker } from "../worker/messages.ts";
import { withGeneration } from "../rules/wire.ts";

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

export class WorkerError extends Error {
  override name = "WorkerError";
}

/** The worker answered the request with an error: it is alive and kept its previous state. */
export class WorkerRefusedError extends WorkerError {
  override name = "WorkerRefusedError";
}

export interface WorkerOptions {
  ifname: string;
  ifindex: number;
  /** The interface's packet socket for this worker, set up by the supervisor (kept by it). */
  packetFd: number;
  geometry: RingGeometry;
  slot: number;
  members: number;
  /** The CPU the worker pins its dataplane thread to (mcr's `pinning`), or null. */
  cpu: number | null;
  /** The unprivileged user the worker becomes; null keeps the supervisor's credentials. */
  user: WorkerUser | null;
  /** Called when the worker process exits, expectedly or not. */
  onExit?: (code: number | null, signal: string | null) => void;
}

export class WorkerHandle {
  readonly ifname: string;
  readonly pid: number;
  readonly startedAt = Date.now();
  /** The ring as the supervisor set it up (reported by `workers`). */
  readonly ring: Record<string, number>;
  /** The confinement probes the worker saw refused after its drop (null: it did not drop). */
  readonly confinement: { probes: number; ms: number } | null;
  readonly #proc: ReturnType<typeof Bun.spawn>;
  readonly #channel: number;
  readonly #shared: SharedStats;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #exited = false;
  #killed = false;
  readonly exited: Promise<number | null>;

  private constructor(ifname: string, proc: ReturnType<typeof Bun.spawn>, channel: number, ready: FromWorker & { type: "ready" }, ring: Record<string, number>, shared: SharedStats) {
    this.ifname = ifname;
    this.#shared = shared;
    this.pid = proc.pid;
    this.#proc = proc;
    this.#channel = channel;
    this.ring = ring;
    this.confinement = ready.confinement;
    this.exited = proc.exited.then((code) => {
      this.#exited = true;
      for (const [, p] of this.#pending) {
        clearTimeout(p.timer);
        p.reject(new WorkerError(`worker ${ifname} (pid ${this.pid}) exited (code ${code})`));
      }
      this.#pending.clear();
      fdClose(channel);
      return code;
    });
  }

  static async start(opts: WorkerOptions): Promise<WorkerHandle> {
    // Resources first, then the process: a failure leaves no orphan.
    let pair: [number, number];
    const shared = SharedStats.create();
    try {
      pair = scmPair();
    } catch (err) {
      shared.closeFd();
      shared.release();
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
    let proc: ReturnType<typeof Bun.spawn>;
    try {
      fdInherit(theirs);
      proc = Bun.spawn(selfCommand(["_worker", "--iface", opts.ifname, "--slot", String(opts.slot)]), {
        stdio: ["ignore", "inherit", "inherit", theirs],
        env: {
          ...process.env,
          MCRELAY_LOG_IDENTITY: opts.members > 1 ? `worker:${opts.ifname}/${opts.slot}` : `worker:${opts.ifname}`,
          MCRELAY_LOG_LEVEL: getLogLevel(),
          MCRELAY_LOG_FORMAT: getLogFormat(),
        },
        ipc(raw) {
          const parsed = v.safeParse(FromWorkerSchema, raw);
          if (!parsed.success) {
            log.warn(`worker ${opts.ifname}: malformed message ignored: ${v.summarize(parsed.issues)}`);
            return;
          }
          const msg = parsed.output;
          if (msg.type === "ready") return readyResolve(msg);
          if (msg.type === "fatal") {
            log.error(`worker ${opts.ifname}: ${msg.message}`);
            readyReject(new WorkerError(msg.message));
            return;
          }
          if (handle) handle.#settle(msg);
        },
        serialization: "json",
      });
    } finally {
      fdClose(theirs);
    }
    try {
      const setup = {
        kind: "packet-socket",
        ifname: opts.ifname,
        ifindex: opts.ifindex,
        slot: opts.slot,
        members: opts.members,
        geometry: opts.geometry,
        cpu: opts.cpu,
        user: opts.user,
      };
      // The worker gets its own reference; ours keeps the socket (and its fanout slot and
      // ring) alive for the next worker if this one dies.
      scmSend(mine, new TextEncoder().encode(JSON.stringify(setup)), [opts.packetFd, shared.fd]);
    } finally {
      shared.closeFd();
    }
    const timer = setTimeout(() => readyReject(new WorkerError(`worker ${opts.ifname} not ready within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
    proc.exited.then((code) => readyReject(new WorkerError(`worker ${opts.ifname} exited during start-up (code ${code})`)));
    let readyMsg: FromWorker & { type: "ready" };
    try {
      readyMsg = await ready;
    } catch (err) {
      safeKill(proc, "SIGKILL");
      await Promise.race([proc.exited, Bun.sleep(STOP_TIMEOUT_MS)]);
      fdClose(mine);
      shared.release();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    handle = new WorkerHandle(opts.ifname, proc, mine, readyMsg, { ...opts.geometry }, shared);
    handle.exited.then((code) => opts.onExit?.(code, proc.signalCode === null || proc.signalCode === undefined ? null : String(proc.signalCode)));
    log.debug(`worker ${opts.ifname} ready (pid ${proc.pid})`);
    return handle;
  }

  #settle(msg: FromWorker): void {
    if (!("id" in msg)) return;
    const p = this.#pending.get(msg.id);
    if (!p) return; // answered after its deadline: already reported
    this.#pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.type === "error") p.reject(new WorkerRefusedError(`worker ${this.ifname}: ${msg.message}`));
    else p.resolve(msg);
  }

  request(req: Request, timeoutMs = REQUEST_TIMEOUT_MS): Promise<FromWorker> {
    if (this.#exited) return Promise.reject(new WorkerError(`worker ${this.ifname} is not running`));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new WorkerError(`worker ${this.ifname} did not answer '${req.type}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      this.#proc.send({ ...req, id });
      // The dataplane may be inside a slice: wake it so the message is handled now.
      scmWake(this.#channel);
    });
  }

  /**
   * Gives the worker a complete table: its bytes (what Zig's table builder reads) on the
   * socketpair, then the request naming their length, generation and hash. Never blocks: a
   * channel too full to take it fails this apply (retried at the next tick).
   */
  async applyTable(table: Uint8Array, generation: number, hash: string): Promise<void> {
    if (this.#exited) throw new WorkerError(`worker ${this.ifname} is not running`);
    scmSend(this.#channel, withGeneration(table, generation), [], true);
    const reply = await this.request({ type: "table", generation, hash, bytes: table.length });
    if (reply.type !== "applied" || reply.hash !== hash) {
      throw new WorkerError(`worker ${this.ifname} applied table hash ${"hash" in reply ? reply.hash : "?"}, expected ${hash}`);
    }
  }

  /** Health probe: answers with the table the worker says it holds. */
  async ping(timeoutMs: number): Promise<{ generation: number; hash: string }> {
    const reply = await this.request({ type: "ping" }, timeoutMs);
    if (reply.type !== "pong") throw new WorkerError(`worker ${this.ifname}: unexpected reply ${reply.type}`);
    return { generation: reply.generation, hash: reply.hash };
  }

  async setLogLevel(level: string): Promise<void> {
    await this.request({ type: "log-level", level: level as never });
  }

  /** The worker's counters, read from shared memory (exact even after the worker died). */
  snapshot(): DataplaneSnapshot {
    return decodeStats(this.#shared.words);
  }

  /** The worker's trace ring (shared memory), or null once released. Use it synchronously. */
  traceMemory(): Uint8Array | null {
    return this.#shared.released ? null : this.#shared.trace;
  }

  /** Unmaps the shared counters; call after the last snapshot. */
  release(): void {
    this.#shared.release();
  }

  /** Asks the worker to stop and waits for it; kills it after the deadline. */
  async stop(): Promise<void> {
    if (this.#exited) return;
    const timer = setTimeout(() => safeKill(this.#proc, "SIGKILL"), STOP_TIMEOUT_MS);
    try {
      await this.request({ type: "stop" }, STOP_TIMEOUT_MS);
    } catch (err) {
      log.warn((err as Error).message);
      safeKill(this.#proc, "SIGKILL");
    }
    await this.exited;
    clearTimeout(timer);
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (signal === "SIGKILL") this.#killed = true;
    if (!this.#exited) safeKill(this.#proc, signal);
  }

  /** SIGKILL was sent: the worker is on its way out. */
  get killed(): boolean {
    return this.#killed;
  }
}
