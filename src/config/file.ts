// The configuration file: JSON5, validated with valibot; unknown keys are errors naming their
// path. Also reads the rule section of the earlier Rust implementation's config (rules with
// `input {interface, group, port}` and `outputs [{group, port, interface, ttl}]`, plus
// `multicast_ttl`) so its users can switch without rewriting.
import { readFileSync } from "node:fs";
import * as v from "valibot";
import { formatIssues, ruleFromSpec, RuleSpecSchema, type RuleSpec } from "./rule-spec.ts";
import { ConfigError } from "../errors.ts";

const port = v.pipe(v.number("a port is a number"), v.integer(), v.minValue(1, "a port is 1-65535"), v.maxValue(65535, "a port is 1-65535"));
const ifname = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.:@-]{1,15}$/, "an interface name is 1-15 characters"));

const LegacyOutputSchema = v.strictObject({
  group: v.string(),
  port,
  interface: v.optional(ifname),
  ttl: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(255))),
});

const LegacyRuleSchema = v.strictObject({
  name: v.optional(v.string()),
  input: v.strictObject({ interface: ifname, group: v.string(), port }),
  outputs: v.pipe(v.array(LegacyOutputSchema), v.minLength(1, "at least one output is needed")),
});

export const ConfigSchema = v.strictObject({
  rules: v.optional(v.array(v.union([RuleSpecSchema, LegacyRuleSchema], "a rule is {name, from, to[, ttl, source]} or the earlier {name, input, outputs}"))),
  /** Workers per input interface: { eth0: 2 } (default 1, or `mcrelay run --workers`). */
  workers: v.optional(v.record(ifname, v.pipe(v.number("a worker count is a number"), v.integer(), v.minValue(1, "at least 1 worker"), v.maxValue(64, "at most 64 workers")))),
  /** Default TTL of the earlier format's outputs. */
  multicast_ttl: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(255))),
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

export function parseConfig(text: string, path: string): LoadedConfig {
  let raw: unknown;
  try {
    raw = Bun.JSON5.parse(text);
  } catch (err) {
    throw new ConfigError(`${path}: not valid JSON5: ${(err as Error).message}`);
  }
  // Union errors hide which branch was meant: pick the schema by the rule's own keys.
  const problems: string[] = [];
  if (raw && typeof raw === "object" && Array.isArray((raw as { rules?: unknown }).rules)) {
    (raw as { rules: unknown[] }).rules.forEach((r, i) => {
      const legacy = r !== null && typeof r === "object" && "input" in r;
      const result = v.safeParse(legacy ? LegacyRuleSchema : RuleSpecSchema, r);
      if (!result.success) problems.push(...formatIssues(result.issues, `rules[${i}]`));
    });
  }
  const parsed = v.safeParse(ConfigSchema, raw);
  if (!parsed.success && problems.length === 0) problems.push(...formatIssues(parsed.issues));
  if (problems.length || !parsed.success) throw new ConfigError(`${path}:\n  ${problems.join("\n  ")}`);

  const cfg = parsed.output;
  const specs: RuleSpec[] = (cfg.rules ?? []).map((r, i) => {
    if ("from" in r) return r;
    const ttl = r.outputs[0]?.ttl ?? cfg.multicast_ttl;
    const perOutputTtl = new Set(r.outputs.map((o) => o.ttl ?? cfg.multicast_ttl));
    if (perOutputTtl.size > 1) problems.push(`rules[${i}].outputs: different TTLs per output are not supported; use one TTL per rule`);
    const spec: RuleSpec = {
      name: r.name ?? `rule-${i + 1}`,
      from: endpointText(r.input.group, r.input.port, r.input.interface),
      to: r.outputs.map((o) => endpointText(o.group, o.port, o.interface)),
    };
    if (ttl !== undefined) spec.ttl = ttl;
    return spec;
  });
  // Full rule validation (endpoints, interfaces not equal, ...), and unique names.
  const names = new Map<string, number>();
  specs.forEach((spec, i) => {
    const built = ruleFromSpec(spec, BigInt(i + 1));
    if (!built.ok) problems.push(...built.problems.map((p) => `rules[${i}] (${spec.name}): ${p}`));
    const first = names.get(spec.name);
    if (first !== undefined) problems.push(`rules[${i}]: name '${spec.name}' is already used by rules[${first}]`);
    else names.set(spec.name, i);
  });
  if (problems.length) throw new ConfigError(`${path}:\n  ${problems.join("\n  ")}`);
  return { path, specs, workers: new Map(Object.entries(cfg.workers ?? {})) };
}
