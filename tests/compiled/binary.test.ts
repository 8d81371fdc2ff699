// The compiled executable dist/mcrelay (built by `bun run test` before the tests run): it is
// what users install, with the native library embedded, so it gets its own end-to-end run.
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, COMPILED_PATH, mcrelayCommand, note, runFlow, runGen, workerSum } from "../support/relay-harness.ts";

const mode = "compiled" as const;
const TEST_TIMEOUT_MS = 180_000;
/** Entries other processes on the machine may add to /tmp meanwhile. */
const TMP_SLACK_ENTRIES = 5;

/** Fails (never skips) when the executable is missing. */
function compiled(): string[] {
  if (!existsSync(COMPILED_PATH)) {
    throw new Error(`${COMPILED_PATH} does not exist: run \`bun run build\` first (\`bun run test\` does it before the tests)`);
  }
  return mcrelayCommand(mode);
}

/** Environment without TMPDIR, so the executable uses /tmp, the directory the test watches. */
function envWithoutTmpdir(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && k !== "TMPDIR") env[k] = v;
  env.NO_COLOR = "1";
  return env;
}

/**
 * The `comm` (what ps -o comm, top and perf show) of every `mcrelay _worker` process in network
 * namespace `ns` (a name under /run/netns): the compiled executable starts its workers from an
 * anonymous memory file through /proc/self/fd/N, which would name them "N".
 */
function workerCommsIn(ns: string): string[] {
  const net = `net:[${statSync(`/run/netns/${ns}`).ino}]`;
  const comms: string[] = [];
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (readlinkSync(`/proc/${pid}/ns/net`) !== net) continue;
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[1] !== "_worker") continue;
      comms.push(readFileSync(`/proc/${pid}/comm`, "utf8").trim());
    } catch {
      // The process ended meanwhile.
    }
  }
  return comms;
}

describe("dist/mcrelay (compiled executable)", () => {
  test("exists and is executable", () => {
    const argv = compiled();
    const r = Bun.spawnSync({ cmd: [...argv, "--version"], stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString().trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  test("version --json reports a compiled build with the embedded native library loaded", () => {
    const r = Bun.spawnSync({ cmd: [...compiled(), "version", "--json"], stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(0);
    const info = JSON.parse(r.stdout.toString());
    expect(info).toMatchObject({ compiled: true, arch: process.arch });
    expect(info.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(Number.isInteger(info.native_abi) && info.native_abi > 0).toBe(true);
    expect(Number.isInteger(info.protocol)).toBe(true);
  });

  test("a usage error exits with code 2 and a message naming the flag, without a stack trace", () => {
    const r = Bun.spawnSync({
      cmd: [...compiled(), "gen", "--to", "239.1.1.1:5000@g0", "--size", "99999"],
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, NO_COLOR: "1" },
    });
    const stderr = r.stderr.toString();
    expect({ exitCode: r.exitCode, stderr }).toEqual({ exitCode: 2, stderr: expect.stringContaining("--size") });
    expect(stderr).toContain("99999");
    expect(stderr).not.toMatch(/^\s+at .*\.[jt]s:\d+/m);
  });

  test(
    "starting `version` 100 times leaves no files behind in /tmp",
    async () => {
      const argv = compiled();
      const env = envWithoutTmpdir();
      const before = readdirSync("/tmp").length; // includes dot-files
      const runs = 100;
      const batch = 10;
      let ok = 0;
      for (let i = 0; i < runs; i += batch) {
        const procs = Array.from({ length: batch }, () => Bun.spawn({ cmd: [...argv, "version"], stdout: "ignore", stderr: "ignore", env }));
        for (const p of procs) if ((await p.exited) === 0) ok += 1;
      }
      const after = readdirSync("/tmp").length;
      note("tmp entries", { before, after, runs });
      expect(ok).toBe(runs);
      expect(after - before).toBeLessThanOrEqual(TMP_SLACK_ENTRIES);
    },
    TEST_TIMEOUT_MS,
  );
});

describe.skipIf(!netnsAvailable())("dist/mcrelay forwarding (kernel)", () => {
  let topo: Topology | undefined;

  afterEach(async () => {
    await topo?.destroy();
    topo = undefined;
  });

  test(
    "10,000 packets at 10,000 pps are relayed with group and port rewritten, none lost or duplicated; its worker (started from memory) is named mcrelay-worker",
    async () => {
      compiled();
      topo = await Topology.create("compiled");
      const rt = await buildRelayTopology(topo, { label: "compiled" });
      const count = 10_000;
      const size = 1316;
      let comms: string[] = [];
      const r = await runFlow(rt, {
        mode,
        forwards: [{ args: ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"] }],
        sinks: [{ ns: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", args: ["--expect", String(count)] }],
        traffic: async () => {
          comms = workerCommsIn(rt.relay);
          return await runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "10000", "--count", String(count), "--size", String(size)]);
        },
      });
      expect(comms).toEqual(["mcrelay-worker"]);
      const [sink] = r.sinks;
      const [relay] = r.forwards;
      note("compiled rewrite", { gen: r.traffic, sink: sink!.totals, latency_us: sink!.streams[0]?.latency_us });

      expect(r.traffic.sent).toBe(count);
      expect(sink!.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, foreign: 0, datagrams: count, bytes: count * size });
      expect(relay!.rules[0]!.packets).toBe(count);
      expect(relay!.rules[0]!.outputs[0]).toMatchObject({ to: "239.2.2.2:6000@r1", packets: count, send_errors: {} });
      expect(workerSum(relay!, "matched")).toBe(count);
    },
    TEST_TIMEOUT_MS,
  );
});
