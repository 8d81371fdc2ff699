// The supervisor as a daemon: the single source of truth for rules. Rules come from the config
// file and from clients at runtime (persisted in the state directory); every change is
// resolved against the interfaces, split per input interface and handed to the workers. It
// answers the control socket while all of this happens.
import { ConfigFileError, formatProblem, loadConfig, type ConfigProblem } from "../config/file.ts";
import type { RuleSpec } from "../config/rule-spec.ts";
import { ConfigError } from "../errors.ts";
import { getLogLevel, logger, setLogLevel, type LogLevelName } from "../log.ts";
import type { LinkLookup } from "../rules/rule.ts";
import { PROTOCOL_VERSION, VERSION } from "../version.ts";
import { ControlError, ControlServer, DaemonRunningError, type RequestContext } from "../control/server.ts";
import type { Command, Request } from "../control/protocol.ts";
import type { ConfigStatus, ResultOf } from "../control/responses.ts";
import { buildStatus } from "./status.ts";
import { WorkerPool } from "./worker-pool.ts";
import { planCapacity, planTables, type PlanOptions } from "./planner.ts";
import { RuleStore, type ConfigChange, type StoredRule } from "./rule-store.ts";
import { RuleViews, inputProblem } from "./views.ts";
import { LinkMonitor } from "./link-monitor.ts";
import { sdNotify } from "../native/lib.ts";
import { buildInterfaceReports, buildRuleReports } from "./report.ts";
import { StateDirLockedError, StateFile, lockStateDir } from "./state-file.ts";
import type { WorkerUser } from "./user.ts";
import { formatListen, type ListenAddress } from "../config/listen.ts";
import { HttpEndpoint, type Readiness } from "./http.ts";
import { renderMetrics, type RuleState } from "./metrics.ts";
import { ConfigWatcher } from "./config-watch.ts";
import { Tracer } from "./tracer.ts";

const log = logger("daemon");
const audit = logger("audit");

/**
 * Who sent a control request, for the audit log: the peer's credentials when the control
 * server identifies peers (SO_PEERCRED: `ctx.peer`), else the client name from its hello.
 */
function requester(ctx: RequestContext): string {
  const peer = (ctx as { peer?: { uid: number; pid: number } | null }).peer;
  if (peer) return `uid ${peer.uid} pid ${peer.pid}`;
  return "a control client (peer not identified)";
}

/** One audit line per change: what, who asked, and how it ended. */
async function audited<T>(what: string, who: string, run: () => Promise<T>, outcome: (r: T) => string): Promise<T> {
  try {
    const r = await run();
    audit.info(`${what} by ${who}: ${outcome(r)}`);
    return r;
  } catch (err) {
    audit.info(`${what} by ${who}: refused: ${forLog((err as Error).message, 4 * LOG_WORD_MAX)}`);
    throw err;
  }
}

/**
 * A client's words in an audit line, before they are checked: one line (control characters
 * escaped, so a newline cannot forge a second entry) of at most LOG_WORD_MAX characters.
 */
const LOG_WORD_MAX = 200;

function forLog(text: string, max = LOG_WORD_MAX): string {
  const cut = text.length > max ? `${text.slice(0, max)}…` : text;
  return /[\u0000-\u001f\u007f\u2028\u2029]/.test(cut) ? JSON.stringify(cut) : cut;
}

/**
 * A refused reload is kept for `status` until the next good one, so a file with thousands of
 * problems must not repeat them all in every answer: the first RELOAD_PROBLEMS_KEPT, then a
 * line that says how many more and where to see them all.
 */
const RELOAD_PROBLEMS_KEPT = 100;

function keptProblems(file: string, message: string, problems: ConfigProblem[]): { message: string; problems: ConfigProblem[] } {
  if (problems.length <= RELOAD_PROBLEMS_KEPT) return { message, problems };
  const more = `and ${problems.length - RELOAD_PROBLEMS_KEPT} more problems: \`mcrelay config check ${file}\` lists them all`;
  const lines = message.split("\n");
  return {
    message: [...lines.slice(0, RELOAD_PROBLEMS_KEPT), ...(lines.length > RELOAD_PROBLEMS_KEPT ? [more] : [])].join("\n"),
    problems: [...problems.slice(0, RELOAD_PROBLEMS_KEPT), { file, line: null, column: null, path: null, message: more }],
  };
}

function notifyServiceManager(message: string): void {
  try {
    sdNotify(message);
  } catch (err) {
    log.warn(`cannot notify the service manager: ${(err as Error).message}`);
  }
}


export type { Origin } from "./rule-store.ts";

/**
 * A reload refused: the message the client gets (`config_invalid`), and the problems behind it
 * one by one, kept for `status` until a reload succeeds.
 */
class ReloadRefused extends ControlError {
  constructor(
    message: string,
    readonly problems: ConfigProblem[],
  ) {
    super("config_invalid", message);
  }
}

export interface DaemonOptions {
  socketPath: string;
  stateDir: string;
  configPath?: string;
  socketMode?: number;
  socketGid?: number;
  /** Members may change rules (--admin-group); root, the daemon's user and CAP_NET_ADMIN may anyway. */
  adminGid?: number;
  /** Control connections at once (--clients-max), already lowered to fit the descriptor limit. */
  clientsMax?: number;
  user: WorkerUser | null;
  /** Workers per input interface unless the config file says otherwise (default 1). */
  workers?: number;
  /** Ring per packet socket in MiB unless the config file says otherwise (default: native). */
  ringMib?: number;
  /** HTTP listener for /metrics, /healthz, /readyz (overrides the config file's `metrics`). */
  metrics?: ListenAddress;
  /** Reload when the config file's content changes. */
  watchConfig?: boolean;
  /** Test hooks for every worker's environment (`run --test-hook`); never set outside tests. */
  testHooks?: Readonly<Record<string, string>>;
}

/** Longest wait at start-up for workers to apply their tables (or fail) before READY=1. */
const STARTUP_SETTLE_MS = 10_000;

/** How often rules are checked for loop drops (an event within about a second). */
const LOOP_CHECK_MS = 1000;

export class Daemon {
  readonly #opts: DaemonOptions;
  readonly #store: RuleStore;
  readonly #pool: WorkerPool;
  readonly #views: RuleViews;
  #server: ControlServer | null = null;
  #mutations: Promise<unknown> = Promise.resolve();
  readonly #links: LinkMonitor;
  readonly #lookup: LinkLookup;
  /** Recent events, for `mcrelay events` subscribers. */
  #eventSeq = 0;
  #stopping = false;
  /** Workers per interface from the config file. */
  #workersConfig = new Map<string, number>();
  /** The config file's plain `workers: N`, or null. */
  #workersDefault: number | null = null;
  #ringConfig = new Map<string, number>();
  /** mcr's `pinning` from the config file: CPUs of each interface's workers, by slot. */
  #pinningConfig = new Map<string, number[]>();
  #http: HttpEndpoint | null = null;
  #loopTimer: ReturnType<typeof setInterval> | null = null;
  readonly #loopDropsSeen = new Map<string, number>();
  #watcher: ConfigWatcher | null = null;
  readonly #tracer: Tracer;
  /** Set once start-up finished (rules loaded, workers given their tables, socket open). */
  #started = false;
  readonly #startedAtMs = Date.now();
  readonly #startedAt = new Date();
  /**
   * What runs of the config file: when it was last loaded whole (start-up or a reload), and the
   * last reload's refusal while no reload succeeded since. Rules keep running from the last good
   * load after a refusal, so `status` must say the file on disk is not what runs.
   */
  #configLoadedAt: Date | null = null;
  #reloadError: NonNullable<ConfigStatus>["reload_error"] = null;
  /** The config file's `metrics` when the listener started: the HTTP listener is not moved by a reload. */
  #metricsFromFile: ListenAddress | null = null;
  /** The state file: status and /metrics say when it was set aside at start. */
  readonly #state: StateFile;

  private constructor(opts: DaemonOptions) {
    this.#opts = opts;
    this.#state = new StateFile(opts.stateDir);
    this.#store = new RuleStore({ state: this.#state, capacity: (rules) => planCapacity(rules, this.#planOptions()), lookup: (name) => this.#links.lookup(name) });
    this.#links = new LinkMonitor();
    this.#lookup = (name) => this.#links.lookup(name);
    this.#pool = new WorkerPool({ user: opts.user, lookup: this.#lookup, testHooks: opts.testHooks });
    this.#views = new RuleViews(this.#store, this.#pool);
    this.#tracer = new Tracer({ find: (n) => this.#store.find(n)?.rule, memories: (iface) => this.#pool.traceMemories(iface) });
  }

  /** Loads config and state, starts workers, then opens the control socket. */
  static async start(opts: DaemonOptions): Promise<Daemon> {
    // Before anything forwards: a second daemon must not relay the same streams again, nor
    // share the state directory (the lock is held until the process exits).
    await ControlServer.ensureFree(opts.socketPath);
    try {
      lockStateDir(opts.stateDir);
    } catch (err) {
      if (err instanceof StateDirLockedError) throw new DaemonRunningError(err.message);
      throw err;
    }
    const d = new Daemon(opts);
    try {
      await d.#init();
      return d;
    } catch (err) {
      d.#stopping = true;
      d.#links.close();
      await d.#pool.close();
      d.#server?.stop();
      d.#http?.stop();
      d.#tracer.close();
      throw err;
    }
  }

  async #init(): Promise<void> {
    const opts = this.#opts;
    let metricsAt = opts.metrics ?? null;
    let readyTimer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#links.ready,
      new Promise((_, reject) => {
        readyTimer = setTimeout(() => reject(new Error("netlink: no answer to the initial dump within 5 s")), 5000);
      }),
    ]).finally(() => clearTimeout(readyTimer));
    this.#links.onChange((events) => {
      for (const e of events) this.#publish({ kind: "link", ...e });
      void this.#mutate(async () => this.#reconcile());
    });
    const cfg = opts.configPath ? loadConfig(opts.configPath) : null;
    if (cfg) {
      for (const w of cfg.warnings) log.warn(formatProblem(w));
      this.#workersConfig = cfg.workers;
      this.#workersDefault = cfg.workersDefault;
      this.#ringConfig = cfg.ringMib;
      this.#pinningConfig = cfg.pinning;
      metricsAt ??= cfg.metrics;
      this.#metricsFromFile = cfg.metrics;
    }
    // A config rule keeps its id across restarts (by name), as runtime rules do.
    this.#store.load(cfg?.specs ?? [], opts.configPath);
    if (cfg) this.#configLoadedAt = new Date();
    // Before the workers start: /healthz answers during start-up, /readyz says why not yet.
    if (metricsAt) {
      this.#http = HttpEndpoint.start(metricsAt, {
        metrics: () => this.#metrics(),
        alive: () => this.#alive(),
        readiness: () => this.readiness(),
      });
    }
    this.#reconcile();
    // The socket before any wait for workers: whatever they do (crash at once, a ring that
    // cannot be set up, a user they cannot become), `ping` and `list` answer at once, and list
    // says which rules forward and why the others do not.
    this.#server = await ControlServer.start(opts.socketPath, (req, ctx) => this.#handle(req, ctx), {
      mode: opts.socketMode,
      gid: opts.socketGid,
      clientsMax: opts.clientsMax,
      access: { ownUid: process.geteuid?.() ?? 0, readGid: opts.socketGid ?? process.getegid?.() ?? 0, adminGid: opts.adminGid },
    });
    // READY=1 once start-up is over: each worker applied its table or failed at least once
    // (then it is retried with backoff, and `workers`, `list` and /readyz say why), 10 s at most.
    try {
      await this.#pool.settled(STARTUP_SETTLE_MS, { failedIsSettled: true });
      const failing = this.#pool.info().filter((w) => w.state !== "running");
      if (failing.length) log.warn(`not every worker is forwarding yet: ${failing.map((w) => `worker ${w.interface}/${w.slot} is ${w.state}: ${w.last_error ?? "?"}`).join("; ")}`);
    } catch (err) {
      log.warn(`not every worker is forwarding yet: ${(err as Error).message}`);
    }
    this.#started = true;
    // Created once: a rule whose loop guard dropped datagrams since the last look gets an event.
    this.#loopTimer = setInterval(() => this.#checkLoops(), LOOP_CHECK_MS);
    if (opts.watchConfig && opts.configPath) {
      this.#watcher = new ConfigWatcher(opts.configPath, async () => void (await this.requestReload("a change of the config file")));
      log.info(`watching ${opts.configPath} for changes`);
    }
    log.info(`ready: ${this.#store.size} rules, control socket ${opts.socketPath}`);
    notifyServiceManager(`READY=1\nSTATUS=${this.#store.size} rules`);
  }

  #planOptions(): PlanOptions {
    return {
      lookup: this.#lookup,
      workersFor: (iface) => this.#workersFor(iface),
      ringMibFor: (iface) => this.#ringConfig.get(iface) ?? this.#opts.ringMib,
      cpusFor: (iface) => this.#pinningConfig.get(iface),
    };
  }

  /** Resolves every rule against the interfaces and gives each worker its complete table. */
  #reconcile(): void {
    const plan = planTables(this.#store.rules(), this.#planOptions());
    for (const stored of this.#store.all()) {
      if (this.#store.resolve(stored, plan.resolutions.get(stored.rule.id)!)) this.#ruleChanged(stored);
    }
    this.#pool.setTables(plan.tables);
  }

  #ruleChanged(s: StoredRule): void {
    const view = this.#views.view(s);
    if (s.pending.length) log.warn(`rule ${s.rule.name} is pending: ${s.pending.join("; ")}`);
    else if (s.inputErrno) log.warn(`rule ${s.rule.name}: ${inputProblem(s.rule, s.inputErrno)}`);
    else if (s.pendingOutputs.size) log.warn(`rule ${s.rule.name}: outputs pending: ${[...s.pendingOutputs.values()].join("; ")}`);
    else log.info(`rule ${s.rule.name} is active`);
    this.#publish({ kind: "rule", rule: view.name, id: view.id, state: view.state, reasons: view.reasons, outputs: view.outputs });
  }

  /**
   * Loops: each rule's loop_drops since the last look. A rise is logged and published as a
   * `loop` event (at most once per rule per check), so a loop between relays is visible
   * within a second of being cut.
   */
  #checkLoops(): void {
    const totals = this.#pool.counters.totals();
    for (const s of this.#store.all()) {
      const id = s.rule.id.toString();
      // A join that failed or recovered changes what list shows: log it and publish it.
      const inputErrno = s.pending.length ? 0 : totals.inputErrnos.get(id) ?? 0;
      if (inputErrno !== s.inputErrno) {
        s.inputErrno = inputErrno;
        this.#ruleChanged(s);
      }
      const now = totals.rules.get(id)?.drops.loop_drops ?? 0;
      const before = this.#loopDropsSeen.get(id) ?? 0;
      this.#loopDropsSeen.set(id, now);
      if (now > before) {
        log.warn(`rule ${s.rule.name}: a loop through relays was cut: ${now - before} datagrams came back from another source and were dropped (loop_drops ${now})`);
        this.#publish({ kind: "loop", rule: s.rule.name, id, loop_drops: now, dropped: now - before });
      }
    }
    // Counts of removed rules, and of interfaces no rule reads from any more, are let go.
    const keep = { rules: new Set<string>(), outputs: new Set<string>(), interfaces: new Set<string>() };
    for (const s of this.#store.all()) {
      keep.rules.add(s.rule.id.toString());
      for (const o of s.rule.outputs) keep.outputs.add(o.id.toString());
      keep.interfaces.add(s.rule.input.iface);
    }
    this.#pool.counters.prune(keep);
    for (const id of this.#loopDropsSeen.keys()) if (!keep.rules.has(id)) this.#loopDropsSeen.delete(id);
  }

  #publish(event: Record<string, unknown>): void {
    this.#eventSeq += 1;
    this.#server?.publish({ seq: this.#eventSeq, time: new Date().toISOString(), ...event });
  }

  #workersFor(iface: string): number {
    return this.#workersConfig.get(iface) ?? this.#workersDefault ?? this.#opts.workers ?? 1;
  }

  /** Changes to rules run one after another. */
  #mutate<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#mutations.then(fn, fn);
    this.#mutations = next.catch(() => undefined);
    return next;
  }

  async #handle(req: Request, ctx: RequestContext): Promise<ResultOf<Command>> {
    switch (req.cmd) {
      case "hello":
        return { daemon: VERSION, protocol: PROTOCOL_VERSION, mode: "daemon" };
      case "ping":
        // starting: the socket is up, start-up (workers applying their tables) is not over yet.
        return { pong: true, rules: this.#store.size, workers: this.#pool.processes().total, starting: !this.#started };
      case "version":
        return { daemon: VERSION, protocol: PROTOCOL_VERSION, bun: Bun.version, mode: "daemon" };
      case "status":
        return buildStatus({
          mode: "daemon",
          startedAt: this.#startedAt,
          configFile: this.#opts.configPath ?? null,
          config: this.#configStatus(),
          state: { file: this.#state.path, set_aside: this.#state.setAside, unloaded: this.#store.unloaded() },
          rules: this.#views.list(),
          workers: this.#pool.info(),
          lookup: this.#lookup,
        });
      case "add": {
        const spec = req.args.rule;
        const outputs = spec.to.map((o) => forLog(typeof o === "string" ? o : o.to));
        const what = `${req.args.replace ? "replace" : "add"} rule ${forLog(spec.name)} (${forLog(spec.from)} -> ${outputs.join(", ")})`;
        return audited(what, requester(ctx), () => this.#mutate(() => this.#add(spec, req.args.replace ?? false)), (r) => `ok, id ${r.rule.id}, ${r.rule.state}`);
      }
      case "remove":
        return audited(`remove rule ${forLog(req.args.rule)}`, requester(ctx), () => this.#mutate(() => this.#remove(req.args.rule)), (r) => `ok, removed ${r.removed} (id ${r.id})`);
      case "list":
        return { rules: this.#views.list() };
      case "stats":
        return this.#views.stats(req.args?.rule);
      case "workers":
        return { workers: this.#pool.info() };
      case "log-level":
        if (req.args?.level) {
          const level = req.args.level;
          return audited(`log-level ${level}`, requester(ctx), async () => {
            setLogLevel(level as LogLevelName);
            await this.#pool.setLogLevel(level);
            log.info(`log level set to ${level}`);
            return { level: getLogLevel() };
          }, () => "ok");
        }
        return { level: getLogLevel() };
      case "reload":
        return this.requestReload(requester(ctx));
      case "trace-start":
        return this.#tracer.start(req.args.rule, req.args.capture ?? false, req.args.all_unmatched ?? false);
      case "trace-read":
        return this.#tracer.read(req.args.session);
      case "trace-stop":
        return this.#tracer.stop(req.args.session);
      case "events":
        ctx.subscribe();
        return { subscribed: true, seq: this.#eventSeq };
      case "config-show":
        return {
          config_file: this.#opts.configPath ?? null,
          state_dir: this.#opts.stateDir,
          workers: Object.fromEntries(this.#workersConfig),
          workers_default: this.#workersDefault,
          rules: this.#store.all().map((s) => ({ ...s.spec, origin: s.origin, id: s.rule.id.toString() })),
        };
    }
  }

  async #add(spec: RuleSpec, replace: boolean) {
    const { stored, replaced } = this.#store.add(spec, replace);
    this.#reconcile();
    await this.#settle();
    return { rule: this.#views.view(stored), warnings: [...stored.pending, ...stored.pendingOutputs.values()], replaced };
  }

  async #remove(nameOrId: string) {
    // A saved rule that was not loaded runs nowhere: only the state file changes.
    const unloaded = this.#store.find(nameOrId) ? undefined : this.#store.removeUnloaded(nameOrId);
    if (unloaded) return { removed: unloaded.name, id: unloaded.id, warnings: [], not_loaded: unloaded.reason };
    const stored = this.#store.remove(nameOrId);
    this.#reconcile();
    await this.#settle();
    const warnings = stored.origin === "config" ? ["this rule comes from the config file: a reload brings it back unless it is removed there"] : [];
    return { removed: stored.rule.name, id: stored.rule.id.toString(), warnings };
  }

  /** Waits for workers to acknowledge; a failure to do so is reported, not thrown. */
  async #settle(): Promise<void> {
    try {
      await this.#pool.settled(5000);
    } catch (err) {
      log.warn((err as Error).message);
    }
  }

  /** `status`'s `config`: the file, when it was last loaded, and a reload refused since (null without --config). */
  #configStatus(): ConfigStatus {
    const file = this.#opts.configPath;
    if (!file || !this.#configLoadedAt) return null;
    return { file, loaded_at: this.#configLoadedAt.toISOString(), reload_error: this.#reloadError };
  }

  /**
   * A reload asked by `who` (a client, SIGHUP, the config watcher), after any change in progress.
   * Every reload comes through here: its outcome is what `status` reports.
   */
  requestReload(who: string) {
    return audited(`reload ${this.#opts.configPath ?? "(no config file)"}`, who, () => this.#mutate(() => this.reload(who)), (r) =>
      `ok, added [${r.added.join(", ")}], removed [${r.removed.join(", ")}], changed [${r.changed.join(", ")}]`,
    );
  }

  /** Reload: validate the whole file first (a bad file changes nothing), then apply the difference. */
  async reload(who: string) {
    // A reload asked on the socket during start-up says nothing: READY=1 comes when start-up ends.
    const started = this.#started;
    if (started) notifyServiceManager("RELOADING=1");
    try {
      const r = await this.#reload();
      this.#configLoadedAt = new Date();
      this.#reloadError = null;
      return r;
    } catch (err) {
      // Without --config there is no file whose rules could differ from what runs.
      if (this.#opts.configPath) {
        const message = (err as Error).message;
        const problems = err instanceof ReloadRefused ? err.problems : [{ file: this.#opts.configPath, line: null, column: null, path: null, message }];
        this.#reloadError = { at: new Date().toISOString(), requested_by: who, ...keptProblems(this.#opts.configPath, message, problems) };
      }
      throw err;
    } finally {
      if (started) notifyServiceManager(`READY=1\nSTATUS=${this.#store.size} rules`);
    }
  }

  async #reload() {
    if (!this.#opts.configPath) throw new ControlError("config_invalid", "the daemon was started without --config: nothing to reload");
    let specs: RuleSpec[];
    const workersBefore = this.#workersConfig;
    const workersDefaultBefore = this.#workersDefault;
    const pinningBefore = this.#pinningConfig;
    const ringBefore = this.#ringConfig;
    let configWarnings: string[];
    let metrics: ListenAddress | null;
    try {
      const cfg = loadConfig(this.#opts.configPath);
      metrics = cfg.metrics;
      specs = cfg.specs;
      configWarnings = cfg.warnings.map(formatProblem);
      for (const w of configWarnings) log.warn(w);
      this.#workersConfig = cfg.workers;
      this.#workersDefault = cfg.workersDefault;
      this.#ringConfig = cfg.ringMib;
      this.#pinningConfig = cfg.pinning;
    } catch (err) {
      if (err instanceof ConfigError) {
        const problems = err instanceof ConfigFileError ? err.problems : [{ file: this.#opts.configPath, line: null, column: null, path: null, message: err.message }];
        throw new ReloadRefused(`reload refused, nothing changed: ${err.message}`, problems);
      }
      throw err;
    }
    let change: ConfigChange;
    try {
      // All or nothing: a rule that cannot be applied restores the rules as they were.
      change = this.#store.applyConfig(specs);
    } catch (err) {
      this.#workersConfig = workersBefore;
      this.#workersDefault = workersDefaultBefore;
      this.#pinningConfig = pinningBefore;
      this.#ringConfig = ringBefore;
      const message = (err as Error).message;
      throw new ReloadRefused(`reload refused, nothing changed: ${message}`, [{ file: this.#opts.configPath, line: null, column: null, path: null, message }]);
    }
    const { added, removed, changed, conflicts, unchanged } = change;
    this.#reconcile();
    await this.#settle();
    log.info(`reloaded ${this.#opts.configPath}: ${added.length} added, ${removed.length} removed, ${changed.length} changed`);
    const warnings = [...configWarnings, ...conflicts.map((n) => `rule ${n}: a runtime rule of that name is kept; the config file's version is ignored`)];
    const metricsWarning = this.#metricsChange(metrics);
    if (metricsWarning) {
      log.warn(metricsWarning);
      warnings.push(metricsWarning);
    }
    return { added, removed, changed, unchanged, warnings };
  }

  /**
   * The HTTP listener is opened once, at start-up: a reload that changes the file's `metrics`
   * says so instead of reporting a clean reload while /metrics stays where it was.
   */
  #metricsChange(fromFile: ListenAddress | null): string | null {
    if (this.#opts.metrics) return null; // --metrics overrides the file, before and after
    const before = this.#metricsFromFile ? formatListen(this.#metricsFromFile) : null;
    const after = fromFile ? formatListen(fromFile) : null;
    if (before === after) return null;
    return `metrics: ${after ?? "(absent)"} takes effect at the next start; the HTTP listener stays ${before ? `on ${before}` : "off"} until then`;
  }

  /** The Prometheus exposition: the same totals as `stats`, read now. */
  #metrics(): string {
    this.#pool.refresh();
    const totals = this.#pool.counters.totals();
    const stored = this.#store.all();
    const reports = buildRuleReports(
      stored.map((s) => ({ rule: s.rule, pending: s.pending, pendingOutputs: s.pendingOutputs, origin: s.origin })),
      totals,
      this.#pool.counters.rates(),
    );
    return renderMetrics({
      version: VERSION,
      protocol: PROTOCOL_VERSION,
      bun: Bun.version,
      startedAtS: Math.floor(this.#startedAtMs / 1000),
      config: this.#opts.configPath && this.#configLoadedAt ? { loadedAtS: Math.floor(this.#configLoadedAt.getTime() / 1000), lastReloadOk: this.#reloadError === null } : null,
      state: { setAside: this.#state.setAside !== null },
      rules: reports.map((r, i) => ({ ...r, current: this.#views.view(stored[i]!).state as RuleState })),
      interfaces: buildInterfaceReports(totals),
      workers: this.#pool.info(),
    });
  }

  /** Alive while the worker manager's tick (every 100 ms) keeps running. */
  #alive(): { ok: boolean; reason: string } {
    const ago = this.#pool.sinceTickMs();
    if (this.#stopping) return { ok: false, reason: "stopping" };
    return ago < 5000 ? { ok: true, reason: `supervisor loop ran ${Math.round(ago)} ms ago` } : { ok: false, reason: `supervisor loop last ran ${Math.round(ago)} ms ago` };
  }

  /** Ready when start-up is over, every rule is active and every worker runs its table. */
  readiness(): Readiness {
    if (!this.#started) return { ready: false, reasons: ["starting"] };
    if (this.#stopping) return { ready: false, reasons: ["stopping"] };
    const reasons: string[] = [];
    for (const s of this.#store.all()) {
      const v = this.#views.view(s);
      if (v.state !== "active") reasons.push(`rule ${v.name} is ${v.state}: ${v.reasons.join("; ") || "no reason known"}`);
    }
    for (const w of this.#pool.info()) {
      if (w.state !== "running" || w.applied_hash !== w.table_hash) {
        reasons.push(`worker ${w.interface}/${w.slot} is ${w.state}${w.applied_hash !== w.table_hash ? " (table not applied)" : ""}${w.last_error ? `: ${w.last_error}` : ""}`);
      }
    }
    return { ready: reasons.length === 0, reasons };
  }

  /** Graceful stop: workers within their deadline, final counters logged, socket removed. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    if (this.#loopTimer) clearInterval(this.#loopTimer);
    notifyServiceManager("STOPPING=1");
    this.#watcher?.close();
    this.#tracer.close();
    this.#links.close();
    this.#server?.stop();
    this.#http?.stop();
    await this.#pool.collect();
    await this.#pool.close();
    const totals = this.#pool.counters.totals();
    for (const s of this.#store.all()) {
      const t = totals.rules.get(s.rule.id.toString());
      log.info(`final: rule ${s.rule.name}: ${t?.packets ?? 0} packets, ${t?.bytes ?? 0} bytes`);
    }
  }
}
