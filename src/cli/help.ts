// Help text: `mcrelay help`, `mcrelay help VERB`, `mcrelay VERB --help`. Every line fits 80
// columns (descriptions wrap under their column) and every page ends with the exit codes.
import type { ArgDef, CommandDef } from "citty";
import { EXIT_MEANINGS } from "../errors.ts";
import { VERSION } from "../version.ts";
import { publicVerbs, type Verb } from "./verbs.ts";

export const HELP_WIDTH = 80;

/** Words of `text` wrapped to `width`, continuation lines indented by `indent` spaces. */
export function wrap(text: string, width: number, indent: number, firstIndent = indent): string[] {
  const lines: string[] = [];
  let line = " ".repeat(firstIndent);
  let empty = true;
  for (const word of text.split(/\s+/).filter(Boolean)) {
    const candidate = empty ? line + word : `${line} ${word}`;
    if (!empty && candidate.length > width) {
      lines.push(line);
      line = " ".repeat(indent) + word;
    } else line = candidate;
    empty = false;
  }
  lines.push(line);
  return lines.map((l) => l.trimEnd());
}

function columnFor(items: [string, string][]): number {
  return Math.min(Math.max(...items.map(([t]) => t.length), 0) + 4, 30);
}

/** "  term      description" rows, the description column wrapped within HELP_WIDTH. */
function rows(items: [string, string][], column = columnFor(items)): string[] {
  const out: string[] = [];
  for (const [term, text] of items) {
    const head = `  ${term}`;
    if (head.length + 2 > column) {
      out.push(head);
      out.push(...wrap(text, HELP_WIDTH, column));
    } else {
      const [first, ...rest] = wrap(text, HELP_WIDTH, column);
      out.push(head.padEnd(column) + first!.trimStart(), ...rest);
    }
  }
  return out;
}

function exitCodeLines(): string[] {
  return ["Exit codes:", ...rows(EXIT_MEANINGS.map(([code, text]) => [String(code), text]))];
}

const GROUP_TITLES: Record<Verb["group"], string> = {
  daemon: "The daemon",
  rules: "Rules in the running daemon",
  reading: "Reading",
  tools: "Without a daemon",
};

export async function mainHelp(): Promise<string> {
  const verbs = publicVerbs();
  const defs = await Promise.all(verbs.map(async (v) => [v, await v.load()] as const));
  const lines = [
    `mcrelay ${VERSION}: userspace multicast relay for Linux`,
    "",
    "Usage: mcrelay [GLOBAL OPTIONS] COMMAND [OPTIONS]",
    "       mcrelay help [COMMAND]",
    "",
  ];
  const entry = ([v, def]: (typeof defs)[number]): [string, string] => [
    v.name + (v.aliases.length ? ` (${v.aliases.join(", ")})` : ""),
    String((def.meta as { description?: string })?.description ?? ""),
  ];
  const column = columnFor(defs.map(entry));
  for (const group of Object.keys(GROUP_TITLES) as (keyof typeof GROUP_TITLES)[]) {
    lines.push(`${GROUP_TITLES[group]}:`, ...rows(defs.filter(([v]) => v.group === group).map(entry), column), "");
  }
  lines.push(
    "A command may be shortened to any unambiguous prefix (li = list).",
    "",
    "Global options (before or after the command):",
    ...rows([
      ["--log-level LEVEL", "silent, error, warn, info, debug or trace (default info, or $MCRELAY_LOG_LEVEL)"],
      ["--log-format FORMAT", "pretty or json (default: json under systemd when not on a terminal)"],
      ["-h, --help", "Show help (also: mcrelay COMMAND --help)"],
      ["-V, -v, --version", "Print the version and exit"],
    ]),
    "",
    ...exitCodeLines(),
  );
  return lines.join("\n");
}

function valueHint(name: string, def: ArgDef): string {
  const hint = (def as { valueHint?: string }).valueHint;
  return hint ?? name.toUpperCase().replace(/-/g, "_");
}

/** `names` is the command path without `mcrelay` (["config", "check"]). */
export function commandHelp(def: CommandDef, names: string[], aliases: readonly string[] = []): string {
  const meta = (def.meta ?? {}) as { description?: string };
  const args = (def.args ?? {}) as Record<string, ArgDef>;
  const positionals = Object.entries(args).filter(([, d]) => d.type === "positional");
  const options = Object.entries(args).filter(([, d]) => d.type !== "positional");
  const subs = Object.entries((def.subCommands ?? {}) as Record<string, CommandDef>);
  const usage = [
    "mcrelay",
    ...names,
    ...(subs.length ? ["COMMAND"] : []),
    ...positionals.map(([n, d]) => (d.required ? valueHint(n, d) : `[${valueHint(n, d)}]`)),
    ...options.filter(([, d]) => d.required).map(([n, d]) => `--${n} ${valueHint(n, d)}`),
    ...(options.some(([, d]) => !d.required) ? ["[OPTIONS]"] : []),
  ].join(" ");
  const lines = [...wrap(`Usage: ${usage}`, HELP_WIDTH, 7, 0), ""];
  lines.push(...wrap(meta.description ?? "", HELP_WIDTH, 0), "");
  if (aliases.length) lines.push(`Also called: ${aliases.join(", ")}`, "");
  if (subs.length) {
    lines.push("Commands:", ...rows(subs.map(([n, d]) => [n, String((d.meta as { description?: string })?.description ?? "")])), "");
  }
  if (positionals.length) {
    lines.push("Arguments:", ...rows(positionals.map(([n, d]) => [valueHint(n, d), d.description ?? ""])), "");
  }
  const optionRows: [string, string][] = options.map(([n, d]) => {
    const alias = (d as { alias?: string | string[] }).alias;
    const shorts = (Array.isArray(alias) ? alias : alias ? [alias] : []).map((a) => (a.length === 1 ? `-${a}` : `--${a}`));
    const value = d.type === "boolean" ? "" : ` ${valueHint(n, d)}`;
    return [[...shorts, `--${n}`].join(", ") + value, (d.description ?? "") + (d.required ? " (required)" : "")];
  });
  optionRows.push(["-h, --help", "Show this help"]);
  lines.push("Options:", ...rows(optionRows), "");
  lines.push(...exitCodeLines());
  return lines.join("\n");
}
