// Memory of the compiled executable as an appliance runs it: a daemon with one input interface
// and with three, and a one-shot `forward`, each measured as the VmRSS of the supervisor plus
// all its workers (/proc/PID/status), with the proportional share (Pss, /proc/PID/smaps_rollup)
// noted next to it: VmRSS counts the executable's shared file pages once per process.
//
// Issue 12 asked for a daemon with one rule <= 80 MB, each further input interface <= +10 MB and
// `forward` <= 70 MB; these are the budgets below. One worker process serves every input
// interface (default 1 worker): a further interface adds its ring (8 MiB by default, mapped and
// populated) and a little dataplane state. The worker is a static Zig executable (decision 019),
// not a second Bun runtime: about 1 MB besides its rings. Measured on this machine (x86-64,
// Bun 1.4.5) with the 8 MiB default ring; they fail when a change makes a process or the ring grow.
import { afterEach, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { TempDir, TestDaemon, waitFor } from "../support/daemon-harness.ts";
import { buildRelayTopology, note, READY, READY_TIMEOUT_MS, startLogged, type LoggedProcess, type RelayTopology } from "../support/relay-harness.ts";
import { mcrelayCommand } from "../support/relay-harness.ts";

const T = 180_000;
const MIB = 1024 * 1024;
/**
 * Measured 64.9 MB (supervisor 55.7, worker 9.2 with its 8 MiB ring); Pss 62.8 MB. Was 111.8 MB
 * with a Bun worker. Issue 12's target.
 */
const DAEMON_ONE_INPUT_MB_MAX = 80;
/**
 * Measured 9.35-9.6 MB per further input (its 8 MiB ring, its counter region and a few dataplane
 * pages, in the same worker process; was 57.4-59.4 MB with a worker process per interface); Pss
 * +9.1-9.3 MB. Issue 12's target.
 */
const PER_FURTHER_INPUT_MB_MAX = 10;
/** Measured 62.9 MB (supervisor 53.7, worker 9.2); Pss 60.7 MB. Was 106.5 MB. Issue 12's target. */
const FORWARD_MB_MAX = 70;
/** The default ring (zig/constants.zig ring_bytes_default) at MTU 1500: 128 blocks of 64 KiB. */
const DEFAULT_RING = { block_bytes: 64 * 1024, block_count: 128 };

function children(pid: number): number[] {
  const out: number[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const text = readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").trim();
    for (const c of text ? text.split(/\s+/).map(Number) : []) out.push(c, ...children(c));
  }
  return out;
}

function statusKb(pid: number, key: string, file = "status"): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/${file}`, "utf8"));
  if (!m) throw new Error(`/proc/${pid}/${file} has no ${key}`);
  return Number(m[1]);
}

interface Usage {
  processes: number;
  rss_mb: number;
  pss_mb: number;
  each_rss_mb: number[];
}

/** VmRSS and Pss summed over `pid` and every descendant. */
function usage(pid: number): Usage {
  const pids = [pid, ...children(pid)];
  const rss = pids.map((p) => statusKb(p, "VmRSS") / 1024);
  const pss = pids.map((p) => statusKb(p, "Pss", "smaps_rollup") / 1024);
  const sum = (xs: number[]) => Math.round(xs.reduce((a, b) => a + b, 0) * 10) / 10;
  return { processes: pids.length, rss_mb: sum(rss), pss_mb: sum(pss), each_rss_mb: rss.map((x) => Math.round(x * 10) / 10) };
}

const rule = (k: number, iface: string, out: string) => `{ name: "in${k}", from: "239.1.1.${k + 1}:5000@${iface}", to: ["239.2.2.2:6000@${out}"] }`;

describe.skipIf(!netnsAvailable())("memory of the compiled executable (kernel)", () => {
  let topo: Topology | undefined;
  const dirs: TempDir[] = [];
  const procs: LoggedProcess[] = [];

  afterEach(async () => {
    await topo?.destroy();
    topo = undefined;
    for (const d of dirs.splice(0)) d.remove();
    procs.splice(0);
  });

  async function daemonUsage(rt: RelayTopology, inputs: string[]): Promise<{ u: Usage; rings: Record<string, number>[] }> {
    const dir = new TempDir("mcr-mem-");
    dirs.push(dir);
    const outs = ["r1", "r2", "r3"];
    const config = dir.file("mcrelay.json5", `{ rules: [ ${inputs.map((i, k) => rule(k, i, outs.find((o) => o !== i)!)).join(", ")} ] }`);
    const d = await TestDaemon.start(rt, dir, { configPath: config, mode: "compiled", label: `daemon ${inputs.length}` });
    const workers = await waitFor("every worker running", async () => {
      const w = ((await d.call("workers")) as { workers: { state: string; applied_hash: string | null; table_hash: string; ring: Record<string, number> }[] }).workers;
      return w.length === inputs.length && w.every((x) => x.state === "running" && x.applied_hash === x.table_hash) ? w : undefined;
    }, 30_000);
    await Bun.sleep(1_000); // settle: the first stats sample and ring pages touched
    const u = usage(d.pid);
    await d.stop();
    return { u, rings: workers.map((w) => w.ring) };
  }

  test(
    "a daemon with 1 input interface and with 3: VmRSS of supervisor + workers within budget, default ring 8 MiB",
    async () => {
      topo = await Topology.create("memory");
      const rt = await buildRelayTopology(topo, { label: "memory", sinks: 3 });
      const one = await daemonUsage(rt, ["r0"]);
      const three = await daemonUsage(rt, ["r0", "r1", "r2"]);
      const perFurther = (three.u.rss_mb - one.u.rss_mb) / 2;
      note("memory daemon", { one: one.u, three: three.u, per_further_input_mb: perFurther });

      // One worker process whatever the number of input interfaces.
      expect(one.u.processes).toBe(2);
      expect(three.u.processes).toBe(2);
      for (const ring of [...one.rings, ...three.rings]) expect(ring).toMatchObject(DEFAULT_RING);
      expect(one.u.rss_mb).toBeLessThanOrEqual(DAEMON_ONE_INPUT_MB_MAX);
      expect(perFurther).toBeLessThanOrEqual(PER_FURTHER_INPUT_MB_MAX);
    },
    T,
  );

  test(
    "a larger ring_mib shows in the ring and in the worker's VmRSS, a 1 MiB one too",
    async () => {
      topo = await Topology.create("memring");
      const rt = await buildRelayTopology(topo, { label: "memring", sinks: 3 });
      /** The one worker's VmRSS and rings with these ring sizes for inputs r0 and r1. */
      const workerWith = async (ringMib: Record<string, number>) => {
        const dir = new TempDir("mcr-mem-");
        dirs.push(dir);
        const config = dir.file("mcrelay.json5", `{ ring_mib: ${JSON.stringify(ringMib)}, rules: [ ${rule(0, "r0", "r2")}, ${rule(1, "r1", "r2")} ] }`);
        const d = await TestDaemon.start(rt, dir, { configPath: config, mode: "compiled" });
        const workers = await waitFor("both rings served", async () => {
          const w = ((await d.call("workers")) as { workers: { interface: string; pid: number; state: string; applied_hash: string | null; table_hash: string; ring: Record<string, number> }[] }).workers;
          return w.length === 2 && w.every((x) => x.state === "running" && x.applied_hash === x.table_hash) ? w : undefined;
        }, 30_000);
        await Bun.sleep(1_000);
        expect(new Set(workers.map((w) => w.pid)).size).toBe(1);
        const rssMb = statusKb(workers[0]!.pid, "VmRSS") / 1024;
        await d.stop();
        return { rssMb, r0: workers.find((w) => w.interface === "r0")!.ring, r1: workers.find((w) => w.interface === "r1")!.ring };
      };
      const big = await workerWith({ r0: 64, r1: 1 });
      const small = await workerWith({ r0: 1, r1: 1 });
      note("memory ring_mib", { big, small });
      expect(big.r0).toMatchObject({ block_bytes: 64 * 1024, block_count: 1024 });
      expect(big.r1).toMatchObject({ block_bytes: 64 * 1024, block_count: 16 });
      expect(small.r0).toMatchObject({ block_bytes: 64 * 1024, block_count: 16 });
      // The ring is mapped into the worker: 64 MiB versus 1 MiB shows in its VmRSS (63 MiB apart).
      expect(big.rssMb - small.rssMb).toBeGreaterThan(60);
      expect(big.rssMb - small.rssMb).toBeLessThan(70);
    },
    T,
  );

  test(
    "forward with one rule: VmRSS of supervisor + worker within budget",
    async () => {
      topo = await Topology.create("memfwd");
      const rt = await buildRelayTopology(topo, { label: "memfwd" });
      const p = startLogged(topo, rt.relay, [...mcrelayCommand("compiled"), "forward", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--json"], "forward");
      procs.push(p);
      await p.waitForStderr(READY.forward, READY_TIMEOUT_MS);
      await Bun.sleep(1_000);
      const u = usage(p.proc.pid);
      note("memory forward", u);
      await p.stopJson("SIGINT");
      expect(u.processes).toBe(2);
      expect(u.rss_mb).toBeLessThanOrEqual(FORWARD_MB_MAX);
    },
    T,
  );
});
