// Logging through consola only: one tagged logger per module, everything to stderr (stdout is
// for command output). `json` format writes one JSON object per line for service managers.
import { fstatSync } from "node:fs";
import { sep } from "node:path";
import { formatWithOptions, type InspectOptions } from "node:util";
// consola's core: its default entry reads process.stdout and process.stderr when a logger is
// created, and the first touch of either loads Bun's Node stream machinery (about 15 ms of
// every start, measured with Bun 1.4.5); stderr is touched here only when a line is written.
import { createConsola, LogLevels, type ConsolaInstance, type ConsolaReporter, type LogObject, type LogType } from "consola/core";
import { isTerminal } from "./terminal.ts";

export const LOG_LEVELS = ["silent", "error", "warn", "info", "debug", "trace"] as const;
export type LogLevelName = (typeof LOG_LEVELS)[number];
export type LogFormat = "pretty" | "json";

const levelNumber: Record<LogLevelName, number> = {
  silent: LogLevels.silent,
  error: LogLevels.error,
  warn: LogLevels.warn,
  info: LogLevels.info,
  debug: LogLevels.debug,
  trace: LogLevels.trace,
};

function initialLevel(): LogLevelName {
  const env = process.env.MCRELAY_LOG_LEVEL;
  return env && (LOG_LEVELS as readonly string[]).includes(env) ? (env as LogLevelName) : "info";
}

function initialFormat(): LogFormat {
  const env = process.env.MCRELAY_LOG_FORMAT;
  if (env === "json" || env === "pretty") return env;
  // Under a service manager (no terminal, journal or INVOCATION_ID set): JSON lines.
  return !isTerminal(2) && process.env.INVOCATION_ID ? "json" : "pretty";
}

/**
 * Syslog priority of each record type, for the `<N>` line prefix journald reads on a stream
 * (sd-daemon(3)): `journalctl -p warning` then shows warnings and worse only.
 */
const SYSLOG_PRIORITY: Record<string, number> = {
  fatal: 2, // crit
  error: 3, // err
  fail: 3,
  warn: 4, // warning
  log: 5, // notice
  info: 6, // info
  success: 6,
  ready: 6,
  start: 6,
  box: 6,
  debug: 7, // debug
  trace: 7,
  verbose: 7,
};

/**
 * True when stderr is the stream systemd connected to the journal: JOURNAL_STREAM holds its
 * "device:inode", which must match stderr (it is inherited, and stderr may have been
 * redirected since, e.g. `mcrelay ... 2>file` run from a unit's shell).
 */
function stderrIsJournal(): boolean {
  const want = process.env.JOURNAL_STREAM;
  if (!want) return false;
  try {
    const st = fstatSync(2, { bigint: true });
    return want === `${st.dev}:${st.ino}`;
  } catch {
    return false;
  }
}

const journal = stderrIsJournal();

/** Writes `text` to stderr, each line prefixed with `<priority>` when stderr is the journal. */
export function writeLines(type: string, text: string): void {
  if (!journal) {
    process.stderr.write(text);
    return;
  }
  const prefix = `<${SYSLOG_PRIORITY[type] ?? 6}>`;
  const body = text.endsWith("\n") ? text.slice(0, -1) : text;
  process.stderr.write(`${body.split("\n").map((line) => prefix + line).join("\n")}\n`);
}

let format: LogFormat = initialFormat();
let level: LogLevelName = initialLevel();
/** Added to every JSON record and prefixed to pretty tags (a worker's identity). */
let identity: string | null = process.env.MCRELAY_LOG_IDENTITY ?? null;

const jsonReporter = {
  log(obj: LogObject) {
    const record: Record<string, unknown> = {
      time: obj.date.toISOString(),
      level: obj.type as LogType,
      tag: obj.tag || undefined,
      worker: identity ?? undefined,
      msg: obj.args.map((a) => (typeof a === "string" ? a : a instanceof Error ? a.message : JSON.stringify(a))).join(" "),
    };
    writeLines(obj.type, `${JSON.stringify(record)}\n`);
  },
};

/**
 * The pretty format: `[type] [tag] message`, arguments formatted as console.log does, an
 * error as its message and stack (paths relative to the working directory) and its causes:
 * consola's basic reporter, written here because consola/core does not export it.
 */
const inspectOptions: InspectOptions = { colors: !process.env.NO_COLOR && isTerminal(2) };

function formatError(err: Error, depth: number): string {
  const message = err.message ?? formatWithOptions(inspectOptions, err);
  const indent = "  ".repeat(depth + 1);
  const cwd = process.cwd() + sep;
  const stack = err.stack
    ? indent +
      err.stack
        .split("\n")
        .splice(message.split("\n").length)
        .map((l) => l.trim().replace("file://", "").replace(cwd, ""))
        .join(`\n${indent}`)
    : "";
  const cause = err.cause instanceof Error ? `\n\n${"  ".repeat(depth + 1)}[cause]: ${formatError(err.cause, depth + 1)}` : "";
  return `${message}\n${stack}${cause}`;
}

const prettyReporter: ConsolaReporter = {
  log(obj: LogObject) {
    const args = obj.args.map((a) => (a && typeof (a as Error).stack === "string" ? formatError(a as Error, 0) : a));
    const message = formatWithOptions(inspectOptions, ...args);
    const line = [obj.type ? `[${obj.type}]` : "", obj.tag ? `[${obj.tag}]` : "", message].filter(Boolean).join(" ");
    writeLines(obj.type, `${line}\n`);
  },
};
const prettyReporters: ConsolaReporter[] = [prettyReporter];

const root: ConsolaInstance = createConsola({
  level: levelNumber[level],
  reporters: prettyReporters,
});
if (format === "json") root.setReporters([jsonReporter]);

/** Every tagged logger: consola copies options into each, so changes are applied to all. */
const instances = new Set<ConsolaInstance>([root]);

export function logger(tag: string): ConsolaInstance {
  const l = root.withTag(identity ? `${identity}:${tag}` : tag);
  instances.add(l);
  return l;
}

export function setLogLevel(next: LogLevelName): void {
  level = next;
  for (const l of instances) l.level = levelNumber[next];
}

export function getLogLevel(): LogLevelName {
  return level;
}

export function setLogFormat(next: LogFormat): void {
  format = next;
  for (const l of instances) l.setReporters(next === "json" ? [jsonReporter] : prettyReporters);
}

export function getLogFormat(): LogFormat {
  return format;
}

export function setLogIdentity(id: string): void {
  identity = id;
}

/**
 * A budget for a log line that a client can cause at will (a refused request, a stalled
 * reader): at most `perSecond` lines a second, so that a flood of such requests cannot fill the
 * journal or the disk. The lines left out are counted and said in the next line written.
 */
export class LogBudget {
  #second = -1;
  #used = 0;
  #skipped = 0;

  constructor(
    readonly perSecond: number,
    private readonly nowMs: () => number = Date.now,
  ) {}

  /** Calls `write` with a suffix that counts the lines left out before it, if the budget allows. */
  spend(write: (skippedNote: string) => void): boolean {
    const second = Math.floor(this.nowMs() / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#used = 0;
    }
    if (this.#used >= this.perSecond) {
      this.#skipped += 1;
      return false;
    }
    this.#used += 1;
    const note = this.#skipped ? ` (${this.#skipped} more like it not logged before this one: at most ${this.perSecond} a second)` : "";
    this.#skipped = 0;
    write(note);
    return true;
  }
}
