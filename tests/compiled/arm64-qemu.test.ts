// The linux-arm64 (glibc) build, cross-compiled on this machine, run under user-mode QEMU with
// Debian's arm64 C library: the executable, its embedded arm64 native library (loaded from a
// memfd) and the traffic tools. scripts/qemu-arm64-deps.sh installs qemu-user and the arm64
// libc when missing; the build step is `bun scripts/build.ts --target linux-arm64` (the Zig
// cache makes it about a second when nothing changed).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { note, REPO_ROOT } from "../support/relay-harness.ts";

const BINARY = join(REPO_ROOT, "dist/mcrelay-linux-arm64");
/** Emulated JIT start-up is slow: `version` takes about 10 s on this 2-core VM. */
const SETUP_TIMEOUT_MS = 600_000;
const TEST_TIMEOUT_MS = 180_000;

let qemu: string[] = [];
let dir = "";

function spawnSync(cmd: string[]): { exitCode: number; stdout: string; stderr: string } {
  const r = Bun.spawnSync({ cmd, cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  return { exitCode: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

beforeAll(() => {
  const deps = spawnSync(["bash", join(REPO_ROOT, "scripts/qemu-arm64-deps.sh")]);
  if (deps.exitCode !== 0) throw new Error(`scripts/qemu-arm64-deps.sh failed:\n${deps.stderr}`);
  const [qemuBin, sysroot] = deps.stdout.trim().split(" ");
  qemu = [qemuBin!, "-L", sysroot!];
  const build = spawnSync([process.execPath, join(REPO_ROOT, "scripts/build.ts"), "--target", "linux-arm64"]);
  if (build.exitCode !== 0) throw new Error(`bun scripts/build.ts --target linux-arm64 failed:\n${build.stderr}`);
  dir = mkdtempSync(join(tmpdir(), "mcr-arm64-"));
}, SETUP_TIMEOUT_MS);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("linux-arm64 build under qemu-aarch64", () => {
  test("the executable is a 64-bit little-endian ELF for aarch64", () => {
    const header = readFileSync(BINARY).subarray(0, 20);
    expect([...header.subarray(0, 6)]).toEqual([0x7f, 0x45, 0x4c, 0x46, 2, 1]); // ELF, 64-bit, LE
    expect(header.readUInt16LE(18)).toBe(183); // e_machine EM_AARCH64
  });

  test(
    "`version --json` reports arm64 and the native ABI of the embedded arm64 library",
    () => {
      const r = spawnSync([...qemu, BINARY, "version", "--json"]);
      expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: "" });
      const info = JSON.parse(r.stdout);
      expect(info).toMatchObject({ arch: "arm64", compiled: true });
      const host = JSON.parse(spawnSync([process.execPath, join(REPO_ROOT, "src/main.ts"), "version", "--json"]).stdout);
      expect(info.native_abi).toBe(host.native_abi);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "`config check` accepts a good file (exit 0, its rules listed) and refuses a bad one (exit 3, key named)",
    () => {
      const good = join(dir, "good.json5");
      const bad = join(dir, "bad.json5");
      writeFileSync(good, `{ rules: [ { name: "video", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] } ] }\n`);
      writeFileSync(bad, `{ rules: [], bogus: 1 }\n`);
      const ok = spawnSync([...qemu, BINARY, "config", "check", good, "--json"]);
      expect(ok.exitCode).toBe(0);
      expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, rules: [{ name: "video", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] }] });
      const ko = spawnSync([...qemu, BINARY, "config", "check", bad]);
      expect(ko.exitCode).toBe(3);
      expect(ko.stderr).toContain("bogus: unknown key");
    },
    TEST_TIMEOUT_MS,
  );
});

describe.skipIf(!netnsAvailable())("linux-arm64 build under qemu-aarch64: traffic (kernel)", () => {
  let topo: Topology | undefined;

  afterAll(async () => {
    await topo?.destroy();
  });

  test(
    "arm64 `gen` sends 500 datagrams over loopback and arm64 `sink` receives all 500 intact",
    async () => {
      topo = await Topology.create("arm64");
      const ns = await topo.ns("qemu");
      const count = 500;
      const sink = topo.spawn(ns, [...qemu, BINARY, "sink", "--listen", "127.0.0.1:5600", "--expect", String(count), "--count", String(count), "--duration", "120", "--json"], {
        stdout: "pipe",
        stderr: "pipe",
      });
      // The sink prints "listening on" once bound; under emulation that takes seconds.
      const stderr: string[] = [];
      const reader = sink.stderr.getReader();
      const decoder = new TextDecoder();
      const deadline = Date.now() + 120_000;
      while (!stderr.join("").includes("listening on") && Date.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        stderr.push(decoder.decode(value));
      }
      reader.releaseLock();
      expect(stderr.join("")).toContain("listening on 127.0.0.1:5600");
      const gen = await topo.exec(ns, [...qemu, BINARY, "gen", "--to", "127.0.0.1:5600", "--count", String(count), "--rate", "1000", "--size", "200", "--json"], { timeoutMs: 150_000 });
      expect(gen.exitCode).toBe(0);
      expect(JSON.parse(gen.stdout)).toMatchObject({ sent: count, send_errors: 0 });
      expect(await sink.exited).toBe(0);
      const report = JSON.parse(await new Response(sink.stdout).text());
      note("arm64 sink", report.totals);
      expect(report.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, foreign: 0, datagrams: count, bytes: count * 200 });
    },
    TEST_TIMEOUT_MS,
  );
});
