// `mcrelay config check FILE` (offline, touches no daemon) and `mcrelay config show`.
import { defineCommand } from "citty";
import { ConfigFileError, formatProblem, loadConfig } from "../config/file.ts";
import type { ConfigCheck } from "./output-schemas.ts";
import { logger } from "../log.ts";

const log = logger("config");
import { checkFlags, jsonArg } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { printErr, printJson, printLine } from "./output.ts";
import type { ResultOf } from "../control/responses.ts";

const checkArgs = { file: { type: "positional", valueHint: "FILE", description: "Config file to check", required: true }, ...jsonArg } as const;
const showArgs = { ...socketArg, ...jsonArg } as const;

const check = defineCommand({
  meta: { name: "check", description: "Validate a config file (ours or mcr's) without touching the daemon; every problem as FILE:LINE:COLUMN" },
  args: checkArgs,
  run({ rawArgs, args: a }) {
    checkFlags(rawArgs, checkArgs, 1);
    let result: ConfigCheck;
    try {
      const cfg = loadConfig(a.file);
      result = { file: a.file, ok: true, format: cfg.format, rules: cfg.specs, workers: Object.fromEntries(cfg.workers), workers_default: cfg.workersDefault, warnings: cfg.warnings, errors: [] };
    } catch (err) {
      if (!(err instanceof ConfigFileError)) throw err;
      // With --json the result document is printed for an invalid file too (exit 3 still).
      process.exitCode = err.exitCode;
      result = { file: a.file, ok: false, format: "mcrelay", rules: [], workers: {}, workers_default: null, warnings: err.warnings, errors: err.problems };
    }
    for (const w of result.warnings) log.warn(formatProblem(w));
    if (a.json) return printJson(result);
    for (const e of result.errors) printErr(formatProblem(e));
    if (result.ok) printLine(`${a.file}: ok, ${result.rules.length} rules${result.format === "mcr" ? " (mcr's format)" : ""}${result.warnings.length ? `, ${result.warnings.length} warnings` : ""}`);
    else printErr(`${a.file}: ${result.errors.length} ${result.errors.length === 1 ? "problem" : "problems"}`);
  },
});

/** A key as JSON5 writes it: bare when it is an identifier, else quoted ("eth0.100"). */
function json5Key(k: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(k) ? k : JSON.stringify(k);
}

/**
 * A value as the config file writes it, on one line: `{ to: "x", ttl: 4 }`, `["a", "b"]`, keys
 * bare where they can be, at every depth (an object-form output too, not JSON's `{"to":"x"}`).
 * Strings are JSON's double-quoted text, which JSON5 reads as written.
 */
export function json5Value(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(json5Value).join(", ")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value).filter(([, x]) => x !== undefined);
    return entries.length ? `{ ${entries.map(([k, x]) => `${json5Key(k)}: ${json5Value(x)}`).join(", ")} }` : "{}";
  }
  return JSON.stringify(value);
}

/**
 * The running rules as a config file: `config check` accepts it, and a daemon started with it
 * runs the same rules. Each rule is preceded by a comment with its id and origin; runtime
 * rules (added with `mcrelay add`) are marked as such.
 */
export function configText(r: ResultOf<"config-show">, now = new Date()): string {
  const lines = [
    `// The rules of the running mcrelay daemon (mcrelay config show, ${now.toISOString()}).`,
    `// Config file: ${r.config_file ?? "none"}; runtime rules are kept in ${r.state_dir ?? "no state directory"}.`,
    "// As a --config file this gives the same rules; the runtime ones become config rules.",
    "{",
  ];
  if (Object.keys(r.workers).length) lines.push(`  workers: ${json5Value(r.workers)},`);
  else if (r.workers_default !== null) lines.push(`  workers: ${r.workers_default},`);
  lines.push("  rules: [");
  for (const { origin, id, ...spec } of r.rules) {
    lines.push(origin === "runtime" ? `    // id ${id}: runtime rule (mcrelay add), not in the config file` : `    // id ${id}: from the ${origin === "config" ? "config file" : "command line"}`);
    lines.push(`    ${json5Value(spec)},`);
  }
  lines.push("  ],", "}");
  return lines.join("\n");
}

const show = defineCommand({
  meta: { name: "show", description: "Print the daemon's rules as a config file (runtime rules marked); --json: as a document" },
  args: showArgs,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, showArgs);
    const r = await withClient(a.socket, (c) => c.request("config-show"));
    if (a.json) printJson(r);
    else printLine(configText(r));
  },
});

export default defineCommand({
  meta: { name: "config", description: "Check a config file, or show the daemon's configuration" },
  subCommands: { check, show },
});
