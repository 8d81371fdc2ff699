// The supervisor as a daemon: the single source of truth for rules. Rules come from the config
// file and from clients at runtime (persisted in the state directory); every change is
// resolved against the interfaces, split per input interface and handed to the workers. It
// answers the control socket while all of this happens.
import { formatEndpoint } from "../base/endpoint.ts";
import { loadConfig } from "../config/file.ts";
import { ruleFromSpec, specFromRule, type RuleSpec } from "../config/rule-spec.ts";
import { ConfigError, errnoName } from "../errors.ts";
import { readFileSync } from "node:fs";
import { isMulticast } from "../base/address.ts";
import { getLogLevel, logger, setLogLevel, type LogLevelName } from "../log.ts";
import { describeInput, formatInput, inputKey, resolveRule, type LinkLookup, type Rule } from "../rules/rule.ts";
import { PROTOCOL_VERSION, VERSION } from "../version.ts";
import { ControlError, ControlServer, DaemonRunningError, type RequestContext } from "../control/server.ts";
import type { Request } from "../control/protocol.ts";
import { WorkerPool, type Desired } from "./worker-pool.ts";
import { LinkMonitor } from "./link-monitor.ts";
import { sdNotify } from "../native/lib.ts";
import { buildInterfaceReports, buildRuleReports } from "./report.ts";
import { StateDirLockedError, StateFile, lockStateDir, type SavedRule } from "./state-file.ts";
import { capacityProblems } from "../rules/capacity.ts";
import type { WorkerUser } from "./user.ts";
import type { ListenAddress } from "../config/listen.ts";
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
    audit.info(`${what} by ${who}: refused: ${(err as Error).message}`);
    throw err;
  }
}

/** What makes a rule's state: compared to tell when it changed. */
function pendingKey(s: { pending: string[]; pendingOutputs: Map<bigint, string> }): string {
  return JSON.stringify([s.pending, [...s.pendingOutputs].map(([id, why]) => `${id}:${why}`)]);
}

function notifyServiceManager(message: string): void {
  try {
    sdNotify(message);
  } catch (err) {
    log.warn(`cannot notify the service manager: ${(err as Error).message}`);
  }
}


export type Origin = "config" | "runtime";

interface Stored {
  rule: Rule;
  spec: RuleSpec;
  origin: Origin;
  pending: string[];
  pendingOutputs: Map<bigint, string>;
  /** 0, or the errno of the worker's failed join (or unicast port hold) for this rule. */
  inputErrno: number;
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
}

/** How often rules are checked for loop drops (an event within about a second). */
const LOOP_CHECK_MS = 1000;

/** A sysctl of this network namespace, or "?" when unreadable. */
function sysctl(key: string): string {
  try {
    return readFileSync(`/proc/sys/${key.replaceAll(".", "/")}`, "utf8").trim();
  } catch {
    return "?";
  }
}

/**
 * Why a rule's input is not joined (multicast) or its port not held (unicast), with the sysctl
 * to raise when that is the cause. mcrelay raises nothing by itself; the worker retries every
 * second, so raising the limit is enough.
 */
function inputProblem(rule: Rule, errno: number): string {
  const name = errnoName(errno);
  if (!isMulticast(rule.input.addr)) {
    return errno === 98 // EADDRINUSE
      ? `input port ${rule.input.port} on ${rule.input.addr.text} is owned by another program: left alone (it receives the datagrams too)`
      : `input port ${rule.input.port} on ${rule.input.addr.text} not held: ${name} (the host may answer senders with ICMP port unreachable)`;
  }
  if (errno === 105) {
    // ENOBUFS: a membership limit.
    const hint = rule.source
      ? `net.ipv4.igmp_max_memberships=${sysctl("net.ipv4.igmp_max_memberships")}, net.ipv4.igmp_max_msf=${sysctl("net.ipv4.igmp_max_msf")}`
      : `net.ipv4.igmp_max_memberships=${sysctl("net.ipv4.igmp_max_memberships")}`;
    return `join failed: ${name} (${hint})`;
  }
  return `join failed: ${name}`;
}

export class Daemon {
  readonly #opts: DaemonOptions;
  readonly #state: StateFile;
  readonly #rules = new Map<string, Stored>();
  readonly #pool: WorkerPool;
  #nextId = 1n;
  #server: ControlServer | null = null;
  #mutations: Promise<unknown> = Promise.resolve();
  readonly #links: LinkMonitor;
  readonly #lookup: LinkLookup;
  /** Recent events, for `mcrelay events` subscribers. */
  #eventSeq = 0;
  #stopping = false;
  /** Saved runtime rules that could not be loaded: kept in the state file, not dropped. */
  #unloadable: SavedRule[] = [];
  /** Workers per interface from the config file. */
  #workersConfig = new Map<string, number>();
  #ringConfig = new Map<string, number>();
  #http: HttpEndpoint | null = null;
  #loopTimer: ReturnType<typeof setInterval> | null = null;
  readonly #loopDropsSeen = new Map<string, number>();
  #watcher: ConfigWatcher | null = null;
  readonly #tracer: Tracer;
  /** Set once start-up finished (rules loaded, workers given their tables, socket open). */
  #started = false;
  readonly #startedAtMs = Date.now();

  private constructor(opts: DaemonOptions) {
    this.#opts = opts;
    this.#state = new StateFile(opts.stateDir);
    this.#links = new LinkMonitor();
    this.#lookup = (name) => this.#links.lookup(name);
    this.#pool = new WorkerPool({ user: opts.user, lookup: this.#lookup });
    this.#tracer = new Tracer({ find: (n) => this.#find(n)?.rule, memories: (iface) => this.#pool.traceMemories(iface) });
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
    const saved = this.#state.load();
    this.#nextId = saved.nextId;
    if (opts.configPath) {
      const cfg = loadConfig(opts.configPath);
      this.#workersConfig = cfg.workers;
      this.#ringConfig = cfg.ringMib;
      metricsAt ??= cfg.metrics;
      // A config rule keeps its id across restarts (by name), as runtime rules do.
      for (const spec of cfg.specs) this.#put(spec, "config", saved.configIds.get(spec.name) ?? this.#takeId());
      const over = this.#capacity();
      if (over.length) throw new ConfigError(`${opts.configPath}: more than the workers can hold:\n  ${over.join("\n  ")}`);
    }
    for (const r of saved.rules) {
      if (this.#rules.has(r.spec.name)) {
        log.warn(`runtime rule ${r.spec.name} overrides the config file's rule of that name`);
      }
      const shadowed = this.#rules.get(r.spec.name);
      try {
        this.#put(r.spec, "runtime", r.id);
        const over = this.#capacity();
        if (over.length) {
          if (shadowed) this.#rules.set(r.spec.name, shadowed);
          else this.#rules.delete(r.spec.name);
          throw new Error(over.join("; "));
        }
      } catch (err) {
        this.#unloadable.push(r);
        log.error(`saved rule ${r.spec.name} is not loaded (${(err as Error).message}); it stays in the state file`);
        continue;
      }
      if (r.id >= this.#nextId) this.#nextId = r.id + 1n;
    }
    for (const id of saved.configIds.values()) if (id >= this.#nextId) this.#nextId = id + 1n;
    try {
      this.#persist(); // config rules' ids, for the next start
    } catch (err) {
      log.warn(`cannot write the state file: ${(err as Error).message}`);
    }
    // Before the workers start: /healthz answers during start-up, /readyz says why not yet.
    if (metricsAt) {
      this.#http = HttpEndpoint.start(metricsAt, {
        metrics: () => this.#metrics(),
        alive: () => this.#alive(),
        readiness: () => this.readiness(),
      });
    }
    this.#reconcile();
    try {
      await this.#pool.settled(10_000);
    } catch (err) {
      log.warn(`not every worker is forwarding yet: ${(err as Error).message}`);
    }
    this.#server = await ControlServer.start(opts.socketPath, (req, ctx) => this.#handle(req, ctx), {
      mode: opts.socketMode,
      gid: opts.socketGid,
      clientsMax: opts.clientsMax,
      access: { ownUid: process.geteuid?.() ?? 0, readGid: opts.socketGid ?? process.getegid?.() ?? 0, adminGid: opts.adminGid },
    });
    this.#started = true;
    // Created once: a rule whose loop guard dropped datagrams since the last look gets an event.
    this.#loopTimer = setInterval(() => this.#checkLoops(), LOOP_CHECK_MS);
    if (opts.watchConfig && opts.configPath) {
      this.#watcher = new ConfigWatcher(opts.configPath, async () => void (await this.requestReload("a change of the config file")));
      log.info(`watching ${opts.configPath} for changes`);
    }
    log.info(`ready: ${this.#rules.size} rules, control socket ${opts.socketPath}`);
    notifyServiceManager(`READY=1\nSTATUS=${this.#rules.size} rules`);
  }

  #takeId(): bigint {
    return this.#nextId++;
  }

  #put(spec: RuleSpec, origin: Origin, id: bigint): Stored {
    const built = ruleFromSpec(spec, id);
    if (!built.ok) throw new ControlError("bad_request", built.problems.join("; "));
    const key = inputKey(built.rule);
    for (const other of this.#rules.values()) {
      if (other.rule.name !== spec.name && inputKey(other.rule) === key) {
        throw new ControlError("exists", `rule ${other.rule.name} already relays ${describeInput(built.rule)}`);
      }
    }
    const stored: Stored = { rule: built.rule, spec, origin, pending: [], pendingOutputs: new Map(), inputErrno: 0 };
    this.#rules.set(spec.name, stored);
    return stored;
  }

  /** Problems if the rules (default: the current ones) do not fit the workers' tables. */
  #capacity(rules: Iterable<Stored> = this.#rules.values()): string[] {
    return capacityProblems([...rules].map((s) => s.rule), (iface) => this.#workersFor(iface));
  }

  #persist(rules: Map<string, Stored> = this.#rules): void {
    const runtime = [...rules.values()].filter((s) => s.origin === "runtime");
    const config = [...rules.values()].filter((s) => s.origin === "config");
    this.#state.save({
      nextId: this.#nextId,
      rules: [...runtime.map((s) => ({ id: s.rule.id, spec: s.spec })), ...this.#unloadable],
      configIds: new Map(config.map((s) => [s.rule.name, s.rule.id])),
    });
  }

  /** Resolves every rule against the interfaces and gives each worker its complete table. */
  #reconcile(): void {
    const tables = new Map<string, Desired>();
    for (const stored of this.#rules.values()) {
      const resolved = resolveRule(stored.rule, this.#lookup);
      const was = pendingKey(stored);
      stored.pending = resolved.pending;
      stored.pendingOutputs = resolved.pendingOutputs;
      if (was !== pendingKey(stored)) this.#ruleChanged(stored);
      if (!resolved.wire) continue;
      const iface = stored.rule.input.iface;
      const entry = tables.get(iface) ?? { rules: [], workers: this.#workersFor(iface), ringMib: this.#ringConfig.get(iface) ?? this.#opts.ringMib };
      entry.rules.push(resolved.wire);
      tables.set(iface, entry);
    }
    this.#pool.setTables(tables);
  }

  #ruleChanged(s: Stored): void {
    const view = this.#view(s);
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
    for (const s of this.#rules.values()) {
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
  }

  #publish(event: Record<string, unknown>): void {
    this.#eventSeq += 1;
    this.#server?.publish({ seq: this.#eventSeq, time: new Date().toISOString(), ...event });
  }

  #workersFor(iface: string): number {
    return this.#workersConfig.get(iface) ?? this.#opts.workers ?? 1;
  }

  /** Changes to rules run one after another. */
  #mutate<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#mutations.then(fn, fn);
    this.#mutations = next.catch(() => undefined);
    return next;
  }

  async #handle(req: Request, ctx: RequestContext): Promise<unknown> {
    switch (req.cmd) {
      case "hello":
        return { daemon: VERSION, protocol: PROTOCOL_VERSION };
      case "ping":
        return { pong: true, rules: this.#rules.size, workers: this.#pool.info().length };
      case "version":
        return { daemon: VERSION, protocol: PROTOCOL_VERSION, bun: Bun.version };
      case "add": {
        const spec = req.args.rule;
        const what = `${req.args.replace ? "replace" : "add"} rule ${spec.name} (${spec.from} -> ${spec.to.join(", ")})`;
        return audited(what, requester(ctx), () => this.#mutate(() => this.#add(spec, req.args.replace ?? false)), (r) => `ok, id ${r.rule.id}, ${r.rule.state}`);
      }
      case "remove":
        return audited(`remove rule ${req.args.rule}`, requester(ctx), () => this.#mutate(() => this.#remove(req.args.rule)), (r) => `ok, removed ${r.removed} (id ${r.id})`);
      case "list":
        return { rules: this.#list() };
      case "stats":
        return this.#stats(req.args?.rule);
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
          rules: [...this.#rules.values()].map((s) => ({ ...s.spec, origin: s.origin, id: s.rule.id.toString() })),
        };
    }
  }

  #find(nameOrId: string): Stored | undefined {
    return this.#rules.get(nameOrId) ?? [...this.#rules.values()].find((s) => s.rule.id.toString() === nameOrId);
  }

  async #add(spec: RuleSpec, replace: boolean) {
    const existing = this.#rules.get(spec.name);
    if (existing && !replace) throw new ControlError("exists", `a rule named '${spec.name}' exists (use --replace to change it)`);
    if (!existing && replace) throw new ControlError("not_found", `no rule named '${spec.name}' to replace`);
    const id = existing ? existing.rule.id : this.#takeId();
    const before = existing ? { ...existing } : null;
    const stored = this.#put(spec, "runtime", id);
    const undo = () => {
      if (before) this.#rules.set(spec.name, before);
      else this.#rules.delete(spec.name);
    };
    // Before anything is saved or applied: a table the worker could not hold would stop every
    // rule of the interface.
    const over = this.#capacity();
    if (over.length) {
      undo();
      throw new ControlError("limit", `rule ${spec.name} refused, nothing changed: ${over.join("; ")}`);
    }
    try {
      this.#persist();
    } catch (err) {
      undo();
      throw new ControlError("internal", `cannot save state, nothing changed: ${(err as Error).message}`);
    }
    this.#reconcile();
    await this.#settle();
    return { rule: this.#view(stored), warnings: [...stored.pending, ...stored.pendingOutputs.values()], replaced: !!existing };
  }

  async #remove(nameOrId: string) {
    const stored = this.#find(nameOrId);
    if (!stored) throw new ControlError("not_found", `no rule named or numbered '${nameOrId}'`);
    // Saved first: if the state cannot be written the rule stays, listed and forwarding, as
    // the state file still holds it (no rule that forwards but cannot be removed).
    const after = new Map(this.#rules);
    after.delete(stored.rule.name);
    try {
      this.#persist(after);
    } catch (err) {
      throw new ControlError("internal", `cannot save state, nothing changed (rule ${stored.rule.name} is still there and forwarding): ${(err as Error).message}`);
    }
    this.#rules.delete(stored.rule.name);
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

  /** A reload asked by `who` (a client, SIGHUP, the config watcher), after any change in progress. */
  requestReload(who: string) {
    return audited(`reload ${this.#opts.configPath ?? "(no config file)"}`, who, () => this.#mutate(() => this.reload()), (r) =>
      `ok, added [${r.added.join(", ")}], removed [${r.removed.join(", ")}], changed [${r.changed.join(", ")}]`,
    );
  }

  /** Reload: validate the whole file first (a bad file changes nothing), then apply the difference. */
  async reload() {
    notifyServiceManager("RELOADING=1");
    try {
      return await this.#reload();
    } finally {
      notifyServiceManager(`READY=1\nSTATUS=${this.#rules.size} rules`);
    }
  }

  async #reload() {
    if (!this.#opts.configPath) throw new ControlError("config_invalid", "the daemon was started without --config: nothing to reload");
    let specs: RuleSpec[];
    const workersBefore = this.#workersConfig;
    try {
      const cfg = loadConfig(this.#opts.configPath);
      specs = cfg.specs;
      this.#workersConfig = cfg.workers;
      this.#ringConfig = cfg.ringMib;
    } catch (err) {
      if (err instanceof ConfigError) throw new ControlError("config_invalid", `reload refused, nothing changed: ${err.message}`);
      throw err;
    }
    const wanted = new Map(specs.map((s) => [s.name, s]));
    const added: string[] = [];
    const removed: string[] = [];
    const changed: string[] = [];
    const conflicts: string[] = [];
    // All or nothing: a rule that cannot be applied restores the rules as they were.
    const before = new Map(this.#rules);
    try {
      for (const [name, s] of this.#rules) {
        if (s.origin === "config" && !wanted.has(name)) {
          this.#rules.delete(name);
          removed.push(name);
        }
      }
      for (const [name, spec] of wanted) {
        const s = this.#rules.get(name);
        if (!s) {
          this.#put(spec, "config", this.#takeId());
          added.push(name);
        } else if (s.origin === "runtime") {
          conflicts.push(name);
        } else if (JSON.stringify(s.spec) !== JSON.stringify(spec)) {
          this.#put(spec, "config", s.rule.id);
          changed.push(name);
        }
      }
      // What the workers can hold, then the state file: either fails, nothing changed.
      const over = this.#capacity();
      if (over.length) throw new Error(over.join("; "));
      try {
        this.#persist();
      } catch (err) {
        throw new Error(`cannot save state: ${(err as Error).message}`);
      }
    } catch (err) {
      this.#rules.clear();
      for (const [k, v] of before) this.#rules.set(k, v);
      this.#workersConfig = workersBefore;
      throw new ControlError("config_invalid", `reload refused, nothing changed: ${(err as Error).message}`);
    }
    this.#reconcile();
    await this.#settle();
    log.info(`reloaded ${this.#opts.configPath}: ${added.length} added, ${removed.length} removed, ${changed.length} changed`);
    const warnings = conflicts.map((n) => `rule ${n}: a runtime rule of that name is kept; the config file's version is ignored`);
    return { added, removed, changed, unchanged: wanted.size - added.length - changed.length - conflicts.length, warnings };
  }

  #view(s: Stored) {
    const worker = this.#pool.info().find((w) => w.interface === s.rule.input.iface);
    const failing = !s.pending.length && worker && worker.state === "backoff";
    // A rule its worker refused to take (the others of that worker go on forwarding).
    const refused = s.pending.length ? undefined : this.#pool.refusedRules().get(s.rule.id.toString());
    // A unicast input whose port another program owns still forwards: only a note.
    const joinFailed = s.inputErrno !== 0 && isMulticast(s.rule.input.addr);
    return {
      name: s.rule.name,
      id: s.rule.id.toString(),
      origin: s.origin,
      input: formatInput(s.rule),
      source: s.rule.source?.text ?? null,
      vlan: s.rule.vlan,
      max_pps: s.rule.maxPps,
      loop_guard: s.rule.loopGuard,
      outputs: s.rule.outputs.map((o) => ({
        to: formatEndpoint(o.to),
        ttl: o.ttl,
        dscp: o.dscp ?? "copy",
        gso: o.gso,
        state: s.pendingOutputs.has(o.id) ? "pending" : "active",
        reason: s.pendingOutputs.get(o.id) ?? null,
      })),
      state: s.pending.length ? "pending" : failing || refused ? "error" : joinFailed ? "join-failed" : "active",
      reasons: s.pending.length
        ? s.pending
        : refused
          ? [refused]
          : failing && worker.last_error
            ? [worker.last_error]
            : s.inputErrno
              ? [inputProblem(s.rule, s.inputErrno)]
              : [],
    };
  }

  #list() {
    return [...this.#rules.values()].sort((a, b) => (a.rule.id < b.rule.id ? -1 : 1)).map((s) => this.#view(s));
  }

  #stats(name?: string) {
    const selected = name ? [this.#find(name)].filter((s): s is Stored => !!s) : [...this.#rules.values()];
    if (name && selected.length === 0) throw new ControlError("not_found", `no rule named or numbered '${name}'`);
    this.#pool.refresh();
    const totals = this.#pool.counters.totals();
    const rules = buildRuleReports(
      selected.map((s) => ({ rule: s.rule, pending: s.pending, pendingOutputs: s.pendingOutputs, origin: s.origin })),
      totals,
      this.#pool.counters.rates(),
    );
    return { rules, interfaces: buildInterfaceReports(totals), workers: this.#pool.info() };
  }

  /** The Prometheus exposition: the same totals as `stats`, read now. */
  #metrics(): string {
    this.#pool.refresh();
    const totals = this.#pool.counters.totals();
    const stored = [...this.#rules.values()].sort((a, b) => (a.rule.id < b.rule.id ? -1 : 1));
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
      rules: reports.map((r, i) => ({ ...r, current: this.#view(stored[i]!).state as RuleState })),
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
    for (const s of this.#rules.values()) {
      const v = this.#view(s);
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
    for (const s of this.#rules.values()) {
      const t = totals.rules.get(s.rule.id.toString());
      log.info(`final: rule ${s.rule.name}: ${t?.packets ?? 0} packets, ${t?.bytes ?? 0} bytes`);
    }
  }
}
