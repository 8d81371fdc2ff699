// Logging through consola only: one tagged logger per module, everything to stderr (stdout is
// for command output). `json` format writes one JSON object per line for service managers.
import { createConsola, LogLevels, type ConsolaInstance, type LogObject, type LogType } from "consola";

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
    process.stderr.write(`${JSON.stringify(record)}\n`);
  },
};

const root: ConsolaInstance = createConsola({
  level: levelNumber[level],
  stdout: process.stderr,
  stderr: process.stderr,
  // Plain lines (no boxes): logs are read in journals and terminals alike.
  ...({ fancy: false } as object),
  formatOptions: { colors: !process.env.NO_COLOR && process.stderr.isTTY, date: false },
});
const prettyReporters = [...root.options.reporters];
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
