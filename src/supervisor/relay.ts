// The one-shot relay behind `mcrelay forward`: the daemon's worker manager, with a control
// socket only when asked (read-only: ping, version, list, stats, workers, log-level). Rules are
// resolved once; reports are built from the same counter totals the daemon's `stats` uses.
import { logger } from "../log.ts";
import { formatEndpoint } from "../base/endpoint.ts";
import { formatInput, resolveRule, type Rule } from "../rules/rule.ts";
import { WorkerPool, type Desired, type WorkerInfo } from "./worker-pool.ts";
import { lookupLink } from "./links.ts";
import type { WorkerUser } from "./user.ts";
import { buildRuleReports, buildInterfaceReports, type RuleReport, type InterfaceReport } from "./report.ts";
import { ControlError, ControlServer } from "../control/server.ts";
import type { Request } from "../control/protocol.ts";
import { getLogLevel, setLogLevel, type LogLevelName } from "../log.ts";
import { PROTOCOL_VERSION, VERSION } from "../version.ts";
import { Tracer } from "./tracer.ts";

export { lookupLink };

const log = logger("relay");

export interface RelayReport {
  rules: RuleReport[];
  workers: (InterfaceReport & { pid: number | null; pids: (number | null)[]; restarts: number; ring: Record<string, number> })[];
}

export class Relay {
  readonly #rules: Rule[] = [];
  readonly #pool: WorkerPool;
  readonly #pending = new Map<bigint, string[]>();
  readonly #pendingOutputs = new Map<bigint, Map<bigint, string>>();
  #workers: WorkerInfo[] = [];
  #server: ControlServer | null = null;

  readonly #workersPerInterface: number;
  readonly #tracer: Tracer;
  readonly #ringMib: number | undefined;

  constructor(opts: { user: WorkerUser | null; workers?: number; ringMib?: number }) {
    this.#pool = new WorkerPool(opts);
    this.#workersPerInterface = opts.workers ?? 1;
    this.#tracer = new Tracer({
      find: (n) => this.#rules.find((r) => r.name === n || r.id.toString() === n),
      memories: (iface) => this.#pool.traceMemories(iface),
    });
    this.#ringMib = opts.ringMib;
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
      const entry = tables.get(rule.input.iface) ?? { rules: [], workers: this.#workersPerInterface, ringMib: this.#ringMib };
      entry.rules.push(resolved.wire);
      tables.set(rule.input.iface, entry);
    }
    this.#pool.setTables(tables);
    await this.#pool.settled(10_000);
    this.#workers = this.#pool.info();
    for (const rule of rules) {
      log.info(`forwarding ${rule.name}: ${formatInput(rule)} -> ${rule.outputs.map((o) => formatEndpoint(o.to)).join(", ")}`);
    }
  }

  /** Serves the read-only part of the control protocol on `path` while forwarding. */
  async serve(path: string): Promise<void> {
    this.#server = await ControlServer.start(path, (req) => this.#handle(req));
  }

  async #handle(req: Request): Promise<unknown> {
    switch (req.cmd) {
      case "hello":
      case "version":
        return { daemon: VERSION, protocol: PROTOCOL_VERSION, bun: Bun.version, mode: "forward" };
      case "ping":
        return { pong: true, rules: this.#rules.length, workers: this.#pool.info().length };
      case "list":
        return { rules: this.#ruleReports().map((r) => ({ name: r.name, id: r.id, origin: r.origin, input: r.input, source: null, outputs: r.outputs.map((o) => ({ to: o.to, ttl: o.ttl, dscp: o.dscp, gso: o.gso, state: o.state, reason: o.reason })), state: r.state, reasons: r.pending_reasons })) };
      case "stats": {
        this.#pool.refresh();
        const rules = this.#ruleReports().filter((r) => !req.args?.rule || r.name === req.args.rule || r.id === req.args.rule);
        if (req.args?.rule && rules.length === 0) throw new ControlError("not_found", `no rule named or numbered '${req.args.rule}'`);
        return { rules, interfaces: buildInterfaceReports(this.#pool.counters.totals()), workers: this.#pool.info() };
      }
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

  #ruleReports(): RuleReport[] {
    return buildRuleReports(
      this.#rules.map((rule) => ({ rule, pending: this.#pending.get(rule.id) ?? [], pendingOutputs: this.#pendingOutputs.get(rule.id), origin: "cli" })),
      this.#pool.counters.totals(),
      this.#pool.counters.rates(),
    );
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
    const rules = this.#ruleReports();
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
