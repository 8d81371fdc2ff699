// A CLI that meets a daemon of another version answering in an older shape (an upgrade without
// a restart: same protocol number, a changed result) names both versions and what to do, and
// exits 6 without a stack trace.
import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PROTOCOL_VERSION as P, VERSION } from "../../src/version.ts";
import { mcrelayCommand } from "../support/relay-harness.ts";

const OLD = "0.0.1-old";
let cleanup: (() => void) | null = null;

afterEach(() => {
  cleanup?.();
  cleanup = null;
});

/** A fake daemon of version OLD: a proper hello, then `status` in a shape no version ever had. */
function oldDaemon(): string {
  const dir = mkdtempSync(join(tmpdir(), "mcr-oldd-"));
  const sock = join(dir, "old.sock");
  const server = Bun.listen({
    unix: sock,
    socket: {
      data(s, chunk) {
        for (const line of new TextDecoder().decode(chunk).split("\n").filter(Boolean)) {
          const req = JSON.parse(line) as { id: number; cmd: string };
          const result = req.cmd === "hello" ? { daemon: OLD, protocol: P, mode: "daemon" } : { rules: 1, uptime: "3 days" };
          s.write(`${JSON.stringify({ v: P, id: req.id, ok: true, result })}\n`);
        }
      },
    },
  });
  cleanup = () => {
    server.stop(true);
    rmSync(dir, { recursive: true, force: true });
  };
  return sock;
}

test("a daemon of an older version answering status in its old shape: the CLI names both versions, says to restart the daemon, and exits 6", async () => {
  const sock = oldDaemon();
  // Not spawnSync: the fake daemon answers from this process's event loop.
  const p = Bun.spawn({ cmd: [...mcrelayCommand("bun"), "status", "--socket", sock], stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  expect({ code, stdout }).toEqual({ code: 6, stdout: "" });
  expect(stderr).toContain(`daemon is mcrelay ${OLD}, this client is ${VERSION}: restart the daemon (systemctl restart mcrelay)`);
  expect(stderr).toContain("does not fit");
  expect(stderr).not.toContain("    at "); // no stack trace
}, 20_000);
