// `mcrelay add`: a rule at runtime (kept across restarts); --replace changes one in place.
import { defineCommand } from "citty";
import { checkFlags, intFlag, jsonArg, repeated, validate } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { printJson, printLine } from "./output.ts";
import { logger } from "../log.ts";
import { nameSchema, ruleFromSpec, type RuleSpec } from "../config/rule-spec.ts";
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

const Schema = v.object({ name: nameSchema, ttl: v.optional(intFlag(TTL_MIN, TTL_MAX)), "max-pps": v.optional(intFlag(MAX_PPS_MIN, MAX_PPS_MAX)) });

export default defineCommand({
  meta: { name: "add", description: "Add (or --replace) a forwarding rule in the running daemon" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    const checked = validate(Schema, { name: a.name, ttl: a.ttl, "max-pps": a["max-pps"] });
    const rule: Record<string, unknown> = { name: checked.name, from: a.from, to: repeated(rawArgs, "to", "t") };
    if (checked.ttl !== undefined) rule.ttl = checked.ttl;
    if (a.source) rule.source = a.source;
    if (checked["max-pps"] !== undefined) rule.max_pps = checked["max-pps"];
    if (a["loop-guard"] === false) rule.loop_guard = false;
    // The daemon validates again; checking here too turns a typo into a usage error (exit 2)
    // that names the flag, before any connection is made.
    const local = ruleFromSpec(rule as RuleSpec, 1n);
    if (!local.ok) throw new UsageError(local.problems.map((p) => (/^(from|to|source|ttl|name)\b/.test(p) ? `--${p}` : p)).join("\n"));
    const result = await withClient(a.socket, (c) => c.request("add", { rule, replace: !!a.replace }));
    for (const w of result.warnings) log.warn(w);
    if (a.json) printJson(result);
    else printLine(`${result.replaced ? "replaced" : "added"} rule ${result.rule.name} (id ${result.rule.id}): ${result.rule.state}${result.rule.reasons.length ? ` (${result.rule.reasons.join("; ")})` : ""}`);
  },
});
