// The one-shot relay behind `mcrelay forward`: the daemon's worker manager, with a control
// socket only when asked (read-only: ping, version, list, stats, workers, log-level). Rules are
// resolved against the daemon's link monitor and resolved again on every change of an interface
// (deleted, recreated, down, an address), as the daemon reconciles; reports are built from the
// same counter totals the daemon's `stats` uses.
import { logger } from "../log.ts";
import { formatEndpoint } from "../base/endpoint.ts";
import { formatInput, type Rule } from "../rules/rule.ts";
import { WorkerPool, type WorkerInfo } from "./worker-pool.ts";
import { planCapacity, planTables, type PlanOptions } from "./planner.ts";
import { RuleStore } from "./rule-store.ts";
import { RuleViews } from "./views.ts";
import { lookupLink } from "../rules/links.ts";
import { LinkMonitor } from "./link-monitor.ts";
import type { LinkEvent } from "../control/events.ts";
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

/** How long start-up waits for the link monitor's first complete table (as the daemon). */
const LINKS_READY_MS = 5000;

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
  #links: LinkMonitor | null = null;
  /** Set by stop: a start still waiting (stopped during start-up) applies nothing more. */
  #stopped = false;
  /** What went wrong with the rules' interfaces during the run, for the report and exit code. */
  readonly #troubles: string[] = [];

  constructor(opts: { user: WorkerUser | null; workers?: number; ringMib?: number }) {
    this.#pool = new WorkerPool(opts);
    // Until the link monitor has its table (start), interfaces are looked up directly.
    this.#plan = { lookup: (name) => (this.#links ? this.#links.lookup(name) : lookupLink(name)), workersFor: () => opts.workers ?? 1, ringMibFor: () => opts.ringMib };
    this.#store = new RuleStore({ state: null, capacity: (rules) => planCapacity(rules, this.#plan) });
    this.#views = new RuleViews(this.#store, this.#pool);
    this.#tracer = new Tracer({ find: (n) => this.#store.find(n)?.rule, memories: (iface) => this.#pool.traceMemories(iface) });
  }

  /** Starts workers for the rules' input interfaces; resolves once every table is applied. */
  async start(rules: Rule[]): Promise<void> {
    this.#store.hold(rules, "cli");
    await this.#watchLinks();
    if (this.#stopped) return;
    this.#reconcile();
    await this.#pool.settled(10_000);
    if (this.#stopped) return;
    this.#workers = this.#pool.info();
    for (const rule of rules) {
      log.info(`forwarding ${rule.name}: ${formatInput(rule)} -> ${rule.outputs.map((o) => formatEndpoint(o.to)).join(", ")}`);
    }
  }

  /**
   * Watches the interfaces with the daemon's link monitor: an input or output deleted, recreated
   * (a new ifindex: sockets bound to the old one are dead), down or readdressed re-plans every
   * table, so forwarding resumes when the interface is back instead of failing silently.
   */
  async #watchLinks(): Promise<void> {
    const links = new LinkMonitor();
    this.#links = links;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      links.ready,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`netlink: no answer to the initial dump within ${LINKS_READY_MS / 1000} s`)), LINKS_READY_MS);
        // A stop during start-up closes the monitor (ready never comes): this must not hold the process.
        timer.unref();
      }),
    ]).finally(() => clearTimeout(timer));
    links.onChange((events) => {
      if (this.#stopped) return;
      for (const e of events) this.#noteLink(e);
      this.#reconcile();
    });
  }

  /** Says what happened to an interface a rule uses; an input that vanished is remembered. */
  #noteLink(e: LinkEvent): void {
    if (e.type === "resync" || e.type === "mtu-changed" || e.type === "address-added" || e.type === "address-removed") return;
    const rules = this.#store.rules();
    const input = rules.some((r) => r.input.iface === e.interface);
    const output = rules.some((r) => r.outputs.some((o) => o.to.iface === e.interface));
    if (!input && !output) return;
    const role = input ? "input" : "output";
    const gone = e.type === "link-removed" || e.type === "link-recreated";
    if (gone) {
      log.warn(`${role} interface ${e.interface} went away`);
      if (input) this.#troubles.push(`input interface ${e.interface} went away during the run`);
    }
    if (e.type === "link-added" || e.type === "link-recreated") log.info(`${role} interface ${e.interface} is back (index ${e.ifindex})`);
    if (e.type === "link-down") log.warn(`${role} interface ${e.interface} is down`);
    if (e.type === "link-up") log.info(`${role} interface ${e.interface} is up`);
  }

  /** Resolves the rules against the interfaces as they are now and gives each worker its table. */
  #reconcile(): void {
    const plan = planTables(this.#store.rules(), this.#plan);
    for (const stored of this.#store.all()) {
      const changed = this.#store.resolve(stored, plan.resolutions.get(stored.rule.id)!);
      if (!changed) continue;
      if (stored.pending.length) log.warn(`rule ${stored.rule.name} is pending: ${stored.pending.join("; ")}`);
      else if (stored.pendingOutputs.size) log.warn(`rule ${stored.rule.name}: outputs pending: ${[...stored.pendingOutputs.values()].join("; ")}`);
      else log.info(`rule ${stored.rule.name} is active`);
    }
    this.#pool.setTables(plan.tables);
  }

  /**
   * What makes the run a failure although it ended normally: an input interface that vanished,
   * a worker that is not running at the end (in backoff: it kept failing). Read before `stop`.
   */
  troubles(): string[] {
    const out = [...new Set(this.#troubles)];
    for (const w of this.#pool.info()) {
      if (w.state !== "running") out.push(`worker ${w.interface}/${w.slot} is ${w.state} at the end: ${w.last_error ?? "no error recorded"}`);
    }
    return out;
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
    this.#stopped = true;
    this.#links?.close();
    this.#links = null;
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
