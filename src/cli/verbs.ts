// The verbs of `mcrelay`, loaded lazily so `mcrelay version` stays fast, and how a typed word
// becomes a verb: exact names, aliases (`show` = `list`), unambiguous prefixes as ip(8) takes
// them (`mcrelay li` = `list`), and a "did you mean" when nothing matches.
import type { CommandDef } from "citty";
import { UsageError } from "../errors.ts";

export interface Verb {
  name: string;
  /** Other names that mean the same verb (`show` for `list`). */
  aliases: readonly string[];
  /** The section of `mcrelay help` it is listed under. */
  group: "daemon" | "rules" | "reading" | "tools";
  load: () => Promise<CommandDef>;
}

const verb = (name: string, group: Verb["group"], load: () => Promise<{ default: unknown }>, aliases: readonly string[] = []): Verb => ({
  name,
  aliases,
  group,
  load: () => load().then((m) => m.default as CommandDef),
});

export const VERBS: readonly Verb[] = [
  verb("run", "daemon", () => import("./run.ts")),
  verb("reload", "daemon", () => import("./reload.ts")),
  verb("status", "reading", () => import("./status.ts")),
  verb("ping", "reading", () => import("./ping.ts")),
  verb("add", "rules", () => import("./add.ts")),
  verb("remove", "rules", () => import("./remove.ts"), ["del", "delete"]),
  verb("list", "reading", () => import("./list.ts"), ["show", "ls"]),
  verb("stats", "reading", () => import("./stats.ts")),
  verb("workers", "reading", () => import("./workers.ts")),
  verb("events", "reading", () => import("./events.ts")),
  verb("diagnose", "reading", () => import("./diagnose.ts")),
  verb("trace", "reading", () => import("./trace.ts")),
  verb("capture", "reading", () => import("./capture.ts")),
  verb("log-level", "daemon", () => import("./log-level.ts")),
  verb("config", "daemon", () => import("./config.ts")),
  verb("forward", "tools", () => import("./forward.ts")),
  verb("gen", "tools", () => import("./gen.ts")),
  verb("sink", "tools", () => import("./sink.ts")),
  verb("version", "reading", () => import("./version.ts")),
  verb("help", "reading", () => import("./help-verb.ts")),
];

/** Edit distance with adjacent transpositions ("lsit" is 1 from "list"). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/** The closest of `candidates` to `word` (at most 2 edits, or 1 for short words), or null. */
export function suggest(word: string, candidates: readonly string[]): string | null {
  const limit = word.length <= 3 ? 1 : 2;
  let best: string | null = null;
  let bestDistance = limit + 1;
  for (const c of candidates) {
    const dist = editDistance(word.toLowerCase(), c.toLowerCase());
    if (dist < bestDistance) {
      best = c;
      bestDistance = dist;
    }
  }
  return best;
}

export interface Named {
  name: string;
  aliases?: readonly string[];
}

/**
 * Finds what `word` names among `entries`: an exact name or alias first, then a prefix that
 * fits one entry only. Throws a UsageError that lists the candidates of an ambiguous prefix,
 * or suggests the closest name of an unknown word. `what` is "command" or "config command".
 */
export function resolveName<T extends Named>(word: string, entries: readonly T[], what: string, helpHint: string): T {
  const exact = entries.find((e) => e.name === word || e.aliases?.includes(word));
  if (exact) return exact;
  const matches = new Map<string, { entry: T; names: string[] }>();
  for (const e of entries) {
    for (const n of [e.name, ...(e.aliases ?? [])]) {
      if (!n.startsWith(word)) continue;
      const m = matches.get(e.name) ?? { entry: e, names: [] };
      m.names.push(n);
      matches.set(e.name, m);
    }
  }
  if (word.length > 0 && matches.size === 1) return [...matches.values()][0]!.entry;
  if (matches.size > 1) {
    const names = [...matches.values()].map((m) => (m.names.includes(m.entry.name) ? m.entry.name : `${m.names[0]} (${m.entry.name})`)).sort();
    throw new UsageError(`${what} '${word}' is ambiguous: ${names.join(", ")} (see ${helpHint})`);
  }
  const near = suggest(word, entries.flatMap((e) => [e.name, ...(e.aliases ?? [])]));
  throw new UsageError(`unknown ${what} '${word}'${near ? `; did you mean '${near}'?` : ""} (see ${helpHint})`);
}

/** The verbs a user may type. */
export function publicVerbs(): readonly Verb[] {
  return VERBS;
}

export function resolveVerb(word: string): Verb {
  return resolveName(word, publicVerbs(), "command", "mcrelay help");
}

/** A verb's sub-verbs (`config check`), resolved the same way. */
export async function resolveSubVerb(parent: CommandDef, parentName: string, word: string): Promise<[string, CommandDef]> {
  const subs = (parent.subCommands ?? {}) as Record<string, CommandDef>;
  const entries = Object.keys(subs).map((name) => ({ name }));
  const found = resolveName(word, entries, `${parentName} command`, `mcrelay help ${parentName}`);
  return [found.name, subs[found.name]!];
}
