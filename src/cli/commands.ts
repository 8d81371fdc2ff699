// The command table: every verb (loaded lazily so `mcrelay version` stays fast) and the global
// options. main.ts runs it; scripts/gen-cli-docs.ts renders the man page and the shell
// completions from the same definitions.
import type { ArgsDef, CommandMeta } from "citty";
import { LOG_LEVELS } from "../log.ts";
import { VERSION } from "../version.ts";

export const subCommands = {
  run: () => import("./run.ts").then((m) => m.default),
  add: () => import("./add.ts").then((m) => m.default),
  remove: () => import("./remove.ts").then((m) => m.default),
  list: () => import("./list.ts").then((m) => m.default),
  stats: () => import("./stats.ts").then((m) => m.default),
  workers: () => import("./workers.ts").then((m) => m.default),
  "log-level": () => import("./log-level.ts").then((m) => m.default),
  ping: () => import("./ping.ts").then((m) => m.default),
  reload: () => import("./reload.ts").then((m) => m.default),
  config: () => import("./config.ts").then((m) => m.default),
  events: () => import("./events.ts").then((m) => m.default),
  trace: () => import("./trace.ts").then((m) => m.default),
  diagnose: () => import("./diagnose.ts").then((m) => m.default),
  capture: () => import("./capture.ts").then((m) => m.default),
  forward: () => import("./forward.ts").then((m) => m.default),
  gen: () => import("./gen.ts").then((m) => m.default),
  sink: () => import("./sink.ts").then((m) => m.default),
  version: () => import("./version.ts").then((m) => m.default),
  _worker: () => import("./worker.ts").then((m) => m.default),
};

export type VerbName = keyof typeof subCommands;

export const mainMeta: CommandMeta = { name: "mcrelay", version: VERSION, description: "Userspace multicast relay for Linux" };

/** Options every verb accepts, before or after it (parsed by main.ts, not by citty). */
export const globalArgs = {
  "log-level": { type: "enum", options: [...LOG_LEVELS], description: "Log level (default $MCRELAY_LOG_LEVEL or info)" },
  "log-format": { type: "enum", options: ["pretty", "json"], description: "Log format (default: pretty on a terminal, JSON lines otherwise)" },
} as const satisfies ArgsDef;
