// `mcrelay add`: a rule at runtime (kept across restarts); --replace changes one in place.
import { defineCommand } from "citty";
import { checkFlags, intFlag, jsonArg, repeated } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { printJson, printLine } from "./output.ts";
import { logger } from "../log.ts";
import { ruleFromSpec, type RuleSpec } from "../config/rule-spec.ts";
import { UsageError } from "../errors.ts";
import { MAX_PPS_MAX, MAX_PPS_MIN, TTL_MAX, TTL_MIN } from "../limits.ts";
import * as v from "valibot";

const log = logger("add");

const args = {
  name: { type: "string", alias: "n", description: "Rule name (unique)", required: true },
  from: { type: "string", alias: "f", valueHint: "GROUP:PORT@IFACE[,vlan=ID]", description: "Input GROUP:PORT@IFACE[,vlan=ID]", required: true },
  to: { type: "string", alias: "t", valueHint: "ADDR:PORT[@IFACE][,OPTS]", description: "Output ADDR:PORT[@IFACE][,ttl=N][,dscp=N|copy][,gso=off]; repeat for fan-out", required: true },
  ttl: { type: "string", valueHint: "1-255", description: "TTL of relayed packets, for outputs without their own ttl= (default 8)" },
  source: { type: "string", valueHint: "ADDR", description: "Relay only packets from this source address" },
  "max-pps": { type: "string", description: "Relay at most this many datagrams per second (storm cap; default none)" },
  "loop-guard": { type: "boolean", default: true, description: "Drop datagrams that loop back through relays (--no-loop-guard turns it off)" },
  replace: { type: "boolean", alias: "r", description: "Change the existing rule of this name in place" },
  ...socketArg,
  ...jsonArg,
} as const;

/** A rule problem naming its flag: "--to[0]: ...", "--to: output ... uses the input interface", "--source: source ...". */
function flagged(problem: string): string {
  if (/^(from|to|source|ttl|name)(\[\d+\])?:/.test(problem)) return `--${problem}`;
  if (problem.startsWith("output ")) return `--to: ${problem}`;
  if (problem.startsWith("source ")) return `--source: ${problem}`;
  return problem;
}

/** A numeric flag, or undefined with its problem added to `problems` (every problem is reported at once). */
function intArg(flag: string, text: string | undefined, min: number, max: number, problems: string[]): number | undefined {
  if (text === undefined) return undefined;
  const r = v.safeParse(intFlag(min, max), text);
  if (r.success) return r.output;
  problems.push(...r.issues.map((issue) => `--${flag}: ${issue.message}`));
  return undefined;
}

export default defineCommand({
  meta: { name: "add", description: "Add (or --replace) a forwarding rule in the running daemon" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    const flagProblems: string[] = [];
    const ttl = intArg("ttl", a.ttl, TTL_MIN, TTL_MAX, flagProblems);
    const maxPps = intArg("max-pps", a["max-pps"], MAX_PPS_MIN, MAX_PPS_MAX, flagProblems);
    const rule: Record<string, unknown> = { name: a.name, from: a.from, to: repeated(rawArgs, args, "to") };
    if (ttl !== undefined) rule.ttl = ttl;
    if (a.source) rule.source = a.source;
    if (maxPps !== undefined) rule.max_pps = maxPps;
    if (a["loop-guard"] === false) rule.loop_guard = false;
    // The daemon validates again; checking here too turns a typo into a usage error (exit 2)
    // that names the flag, before any connection is made. Every problem at once: a flag that
    // is not a number is left out of the rule, the rule's other fields are still checked.
    const local = ruleFromSpec(rule as RuleSpec, 1n);
    const problems = [...(local.ok ? [] : local.problems.map(flagged)), ...flagProblems];
    if (problems.length) throw new UsageError(problems.join("\n"));
    const result = await withClient(a.socket, (c) => c.request("add", { rule, replace: !!a.replace }));
    for (const w of result.warnings) log.warn(w);
    if (a.json) printJson(result);
    else printLine(`${result.replaced ? "replaced" : "added"} rule ${result.rule.name} (id ${result.rule.id}): ${result.rule.state}${result.rule.reasons.length ? ` (${result.rule.reasons.join("; ")})` : ""}`);
  },
});
