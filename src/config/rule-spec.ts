// A rule as users write it (CLI flags, control requests, config files), validated with valibot
// into a resolved Rule. One schema for every edge, so every edge gives the same messages.
import * as v from "valibot";
import { createHash } from "node:crypto";
import { parseIp } from "./address.ts";
import { endpointSchema, formatEndpoint } from "./endpoint.ts";
import { DEFAULT_TTL, ruleProblems, type Rule } from "../rules/rule.ts";
import { LIMITS } from "../native/abi.ts";

export const RULE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

export const nameSchema = v.pipe(v.string(), v.regex(RULE_NAME, "a name is 1-64 letters, digits, _ . -"));
export const ttlSchema = v.pipe(v.number("a TTL is a number"), v.integer("a TTL is a whole number"), v.minValue(1, "a TTL is at least 1"), v.maxValue(255, "a TTL is at most 255"));

export const sourceSchema = v.pipe(
  v.string(),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const a = parseIp(dataset.value);
    if (!a) {
      addIssue({ message: `'${dataset.value}' is not an IP address` });
      return NEVER;
    }
    return a;
  }),
);

/** A rule as text, the shape of `mcrelay add` and of our config file's `rules[]`. */
export const RuleSpecSchema = v.strictObject({
  name: nameSchema,
  from: v.string(),
  to: v.pipe(v.array(v.string()), v.minLength(1, "at least one output is needed"), v.maxLength(LIMITS.outputsPerRuleMax, `at most ${LIMITS.outputsPerRuleMax} outputs`)),
  ttl: v.optional(ttlSchema),
  source: v.optional(v.string()),
});
export type RuleSpec = v.InferOutput<typeof RuleSpecSchema>;

const ParsedSpecSchema = v.object({
  name: nameSchema,
  from: endpointSchema("input"),
  to: v.array(endpointSchema("output")),
  ttl: v.optional(ttlSchema),
  source: v.optional(sourceSchema),
});

/** Stable 63-bit id of an output within a rule: an unchanged output keeps its socket and counters. */
export function outputId(ruleId: bigint, to: string, ttl: number): bigint {
  const h = createHash("sha256").update(`${ruleId}|${to}|${ttl}`).digest();
  return h.readBigUInt64LE(0) & 0x7fff_ffff_ffff_ffffn;
}

/** Validates a spec and builds the rule; the id is the caller's (kept across replace). */
export function ruleFromSpec(spec: RuleSpec, id: bigint): { ok: true; rule: Rule } | { ok: false; problems: string[] } {
  const parsed = v.safeParse(ParsedSpecSchema, spec);
  if (!parsed.success) return { ok: false, problems: formatIssues(parsed.issues) };
  const p = parsed.output;
  const ttl = p.ttl ?? DEFAULT_TTL;
  const rule: Rule = {
    id,
    name: p.name,
    input: { ...p.from, iface: p.from.iface! },
    source: p.source ?? null,
    outputs: p.to.map((to) => ({ id: outputId(id, formatEndpoint(to), ttl), to, ttl })),
  };
  const problems = ruleProblems(rule);
  return problems.length ? { ok: false, problems } : { ok: true, rule };
}

/** The spec a rule was made from (what `config show` and the state file write). */
export function specFromRule(rule: Rule): RuleSpec {
  const spec: RuleSpec = {
    name: rule.name,
    from: formatEndpoint(rule.input),
    to: rule.outputs.map((o) => formatEndpoint(o.to)),
  };
  const ttl = rule.outputs[0]?.ttl ?? DEFAULT_TTL;
  if (ttl !== DEFAULT_TTL) spec.ttl = ttl;
  if (rule.source) spec.source = rule.source.text;
  return spec;
}

/** "rules[2].to[0]: message" for each issue. */
export function formatIssues(issues: readonly v.BaseIssue<unknown>[], prefix = ""): string[] {
  return issues.map((issue) => {
    let path = prefix;
    for (const item of issue.path ?? []) {
      path += typeof item.key === "number" ? `[${item.key}]` : path ? `.${String(item.key)}` : String(item.key);
    }
    let message = issue.message;
    // valibot's strictObject reports an unknown key as an invalid "never" at that key.
    if (issue.kind === "schema" && issue.expected === "never") message = "unknown key";
    return path ? `${path}: ${message}` : message;
  });
}
