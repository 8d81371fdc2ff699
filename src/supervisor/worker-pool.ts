// The worker manager. Each input interface gets a plane: N packet sockets set up by the
// supervisor (ring, filter, bind, and a fanout group when N > 1) and one worker per socket.
// The supervisor keeps the sockets for the plane's lifetime, so a replaced worker attaches to
// the same ring and fanout slot: nothing is reassigned, and packets that arrived meanwhile are
// still in the ring. Rules of an interface are split by flowHash(group, port) % N, the hash
// the kernel's fanout program computes. A control tick (one interval, created once) starts
// workers, applies tables, pings with a deadline, repairs drift and restarts failed workers
// with escalating backoff. Nothing here blocks the event loop.
import { randomInt } from "node:crypto";
import { logger } from "../log.ts";
import { WORKERS_PER_INTERFACE_MAX } from "../limits.ts";
import { fdCloseAsync, packetOpen, packetSetupAsync, type RingGeometry } from "../native/lib.ts";
import { workerSlot } from "../rules/flow-hash.ts";
import { encodeWorkerTable, tableBytesHash } from "../rules/wire.ts";
import type { WireRule } from "../rules/wire.ts";
import { CounterBook } from "./counters.ts";
import { lookupLink } from "../rules/links.ts";
import type { WorkerUser } from "./user.ts";
import type { LinkLookup } from "../rules/rule.ts";
import { WorkerHandle, WorkerRefusedError } from "./worker-handle.ts";
import type { RingInfo, WorkerInfo } from "../control/responses.ts";

const log = logger("workers");
const MIB = 1024 * 1024;

export const TICK_MS = 100;
export const PING_INTERVAL_MS = 1000;
export const PING_TIMEOUT_MS = 1000;
export const STATS_INTERVAL_MS = 1000;
export const BACKOFF_MIN_MS = 250;
export const BACKOFF_MAX_MS = 16_000;
/** A worker that stayed up this long has its failure streak forgiven. */
export const HEALTHY_RESET_MS = 30_000;

export type WorkerState = "starting" | "running" | "backoff" | "stopping";

/** The sockets of one input interface. */
interface Plane {
  ifname: string;
  ifindex: number;
  mtu: number;
  fds: number[];
  geometry: RingGeometry;
  fanoutId: number;
}

interface Entry {
  ifname: string;
  slot: number;
  members: number;
  rules: WireRule[];
  /** The rules encoded as the worker applies them (generation 0; set when sent). */
  table: Uint8Array;
  hash: string;
  generation: number;
  handle: WorkerHandle | null;
  state: WorkerState;
  appliedHash: string | null;
  /** One operation at a time per worker (start, apply, ping). */
  busy: boolean;
  restarts: number;
  failures: number;
  backoffMs: number;
  nextStartAt: number;
  startedAt: number;
  lastPingAt: number;
  lastError: string | null;
  driftRepairs: number;
  /** Set when the worker is stopped on purpose (no restart, not a failure). */
  retiring: boolean;
  /** The last table a worker of this slot accepted: what it goes back to after a refusal. */
  good: { rules: WireRule[]; table: Uint8Array; hash: string; generation: number } | null;
  /** The wanted table's hash when the worker refused it, and why (not retried until it changes). */
  refusedHash: string | null;
  refusal: string | null;
}

export type { WorkerInfo };

/** The ring geometry a worker reported, as the control protocol names it. */
function ringInfo(r: Record<string, number>): RingInfo {
  return { block_bytes: r.blockBytes ?? 0, block_count: r.blockCount ?? 0, frame_bytes: r.frameBytes ?? 0, frame_count: r.frameCount ?? 0 };
}

export interface Desired {
  rules: WireRule[];
  /** Workers for this interface (PACKET_FANOUT when more than one). */
  workers: number;
  /** Ring of each of its packet sockets in MiB; undefined: the native default. */
  ringMib?: number;
  /** mcr's `pinning`: the CPU of each worker by slot (slot i on cpus[i]); undefined: not pinned. */
  cpus?: number[];
}

function entryKey(ifname: string, slot: number): string {
  return `${ifname}#${slot}`;
}

export class WorkerPool {
  readonly counters = new CounterBook();
  readonly #entries = new Map<string, Entry>();
  /** Planes by interface; a promise while its sockets are being set up. */
  readonly #planes = new Map<string, Promise<Plane>>();
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #user: WorkerUser | null;
  readonly #lookup: LinkLookup;
  #generation = 0;
  #logLevel: string | null = null;
  #closed = false;
  #lastSampleAt = 0;
  #lastTickAt = performance.now();
  /** What each plane was built for (known before its sockets are ready). */
  readonly #planeFacts = new Map<string, { ifindex: number; mtu: number; members: number; ringMib: number | undefined; cpus: string }>();
  readonly #cpus = new Map<string, number[] | undefined>();
  /** The ring size each interface should have (from the last setTables). */
  readonly #ringMib = new Map<string, number | undefined>();
  #waiters: (() => void)[] = [];

  constructor(opts: { user: WorkerUser | null; lookup?: LinkLookup }) {
    this.#user = opts.user;
    this.#lookup = opts.lookup ?? lookupLink;
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
  }

  /**
   * Sets what every interface should forward. Interfaces absent (or with no rules) get their
   * workers stopped and sockets closed; a changed worker count, ifindex or MTU rebuilds the
   * interface's plane.
   */
  setTables(desired: Map<string, Desired>): void {
    for (const [ifname, facts] of this.#planeFacts) {
      const want = desired.get(ifname);
      const link = want && want.rules.length ? this.#lookup(ifname) : null;
      const members = want ? Math.max(1, Math.min(WORKERS_PER_INTERFACE_MAX, want.workers)) : 0;
      const stale = !want || want.rules.length === 0 || facts.members !== members || facts.ringMib !== want.ringMib || facts.cpus !== JSON.stringify(want.cpus ?? null) || !link || link.ifindex !== facts.ifindex || link.mtu !== facts.mtu;
      if (stale) void this.#closePlane(ifname);
    }
    // Workers whose plane was never built (its setup kept failing) are pruned here too.
    for (const e of [...this.#entries.values()]) {
      const want = desired.get(e.ifname);
      const members = want ? Math.max(1, Math.min(WORKERS_PER_INTERFACE_MAX, want.workers)) : 0;
      if (!want || want.rules.length === 0 || members !== e.members) {
        this.#entries.delete(entryKey(e.ifname, e.slot));
        void this.#retire(e);
      }
    }
    this.#ringMib.clear();
    for (const [ifname, want] of desired) this.#ringMib.set(ifname, want.ringMib);
    this.#cpus.clear();
    for (const [ifname, want] of desired) this.#cpus.set(ifname, want.cpus);
    for (const [ifname, want] of desired) {
      if (want.rules.length === 0) continue;
      const members = Math.max(1, Math.min(WORKERS_PER_INTERFACE_MAX, want.workers));
      const split: WireRule[][] = Array.from({ length: members }, () => []);
      for (const r of want.rules) split[workerSlot(r.group, r.port, members)]!.push(r);
      for (let slot = 0; slot < members; slot++) this.#setEntry(ifname, slot, members, split[slot]!);
    }
    this.#tick();
  }

  #setEntry(ifname: string, slot: number, members: number, rules: WireRule[]): void {
    // Encoded once, here: the worker applies these bytes as they are.
    const table = encodeWorkerTable(rules);
    const hash = tableBytesHash(table);
    const key = entryKey(ifname, slot);
    const entry = this.#entries.get(key);
    if (entry) {
      if (entry.hash !== hash) {
        entry.rules = rules;
        entry.table = table;
        entry.hash = hash;
        entry.generation = ++this.#generation;
      }
      return;
    }
    this.#entries.set(key, {
      ifname,
      slot,
      members,
      rules,
      table,
      hash,
      generation: ++this.#generation,
      handle: null,
      state: "starting",
      appliedHash: null,
      busy: false,
      restarts: 0,
      failures: 0,
      backoffMs: 0,
      nextStartAt: 0,
      startedAt: 0,
      lastPingAt: 0,
      lastError: null,
      driftRepairs: 0,
      retiring: false,
      good: null,
      refusedHash: null,
      refusal: null,
    });
  }

  /** Stops the interface's workers and closes its sockets. */
  async #closePlane(ifname: string): Promise<void> {
    const pending = this.#planes.get(ifname);
    this.#planes.delete(ifname);
    this.#planeFacts.delete(ifname);
    const entries = [...this.#entries.values()].filter((e) => e.ifname === ifname);
    for (const e of entries) this.#entries.delete(entryKey(e.ifname, e.slot));
    await Promise.all(entries.map((e) => this.#retire(e)));
    const plane = await pending?.catch(() => null);
    // Closing a packet socket waits for the stack to let go of it: off the event loop.
    for (const fd of plane?.fds ?? []) fdCloseAsync(fd);
  }

  /** The plane of an interface, set up on first use: all sockets join before any worker runs. */
  #plane(ifname: string, members: number): Promise<Plane> {
    const existing = this.#planes.get(ifname);
    if (existing) return existing;
    const link = this.#lookup(ifname);
    if (!link) return Promise.reject(new Error(`interface ${ifname} does not exist`));
    const ringMib = this.#ringMib.get(ifname);
    this.#planeFacts.set(ifname, { ifindex: link.ifindex, mtu: link.mtu, members, ringMib, cpus: JSON.stringify(this.#cpus.get(ifname) ?? null) });
    const building = this.#buildPlane(ifname, link.ifindex, link.mtu, members, ringMib);
    this.#planes.set(ifname, building);
    // A failed setup is tried again by the next worker start.
    building.catch(() => {
      if (this.#planes.get(ifname) === building) {
        this.#planes.delete(ifname);
        this.#planeFacts.delete(ifname);
      }
    });
    return building;
  }

  async #buildPlane(ifname: string, ifindex: number, mtu: number, members: number, ringMib: number | undefined): Promise<Plane> {
    const fanoutId = members > 1 ? randomInt(1, 0xffff) : 0;
    const fds: number[] = [];
    let geometry: RingGeometry | null = null;
    try {
      // One after another: fanout slots are taken in join order.
      for (let i = 0; i < members; i++) {
        const fd = packetOpen();
        fds.push(fd);
        // 0: the native default (zig/constants.zig ring_bytes_default).
        geometry = await packetSetupAsync(fd, { ifindex, mtu, ringBytes: (ringMib ?? 0) * MIB, blockTimeoutMs: 0, fanoutId }, ifname);
      }
    } catch (err) {
      for (const fd of fds) fdCloseAsync(fd);
      throw err;
    }
    log.debug(`interface ${ifname}: ${members} socket(s), ring ${geometry!.blockCount} x ${geometry!.blockBytes} bytes${fanoutId ? `, fanout group ${fanoutId}` : ""}`);
    return { ifname, ifindex, mtu, fds, geometry: geometry!, fanoutId };
  }

  /**
   * Resolves when every worker holds its desired table, or rejects after the deadline. With
   * `failedIsSettled`, a worker that failed since it was given its table (exited, refused to
   * run, its socket could not be set up) counts as settled too: start-up does not wait for a
   * worker that is being restarted with backoff.
   */
  async settled(timeoutMs = 5000, o: { failedIsSettled?: boolean } = {}): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    const failuresBefore = new Map([...this.#entries].map(([k, e]) => [k, e.failures]));
    const failed = (k: string, e: Entry) => o.failedIsSettled === true && e.failures > (failuresBefore.get(k) ?? 0);
    while (!this.#allApplied(failed)) {
      if (performance.now() > deadline) {
        const late = [...this.#entries.values()].filter((e) => e.appliedHash !== e.hash);
        throw new Error(late.map((e) => `worker ${label(e)}: ${e.lastError ?? `table not applied yet (${e.state})`}`).join("; "));
      }
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  #allApplied(failed: (key: string, e: Entry) => boolean = () => false): boolean {
    // A refused table is settled too: the worker answered, and keeps its last good table.
    for (const [k, e] of this.#entries) if (e.appliedHash !== e.hash && e.refusedHash !== e.hash && !failed(k, e)) return false;
    return true;
  }

  /**
   * Rules a worker refused to take (its table would not fit, or it failed validation there),
   * by rule id, with the worker's reason. The worker's other rules go on forwarding.
   */
  refusedRules(): Map<string, string> {
    const out = new Map<string, string>();
    for (const e of this.#entries.values()) {
      if (e.refusedHash === null || e.refusedHash !== e.hash) continue;
      const kept = new Set((e.good?.rules ?? []).map((r) => r.id));
      for (const r of e.rules) if (!kept.has(r.id)) out.set(r.id, `worker ${label(e)} refused its table: ${e.refusal}`);
    }
    return out;
  }

  #notify(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const r of w) r();
  }

  info(): WorkerInfo[] {
    const now = Date.now();
    return [...this.#entries.values()].map((e) => ({
      interface: e.ifname,
      slot: e.slot,
      workers_on_interface: e.members,
      pid: e.handle?.pid ?? null,
      state: e.state,
      uptime_s: e.handle ? Math.round((now - e.startedAt) / 100) / 10 : 0,
      restarts: e.restarts,
      consecutive_failures: e.failures,
      backoff_ms: e.state === "backoff" ? e.backoffMs : 0,
      drift_repairs: e.driftRepairs,
      table_hash: e.hash,
      applied_hash: e.appliedHash,
      rules: e.rules.length,
      last_error: e.lastError,
      ring: e.handle ? ringInfo(e.handle.ring) : null,
      confinement: e.handle?.confinement ?? null,
    }));
  }

  /** Applies a log level to every worker now and to workers started later. */
  async setLogLevel(level: string): Promise<void> {
    this.#logLevel = level;
    await Promise.allSettled([...this.#entries.values()].map((e) => e.handle?.setLogLevel(level)));
  }

  /** The trace memory of every live worker of an interface; valid until the event loop turns. */
  traceMemories(ifname: string): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const e of this.#entries.values()) {
      const mem = e.ifname === ifname ? e.handle?.traceMemory() : null;
      if (mem) out.push(mem);
    }
    return out;
  }

  /** Reads fresh counters of every running worker (from shared memory). */
  refresh(): void {
    for (const e of this.#entries.values()) {
      if (e.handle) this.counters.observe(workerKey(e), e.ifname, e.handle.snapshot());
    }
  }

  /** refresh(), then a rate sample (about once a second). */
  collect(): void {
    this.refresh();
    this.counters.sample();
  }

  /** Stops every worker within the stop deadline, keeping their final counters. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    await Promise.all([...this.#planes.keys(), ...[...this.#entries.values()].map((e) => e.ifname)].filter((v, i, a) => a.indexOf(v) === i).map((ifname) => this.#closePlane(ifname)));
  }

  async #retire(entry: Entry): Promise<void> {
    entry.retiring = true;
    entry.state = "stopping";
    const handle = entry.handle;
    if (!handle) return;
    const key = workerKey(entry);
    await handle.stop();
    this.counters.retire(key, entry.ifname, handle.snapshot());
    handle.release();
    entry.handle = null;
  }

  /** Milliseconds since the control tick last ran (for /healthz). */
  sinceTickMs(): number {
    return performance.now() - this.#lastTickAt;
  }

  #tick(): void {
    if (this.#closed) return;
    const now = performance.now();
    this.#lastTickAt = now;
    for (const e of this.#entries.values()) {
      // A worker being killed gets nothing more: its exit schedules the restart.
      if (e.busy || e.retiring || e.handle?.killed) continue;
      if (!e.handle) {
        if (now >= e.nextStartAt) this.#run(e, () => this.#start(e));
      } else if (e.appliedHash !== e.hash && e.refusedHash !== e.hash) {
        this.#run(e, () => this.#apply(e));
      } else if (now - e.lastPingAt >= PING_INTERVAL_MS) {
        this.#run(e, () => this.#ping(e));
      }
      if (e.handle && e.failures > 0 && Date.now() - e.startedAt >= HEALTHY_RESET_MS) {
        e.failures = 0;
        e.backoffMs = 0;
      }
    }
    if (now - this.#lastSampleAt >= STATS_INTERVAL_MS) {
      this.#lastSampleAt = now;
      this.collect();
    }
  }

  #run(e: Entry, op: () => Promise<void>): void {
    e.busy = true;
    const handle = e.handle;
    op()
      .catch((err) => {
        // An operation that failed because its worker exited (or was replaced) meanwhile is
        // that exit, already counted once by #exited: never a second failure.
        if (handle && e.handle !== handle) return;
        this.#fail(e, (err as Error).message);
      })
      .finally(() => {
        e.busy = false;
        this.#notify();
      });
  }

  async #start(e: Entry): Promise<void> {
    e.state = "starting";
    const plane = await this.#plane(e.ifname, e.members);
    const handle = await WorkerHandle.start({
      ifname: e.ifname,
      ifindex: plane.ifindex,
      packetFd: plane.fds[e.slot]!,
      geometry: plane.geometry,
      slot: e.slot,
      members: e.members,
      cpu: this.#cpus.get(e.ifname)?.[e.slot] ?? null,
      user: this.#user,
      onExit: (code, signal) => this.#exited(e, handle, code, signal),
    });
    if (e.retiring) {
      await handle.stop();
      handle.release();
      return;
    }
    e.handle = handle;
    e.startedAt = Date.now();
    e.appliedHash = null;
    if (this.#logLevel) await handle.setLogLevel(this.#logLevel);
    await this.#apply(e);
    e.state = "running";
    e.lastError = null;
  }

  async #apply(e: Entry): Promise<void> {
    const handle = e.handle!;
    const { rules, table, hash, generation } = e;
    // Counters of rules leaving this worker's table restart; the book keeps what they had.
    this.counters.observe(workerKey(e), e.ifname, handle.snapshot());
    try {
      await handle.applyTable(table, generation, hash);
    } catch (err) {
      if (!(err instanceof WorkerRefusedError)) throw err;
      // Refused, not failed: the worker keeps the table it had and goes on forwarding it
      // (killing it would stop every rule of the interface, and its successor would refuse
      // the same table). A new worker gets the last table this slot accepted.
      e.refusedHash = hash;
      e.refusal = err.message.replace(`worker ${handle.ifname}: `, "");
      e.lastError = `table refused: ${e.refusal}`;
      log.error(`worker ${label(e)}: refused table ${hash} (${e.refusal}); it keeps table ${e.good?.hash ?? "(none)"}`);
      if (e.good && e.appliedHash !== e.good.hash) {
        await handle.applyTable(e.good.table, e.good.generation, e.good.hash);
        e.appliedHash = e.good.hash;
      }
      return;
    }
    this.counters.observe(workerKey(e), e.ifname, handle.snapshot());
    e.appliedHash = hash;
    e.good = { rules, table, hash, generation };
    e.refusedHash = null;
    e.refusal = null;
    log.debug(`worker ${label(e)}: table ${hash} applied (${rules.length} rules)`);
  }

  async #ping(e: Entry): Promise<void> {
    e.lastPingAt = performance.now();
    const pong = await e.handle!.ping(PING_TIMEOUT_MS);
    // (No table accepted yet, e.g. the first one was refused: nothing to compare.)
    if (e.appliedHash !== null && pong.hash !== e.appliedHash) {
      e.driftRepairs += 1;
      log.warn(`worker ${label(e)}: holds table ${pong.hash}, expected ${e.appliedHash}: resyncing`);
      try {
        await this.#apply(e);
      } catch (err) {
        throw new Error(`drift repair failed: ${(err as Error).message}`);
      }
    }
  }

  /** A failed operation: the worker is replaced (the exit handler schedules the restart). */
  #fail(e: Entry, message: string): void {
    e.lastError = message;
    log.error(`worker ${label(e)}: ${message}`);
    if (e.handle) {
      e.handle.kill();
    } else if (!e.retiring) {
      this.#scheduleRestart(e);
    }
  }

  #exited(e: Entry, handle: WorkerHandle, code: number | null, signal: string | null): void {
    // A worker stopped on purpose is retired by #retire.
    if (e.handle !== handle || e.retiring) return;
    // Shared memory still holds its exact final counts, even after SIGKILL.
    this.counters.retire(workerKey(e), e.ifname, handle.snapshot());
    handle.release();
    e.handle = null;
    e.appliedHash = null;
    if (this.#closed) return;
    e.lastError = e.lastError ?? `exited (${signal ?? `code ${code}`})`;
    log.warn(`worker ${label(e)} (pid ${handle.pid}) exited (${signal ?? `code ${code}`})`);
    this.#scheduleRestart(e);
  }

  #scheduleRestart(e: Entry): void {
    e.failures += 1;
    e.restarts += 1;
    e.backoffMs = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (e.failures - 1));
    e.nextStartAt = performance.now() + e.backoffMs;
    e.state = "backoff";
    log.info(`worker ${label(e)}: restart in ${e.backoffMs} ms (failure ${e.failures})`);
  }
}

function label(e: Entry): string {
  return e.members > 1 ? `${e.ifname}/${e.slot}` : e.ifname;
}

function workerKey(e: Entry): string {
  return `${e.ifname}#${e.slot}/${e.handle?.pid ?? 0}`;
}
