// `mcrelay help [COMMAND [SUBCOMMAND]]`: the same text as `--help`, as ip(8) and git users expect.
import { defineCommand, type CommandDef } from "citty";
import { commandHelp, mainHelp } from "./help.ts";
import { printLine } from "./output.ts";
import { resolveSubVerb, resolveVerb } from "./verbs.ts";
import { UsageError } from "../errors.ts";

const args = { command: { type: "positional", description: "The command to explain (and its subcommand)", required: false, valueHint: "COMMAND" } } as const;

export default defineCommand({
  meta: { name: "help", description: "Show help for mcrelay or one of its commands" },
  args,
  async run({ rawArgs }) {
    const words = rawArgs.filter((a) => a !== "--");
    const flag = words.find((w) => w.startsWith("-"));
    if (flag) throw new UsageError(`unknown option '${flag}' (see mcrelay help)`);
    if (words.length === 0) return printLine(await mainHelp());
    if (words.length > 2) throw new UsageError(`unexpected argument '${words[2]}' (see mcrelay help)`);
    const verb = resolveVerb(words[0]!);
    const def: CommandDef = await verb.load();
    if (words[1] === undefined) return printLine(commandHelp(def, [verb.name], verb.aliases));
    if (!def.subCommands) throw new UsageError(`'${verb.name}' has no subcommands (see mcrelay help ${verb.name})`);
    const [subName, sub] = await resolveSubVerb(def, verb.name, words[1]);
    printLine(commandHelp(sub, [verb.name, subName]));
  },
});
