// The worker manager: one worker per input interface, each holding the complete table of its
// interface's rules. A control tick (one interval, created once) starts workers, applies
// tables, pings with a deadline, repairs drift and restarts failed workers with escalating
// backoff. Nothing here blocks the event loop: the control socket stays responsive.
import { logger } from "../log.ts";
import { tableHash } from "../rules/wire.ts";
import type { WireRule } from "../worker/messages.ts";
import { CounterBook } from "./counters.ts";
import { lookupLink } from "./links.ts";
import { WorkerHandle } from "./worker-handle.ts";
import type { WorkerUser } from "./user.ts";

const log = logger("workers");

export const TICK_MS = 100;
export const PING_INTERVAL_MS = 1000;
export const PING_TIMEOUT_MS = 1000;
export const STATS_INTERVAL_MS = 1000;
export const BACKOFF_MIN_MS = 250;
export const BACKOFF_MAX_MS = 16_000;
/** A worker that stayed up this long has its failure streak forgiven. */
export const HEALTHY_RESET_MS = 30_000;

export type WorkerState = "starting" | "running" | "backoff" | "stopping";

interface Entry {
  ifname: string;
  rules: WireRule[];
  hash: string;
  generation: number;
  handle: WorkerHandle | null;
  state: WorkerState;
  appliedHash: string | null;
  /** One operation at a time per worker (start, apply, ping, stats). */
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
}

export interface WorkerInfo {
  interface: string;
  pid: number | null;
  state: WorkerState;
  uptime_s: number;
  restarts: number;
  consecutive_failures: number;
  backoff_ms: number;
  drift_repairs: number;
  table_hash: string;
  applied_hash: string | null;
  rules: number;
  last_error: string | null;
  ring: Record<string, number>;
}

export class Dataplanes {
  readonly counters = new CounterBook();
  readonly #entries = new Map<string, Entry>();
  readonly #timer: ReturnType<typeof setInterval>;
  #generation = 0;
  #logLevel: string | null = null;
  #closed = false;
  #waiters: (() => void)[] = [];

  readonly #user: WorkerUser | null;

  constructor(opts: { user: WorkerUser | null }) {
    this.#user = opts.user;
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
  }

  /** Sets the desired tables (interfaces absent from the map get their worker stopped). */
  setTables(tables: Map<string, WireRule[]>): void {
    for (const [ifname, entry] of this.#entries) {
      if (!tables.has(ifname) || tables.get(ifname)!.length === 0) {
        this.#entries.delete(ifname);
        void this.#retire(entry);
      }
    }
    for (const [ifname, rules] of tables) {
      if (rules.length === 0) continue;
      const hash = tableHash(rules);
      const entry = this.#entries.get(ifname);
      if (entry) {
        if (entry.hash !== hash) {
          entry.rules = rules;
          entry.hash = hash;
          entry.generation = ++this.#generation;
        }
        continue;
      }
      this.#entries.set(ifname, {
        ifname,
        rules,
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
      });
    }
    this.#tick();
  }

  /** Resolves when every worker holds its desired table, or rejects after the deadline. */
  async settled(timeoutMs = 5000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (!this.#allApplied()) {
      if (performance.now() > deadline) {
        const late = [...this.#entries.values()].filter((e) => e.appliedHash !== e.hash);
        throw new Error(late.map((e) => `worker ${e.ifname}: ${e.lastError ?? `table not applied yet (${e.state})`}`).join("; "));
      }
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  #allApplied(): boolean {
    for (const e of this.#entries.values()) if (e.appliedHash !== e.hash) return false;
    return true;
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
      ring: e.handle?.ring ?? {},
    }));
  }

  /** Applies a log level to every worker now and to workers started later. */
  async setLogLevel(level: string): Promise<void> {
    this.#logLevel = level;
    await Promise.allSettled([...this.#entries.values()].map((e) => e.handle?.setLogLevel(level)));
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
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    await Promise.all(entries.map((e) => this.#retire(e)));
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

  #tick(): void {
    if (this.#closed) return;
    const now = performance.now();
    for (const e of this.#entries.values()) {
      if (e.busy || e.retiring) continue;
      if (!e.handle) {
        if (now >= e.nextStartAt) this.#run(e, () => this.#start(e));
      } else if (e.appliedHash !== e.hash) {
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
  #lastSampleAt = 0;

  #run(e: Entry, op: () => Promise<void>): void {
    e.busy = true;
    op()
      .catch((err) => this.#fail(e, (err as Error).message))
      .finally(() => {
        e.busy = false;
        this.#notify();
      });
  }

  async #start(e: Entry): Promise<void> {
    const link = lookupLink(e.ifname);
    if (!link) throw new Error(`interface ${e.ifname} does not exist`);
    e.state = "starting";
    const handle = await WorkerHandle.start({
      ifname: e.ifname,
      link,
      user: this.#user,
      onExit: (code, signal) => this.#exited(e, handle, code, signal),
    });
    if (e.retiring) {
      await handle.stop();
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
    const { rules, hash, generation } = e;
    await handle.applyTable(rules, generation, hash);
    e.appliedHash = hash;
    log.debug(`worker ${e.ifname}: table ${hash} applied (${rules.length} rules)`);
  }

  async #ping(e: Entry): Promise<void> {
    e.lastPingAt = performance.now();
    const pong = await e.handle!.ping(PING_TIMEOUT_MS);
    if (pong.hash !== e.appliedHash) {
      e.driftRepairs += 1;
      log.warn(`worker ${e.ifname}: holds table ${pong.hash}, expected ${e.appliedHash}: resyncing`);
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
    log.error(`worker ${e.ifname}: ${message}`);
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
    if (e.retiring || this.#closed) return;
    e.lastError = e.lastError ?? `exited (${signal ?? `code ${code}`})`;
    log.warn(`worker ${e.ifname} (pid ${handle.pid}) exited (${signal ?? `code ${code}`})`);
    this.#scheduleRestart(e);
  }

  #scheduleRestart(e: Entry): void {
    e.failures += 1;
    e.restarts += 1;
    e.backoffMs = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (e.failures - 1));
    e.nextStartAt = performance.now() + e.backoffMs;
    e.state = "backoff";
    log.info(`worker ${e.ifname}: restart in ${e.backoffMs} ms (failure ${e.failures})`);
  }
}

function workerKey(e: Entry): string {
  return `${e.ifname}/${e.handle?.pid ?? 0}`;
}
