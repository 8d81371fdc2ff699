// The unprivileged user workers run as, looked up in /etc/passwd.
import { readFileSync } from "node:fs";
import { UsageError } from "../errors.ts";

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
      return user;
    }
  }
  throw new UsageError(`--user: no user named '${name}' in ${passwd}`);
}

/**
 * The user workers become: as root, the named user (default nobody); otherwise the current
 * user unless one is named (then the worker needs CAP_SETUID and CAP_SETGID to switch).
 */
export function workerUser(flag: string | undefined): WorkerUser {
  const root = process.geteuid?.() === 0;
  if (!flag && !root) return { name: String(process.getuid?.()), uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  const user = lookupUser(flag || DEFAULT_WORKER_USER);
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

const CAP_KILL = 5;

function hasCapability(cap: number): boolean {
  const hex = readFileSync("/proc/self/status", "utf8").match(/^CapEff:\s*([0-9a-f]+)/m)?.[1];
  return hex !== undefined && ((BigInt(`0x${hex}`) >> BigInt(cap)) & 1n) === 1n;
}
