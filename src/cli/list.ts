// `mcrelay list`: rules with their state and origin.
import { defineCommand } from "citty";
import { checkFlags, jsonArg } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { inputText, printJson, printLine, printTable } from "./output.ts";

const args = { ...socketArg, ...jsonArg } as const;

interface ListedRule {
  name: string;
  id: string;
  origin: string;
  input: string;
  source: string | null;
  max_pps: number | null;
  loop_guard: boolean;
  outputs: { to: string; ttl: number; dscp: number | "copy"; gso: boolean; state: string; reason: string | null }[];
  state: string;
  reasons: string[];
}

export default defineCommand({
  meta: { name: "list", description: "List the daemon's rules" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    const result = (await withClient(a.socket, (c) => c.request("list"))) as { rules: ListedRule[] };
    if (a.json) return printJson(result);
    if (result.rules.length === 0) return printLine("no rules");
    printTable(
      ["name", "id", "state", "origin", "input", "outputs", "why"],
      result.rules.map((r) => [r.name, r.id, r.state, r.origin, inputText(r), r.outputs.map((o) => `${o.to} ${outputSettings(o)}${o.state === "pending" ? " (pending)" : ""}`).join(", "), [...r.reasons, ...r.outputs.filter((o) => o.reason).map((o) => o.reason!)].join("; ")]),
    );
  },
});

/** Per-output settings as one short word group: "ttl 8 dscp copy gso on". */
function outputSettings(o: { ttl: number; dscp: number | "copy"; gso: boolean }): string {
  return `[ttl ${o.ttl} dscp ${o.dscp} gso ${o.gso ? "on" : "off"}]`;
}

