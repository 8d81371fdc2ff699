// The compiled executable on a host whose /tmp (and $TMPDIR) is mounted noexec, as hardened
// images and CIS-style fstabs do. Each command runs in a private mount namespace (`unshare -m`)
// with a fresh noexec tmpfs over /tmp, so the host's /tmp is untouched.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import {
  buildRelayTopology,
  COMPILED_PATH,
  READY,
  READY_TIMEOUT_MS,
  runGen,
  startLogged,
  startSink,
  type ForwardReport,
  type SinkReport,
} from "../support/relay-harness.ts";

const TEST_TIMEOUT_MS = 120_000;

/**
 * argv that runs `argv` with a noexec tmpfs over /tmp and TMPDIR=/tmp/run inside it. `exec`
 * keeps the pid, so signals sent to the spawned process reach mcrelay itself.
 */
function underNoexecTmp(argv: string[]): string[] {
  const setup =
    "mount -t tmpfs -o noexec,nosuid,nodev,size=16m mcr-noexec /tmp && mkdir /tmp/run && " +
    'TMPDIR=/tmp/run exec "$@"';
  return ["unshare", "-m", "--propagation", "private", "sh", "-c", setup, "sh", ...argv];
}

/**
 * The executable to run. A checkout under /tmp (a CI clone may be one) would be hidden by the
 * tmpfs mounted over /tmp, so the executable is then run from a copy in /var/tmp, which the
 * mount leaves alone; the copy is removed after the tests.
 */
let copied: string | null = null;
function compiled(): string {
  if (!existsSync(COMPILED_PATH)) throw new Error(`${COMPILED_PATH} does not exist: run \`bun run build\` first`);
  if (!COMPILED_PATH.startsWith("/tmp/")) return COMPILED_PATH;
  if (copied === null) {
    const path = join(mkdtempSync("/var/tmp/mcr-noexec-"), "mcrelay");
    copyFileSync(COMPILED_PATH, path);
    chmodSync(path, 0o755);
    copied = path;
  }
  return copied;
}
afterAll(() => {
  if (copied !== null) rmSync(dirname(copied), { recursive: true, force: true });
});

function run(argv: string[]): { exitCode: number; stdout: string; stderr: string } {
  const r = Bun.spawnSync({ cmd: underNoexecTmp(argv), stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  return { exitCode: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

describe("noexec /tmp and TMPDIR", () => {
  test("the tmpfs really refuses to execute files (the setup the other tests rely on)", () => {
    const r = run(["sh", "-c", 'cp /bin/true "$TMPDIR/x" && "$TMPDIR/x"']);
    expect(r.exitCode).toBe(126); // the shell's "found but not executable": EACCES from execve
    expect(r.stderr).toMatch(/Permission denied/);
  });

  test("`mcrelay version` loads the embedded native library and writes nothing to /tmp", () => {
    const r = run([compiled(), "version", "--json"]);
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: "" });
    expect(JSON.parse(r.stdout)).toMatchObject({ compiled: true });
    expect(JSON.parse(r.stdout).native_abi).toBeGreaterThan(0);
    // The same namespace: list what the run left in its tmpfs (only the empty TMPDIR).
    const left = run(["sh", "-c", `"$1" version >/dev/null 2>&1 && find /tmp -mindepth 1`, "sh", compiled()]);
    expect(left).toEqual({ exitCode: 0, stdout: "/tmp/run\n", stderr: "" });
  });
});

describe.skipIf(!netnsAvailable())("noexec /tmp: forward (kernel)", () => {
  let topo: Topology | undefined;

  afterEach(async () => {
    await topo?.destroy();
    topo = undefined;
  });

  test(
    "`mcrelay forward` (supervisor and worker) relays 2,000 packets, none lost or duplicated",
    async () => {
      topo = await Topology.create("noexec");
      const rt = await buildRelayTopology(topo, { label: "noexec" });
      const count = 2_000;
      const relay = startLogged(
        topo,
        rt.relay,
        underNoexecTmp([compiled(), "forward", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--json"]),
        "forward (noexec /tmp)",
      );
      await relay.waitForStderr(READY.forward, READY_TIMEOUT_MS);
      const sink = await startSink(topo, rt.sinks[0]!.ns, "compiled", ["--listen", "239.2.2.2:6000@s0", "--idle", "2", "--expect", String(count)]);
      const gen = await runGen(topo, rt.gen, "compiled", ["--to", "239.1.1.1:5000@g0", "--rate", "10000", "--count", String(count), "--size", "200"]);
      await Promise.race([sink.exited, Bun.sleep(30_000)]);
      const received = await sink.stopJson<SinkReport>("SIGINT");
      const report = await relay.stopJson<ForwardReport>("SIGINT");

      expect(gen.sent).toBe(count);
      expect(received.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, foreign: 0 });
      expect(report.rules[0]!.packets).toBe(count);
    },
    TEST_TIMEOUT_MS,
  );
});
