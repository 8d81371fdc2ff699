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
  if (flag || process.geteuid?.() === 0) return lookupUser(flag || DEFAULT_WORKER_USER);
  return { name: String(process.getuid?.()), uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
}
