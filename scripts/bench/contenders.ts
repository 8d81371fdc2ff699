/**
 * The contenders, each started fresh for every trial in the relay namespace of its own
 * topology and stopped after it:
 *   mcrelay      `mcrelay forward`, group and port rewritten (239.1.1.1:5000 -> 239.2.2.2:6000)
 *   kernel       ipmr programmed by smcrouted with an (S,G) route; no rewriting is possible, so
 *                the sinks listen to the original group
 *   socat        one `socat -u UDP4-RECV ... UDP4-SENDTO ...` per output (socat is 1:1), rewriting
 *   mcr          acooks/mcr (Rust, io_uring) when MCR_BIN names a directory with its `mcrd` and
 *                `mcrctl` (a cargo target/release): one supervisor with one worker on the input
 *                interface, one rule rewriting like mcrelay's; skipped with a note otherwise
 *   calibration  no relay: the generator is linked straight to the sink (the box's ceiling)
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { BenchTopology, Placement } from "./topology.ts";
import { childrenOf, interruptAndCollect, parseJson, spawnIn, tail, type Spawned } from "./proc.ts";
import type { ContenderId, Shape } from "./results.ts";

export const INPUT = { group: "239.1.1.1", port: 5000 };
export const REWRITTEN = { group: "239.2.2.2", port: 6000 };
/** TTL of the generator for every contender: the kernel forwards only when TTL > 1. */
export const GEN_TTL = 8;
/** The kernel's multicast routing has MAXVIFS = 32 interfaces per table. */
export const KERNEL_VIFS_MAX = 32;
/**
 * socat's socket buffers: as large as net.core.{r,w}mem_max allow (SO_RCVBUF is capped there
 * and doubled by the kernel), as a tuned deployment would set them.
 */
function peerSocketBufferBytes(kind: "rmem_max" | "wmem_max"): number {
  try {
    return Number(readFileSync(`/proc/sys/net/core/${kind}`, "utf8").trim()) || 4 * 1024 * 1024;
  } catch {
    return 4 * 1024 * 1024;
  }
}
const READY_TIMEOUT_MS = 15_000;

/** How `mcrelay gen` sends in a run (its --mode). */
export type GenMode = "raw" | "udp";

export interface Tools {
  mcrelay: string;
  smcrouted: string;
  socat: string;
  tmpDir: string;
}

export interface RelayOutcome {
  /** Input packets the relay says it forwarded (null when it keeps no count). */
  forwarded: number | null;
  /** The relay's own drop counters, by name, each in output-copy units. */
  drops: Record<string, number>;
  ring: Record<string, number> | null;
  problems: string[];
}

export interface RunningRelay {
  /** Processes whose CPU time and memory are the relay's (empty for the calibration). */
  pids(): number[];
  cpuAttributable: boolean;
  stop(): Promise<RelayOutcome>;
}

export interface Contender {
  id: ContenderId;
  /** Why this contender cannot run this shape, or null. */
  unsupported(shape: Shape): string | null;
  /** Where sinks listen for this contender's output. */
  sinkGroup: { group: string; port: number };
  start(bt: BenchTopology, placement: Placement, tools: Tools): Promise<RunningRelay>;
}

// ---------------------------------------------------------------------------------------

interface McrelayReport {
  rules: { packets: number; outputs: { packets: number; send_errors: Record<string, number> }[] }[];
  /** One entry per input interface (counters summed over its workers). */
  workers: { pid?: number | null; restarts?: number; counters: Record<string, number>; parse_drops: Record<string, number>; ring: Record<string, number> }[];
}

const mcrelay: Contender = {
  id: "mcrelay",
  unsupported: () => null,
  sinkGroup: REWRITTEN,
  async start(bt, placement, tools) {
    const argv = [tools.mcrelay, "forward", "--from", `${INPUT.group}:${INPUT.port}@${bt.inIf}`];
    for (const out of bt.outIfs) argv.push("--to", `${REWRITTEN.group}:${REWRITTEN.port}@${out}`);
    argv.push("--ttl", String(GEN_TTL), "--json");
    const s = spawnIn(bt.topo, bt.relay!, placement.relay, argv);
    await s.waitFor("forwarding", READY_TIMEOUT_MS);
    const pids = [s.pid, ...childrenOf(s.pid)];
    return {
      pids: () => pids,
      cpuAttributable: true,
      async stop() {
        const out = await interruptAndCollect(s);
        const report = parseJson<McrelayReport>("mcrelay forward", out, s.stderr());
        const fanout = bt.outIfs.length;
        const sum = (name: string) => report.workers.reduce((n, w) => n + (w.counters[name] ?? 0), 0);
        // An input packet dropped before the rule table costs one copy per output.
        const drops: Record<string, number> = {
          ring_drops: sum("kernel_drops") * fanout,
          rx_truncated: sum("rx_truncated") * fanout,
          no_match: sum("no_match") * fanout,
          source_mismatch: sum("source_mismatch") * fanout,
          parse: report.workers.reduce((n, w) => n + Object.values(w.parse_drops).reduce((a, b) => a + b, 0), 0) * fanout,
          send_errors: report.rules.flatMap((r) => r.outputs).reduce((n, o) => n + Object.values(o.send_errors).reduce((a, b) => a + b, 0), 0),
        };
        const problems = pids.length < 2 ? ["worker process not found at start: CPU is the supervisor's only"] : [];
        const restarts = report.workers.reduce((n, w) => n + (w.restarts ?? 0), 0);
        if (restarts > 0) problems.push(`${restarts} worker restart(s) during the trial: CPU of the replaced workers is missing`);
        const w = report.workers[0];
        return { forwarded: report.rules[0]?.packets ?? null, drops, ring: w?.ring ?? null, problems };
      },
    };
  },
};

// ---------------------------------------------------------------------------------------

let smcrouteSerial = 0;

const kernel: Contender = {
  id: "kernel",
  unsupported: (shape) =>
    shape.fanout + 1 > KERNEL_VIFS_MAX
      ? `not possible: the kernel's multicast routing has at most ${KERNEL_VIFS_MAX} VIFs (MAXVIFS); 1:${shape.fanout} needs ${shape.fanout + 1}`
      : null,
  sinkGroup: INPUT,
  async start(bt, placement, tools) {
    smcrouteSerial += 1;
    const dir = join(tools.tmpDir, `smcroute-${smcrouteSerial}`);
    mkdirSync(dir, { recursive: true });
    const ident = `mcrbench${process.pid}x${smcrouteSerial}`;
    const conf = join(dir, "smcroute.conf");
    const lines = [bt.inIf, ...bt.outIfs].map((i) => `phyint ${i} enable`);
    lines.push(`mroute from ${bt.inIf} source ${bt.genAddr} group ${INPUT.group} to ${bt.outIfs.join(" ")}`);
    writeFileSync(conf, `${lines.join("\n")}\n`);
    const argv = [tools.smcrouted, "-n", "-N", "-f", conf, "-i", ident, "-u", join(dir, "sock"), "-P", join(dir, "pid"), "-l", "notice"];
    const s = spawnIn(bt.topo, bt.relay!, placement.relay, argv);
    const relayNs = bt.relay!;
    const want = new RegExp(`\\(${bt.genAddr.replaceAll(".", "\\.")},\\s*${INPUT.group.replaceAll(".", "\\.")}\\)`);
    const deadline = performance.now() + READY_TIMEOUT_MS;
    for (;;) {
      const r = await bt.topo.exec(relayNs, ["ip", "mroute", "show"]);
      if (want.test(r.stdout)) break;
      if (s.proc.exitCode !== null || performance.now() > deadline) {
        s.proc.kill("SIGKILL");
        throw new Error(`smcrouted did not install ${want}: ${tail(s.stderr())} ${tail(r.stdout)}`);
      }
      await Bun.sleep(50);
    }
    return {
      pids: () => [s.pid],
      cpuAttributable: false,
      async stop() {
        // The cache entry goes with the daemon: read its counters first.
        const mr = await bt.topo.exec(relayNs, ["cat", "/proc/net/ip_mr_cache"]);
        let forwarded = 0;
        let wrong = 0;
        for (const line of mr.stdout.split("\n").slice(1)) {
          const f = line.trim().split(/\s+/);
          if (f.length >= 6) {
            forwarded += Number(f[3]) || 0;
            wrong += Number(f[5]) || 0;
          }
        }
        s.proc.kill("SIGTERM");
        await Promise.race([s.exited, Bun.sleep(5_000)]);
        if (s.proc.exitCode === null && s.proc.signalCode === null) {
          s.proc.kill("SIGKILL");
          await s.exited;
        }
        rmSync(dir, { recursive: true, force: true });
        const problems: string[] = [];
        const left = await bt.topo.exec(relayNs, ["ip", "mroute", "show"]);
        if (left.stdout.trim()) problems.push(`multicast routes left after smcrouted stopped: ${tail(left.stdout, 200)}`);
        return { forwarded, drops: { ipmr_wrong_if: wrong * bt.outIfs.length }, ring: null, problems };
      },
    };
  },
};

// ---------------------------------------------------------------------------------------

/** /proc/net/igmp: memberships ("Users") of `groupHex` on `dev`. */
function igmpUsers(text: string, dev: string, groupHex: string): number {
  let inDev = false;
  for (const line of text.split("\n")) {
    const devLine = /^\d+\s+(\S+)\s*:/.exec(line);
    if (devLine) {
      inDev = devLine[1] === dev;
      continue;
    }
    const f = line.trim().split(/\s+/);
    if (inDev && f[0]?.toUpperCase() === groupHex) return Number(f[1]) || 0;
  }
  return 0;
}

/** 239.1.1.1 -> "010101EF", as /proc/net/igmp prints groups (little-endian hex). */
function igmpHex(addr: string): string {
  return addr
    .split(".")
    .reverse()
    .map((o) => Number(o).toString(16).padStart(2, "0"))
    .join("")
    .toUpperCase();
}

const socat: Contender = {
  id: "socat",
  unsupported: (shape) => (shape.fanout > 8 ? `not run: socat is 1:1, so 1:${shape.fanout} means ${shape.fanout} socat processes each receiving every packet` : null),
  sinkGroup: REWRITTEN,
  async start(bt, placement, tools) {
    const procs: Spawned[] = bt.outIfs.map((_, i) =>
      spawnIn(bt.topo, bt.relay!, placement.relay, [
        tools.socat,
        "-u",
        "-b",
        "65536",
        `UDP4-RECV:${INPUT.port},reuseaddr,ip-add-membership=${INPUT.group}:${bt.inIf},rcvbuf=${peerSocketBufferBytes("rmem_max")}`,
        `UDP4-SENDTO:${REWRITTEN.group}:${REWRITTEN.port},ip-multicast-if=${bt.outAddrs[i]},ip-multicast-ttl=${GEN_TTL},ip-multicast-loop=0,sndbuf=${peerSocketBufferBytes("wmem_max")}`,
      ]),
    );
    const deadline = performance.now() + READY_TIMEOUT_MS;
    const hex = igmpHex(INPUT.group);
    for (;;) {
      const r = await bt.topo.exec(bt.relay!, ["cat", "/proc/net/igmp"]);
      if (igmpUsers(r.stdout, bt.inIf, hex) >= procs.length) break;
      const dead = procs.find((p) => p.proc.exitCode !== null);
      if (dead || performance.now() > deadline) {
        for (const p of procs) p.proc.kill("SIGKILL");
        throw new Error(`socat did not join ${INPUT.group} on ${bt.inIf}: ${tail(dead?.stderr() ?? r.stdout)}`);
      }
      await Bun.sleep(30);
    }
    return {
      pids: () => procs.map((p) => p.pid),
      cpuAttributable: true,
      async stop() {
        for (const p of procs) p.proc.kill("SIGTERM");
        await Promise.all(procs.map((p) => Promise.race([p.exited, Bun.sleep(3_000)])));
        for (const p of procs) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill("SIGKILL");
        await Promise.all(procs.map((p) => p.exited));
        // socat keeps no counters: its socket drops are in the relay namespace's Udp.RcvbufErrors.
        return { forwarded: null, drops: {}, ring: null, problems: [] };
      },
    };
  },
};

// ---------------------------------------------------------------------------------------

/** acooks/mcr's binaries, from MCR_BIN (a directory such as its target/release), or null. */
export function mcrBinaries(): { mcrd: string; mcrctl: string } | null {
  const dir = process.env.MCR_BIN;
  if (!dir) return null;
  const mcrd = join(dir, "mcrd");
  const mcrctl = join(dir, "mcrctl");
  return existsSync(mcrd) && existsSync(mcrctl) ? { mcrd, mcrctl } : null;
}

let mcrSerial = 0;

const mcr: Contender = {
  id: "mcr",
  unsupported: () =>
    mcrBinaries()
      ? null
      : process.env.MCR_BIN
        ? `not run: MCR_BIN=${process.env.MCR_BIN} has no mcrd and mcrctl`
        : "not run: no acooks/mcr build given (MCR_BIN=path/to/mcr/target/release)",
  sinkGroup: REWRITTEN,
  async start(bt, placement, tools) {
    const bin = mcrBinaries()!;
    mcrSerial += 1;
    const dir = join(tools.tmpDir, `mcr-${mcrSerial}`);
    mkdirSync(dir, { recursive: true });
    const sock = join(dir, "control.sock");
    const s = spawnIn(bt.topo, bt.relay!, placement.relay, [bin.mcrd, "supervisor", "--interface", bt.inIf, "--num-workers", "1", "--control-socket-path", sock]);
    const outputs = bt.outIfs.map((o) => `${REWRITTEN.group}:${REWRITTEN.port}:${o}`).join(",");
    const add = [bin.mcrctl, "--socket-path", sock, "add", "--input-interface", bt.inIf, "--input-group", INPUT.group, "--input-port", String(INPUT.port), "--outputs", outputs];
    const deadline = performance.now() + READY_TIMEOUT_MS;
    let last = "";
    for (;;) {
      if (existsSync(sock)) {
        const r = await bt.topo.exec(bt.relay!, add);
        if (r.exitCode === 0) break;
        last = `${r.stdout} ${r.stderr}`;
      }
      if (s.proc.exitCode !== null || performance.now() > deadline) {
        s.proc.kill("SIGKILL");
        throw new Error(`acooks/mcr did not take the rule: ${tail(s.stderr())} ${tail(last)}`);
      }
      await Bun.sleep(100);
    }
    // Its worker joins the group; give it the moment mcrelay's readiness line stands for.
    await Bun.sleep(500);
    const pids = () => [s.pid, ...childrenOf(s.pid)];
    return {
      pids,
      cpuAttributable: true,
      async stop() {
        s.proc.kill("SIGTERM");
        await Promise.race([s.exited, Bun.sleep(5_000)]);
        if (s.proc.exitCode === null && s.proc.signalCode === null) {
          s.proc.kill("SIGKILL");
          await s.exited;
        }
        rmSync(dir, { recursive: true, force: true });
        // Its counters are not read: loss is counted end to end like socat's.
        return { forwarded: null, drops: {}, ring: null, problems: [] };
      },
    };
  },
};

const calibration: Contender = {
  id: "calibration",
  unsupported: (shape) => (shape.fanout !== 1 ? "not applicable: without a relay there is no fan-out (the 1:1 calibration is the ceiling)" : null),
  sinkGroup: INPUT,
  async start() {
    return { pids: () => [], cpuAttributable: false, stop: async () => ({ forwarded: null, drops: {}, ring: null, problems: [] }) };
  },
};

export const CONTENDERS: Record<ContenderId, Contender> = { mcrelay, kernel, socat, mcr, calibration };
