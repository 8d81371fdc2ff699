// Command-line plumbing shared by the verbs: strict flag checking (citty accepts anything),
// repeated flags, and valibot validation whose messages name the flag.
import * as v from "valibot";
import type { ArgsDef } from "citty";
import { UsageError } from "../errors.ts";

export const jsonArg = { json: { type: "boolean", description: "Print one JSON document to stdout" } } as const;

/** Rejects flags the command does not define (citty's parser is lenient) and stray positionals. */
export function checkFlags(rawArgs: readonly string[], def: ArgsDef, positionals = 0): void {
  const known = new Set<string>(["help", "h"]);
  for (const [name, d] of Object.entries(def)) {
    known.add(name);
    const alias = (d as { alias?: string | string[] }).alias;
    for (const a of Array.isArray(alias) ? alias : alias ? [alias] : []) known.add(a);
  }
  let seenPositionals = 0;
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i]!;
    if (arg === "--") break;
    if (arg.startsWith("-") && arg !== "-") {
      const name = arg.replace(/^--?(no-)?/, "").split("=")[0]!;
      if (!known.has(name)) throw new UsageError(`unknown option '${arg}' (see --help)`);
      const d = def[name] as { type?: string } | undefined;
      if (d && (d.type === "string" || d.type === "enum") && !arg.includes("=")) {
        if (i + 1 >= rawArgs.length) throw new UsageError(`option --${name} needs a value`);
        i += 1;
      }
      continue;
    }
    seenPositionals += 1;
    if (seenPositionals > positionals) throw new UsageError(`unexpected argument '${arg}' (see --help)`);
  }
}

/** Every value given for a repeatable string flag, in order. */
export function repeated(rawArgs: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i]!;
    if (arg === "--") break;
    if (arg === `--${name}`) {
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
