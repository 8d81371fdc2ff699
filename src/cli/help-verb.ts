// `mcrelay help [COMMAND [SUBCOMMAND]]`: the same text as `--help`, as ip(8) and git users expect.
import { defineCommand, type CommandDef } from "citty";
import { commandHelp, mainHelp } from "./help.ts";
import { printLine } from "./output.ts";
import { resolveSubVerb, resolveVerb } from "./verbs.ts";
import { UsageError } from "../errors.ts";
import { checkFlags } from "./args.ts";

const args = {
  command: { type: "positional", description: "The command to explain", required: false, valueHint: "COMMAND" },
  subcommand: { type: "positional", description: "Its subcommand (config check)", required: false, valueHint: "SUBCOMMAND" },
} as const;

export default defineCommand({
  meta: { name: "help", description: "Show help for mcrelay or one of its commands" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args, 2);
    if (a.command === undefined) return printLine(await mainHelp());
    const verb = resolveVerb(a.command);
    const def: CommandDef = await verb.load();
    if (a.subcommand === undefined) return printLine(commandHelp(def, [verb.name], verb.aliases));
    if (!def.subCommands) throw new UsageError(`'${verb.name}' has no subcommands (see mcrelay help ${verb.name})`);
    const [subName, sub] = await resolveSubVerb(def, verb.name, a.subcommand);
    printLine(commandHelp(sub, [verb.name, subName]));
  },
});
