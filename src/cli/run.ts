// `mcrelay run`: the daemon (supervisor) in the foreground, for a service manager.
import { readFileSync } from "node:fs";
import { defineCommand } from "citty";
import { socketPath } from "../control/client.ts";
import { DaemonRunningError } from "../control/server.ts";
import { UsageError } from "../errors.ts";
import { logger } from "../log.ts";
import { Daemon } from "../supervisor/daemon.ts";
import { loadNative } from "../native/lib.ts";
import { checkFlags, intFlag, validate } from "./args.ts";
import * as v from "valibot";
import { workerUser } from "../supervisor/user.ts";
import { socketArg } from "./daemon-client.ts";
import { ListenSchema } from "../config/listen.ts";

const log = logger("run");

export const DEFAULT_STATE_DIR = "/var/lib/mcrelay";

const args = {
  config: { type: "string", description: "Config file (JSON5); reloaded on SIGHUP and `mcrelay reload`" },
  ...socketArg,
  "state-dir": { type: "string", description: `Where runtime rules are kept (default $MCRELAY_STATE_DIR or ${DEFAULT_STATE_DIR})` },
  "socket-group": { type: "string", description: "Group allowed to use the control socket (mode 0660)" },
  user: { type: "string", description: "User the workers run as (default: nobody as root, else the daemon's own user)" },
  workers: { type: "string", description: "Workers per input interface (default 1; config `workers` overrides per interface)" },
  metrics: { type: "string", description: "Serve /metrics, /healthz, /readyz over HTTP on ADDR:PORT (e.g. 127.0.0.1:9464; config `metrics`)" },
  "watch-config": { type: "boolean", description: "Reload when the config file changes (as SIGHUP does)" },
} as const;

function groupId(name: string): number {
  if (/^\d+$/.test(name)) return Number(name);
  const line = readFileSync("/etc/group", "utf8")
    .split("\n")
    .find((l) => l.split(":")[0] === name);
  if (!line) throw new UsageError(`--socket-group: no group named '${name}'`);
  return Number(line.split(":")[2]);
}

export default defineCommand({
  meta: { name: "run", description: "Run the daemon in the foreground" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    loadNative();
    if (a["watch-config"] && !a.config) throw new UsageError("--watch-config: needs --config");
    const stateDir = a["state-dir"] || process.env.MCRELAY_STATE_DIR || DEFAULT_STATE_DIR;
    let daemon: Daemon;
    try {
      daemon = await Daemon.start({
        socketPath: socketPath(a.socket),
        stateDir,
        configPath: a.config,
        socketGid: a["socket-group"] ? groupId(a["socket-group"]) : undefined,
        user: workerUser(a.user),
        workers: validate(v.object({ workers: v.optional(intFlag(1, 64)) }), { workers: a.workers }).workers,
        metrics: validate(v.object({ metrics: v.optional(ListenSchema) }), { metrics: a.metrics }).metrics,
        watchConfig: a["watch-config"] ?? false,
      });
    } catch (err) {
      if (err instanceof DaemonRunningError) throw new UsageError(`${err.message}: another mcrelay daemon is running`);
      throw err;
    }
    const done = new Promise<string>((resolve) => {
      process.on("SIGTERM", () => resolve("SIGTERM"));
      process.on("SIGINT", () => resolve("SIGINT"));
    });
    // SIGHUP is reload, never death (a unit's ExecReload sends it).
    process.on("SIGHUP", () => {
      daemon.requestReload("SIGHUP").then(
        (r) => log.info(`SIGHUP reload: ${JSON.stringify(r)}`),
        (err) => log.error(`SIGHUP reload failed: ${(err as Error).message}`),
      );
    });
    const why = await done;
    log.info(`stopping (${why})`);
    await daemon.stop();
  },
});
