// `mcrelay log-level [LEVEL]`: get or set the daemon's log level (workers follow).
import { defineCommand } from "citty";
import * as v from "valibot";
import { LOG_LEVELS } from "../log.ts";
import { checkFlags, jsonArg, validate } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { printJson, printLine } from "./output.ts";

const args = { level: { type: "positional", valueHint: "LEVEL", description: LOG_LEVELS.join("|"), required: false }, ...socketArg, ...jsonArg } as const;

export default defineCommand({
  meta: { name: "log-level", description: "Get or set the daemon's log level" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args, 1);
    const { level } = validate(v.object({ level: v.optional(v.picklist(LOG_LEVELS, `must be one of ${LOG_LEVELS.join(", ")}`)) }), { level: a.level });
    const result = await withClient(a.socket, (c) => c.request("log-level", level ? { level } : undefined));
    if (a.json) printJson(result);
    else printLine(result.level);
  },
});
