// The one-shot relay behind `mcrelay forward`: the daemon's worker manager, with a control
// socket only when asked (read-only: ping, version, list, stats, workers, log-level). Rules are
// resolved once; reports are built from the same counter totals the daemon's `stats` uses.
import { logger } from "../log.ts";
import { formatEndpoint } from "../base/endpoint.ts";
import { formatInput, type Rule } from "../rules/rule.ts";
import { WorkerPool, type WorkerInfo } from "./worker-pool.ts";
import { planCapacity, planTables, type PlanOptions } from "./planner.ts";
import { RuleStore } from "./rule-store.ts";
import { RuleViews } from "./views.ts";
import { lookupLink } from "../rules/links.ts";
import type { WorkerUser } from "./user.ts";
import { buildInterfaceReports, type RuleReport, type InterfaceReport } from "./report.ts";
import { ControlError, ControlServer } from "../control/server.ts";
import type { Command, Request } from "../control/protocol.ts";
import type { ResultOf, RingInfo } from "../control/responses.ts";
import { buildStatus } from "./status.ts";
import { getLogLevel, setLogLevel, type LogLevelName } from "../log.ts";
import { PROTOCOL_VERSION, VERSION } from "../version.ts";
import { Tracer } from "./tracer.ts";

export { lookupLink };

const log = logger("relay");

export interface RelayReport {
  rules: RuleReport[];
  workers: (InterfaceReport & { pid: number | null; pids: (number | null)[]; restarts: number; ring: RingInfo | null })[];
}

export class Relay {
  readonly #pool: WorkerPool;
  /** The rules from the command line: held, never persisted. */
  readonly #store: RuleStore;
  readonly #views: RuleViews;
  #workers: WorkerInfo[] = [];
  #server: ControlServer | null = null;
  readonly #plan: PlanOptions;
  readonly #tracer: Tracer;
  readonly #startedAt = new Date();

  constructor(opts: { user: WorkerUser | null; workers?: number; ringMib?: number }) {
    this.#pool = new WorkerPool(opts);
    this.#plan = { lookup: lookupLink, workersFor: () => opts.workers ?? 1, ringMibFor: () => opts.ringMib };
    this.#store = new RuleStore({ state: null, capacity: (rules) => planCapacity(rules, this.#plan) });
    this.#views = new RuleViews(this.#store, this.#pool);
    this.#tracer = new Tracer({ find: (n) => this.#store.find(n)?.rule, memories: (iface) => this.#pool.traceMemories(iface) });
  }

  /** Starts workers for the rules' input interfaces; resolves once every table is applied. */
  async start(rules: Rule[]): Promise<void> {
    this.#store.hold(rules, "cli");
    const plan = planTables(this.#store.rules(), this.#plan);
    for (const stored of this.#store.all()) {
      this.#store.resolve(stored, plan.resolutions.get(stored.rule.id)!);
      if (stored.pending.length) log.warn(`rule ${stored.rule.name} is pending: ${stored.pending.join("; ")}`);
    }
    this.#pool.setTables(plan.tables);
    await this.#pool.settled(10_000);
    this.#workers = this.#pool.info();
    for (const rule of rules) {
      log.info(`forwarding ${rule.name}: ${formatInput(rule)} -> ${rule.outputs.map((o) => formatEndpoint(o.to)).join(", ")}`);
    }
  }

  /**
   * Serves the read-only part of the control protocol on `path` while forwarding. The socket
   * (mode 0660) is open to forward's group, so the daemon's policy applies: its own user and
   * root may trace and set the log level, members of its group may only read.
   */
  async serve(path: string): Promise<void> {
    const access = { ownUid: process.geteuid?.() ?? 0, readGid: process.getegid?.() ?? 0 };
    this.#server = await ControlServer.start(path, (req) => this.#handle(req), { access });
  }

  async #handle(req: Request): Promise<ResultOf<Command>> {
    switch (req.cmd) {
      case "hello":
        return { daemon: VERSION, protocol: PROTOCOL_VERSION, mode: "forward" };
      case "version":
        return { daemon: VERSION, protocol: PROTOCOL_VERSION, bun: Bun.version, mode: "forward" };
      case "ping":
        return { pong: true, rules: this.#store.size, workers: this.#pool.processes().total };
      case "status":
        return buildStatus({ mode: "forward", startedAt: this.#startedAt, configFile: null, rules: this.#views.list(), workers: this.#pool.info(), lookup: lookupLink });
      case "list":
        return { rules: this.#views.list() };
      case "stats":
        return this.#views.stats(req.args?.rule);
      case "workers":
        return { workers: this.#pool.info() };
      case "trace-start":
        return this.#tracer.start(req.args.rule, req.args.capture ?? false, req.args.all_unmatched ?? false);
      case "trace-read":
        return this.#tracer.read(req.args.session);
      case "trace-stop":
        return this.#tracer.stop(req.args.session);
      case "log-level":
        if (req.args?.level) {
          setLogLevel(req.args.level as LogLevelName);
          await this.#pool.setLogLevel(req.args.level);
        }
        return { level: getLogLevel() };
      default:
        throw new ControlError("bad_request", `'${req.cmd}' needs the daemon (mcrelay run); this is a one-shot 'mcrelay forward'`);
    }
  }

  /** Stops every worker and returns the final counters. */
  async stop(): Promise<RelayReport> {
    this.#server?.stop();
    this.#server = null;
    this.#tracer.close();
    await this.#pool.collect();
    const live = this.#pool.info();
    if (live.length) this.#workers = live;
    await this.#pool.close();
    const totals = this.#pool.counters.totals();
    const { rules } = this.#views.stats();
    const workers = buildInterfaceReports(totals).map((i) => {
      const ws = this.#workers.filter((x) => x.interface === i.interface);
      return {
        ...i,
        pid: ws[0]?.pid ?? null,
        pids: ws.map((w) => w.pid),
        restarts: ws.reduce((n, w) => n + w.restarts, 0),
        ring: ws[0]?.ring ?? null,
      };
    });
    return { rules, workers };
  }
}
