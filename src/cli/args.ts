// Command-line plumbing shared by the verbs: the arguments read as getopt(3) reads them (short
// option groups, `--`), strict checking of them (citty accepts anything), repeated options, the
// one reading handed to citty (cittyArgv), and valibot validation whose messages name the flag.
import * as v from "valibot";
import { parseArgs, type ArgsDef } from "citty";
import { UsageError } from "../errors.ts";
import { suggest } from "./verbs.ts";

export const jsonArg = { json: { type: "boolean", alias: "j", description: "Print one JSON document to stdout (errors too)" } } as const;

/**
 * Is `--json` (or `-j`, alone or in a group like `-jw`) among the arguments? Without the
 * verb's options (an unknown verb) this guesses from the spelling; with them it reads the
 * arguments as checkFlags does (`stats -nj` is `--interval j`, not `--json`).
 */
export function wantsJson(args: readonly string[], def?: ArgsDef): boolean {
  if (def) {
    let json = false;
    for (const t of scanArgs(args, def)) if (t.kind === "option" && t.name === "json") json = t.value === true;
    return json;
  }
  for (const a of args) {
    if (a === "--") return false;
    if (a === "--json" || a.toLowerCase() === "--json=true") return true;
    if (/^-[A-Za-z]+$/.test(a) && a.includes("j")) return true;
  }
  return false;
}

/** Is help asked for (`--help`, `-h`, or `h` in a group like `-jh`) before any `--`? */
export function wantsHelp(args: readonly string[], def: ArgsDef): boolean {
  return scanArgs(args, def).some((t) => t.kind === "option" && t.name === "help");
}

interface FlagDef {
  type?: string;
  alias?: string | string[];
  /** Given once per value (`--to`); any other value-taking option given twice is refused. */
  repeatable?: boolean;
  valueHint?: string;
  default?: unknown;
}

function aliasesOf(d: FlagDef): string[] {
  return Array.isArray(d.alias) ? d.alias : d.alias ? [d.alias] : [];
}

/** An option the verb does not have. */
class UnknownOptionError extends UsageError {
  /** `body`: the message without its "(see --help)"; `maybeArgument`: the word may be meant as an argument (`-old`, `-1`), not a mistyped option. */
  constructor(
    readonly body: string,
    readonly maybeArgument: boolean,
  ) {
    super(`${body} (see --help)`);
  }
}

/** "unknown option '--jsno'; did you mean '--json'?" */
function unknownOption(arg: string, def: ArgsDef): UnknownOptionError {
  const longs = Object.entries(def)
    .filter(([, d]) => (d as FlagDef).type !== "positional")
    .flatMap(([n, d]) => [n, ...aliasesOf(d as FlagDef).filter((a) => a.length > 1)]);
  const word = arg.replace(/^--?(no-)?/, "").split("=")[0]!;
  const near = arg.startsWith("--") || word.length > 1 ? suggest(word, [...longs, "help"]) : null;
  return new UnknownOptionError(`unknown option '${arg}'${near ? `; did you mean '--${near}'?` : ""}`, near === null);
}

/**
 * An empty value is never meaningful, and some options fell back to their default with one:
 * `run --config=$UNSET` started with no rules, `--state-dir=` used /var/lib/mcrelay.
 */
function emptyValue(flag: string): UsageError {
  return new UsageError(`option ${flag} has an empty value (an unset shell variable?)`);
}

/**
 * An on/off option's value after `=`: true or false in any case. Anything else was read as
 * true (`add --replace=False` replaced the rule), and `--json=` as JSON.
 */
function onOffValue(flag: string, text: string): boolean {
  const lower = text.toLowerCase();
  if (lower === "true" || lower === "false") return lower === "true";
  throw new UsageError(`option ${flag} is on or off: after '=' it takes true or false, not '${text}' (see --help)`);
}

/** Dashes a word processor or a web page puts where `--` or `-` was typed: en dash, em dash, minus sign. */
const TYPOGRAPHIC_DASH = /^[\u2013\u2014\u2212]+/;

/** What one word (or one letter of a group) of the command line is, read as getopt(3) reads it. */
export type ArgToken =
  /** `name` is the option's own name (`interval` for `-n`); `value` is true/false for an on/off option. */
  | { kind: "option"; name: string; value: string | boolean }
  | { kind: "positional"; value: string; afterDashDash: boolean }
  /** A word that is wrong (an unknown option, a missing value); `word` is the whole word. */
  | { kind: "problem"; error: UsageError; word: string };

/**
 * Reads the arguments against a verb's options the way getopt(3) does, and the way citty's
 * parser (node:util parseArgs) hands the values to the verb, so that what is checked is what
 * runs: `--opt VALUE`, `--opt=VALUE`, `--no-opt` for an on/off option; one `-` starts a group
 * of letters, each an on/off option until one that takes a value, which takes the rest of the
 * group (`-wjn1` = `-w -j -n 1`) or, last in the group, the next word (`-wjn 1`); `--` ends
 * the options and every word after it is a positional argument, even one starting with `-`.
 * A problem does not end the reading (so `--json` after a bad option is still seen): it is a
 * token, and checkFlags throws the first.
 */
export function scanArgs(rawArgs: readonly string[], def: ArgsDef): ArgToken[] {
  // Not an on/off option: `--help=false` and `--no-help` are refused, never read as help.
  const help: [string, FlagDef] = ["help", { type: "help" }];
  const long = new Map<string, [string, FlagDef]>([["help", help]]);
  const short = new Map<string, [string, FlagDef]>([["h", help]]);
  for (const [name, raw] of Object.entries(def)) {
    const d = raw as FlagDef;
    if (d.type === "positional") continue;
    long.set(name, [name, d]);
    for (const a of aliasesOf(d)) (a.length === 1 ? short : long).set(a, [name, d]);
  }
  const takesValue = (d: FlagDef) => d.type === "string" || d.type === "enum";
  const tokens: ArgToken[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i]!;
    if (arg === "--") {
      for (const value of rawArgs.slice(i + 1)) tokens.push({ kind: "positional", value, afterDashDash: true });
      break;
    }
    try {
      if (arg.startsWith("--")) {
        const name = arg.slice(2).split("=")[0]!;
        const inline = arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : undefined;
        if (name === "no-help" || (name === "help" && inline !== undefined)) {
          throw new UsageError(`'${arg}': --help takes no value and has no --no-help form (see --help)`);
        }
        // `--no-X` turns an on/off option off; a value-taking option has no `--no-` form.
        const negated = !long.has(name) && name.startsWith("no-") && long.get(name.slice(3))?.[1].type === "boolean";
        const found = long.get(negated ? name.slice(3) : name);
        if (!found) throw unknownOption(arg, def);
        const [canonical, d] = found;
        if (takesValue(d) && inline === undefined) {
          if (i + 1 >= rawArgs.length) throw new UsageError(`option --${name} needs a value`);
          i += 1;
          if (rawArgs[i] === "") throw emptyValue(`--${name}`);
          tokens.push({ kind: "option", name: canonical, value: rawArgs[i]! });
        } else if (takesValue(d) && inline === "") throw emptyValue(`--${name}`);
        else if (takesValue(d)) tokens.push({ kind: "option", name: canonical, value: inline! });
        else if (negated && inline !== undefined) throw new UsageError(`option --${name} takes no value (see --help)`);
        else tokens.push({ kind: "option", name: canonical, value: negated ? false : inline === undefined || onOffValue(`--${name}`, inline) });
        continue;
      }
      if (arg.startsWith("-") && arg !== "-") {
        // `-json` for `--json`: read as a group it would be -j -s on; say what was meant.
        const spelled = arg.slice(1).split("=")[0]!;
        if (spelled.length > 1 && long.has(spelled)) {
          throw new UnknownOptionError(`unknown option '${arg}'; did you mean '-${arg}'? (one '-' starts a group of one-letter options)`, false);
        }
        const letters = arg.slice(1);
        // By code point: a letter outside the BMP (an emoji) is one letter, never half of one.
        for (let k = 0, next = 0; k < letters.length; k = next) {
          const letter = String.fromCodePoint(letters.codePointAt(k)!);
          next = k + letter.length;
          const found = short.get(letter);
          if (!found) {
            // As getopt: name the letter (and its group), go on with the next letter.
            const where = next >= letters.length && k === 0 ? "" : ` in '${arg}'`;
            tokens.push({ kind: "problem", error: new UnknownOptionError(`unknown option '-${letter}'${where}`, k === 0), word: arg });
            continue;
          }
          const [name, d] = found;
          if (!takesValue(d)) {
            tokens.push({ kind: "option", name, value: true });
            continue;
          }
          if (next < letters.length) {
            // The rest of the group is the value: `-n1`, `-wjn1`, `-tADDR`.
            tokens.push({ kind: "option", name, value: letters.slice(next) });
            break;
          }
          if (i + 1 >= rawArgs.length) throw new UsageError(`option -${letter} (--${name}) needs a value`);
          i += 1;
          if (rawArgs[i] === "") throw emptyValue(`-${letter} (--${name})`);
          tokens.push({ kind: "option", name, value: rawArgs[i]! });
        }
        continue;
      }
      const dash = TYPOGRAPHIC_DASH.exec(arg)?.[0];
      if (dash) {
        // `—watch` pasted from a page that turned `--` into a dash: an option, not an argument.
        const rest = arg.slice(dash.length);
        const meant = short.has(rest) ? `-${rest}` : `--${rest}`;
        const codes = [...new Set(dash)].map((c) => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`).join(", ");
        throw new UnknownOptionError(`'${arg}' starts with a typographic dash (${codes}), not '-'; did you mean '${meant}'?`, true);
      }
      tokens.push({ kind: "positional", value: arg, afterDashDash: false });
    } catch (err) {
      if (!(err instanceof UsageError)) throw err;
      tokens.push({ kind: "problem", error: err, word: arg });
    }
  }
  return tokens;
}

/** "'a', 'b'" */
function quoted(words: readonly string[]): string {
  return words.map((w) => `'${w}'`).join(", ");
}

/** The positional arguments a verb defines, in order, as help names them (`RULE`). */
function positionalNames(def: ArgsDef): string[] {
  return Object.entries(def)
    .filter(([, d]) => (d as FlagDef).type === "positional")
    .map(([n, d]) => (d as FlagDef).valueHint ?? n.toUpperCase().replace(/-/g, "_"));
}

/**
 * Rejects what the command does not define (citty's parser is lenient: an unknown option is
 * kept as an on/off one, a word too many is dropped): unknown options, options missing their
 * value, a value-taking option given twice unless it is repeatable (one value was dropped:
 * `--from A --from B` used B), more positional arguments than the verb takes (`positionals`),
 * those after `--` included, and an empty argument (`stats ""` read as no rule: every rule).
 * main.ts calls it for every verb before citty reads the arguments (so a stray word is named
 * before citty's "missing argument"); each verb's `run` calls it again.
 */
export function checkFlags(rawArgs: readonly string[], def: ArgsDef, positionals = 0): void {
  const tokens = scanArgs(rawArgs, def);
  const problem = tokens.find((t) => t.kind === "problem");
  if (problem) {
    // A verb that takes an argument may be given one that starts with '-' (a rule named -old).
    if (problem.error instanceof UnknownOptionError && problem.error.maybeArgument && positionals > 0) {
      throw new UsageError(`${problem.error.body}; to pass '${problem.word}' as an argument, put it after '--' (see --help)`);
    }
    throw problem.error;
  }
  checkRepeats(tokens, def);
  const words = tokens.flatMap((t) => (t.kind === "positional" ? [t] : []));
  if (words.length > positionals) {
    const stray = words.slice(positionals);
    const after = stray.every((w) => w.afterDashDash) ? " after '--'" : "";
    const takes = positionals === 0 ? "this command takes no arguments" : `this command takes at most ${positionals} argument${positionals === 1 ? "" : "s"}`;
    throw new UsageError(`unexpected argument${stray.length === 1 ? "" : "s"}${after}: ${quoted(stray.map((w) => w.value))} (${takes}; see --help)`);
  }
  const empty = words.findIndex((w) => w.value === "");
  if (empty >= 0) throw new UsageError(`argument ${positionalNames(def)[empty] ?? empty + 1} is empty (an unset shell variable?) (see --help)`);
}

/** A value-taking option given more than once that takes one value: refused naming every value. */
function checkRepeats(tokens: readonly ArgToken[], def: ArgsDef): void {
  const values = new Map<string, string[]>();
  for (const t of tokens) {
    if (t.kind !== "option" || typeof t.value !== "string") continue;
    if ((def[t.name] as FlagDef | undefined)?.repeatable) continue;
    values.set(t.name, [...(values.get(t.name) ?? []), t.value]);
  }
  for (const [name, given] of values) {
    if (given.length > 1) throw new UsageError(`option --${name} is given ${given.length} times (${quoted(given)}); it takes one value (see --help)`);
  }
}

/**
 * The arguments as citty must read them, from scanArgs's reading of them: `--name=VALUE` for
 * every value given (a repeatable option once per value), `--name=true|false` once for each
 * on/off option in its final state, then `--` and the positional arguments. citty's own parser
 * must never see the words as typed: it drops every word starting with `--no-` (even one taken
 * as a value: `--config --no-watch-config` ran with no config), turns a value-taking option
 * with no value into "", and applies `--no-X` last whatever the order. Call after checkFlags.
 * What citty reads back is compared with what was checked, and a difference is a bug (thrown
 * as an internal error, never run).
 */
export function cittyArgv(rawArgs: readonly string[], def: ArgsDef): string[] {
  const tokens = scanArgs(rawArgs, def);
  const values: string[] = [];
  const onOff = new Map<string, boolean>();
  const words: string[] = [];
  const expected: Record<string, unknown> = {};
  for (const [name, d] of Object.entries(def)) if ((d as FlagDef).type !== "positional") expected[name] = (d as FlagDef).default;
  for (const t of tokens) {
    if (t.kind === "problem") throw t.error;
    if (t.kind === "positional") words.push(t.value);
    else if (typeof t.value === "boolean") onOff.set(t.name, t.value);
    else values.push(`--${t.name}=${t.value}`);
    if (t.kind === "option") expected[t.name] = t.value;
  }
  const argv = [...values, ...[...onOff].map(([name, on]) => `--${name}=${on}`), "--", ...words];
  const read = parseArgs(argv, def) as Record<string, unknown>;
  const names = Object.entries(def).filter(([, d]) => (d as FlagDef).type === "positional").map(([n]) => n);
  names.forEach((n, i) => (expected[n] = words[i] ?? (def[n] as FlagDef).default));
  for (const [name, want] of Object.entries(expected)) {
    if (read[name] !== want) throw new Error(`internal error: citty reads ${name} as ${JSON.stringify(read[name])}, checked as ${JSON.stringify(want)}`);
  }
  return argv;
}

/** How many positional arguments a verb's options define (`stats [RULE]`: 1). */
export function positionalCount(def: ArgsDef): number {
  return Object.values(def).filter((d) => (d as FlagDef).type === "positional").length;
}

/** Every value given for a repeatable string option (`--to X`, `--to=X`, `-t X`, `-tX`, `-jt X`), in order. */
export function repeated(rawArgs: readonly string[], def: ArgsDef, name: string): string[] {
  return scanArgs(rawArgs, def).flatMap((t) => (t.kind === "option" && t.name === name && typeof t.value === "string" ? [t.value] : []));
}

/** Parses with a valibot schema; the error message names the flag (`--to[2]: ...`). */
export function validate<S extends v.GenericSchema>(schema: S, input: unknown): v.InferOutput<S> {
  const result = v.safeParse(schema, input);
  if (result.success) return result.output;
  const messages = result.issues.map((issue) => {
    const path = (issue.path ?? [])
      .map((p, i) => (typeof p.key === "number" ? `[${p.key}]` : i === 0 ? `--${String(p.key)}` : `.${String(p.key)}`))
      .join("");
    return path ? `${path}: ${issue.message}` : issue.message;
  });
  throw new UsageError(messages.join("\n"));
}

/** A flag holding an integer in [min, max], given as text. */
export function intFlag(min: number, max: number) {
  return v.pipe(
    v.string(),
    v.rawTransform(({ dataset, addIssue, NEVER }) => {
      const text = dataset.value.trim();
      if (!/^-?\d+$/.test(text)) {
        addIssue({ message: `'${dataset.value}' is not a whole number` });
        return NEVER;
      }
      const n = Number(text);
      if (n < min || n > max) {
        addIssue({ message: `${n} is out of range (${min}-${max})` });
        return NEVER;
      }
      return n;
    }),
  );
}

/** A flag holding a number of seconds (fractions allowed) in (0, max]. */
export function secondsFlag(max = 31 * 24 * 3600) {
  return v.pipe(
    v.string(),
    v.rawTransform(({ dataset, addIssue, NEVER }) => {
      const text = dataset.value.trim();
      if (!/^\d+(\.\d+)?$/.test(text)) {
        addIssue({ message: `'${dataset.value}' is not a number of seconds` });
        return NEVER;
      }
      const n = Number(text);
      if (n <= 0 || n > max) {
        addIssue({ message: `${n} is out of range (more than 0, at most ${max} seconds)` });
        return NEVER;
      }
      return n;
    }),
  );
}
