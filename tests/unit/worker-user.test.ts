// The workers' user: the dedicated mcrelay-worker when it exists, nobody only as the last
// resort, never root and never a user whose primary group is root.
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, readdirSync } from "node:fs";
import { UsageError } from "../../src/errors.ts";
import { defaultUser, lookupUser } from "../../src/supervisor/user.ts";
import { TempDir } from "../support/daemon-harness.ts";
import { mcrelayCommand } from "../support/relay-harness.ts";

const root = process.getuid?.() === 0;
const setpriv = Bun.which("setpriv");

let dir: TempDir | undefined;
afterEach(() => dir?.remove());

function passwd(lines: string[]): string {
  dir = new TempDir("mcr-user-");
  return dir.file("passwd", `${lines.join("\n")}\n`);
}

const ROOT = "root:x:0:0:root:/root:/bin/sh";
const NOBODY = "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin";
const DEDICATED = "mcrelay-worker:x:998:997:mcrelay dataplane workers:/:/usr/sbin/nologin";

describe("worker user", () => {
  test("the dedicated mcrelay-worker is the default when it exists", () => {
    expect(defaultUser(passwd([ROOT, NOBODY, DEDICATED]))).toEqual({ name: "mcrelay-worker", uid: 998, gid: 997 });
  });

  test("without mcrelay-worker the default is nobody", () => {
    expect(defaultUser(passwd([ROOT, NOBODY]))).toEqual({ name: "nobody", uid: 65534, gid: 65534 });
  });

  test("a user whose primary group is root (gid 0) is refused, naming the group", () => {
    const p = passwd([ROOT, "oops:x:1001:0::/:/bin/sh"]);
    expect(() => lookupUser("oops", p)).toThrow(UsageError);
    expect(() => lookupUser("oops", p)).toThrow(/root group \(gid 0\)/);
  });

  test("root is refused", () => {
    expect(() => lookupUser("root", passwd([ROOT]))).toThrow(/is root/);
  });

  test.skipIf(!root || setpriv === null)(
    "a non-root supervisor without --user whose primary group is root refuses to start, naming the group and --user, before it spawns a worker",
    async () => {
      dir = new TempDir("mcr-user-");
      chmodSync(dir.path, 0o777);
      // The capabilities operations.md gives a non-root supervisor, so that only the group is wrong.
      const caps = "+net_raw,+setuid,+setgid,+kill";
      const proc = Bun.spawn({
        cmd: [setpriv!, "--reuid=65534", "--regid=0", "--clear-groups", `--inh-caps=${caps}`, `--ambient-caps=${caps}`, "--", ...mcrelayCommand("bun"), "run", "--socket", dir.join("ctl.sock"), "--state-dir", dir.join("state")],
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
        env: { ...process.env, NO_COLOR: "1" },
      });
      // Before: it started, and every worker it spawned refused gid 0 and died, in a loop.
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      const code = await proc.exited;
      clearTimeout(timer);
      const stderr = await new Response(proc.stderr).text();
      expect({ code, stderr }).toEqual({ code: 2, stderr: expect.stringContaining("primary group, which is root (gid 0)") });
      expect(stderr).toContain("pass --user");
      // Nothing was set up: no control socket, no state directory.
      expect(existsSync(dir.join("ctl.sock"))).toBe(false);
      expect(readdirSync(dir.path)).toEqual([]);
    },
    20_000,
  );
});
