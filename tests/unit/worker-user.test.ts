// The workers' user: the dedicated mcrelay-worker when it exists, nobody only as the last
// resort, never root and never a user whose primary group is root.
import { afterEach, describe, expect, test } from "bun:test";
import { UsageError } from "../../src/errors.ts";
import { defaultUser, lookupUser } from "../../src/supervisor/user.ts";
import { TempDir } from "../support/daemon-harness.ts";

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
});
