// `mcrelay list` (also `show`): rules with their state, origin, source filter and, per output,
// its settings (TTL, and whatever else the output carries) and state.
import { defineCommand } from "citty";
import { checkFlags, jsonArg } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { inputText, printJson, printLine, printTable } from "./output.ts";
import type { OutputView } from "../control/responses.ts";

const args = { ...socketArg, ...jsonArg } as const;

/** Keys of an output that are not settings. */
const NOT_SETTINGS = new Set(["to", "state", "reason"]);

/**
 * "239.2.2.2:6000@r1 ttl=8": the destination and every setting of the output. Settings are
 * read from the output's typed view (control/responses.ts), so a new one shows up here
 * without a change.
 */
export function describeOutput(o: OutputView): string {
  const settings = Object.entries(o)
    .filter(([k, value]) => !NOT_SETTINGS.has(k) && value !== null && value !== undefined)
    .map(([k, value]) => `${k}=${typeof value === "boolean" ? (value ? "on" : "off") : typeof value === "object" ? JSON.stringify(value) : String(value)}`);
  return [o.to, ...settings, ...(o.state === "pending" ? ["(pending)"] : [])].join(" ");
}

export default defineCommand({
  meta: { name: "list", description: "List the daemon's rules: input, source, outputs with their settings, state" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    const result = await withClient(a.socket, (c) => c.request("list"));
    if (a.json) return printJson(result);
    if (result.rules.length === 0) return printLine("no rules");
    // One line per output; the rule's columns are filled on its first line. The input column
    // carries the source filter, the storm cap and a disabled loop guard (inputText).
    const rows: string[][] = [];
    for (const r of result.rules) {
      const why = [...r.reasons, ...r.outputs.filter((o) => o.reason).map((o) => `${o.to}: ${o.reason}`)].join("; ");
      r.outputs.forEach((o, i) => {
        const first = i === 0;
        rows.push([first ? r.name : "", first ? r.id : "", first ? r.state : "", first ? r.origin : "", first ? inputText(r) : "", describeOutput(o), first ? why : ""]);
      });
    }
    printTable(["name", "id", "state", "origin", "input", "outputs", "why"], rows);
  },
});
