// `mcrelay add`: a rule at runtime (kept across restarts); --replace changes one in place.
import { defineCommand } from "citty";
import { checkFlags, jsonArg } from "./args.ts";
import { ruleFromFlags } from "./rule-flags.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { printJson, printLine } from "./output.ts";
import { logger } from "../log.ts";
import { UsageError } from "../errors.ts";

const log = logger("add");

const args = {
  name: { type: "string", alias: "n", description: "Rule name (unique)", required: true },
  from: { type: "string", alias: "f", valueHint: "GROUP:PORT@IFACE[,vlan=ID]", description: "Input GROUP:PORT@IFACE[,vlan=ID]", required: true },
  to: { type: "string", alias: "t", repeatable: true, valueHint: "ADDR:PORT[@IFACE][,OPTS]", description: "Output ADDR:PORT[@IFACE][,ttl=N][,dscp=N|copy][,gso=off]; repeat for fan-out", required: true },
  ttl: { type: "string", valueHint: "1-255", description: "TTL of relayed packets, for outputs without their own ttl= (default 8)" },
  source: { type: "string", valueHint: "ADDR", description: "Relay only packets from this source address" },
  "max-pps": { type: "string", description: "Relay at most this many datagrams per second (storm cap; default none)" },
  "loop-guard": { type: "boolean", default: true, description: "Drop datagrams that loop back through relays (--no-loop-guard turns it off)" },
  replace: { type: "boolean", alias: "r", description: "Change the existing rule of this name in place" },
  ...socketArg,
  ...jsonArg,
} as const;

export default defineCommand({
  meta: { name: "add", description: "Add (or --replace) a forwarding rule in the running daemon" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    // The daemon validates again; checking here too turns a typo into a usage error (exit 2)
    // that names the flag, before any connection is made, with every problem at once.
    const { spec, problems } = ruleFromFlags(rawArgs, args, a);
    if (problems.length) throw new UsageError(problems.join("\n"));
    const result = await withClient(a.socket, (c) => c.request("add", { rule: spec, replace: !!a.replace }));
    for (const w of result.warnings) log.warn(w);
    if (a.json) printJson(result);
    else printLine(`${result.replaced ? "replaced" : "added"} rule ${result.rule.name} (id ${result.rule.id}): ${result.rule.state}${result.rule.reasons.length ? ` (${result.rule.reasons.join("; ")})` : ""}`);
  },
});
