#!/usr/bin/env bun
// mcrelay: one executable for the daemon, its clients, the one-shot relay and the traffic
// tools (the worker it starts is a Zig executable embedded in it). Subcommands load lazily so
// `mcrelay version` stays fast.
import "./no-color.ts";
import { runCommand, type ArgsDef, type CommandDef } from "citty";
import { EXIT, errorKind, exitCodeOf, UsageError } from "./errors.ts";
import { globalArgs } from "./cli/commands.ts";
import { logger, setLogFormat, setLogLevel, type LogLevelName } from "./log.ts";
import { VERSION } from "./version.ts";
import { resolveSubVerb, resolveVerb, type Verb } from "./cli/verbs.ts";
import { commandHelp, mainHelp } from "./cli/help.ts";
import { checkFlags, cittyArgv, positionalCount, wantsHelp, wantsJson } from "./cli/args.ts";
import { writeOut } from "./terminal.ts";

const log = logger("mcrelay");

/**
 * Global options, accepted before or after the verb: --log-level L, --log-format F, each once.
 * Returns the other words and the first mistake among the global options, which is thrown only
 * once the verb is known, so that `--json` decides how it is printed (stdout stayed empty).
 */
function takeGlobalOptions(argv: string[]): { rest: string[]; error: UsageError | null } {
  const rest: string[] = [];
  const seen = new Set<string>();
  let error: UsageError | null = null;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined];
    if (flag === "--log-level" || flag === "--log-format") {
      const value = inline ?? argv[++i];
      const allowed: readonly string[] = globalArgs[flag.slice(2) as keyof typeof globalArgs].options;
      if (value === undefined) error ??= new UsageError(`option ${flag} needs a value`);
      else if (!allowed.includes(value)) error ??= new UsageError(`${flag}: '${value}' is not one of ${allowed.join(", ")}`);
      else if (seen.has(flag)) error ??= new UsageError(`option ${flag} is given more than once; it takes one value`);
      else if (flag === "--log-level") setLogLevel(value as LogLevelName);
      else setLogFormat(value as "pretty" | "json");
      seen.add(flag);
      continue;
    }
    if (arg === "--") {
      rest.push(...argv.slice(i));
      break;
    }
    rest.push(arg);
  }
  return { rest, error };
}

/** The verb's definition and the words after it (and after a sub-verb), or null for a word that names none. */
async function verbOf(words: readonly string[]): Promise<{ def: CommandDef; names: string[]; verb: Verb; rest: string[] } | null> {
  const first = words[0];
  if (first === undefined || first.startsWith("-")) return null;
  const verb = resolveVerb(first);
  const def = await verb.load();
  const rest = words.slice(1);
  if (!def.subCommands) return { def, names: [verb.name], verb, rest };
  const word = rest[0];
  if (word === undefined || word.startsWith("-")) return { def, names: [verb.name], verb, rest };
  const [subName, sub] = await resolveSubVerb(def, verb.name, word);
  return { def: sub, names: [verb.name, subName], verb, rest: rest.slice(1) };
}

/** Does the command line ask for JSON, read against the verb's options when the verb is known (else guessed from the spelling)? */
async function asksJson(words: readonly string[]): Promise<boolean> {
  try {
    const found = await verbOf(words);
    if (found && !found.def.subCommands) return wantsJson(found.rest, (found.def.args ?? {}) as ArgsDef);
  } catch {
    // An unknown verb: guessed below.
  }
  return wantsJson(words);
}

/** The error as the one JSON document on stdout that `--json` promises (exit code unchanged). */
function printJsonError(kind: string, message: string, exitCode: number, code?: string): void {
  writeOut(`${JSON.stringify({ ok: false, error: { kind, message, exit_code: exitCode, ...(code ? { code } : {}) } }, null, 2)}\n`);
}

async function run(): Promise<number> {
  const { rest: rawArgs, error: globalError } = takeGlobalOptions(process.argv.slice(2));
  // Guessed from the spelling until the verb's options are known, then read as they are.
  let json = globalError ? await asksJson(rawArgs) : wantsJson(rawArgs);
  try {
    if (globalError) throw globalError;
    const first = rawArgs[0];
    if (first === undefined) {
      process.stderr.write(`${await mainHelp()}\n`);
      return EXIT.usage;
    }
    if (first === "--version" || first === "-v" || first === "-V") {
      if (rawArgs.length > 1) throw new UsageError(`${first} takes no arguments`);
      writeOut(`${VERSION}\n`);
      return EXIT.ok;
    }
    if (first === "--help" || first === "-h") {
      writeOut(`${await mainHelp()}\n`);
      return EXIT.ok;
    }
    if (first.startsWith("-")) {
      throw new UsageError(`'${first}' before the command: options come after it (mcrelay COMMAND ${first} ...; see mcrelay help)`);
    }
    const { def, names, verb, rest } = (await verbOf(rawArgs))!;
    // A verb with sub-verbs (`config check`): resolve the second word the same way.
    // It is the next word, as the command is the first: an option before it has no subcommand
    // to belong to (`config -s PATH show` would otherwise take PATH for the subcommand).
    if (def.subCommands) {
      const word = rest[0];
      if (word === undefined || wantsHelp([word], {})) {
        writeOut(`${commandHelp(def, names, verb.aliases)}\n`);
        return word === undefined ? EXIT.usage : EXIT.ok;
      }
      throw new UsageError(`'${word}' before the subcommand: options come after it (mcrelay ${verb.name} SUBCOMMAND ${word} ...; see mcrelay help ${verb.name})`);
    }
    const args = (def.args ?? {}) as ArgsDef;
    json = wantsJson(rest, args);
    if (wantsHelp(rest, args)) {
      writeOut(`${commandHelp(def, names, names.length === 1 ? verb.aliases : [])}\n`);
      return EXIT.ok;
    }
    // Checked before citty reads them: it keeps an unknown option as an on/off one and drops a
    // word too many, and its "missing argument" would hide the real mistake (`remove -old`).
    checkFlags(rest, args, positionalCount(args));
    // citty is given the words as checked, never as typed (see cittyArgv): what runs is what was checked.
    await runCommand(def, { rawArgs: cittyArgv(rest, args) });
    return typeof process.exitCode === "number" ? process.exitCode : EXIT.ok;
  } catch (caught) {
    // citty's own argument errors (a missing required argument) are usage errors.
    const err = (caught as Error).name === "CLIError" ? new UsageError(`${(caught as Error).message.replace(/\u001b\[[0-9;]*m/g, "")} (see --help)`) : caught;
    const exitCode = exitCodeOf(err);
    const message = (err as Error).message ?? String(err);
    if (exitCode === EXIT.failure) log.error(err);
    else log.error(message);
    if (json) printJsonError(errorKind(exitCode), message, exitCode, (err as { code?: unknown }).code as string | undefined);
    return exitCode;
  }
}

process.exitCode = await run();
