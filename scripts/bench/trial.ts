/**
 * One trial of one contender in its topology:
 *   1. assert no forwarder runs anywhere (ours left over, or anyone else's) and no multicast
 *      routing is active in the relay namespace
 *   2. read the kernel's drop counters, start the sinks, start the relay
 *   3. warm-up: one generator stream (id 0) at the trial's rate for warmup_s
 *   4. measured: the trial's streams (ids 1..N, each its own `mcrelay gen` at rate / N) for
 *      duration_s, with the relay's per-thread run time read from schedstat just before and
 *      just after, and its RSS sampled every RSS_SAMPLE_MS
 *   5. drain, stop the relay (its own counters), stop the sinks (loss by sequence numbers),
 *      read the kernel's counters again
 * Loss is counted end to end: packets the generators sent (times fan-out) minus unique
 * packets the sinks received.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { logger } from "./log.ts";
import type { BenchTopology, Placement } from "./topology.ts";
import { GEN_TTL, INPUT, type Contender, type GenMode, type RelayOutcome, type RunningRelay, type Tools } from "./contenders.ts";
import { delta, readProcStat, snapshot, waitDrained, type CounterDelta } from "./counters.ts";
import { stealBetween, stealText, type StealRecord } from "./steal.ts";
import { sinkArgv } from "./sink-mode.ts";
import { findForwarders, interruptAndCollect, memoryKib, netnsId, parseJson, schedstatNs, spawnHost, spawnIn, type Spawned } from "./proc.ts";
import {
  SCHEMA_VERSION,
  type ContenderId,
  type Latency,
  type OverloadRecord,
  type Phase,
  type ProfileRecord,
  type Shape,
  type TrialRecord,
} from "./results.ts";

const log = logger("trial");

const RSS_SAMPLE_MS = 250;
/** The sinks are stopped once no datagram reached them for this long and their queues are empty. */
const DRAIN_QUIET_MS = 300;
/** ... or after this, whatever still arrives. */
const DRAIN_MAX_MS = 6_000;
/** Beyond this fan-out the sinks (one process each) run on the generator's CPU, away from the relay's. */
export const SINKS_ON_RELAY_CPU_MAX = 8;
const SINK_READY_MS = 15_000;
/** Below this share of the target, the generator could not offer the rate. */
const GEN_LIMITED_RATIO = 0.97;
const WARMUP_STREAM = 0;
const PROBE_STREAM_BASE = 1000;

export interface TrialSpec {
  scenario: string;
  variant: string;
  contender: ContenderId;
  repeat: number;
  phase: Phase;
  purpose: string;
  shape: Shape;
  targetPps: number;
  /** Warm-up rate when it differs from the target (S4 warms up at NDR, then overloads). */
  warmupPps?: number;
  warmupS: number;
  durationS: number;
  /** Record a perf profile of the relay during the measured part. */
  profileS?: number;
  /** S4: the measured stream is the overload; probes at probePps follow it for recoveryS. */
  overload?: { ndrPps: number; probePps: number; probeWindowS: number; recoveryS: number };
}

export interface TrialContext {
  bt: BenchTopology;
  placement: Placement;
  genMode: GenMode;
  tools: Tools;
  env: Record<string, unknown>;
  runId: string;
  /** Record foreign forwarders instead of refusing to run. */
  allowForeign: boolean;
}

export interface TrialOutput {
  record: TrialRecord;
  overload: OverloadRecord | null;
  profile: ProfileRecord | null;
}

interface GenResult {
  sent: number;
  rate_pps: number;
  duration_s: number;
  send_errors: number;
  buffer_full_waits: number;
}

interface SinkStreamResult {
  stream: number;
  received: number;
  duplicates: number;
  reordered: number;
  latency_us: Latency;
}

interface SinkResult {
  totals: { received: number; duplicates: number; reordered: number; pattern_errors: number; foreign: number };
  streams: SinkStreamResult[];
}

interface GenRun {
  stream: number;
  spawned: Spawned;
  /** performance.now() when the process exited. */
  exitedAt: Promise<number>;
}

/** A rate of 0 asks the generator for its maximum (`gen --rate 0`), bounded by the duration alone. */
function genArgv(ctx: TrialContext, rate: number, count: number, durationS: number, size: number, stream: number): string[] {
  const pacing = rate === 0 ? ["--rate", "0"] : ["--rate", String(Math.max(1, Math.round(rate))), "--count", String(Math.max(1, Math.round(count)))];
  return [
    ctx.tools.mcrelay,
    "gen",
    "--mode",
    ctx.genMode,
    "--to",
    `${INPUT.group}:${INPUT.port}@g0`,
    ...pacing,
    "--duration",
    String(Math.max(0.05, durationS).toFixed(3)),
    "--size",
    String(size),
    "--ttl",
    String(GEN_TTL),
    "--stream",
    String(stream),
    "--json",
  ];
}

/**
 * A generator stops at its count (rate x seconds) when it keeps up; the duration only bounds a
 * generator that cannot, which then offers less than asked for, a little longer.
 */
function capS(seconds: number): number {
  return seconds + Math.max(0.2, seconds * 0.05);
}

function startGen(ctx: TrialContext, argv: string[], stream: number, delayS = 0): GenRun {
  const cmd = delayS > 0 ? ["sh", "-c", `sleep ${delayS.toFixed(3)}; exec "$@"`, "gen", ...argv] : argv;
  const spawned = spawnIn(ctx.bt.topo, ctx.bt.gen, ctx.placement.gen, cmd);
  return { stream, spawned, exitedAt: spawned.exited.then(() => performance.now()) };
}

async function finishGen(run: GenRun, timeoutMs: number): Promise<GenResult> {
  const done = await Promise.race([run.spawned.exited.then(() => true), Bun.sleep(timeoutMs).then(() => false)]);
  const out = done ? await run.spawned.stdout : await interruptAndCollect(run.spawned);
  return parseJson<GenResult>(`gen stream ${run.stream}`, out, run.spawned.stderr());
}

function relayCpuNs(pids: number[]): { ns: number; threads: number } {
  return pids.map(schedstatNs).reduce((a, b) => ({ ns: a.ns + b.ns, threads: a.threads + b.threads }), { ns: 0, threads: 0 });
}

/** How long a trial waits for forwarders of others (a test suite, say) to go away before refusing to run. */
const FOREIGN_WAIT_MS = 90_000;
let foreignWarned = false;

async function checkNoForwarder(ctx: TrialContext): Promise<string[]> {
  const ours = new Set([...ctx.bt.roles.keys()].map(netnsId));
  const deadline = performance.now() + FOREIGN_WAIT_MS;
  for (;;) {
    const found = findForwarders();
    const leftovers = found.filter((f) => ours.has(f.netns));
    if (leftovers.length) throw new Error(`a forwarder is still running in this topology: ${leftovers.map((f) => `${f.pid} ${f.what}`).join("; ")}`);
    if (found.length === 0) return [];
    const text = found.map((f) => `pid ${f.pid} (${f.netns}): ${f.what}`);
    if (ctx.allowForeign) return text;
    if (performance.now() > deadline) {
      throw new Error(`another forwarder is active on this machine; stop it or pass --allow-foreign to record it: ${text.join("; ")}`);
    }
    if (!foreignWarned) {
      foreignWarned = true;
      log.warn(`waiting up to ${FOREIGN_WAIT_MS / 1000} s for other forwarders to stop: ${text.join("; ")}`);
    }
    await Bun.sleep(2_000);
  }
}

function aggregateLatency(streams: SinkStreamResult[]): Latency {
  const live = streams.filter((s) => s.received > 0);
  if (live.length === 0) return { p50: 0, p99: 0, p999: 0, max: 0, mean: 0 };
  const p50s = live.map((s) => s.latency_us.p50).sort((a, b) => a - b);
  const n = live.reduce((a, s) => a + s.received, 0);
  return {
    p50: p50s[Math.floor((p50s.length - 1) / 2)]!,
    p99: Math.max(...live.map((s) => s.latency_us.p99)),
    p999: Math.max(...live.map((s) => s.latency_us.p999)),
    max: Math.max(...live.map((s) => s.latency_us.max)),
    mean: live.reduce((a, s) => a + s.latency_us.mean * s.received, 0) / n,
  };
}

/** Kernel counters that mean "dropped", in output-copy units (input-side counters count once per output). */
function countedKernelDrops(d: CounterDelta, bt: BenchTopology): number {
  const fanout = bt.outIfs.length || 1;
  let n = 0;
  for (const [key, v] of Object.entries(d.veth)) {
    const [role, ifname] = key.split("/");
    const inputSide = role === "gen" || (role === "relay" && ifname === bt.inIf);
    n += (v.rx_dropped + v.tx_dropped) * (inputSide ? fanout : 1);
  }
  for (const [role, s] of Object.entries(d.snmp)) {
    const inputWeight = role === "gen" ? fanout : 1;
    n += ((s["Udp.RcvbufErrors"] ?? 0) + (s["Udp.SndbufErrors"] ?? 0) + (s["Ip.OutDiscards"] ?? 0)) * inputWeight;
    n += (s["Ip.InDiscards"] ?? 0) * (role === "relay" ? fanout : 1);
  }
  // softnet_stat drops are not added: a veth frame dropped at the backlog is also counted as
  // the veth's drop, and softnet_stat is shared by the whole machine.
  return n;
}

interface Profiler {
  proc: ReturnType<typeof spawnHost>;
  file: string;
  command: string;
}

/** perf record of the relay's processes (or of every CPU when the relay has no task: the kernel). */
function startProfile(ctx: TrialContext, pids: number[], seconds: number): Profiler {
  const file = join(ctx.tools.tmpDir, `perf-${process.pid}-${Date.now()}.data`);
  const target = pids.length ? ["-p", pids.join(",")] : ["-a"];
  const argv = ["perf", "record", "-F", "999", "-g", "-o", file, ...target, "--", "sleep", String(seconds)];
  return { proc: spawnHost(argv), file, command: argv.join(" ") };
}

async function profileTop(file: string): Promise<string[]> {
  const r = Bun.spawnSync({
    cmd: ["perf", "report", "-i", file, "--stdio", "--no-children", "-g", "none", "--sort", "comm,dso,symbol", "--percent-limit", "0.5"],
    stdout: "pipe",
    stderr: "pipe",
  });
  rmSync(file, { force: true });
  rmSync(`${file}.old`, { force: true });
  return r.stdout
    .toString()
    .split("\n")
    .filter((l) => /^\s+\d+\.\d+%/.test(l))
    .slice(0, 40)
    .map((l) => l.trim().replace(/\s+/g, " ").replace(/( -)+$/, ""));
}

export async function runTrial(ctx: TrialContext, contender: Contender, spec: TrialSpec): Promise<TrialOutput> {
  const { bt, placement, tools } = ctx;
  const problems: string[] = [];
  const foreign = await checkNoForwarder(ctx);
  if (foreign.length) problems.push(`foreign forwarders running: ${foreign.length}`);
  const namespaces = [...bt.roles.keys()];
  const before = await snapshot(bt.topo, namespaces);
  if (bt.relay && before.ns[bt.relay]!.mr_vifs > 0) throw new Error("multicast routing is active in the relay namespace before the trial");

  const listen = `${contender.sinkGroup.group}:${contender.sinkGroup.port}@s0`;
  const probes = spec.overload ? Math.max(1, Math.round(spec.overload.recoveryS / spec.overload.probeWindowS)) : 0;
  const sinkCapS = spec.warmupS + spec.durationS * 2 + (spec.overload?.recoveryS ?? 0) + 60;
  const spawned: Spawned[] = [];
  const sinks = bt.sinks.map((ns) => {
    const cpu = bt.sinks.length > SINKS_ON_RELAY_CPU_MAX ? placement.gen : placement.sink;
    const s = spawnIn(bt.topo, ns, cpu, sinkArgv(tools.mcrelay, listen, sinkCapS));
    spawned.push(s);
    return s;
  });
  let running: RunningRelay | null = null;
  let outcome: RelayOutcome = { forwarded: null, drops: {}, ring: null, problems: [] };
  const gens: { run: GenRun; result: GenResult | null; role: "warmup" | "measured" | "probe" }[] = [];
  let cpu = { ns: 0, threads: 0 };
  let sinkCpu = 0;
  let windowS = 0;
  let steal: StealRecord | undefined;
  let rssMax = 0;
  let rssHwm = 0;
  let overloadEnd = 0;
  let drainMs = 0;
  let profile: ProfileRecord | null = null;
  const sinkResults: SinkResult[] = [];
  let sampler: ReturnType<typeof setInterval> | null = null;
  let prof: Profiler | null = null;
  try {
    await Promise.all(sinks.map((s) => s.waitFor("listening on", SINK_READY_MS)));
    running = await contender.start(bt, placement, tools);
    const pids = running.pids();

    if (spec.warmupS > 0) {
      const rate = spec.warmupPps ?? spec.targetPps;
      const run = startGen(ctx, genArgv(ctx, rate, rate * spec.warmupS, capS(spec.warmupS), spec.shape.payload, WARMUP_STREAM), WARMUP_STREAM);
      spawned.push(run.spawned);
      gens.push({ run, result: await finishGen(run, (spec.warmupS + 20) * 1000), role: "warmup" });
    }

    const sinkPids = sinks.map((s) => s.pid);
    const cpu0 = relayCpuNs(pids);
    const sinkCpu0 = relayCpuNs(sinkPids).ns;
    const stat0 = readProcStat();
    const t0 = performance.now();
    sampler = setInterval(() => {
      rssMax = Math.max(rssMax, pids.reduce((n, p) => n + memoryKib(p).rss, 0));
    }, RSS_SAMPLE_MS);
    prof = spec.profileS ? startProfile(ctx, running.cpuAttributable ? pids : [], spec.profileS) : null;
    const measured: GenRun[] = [];
    if (spec.overload) {
      // The overload runs for durationS whatever the generator manages; probes follow it.
      measured.push(startGen(ctx, genArgv(ctx, spec.targetPps, spec.targetPps * spec.durationS * 4, spec.durationS, spec.shape.payload, 1), 1));
      const w = spec.overload.probeWindowS;
      for (let k = 0; k < probes; k++) {
        const argv = genArgv(ctx, spec.overload.probePps, spec.overload.probePps * w * 0.8, w * 0.8, spec.shape.payload, PROBE_STREAM_BASE + k);
        const run = startGen(ctx, argv, PROBE_STREAM_BASE + k, spec.durationS + 0.15 + k * w);
        spawned.push(run.spawned);
        gens.push({ run, result: null, role: "probe" });
      }
    } else {
      const perStream = spec.targetPps / spec.shape.streams;
      for (let i = 1; i <= spec.shape.streams; i++) {
        measured.push(startGen(ctx, genArgv(ctx, perStream, perStream * spec.durationS, capS(spec.durationS), spec.shape.payload, i), i));
      }
    }
    for (const run of measured) spawned.push(run.spawned);
    const timeoutMs = (spec.durationS + 30) * 1000;
    const results = await Promise.all(measured.map((run) => finishGen(run, timeoutMs)));
    measured.forEach((run, i) => gens.push({ run, result: results[i]!, role: "measured" }));
    overloadEnd = spec.overload ? await measured[0]!.exitedAt : 0;
    windowS = (performance.now() - t0) / 1000;
    steal = stealBetween(stat0, readProcStat(), windowS * 1000);
    const cpu1 = relayCpuNs(pids);
    cpu = { ns: cpu1.ns - cpu0.ns, threads: cpu1.threads };
    sinkCpu = relayCpuNs(sinkPids).ns - sinkCpu0;
    rssHwm = pids.reduce((n, p) => n + memoryKib(p).hwm, 0);
    clearInterval(sampler);
    sampler = null;
    rssMax = Math.max(rssMax, pids.reduce((n, p) => n + memoryKib(p).rss, 0));
    for (const g of gens.filter((g) => g.role === "probe")) g.result = await finishGen(g.run, (spec.overload!.recoveryS + 30) * 1000);
    if (prof) {
      await prof.proc.exited;
      profile = {
        type: "profile",
        schema: SCHEMA_VERSION,
        run_id: ctx.runId,
        ts: new Date().toISOString(),
        variant: spec.variant,
        contender: contender.id,
        rate_pps: spec.targetPps,
        seconds: spec.profileS!,
        command: prof.command,
        top: await profileTop(prof.file),
        cpu_per_input_pkt_ns: null,
      };
    }
    // Everything still queued (ring, socket buffers) reaches the sinks before they stop.
    drainMs = await waitDrained(bt.topo, bt.sinks, contender.sinkGroup.port, DRAIN_QUIET_MS, DRAIN_MAX_MS);
  } finally {
    if (sampler) clearInterval(sampler);
    if (prof && prof.proc.exitCode === null) prof.proc.kill("SIGINT");
    if (running) {
      try {
        outcome = await running.stop();
      } catch (err) {
        problems.push(`relay stop: ${(err as Error).message}`);
      }
    }
    for (const s of sinks) {
      try {
        sinkResults.push(parseJson<SinkResult>("sink", await interruptAndCollect(s), s.stderr()));
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
    for (const s of spawned) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill("SIGKILL");
    await Promise.all(spawned.map((s) => s.exited));
  }
  if (sinkResults.length !== sinks.length) throw new Error(`trial failed: ${problems.join("; ")}`);
  problems.push(...outcome.problems);
  const after = await snapshot(bt.topo, namespaces);
  const d = delta(before, after, (ns) => bt.roles.get(ns) ?? ns);

  const fanout = bt.calibration ? 1 : bt.outIfs.length;
  const measuredGens = gens.filter((g) => g.role === "measured").map((g) => g.result!);
  const measuredIds = new Set(gens.filter((g) => g.role === "measured").map((g) => g.run.stream));
  const sent = measuredGens.reduce((n, g) => n + g.sent, 0);
  const offered = measuredGens.reduce((n, g) => n + g.rate_pps, 0);
  const spanS = Math.max(...measuredGens.map((g) => g.duration_s), 1e-9);
  const measuredStreams = sinkResults.flatMap((r) => r.streams.filter((s) => measuredIds.has(s.stream)));
  const received = measuredStreams.reduce((n, s) => n + s.received, 0);
  const expected = sent * fanout;
  const lost = Math.max(0, expected - received);
  const lossRatio = expected > 0 ? lost / expected : 1;
  const perOutput = sinkResults.map((r, i) => {
    const rcv = r.streams.filter((s) => measuredIds.has(s.stream)).reduce((n, s) => n + s.received, 0);
    return { output: i, received: rcv, lost: Math.max(0, sent - rcv) };
  });
  // Delivered: the offered rate scaled by the share that reached the outputs.
  const delivered = offered * (expected > 0 ? received / expected : 0);
  if (drainMs >= DRAIN_MAX_MS) problems.push(`packets still arriving ${DRAIN_MAX_MS} ms after the generators stopped`);
  if (offered < spec.targetPps * GEN_LIMITED_RATIO) problems.push(`generator offered ${Math.round(offered)} of ${spec.targetPps} pps`);
  const sentAll = gens.reduce((n, g) => n + (g.result?.sent ?? 0), 0);
  const receivedAll = sinkResults.reduce((n, r) => n + r.totals.received, 0);
  const relayDrops = Object.values(outcome.drops).reduce((a, b) => a + b, 0);
  const counted = relayDrops + countedKernelDrops(d, bt);
  const lostAll = Math.max(0, sentAll * fanout - receivedAll);
  const inputPackets = fanout > 0 ? received / fanout : 0;

  const record: TrialRecord = {
    type: "trial",
    schema: SCHEMA_VERSION,
    run_id: ctx.runId,
    ts: new Date().toISOString(),
    scenario: spec.scenario,
    variant: spec.variant,
    contender: contender.id,
    repeat: spec.repeat,
    phase: spec.phase,
    purpose: spec.purpose,
    shape: spec.shape,
    warmup_s: spec.warmupS,
    duration_s: Number(spanS.toFixed(3)),
    target_pps: spec.targetPps,
    offered_pps: Math.round(offered),
    delivered_pps: Math.round(delivered),
    output_pps: Math.round(delivered * fanout),
    gen_limited: offered < spec.targetPps * GEN_LIMITED_RATIO,
    sent,
    expected,
    received,
    lost,
    loss_ratio: lossRatio,
    duplicates: measuredStreams.reduce((n, s) => n + s.duplicates, 0),
    reordered: measuredStreams.reduce((n, s) => n + s.reordered, 0),
    pattern_errors: sinkResults.reduce((n, r) => n + r.totals.pattern_errors, 0),
    foreign: sinkResults.reduce((n, r) => n + r.totals.foreign, 0),
    gen_send_errors: measuredGens.reduce((n, g) => n + g.send_errors, 0),
    gen_buffer_full_waits: measuredGens.reduce((n, g) => n + g.buffer_full_waits, 0),
    per_output: fanout > 1 ? perOutput : [],
    latency_us: aggregateLatency(measuredStreams),
    cpu: {
      attributable: running?.cpuAttributable ?? false,
      relay_ns: cpu.ns,
      relay_threads: cpu.threads,
      per_input_pkt_ns: running?.cpuAttributable && inputPackets > 0 ? Math.round(cpu.ns / inputPackets) : null,
      per_output_pkt_ns: running?.cpuAttributable && received > 0 ? Math.round(cpu.ns / received) : null,
      sink_ns: sinkCpu,
      window_s: Number(windowS.toFixed(3)),
    },
    rss_kib: { relay_max: rssMax, relay_hwm: rssHwm },
    relay_drops: outcome.drops,
    relay_forwarded: outcome.forwarded,
    ring: outcome.ring,
    kernel_counters: { veth: d.veth, snmp: d.snmp, softnet: d.softnet, proc_stat_ms: d.proc_stat_ms, mr_cache: d.mr_cache },
    accounting: { sent_all: sentAll, expected_all: sentAll * fanout, received_all: receivedAll, lost_all: lostAll, counted, unaccounted: lostAll - counted },
    loadavg: (await Bun.file("/proc/loadavg").text()).split(" ").slice(0, 3).map(Number),
    foreign_forwarders: foreign,
    problems,
    env: ctx.env,
    ...(steal ? { steal } : {}),
  };
  if (profile) profile.cpu_per_input_pkt_ns = record.cpu.per_input_pkt_ns;

  let overload: OverloadRecord | null = null;
  if (spec.overload) {
    const probeRows = await Promise.all(
      gens
        .filter((g) => g.role === "probe")
        .map(async (g) => {
          const end = await g.run.exitedAt;
          const rcv = sinkResults.flatMap((r) => r.streams.filter((s) => s.stream === g.run.stream)).reduce((n, s) => n + s.received, 0);
          const sentK = g.result?.sent ?? 0;
          return {
            start_s: Number(((end - overloadEnd) / 1000 - (g.result?.duration_s ?? 0)).toFixed(3)),
            end_s: Number(((end - overloadEnd) / 1000).toFixed(3)),
            sent: sentK,
            lost: Math.max(0, sentK * fanout - rcv),
          };
        }),
    );
    probeRows.sort((a, b) => a.start_s - b.start_s);
    const lossy = probeRows.filter((p) => p.lost > 0);
    const last = probeRows[probeRows.length - 1];
    const recovery = lossy.length === 0 ? 0 : last && last.lost > 0 ? null : Math.max(0, lossy[lossy.length - 1]!.end_s);
    const oProblems = [...problems];
    if (recovery === null) oProblems.push("still losing packets at the end of the recovery window");
    overload = {
      type: "overload",
      schema: SCHEMA_VERSION,
      run_id: ctx.runId,
      ts: record.ts,
      scenario: spec.scenario,
      variant: spec.variant,
      contender: contender.id,
      repeat: spec.repeat,
      ndr_pps: spec.overload.ndrPps,
      offered_pps: record.offered_pps,
      delivered_pps: record.delivered_pps,
      delivered_ratio_of_ndr: spec.overload.ndrPps > 0 ? record.delivered_pps / spec.overload.ndrPps : 0,
      overload_s: record.duration_s,
      probe_pps: spec.overload.probePps,
      probes: probeRows,
      recovery_s: recovery,
      accounting: record.accounting,
      relay_drops: record.relay_drops,
      problems: oProblems,
    };
  }
  log.debug(`${spec.variant} ${contender.id} ${spec.phase} ${spec.targetPps} pps: offered ${record.offered_pps}, loss ${(lossRatio * 100).toFixed(4)}%`);
  return { record, overload, profile };
}

export function describeTrial(r: TrialRecord): string {
  const lat = r.latency_us;
  const cpu = r.cpu.per_input_pkt_ns === null ? "cpu n/a" : `cpu ${(r.cpu.per_input_pkt_ns / 1000).toFixed(2)} us/pkt`;
  return (
    `${r.variant} ${r.contender.padEnd(11)} ${r.phase.padEnd(6)} target ${r.target_pps} offered ${r.offered_pps} delivered ${r.delivered_pps} pps, ` +
    `lost ${r.lost}/${r.expected} (${(r.loss_ratio * 100).toFixed(3)}%), p99 ${lat.p99.toFixed(0)} us, ${cpu}, rss ${Math.round(r.rss_kib.relay_max / 1024)} MiB, ` +
    `unaccounted ${r.accounting.unaccounted}, steal ${stealText(r.steal)}` +
    (r.problems.length ? ` [${r.problems.join("; ")}]` : "")
  );
}

