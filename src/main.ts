#!/usr/bin/env bun
// mcrelay: one executable for the daemon, its clients, the one-shot relay, the traffic tools,
// and the hidden worker. Subcommands load lazily so `mcrelay version` stays fast.
import "./no-color.ts";
import { defineCommand, runCommand, showUsage, type CommandDef } from "citty";
import { EXIT, exitCodeOf, UsageError } from "./errors.ts";
import { logger, setLogFormat, setLogLevel, LOG_LEVELS, type LogLevelName } from "./log.ts";
import { VERSION } from "./version.ts";

const log = logger("mcrelay");

const subCommands = {
  run: () => import("./cli/run.ts").then((m) => m.default),
  add: () => import("./cli/add.ts").then((m) => m.default),
  remove: () => import("./cli/remove.ts").then((m) => m.default),
  list: () => import("./cli/list.ts").then((m) => m.default),
  stats: () => import("./cli/stats.ts").then((m) => m.default),
  workers: () => import("./cli/workers.ts").then((m) => m.default),
  "log-level": () => import("./cli/log-level.ts").then((m) => m.default),
  ping: () => import("./cli/ping.ts").then((m) => m.default),
  reload: () => import("./cli/reload.ts").then((m) => m.default),
  config: () => import("./cli/config.ts").then((m) => m.default),
  events: () => import("./cli/events.ts").then((m) => m.default),
  forward: () => import("./cli/forward.ts").then((m) => m.default),
  gen: () => import("./cli/gen.ts").then((m) => m.default),
  sink: () => import("./cli/sink.ts").then((m) => m.default),
  version: () => import("./cli/version.ts").then((m) => m.default),
  _worker: () => import("./cli/worker.ts").then((m) => m.default),
};

const main = defineCommand({
  meta: { name: "mcrelay", version: VERSION, description: "Userspace multicast relay for Linux" },
  subCommands,
});

/** Global options, accepted before or after the verb: --log-level L, --log-format F. */
function takeGlobalOptions(argv: string[]): string[] {
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined];
    if (flag === "--log-level" || flag === "--log-format") {
      const value = inline ?? argv[++i];
      if (value === undefined) throw new UsageError(`option ${flag} needs a value`);
      if (flag === "--log-level") {
        if (!(LOG_LEVELS as readonly string[]).includes(value)) throw new UsageError(`--log-level: '${value}' is not one of ${LOG_LEVELS.join(", ")}`);
        setLogLevel(value as LogLevelName);
      } else {
        if (value !== "pretty" && value !== "json") throw new UsageError(`--log-format: '${value}' is not one of pretty, json`);
        setLogFormat(value);
      }
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
