// The unprivileged user workers run as, looked up in /etc/passwd.
import { readFileSync } from "node:fs";
import { UsageError } from "../errors.ts";
import { logger } from "../log.ts";

const log = logger("user");

/** The workers' own user, created by packaging/sysusers.d/mcrelay.conf. */
export const DEDICATED_WORKER_USER = "mcrelay-worker";
/** The last resort: shared with other daemons, and its group (nogroup) often with them too. */
export const DEFAULT_WORKER_USER = "nobody";

export interface WorkerUser {
  name: string;
  uid: number;
  gid: number;
}

export function lookupUser(name: string, passwd = "/etc/passwd"): WorkerUser {
  let text: string;
  try {
    text = readFileSync(passwd, "utf8");
  } catch (err) {
    throw new UsageError(`--user: cannot read ${passwd}: ${(err as Error).message}`);
  }
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 4) continue;
    if (f[0] === name || (/^\d+$/.test(name) && f[2] === name)) {
      const user = { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]) };
      if (user.uid === 0) throw new UsageError(`--user: '${name}' is root; workers must run as an unprivileged user`);
      if (user.gid === 0) throw new UsageError(`--user: '${name}' has the root group (gid 0) as its primary group; workers must not (files of group root would be theirs)`);
      return user;
    }
  }
  throw new UsageError(`--user: no user named '${name}' in ${passwd}`);
}

/**
 * The user workers become: as root, the named user (default mcrelay-worker, else nobody); otherwise the current
 * user unless one is named (then the worker needs CAP_SETUID and CAP_SETGID to switch).
 */
export function workerUser(flag: string | undefined): WorkerUser {
  const root = process.geteuid?.() === 0;
  if (!flag && !root) return ownUser();
  const user = flag ? lookupUser(flag) : defaultUser();
  // Signalling a process of another user needs CAP_KILL: without it a hung worker could not be
  // stopped. Root has it; a non-root supervisor must hold it to use --user.
  if (!root && user.uid !== process.getuid?.() && !hasCapability(CAP_KILL)) {
    throw new UsageError(
      `--user ${flag}: a non-root supervisor needs CAP_KILL to stop workers of another user; ` +
        "omit --user (workers then run as the supervisor's own user, without capabilities) or grant CAP_KILL",
    );
  }
  return user;
}

/**
 * A non-root supervisor without --user: its own uid and primary group. A primary group of root
 * (gid 0) is refused here, before anything is spawned: every worker would refuse it at its set-up
 * (zig/worker.zig, zig/privileges.zig: gid 0 owns what root's processes create) and die, in a
 * restart loop.
 */
function ownUser(): WorkerUser {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  if (gid === 0) {
    throw new UsageError(
      `--user: not given, so the workers would run as the supervisor's own user (uid ${uid}) and its primary group, which is root (gid 0); ` +
        "workers refuse the root group: pass --user with a user whose primary group is not root, or start mcrelay with another primary group",
    );
  }
  return { name: String(uid), uid, gid };
}

/** As root without --user: the dedicated user when it exists, else nobody (with a warning). */
export function defaultUser(passwd = "/etc/passwd"): WorkerUser {
  try {
    return lookupUser(DEDICATED_WORKER_USER, passwd);
  } catch (err) {
    if (!(err instanceof UsageError) || !err.message.includes("no user named")) throw err;
  }
  log.warn(`no user ${DEDICATED_WORKER_USER}: workers run as ${DEFAULT_WORKER_USER}, which other services may share; create ${DEDICATED_WORKER_USER} (packaging/sysusers.d) or pass --user`);
  return lookupUser(DEFAULT_WORKER_USER, passwd);
}

const CAP_KILL = 5;

function hasCapability(cap: number): boolean {
  const hex = readFileSync("/proc/self/status", "utf8").match(/^CapEff:\s*([0-9a-f]+)/m)?.[1];
  return hex !== undefined && ((BigInt(`0x${hex}`) >> BigInt(cap)) & 1n) === 1n;
}
