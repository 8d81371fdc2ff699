// The command table: every verb (loaded lazily so `mcrelay version` stays fast) and the global
// options. main.ts runs it; scripts/gen-cli-docs.ts renders the man page and the shell
// completions from the same definitions.
import type { ArgsDef, CommandDef, CommandMeta } from "citty";
import { VERBS } from "./verbs.ts";
import { LOG_LEVELS } from "../log.ts";
import { VERSION } from "../version.ts";

/** Every verb by name, from the one verb table (src/cli/verbs.ts: names, aliases, groups). */
export const subCommands: Record<string, () => Promise<CommandDef>> = Object.fromEntries(VERBS.map((v) => [v.name, v.load]));

export const mainMeta: CommandMeta = { name: "mcrelay", version: VERSION, description: "Userspace multicast relay for Linux" };

/** Options every verb accepts, before or after it (parsed by main.ts, not by citty). */
export const globalArgs = {
  "log-level": { type: "enum", options: [...LOG_LEVELS], description: "Log level (default $MCRELAY_LOG_LEVEL or info)" },
  "log-format": { type: "enum", options: ["pretty", "json"], description: "Log format (default: pretty on a terminal, JSON lines otherwise)" },
} as const satisfies ArgsDef;
