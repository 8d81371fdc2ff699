// The configuration file: JSON5, validated with valibot; unknown keys are errors naming their
// path. Also reads the rule section of the earlier Rust implementation's config (rules with
// `input {interface, group, port}` and `outputs [{group, port, interface, ttl}]`, plus
// `multicast_ttl`) so its users can switch without rewriting.
import { readFileSync } from "node:fs";
import * as v from "valibot";
import { formatIssues, ruleFromSpec, RuleSpecSchema, ttlSchema, type RuleSpec } from "./rule-spec.ts";
import { ConfigError } from "../errors.ts";
import { capacityProblems } from "../rules/capacity.ts";
import { describeInput, inputKey } from "../rules/rule.ts";
import { ListenSchema, type ListenAddress } from "./listen.ts";
import { PORT_MAX, PORT_MIN, RING_MIB_MAX, RING_MIB_MIN, WORKERS_PER_INTERFACE_MAX } from "../limits.ts";

const portRange = `a port is ${PORT_MIN}-${PORT_MAX}`;
const port = v.pipe(v.number("a port is a number"), v.integer(), v.minValue(PORT_MIN, portRange), v.maxValue(PORT_MAX, portRange));
const ifname = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.:@-]{1,15}$/, "an interface name is 1-15 characters"));

const LegacyOutputSchema = v.strictObject({
  group: v.string(),
  port,
  interface: v.optional(ifname),
  ttl: v.optional(ttlSchema),
});

const LegacyRuleSchema = v.strictObject({
  name: v.optional(v.string()),
  input: v.strictObject({ interface: ifname, group: v.string(), port }),
  outputs: v.pipe(v.array(LegacyOutputSchema), v.minLength(1, "at least one output is needed")),
});

export const ConfigSchema = v.strictObject({
  rules: v.optional(v.array(v.union([RuleSpecSchema, LegacyRuleSchema], "a rule is {name, from, to[, ttl, source]} or the earlier {name, input, outputs}"))),
  /** Workers per input interface: { eth0: 2 } (default 1, or `mcrelay run --workers`). */
  workers: v.optional(v.record(ifname, v.pipe(v.number("a worker count is a number"), v.integer(), v.minValue(1, "at least 1 worker"), v.maxValue(WORKERS_PER_INTERFACE_MAX, `at most ${WORKERS_PER_INTERFACE_MAX} workers`)))),
  /** Ring per packet socket in MiB, per input interface: { eth0: 64 } (`mcrelay run --ring-mib` for the others). */
  ring_mib: v.optional(v.record(ifname, v.pipe(v.number("a ring size is a number of MiB"), v.integer("a ring size is a whole number of MiB"), v.minValue(RING_MIB_MIN, `at least ${RING_MIB_MIN} MiB`), v.maxValue(RING_MIB_MAX, `at most ${RING_MIB_MAX} MiB`)))),
  /** `ADDR:PORT` of the HTTP listener for /metrics, /healthz, /readyz (`run --metrics` overrides). */
  metrics: v.optional(ListenSchema),
  /** Default TTL of the earlier format's outputs. */
  multicast_ttl: v.optional(ttlSchema),
});
export type ConfigFile = v.InferOutput<typeof ConfigSchema>;

function endpointText(addr: string, p: number, iface?: string): string {
  const a = addr.includes(":") ? `[${addr}]` : addr;
  return `${a}:${p}${iface ? `@${iface}` : ""}`;
}

export interface LoadedConfig {
  path: string;
  specs: RuleSpec[];
  workers: Map<string, number>;
  ringMib: Map<string, number>;
  metrics: ListenAddress | null;
}

/** Reads, parses and validates a config file completely; throws ConfigError listing every problem. */
export function loadConfig(path: string): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`${path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return parseConfig(text, path);
}

/** Top-level keys, with rules checked one by one below (so every rule's problems are listed). */
const TopSchema = v.strictObject({ ...ConfigSchema.entries, rules: v.optional(v.array(v.unknown())) });

export function parseConfig(text: string, path: string): LoadedConfig {
  let raw: unknown;
  try {
    raw = Bun.JSON5.parse(text);
  } catch (err) {
    throw new ConfigError(`${path}: not valid JSON5: ${(err as Error).message}`);
  }
  const problems: string[] = [];
  const top = v.safeParse(TopSchema, raw);
  if (!top.success) problems.push(...formatIssues(top.issues));
  const cfg = top.success ? top.output : null;
  const rawRules = raw && typeof raw === "object" && Array.isArray((raw as { rules?: unknown }).rules) ? (raw as { rules: unknown[] }).rules : [];

  // Each rule on its own: the schema chosen by its own keys (union errors would hide which
  // form was meant), then its meaning (endpoints, interfaces), then names across rules.
  const specs: RuleSpec[] = [];
  const names = new Map<string, number>();
  const inputs = new Map<string, number>();
  rawRules.forEach((r, i) => {
    const legacy = r !== null && typeof r === "object" && "input" in r;
    const spec = legacy ? legacySpec(r, i, cfg?.multicast_ttl, problems) : ourSpec(r, i, problems);
    if (!spec) return;
    const built = ruleFromSpec(spec, BigInt(i + 1));
    if (!built.ok) problems.push(...built.problems.map((p) => `rules[${i}] (${spec.name}): ${p}`));
    else {
      const key = inputKey(built.rule);
      const other = inputs.get(key);
      if (other !== undefined) problems.push(`rules[${i}] (${spec.name}): relays the same input as rules[${other}] (${describeInput(built.rule)})`);
      else inputs.set(key, i);
    }
    const first = names.get(spec.name);
    if (first !== undefined) problems.push(`rules[${i}]: name '${spec.name}' is already used by rules[${first}]`);
    else names.set(spec.name, i);
    specs.push(spec);
  });
  const workers = new Map(Object.entries(cfg?.workers ?? {}));
  if (problems.length === 0) {
    // What a worker can hold, per interface and worker (with the file's worker counts, else 1).
    const rules = specs.map((spec, i) => ruleFromSpec(spec, BigInt(i + 1))).flatMap((b) => (b.ok ? [b.rule] : []));
    problems.push(...capacityProblems(rules, (iface) => workers.get(iface) ?? 1));
  }
  if (problems.length) throw new ConfigError(`${path}:\n  ${problems.join("\n  ")}`);
  return { path, specs, workers, ringMib: new Map(Object.entries(cfg?.ring_mib ?? {})), metrics: cfg?.metrics ?? null };
}

function ourSpec(r: unknown, i: number, problems: string[]): RuleSpec | null {
  const parsed = v.safeParse(RuleSpecSchema, r);
  if (!parsed.success) {
    problems.push(...formatIssues(parsed.issues, `rules[${i}]`));
    return null;
  }
  return parsed.output;
}

function legacySpec(r: unknown, i: number, multicastTtl: number | undefined, problems: string[]): RuleSpec | null {
  const parsed = v.safeParse(LegacyRuleSchema, r);
  if (!parsed.success) {
    problems.push(...formatIssues(parsed.issues, `rules[${i}]`));
    return null;
  }
  const rule = parsed.output;
  // One TTL for every output is the rule's; otherwise each output keeps its own (the object
  // form), the others take multicast_ttl or the default.
  const ttls = new Set(rule.outputs.map((o) => o.ttl ?? multicastTtl));
  const ruleTtl = ttls.size === 1 ? rule.outputs[0]!.ttl ?? multicastTtl : multicastTtl;
  const spec: RuleSpec = {
    name: rule.name ?? `rule-${i + 1}`,
    from: endpointText(rule.input.group, rule.input.port, rule.input.interface),
    to: rule.outputs.map((o) => {
      const to = endpointText(o.group, o.port, o.interface);
      return o.ttl !== undefined && o.ttl !== ruleTtl ? { to, ttl: o.ttl } : to;
    }),
  };
  if (ruleTtl !== undefined) spec.ttl = ruleTtl;
  return spec;
}
