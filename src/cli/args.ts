// Command-line plumbing shared by the verbs: strict flag checking (citty accepts anything),
// repeated flags, and valibot validation whose messages name the flag.
import * as v from "valibot";
import type { ArgsDef } from "citty";
import { UsageError } from "../errors.ts";
import { suggest } from "./verbs.ts";

export const jsonArg = { json: { type: "boolean", alias: "j", description: "Print one JSON document to stdout (errors too)" } } as const;

/** Is `--json` (or `-j`, alone or in a group like `-jw`) among the verb's arguments? */
export function wantsJson(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === "--") return false;
    if (a === "--json" || a === "--json=true") return true;
    if (/^-[A-Za-z]+$/.test(a) && a.includes("j")) return true;
  }
  return false;
}

interface FlagDef {
  type?: string;
  alias?: string | string[];
}

function aliasesOf(d: FlagDef): string[] {
  return Array.isArray(d.alias) ? d.alias : d.alias ? [d.alias] : [];
}

/** "unknown option '--jsno'; did you mean '--json'?" */
function unknownOption(arg: string, def: ArgsDef): UsageError {
  const longs = Object.entries(def)
    .filter(([, d]) => (d as FlagDef).type !== "positional")
    .flatMap(([n, d]) => [n, ...aliasesOf(d as FlagDef).filter((a) => a.length > 1)]);
  const word = arg.replace(/^--?(no-)?/, "").split("=")[0]!;
  const near = arg.startsWith("--") || word.length > 1 ? suggest(word, [...longs, "help"]) : null;
  return new UsageError(`unknown option '${arg}'${near ? `; did you mean '--${near}'?` : ""} (see --help)`);
}

/**
 * Rejects options the command does not define (citty's parser is lenient) and stray
 * positionals. Long options (`--json`, `--to=X`, `--no-watch`), single-letter aliases (`-j`)
 * and groups of them (`-jw`; a letter that takes a value ends the group) are understood.
 */
/**
 * An empty value is never meaningful, and some options fell back to their default with one:
 * `run --config=$UNSET` started with no rules, `--state-dir=` used /var/lib/mcrelay.
 */
function emptyValue(flag: string): UsageError {
  return new UsageError(`option ${flag} has an empty value (an unset shell variable?)`);
}

export function checkFlags(rawArgs: readonly string[], def: ArgsDef, positionals = 0): void {
  const long = new Map<string, FlagDef>([["help", { type: "boolean" }]]);
  const short = new Map<string, [string, FlagDef]>([["h", ["help", { type: "boolean" }]]]);
  for (const [name, raw] of Object.entries(def)) {
    const d = raw as FlagDef;
    if (d.type === "positional") continue;
    long.set(name, d);
    for (const a of aliasesOf(d)) {
      if (a.length === 1) short.set(a, [name, d]);
      else long.set(a, d);
    }
  }
  const takesValue = (d: FlagDef) => d.type === "string" || d.type === "enum";
  let seenPositionals = 0;
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i]!;
    if (arg === "--") break;
    if (arg.startsWith("--")) {
      const name = arg.slice(2).split("=")[0]!;
      const d = long.get(name) ?? (name.startsWith("no-") ? long.get(name.slice(3)) : undefined);
      if (!d) throw unknownOption(arg, def);
      if (takesValue(d) && !arg.includes("=")) {
        if (i + 1 >= rawArgs.length) throw new UsageError(`option --${name} needs a value`);
        i += 1;
        if (rawArgs[i] === "") throw emptyValue(`--${name}`);
      } else if (takesValue(d) && arg.endsWith("=")) throw emptyValue(`--${name}`);
      continue;
    }
    if (arg.startsWith("-") && arg !== "-" && !/^-\d/.test(arg)) {
      const letters = arg.slice(1);
      for (let k = 0; k < letters.length; k++) {
        const found = short.get(letters[k]!);
        if (!found) throw unknownOption(letters.length === 1 ? arg : `-${letters[k]}`, def);
        const [name, d] = found;
        if (!takesValue(d)) continue;
        if (k !== letters.length - 1) throw new UsageError(`option -${letters[k]} (--${name}) needs a value; put it last in '${arg}'`);
        if (i + 1 >= rawArgs.length) throw new UsageError(`option -${letters[k]} (--${name}) needs a value`);
        i += 1;
        if (rawArgs[i] === "") throw emptyValue(`-${letters[k]} (--${name})`);
      }
      continue;
    }
    seenPositionals += 1;
    if (seenPositionals > positionals) throw new UsageError(`unexpected argument '${arg}' (see --help)`);
  }
}

/** Every value given for a repeatable string flag (`--to X`, `--to=X`, `-t X`), in order. */
export function repeated(rawArgs: readonly string[], name: string, shortName?: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i]!;
    if (arg === "--") break;
    const isShort = shortName !== undefined && /^-[A-Za-z]+$/.test(arg) && arg.endsWith(shortName);
    if (arg === `--${name}` || isShort) {
      const next = rawArgs[i + 1];
      if (next !== undefined) out.push(next);
      i += 1;
    } else if (arg.startsWith(`--${name}=`)) {
      out.push(arg.slice(name.length + 3));
    }
  }
  return out;
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
