// The rule flags `add` and `forward` share (--name --from --to --ttl --source --max-pps
// --no-loop-guard), checked as the config file and the control socket check a rule
// (checkRule): every problem at once, each naming its flag, so both verbs report the same.
import * as v from "valibot";
import type { ArgsDef } from "citty";
import { intFlag, repeated } from "./args.ts";
import { checkRule, type RuleFields, type RuleSpec } from "../config/rule-spec.ts";
import { problemText, type Rule, type RuleProblem } from "../rules/rule.ts";
import { MAX_PPS_MAX, MAX_PPS_MIN, TTL_MAX, TTL_MIN } from "../limits.ts";

/** The values citty gives for the rule flags (strings as typed). */
export interface RuleFlagValues {
  name: string;
  from: string;
  ttl?: string;
  source?: string;
  "max-pps"?: string;
  "loop-guard"?: boolean;
}

/** The flag that gives each field of a rule spec (`vlan` is written in --from: ",vlan=ID"). */
const FLAG_OF_FIELD: Readonly<Record<string, string>> = {
  name: "name",
  from: "from",
  to: "to",
  ttl: "ttl",
  source: "source",
  vlan: "from",
  max_pps: "max-pps",
  loop_guard: "loop-guard",
};

/**
 * A rule problem naming its flag, from the field it is about (never from its words):
 * "--to[0]: '239.2.2.2:70000@r1': port ...", and for a message that names its output itself
 * "--to: output 239.2.2.3:6000@r0 uses the input interface r0".
 */
export function flagged(p: RuleProblem): string {
  const [field, ...rest] = p.path;
  const flag = typeof field === "string" ? FLAG_OF_FIELD[field] : undefined;
  if (flag === undefined) return problemText(p);
  if (p.named) return `--${flag}: ${p.message}`;
  return `--${flag}${rest.map((key) => (typeof key === "number" ? `[${key}]` : `.${key}`)).join("")}: ${p.message}`;
}

/** A flag's value, or undefined with its problems added to `problems` (every problem is reported at once). */
export function flagValue<S extends v.GenericSchema>(flag: string, schema: S, text: string | undefined, problems: string[]): v.InferOutput<S> | undefined {
  if (text === undefined) return undefined;
  const r = v.safeParse(schema, text);
  if (r.success) return r.output;
  problems.push(...r.issues.map((issue) => `--${flag}: ${issue.message}`));
  return undefined;
}

/**
 * The rule the flags describe (`def`: the verb's flags, to read every --to): the spec (what `add` sends), the rule when it has no problem,
 * its valid fields, and every problem naming its flag. A number flag that is not a valid
 * number is left out of the spec and the rule's other fields are still checked; its problem
 * follows the rule's.
 */
export function ruleFromFlags(rawArgs: readonly string[], def: ArgsDef, a: RuleFlagValues): { spec: RuleSpec; rule: Rule | null; fields: RuleFields; problems: string[] } {
  const numberProblems: string[] = [];
  const ttl = flagValue("ttl", intFlag(TTL_MIN, TTL_MAX), a.ttl, numberProblems);
  const maxPps = flagValue("max-pps", intFlag(MAX_PPS_MIN, MAX_PPS_MAX), a["max-pps"], numberProblems);
  const spec: RuleSpec = { name: a.name, from: a.from, to: repeated(rawArgs, def, "to") };
  if (ttl !== undefined) spec.ttl = ttl;
  if (a.source) spec.source = a.source;
  if (maxPps !== undefined) spec.max_pps = maxPps;
  if (a["loop-guard"] === false) spec.loop_guard = false;
  const checked = checkRule(spec, 1n);
  if (checked.ok) return { spec, rule: numberProblems.length ? null : checked.rule, fields: checked.rule, problems: numberProblems };
  const problems = checked.problems.map(flagged);
  return { spec, rule: null, fields: checked.fields, problems: [...problems, ...numberProblems] };
}
