// The configuration file: JSON5, validated with valibot; every problem is reported at once as
// FILE:LINE:COLUMN: what, for syntax errors and for each invalid field. Unknown keys are errors
// naming their path.
//
// mcr's format (github.com/acooks/mcr, the earlier Rust implementation) is read as mcr reads it:
// rules with `input {interface, group, port[, protocol]}` and `outputs [{group, port,
// interface[, ttl]}]`, `multicast_ttl`, and `pinning` (interface → CPU list: that many
// workers on the interface). mcr's default TTL of 1 applies to its rules. Keys for features
// mcrelay does not have (`pim`, `igmp`, `msdp`, `control_plane`, a rule's `protocol`) are
// ignored with a warning naming each one. See docs/reference.md, "mcr's format".
import { readFileSync } from "node:fs";
import * as v from "valibot";
import { checkRule, issueMessage, issuePath, ruleFromSpec, RuleSpecSchema, ttlSchema, type RuleFields, type RuleProblem, type RuleSpec } from "./rule-spec.ts";
import { ConfigError } from "../errors.ts";
import { capacityProblems } from "../rules/capacity.ts";
import { describeInput, inputKey, pathText, problemText } from "../rules/rule.ts";
import { ListenSchema, type ListenAddress } from "./listen.ts";
import { PORT_MAX, PORT_MIN, RING_MIB_MAX, RING_MIB_MIN, WORKERS_PER_INTERFACE_MAX } from "../limits.ts";
import { Json5SyntaxError, parseJson5, positionOf, type Json5Document } from "./json5.ts";

/** mcr's TTL for relayed packets when neither the output nor `multicast_ttl` sets one. */
export const MCR_DEFAULT_TTL = 1;

const portRange = `a port is ${PORT_MIN}-${PORT_MAX}`;
const port = v.pipe(v.number("a port is a number"), v.integer("a port is a whole number"), v.minValue(PORT_MIN, portRange), v.maxValue(PORT_MAX, portRange));
const ifname = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.:@-]{1,15}$/, "an interface name is 1-15 characters"));
const ttl = ttlSchema;

const McrOutputSchema = v.strictObject({ group: v.string(), port, interface: v.optional(ifname), ttl: v.optional(ttlSchema) });

const McrRuleSchema = v.strictObject({
  name: v.optional(v.string()),
  input: v.strictObject({ interface: ifname, group: v.string(), port, protocol: v.optional(v.string()) }),
  outputs: v.pipe(v.array(McrOutputSchema), v.minLength(1, "at least one output is needed")),
});

/** Top-level keys of mcr's that concern features mcrelay does not have: read, warned, ignored. */
const IGNORED_MCR_KEYS: Record<string, string> = {
  pim: "mcrelay does not speak PIM; rules are static",
  igmp: "mcrelay is not an IGMP querier",
  msdp: "mcrelay does not speak MSDP",
  control_plane: "mcrelay has no external control-plane integration",
};

const workerCount = v.pipe(v.number("a worker count is a number"), v.integer("a worker count is a whole number"), v.minValue(1, "at least 1 worker"), v.maxValue(WORKERS_PER_INTERFACE_MAX, `at most ${WORKERS_PER_INTERFACE_MAX} workers`));

const TopSchema = v.strictObject({
  rules: v.optional(v.array(v.unknown(), "rules is a list of rules: [ { name, from, to }, ... ]")),
  /**
   * Worker processes: `workers: 2` (each input interface is spread over all of them; default 1,
   * or `mcrelay run --workers`), or per input interface: { eth0: 2 } (interface eth0 on workers
   * 0 and 1, the others on worker 0; the number of processes is the largest count).
   */
  workers: v.optional(
    v.union(
      [workerCount, v.record(ifname, workerCount)],
      `workers is a number of worker processes (workers: 2) or a count per input interface (workers: { eth0: 2 }), between 1 and ${WORKERS_PER_INTERFACE_MAX}`,
    ),
  ),
  /** Ring per packet socket in MiB, per input interface: { eth0: 64 } (`mcrelay run --ring-mib` for the others). */
  ring_mib: v.optional(v.record(ifname, v.pipe(v.number("a ring size is a number of MiB"), v.integer("a ring size is a whole number of MiB"), v.minValue(RING_MIB_MIN, `at least ${RING_MIB_MIN} MiB`), v.maxValue(RING_MIB_MAX, `at most ${RING_MIB_MAX} MiB`)))),
  /** `ADDR:PORT` of the HTTP listener for /metrics, /healthz, /readyz (`run --metrics` overrides). */
  metrics: v.optional(ListenSchema),
  /** mcr: default TTL of its rules' outputs. */
  multicast_ttl: v.optional(ttlSchema),
  /** mcr: CPUs per input interface; one worker per CPU listed. */
  pinning: v.optional(
    v.record(ifname, v.pipe(v.array(v.pipe(v.number("a CPU is a number"), v.integer("a CPU is a whole number"), v.minValue(0, "a CPU number is 0 or more"))), v.minLength(1, "list at least one CPU"), v.maxLength(WORKERS_PER_INTERFACE_MAX, `at most ${WORKERS_PER_INTERFACE_MAX} workers`))),
  ),
  ...Object.fromEntries(Object.keys(IGNORED_MCR_KEYS).map((k) => [k, v.optional(v.unknown())])),
});

/** A problem (or warning) in a config file, where it is and what it is. */
export const ConfigProblemSchema = v.strictObject({
  file: v.string(),
  /** Line and column from 1; null when the problem has no place (a file that cannot be read). */
  line: v.nullable(v.pipe(v.number(), v.integer(), v.minValue(1))),
  column: v.nullable(v.pipe(v.number(), v.integer(), v.minValue(1))),
  /** The key path (`rules[1].to[0]`); null for a syntax error. */
  path: v.nullable(v.string()),
  message: v.string(),
});
export type ConfigProblem = v.InferOutput<typeof ConfigProblemSchema>;

/** "FILE:LINE:COLUMN: message" (or "FILE: message" without a place). */
export function formatProblem(p: ConfigProblem): string {
  return p.line === null ? `${p.file}: ${p.message}` : `${p.file}:${p.line}:${p.column}: ${p.message}`;
}

/** A config file with problems: every one of them, in file order, and the warnings. */
export class ConfigFileError extends ConfigError {
  constructor(
    readonly problems: ConfigProblem[],
    readonly warnings: ConfigProblem[] = [],
  ) {
    super(problems.map(formatProblem).join("\n"));
  }
}

export interface LoadedConfig {
  path: string;
  /** "mcr" when the file uses any of mcr's keys (its rule form, pinning, multicast_ttl, ...). */
  format: "mcrelay" | "mcr";
  specs: RuleSpec[];
  /** Workers per interface, from `workers: { ... }` and from mcr's `pinning`. */
  workers: Map<string, number>;
  /** A plain `workers: N`: every interface's count unless set per interface; null if absent. */
  workersDefault: number | null;
  /** mcr's `pinning`: the CPUs listed per interface (kept for reporting; see docs). */
  pinning: Map<string, number[]>;
  warnings: ConfigProblem[];
  /** Ring size in MiB per interface (`ring_mib`). */
  ringMib: Map<string, number>;
  /** `ADDR:PORT` of the HTTP listener for /metrics, /healthz, /readyz, or null. */
  metrics: ListenAddress | null;
}

/** Reads, parses and validates a config file completely; throws ConfigFileError listing every problem. */
export function loadConfig(path: string): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ConfigFileError([{ file: path, line: null, column: null, path: null, message: `cannot read: ${why}` }]);
  }
  return parseConfig(text, path);
}

function endpointText(addr: string, p: number, iface?: string): string {
  const a = addr.includes(":") ? `[${addr}]` : addr;
  return `${a}:${p}${iface ? `@${iface}` : ""}`;
}

/** Collects problems with their places in one document. */
class Problems {
  readonly list: ConfigProblem[] = [];
  constructor(
    readonly file: string,
    readonly doc: Json5Document,
  ) {}

  /** `path` places it; `label` starts the message (default: the path). */
  add(path: string, message: string, o: { label?: string; key?: boolean } = {}): void {
    const at = positionOf(this.doc, path, o.key);
    const label = o.label ?? path;
    this.list.push({ file: this.file, line: at?.line ?? null, column: at?.column ?? null, path: path || null, message: label ? `${label}: ${message}` : message });
  }

  /** Each valibot issue at its own path under `prefix`; an unknown key is placed at the key. */
  issues(issues: readonly v.BaseIssue<unknown>[], prefix = ""): void {
    for (const issue of issues) {
      let path = prefix;
      for (const item of issue.path ?? []) path += typeof item.key === "number" ? `[${item.key}]` : path ? `.${String(item.key)}` : String(item.key);
      const unknownKey = issue.kind === "schema" && issue.expected === "never";
      this.add(path, issueMessage(issue), { key: unknownKey });
    }
  }

  sorted(): ConfigProblem[] {
    return [...this.list].sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
  }
}

export function parseConfig(text: string, path: string): LoadedConfig {
  let doc: Json5Document;
  try {
    doc = parseJson5(text);
  } catch (err) {
    if (err instanceof Json5SyntaxError) {
      throw new ConfigFileError([{ file: path, line: err.line, column: err.column, path: null, message: `not valid JSON5: ${err.message}` }]);
    }
    throw err;
  }
  const problems = new Problems(path, doc);
  const warnings = new Problems(path, doc);
  // JSON5 keeps the last of two equal keys: a second `rules` would drop every rule above it.
  for (const d of doc.duplicates) {
    problems.list.push({ file: path, line: d.at.line, column: d.at.column, path: d.path, message: `${d.path}: given twice (first at line ${d.first.line}, column ${d.first.column}); one of them would be ignored` });
  }
  const raw = doc.value;
  // The document is one object; an array passed the object schema (no keys: "ok, 0 rules").
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    const found = raw === null ? "null" : Array.isArray(raw) ? "a list" : typeof raw === "string" ? "a string" : `a ${typeof raw}`;
    problems.add("", `the file is one object ({ rules: [...] }), not ${found}`);
    throw new ConfigFileError(problems.sorted());
  }
  const top = v.safeParse(TopSchema, raw);
  if (!top.success) problems.issues(top.issues);
  const cfg = top.success ? top.output : null;
  const rawObject = raw !== null && typeof raw === "object" && !Array.isArray(raw) ? (raw as Record<string, unknown>) : {};
  const rawRules = Array.isArray(rawObject.rules) ? rawObject.rules : [];
  let mcr = ["pinning", "multicast_ttl", ...Object.keys(IGNORED_MCR_KEYS)].some((k) => k in rawObject);
  for (const [key, why] of Object.entries(IGNORED_MCR_KEYS)) {
    if (key in rawObject) warnings.add(key, `ignored: ${why}`, { key: true });
  }

  const workersDefault = typeof cfg?.workers === "number" ? cfg.workers : null;
  const workers = new Map(Object.entries(typeof cfg?.workers === "object" ? cfg.workers : {}));
  const pinning = new Map(Object.entries(cfg?.pinning ?? {}));
  for (const [iface, cpus] of pinning) {
    if (workers.has(iface)) problems.add(`pinning.${iface}`, `interface ${iface} has workers set too; use one of workers and pinning`, { key: true });
    else workers.set(iface, cpus.length);
  }

  // Each rule on its own: the schema chosen by its own keys (union errors would hide which
  // form was meant), then its meaning (endpoints, interfaces), then names and inputs across
  // rules. A check across rules runs when the fields it reads are valid, even if another field
  // of the rule is not: fixing a rule's shape should not reveal that its name is taken.
  const specs: RuleSpec[] = [];
  const names = new Map<string, number>();
  const inputs = new Map<string, number>();
  rawRules.forEach((r, i) => {
    const at = `rules[${i}]`;
    const isMcr = r !== null && typeof r === "object" && "input" in r;
    mcr ||= isMcr;
    const { spec, fields } = isMcr ? mcrRule(r, i, cfg?.multicast_ttl, problems, warnings) : ourRule(r, i, problems);
    if (spec) specs.push(spec);
    if (!fields) return;
    const { name, input, source, vlan } = fields;
    if (input !== undefined && source !== undefined && vlan !== undefined) {
      const key = inputKey({ input, source, vlan });
      const other = inputs.get(key);
      const label = name !== undefined ? `${at} (${name})` : at;
      if (other !== undefined) problems.add(isMcr ? `${at}.input` : `${at}.from`, `relays the same input as rules[${other}] (${describeInput({ input, source, vlan })})`, { label });
      else inputs.set(key, i);
    }
    if (name !== undefined) {
      const first = names.get(name);
      if (first !== undefined) problems.add(`${at}.name`, `name '${name}' is already used by rules[${first}]`, { label: at });
      else names.set(name, i);
    }
  });
  if (problems.list.length === 0) {
    // What a worker can hold, per interface and worker (with the file's worker counts, else 1).
    const rules = specs.map((spec, i) => ruleFromSpec(spec, BigInt(i + 1))).flatMap((b) => (b.ok ? [b.rule] : []));
    for (const p of capacityProblems(rules, (iface) => workers.get(iface) ?? workersDefault ?? 1)) problems.add("rules", p, { label: "" });
  }
  if (problems.list.length) throw new ConfigFileError(problems.sorted(), warnings.sorted());
  return { path, format: mcr ? "mcr" : "mcrelay", specs, workers, workersDefault, pinning, warnings: warnings.sorted(), ringMib: new Map(Object.entries(cfg?.ring_mib ?? {})), metrics: cfg?.metrics ?? null };
}

/** "rules[1] (name): to[1]: message" at the field's place; mcr's input and outputs stand for `from` and `to`. */
function addRuleProblem(problems: Problems, p: RuleProblem, at: string, name: unknown, mcr: boolean): void {
  const label = typeof name === "string" && name ? `${at} (${name})` : at;
  problems.add(placeOf(p.path, at, mcr), problemText(p), { label });
}

/** The key path of a rule problem (["to", 1] → rules[i].to[1]; mcr's form: rules[i].outputs[1]). */
function placeOf(path: RuleProblem["path"], at: string, mcr: boolean): string {
  if (!mcr) return pathText(path, at);
  const [field, index] = path;
  if (field === "name") return `${at}.name`;
  if (field === "from") return `${at}.input`;
  if (field === "to") return typeof index === "number" ? `${at}.outputs[${index}]` : `${at}.outputs`;
  return at;
}

/** True when one path is the other or lies under it (`to` and `to[1].ttl`). */
function overlaps(a: string, b: string): boolean {
  const under = (x: string, y: string) => y === x || y.startsWith(`${x}.`) || y.startsWith(`${x}[`);
  return under(a, b) || under(b, a);
}

/** A rule read: its spec when its shape is right, and its valid fields (null: none can be read). */
interface ReadRule {
  spec: RuleSpec | null;
  fields: RuleFields | null;
}

/** A rule of the right shape: every problem of its meaning, placed by its path. */
function checkSpec(spec: RuleSpec, i: number, problems: Problems, mcr: boolean): ReadRule {
  const built = checkRule(spec, BigInt(i + 1));
  if (built.ok) return { spec, fields: built.rule };
  for (const p of built.problems) addRuleProblem(problems, p, `rules[${i}]`, spec.name, mcr);
  return { spec, fields: built.fields };
}

function ourRule(r: unknown, i: number, problems: Problems): ReadRule {
  const parsed = v.safeParse(RuleSpecSchema, r);
  if (parsed.success) return checkSpec(parsed.output, i, problems, false);
  const at = `rules[${i}]`;
  problems.issues(parsed.issues, at);
  // The shape is wrong somewhere: the meaning of the other fields is still checked, so one run
  // reports every problem of the rule. A field already reported is not reported again, and the
  // checks across fields run on valid fields only (checkRule), so nothing is a mere consequence.
  if (r === null || typeof r !== "object" || Array.isArray(r)) return { spec: null, fields: null };
  const reported = parsed.issues.map((issue) => issuePath(issue));
  const bad = (path: string) => reported.some((shape) => overlaps(shape, path));
  const built = checkRule(r as Record<string, unknown>, BigInt(i + 1));
  const read = built.ok ? built.rule : built.fields;
  // What the shape refused is not valid, whatever its meaning (checkRule's schemas are the
  // stricter ones; this keeps a check across rules off a field reported here).
  const fields: RuleFields = {
    name: bad("name") ? undefined : read.name,
    input: bad("from") ? undefined : read.input,
    source: bad("source") ? undefined : read.source,
    vlan: bad("from") || bad("vlan") ? undefined : read.vlan,
    outputs: read.outputs,
  };
  if (!built.ok) {
    for (const p of built.problems) if (p.path.length === 0 || !bad(pathText(p.path))) addRuleProblem(problems, p, at, fields.name, false);
  }
  return { spec: null, fields };
}

/** mcr's rule; with a wrong shape (or ESP), the name and the input for the checks across rules, when they are valid. */
function mcrRule(r: unknown, i: number, multicastTtl: number | undefined, problems: Problems, warnings: Problems): ReadRule {
  const spec = mcrSpec(r, i, multicastTtl, problems, warnings);
  if (spec) return checkSpec(spec, i, problems, true);
  const o = r as Record<string, unknown>;
  const name = v.safeParse(McrRuleSchema.entries.name, o.name);
  const input = isEsp(r) ? null : v.safeParse(McrRuleSchema.entries.input, o.input);
  const part: Record<string, unknown> = {
    name: name.success ? (name.output ?? `rule-${i + 1}`) : undefined,
    from: input?.success ? endpointText(input.output.group, input.output.port, input.output.interface) : undefined,
  };
  // Only its fields: the problems of a part of a rule were reported by its shape, or are not yet.
  const built = checkRule(part, BigInt(i + 1));
  return { spec: null, fields: built.ok ? built.rule : built.fields };
}

/** mcr relays ESP for protocol "esp" (any case); mcrelay refuses such a rule. */
function isEsp(r: unknown): boolean {
  const protocol = (r as { input?: { protocol?: unknown } }).input?.protocol;
  return typeof protocol === "string" && protocol.toLowerCase() === "esp";
}

function mcrSpec(r: unknown, i: number, multicastTtl: number | undefined, problems: Problems, warnings: Problems): RuleSpec | null {
  const at = `rules[${i}]`;
  // mcr relays ESP for protocol "esp" and UDP for anything else. mcrelay relays UDP only:
  // relaying UDP where ESP was meant would be another rule, so ESP is refused; anything else
  // is UDP, as in mcr, and the key is ignored with a warning.
  const protocol = (r as { input?: { protocol?: unknown } }).input?.protocol;
  const esp = isEsp(r);
  if (esp) problems.add(`${at}.input.protocol`, "'esp': mcrelay relays UDP only, not ESP (IP protocol 50)");
  else if (protocol !== undefined) warnings.add(`${at}.input.protocol`, `ignored (${JSON.stringify(protocol)}): mcr relays UDP for it, as mcrelay does`, { key: true });
  const parsed = v.safeParse(McrRuleSchema, r);
  if (!parsed.success) {
    problems.issues(parsed.issues, at);
    return null;
  }
  if (esp) return null;
  const rule = parsed.output;
  // One TTL for every output is the rule's; otherwise each output keeps its own (the object
  // form), the others take multicast_ttl or mcr's default (1).
  const ttls = new Set(rule.outputs.map((o) => o.ttl ?? multicastTtl ?? MCR_DEFAULT_TTL));
  const ruleTtl = ttls.size === 1 ? [...ttls][0]! : (multicastTtl ?? MCR_DEFAULT_TTL);
  return {
    name: rule.name ?? `rule-${i + 1}`,
    from: endpointText(rule.input.group, rule.input.port, rule.input.interface),
    to: rule.outputs.map((o) => {
      const to = endpointText(o.group, o.port, o.interface);
      return o.ttl !== undefined && o.ttl !== ruleTtl ? { to, ttl: o.ttl } : to;
    }),
    ttl: ruleTtl,
  };
}
