// Logging through consola only: one tagged logger per module, everything to stderr (stdout is
// for command output). `json` format writes one JSON object per line for service managers.
import { fstatSync } from "node:fs";
import { createConsola, LogLevels, type ConsolaInstance, type ConsolaReporter, type LogObject, type LogType } from "consola";

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
  return !process.stderr.isTTY && process.env.INVOCATION_ID ? "json" : "pretty";
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

/** The record type being printed by a pretty reporter, for the stream below. */
let printing: string = "info";

/** What consola's pretty reporter writes to: stderr, line-prefixed under journald. */
const prettyStream = {
  write(text: string): boolean {
    writeLines(printing, text);
    return true;
  },
} as unknown as NodeJS.WriteStream;

const root: ConsolaInstance = createConsola({
  level: levelNumber[level],
  stdout: prettyStream,
  stderr: prettyStream,
  // Plain lines (no boxes): logs are read in journals and terminals alike.
  ...({ fancy: false } as object),
  formatOptions: { colors: !process.env.NO_COLOR && process.stderr.isTTY, date: false },
});
/** consola's own reporters, told which record they print (for its priority). */
const prettyReporters: ConsolaReporter[] = root.options.reporters.map((r) => ({
  log(obj: LogObject, ctx: Parameters<ConsolaReporter["log"]>[1]) {
    printing = obj.type;
    r.log(obj, ctx);
  },
}));
root.setReporters(prettyReporters);
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
