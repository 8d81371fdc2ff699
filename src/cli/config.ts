// `mcrelay config check FILE` (offline, touches no daemon) and `mcrelay config show`.
import { defineCommand } from "citty";
import { loadConfig } from "../config/file.ts";
import { checkFlags, jsonArg } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { printJson, printLine } from "./output.ts";

const checkArgs = { file: { type: "positional", description: "Config file to check", required: true }, ...jsonArg } as const;
const showArgs = { ...socketArg, ...jsonArg } as const;

const check = defineCommand({
  meta: { name: "check", description: "Validate a config file without touching the daemon" },
  args: checkArgs,
  run({ rawArgs, args: a }) {
    checkFlags(rawArgs, checkArgs, 1);
    const cfg = loadConfig(a.file);
    if (a.json) printJson({ file: a.file, ok: true, rules: cfg.specs });
    else printLine(`${a.file}: ok, ${cfg.specs.length} rules`);
  },
});

const show = defineCommand({
  meta: { name: "show", description: "Print the daemon's effective rules (config and runtime)" },
  args: showArgs,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, showArgs);
    const r = await withClient(a.socket, (c) => c.request("config-show"));
    if (a.json) printJson(r);
    else printLine(Bun.JSON5.stringify(r as object, null, 2) ?? "");
  },
});

export default defineCommand({
  meta: { name: "config", description: "Check a config file, or show the daemon's configuration" },
  subCommands: { check, show },
});
