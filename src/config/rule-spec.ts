// A rule as users write it (CLI flags, control requests, config files), validated with valibot
// into a resolved Rule. One schema for every edge, so every edge gives the same messages.
import * as v from "valibot";
import { createHash } from "node:crypto";
import { isMulticast, isUnspecified, parseIp } from "../base/address.ts";
import { endpointSchema, formatEndpoint, type Endpoint } from "../base/endpoint.ts";
import { formatOutputOptions, inputTextSchema, outputEntrySchema, outputSpecSchema, type OutputEntry } from "./endpoint-options.ts";
import { pathText, problemText, ruleProblems, type Rule, type RuleOutput, type RulePath, type RuleProblem } from "../rules/rule.ts";
import { DEFAULT_TTL, MAX_PPS_MAX, MAX_PPS_MIN, NATIVE_LIMITS, TTL_MAX, TTL_MIN, VLAN_MAX, VLAN_MIN } from "../limits.ts";

export const RULE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** A name of digits only would read as a rule id (`remove 5`): refused for new rules; a saved one still loads (rule-store.ts). */
export const ALL_DIGITS = /^[0-9]+$/;
/** The name a saved or config rule named with digits only is checked under; it keeps its own. */
export const DIGIT_NAME_STAND_IN = "saved";

/** A name as rules saved before ALL_DIGITS was refused may have it. */
export const savedNameSchema = v.pipe(v.string(), v.regex(RULE_NAME, "a name is 1-64 letters, digits, _ . -"));
export const nameSchema = v.pipe(
  savedNameSchema,
  v.check((name) => !ALL_DIGITS.test(name), (issue) => `'${String(issue.input)}' is all digits, which reads as a rule id (remove, stats, trace): a name needs a letter or one of _ . -`),
);
export const vlanSchema = v.pipe(v.number("a VLAN id is a number"), v.integer("a VLAN id is a whole number"), v.minValue(VLAN_MIN, `a VLAN id is ${VLAN_MIN}-${VLAN_MAX}`), v.maxValue(VLAN_MAX, `a VLAN id is ${VLAN_MIN}-${VLAN_MAX}`));
export const maxPpsSchema = v.pipe(
  v.number("max_pps is a number"),
  v.integer("max_pps is a whole number"),
  v.minValue(MAX_PPS_MIN, `max_pps is at least ${MAX_PPS_MIN}`),
  v.maxValue(MAX_PPS_MAX, `max_pps is at most ${MAX_PPS_MAX}`),
);
export const ttlSchema = v.pipe(v.number("a TTL is a number"), v.integer("a TTL is a whole number"), v.minValue(TTL_MIN, `a TTL is at least ${TTL_MIN}`), v.maxValue(TTL_MAX, `a TTL is at most ${TTL_MAX}`));

export const sourceSchema = v.pipe(
  v.string(),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const a = parseIp(dataset.value);
    if (!a) {
      addIssue({ message: `'${dataset.value}' is not an IP address` });
      return NEVER;
    }
    // A datagram's source is the sender's unicast address: no packet could match these.
    if (isMulticast(a) || isUnspecified(a)) {
      addIssue({ message: `'${dataset.value}' is ${isMulticast(a) ? "a multicast" : "the unspecified"} address: a source is the sender's unicast address` });
      return NEVER;
    }
    return a;
  }),
);

/** A rule as text, the shape of `mcrelay add` and of our config file's `rules[]`. */
export const RuleSpecSchema = v.strictObject({
  name: nameSchema,
  from: v.string(),
  /** Each output: "ADDR:PORT@IFACE[,ttl=N][,dscp=N|copy][,gso=off]" or {to, ttl, dscp, gso}. */
  // The count first, then each output: a list far over the limit is one problem, not one per item.
  to: v.pipe(v.array(v.unknown()), v.minLength(1, "at least one output is needed"), v.maxLength(NATIVE_LIMITS.outputsPerRuleMax, `at most ${NATIVE_LIMITS.outputsPerRuleMax} outputs`), v.array(outputSpecSchema)),
  ttl: v.optional(ttlSchema),
  source: v.optional(v.string()),
  /** 802.1Q VID the input frames carry (also written "from": "...@eth0,vlan=100"). */
  vlan: v.optional(vlanSchema),
  /** Storm cap: datagrams per second the rule relays at most. */
  max_pps: v.optional(maxPpsSchema),
  /** Loop containment; on unless false. */
  loop_guard: v.optional(v.boolean("loop_guard is true or false")),
});
export type RuleSpec = v.InferOutput<typeof RuleSpecSchema>;

/** The list of outputs, before each entry is checked: the same count limits as RuleSpecSchema. */
const outputListSchema = v.pipe(v.array(v.unknown()), v.minLength(1, "at least one output is needed"), v.maxLength(NATIVE_LIMITS.outputsPerRuleMax, `at most ${NATIVE_LIMITS.outputsPerRuleMax} outputs`));

export type { RulePath, RuleProblem };

/**
 * Stable 63-bit id of an output within a rule: an unchanged output keeps its socket and
 * counters. DSCP and GSO enter only when not the defaults, so earlier ids stay the same.
 */
export function outputId(ruleId: bigint, to: string, ttl: number, dscp: number | null = null, gso = true): bigint {
  const extra = dscp === null && gso ? "" : `|${dscp ?? "copy"}|${gso ? "gso" : "nogso"}`;
  const h = createHash("sha256").update(`${ruleId}|${to}|${ttl}${extra}`).digest();
  return h.readBigUInt64LE(0) & 0x7fff_ffff_ffff_ffffn;
}

/** A rule's output from its entry: the rule's TTL unless the output has its own, DSCP copied and GSO on unless set. */
export function ruleOutput(ruleId: bigint, entry: OutputEntry, ruleTtl: number): RuleOutput {
  const ttl = entry.ttl ?? ruleTtl;
  const dscp = entry.dscp === undefined || entry.dscp === "copy" ? null : entry.dscp;
  const gso = entry.gso ?? true;
  return { id: outputId(ruleId, formatEndpoint(entry.to), ttl, dscp, gso), to: entry.to, ttl, dscp, gso };
}

/** "ADDR:PORT@IFACE" with the output's options that differ from the defaults. */
export function formatOutput(o: { to: Endpoint; ttl: number; dscp: number | null; gso: boolean }, ruleTtl: number): string {
  return formatEndpoint(o.to) + formatOutputOptions(o, ruleTtl);
}

/**
 * The fields of a rule that has problems, each as the rule would have it, or undefined when it
 * is invalid (`source` and `vlan` are null when not given; `vlan` is undefined when it differs
 * from the input's). Checks across rules (a name used twice, the same input twice) run on these
 * when the fields they read are valid, so a rule with another problem is still compared.
 */
export interface RuleFields {
  name: string | undefined;
  input: Rule["input"] | undefined;
  source: Rule["source"] | undefined;
  vlan: Rule["vlan"] | undefined;
  /** The outputs by the index they are written at, undefined where one is invalid. */
  outputs: (RuleOutput | undefined)[];
}

/**
 * Validates a spec and builds the rule; the id is the caller's (kept across replace). Every
 * independent problem is reported: each field is checked on its own, each output on its own,
 * and a check across fields (an output on the input interface, a source of the other family,
 * the VLAN twice) runs when the fields it reads are valid, so no problem is only a consequence
 * of another. Keys the spec should not have are not looked at (the edges' schemas refuse them).
 * A rule with problems comes with its valid fields.
 */
export function checkRule(spec: Readonly<Record<string, unknown>>, id: bigint): { ok: true; rule: Rule } | { ok: false; problems: RuleProblem[]; fields: RuleFields } {
  const problems: RuleProblem[] = [];
  const field = <S extends v.GenericSchema>(key: RulePath, schema: S, value: unknown): v.InferOutput<S> | undefined => {
    const r = v.safeParse(schema, value);
    if (r.success) return r.output;
    for (const issue of r.issues) problems.push({ path: [...key, ...issueKeys(issue)], message: issueMessage(issue), named: false });
    return undefined;
  };
  const optional = <S extends v.GenericSchema>(key: string, schema: S) => (spec[key] === undefined ? null : (field([key], schema, spec[key]) ?? undefined));
  const name = field(["name"], nameSchema, spec.name);
  const from = field(["from"], inputTextSchema, spec.from);
  const list = field(["to"], outputListSchema, spec.to);
  const entries = (list ?? []).map((entry, i) => field(["to", i], outputEntrySchema, entry));
  const ttlValue = optional("ttl", ttlSchema);
  const source = optional("source", sourceSchema);
  const vlan = optional("vlan", vlanSchema);
  const maxPps = optional("max_pps", maxPpsSchema);
  const loopGuard = optional("loop_guard", v.boolean("loop_guard is true or false"));

  const ttl = ttlValue ?? DEFAULT_TTL;
  const outputs = entries.map((entry) => (entry ? ruleOutput(id, entry, ttl) : undefined));
  const fromVlan = from?.options.vlan;
  const vlanTwice = fromVlan !== undefined && vlan !== undefined && vlan !== null && fromVlan !== vlan;
  if (vlanTwice) problems.push({ path: ["vlan"], message: `${vlan} differs from the input's vlan=${fromVlan}`, named: false });
  const input = from ? { ...from.endpoint, iface: from.endpoint.iface! } : null;
  problems.push(...ruleProblems({ input, source: source === undefined ? null : source, outputs }));
  if (problems.length) {
    // The VLAN of a rule whose input is invalid is not known (it may be in `from`), nor one given twice.
    const ruleVlan = from && vlan !== undefined && !vlanTwice ? (fromVlan ?? vlan) : undefined;
    return { ok: false, problems, fields: { name, input: input ?? undefined, source, vlan: ruleVlan, outputs } };
  }
  return {
    ok: true,
    rule: {
      id,
      name: name!,
      input: input!,
      source: source ?? null,
      vlan: fromVlan ?? vlan ?? null,
      maxPps: maxPps ?? null,
      loopGuard: loopGuard ?? true,
      // Without a problem, every output is valid.
      outputs: outputs.map((o) => o!),
    },
  };
}

/** checkRule with each problem as one line, "to[1]: message" (what the control socket and the state file show). */
export function ruleFromSpec(spec: RuleSpec, id: bigint): { ok: true; rule: Rule } | { ok: false; problems: string[] } {
  const checked = checkRule(spec, id);
  if (checked.ok) return checked;
  return { ok: false, problems: checked.problems.map(problemText) };
}

/** The spec a rule was made from (what `config show` and the state file write). */
export function specFromRule(rule: Rule): RuleSpec {
  // One TTL for all outputs is written rule-wide; outputs that differ carry their own.
  const ttls = new Set(rule.outputs.map((o) => o.ttl));
  const ttl = ttls.size === 1 ? rule.outputs[0]!.ttl : DEFAULT_TTL;
  const spec: RuleSpec = {
    name: rule.name,
    from: formatEndpoint(rule.input),
    to: rule.outputs.map((o) => formatOutput(o, ttl)),
  };
  if (ttl !== DEFAULT_TTL) spec.ttl = ttl;
  if (rule.source) spec.source = rule.source.text;
  if (rule.vlan !== null) spec.vlan = rule.vlan;
  if (rule.maxPps !== null) spec.max_pps = rule.maxPps;
  if (!rule.loopGuard) spec.loop_guard = false;
  return spec;
}

/** An issue's keys: ["to", 0, "ttl"]. */
export function issueKeys(issue: v.BaseIssue<unknown>): (string | number)[] {
  return (issue.path ?? []).map((item) => (typeof item.key === "number" ? item.key : String(item.key)));
}

/** An issue's key path under `prefix`: "rules[2].to[0]". */
export function issuePath(issue: v.BaseIssue<unknown>, prefix = ""): string {
  return pathText(issueKeys(issue), prefix);
}

/** Issues named in one answer or log line; the rest are counted (a list of 32,000 bad items is one line). */
export const ISSUES_SHOWN_MAX = 10;

/** "rules[2].to[0]: message" for each of the first ISSUES_SHOWN_MAX issues, then "... and N more". */
export function formatIssues(issues: readonly v.BaseIssue<unknown>[], prefix = ""): string[] {
  const shown = issues.slice(0, ISSUES_SHOWN_MAX).map((issue) => {
    const path = issuePath(issue, prefix);
    const message = issueMessage(issue);
    return path ? `${path}: ${message}` : message;
  });
  if (issues.length > ISSUES_SHOWN_MAX) shown.push(`... and ${issues.length - ISSUES_SHOWN_MAX} more`);
  return shown;
}

/**
 * An issue's message, with valibot's generic texts for object keys replaced: an unknown key
 * (an invalid "never" at that key) and a missing required key ('Invalid key: Expected "from"
 * but received undefined').
 */
export function issueMessage(issue: v.BaseIssue<unknown>): string {
  if (issue.kind === "schema" && issue.expected === "never") return "unknown key";
  if (issue.kind === "schema" && issue.received === "undefined" && issue.expected?.startsWith('"')) return "missing: this key is required";
  return issue.message;
}
