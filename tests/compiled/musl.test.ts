// The musl builds (linux-x64-musl, linux-arm64-musl), cross-compiled on this machine and run
// here, not on Alpine: musl 1.2.5 is Debian 13's package, libstdc++/libgcc_s are Alpine's GCC 14
// libraries as vendored into PyPI's pyzmq musllinux wheels (scripts/musl-deps.sh installs both
// when missing). linux-x64-musl runs natively with LD_LIBRARY_PATH naming the libstdc++
// directory (the executable itself, not through the loader: Bun reads /proc/self/exe), including
// one relay through the packet-socket dataplane; linux-arm64-musl runs under qemu-aarch64 with a
// prefix tree (`-L`) holding the arm64 loader and libraries. Each build is made first
// (`bun scripts/build.ts --target T`; the Zig cache makes it about a second when nothing changed).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ABI_VERSION } from "../../src/native/abi.generated.ts";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, note, REPO_ROOT, runFlow, runGen, workerSum } from "../support/relay-harness.ts";

/** Emulated start-up takes seconds; the first build of a target downloads Bun's runtime for it. */
const SETUP_TIMEOUT_MS = 600_000;
const TEST_TIMEOUT_MS = 180_000;

interface Target {
  name: "linux-x64-musl" | "linux-arm64-musl";
  arch: "x64" | "arm64";
  /** ELF e_machine. */
  machine: number;
  interp: string;
  binary: string;
  /** argv prefix that runs the executable (set in beforeAll, once the dependencies are known). */
  cmd: string[];
  /** Files the running process must have mapped: the musl loader, libstdc++ and the libgcc_s it links. */
  mapped: string[];
}

const targets: Target[] = [
  { name: "linux-x64-musl", arch: "x64", machine: 62, interp: "/lib/ld-musl-x86_64.so.1", binary: "", cmd: [], mapped: [] },
  { name: "linux-arm64-musl", arch: "arm64", machine: 183, interp: "/lib/ld-musl-aarch64.so.1", binary: "", cmd: [], mapped: [] },
];
for (const t of targets) t.binary = join(REPO_ROOT, `dist/mcrelay-${t.name}`);

let dir = "";
/** Bun's own dlopen of an embedded file would extract a copy here; the memfd path must not. */
let tmp = "";

function spawnSync(cmd: string[]): { exitCode: number; stdout: string; stderr: string } {
  const r = Bun.spawnSync({ cmd, cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  return { exitCode: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** PT_INTERP of a 64-bit little-endian ELF executable. */
function interpreter(file: string): string {
  const b = readFileSync(file);
  const phoff = Number(b.readBigUInt64LE(32));
  const phentsize = b.readUInt16LE(54);
  const phnum = b.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (b.readUInt32LE(ph) !== 3) continue; // PT_INTERP
    const off = Number(b.readBigUInt64LE(ph + 8));
    const size = Number(b.readBigUInt64LE(ph + 32));
    return b.subarray(off, off + size).toString("latin1").replace(/\0+$/, "");
  }
  return "";
}

/** libstdc++.so.6 and the libgcc_s-<hash>.so.1 it links (the wheel's name, kept by musl-deps.sh). */
function libstdcxx(libdir: string): string[] {
  const gcc = readdirSync(libdir).filter((f) => /^libgcc_s-[0-9a-f]+\.so\.1$/.test(f));
  if (gcc.length !== 1) throw new Error(`${libdir}: expected one libgcc_s-<hash>.so.1, found ${JSON.stringify(gcc)}`);
  return [realpathSync(join(libdir, "libstdc++.so.6")), realpathSync(join(libdir, gcc[0]!))];
}

beforeAll(() => {
  const deps = spawnSync(["bash", join(REPO_ROOT, "scripts/musl-deps.sh")]);
  if (deps.exitCode !== 0) throw new Error(`scripts/musl-deps.sh failed:\n${deps.stderr}`);
  const [x64lib, a64prefix, qemu] = deps.stdout.trim().split(" ") as [string, string, string];
  dir = mkdtempSync(join(tmpdir(), "mcr-musl-"));
  tmp = join(dir, "tmp");
  mkdirSync(tmp);
  chmodSync(tmp, 0o1777); // workers run unprivileged
  const [x64, a64] = targets as [Target, Target];
  // `env` execs the executable, so /proc/self/exe (and the pid) stay its own.
  x64.cmd = ["env", `LD_LIBRARY_PATH=${x64lib}`, `TMPDIR=${tmp}`, x64.binary];
  x64.mapped = [realpathSync(x64.interp), ...libstdcxx(x64lib)];
  a64.cmd = ["env", `TMPDIR=${tmp}`, qemu, "-L", a64prefix, a64.binary];
  a64.mapped = [realpathSync(join(a64prefix, a64.interp)), ...libstdcxx(join(a64prefix, "usr/lib"))];
  for (const t of targets) {
    const build = spawnSync([process.execPath, join(REPO_ROOT, "scripts/build.ts"), "--target", t.name]);
    if (build.exitCode !== 0) throw new Error(`bun scripts/build.ts --target ${t.name} failed:\n${build.stderr}`);
  }
}, SETUP_TIMEOUT_MS);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

for (const t of targets) {
  const how = t.arch === "x64" ? "natively" : "under qemu-aarch64";

  describe(`${t.name} build, run ${how} with Debian's musl and Alpine's libstdc++`, () => {
    test(`the executable is an ELF for ${t.arch} whose interpreter is ${t.interp}`, () => {
      const header = readFileSync(t.binary).subarray(0, 20);
      expect([...header.subarray(0, 6)]).toEqual([0x7f, 0x45, 0x4c, 0x46, 2, 1]); // ELF, 64-bit, LE
      expect(header.readUInt16LE(18)).toBe(t.machine);
      expect(interpreter(t.binary)).toBe(t.interp);
    });

    test(
      "`version --json` reports a compiled build and the ABI of its embedded library, loaded from a memfd (no copy in TMPDIR)",
      () => {
        const r = spawnSync([...t.cmd, "version", "--json"]);
        expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: "" });
        expect(JSON.parse(r.stdout)).toMatchObject({ arch: t.arch, compiled: true, native_abi: ABI_VERSION });
        expect(readdirSync(tmp)).toEqual([]);
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
        const ok = spawnSync([...t.cmd, "config", "check", good, "--json"]);
        expect(ok.exitCode).toBe(0);
        expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, rules: [{ name: "video", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] }] });
        const ko = spawnSync([...t.cmd, "config", "check", bad]);
        expect(ko.exitCode).toBe(3);
        expect(ko.stderr).toContain("bogus: unknown key");
      },
      TEST_TIMEOUT_MS,
    );
  });

  describe.skipIf(!netnsAvailable())(`${t.name} build, run ${how}: traffic (kernel)`, () => {
    let topo: Topology | undefined;

    afterAll(async () => {
      await topo?.destroy();
    });

    test(
      "`gen` sends 500 datagrams over loopback and `sink` receives all 500 intact; the sink maps musl, libstdc++, libgcc_s and the library from a memfd",
      async () => {
        topo ??= await Topology.create(t.arch === "x64" ? "muslx64" : "muslarm64");
        const ns = await topo.ns("musl");
        const count = 500;
        const sink = topo.spawn(ns, [...t.cmd, "sink", "--listen", "127.0.0.1:5600", "--expect", String(count), "--count", String(count), "--duration", "120", "--json"], {
          stdout: "pipe",
          stderr: "pipe",
        });
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
        // What the running sink has mapped: `ip netns exec` and `env` exec, so the pid is the sink's
        // (for arm64, qemu's: it maps the guest's files itself).
        const maps = readFileSync(`/proc/${sink.pid}/maps`, "utf8");
        const files = new Set(maps.split("\n").map((l) => l.split(/\s+/).slice(5).join(" ")).filter((f) => f !== ""));
        for (const f of t.mapped) expect(files).toContain(f);
        expect([...files].filter((f) => f.startsWith("/memfd:libmcrelay.so"))).toEqual(["/memfd:libmcrelay.so (deleted)"]);
        if (t.arch === "x64") expect([...files].filter((f) => /libc\.so\.6|ld-linux/.test(f))).toEqual([]); // no glibc at all
        const gen = await topo.exec(ns, [...t.cmd, "gen", "--to", "127.0.0.1:5600", "--count", String(count), "--rate", "1000", "--size", "200", "--json"], { timeoutMs: 150_000 });
        expect(gen.exitCode).toBe(0);
        expect(JSON.parse(gen.stdout)).toMatchObject({ sent: count, send_errors: 0 });
        expect(await sink.exited).toBe(0);
        const report = JSON.parse(await new Response(sink.stdout).text());
        note(`${t.name} sink`, report.totals);
        expect(report.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, foreign: 0, datagrams: count, bytes: count * 200 });
        expect(readdirSync(tmp)).toEqual([]);
      },
      TEST_TIMEOUT_MS,
    );

    if (t.arch === "x64") {
      // The packet-socket dataplane (TPACKET_V3 ring, batched egress) in the musl build's worker
      // processes; not under emulation, where it is not run.
      test(
        "`forward` relays 5,000 packets at 5,000 pps between veth pairs with group and port rewritten, none lost or duplicated",
        async () => {
          topo ??= await Topology.create("muslx64");
          const rt = await buildRelayTopology(topo, { label: "muslfwd" });
          const count = 5_000;
          const size = 1316;
          const mode = t.cmd;
          const r = await runFlow(rt, {
            mode,
            forwards: [{ args: ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"] }],
            sinks: [{ ns: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", args: ["--expect", String(count)] }],
            traffic: () => runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "5000", "--count", String(count), "--size", String(size)]),
          });
          const [sink] = r.sinks;
          const [relay] = r.forwards;
          note("musl forward", { gen: r.traffic, sink: sink!.totals });
          expect(r.traffic.sent).toBe(count);
          expect(sink!.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, foreign: 0, datagrams: count, bytes: count * size });
          expect(relay!.rules[0]!.packets).toBe(count);
          expect(relay!.rules[0]!.outputs[0]).toMatchObject({ to: "239.2.2.2:6000@r1", packets: count, send_errors: {} });
          expect(workerSum(relay!, "matched")).toBe(count);
        },
        TEST_TIMEOUT_MS,
      );
    }
  });
}
