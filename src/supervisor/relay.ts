// The one-shot relay behind `mcrelay forward`: the daemon's worker manager without a control
// socket. Rules are resolved once; the report is built from the same counter totals the
// daemon's `stats` uses.
import { logger } from "../log.ts";
import { formatEndpoint } from "../config/endpoint.ts";
import { resolveRule, type Rule } from "../rules/rule.ts";
import { Dataplanes, type Desired, type WorkerInfo } from "./dataplanes.ts";
import { lookupLink } from "./links.ts";
import type { WorkerUser } from "./user.ts";
import { buildRuleReports, buildInterfaceReports, type RuleReport, type InterfaceReport } from "./report.ts";

export { lookupLink };

const log = logger("relay");

export interface RelayReport {
  rules: RuleReport[];
  workers: (InterfaceReport & { pid: number | null; pids: (number | null)[]; restarts: number; ring: Record<string, number> })[];
}

export class Relay {
  readonly #rules: Rule[] = [];
  readonly #dataplanes: Dataplanes;
  readonly #pending = new Map<bigint, string[]>();
  readonly #pendingOutputs = new Map<bigint, Map<bigint, string>>();
  #workers: WorkerInfo[] = [];

  readonly #workersPerInterface: number;

  constructor(opts: { user: WorkerUser | null; workers?: number }) {
    this.#dataplanes = new Dataplanes(opts);
    this.#workersPerInterface = opts.workers ?? 1;
  }

  /** Starts workers for the rules' input interfaces; resolves once every table is applied. */
  async start(rules: Rule[]): Promise<void> {
    this.#rules.push(...rules);
    const tables = new Map<string, Desired>();
    for (const rule of rules) {
      const resolved = resolveRule(rule, lookupLink);
      this.#pending.set(rule.id, resolved.pending);
      this.#pendingOutputs.set(rule.id, resolved.pendingOutputs);
      if (!resolved.wire) {
        log.warn(`rule ${rule.name} is pending: ${resolved.pending.join("; ")}`);
        continue;
      }
      const entry = tables.get(rule.input.iface) ?? { rules: [], workers: this.#workersPerInterface };
      entry.rules.push(resolved.wire);
      tables.set(rule.input.iface, entry);
    }
    this.#dataplanes.setTables(tables);
    await this.#dataplanes.settled(10_000);
    this.#workers = this.#dataplanes.info();
    for (const rule of rules) {
      log.info(`forwarding ${rule.name}: ${formatEndpoint(rule.input)} -> ${rule.outputs.map((o) => formatEndpoint(o.to)).join(", ")}`);
    }
  }

  /** Stops every worker and returns the final counters. */
  async stop(): Promise<RelayReport> {
    await this.#dataplanes.collect();
    const live = this.#dataplanes.info();
    if (live.length) this.#workers = live;
    await this.#dataplanes.close();
    const totals = this.#dataplanes.counters.totals();
    const rules = buildRuleReports(
      this.#rules.map((rule) => ({ rule, pending: this.#pending.get(rule.id) ?? [], pendingOutputs: this.#pendingOutputs.get(rule.id), origin: "cli" })),
      totals,
      this.#dataplanes.counters.rates(),
    );
    const workers = buildInterfaceReports(totals).map((i) => {
      const ws = this.#workers.filter((x) => x.interface === i.interface);
      return {
        ...i,
        pid: ws[0]?.pid ?? null,
        pids: ws.map((w) => w.pid),
        restarts: ws.reduce((n, w) => n + w.restarts, 0),
        ring: ws[0]?.ring ?? {},
      };
    });
    return { rules, workers };
  }
}
