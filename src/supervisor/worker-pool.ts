// The worker manager. Worker processes are numbered 0..W-1 (W: the largest worker count any
// input interface wants, default 1); each serves the rings of several input interfaces from one
// dataplane thread. An interface with k workers gets a plane: k packet sockets set up by the
// supervisor (ring, filter, bind, and a fanout group when k > 1), socket i served by worker i.
// A worker holds a fixed set of packet sockets (positions) from its start, blank until the
// supervisor sets one up for an interface, so adding an interface gives a running worker a
// ring without restarting it (and its seccomp filter covers every position from the start).
// The supervisor keeps every socket, so a replaced worker attaches to the same rings and
// fanout slots: packets that arrived meanwhile are still there. Rules of an interface are
// split by flowHash(group, port) % k, the hash the kernel's fanout program computes. A control
// tick (one interval, created once) starts workers, adds rings, applies tables, pings with a
// deadline, repairs drift and restarts failed workers with escalating backoff. Nothing here
// blocks the event loop.
import { randomInt } from "node:crypto";
import { logger } from "../log.ts";
import { SystemError } from "../errors.ts";
import { WORKERS_PER_INTERFACE_MAX } from "../limits.ts";
import { fdCloseAsync, packetOpen, packetResetAsync, packetSetupAsync, type RingGeometry } from "../native/lib.ts";
import { LIMITS } from "../native/abi.ts";
import { workerSlot } from "../rules/flow-hash.ts";
import { encodeWorkerTable, tableBytesHash } from "../rules/wire.ts";
import type { WireRule } from "../rules/wire.ts";
import { CounterBook } from "./counters.ts";
import { lookupLink } from "../rules/links.ts";
import type { WorkerUser } from "./user.ts";
import type { LinkLookup } from "../rules/rule.ts";
import { STOP_SIGNALS, WorkerError, WorkerHandle, WorkerRefusedError, type RingSpec } from "./worker-handle.ts";
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
/**
 * Packet sockets of one ring a worker may refuse in a row (its `fatal` names the socket, e.g. a
 * filter that is not locked) before the ring is given up: each one is rebuilt, never handed to
 * the next worker, and after this many the ring is left out (its rules `error`) until its rules
 * change or its interface is recreated, so its worker serves its other rings instead of
 * restarting for ever.
 */
export const SOCKET_FAILURES_MAX = 3;
/**
 * How long a worker's exit by SIGTERM or SIGINT waits for the supervisor's own stop before it
 * is reported as unexpected. A stop signal sent to every process of the service (systemd's
 * KillMode=control-group, `kill` of each pid) reaches the supervisor and its workers at once,
 * and which exit the event loop sees first is chance.
 */
export const STOP_SIGNAL_GRACE_MS = 1000;

export type WorkerState = "starting" | "running" | "backoff" | "stopping";

/** The sockets of one input interface: socket i at `positions[i]` of worker i. */
interface Plane {
  ifname: string;
  ifindex: number;
  mtu: number;
  positions: number[];
  geometry: RingGeometry;
  fanoutId: number;
}

/** One worker process slot: its packet sockets by position, its process, its health. */
interface Proc {
  index: number;
  /**
   * The supervisor's packet sockets by position: blank, or set up for an interface. null: closed
   * (its interface went away); a new blank takes its place at the worker's next start.
   */
  sockets: (number | null)[];
  /** The interface each position is set up for (reserved while its setup runs), or null. */
  uses: (string | null)[];
  /** Times each position's socket was closed: a reset that ran meanwhile no longer owns it. */
  closes: number[];
  cpu: number | null;
  handle: WorkerHandle | null;
  /** A worker process holds the sockets (from its spawn to its exit): no new ones for it then. */
  live: boolean;
  state: WorkerState;
  /** Starting (one start at a time; rings wait for it). */
  busy: boolean;
  restarts: number;
  failures: number;
  backoffMs: number;
  nextStartAt: number;
  startedAt: number;
  lastError: string | null;
  /** Set when the worker is stopped on purpose (no restart, not a failure). */
  retiring: boolean;
  /**
   * Why the worker is being stopped to be started again at once (its CPU changed, or its closed
   * positions must be renewed for an interface), or null: not a failure.
   */
  recycling: string | null;
  /** Times the worker was stopped on purpose and started again (recycling). */
  recycled: number;
}

/** One ring: an interface's socket in one worker, with the table that worker applies to it. */
interface Entry {
  ifname: string;
  /** The interface's socket index, which is also the worker serving it. */
  slot: number;
  members: number;
  rules: WireRule[];
  /** The rules encoded as the worker applies them (generation 0; set when sent). */
  table: Uint8Array;
  hash: string;
  generation: number;
  /** Its socket's position in worker `slot`, once its plane is set up. */
  position: number | null;
  /** The worker process that serves this ring now, or null. */
  attached: WorkerHandle | null;
  appliedHash: string | null;
  /** One operation at a time per ring (add, apply, ping). */
  busy: boolean;
  lastPingAt: number;
  lastError: string | null;
  driftRepairs: number;
  /** Its plane could not be set up (e.g. the interface vanished): tried again after a backoff. */
  attachFailures: number;
  attachRetryAt: number;
  retiring: boolean;
  /** The last table a worker accepted for this ring: what it goes back to after a refusal. */
  good: { rules: WireRule[]; table: Uint8Array; hash: string; generation: number } | null;
  /** The wanted table's hash when the worker refused it, and why (not retried until it changes). */
  refusedHash: string | null;
  refusal: string | null;
  /** Packet sockets of this ring its worker refused in a row (each rebuilt); reset once it serves it. */
  socketFailures: number;
  /**
   * Given up after SOCKET_FAILURES_MAX refused sockets: why, and the interface's ifindex then.
   * Not served (its worker serves its other rings) until its rules change or the interface is recreated.
   */
  failed: { reason: string; ifindex: number | null } | null;
}

export type { WorkerInfo };

/** The ring geometry, as the control protocol names it. */
function ringInfo(r: RingGeometry): RingInfo {
  return { block_bytes: r.blockBytes, block_count: r.blockCount, frame_bytes: r.frameBytes, frame_count: r.frameCount };
}

export interface Desired {
  rules: WireRule[];
  /** Workers serving this interface (its sockets in workers 0..workers-1, PACKET_FANOUT when more than one). */
  workers: number;
  /** Ring of each of its packet sockets in MiB; undefined: the native default. */
  ringMib?: number;
  /**
   * mcr's `pinning`: a CPU per worker index (worker i on cpus[i]); undefined: not pinned. A
   * worker serves several interfaces: the first interface (in order) naming a CPU for it decides.
   */
  cpus?: number[];
}

function entryKey(ifname: string, slot: number): string {
  return `${ifname}#${slot}`;
}

/** Dropped rings whose drift repairs are kept for a ring of the same interface and slot. */
const RETIRED_RINGS_MAX = 1024;

/** Packet sockets (positions) each worker holds: the rings it can serve. */
const POSITIONS = LIMITS.ringsPerWorkerMax;

export class WorkerPool {
  readonly counters = new CounterBook();
  readonly #entries = new Map<string, Entry>();
  readonly #procs: Proc[] = [];
  /** Planes by interface; a promise while its sockets are being set up. */
  readonly #planes = new Map<string, Promise<Plane>>();
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #user: WorkerUser | null;
  /** Test hooks every worker gets in its environment (`run --test-hook`); empty outside tests. */
  readonly #testHooks: Readonly<Record<string, string>>;
  readonly #lookup: LinkLookup;
  #generation = 0;
  #logLevel: string | null = null;
  #closed = false;
  #lastSampleAt = 0;
  #lastTickAt = performance.now();
  /** What each plane was built for (known before its sockets are ready). */
  readonly #planeFacts = new Map<string, { ifindex: number; incarnation: number; mtu: number; members: number; ringMib: number | undefined }>();
  /** The ring size each interface should have (from the last setTables). */
  readonly #ringMib = new Map<string, number | undefined>();
  #waiters: (() => void)[] = [];
  /**
   * Counters of workers and rings that were dropped (fewer workers, a rebuilt plane), taken up
   * again by the same worker index or ring: `restarts`, `recycled` and `drift_repairs` stay
   * monotonic (Prometheus counters). Rings only with repairs, at most RETIRED_RINGS_MAX of them.
   */
  readonly #retiredProcs = new Map<number, { restarts: number; recycled: number }>();
  readonly #retiredDrift = new Map<string, number>();
  /** Worker exits by a stop signal not yet reported (see STOP_SIGNAL_GRACE_MS). */
  readonly #signalledExits = new Set<{ line: string; timer: ReturnType<typeof setTimeout> }>();

  constructor(opts: { user: WorkerUser | null; lookup?: LinkLookup; testHooks?: Readonly<Record<string, string>> }) {
    this.#user = opts.user;
    this.#testHooks = opts.testHooks ?? {};
    this.#lookup = opts.lookup ?? lookupLink;
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
  }

  /**
   * Sets what every interface should forward. Interfaces absent (or with no rules) get their
   * rings dropped from their workers and sockets closed; a changed worker count, ring size,
   * ifindex, incarnation (the interface recreated under the same ifindex: its packet sockets are
   * unhooked) or MTU rebuilds the interface's plane. Other interfaces' rings are not touched.
   */
  setTables(desired: Map<string, Desired>): void {
    const membersOf = (want: Desired | undefined) => (want && want.rules.length > 0 ? Math.max(1, Math.min(WORKERS_PER_INTERFACE_MAX, want.workers)) : 0);
    for (const [ifname, facts] of this.#planeFacts) {
      const want = desired.get(ifname);
      const link = want && want.rules.length ? this.#lookup(ifname) : null;
      const stale = membersOf(want) === 0 || facts.members !== membersOf(want) || facts.ringMib !== want?.ringMib || !link || link.ifindex !== facts.ifindex || (link.incarnation ?? 0) !== facts.incarnation || link.mtu !== facts.mtu;
      if (stale) void this.#closePlane(ifname);
    }
    // Rings whose plane was never built (its setup kept failing) are pruned here too.
    for (const e of [...this.#entries.values()]) {
      if (membersOf(desired.get(e.ifname)) !== e.members) {
        this.#entries.delete(entryKey(e.ifname, e.slot));
        void this.#retireEntry(e);
      }
    }
    // A ring given up on its refused sockets is tried again on a recreated interface.
    for (const e of this.#entries.values()) {
      if (e.failed !== null && (this.#lookup(e.ifname)?.ifindex ?? null) !== e.failed.ifindex) this.#unfail(e);
    }
    this.#ringMib.clear();
    for (const [ifname, want] of desired) this.#ringMib.set(ifname, want.ringMib);
    const workers = Math.max(0, ...[...desired.values()].map(membersOf));
    for (const p of this.#procs.splice(workers)) {
      this.#retiredProcs.set(p.index, { restarts: p.restarts, recycled: p.recycled });
      void this.#retireProc(p);
    }
    for (let i = 0; i < workers; i++) {
      let cpu: number | null = null;
      for (const want of desired.values()) {
        if (membersOf(want) > 0 && want.cpus?.[i] !== undefined) {
          cpu = want.cpus[i]!;
          break;
        }
      }
      const p = this.#procs[i];
      if (!p) {
        this.#procs.push(this.#newProc(i, cpu));
      } else if (p.cpu !== cpu) {
        // Pinning is applied at start: the worker is replaced (its rings stay in the supervisor).
        p.cpu = cpu;
        this.#recycle(p, `to take CPU ${cpu ?? "(none)"}`);
      }
    }
    for (const [ifname, want] of desired) {
      const members = membersOf(want);
      if (members === 0) continue;
      const split: WireRule[][] = Array.from({ length: members }, () => []);
      for (const r of want.rules) split[workerSlot(r.group, r.port, members)]!.push(r);
      for (let slot = 0; slot < members; slot++) this.#setEntry(ifname, slot, members, split[slot]!);
    }
    this.#tick();
  }

  #newProc(index: number, cpu: number | null): Proc {
    return {
      index,
      sockets: Array.from({ length: POSITIONS }, () => null),
      uses: Array.from({ length: POSITIONS }, () => null),
      closes: Array.from({ length: POSITIONS }, () => 0),
      cpu,
      handle: null,
      live: false,
      state: "starting",
      busy: false,
      restarts: this.#retiredProcs.get(index)?.restarts ?? 0,
      failures: 0,
      backoffMs: 0,
      nextStartAt: 0,
      startedAt: 0,
      lastError: null,
      retiring: false,
      recycling: null,
      recycled: this.#retiredProcs.get(index)?.recycled ?? 0,
    };
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
        // Its rules changed: a ring given up on its refused sockets is tried again.
        if (entry.failed !== null) this.#unfail(entry);
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
      position: null,
      attached: null,
      appliedHash: null,
      busy: false,
      lastPingAt: 0,
      lastError: null,
      driftRepairs: this.#retiredDrift.get(key) ?? 0,
      attachFailures: 0,
      attachRetryAt: 0,
      retiring: false,
      good: null,
      refusedHash: null,
      refusal: null,
      socketFailures: 0,
      failed: null,
    });
  }

  #unfail(e: Entry): void {
    log.info(`worker ${label(e)}: trying its ring again (its rules or its interface changed)`);
    e.failed = null;
    e.socketFailures = 0;
    e.lastError = null;
  }

  /** Drops the interface's rings from their workers and closes its sockets. */
  async #closePlane(ifname: string): Promise<void> {
    const pending = this.#planes.get(ifname);
    const facts = this.#planeFacts.get(ifname);
    this.#planes.delete(ifname);
    this.#planeFacts.delete(ifname);
    // A socket outside a fanout group (one worker on the interface) is made blank again and its
    // position reused, so removing and adding rules, or an interface deleted and recreated (a
    // ppp/tun/WireGuard reconnect), does not spend positions and never forces a recycle, which
    // pauses the worker's other interfaces. A fanout member cannot leave its group: closed, its
    // position renewed at the worker's next start.
    // And only when no worker may map the ring any more: it acknowledged the drop, or no worker
    // process holds the socket and none is starting with it. Reset before a starting worker (or
    // one being given the ring) maps it, the ring would be gone under it (EINVAL, measured: 100
    // link flaps in 10 s).
    const entries = [...this.#entries.values()].filter((e) => e.ifname === ifname);
    const keep =
      facts !== undefined &&
      facts.members === 1 &&
      entries.every((e) => {
        const p = this.#procs[e.slot];
        return e.attached !== null || (!e.busy && p !== undefined && !p.live && !p.busy);
      });
    for (const e of entries) this.#entries.delete(entryKey(e.ifname, e.slot));
    await Promise.all(entries.map((e) => this.#retireEntry(e, keep)));
    const plane = await pending?.catch(() => null);
    await Promise.all(
      (plane?.positions ?? []).map(async (position, slot) => {
        const p = this.#procs[slot];
        if (!p || p.uses[position] !== ifname) return;
        if (keep && plane!.fanoutId === 0) await this.#blankAgain(p, position);
        else this.#closePosition(p, position);
      }),
    );
  }

  /**
   * Makes the socket at a position blank again for the next interface (the position stays
   * reserved until it is), or closes it if it cannot be.
   */
  async #blankAgain(p: Proc, position: number): Promise<void> {
    const fd = p.sockets[position];
    if (fd === null || fd === undefined) return;
    const closes = p.closes[position];
    let blank = true;
    try {
      // Works on its own descriptor of the socket: ours may be closed meanwhile (the worker
      // retired) and its number given to another socket. Refused (EBUSY) while a worker still
      // maps the ring (its ring-drop failed).
      await packetResetAsync(fd);
    } catch (err) {
      log.debug(`worker ${p.index} position ${position}: not reused (${(err as Error).message})`);
      blank = false;
    }
    // Closed meanwhile (the worker retired): the position is no longer this socket's.
    if (p.closes[position] !== closes) return;
    if (blank) p.uses[position] = null;
    else this.#closePosition(p, position);
  }

  /**
   * Closes the supervisor's socket at a position. A running worker closed its own reference
   * when it dropped the ring; the position takes a new blank socket at the worker's next start.
   */
  #closePosition(p: Proc, position: number): void {
    const fd = p.sockets[position];
    p.closes[position]! += 1;
    p.sockets[position] = null;
    p.uses[position] = null;
    // Closing a packet socket waits for the stack to let go of it: off the event loop.
    if (fd !== null && fd !== undefined) fdCloseAsync(fd);
  }

  /** The plane of an interface, set up on first use: all sockets join before any worker reads. */
  #plane(ifname: string, members: number): Promise<Plane> {
    const existing = this.#planes.get(ifname);
    if (existing) return existing;
    const link = this.#lookup(ifname);
    if (!link) return Promise.reject(new Error(`interface ${ifname} does not exist`));
    const ringMib = this.#ringMib.get(ifname);
    this.#planeFacts.set(ifname, { ifindex: link.ifindex, incarnation: link.incarnation ?? 0, mtu: link.mtu, members, ringMib });
    const building = this.#buildPlane(ifname, link.ifindex, link.mtu, members, ringMib);
    this.#planes.set(ifname, building);
    // A failed setup is tried again by the next attempt.
    building.catch(() => {
      if (this.#planes.get(ifname) === building) {
        this.#planes.delete(ifname);
        this.#planeFacts.delete(ifname);
      }
    });
    return building;
  }

  /**
   * Replaces a running worker on purpose (not a failure): it stops gracefully, its rings' final
   * counts are retired, and a new process starts with the same rings (frames wait in them) and
   * fresh blank sockets at the positions closed meanwhile.
   */
  #recycle(p: Proc, why: string): void {
    if (!p.handle || p.recycling !== null || p.retiring) return;
    p.recycling = why;
    log.info(`worker ${p.index} (pid ${p.handle.pid}): replacing it ${why}`);
    void p.handle.stop();
  }

  /** A free position in worker `slot` for an interface's socket, reserved for it. */
  #reservePosition(p: Proc, ifname: string): number {
    for (let position = 0; position < POSITIONS; position++) {
      if (p.uses[position] !== null) continue;
      if (p.sockets[position] === null) {
        // A worker holds only the sockets it was started with.
        if (p.live) continue;
        p.sockets[position] = packetOpen();
      }
      p.uses[position] = ifname;
      return position;
    }
    // No blank position left, but some closed ones: a new worker process gets them renewed.
    if (p.live && (p.recycling !== null || p.handle) && p.sockets.includes(null)) {
      this.#recycle(p, "to renew its closed packet sockets");
      throw new RenewingPositions(`worker ${p.index} is being replaced to renew its closed packet sockets`);
    }
    throw new Error(`worker ${p.index} serves ${POSITIONS} rings already (closed positions are renewed at its next start)`);
  }

  async #buildPlane(ifname: string, ifindex: number, mtu: number, members: number, ringMib: number | undefined): Promise<Plane> {
    const fanoutId = members > 1 ? randomInt(1, 0xffff) : 0;
    const taken: { p: Proc; position: number }[] = [];
    let geometry: RingGeometry | null = null;
    try {
      try {
        for (let slot = 0; slot < members; slot++) {
          const p = this.#procs[slot];
          if (!p) throw new Error(`worker ${slot} is not there`);
          taken.push({ p, position: this.#reservePosition(p, ifname) });
        }
      } catch (err) {
        // Nothing set up yet: the reserved sockets are still blank and stay (no position lost).
        for (const { p, position } of taken.splice(0)) if (p.uses[position] === ifname) p.uses[position] = null;
        throw err;
      }
      // One after another: fanout slots are taken in join order.
      for (const { p, position } of taken) {
        // 0: the native default (zig/constants.zig ring_bytes_default).
        geometry = await packetSetupAsync(p.sockets[position]!, { ifindex, mtu, ringBytes: (ringMib ?? 0) * MIB, fanoutId }, ifname);
      }
    } catch (err) {
      // A socket set up half-way is not reused: closed (renewed at the worker's next start).
      for (const { p, position } of taken) if (p.uses[position] === ifname) this.#closePosition(p, position);
      throw err;
    }
    log.debug(`interface ${ifname}: ${members} socket(s) at positions ${taken.map((t) => `${t.p.index}:${t.position}`).join(" ")}, ring ${geometry!.blockCount} x ${geometry!.blockBytes} bytes${fanoutId ? `, fanout group ${fanoutId}` : ""}`);
    return { ifname, ifindex, mtu, positions: taken.map((t) => t.position), geometry: geometry!, fanoutId };
  }

  /**
   * Resolves when every ring holds its desired table, or rejects after the deadline. With
   * `failedIsSettled`, a ring that failed since it was given its table (its worker exited or
   * refused to run, its socket could not be set up) counts as settled too: start-up does not
   * wait for a worker that is being restarted with backoff.
   */
  async settled(timeoutMs = 5000, o: { failedIsSettled?: boolean } = {}): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    const failuresOf = (e: Entry) => (this.#procs[e.slot]?.failures ?? 0) + e.attachFailures;
    const failuresBefore = new Map([...this.#entries].map(([k, e]) => [k, failuresOf(e)]));
    const failed = (k: string, e: Entry) => o.failedIsSettled === true && failuresOf(e) > (failuresBefore.get(k) ?? 0);
    while (!this.#allApplied(failed)) {
      if (performance.now() > deadline) {
        const late = [...this.#entries.values()].filter((e) => e.appliedHash !== e.hash);
        // An operating problem (a worker that cannot start or bind), not a bug: exit 7, no stack.
        const why = late.map((e) => `worker ${label(e)}: ${e.lastError ?? this.#procs[e.slot]?.lastError ?? `table not applied yet (${this.#stateOf(e)})`}`);
        throw new SystemError(`workers not forwarding within ${timeoutMs / 1000} s: ${why.join("; ")}`);
      }
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  #allApplied(failed: (key: string, e: Entry) => boolean = () => false): boolean {
    // A refused table is settled too: the worker answered, and keeps its last good table.
    // So is a ring given up on its refused sockets (its rules are `error`, with the reason).
    for (const [k, e] of this.#entries) if (e.appliedHash !== e.hash && e.refusedHash !== e.hash && e.failed === null && !failed(k, e)) return false;
    return true;
  }

  /**
   * Rules a worker refused to take (its table would not fit, or it failed validation there),
   * by rule id, with the worker's reason. The worker's other rules go on forwarding.
   */
  refusedRules(): Map<string, string> {
    const out = new Map<string, string>();
    for (const e of this.#entries.values()) {
      if (e.failed !== null) {
        for (const r of e.rules) out.set(r.id, e.failed.reason);
        continue;
      }
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

  #stateOf(e: Entry): WorkerState {
    const p = this.#procs[e.slot];
    if (!p || e.retiring) return "stopping";
    // Given up (no retry is scheduled): shown as a failing ring, its reason in last_error.
    if (e.failed !== null) return "backoff";
    if (p.state === "running" && e.attached === null) return "starting";
    return p.state;
  }

  /** One row per ring: the interface, the worker serving it and that worker's health. */
  info(): WorkerInfo[] {
    const now = Date.now();
    return [...this.#entries.values()].map((e) => {
      const p = this.#procs[e.slot];
      const h = e.attached;
      return {
        interface: e.ifname,
        slot: e.slot,
        workers_on_interface: e.members,
        worker: e.slot,
        position: e.position,
        ifindex: e.position !== null ? (this.#planeFacts.get(e.ifname)?.ifindex ?? null) : null,
        pid: h?.pid ?? null,
        state: this.#stateOf(e),
        uptime_s: h && p ? Math.round((now - p.startedAt) / 100) / 10 : 0,
        restarts: p?.restarts ?? 0,
        recycled: p?.recycled ?? 0,
        consecutive_failures: p?.failures ?? 0,
        backoff_ms: p?.state === "backoff" ? p.backoffMs : 0,
        drift_repairs: e.driftRepairs,
        table_hash: e.hash,
        applied_hash: e.appliedHash,
        rules: e.rules.length,
        last_error: e.lastError ?? p?.lastError ?? null,
        ring: h && e.position !== null ? ringInfo(h.rings().find((r) => r.position === e.position)?.geometry ?? ZERO_GEOMETRY) : null,
        confinement: h?.confinement ?? null,
      };
    });
  }

  /** Worker processes: how many, and how many are in each state. */
  processes(): { total: number; starting: number; running: number; backoff: number; stopping: number } {
    const out = { total: this.#procs.length, starting: 0, running: 0, backoff: 0, stopping: 0 };
    for (const p of this.#procs) out[p.state] += 1;
    return out;
  }

  /** Applies a log level to every worker now and to workers started later. */
  async setLogLevel(level: string): Promise<void> {
    this.#logLevel = level;
    await Promise.allSettled(this.#procs.map((p) => p.handle?.setLogLevel(level)));
  }

  /** The trace memory of every live ring of an interface; valid until the event loop turns. */
  traceMemories(ifname: string): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const e of this.#entries.values()) {
      const mem = e.ifname === ifname && e.attached && e.position !== null ? e.attached.traceMemory(e.position) : null;
      if (mem) out.push(mem);
    }
    return out;
  }

  /** Reads fresh counters of every ring a running worker serves (from shared memory). */
  refresh(): void {
    for (const e of this.#entries.values()) {
      const snap = e.attached && e.position !== null ? e.attached.snapshot(e.position) : null;
      if (snap) this.counters.observe(ringKey(e, e.attached!), e.ifname, snap);
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
    // The supervisor stops too: those workers went with the service's stop, as asked.
    for (const x of this.#signalledExits) {
      clearTimeout(x.timer);
      log.info(`${x.line}: stopped with the supervisor`);
    }
    this.#signalledExits.clear();
    this.#planes.clear();
    this.#planeFacts.clear();
    await Promise.all(this.#procs.splice(0).map((p) => this.#retireProc(p)));
    this.#entries.clear();
  }

  /** A ring leaves its worker: the worker drops it, its final counts are kept. */
  async #retireEntry(e: Entry, keepSocket = false): Promise<void> {
    e.retiring = true;
    if (e.driftRepairs > 0) {
      const key = entryKey(e.ifname, e.slot);
      this.#retiredDrift.delete(key);
      this.#retiredDrift.set(key, e.driftRepairs);
      // The oldest first (a Map keeps insertion order).
      if (this.#retiredDrift.size > RETIRED_RINGS_MAX) this.#retiredDrift.delete(this.#retiredDrift.keys().next().value!);
    }
    const h = e.attached;
    e.attached = null;
    if (!h || e.position === null) return;
    const final = await h.dropRing(e.position, keepSocket);
    if (final) this.counters.retire(ringKey(e, h), e.ifname, final);
  }

  /** Stops a worker on purpose and closes its sockets, keeping its rings' final counts. */
  async #retireProc(p: Proc): Promise<void> {
    p.retiring = true;
    p.state = "stopping";
    const h = p.handle;
    if (h) {
      await h.stop();
      this.#retireRings(p, h);
      h.release();
      p.handle = null;
    }
    p.live = false;
    for (let position = 0; position < POSITIONS; position++) this.#closePosition(p, position);
  }

  /** The final counts of every ring a (stopped or dead) worker served join the retired totals. */
  #retireRings(p: Proc, h: WorkerHandle): void {
    for (const e of this.#entries.values()) {
      if (e.slot !== p.index || e.attached !== h || e.position === null) continue;
      const final = h.snapshot(e.position);
      if (final) this.counters.retire(ringKey(e, h), e.ifname, final);
      e.attached = null;
      e.appliedHash = null;
    }
  }

  /** Milliseconds since the control tick last ran (for /healthz). */
  sinceTickMs(): number {
    return performance.now() - this.#lastTickAt;
  }

  #tick(): void {
    if (this.#closed) return;
    const now = performance.now();
    this.#lastTickAt = now;
    for (const p of this.#procs) {
      // A worker being killed gets nothing more: its exit schedules the restart.
      if (p.busy || p.retiring || p.handle?.killed) continue;
      const wanted = [...this.#entries.values()].some((e) => e.slot === p.index && e.failed === null);
      if (!p.handle && wanted && now >= p.nextStartAt) this.#runProc(p, () => this.#startProc(p));
      if (p.handle && p.failures > 0 && Date.now() - p.startedAt >= HEALTHY_RESET_MS) {
        p.failures = 0;
        p.backoffMs = 0;
      }
    }
    for (const e of this.#entries.values()) {
      const p = this.#procs[e.slot];
      const h = p?.handle;
      if (!p || !h || p.busy || e.busy || e.retiring || e.failed !== null || h.killed || p.recycling !== null) continue;
      if (e.attached !== h) {
        if (now >= e.attachRetryAt) this.#runEntry(e, p, () => this.#attach(e, p, h));
      } else if (e.appliedHash !== e.hash && e.refusedHash !== e.hash) {
        this.#runEntry(e, p, () => this.#apply(e));
      } else if (now - e.lastPingAt >= PING_INTERVAL_MS) {
        this.#runEntry(e, p, () => this.#ping(e));
      }
    }
    if (now - this.#lastSampleAt >= STATS_INTERVAL_MS) {
      this.#lastSampleAt = now;
      this.collect();
    }
  }

  #runProc(p: Proc, op: () => Promise<void>): void {
    p.busy = true;
    op()
      .catch((err) => {
        this.#fail(p, (err as Error).message);
        // The worker refused one of its packet sockets at start-up: that socket is rebuilt.
        if (err instanceof WorkerError && err.position !== null) this.#socketRefused(p, err.position, err.message);
      })
      .finally(() => {
        p.busy = false;
        this.#notify();
      });
  }

  #runEntry(e: Entry, p: Proc, op: () => Promise<void>): void {
    e.busy = true;
    const handle = p.handle;
    op()
      .catch((err) => {
        // An operation that failed because its worker exited (or was replaced) meanwhile is
        // that exit, already counted once by #exited: never a second failure.
        // Likewise an operation cut short by a recycle (the worker stopping on purpose).
        if (handle && (p.handle !== handle || p.recycling !== null)) return;
        e.lastError = (err as Error).message;
        this.#fail(p, `${e.ifname}: ${(err as Error).message}`);
      })
      .finally(() => {
        e.busy = false;
        this.#notify();
      });
  }

  /** The planes of a worker's rings, each set up once; a ring whose plane fails waits for its retry. */
  async #planeFor(e: Entry): Promise<Plane | null> {
    try {
      const plane = await this.#plane(e.ifname, e.members);
      e.attachFailures = 0;
      return plane;
    } catch (err) {
      if (err instanceof RenewingPositions) {
        // Not a failure: the ring is attached once the worker is replaced.
        e.attachRetryAt = performance.now() + TICK_MS;
        return null;
      }
      e.attachFailures += 1;
      e.attachRetryAt = performance.now() + Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (e.attachFailures - 1));
      e.lastError = (err as Error).message;
      log.error(`worker ${label(e)}: ${e.lastError}`);
      return null;
    }
  }

  async #startProc(p: Proc): Promise<void> {
    p.state = "starting";
    const entries = [...this.#entries.values()].filter((e) => e.slot === p.index && !e.retiring && e.failed === null);
    const rings: RingSpec[] = [];
    const ready: Entry[] = [];
    for (const e of entries) {
      const plane = await this.#planeFor(e);
      if (!plane || e.retiring) continue;
      e.position = plane.positions[e.slot]!;
      rings.push({ position: e.position, ifname: e.ifname, ifindex: plane.ifindex, slot: e.slot, members: e.members, geometry: plane.geometry });
      ready.push(e);
    }
    if (rings.length === 0) throw new Error(entries.map((e) => e.lastError).find((m) => m) ?? "no ring to serve");
    // Positions closed while the previous worker ran get new blank sockets.
    for (let position = 0; position < POSITIONS; position++) if (p.sockets[position] === null) p.sockets[position] = packetOpen();
    p.live = true;
    let handle: WorkerHandle;
    try {
      handle = await WorkerHandle.start({
        index: p.index,
        workers: this.#procs.length,
        sockets: [...(p.sockets as number[])],
        rings,
        cpu: p.cpu,
        user: this.#user,
        testHooks: this.#testHooks,
        onExit: (code, signal) => this.#exited(p, handle, code, signal),
      });
    } catch (err) {
      p.live = false;
      throw err;
    }
    if (p.retiring) {
      await handle.stop();
      handle.release();
      p.live = false;
      return;
    }
    p.handle = handle;
    p.startedAt = Date.now();
    for (const e of ready) {
      e.attached = handle;
      e.appliedHash = null;
    }
    try {
      if (this.#logLevel) await handle.setLogLevel(this.#logLevel);
      for (const e of ready) if (e.attached === handle && !e.retiring) await this.#apply(e);
    } catch (err) {
      // The worker exited meanwhile (it is ready within a millisecond, so a kill can land here):
      // that exit is the one failure, counted by #exited; never a second one.
      if (p.handle !== handle) return;
      throw err;
    }
    p.state = "running";
    p.lastError = null;
    for (const e of ready) if (e.attached === handle) e.socketFailures = 0;
    log.debug(`worker ${p.index} (pid ${handle.pid}) serves ${ready.map((e) => label(e)).join(", ")}`);
  }

  /** Gives a running worker a ring it does not serve yet (an interface added): no restart. */
  async #attach(e: Entry, p: Proc, h: WorkerHandle): Promise<void> {
    const plane = await this.#planeFor(e);
    if (!plane || e.retiring || p.handle !== h) return;
    e.position = plane.positions[e.slot]!;
    await h.addRing({ position: e.position, ifname: e.ifname, ifindex: plane.ifindex, slot: e.slot, members: e.members, geometry: plane.geometry });
    if (e.retiring) {
      const final = await h.dropRing(e.position);
      if (final) this.counters.retire(ringKey(e, h), e.ifname, final);
      return;
    }
    e.attached = h;
    e.appliedHash = null;
    await this.#apply(e);
    e.lastError = null;
    e.socketFailures = 0;
    log.debug(`worker ${p.index} (pid ${h.pid}) now also serves ${label(e)}`);
  }

  async #apply(e: Entry): Promise<void> {
    const handle = e.attached!;
    const position = e.position!;
    const { rules, table, hash, generation } = e;
    const key = ringKey(e, handle);
    // Counters of rules leaving this ring's table restart; the book keeps what they had.
    const before = handle.snapshot(position);
    if (before) this.counters.observe(key, e.ifname, before);
    try {
      await handle.applyTable(position, table, generation, hash);
    } catch (err) {
      if (!(err instanceof WorkerRefusedError)) throw err;
      // Refused, not failed: the worker keeps the table it had and goes on forwarding it
      // (killing it would stop every rule it serves, and its successor would refuse the same
      // table). A new worker gets the last table this ring accepted.
      e.refusedHash = hash;
      e.refusal = err.message.replace(`${handle.name}: `, "");
      e.lastError = `table refused: ${e.refusal}`;
      log.error(`worker ${label(e)}: refused table ${hash} (${e.refusal}); it keeps table ${e.good?.hash ?? "(none)"}`);
      if (e.good && e.appliedHash !== e.good.hash) {
        await handle.applyTable(position, e.good.table, e.good.generation, e.good.hash);
        e.appliedHash = e.good.hash;
      }
      return;
    }
    const after = handle.snapshot(position);
    if (after) this.counters.observe(key, e.ifname, after);
    e.appliedHash = hash;
    e.good = { rules, table, hash, generation };
    e.refusedHash = null;
    e.refusal = null;
    log.debug(`worker ${label(e)}: table ${hash} applied (${rules.length} rules)`);
  }

  async #ping(e: Entry): Promise<void> {
    e.lastPingAt = performance.now();
    const pong = await e.attached!.ping(e.position!, PING_TIMEOUT_MS);
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
  #fail(p: Proc, message: string): void {
    p.lastError = message;
    log.error(`worker ${p.index}: ${message}`);
    if (p.handle) {
      p.handle.kill();
    } else if (!p.retiring) {
      this.#scheduleRestart(p);
    }
  }

  #exited(p: Proc, handle: WorkerHandle, code: number | null, signal: string | null): void {
    // A worker stopped on purpose is retired by #retireProc.
    if (p.handle !== handle || p.retiring) return;
    // Shared memory still holds its rings' exact final counts, even after SIGKILL.
    this.#retireRings(p, handle);
    handle.release();
    p.handle = null;
    p.live = false;
    if (this.#closed) return;
    if (p.recycling !== null) {
      log.info(`worker ${p.index} (pid ${handle.pid}) stopped ${p.recycling}: starting again`);
      p.recycling = null;
      p.recycled += 1;
      p.state = "starting";
      p.nextStartAt = 0;
      return;
    }
    const how = `exited (${signal ?? `code ${code}`})`;
    // The worker's own reason when it gave one (`fatal` after ready, e.g. a ring added at run
    // time whose confinement is not verified), with its exit status, wins over an earlier error.
    const own = handle.fatal === null ? null : handle.exitReason;
    p.lastError = own ?? p.lastError ?? how;
    const line = `worker ${p.index} (pid ${handle.pid}) ${own ?? how}`;
    if (own === null && signal !== null && STOP_SIGNALS.has(signal)) this.#reportSignalledExit(line);
    else log.warn(line);
    this.#scheduleRestart(p);
    // It refused a packet socket (a ring added at run time): rebuilt, never handed to the next worker.
    if (handle.fatalPosition !== null) this.#socketRefused(p, handle.fatalPosition, handle.fatal ?? own ?? how);
  }

  /**
   * A worker refused the packet socket at `position` (its `fatal` named it: e.g. its filter is
   * not locked). Handing the same socket to the next worker would fail the same way, a restart
   * loop that also stops the worker's other rings: the interface's plane is rebuilt instead (new
   * sockets, at the next start or attach), and after SOCKET_FAILURES_MAX refusals in a row the
   * ring is given up until its rules change or its interface is recreated. The reason itself was
   * logged once by the caller.
   */
  #socketRefused(p: Proc, position: number, reason: string): void {
    const ifname = p.uses[position];
    const e = ifname === null || ifname === undefined ? undefined : this.#entries.get(entryKey(ifname, p.index));
    if (!ifname || !e || e.retiring) return;
    e.socketFailures += 1;
    if (e.socketFailures >= SOCKET_FAILURES_MAX) {
      e.failed = { reason: `worker ${label(e)} refused ${e.socketFailures} packet sockets in a row: ${reason}`, ifindex: this.#planeFacts.get(ifname)?.ifindex ?? null };
      e.lastError = e.failed.reason;
      log.error(`worker ${label(e)}: gave up after ${e.socketFailures} refused packet sockets; its rules are in error until they change or the interface is recreated`);
    } else {
      log.warn(`worker ${label(e)}: rebuilding its packet socket (refused ${e.socketFailures} of at most ${SOCKET_FAILURES_MAX} times)`);
    }
    void this.#rebuildPlane(ifname);
  }

  /**
   * Forgets an interface's plane (its rings stay wanted): its rings are dropped from the workers
   * that still serve them and its sockets closed (never made blank again: one was refused), so the
   * next start or attach sets up new ones.
   */
  async #rebuildPlane(ifname: string): Promise<void> {
    this.#planes.delete(ifname);
    this.#planeFacts.delete(ifname);
    // Taken now: a new plane reserves other positions while these are still in use.
    const old: { q: Proc; position: number; fd: number | null }[] = [];
    for (const q of this.#procs) for (let position = 0; position < POSITIONS; position++) if (q.uses[position] === ifname) old.push({ q, position, fd: q.sockets[position] ?? null });
    const close = (x: (typeof old)[number]) => {
      if (x.q.uses[x.position] === ifname && x.q.sockets[x.position] === x.fd) this.#closePosition(x.q, x.position);
    };
    // A worker without a process holds none of them: closed at once, before its next start.
    for (const x of old) if (!x.q.live) close(x);
    const entries = [...this.#entries.values()].filter((e) => e.ifname === ifname);
    await Promise.all(
      entries.map(async (e) => {
        const h = e.attached;
        const position = e.position;
        e.attached = null;
        e.appliedHash = null;
        e.position = null;
        if (!h || position === null) return;
        const final = await h.dropRing(position);
        if (final) this.counters.retire(ringKey(e, h), e.ifname, final);
      }),
    );
    for (const x of old) close(x);
  }

  /** A warning unless the pool is closed within the grace (then the exit was the service's stop). */
  #reportSignalledExit(line: string): void {
    const x = {
      line,
      timer: setTimeout(() => {
        this.#signalledExits.delete(x);
        log.warn(line);
      }, STOP_SIGNAL_GRACE_MS),
    };
    this.#signalledExits.add(x);
  }

  #scheduleRestart(p: Proc): void {
    p.failures += 1;
    p.restarts += 1;
    p.backoffMs = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (p.failures - 1));
    p.nextStartAt = performance.now() + p.backoffMs;
    p.state = "backoff";
    log.info(`worker ${p.index}: restart in ${p.backoffMs} ms (failure ${p.failures})`);
  }
}

/** No blank position in a worker: it is being replaced to renew its closed ones (not a failure). */
class RenewingPositions extends Error {}

const ZERO_GEOMETRY: RingGeometry = { blockBytes: 0, blockCount: 0, frameBytes: 0, frameCount: 0 };

function label(e: Entry): string {
  return e.members > 1 ? `${e.ifname}/${e.slot}` : e.ifname;
}

/** Counter book key of a ring in one worker process. */
function ringKey(e: Entry, h: WorkerHandle): string {
  return `${e.ifname}#${e.slot}/${h.pid}`;
}
