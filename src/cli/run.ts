// `mcrelay run`: the daemon (supervisor) in the foreground, for a service manager.
import { readdirSync, readFileSync } from "node:fs";
import { defineCommand } from "citty";
import { socketPath } from "../control/client.ts";
import { DaemonRunningError, SocketPathError } from "../control/server.ts";
import { CLIENTS_MAX_DEFAULT, CLIENTS_MAX_LIMIT, FD_RESERVE } from "../control/protocol.ts";
import { AlreadyRunningError, EXIT, NativeError, PermissionError, UsageError } from "../errors.ts";
import { RING_MIB_MAX, RING_MIB_MIN, WORKERS_PER_INTERFACE_MAX } from "../limits.ts";
import { logger } from "../log.ts";
import { Daemon } from "../supervisor/daemon.ts";
import { WORKER_TEST_HOOKS } from "../supervisor/worker-handle.ts";
import { fdClose, loadNative, nofileRaise, packetOpen } from "../native/lib.ts";
import { checkFlags, intFlag, repeated, validate } from "./args.ts";
import * as v from "valibot";
import { workerUser, type WorkerUser } from "../supervisor/user.ts";
import { socketArg } from "./daemon-client.ts";
import { ListenSchema } from "../config/listen.ts";

const log = logger("run");

export const DEFAULT_STATE_DIR = "/var/lib/mcrelay";

const args = {
  config: { type: "string", alias: "c", valueHint: "FILE", description: "Config file (JSON5); reloaded on SIGHUP and `mcrelay reload`" },
  ...socketArg,
  "state-dir": { type: "string", valueHint: "DIR", description: `Where runtime rules are kept (default $MCRELAY_STATE_DIR or ${DEFAULT_STATE_DIR})` },
  "socket-group": { type: "string", valueHint: "GROUP", description: "Group allowed to read through the control socket (list, stats, events; mode 0660)" },
  "admin-group": { type: "string", description: "Group allowed to change rules through the control socket (root and CAP_NET_ADMIN always may)" },
  "clients-max": { type: "string", description: `Control connections at once (default ${CLIENTS_MAX_DEFAULT}; lowered to fit the descriptor limit)` },
  user: { type: "string", alias: "u", description: "User the workers run as (default as root: mcrelay-worker if it exists, else nobody; otherwise the daemon's own user)" },
  workers: { type: "string", valueHint: "N", description: "Worker processes (default 1); each input interface is spread over all of them (config `workers` overrides)" },
  "ring-mib": { type: "string", description: `Ring of each packet socket in MiB (${RING_MIB_MIN}-${RING_MIB_MAX}; default 8: 64 ms at 1 Gbit/s; config \`ring_mib\` overrides per interface)` },
  metrics: { type: "string", valueHint: "ADDR:PORT", description: "Serve /metrics, /healthz, /readyz over HTTP on ADDR:PORT (e.g. 127.0.0.1:9464; config `metrics`)" },
  "watch-config": { type: "boolean", description: "Reload when the config file changes (as SIGHUP does)" },
  "test-hook": { type: "string", repeatable: true, valueHint: "NAME=N", description: `Tests only: put NAME=N in every worker's environment (${WORKER_TEST_HOOKS.join(", ")}); repeatable` },
} as const;

/**
 * `--test-hook NAME=N` values: the one way a worker gets a test hook (the supervisor's own
 * MCRELAY_TEST_* variables are not passed on). Told with a warning: never set outside tests.
 */
function testHooks(rawArgs: readonly string[]): Record<string, string> {
  const hooks: Record<string, string> = {};
  for (const given of repeated(rawArgs, args, "test-hook")) {
    const m = /^([A-Z0-9_]+)=(\d{1,9})$/.exec(given);
    if (!m || !(WORKER_TEST_HOOKS as readonly string[]).includes(m[1]!)) {
      throw new UsageError(`--test-hook: '${given}' is not NAME=N with NAME one of ${WORKER_TEST_HOOKS.join(", ")} and N a whole number`);
    }
    hooks[m[1]!] = m[2]!;
  }
  const list = Object.entries(hooks).map(([n, val]) => `${n}=${val}`);
  if (list.length > 0) log.warn(`test hooks passed to the workers: ${list.join(", ")} (never set outside tests)`);
  return hooks;
}

function groupId(flag: string, name: string): number {
  if (/^\d+$/.test(name)) return Number(name);
  const line = readFileSync("/etc/group", "utf8")
    .split("\n")
    .find((l) => l.split(":")[0] === name);
  if (!line) throw new UsageError(`--${flag}: no group named '${name}'`);
  return Number(line.split(":")[2]);
}

/**
 * Who may use the socket. With both groups and different ones, the file is 0666 and every
 * connection is checked by its peer credentials alone (the daemon always checks them).
 */
function socketAccess(a: { "socket-group"?: string; "admin-group"?: string }, user: WorkerUser | null) {
  const socketGid = a["socket-group"] ? groupId("socket-group", a["socket-group"]) : undefined;
  const adminGid = a["admin-group"] ? groupId("admin-group", a["admin-group"]) : undefined;
  for (const [flag, gid] of [["socket-group", socketGid], ["admin-group", adminGid]] as const) {
    if (gid !== undefined && user && user.gid === gid) {
      throw new UsageError(`--${flag}: the workers' user ${user.name} has group ${gid}; a worker must not be able to use the control socket (choose another group or --user)`);
    }
  }
  const fileGid = socketGid ?? adminGid;
  const mode = socketGid !== undefined && adminGid !== undefined && socketGid !== adminGid ? 0o666 : 0o660;
  return { socketGid: fileGid, socketMode: mode, adminGid };
}

/** The descriptor limit raised to its hard limit; the client cap lowered so FD_RESERVE stays free for workers. */
function clientsWithinLimit(wanted: number): number {
  const { soft } = nofileRaise();
  const open = readdirSync("/proc/self/fd").length;
  const room = soft - open - FD_RESERVE;
  if (room < wanted) {
    const n = Math.max(1, room);
    log.warn(`descriptor limit ${soft}: at most ${n} control clients (not ${wanted}), keeping ${FD_RESERVE} descriptors for workers`);
    return n;
  }
  return wanted;
}

/**
 * Without CAP_NET_RAW no worker can ever open its packet socket: the daemon would start and
 * its workers fail in a loop. Say so at once (exit 5), naming the capability.
 */
function requirePacketSockets(): void {
  try {
    fdClose(packetOpen());
  } catch (err) {
    if (err instanceof NativeError && err.exitCode === EXIT.permission) {
      throw new PermissionError(
        `${err.message}: mcrelay run needs CAP_NET_RAW to open packet sockets (and CAP_SETUID, CAP_SETGID, CAP_KILL for its workers); run it as root or with these capabilities (docs/operations.md)`,
      );
    }
    throw err;
  }
}

export default defineCommand({
  meta: { name: "run", description: "Run the daemon in the foreground" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    loadNative();
    if (a["watch-config"] && !a.config) throw new UsageError("--watch-config: needs --config");
    const stateDir = a["state-dir"] || process.env.MCRELAY_STATE_DIR || DEFAULT_STATE_DIR;
    const flags = validate(
      v.object({ workers: v.optional(intFlag(1, WORKERS_PER_INTERFACE_MAX)), "ring-mib": v.optional(intFlag(RING_MIB_MIN, RING_MIB_MAX)), clientsMax: v.optional(intFlag(1, CLIENTS_MAX_LIMIT)) }),
      { workers: a.workers, "ring-mib": a["ring-mib"], clientsMax: a["clients-max"] },
    );
    const user = workerUser(a.user);
    const hooks = testHooks(rawArgs);
    requirePacketSockets();
    // Signal handlers before start-up: until a listener exists SIGTERM/SIGHUP kill at once (a
    // `systemctl stop` or reload right after READY=1 ended the daemon with status 143).
    const done = new Promise<string>((resolve) => {
      process.on("SIGTERM", () => resolve("SIGTERM"));
      process.on("SIGINT", () => resolve("SIGINT"));
    });
    let started: Daemon | null = null;
    // SIGHUP is reload, never death (a unit's ExecReload sends it).
    process.on("SIGHUP", () => {
      if (!started) return log.warn("SIGHUP during start-up ignored: the config file is being read now");
      started.requestReload("SIGHUP").then(
        (r) => log.info(`SIGHUP reload: ${JSON.stringify(r)}`),
        (err) => log.error(`SIGHUP reload failed: ${(err as Error).message}`),
      );
    });
    let daemon: Daemon;
    try {
      daemon = await Daemon.start({
        socketPath: socketPath(a.socket),
        stateDir,
        configPath: a.config,
        ...socketAccess(a, user),
        clientsMax: clientsWithinLimit(flags.clientsMax ?? CLIENTS_MAX_DEFAULT),
        user,
        workers: flags.workers,
        ringMib: flags["ring-mib"],
        metrics: validate(v.object({ metrics: v.optional(ListenSchema) }), { metrics: a.metrics }).metrics,
        watchConfig: a["watch-config"] ?? false,
        testHooks: hooks,
      });
    } catch (err) {
      if (err instanceof DaemonRunningError) throw new AlreadyRunningError(`${err.message}: another mcrelay daemon is running`);
      if (err instanceof SocketPathError) throw new UsageError(`--socket: ${err.message}`);
      // A state directory or socket path this user may not create: exit 5 naming it, no trace.
      if (/\b(EACCES|EPERM)\b/.test((err as Error).message ?? "")) {
        throw new PermissionError(`${(err as Error).message}: run as root, or point --state-dir ($MCRELAY_STATE_DIR) and --socket ($MCRELAY_SOCKET) at paths this user may write`);
      }
      throw err;
    }
    started = daemon;
    const why = await done;
    log.info(`stopping (${why})`);
    await daemon.stop();
  },
});
