// Counter totals across worker lifetimes: the latest snapshot of each live worker plus what
// retired workers had counted, so a restart never loses counts. Also the per-second rates.
import type { DataplaneSnapshot, OutputCounters, RuleCounters } from "../stats/decode.ts";
import { WORKER_COUNTERS, PARSE_DROPS, RULE_DROPS, type WorkerCounter, type ParseDrop, type RuleDrop } from "../native/abi.ts";

export interface Totals {
  rules: Map<string, { packets: number; bytes: number; drops: Record<RuleDrop, number> }>;
  outputs: Map<string, { packets: number; bytes: number; sendErrors: Record<string, number> }>;
  /** Rules whose input join (or unicast port hold) fails now, with the errno (live workers only). */
  inputErrnos: Map<string, number>;
  /** Worker-level counters summed per interface. */
  interfaces: Map<string, { worker: Record<WorkerCounter, number>; parseDrops: Record<ParseDrop, number> }>;
}

function emptyIface() {
  return {
    worker: Object.fromEntries(WORKER_COUNTERS.map((n) => [n, 0])) as Record<WorkerCounter, number>,
    parseDrops: Object.fromEntries(PARSE_DROPS.map((n) => [n, 0])) as Record<ParseDrop, number>,
  };
}

function addRule(into: Totals["rules"], r: RuleCounters): void {
  const t = into.get(r.id) ?? { packets: 0, bytes: 0, drops: Object.fromEntries(RULE_DROPS.map((n) => [n, 0])) as Record<RuleDrop, number> };
  t.packets += r.packets;
  t.bytes += r.bytes;
  for (const n of RULE_DROPS) t.drops[n] += r.drops?.[n] ?? 0;
  into.set(r.id, t);
}

function sumDrops(r: RuleCounters): number {
  return RULE_DROPS.reduce((n, k) => n + (r.drops?.[k] ?? 0), 0);
}

function addOutput(into: Totals["outputs"], o: OutputCounters): void {
  const t = into.get(o.id) ?? { packets: 0, bytes: 0, sendErrors: {} };
  t.packets += o.packets;
  t.bytes += o.bytes;
  for (const [k, n] of Object.entries(o.sendErrors)) t.sendErrors[k] = (t.sendErrors[k] ?? 0) + n;
  into.set(o.id, t);
}

function addSnapshot(into: Totals, iface: string, s: DataplaneSnapshot): void {
  for (const r of s.rules) addRule(into.rules, r);
  for (const o of s.outputs) addOutput(into.outputs, o);
  const i = into.interfaces.get(iface) ?? emptyIface();
  for (const n of WORKER_COUNTERS) i.worker[n] += s.worker[n];
  for (const n of PARSE_DROPS) i.parseDrops[n] += s.parseDrops[n];
  into.interfaces.set(iface, i);
}

function sumErrors(o: OutputCounters): number {
  return Object.values(o.sendErrors).reduce((n, v) => n + v, 0);
}

export interface Rates {
  rules: Map<string, { pps: number; bps: number }>;
  outputs: Map<string, { pps: number; bps: number }>;
}

/**
 * How long the retired totals of an interface no rule reads from any more (and no worker
 * serves) are kept, so its series' last values reach a scrape before they leave /metrics.
 */
export const GONE_INTERFACE_KEEP_MS = 10 * 60_000;

/** What the book must keep counting: ids and input interfaces of the rules there are now. */
export interface Keep {
  rules: ReadonlySet<string>;
  outputs: ReadonlySet<string>;
  interfaces: ReadonlySet<string>;
}

export class CounterBook {
  /** Latest snapshot per live worker, keyed by worker key (interface/pid). */
  readonly #live = new Map<string, { iface: string; snap: DataplaneSnapshot }>();
  readonly #retired: Totals = { rules: new Map(), outputs: new Map(), interfaces: new Map(), inputErrnos: new Map() };
  #previous: { at: number; totals: Totals } | null = null;
  #rates: Rates = { rules: new Map(), outputs: new Map() };
  /** Interfaces with retired totals that no rule reads from, since when (performance.now() ms). */
  readonly #goneSince = new Map<string, number>();

  /**
   * The latest counters of a live worker. A worker counts per rule and output id while the id
   * is in its table: when an id leaves the table (rule removed, moved to another worker, or a
   * drift repair), or its count restarts lower, what it had counted is kept as retired.
   */
  observe(key: string, iface: string, snap: DataplaneSnapshot): void {
    const prev = this.#live.get(key)?.snap;
    if (prev) {
      const rules = new Map(snap.rules.map((r) => [r.id, r]));
      for (const r of prev.rules) {
        const now = rules.get(r.id);
        if (!now || now.packets < r.packets || now.bytes < r.bytes || sumDrops(now) < sumDrops(r)) addRule(this.#retired.rules, r);
      }
      const outputs = new Map(snap.outputs.map((o) => [o.id, o]));
      for (const o of prev.outputs) {
        const now = outputs.get(o.id);
        if (!now || now.packets < o.packets || now.bytes < o.bytes || sumErrors(now) < sumErrors(o)) addOutput(this.#retired.outputs, o);
      }
    }
    this.#live.set(key, { iface, snap });
  }

  /** A worker is gone: its last counts join the retired totals. */
  retire(key: string, iface: string, final: DataplaneSnapshot): void {
    addSnapshot(this.#retired, iface, final);
    this.#live.delete(key);
  }

  /**
   * Forgets what nothing shows again, so the book and /metrics stay bounded under rule churn:
   * retired counts of rule and output ids no rule has now (ids are never reused, and a removed
   * rule's series leave /metrics with the rule), and an interface's retired totals once no rule
   * has read from it for GONE_INTERFACE_KEEP_MS and no worker serves it. Called about once a
   * second: a worker's final counts retired after its rule was removed go at the next call.
   */
  prune(keep: Keep, now = performance.now()): void {
    for (const id of this.#retired.rules.keys()) if (!keep.rules.has(id)) this.#retired.rules.delete(id);
    for (const id of this.#retired.outputs.keys()) if (!keep.outputs.has(id)) this.#retired.outputs.delete(id);
    const served = new Set([...this.#live.values()].map((l) => l.iface));
    for (const iface of this.#goneSince.keys()) if (!this.#retired.interfaces.has(iface)) this.#goneSince.delete(iface);
    for (const iface of this.#retired.interfaces.keys()) {
      if (keep.interfaces.has(iface) || served.has(iface)) {
        this.#goneSince.delete(iface);
        continue;
      }
      const since = this.#goneSince.get(iface);
      if (since === undefined) this.#goneSince.set(iface, now);
      else if (now - since >= GONE_INTERFACE_KEEP_MS) {
        this.#retired.interfaces.delete(iface);
        this.#goneSince.delete(iface);
      }
    }
  }

  totals(): Totals {
    const t: Totals = { rules: new Map(), outputs: new Map(), interfaces: new Map(), inputErrnos: new Map() };
    for (const [id, r] of this.#retired.rules) t.rules.set(id, { ...r, drops: { ...r.drops } });
    for (const [id, o] of this.#retired.outputs) t.outputs.set(id, { ...o, sendErrors: { ...o.sendErrors } });
    for (const [k, i] of this.#retired.interfaces) t.interfaces.set(k, { worker: { ...i.worker }, parseDrops: { ...i.parseDrops } });
    for (const { iface, snap } of this.#live.values()) {
      addSnapshot(t, iface, snap);
      for (const r of snap.rules) if (r.inputErrno) t.inputErrnos.set(r.id, r.inputErrno);
    }
    return t;
  }

  /** Call about once a second after observing every worker: updates the rates. */
  sample(now = performance.now()): void {
    const totals = this.totals();
    if (this.#previous) {
      const dt = (now - this.#previous.at) / 1000;
      if (dt > 0) {
        const rate = (cur: Map<string, { packets: number; bytes: number }>, prev: Map<string, { packets: number; bytes: number }>) => {
          const out = new Map<string, { pps: number; bps: number }>();
          for (const [id, c] of cur) {
            const p = prev.get(id) ?? { packets: 0, bytes: 0 };
            out.set(id, { pps: Math.max(0, (c.packets - p.packets) / dt), bps: Math.max(0, ((c.bytes - p.bytes) * 8) / dt) });
          }
          return out;
        };
        this.#rates = { rules: rate(totals.rules, this.#previous.totals.rules), outputs: rate(totals.outputs, this.#previous.totals.outputs) };
      }
    }
    this.#previous = { at: now, totals };
  }

  rates(): Rates {
    return this.#rates;
  }
}
