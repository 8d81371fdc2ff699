#!/usr/bin/env bun
// mcrelay: one executable for the daemon, its clients, the one-shot relay, the traffic tools,
// and the hidden worker. Subcommands load lazily so `mcrelay version` stays fast.
import "./no-color.ts";
import { defineCommand, runCommand, showUsage, type CommandDef } from "citty";
import { EXIT, exitCodeOf, UsageError } from "./errors.ts";
import { globalArgs, mainMeta, subCommands } from "./cli/commands.ts";
import { logger, setLogFormat, setLogLevel, type LogLevelName } from "./log.ts";
import { VERSION } from "./version.ts";

const log = logger("mcrelay");

const main = defineCommand({ meta: mainMeta, subCommands });

/** Global options, accepted before or after the verb: --log-level L, --log-format F. */
function takeGlobalOptions(argv: string[]): string[] {
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined];
    if (flag === "--log-level" || flag === "--log-format") {
      const value = inline ?? argv[++i];
      if (value === undefined) throw new UsageError(`option ${flag} needs a value`);
      const allowed: readonly string[] = globalArgs[flag.slice(2) as keyof typeof globalArgs].options;
      if (!allowed.includes(value)) throw new UsageError(`${flag}: '${value}' is not one of ${allowed.join(", ")}`);
      if (flag === "--log-level") setLogLevel(value as LogLevelName);
      else setLogFormat(value as "pretty" | "json");
      continue;
    }
    if (arg === "--") {
      rest.push(...argv.slice(i));
      break;
    }
    rest.push(arg);
  }
  return rest;
}

/** The command `--help` is about: the verb, or its sub-verb (`config check --help`). */
async function resolveCommand(rawArgs: string[]): Promise<[CommandDef, CommandDef | undefined]> {
  const [name, sub] = rawArgs.filter((a) => !a.startsWith("-"));
  const loader = name ? subCommands[name as keyof typeof subCommands] : undefined;
  if (!loader) return [main as CommandDef, undefined];
  const verb = (await loader()) as CommandDef;
  const nested = (verb.subCommands as Record<string, CommandDef> | undefined)?.[sub ?? ""];
  return nested ? [nested, verb] : [verb, main as CommandDef];
}

async function run(): Promise<number> {
  let rawArgs: string[];
  try {
    rawArgs = takeGlobalOptions(process.argv.slice(2));
  } catch (err) {
    log.error((err as Error).message);
    return EXIT.usage;
  }
  if (rawArgs.length === 0 || rawArgs.includes("--help") || rawArgs.includes("-h")) {
    await showUsage(...(await resolveCommand(rawArgs)));
    return rawArgs.length === 0 ? EXIT.usage : EXIT.ok;
  }
  if (rawArgs.length === 1 && (rawArgs[0] === "--version" || rawArgs[0] === "-v")) {
    process.stdout.write(`${VERSION}\n`);
    return EXIT.ok;
  }
  try {
    await runCommand(main, { rawArgs });
    return typeof process.exitCode === "number" ? process.exitCode : EXIT.ok;
  } catch (err) {
    const code = (err as { code?: string }).code;
    // citty's own argument errors (unknown command, missing required argument).
    if (typeof code === "string" && code.startsWith("E") && (err as Error).name === "CLIError") {
      log.error(`${(err as Error).message.replace(/\u001b\[[0-9;]*m/g, "")} (see mcrelay --help)`);
      return EXIT.usage;
    }
    const exitCode = exitCodeOf(err);
    if (exitCode === EXIT.failure) log.error(err);
    else log.error((err as Error).message);
    return exitCode;
  }
}

// `mcrelay stats | head`: a closed pipe ends the output quietly, not with a stack trace.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw err;
});

process.exitCode = await run();
