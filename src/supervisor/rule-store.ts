// The rules a supervisor holds: identity (names and numeric ids, kept across restarts),
// uniqueness of what they relay, origin (config file, runtime, command line), their current
// resolution, and persistence of runtime rules in the state file. Every change is checked
// against what the workers can hold and saved before it takes effect: a change that cannot be
// saved or held leaves every rule as it was. The daemon and the one-shot relay (`forward`)
// keep their rules here; neither touches the map itself.
import { ALL_DIGITS, DIGIT_NAME_STAND_IN, ruleFromSpec, specFromRule, type RuleSpec } from "../config/rule-spec.ts";
import { ControlError } from "../control/server.ts";
import { ConfigError } from "../errors.ts";
import { logger } from "../log.ts";
import { describeInput, inputKey, interfaceProblems, type LinkLookup, type Rule } from "../rules/rule.ts";
import type { Resolution } from "./planner.ts";
import type { SavedRule, StateFile } from "./state-file.ts";

const log = logger("rules");

/** Where a rule comes from: the config file, a client at runtime, or `forward`'s flags. */
export type Origin = "config" | "runtime" | "cli";

export interface StoredRule {
  rule: Rule;
  spec: RuleSpec;
  origin: Origin;
  /** Why the rule cannot forward now (empty: it forwards). */
  pending: string[];
  /** Outputs that cannot send now, by output id, with the reason. */
  pendingOutputs: Map<bigint, string>;
  /** 0, or the errno of the rule's failed input join / port hold, as its worker reports it. */
  inputErrno: number;
}

/** What a reload changed, by rule name. */
export interface ConfigChange {
  added: string[];
  removed: string[];
  changed: string[];
  /** Config rules whose name a runtime rule has (the runtime rule is kept). */
  conflicts: string[];
  unchanged: number;
}

export interface RuleStoreOptions {
  /** Null: nothing is persisted (`forward`). */
  state: StateFile | null;
  /** Problems when these rules do not fit the workers' tables (none: they fit). */
  capacity: (rules: Rule[]) => string[];
  /**
   * The interfaces as they are now: a rule added or changed (add, reload) with an output its
   * interface cannot send to (the subnet's broadcast address) is refused. Absent: not checked.
   * Rules loaded at start-up are not refused; such an output is pending (see resolveRule).
   */
  lookup?: LinkLookup;
}

/** What makes a rule's state: compared to tell when it changed. */
function resolutionKey(s: Resolution): string {
  return JSON.stringify([s.pending, [...s.pendingOutputs].map(([id, why]) => `${id}:${why}`)]);
}

export class RuleStore {
  readonly #rules = new Map<string, StoredRule>();
  readonly #opts: RuleStoreOptions;
  #nextId = 1n;
  /**
   * Saved runtime rules that could not be loaded, with why: kept in the state file (a rule is
   * not lost to a transient problem), shown by `status`, removed by `remove NAME|ID`.
   */
  #unloadable: { saved: SavedRule; reason: string }[] = [];

  constructor(opts: RuleStoreOptions) {
    this.#opts = opts;
  }

  get size(): number {
    return this.#rules.size;
  }

  /** Every rule, in id order. */
  all(): StoredRule[] {
    return [...this.#rules.values()].sort((a, b) => (a.rule.id < b.rule.id ? -1 : 1));
  }

  rules(): Rule[] {
    return this.all().map((s) => s.rule);
  }

  /**
   * A rule by name, or by its id in decimal. A word of digits is an id first: no new rule has
   * such a name, and a saved rule that has one is found by it only when no rule has that id.
   */
  find(nameOrId: string): StoredRule | undefined {
    const byId = () => [...this.#rules.values()].find((s) => s.rule.id.toString() === nameOrId);
    return ALL_DIGITS.test(nameOrId) ? (byId() ?? this.#rules.get(nameOrId)) : this.#rules.get(nameOrId);
  }

  /**
   * Start-up: the state file, then the config file's rules (`configFile` names it in errors).
   * Config rules keep their ids by name, runtime rules their saved ids; a saved rule that no
   * longer validates or fits stays in the state file, not loaded.
   */
  load(configSpecs: readonly RuleSpec[], configFile?: string): void {
    const saved = this.#opts.state?.load() ?? { nextId: 1n, rules: [], configIds: new Map<string, bigint>() };
    this.#nextId = saved.nextId;
    if (configSpecs.length || configFile) {
      for (const spec of configSpecs) this.#put(spec, "config", saved.configIds.get(spec.name) ?? this.#takeId());
      const over = this.#capacity();
      if (over.length) throw new ConfigError(`${configFile}: more than the workers can hold:\n  ${over.join("\n  ")}`);
    }
    for (const r of saved.rules) {
      if (this.#rules.has(r.spec.name)) {
        log.warn(`runtime rule ${r.spec.name} overrides the config file's rule of that name`);
      }
      const shadowed = this.#rules.get(r.spec.name);
      try {
        this.#put(r.spec, "runtime", r.id, true);
        const over = this.#capacity();
        if (over.length) {
          if (shadowed) this.#rules.set(r.spec.name, shadowed);
          else this.#rules.delete(r.spec.name);
          throw new Error(over.join("; "));
        }
      } catch (err) {
        this.#unloadable.push({ saved: r, reason: (err as Error).message });
        log.error(`saved rule ${r.spec.name} is not loaded (${(err as Error).message}); it stays in the state file (status lists it; remove ${r.id} drops it)`);
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
  }

  /** Holds rules built elsewhere (`forward`'s flags); nothing is persisted for them. */
  hold(rules: readonly Rule[], origin: Origin): void {
    for (const rule of rules) this.#insert({ rule, spec: specFromRule(rule), origin, pending: [], pendingOutputs: new Map(), inputErrno: 0 });
  }

  /** Adds a runtime rule, or replaces one of that name: checked against capacity and saved first. */
  add(spec: RuleSpec, replace: boolean): { stored: StoredRule; replaced: boolean } {
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
    const unusable = this.#interfaceProblems(stored.rule);
    if (unusable.length) {
      undo();
      throw new ControlError("bad_request", `rule ${spec.name} refused, nothing changed: ${unusable.join("; ")}`);
    }
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
    return { stored, replaced: !!existing };
  }

  /** Saved rules that were not loaded at start (they stay in the state file), with why. */
  unloaded(): { name: string; id: string; reason: string }[] {
    return this.#unloadable.map((u) => ({ name: u.saved.spec.name, id: u.saved.id.toString(), reason: u.reason }));
  }

  /**
   * Drops a saved rule that was not loaded, by name or id (an id first, as find), from the state
   * file; undefined when there is none. Saved first: if the state cannot be written it stays.
   */
  removeUnloaded(nameOrId: string): { name: string; id: string; reason: string } | undefined {
    const byId = this.#unloadable.findIndex((u) => u.saved.id.toString() === nameOrId);
    const at = ALL_DIGITS.test(nameOrId) && byId >= 0 ? byId : this.#unloadable.findIndex((u) => u.saved.spec.name === nameOrId);
    if (at < 0) return undefined;
    const gone = this.#unloadable[at]!;
    const before = this.#unloadable;
    this.#unloadable = before.filter((_, i) => i !== at);
    try {
      this.#persist();
    } catch (err) {
      this.#unloadable = before;
      throw new ControlError("internal", `cannot save state, nothing changed (saved rule ${gone.saved.spec.name} is still in the state file): ${(err as Error).message}`);
    }
    return { name: gone.saved.spec.name, id: gone.saved.id.toString(), reason: gone.reason };
  }

  /**
   * Removes a rule by name or id. Saved first: if the state cannot be written the rule stays,
   * listed and forwarding, as the state file still holds it.
   */
  remove(nameOrId: string): StoredRule {
    const stored = this.find(nameOrId);
    if (!stored) throw new ControlError("not_found", `no rule named or numbered '${nameOrId}'`);
    const after = new Map(this.#rules);
    after.delete(stored.rule.name);
    try {
      this.#persist(after);
    } catch (err) {
      throw new ControlError("internal", `cannot save state, nothing changed (rule ${stored.rule.name} is still there and forwarding): ${(err as Error).message}`);
    }
    this.#rules.delete(stored.rule.name);
    return stored;
  }

  /**
   * Makes the config file's rules these, all or nothing: a spec that cannot be applied, rules
   * the workers cannot hold or a state file that cannot be written leave every rule as it was
   * (and throw). Runtime rules are kept and win over a config rule of the same name. The new
   * set is built whole and then checked: rules may swap or shift inputs between them (r1 takes
   * r2's input while r2 moves on), as a restart with the same file would load them.
   */
  applyConfig(specs: readonly RuleSpec[]): ConfigChange {
    const wanted = new Map(specs.map((s) => [s.name, s]));
    const change: ConfigChange = { added: [], removed: [], changed: [], conflicts: [], unchanged: 0 };
    const next = new Map<string, StoredRule>();
    for (const [name, s] of this.#rules) {
      if (s.origin !== "config") next.set(name, s);
      else if (!wanted.has(name)) change.removed.push(name);
    }
    const nextId = this.#nextId;
    try {
      for (const [name, spec] of wanted) {
        const s = this.#rules.get(name);
        let put: StoredRule | null = null;
        if (!s) {
          put = this.#build(spec, "config", this.#takeId());
          change.added.push(name);
        } else if (s.origin === "runtime") {
          change.conflicts.push(name);
        } else if (JSON.stringify(s.spec) !== JSON.stringify(spec)) {
          put = this.#build(spec, "config", s.rule.id);
          change.changed.push(name);
        } else {
          next.set(name, s);
        }
        if (!put) continue;
        const unusable = this.#interfaceProblems(put.rule);
        if (unusable.length) throw new Error(`rule ${name}: ${unusable.join("; ")}`);
        next.set(name, put);
      }
      const clash = inputClash(next.values());
      if (clash) throw new ControlError("exists", clash);
      // What the workers can hold, then the state file: either fails, nothing changed.
      const over = this.#capacity(next);
      if (over.length) throw new Error(over.join("; "));
      try {
        this.#persist(next);
      } catch (err) {
        throw new Error(`cannot save state: ${(err as Error).message}`);
      }
    } catch (err) {
      this.#nextId = nextId;
      throw err;
    }
    this.#rules.clear();
    for (const [k, v] of next) this.#rules.set(k, v);
    change.unchanged = wanted.size - change.added.length - change.changed.length - change.conflicts.length;
    return change;
  }

  /** Records a rule's resolution; true when its state (pending or not, and why) changed. */
  resolve(stored: StoredRule, resolution: Resolution): boolean {
    const was = resolutionKey(stored);
    stored.pending = resolution.pending;
    stored.pendingOutputs = resolution.pendingOutputs;
    return was !== resolutionKey(stored);
  }

  #interfaceProblems(rule: Rule): string[] {
    return this.#opts.lookup ? interfaceProblems(rule, this.#opts.lookup) : [];
  }

  #takeId(): bigint {
    return this.#nextId++;
  }

  #capacity(rules: Map<string, StoredRule> = this.#rules): string[] {
    return this.#opts.capacity([...rules.values()].map((s) => s.rule));
  }

  /** Writes runtime rules, and config rules' ids, to the state file (when there is one). */
  #persist(rules: Map<string, StoredRule> = this.#rules): void {
    if (!this.#opts.state) return;
    const runtime = [...rules.values()].filter((s) => s.origin === "runtime");
    const config = [...rules.values()].filter((s) => s.origin === "config");
    this.#opts.state.save({
      nextId: this.#nextId,
      rules: [...runtime.map((s) => ({ id: s.rule.id, spec: s.spec })), ...this.#unloadable.map((u) => u.saved)],
      configIds: new Map(config.map((s) => [s.rule.name, s.rule.id])),
    });
  }

  #put(spec: RuleSpec, origin: Origin, id: bigint, saved = false): StoredRule {
    return this.#insert(this.#build(spec, origin, id, saved));
  }

  /**
   * The rule of a spec, not yet held. A `saved` rule (state file) may be named with digits only,
   * as rules could be before such names were refused: it is checked under a stand-in name and
   * keeps its own (the name enters nothing else of the rule).
   */
  #build(spec: RuleSpec, origin: Origin, id: bigint, saved = false): StoredRule {
    // A config file may have such a name too (loaded with a warning, config/file.ts).
    const digits = (saved || origin === "config") && ALL_DIGITS.test(spec.name);
    const built = ruleFromSpec(digits ? { ...spec, name: DIGIT_NAME_STAND_IN } : spec, id);
    if (!built.ok) throw new ControlError("bad_request", built.problems.join("; "));
    const rule = digits ? { ...built.rule, name: spec.name } : built.rule;
    return { rule, spec, origin, pending: [], pendingOutputs: new Map(), inputErrno: 0 };
  }

  /** Two rules never relay the same input (interface, address, port, source, VLAN). */
  #insert(stored: StoredRule): StoredRule {
    const key = inputKey(stored.rule);
    for (const other of this.#rules.values()) {
      if (other.rule.name !== stored.rule.name && inputKey(other.rule) === key) {
        throw new ControlError("exists", `rule ${other.rule.name} already relays ${describeInput(stored.rule)}`);
      }
    }
    this.#rules.set(stored.rule.name, stored);
    return stored;
  }
}

/** "rule b: rule a already relays ..." for the first two rules of a set that relay the same input; null when none do. */
function inputClash(rules: Iterable<StoredRule>): string | null {
  const seen = new Map<string, StoredRule>();
  for (const s of rules) {
    const key = inputKey(s.rule);
    const other = seen.get(key);
    if (other) return `rule ${s.rule.name}: rule ${other.rule.name} already relays ${describeInput(s.rule)}`;
    seen.set(key, s);
  }
  return null;
}
