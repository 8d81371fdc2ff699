// `mcrelay remove NAME|ID`.
import { defineCommand } from "citty";
import { checkFlags, jsonArg } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { printJson, printLine } from "./output.ts";
import { logger } from "../log.ts";

const log = logger("remove");
const args = { rule: { type: "positional", valueHint: "RULE", description: "Rule name or id", required: true }, ...socketArg, ...jsonArg } as const;

export default defineCommand({
  meta: { name: "remove", description: "Remove a rule by name or id" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args, 1);
    const result = await withClient(a.socket, (c) => c.request("remove", { rule: a.rule }));
    for (const w of result.warnings) log.warn(w);
    if (a.json) printJson(result);
    else if (result.not_loaded !== undefined) printLine(`removed saved rule ${result.removed} (id ${result.id}) from the state file; it was not loaded: ${result.not_loaded}`);
    else printLine(`removed rule ${result.removed} (id ${result.id})`);
  },
});
