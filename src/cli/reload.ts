// `mcrelay reload`: re-read the config file (transactional: a bad file changes nothing).
import { defineCommand } from "citty";
import { checkFlags, jsonArg } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { printJson, printLine } from "./output.ts";
import { logger } from "../log.ts";

const log = logger("reload");
const args = { ...socketArg, ...jsonArg } as const;

export default defineCommand({
  meta: { name: "reload", description: "Reload the daemon's config file" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    const r = await withClient(a.socket, (c) => c.request("reload"));
    for (const w of r.warnings) log.warn(w);
    if (a.json) printJson(r);
    else printLine(`reloaded: ${r.added.length} added, ${r.removed.length} removed, ${r.changed.length} changed, ${r.unchanged} unchanged`);
  },
});
