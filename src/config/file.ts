// The configuration file: JSON5, validated with valibot; every problem is reported at once as
// FILE:LINE:COLUMN: what, for syntax errors and for each invalid field. Unknown keys are errors
// naming their path.
//
// mcr's format (github.com/acooks/mcr, the earlier Rust implementation) is read as mcr reads it:
// rules with `input {interface, group, port[, protocol]}` and `outputs [{group, port,
// interface[, ttl]}]`, `multicast_ttl`, and `pinning` (interface → CPU list: that many
// workers on the interface). mcr's default TTL of 1 applies to its rules. Keys for features
// mcrelay does not have (`pim`, `igmp`, `msdp`, `control_plane`, a rule's `protocol`) are
// ignored with a warning naming each one. Each of its keys gets the checks our format gives the
// same value (address, port, interface, TTL, name, and those across fields), with problems at
// mcr's key paths (`rules[2].outputs[0].group`). See docs/reference.md, "mcr's format".
import { readFileSync } from "node:fs";
import * as v from "valibot";
import { ALL_DIGITS, checkRule, DIGIT_NAME_STAND_IN, issueMessage, issuePath, nameSchema, ruleFromSpec, RuleSpecSchema, savedNameSchema, ttlSchema, type RuleFields, type RuleProblem, type RuleSpec } from "./rule-spec.ts";
import { ConfigError } from "../errors.ts";
import { capacityProblems } from "../rules/capacity.ts";
import { describeInput, inputKey, pathText, problemText } from "../rules/rule.ts";
import { parseIp } from "../base/address.ts";
import { addressRoleProblem, IFNAME, interfaceRoleProblem } from "../base/endpoint.ts";
import { ListenSchema, type ListenAddress } from "./listen.ts";
import { PORT_MAX, PORT_MIN, RING_MIB_MAX, RING_MIB_MIN, WORKERS_PER_INTERFACE_MAX } from "../limits.ts";
import { Json5SyntaxError, parseJson5, positionOf, type Json5Document } from "./json5.ts";

/** mcr's TTL for relayed packets when neither the output nor `multicast_ttl` sets one. */
export const MCR_DEFAULT_TTL = 1;

const portRange = `a port is ${PORT_MIN}-${PORT_MAX}`;
const port = v.pipe(v.number("a port is a number"), v.integer("a port is a whole number"), v.minValue(PORT_MIN, portRange), v.maxValue(PORT_MAX, portRange));
const ifname = v.pipe(v.string(), v.regex(IFNAME, "an interface name is 1-15 characters"));

/** mcr's `group` (an address, as our endpoints check theirs), kept as written. */
function mcrGroup(role: "input" | "output") {
  return v.pipe(
    v.string('a group is an IP address in quotes ("239.1.1.1")'),
    v.rawCheck(({ dataset, addIssue }) => {
      if (!dataset.typed) return;
      const addr = parseIp(dataset.value);
      const problem = addr ? addressRoleProblem(addr, role) : `'${dataset.value}' is not an IPv4 or IPv6 address`;
      if (problem) addIssue({ message: problem });
    }),
  );
}

/** mcr's `interface`: a name as our endpoints take after `@`. */
const mcrInterface = v.pipe(
  v.string("an interface name is a string"),
  v.regex(IFNAME, (issue) => `interface name '${String(issue.input)}' is not valid (1-15 characters: letters, digits, _ . : -)`),
);

const McrInputSchema = v.strictObject({ interface: mcrInterface, group: mcrGroup("input"), port, protocol: v.optional(v.unknown()) }, "an input is { interface, group, port }");

/** An output; a multicast (or link-local) group needs its interface, as in our format. */
const McrOutputSchema = v.pipe(
  v.strictObject({ group: mcrGroup("output"), port, interface: v.optional(mcrInterface), ttl: v.optional(ttlSchema) }, "an output is { group, port, interface?, ttl? }"),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const o = dataset.value;
    const addr = parseIp(o.group);
    const problem = addr && interfaceRoleProblem({ addr, port: o.port, iface: o.interface ?? null }, "output");
    if (problem) addIssue({ message: `missing: an output to ${o.group} needs its interface`, path: [{ type: "object", origin: "value", input: o, key: "interface", value: undefined }] });
  }),
);

/** A rule's keys; each key's value is checked on its own (one bad output leaves the others checked). */
const McrRuleKeysSchema = v.strictObject({ name: v.optional(v.unknown()), input: v.unknown(), outputs: v.unknown() });
const mcrOutputListSchema = v.array(v.unknown(), "outputs is a list of outputs: [ { group, port, interface }, ... ]");

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
    const { spec, fields } = isMcr ? mcrRule(r as object, i, cfg?.multicast_ttl, problems, warnings) : ourRule(r, i, problems, warnings);
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

/** "rules[1] (name): to[1]: message", at the field's place (rules[1].to[1]). */
function addRuleProblem(problems: Problems, p: RuleProblem, at: string, name: unknown): void {
  problems.add(pathText(p.path, at), problemText(p), { label: ruleLabel(at, name) });
}

/** "rules[1] (name)", or "rules[1]" when the name is not known. */
function ruleLabel(at: string, name: unknown): string {
  return typeof name === "string" && name ? `${at} (${name})` : at;
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

/**
 * A config rule named with digits only: such names were allowed before they were refused for new
 * rules (`remove 5` reads 5 as an id first). A file that has one still loads, with a warning, so
 * that an upgrade does not stop a daemon whose rules are named by channel number; the rule is
 * checked under a stand-in name and keeps its own (the rule store does the same).
 */
function digitName(r: unknown, at: string, warnings: Problems): string | null {
  if (r === null || typeof r !== "object" || Array.isArray(r)) return null;
  const name = (r as { name?: unknown }).name;
  if (typeof name !== "string" || !ALL_DIGITS.test(name) || !v.is(savedNameSchema, name)) return null;
  warnings.add(`${at}.name`, `'${name}' is all digits: remove, stats and trace read '${name}' as a rule id first, and new rules may not be named so; rename it (a name needs a letter or one of _ . -)`);
  return name;
}

function ourRule(raw: unknown, i: number, problems: Problems, warnings: Problems): ReadRule {
  const digits = digitName(raw, `rules[${i}]`, warnings);
  const r = digits === null ? raw : { ...(raw as object), name: DIGIT_NAME_STAND_IN };
  const own = <T extends { name?: unknown }>(x: T): T => (digits === null ? x : { ...x, name: digits });
  const parsed = v.safeParse(RuleSpecSchema, r);
  if (parsed.success) {
    // The right shape: every problem of its meaning, at its field.
    const built = checkRule(parsed.output, BigInt(i + 1));
    const spec = own(parsed.output);
    if (built.ok) return { spec, fields: own(built.rule) };
    for (const p of built.problems) addRuleProblem(problems, p, `rules[${i}]`, spec.name);
    return { spec, fields: own(built.fields) };
  }
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
    name: bad("name") ? undefined : digits ?? read.name,
    input: bad("from") ? undefined : read.input,
    source: bad("source") ? undefined : read.source,
    vlan: bad("from") || bad("vlan") ? undefined : read.vlan,
    outputs: read.outputs,
  };
  if (!built.ok) {
    for (const p of built.problems) if (p.path.length === 0 || !bad(pathText(p.path))) addRuleProblem(problems, p, at, fields.name);
  }
  return { spec: null, fields };
}

/**
 * mcr's rule, checked key by key at mcr's paths: the rule's keys, its name, its input, each
 * output (address, port, interface, TTL: our format's checks on the same values), then the
 * checks across fields (checkRule: an output on the input interface, the same output twice, the
 * number of outputs) on the parts that are valid, each problem at the mcr key it is about. Its
 * spec when it has no problem; its valid fields for the checks across rules (not an ESP rule's
 * input: mcrelay would relay another protocol than the one meant).
 */
function mcrRule(r: object, i: number, multicastTtl: number | undefined, problems: Problems, warnings: Problems): ReadRule {
  const at = `rules[${i}]`;
  const o = r as Record<string, unknown>;
  const before = problems.list.length;
  // mcr relays ESP for protocol "esp" and UDP for anything else. mcrelay relays UDP only:
  // relaying UDP where ESP was meant would be another rule, so ESP is refused; anything else
  // is UDP, as in mcr, and the key is ignored with a warning.
  const protocol = (o.input as { protocol?: unknown } | null | undefined)?.protocol;
  const esp = typeof protocol === "string" && protocol.toLowerCase() === "esp";
  if (esp) problems.add(`${at}.input.protocol`, "'esp': mcrelay relays UDP only, not ESP (IP protocol 50)");
  else if (protocol !== undefined) warnings.add(`${at}.input.protocol`, `ignored (${JSON.stringify(protocol)}): mcr relays UDP for it, as mcrelay does`, { key: true });

  /** A part's value, or undefined with its problems added at its mcr path. */
  const part = <S extends v.GenericSchema>(path: string, schema: S, value: unknown): v.InferOutput<S> | undefined => {
    const parsed = v.safeParse(schema, value);
    if (parsed.success) return parsed.output;
    problems.issues(parsed.issues, path);
    return undefined;
  };
  part(at, McrRuleKeysSchema, o);
  const digits = digitName(o, at, warnings);
  const name = o.name === undefined ? `rule-${i + 1}` : (digits ?? part(`${at}.name`, nameSchema, o.name));
  const input = o.input === undefined ? undefined : part(`${at}.input`, McrInputSchema, o.input);
  const list = o.outputs === undefined ? undefined : part(`${at}.outputs`, mcrOutputListSchema, o.outputs);
  const outputs = (list ?? []).map((out, j) => part(`${at}.outputs[${j}]`, McrOutputSchema, out));

  // One TTL for every output is the rule's; otherwise each output keeps its own (the object
  // form), the others take multicast_ttl or mcr's default (1).
  const ttls = new Set(outputs.flatMap((out) => (out ? [out.ttl ?? multicastTtl ?? MCR_DEFAULT_TTL] : [])));
  const ruleTtl = ttls.size === 1 ? [...ttls][0]! : (multicastTtl ?? MCR_DEFAULT_TTL);
  // The rule in our form, an invalid part left out (an invalid output as null, so the others
  // keep their index): checkRule's problems about those parts are the ones reported above.
  const spec: Record<string, unknown> = {
    name,
    from: input ? endpointText(input.group, input.port, input.interface) : undefined,
    to: list
      ? outputs.map((out) => {
          if (!out) return null;
          const to = endpointText(out.group, out.port, out.interface);
          return out.ttl !== undefined && out.ttl !== ruleTtl ? { to, ttl: out.ttl } : to;
        })
      : undefined,
    ttl: ruleTtl,
  };
  const built = checkRule(digits === null ? spec : { ...spec, name: DIGIT_NAME_STAND_IN }, BigInt(i + 1));
  const fields = digits === null ? (built.ok ? built.rule : built.fields) : { ...(built.ok ? built.rule : built.fields), name: digits };
  if (!built.ok) {
    for (const p of built.problems) {
      const place = mcrPlace(p.path, at, { name: name !== undefined, input: input !== undefined, outputs: list === undefined ? null : outputs.map((out) => out !== undefined) });
      if (place === null) continue;
      problems.add(place, p.message, { label: p.named ? ruleLabel(at, name) : place });
    }
  }
  const read = esp ? { ...fields, input: undefined } : fields;
  return { spec: problems.list.length === before && built.ok ? (spec as RuleSpec) : null, fields: read };
}

/**
 * The mcr key path of a problem checkRule found in a rule read from mcr's form (`from` is
 * `input`, `to[1]` is `outputs[1]`), or null when it is about a part that was invalid (its
 * problems were reported at mcr's keys).
 */
function mcrPlace(path: RuleProblem["path"], at: string, valid: { name: boolean; input: boolean; outputs: boolean[] | null }): string | null {
  const [field, index] = path;
  switch (field) {
    case "name":
      return valid.name ? `${at}.name` : null;
    case "from":
      return valid.input ? `${at}.input` : null;
    case "to":
      if (valid.outputs === null) return null;
      if (typeof index !== "number") return `${at}.outputs`;
      return valid.outputs[index] ? `${at}.outputs[${index}]` : null;
    default:
      // The TTL comes from mcr's valid TTLs; nothing else is in the spec.
      return at;
  }
}
