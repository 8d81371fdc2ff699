/**
 * The records of a run, one JSON object per line in bench-results/<timestamp>.jsonl:
 *   run      the plan, options and environment (first line)
 *   trial    one trial: offered/delivered, loss, latency, CPU, RSS, where drops happened, env
 *   search   one NDR/PDR search of one contender on one scenario variant
 *   overload one S4 overload-and-recovery trial, summarised
 *   skip     work not done (not possible for a contender, or out of time budget), and why
 *   profile  perf's top symbols for a contender at a fixed rate
 *   end      elapsed time and outcome (last line)
 * The report generator reads only these files.
 */
import { appendFileSync, mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import type { StealRecord } from "./steal.ts";

export const SCHEMA_VERSION = 1;

export type ContenderId = "mcrelay" | "kernel" | "socat" | "mcr" | "calibration";
export const CONTENDER_IDS: readonly ContenderId[] = ["mcrelay", "kernel", "socat", "mcr", "calibration"];
export const CONTENDER_LABEL: Record<ContenderId, string> = {
  mcrelay: "mcrelay",
  kernel: "kernel (smcroute)",
  socat: "socat",
  mcr: "acooks/mcr",
  calibration: "calibration (gen→sink)",
};

export interface Shape {
  /** UDP payload bytes. */
  payload: number;
  /** Outputs per input packet. */
  fanout: number;
  /** Generator streams, each its own process and stream id, all at rate / streams. */
  streams: number;
}

export type Phase = "coarse" | "final" | "fixed" | "overload" | "profile";

export interface Latency {
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

export interface TrialRecord {
  type: "trial";
  schema: number;
  run_id: string;
  ts: string;
  scenario: string;
  variant: string;
  contender: ContenderId;
  repeat: number;
  phase: Phase;
  purpose: string;
  shape: Shape;
  warmup_s: number;
  duration_s: number;
  target_pps: number;
  /** Sum over measured streams of the generator's achieved rate. */
  offered_pps: number;
  /** Input packets per second that reached every output (received / fanout / duration). */
  delivered_pps: number;
  /** Output copies per second (delivered_pps * fanout when nothing is lost). */
  output_pps: number;
  gen_limited: boolean;
  sent: number;
  expected: number;
  received: number;
  lost: number;
  loss_ratio: number;
  duplicates: number;
  reordered: number;
  pattern_errors: number;
  foreign: number;
  gen_send_errors: number;
  gen_buffer_full_waits: number;
  per_output: { output: number; received: number; lost: number }[];
  /** Over all measured streams and outputs: p50 is the median of the per-stream p50s, the rest the worst stream's. */
  latency_us: Latency;
  cpu: {
    /** False for the kernel (softirq, no task) and the calibration (no relay). */
    attributable: boolean;
    relay_ns: number;
    relay_threads: number;
    per_input_pkt_ns: number | null;
    per_output_pkt_ns: number | null;
    sink_ns: number;
    window_s: number;
  };
  rss_kib: { relay_max: number; relay_hwm: number };
  /** The relay's own counters of dropped packets, by name (mcrelay: ring, parse, send errors). */
  relay_drops: Record<string, number>;
  relay_forwarded: number | null;
  ring: Record<string, number> | null;
  kernel_counters: {
    veth: Record<string, { rx_dropped: number; tx_dropped: number; rx_errors: number; tx_errors: number }>;
    snmp: Record<string, Record<string, number>>;
    softnet: { dropped: number; time_squeeze: number; processed_per_cpu: number[] };
    proc_stat_ms: { user: number; system: number; softirq: number; irq: number; idle: number; steal: number }[];
    mr_cache: { packets: number; wrong_if: number };
  };
  /** Every stream of the trial (warm-up included) against every counter that says "dropped". */
  accounting: { sent_all: number; expected_all: number; received_all: number; lost_all: number; counted: number; unaccounted: number };
  loadavg: number[];
  foreign_forwarders: string[];
  problems: string[];
  env: Record<string, unknown>;
  /** Steal time of each CPU during the measured part (absent in results files before it was recorded). */
  steal?: StealRecord;
  /** 1 for the first trial at this rate, 2 and 3 for repeats after a lossy trial with steal. */
  attempt?: number;
  /** This trial lost packets with significant steal and was run again: a later attempt replaces it. */
  repeated?: boolean;
}

export interface SearchPoint {
  pps: number;
  delivered_pps: number;
  loss_ratio: number;
  confirmed: boolean;
}

export interface SearchRecord {
  type: "search";
  schema: number;
  run_id: string;
  ts: string;
  scenario: string;
  variant: string;
  contender: ContenderId;
  repeat: number;
  shape: Shape;
  ndr: SearchPoint | null;
  pdr: SearchPoint | null;
  /** True when the generator could not offer more: the result is a lower bound. */
  at_generator_ceiling: boolean;
  trials: number;
  elapsed_s: number;
  notes: string[];
}

export interface OverloadRecord {
  type: "overload";
  schema: number;
  run_id: string;
  ts: string;
  scenario: string;
  variant: string;
  contender: ContenderId;
  repeat: number;
  ndr_pps: number;
  offered_pps: number;
  delivered_pps: number;
  delivered_ratio_of_ndr: number;
  overload_s: number;
  probe_pps: number;
  probes: { start_s: number; end_s: number; sent: number; lost: number }[];
  /** Seconds from the end of the overload to the end of the last probe window with loss; 0 when the first was clean. */
  recovery_s: number | null;
  accounting: TrialRecord["accounting"];
  relay_drops: Record<string, number>;
  problems: string[];
}

export interface SkipRecord {
  type: "skip";
  schema: number;
  run_id: string;
  scenario: string;
  variant: string;
  contender: ContenderId;
  reason: string;
  kind: "not-possible" | "not-run" | "time-budget" | "failed";
}

export interface ProfileRecord {
  type: "profile";
  schema: number;
  run_id: string;
  ts: string;
  variant: string;
  contender: ContenderId;
  rate_pps: number;
  seconds: number;
  command: string;
  /** perf report --no-children lines: "overhead% comm dso symbol". */
  top: string[];
  cpu_per_input_pkt_ns: number | null;
}

export interface RunRecord {
  type: "run";
  schema: number;
  run_id: string;
  ts: string;
  mode: string;
  argv: string[];
  options: Record<string, unknown>;
  plan: { scenario: string; variant: string; what: string; estimate_s: number }[];
  estimate_s: number;
  env: Record<string, unknown>;
}

export interface EndRecord {
  type: "end";
  schema: number;
  run_id: string;
  ts: string;
  elapsed_s: number;
  outcome: "complete" | "interrupted" | "failed";
  message: string;
}

export type BenchRecord = RunRecord | TrialRecord | SearchRecord | OverloadRecord | SkipRecord | ProfileRecord | EndRecord;

export class ResultsFile {
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
  }

  write(record: BenchRecord): void {
    appendFileSync(this.path, `${JSON.stringify(record)}\n`);
  }
}

export function readResults(path: string): BenchRecord[] {
  const out: BenchRecord[] = [];
  const lines = readFileSync(path, "utf8").split("\n");
  lines.forEach((line, i) => {
    if (line.trim().length === 0) return;
    try {
      out.push(JSON.parse(line) as BenchRecord);
    } catch {
      throw new Error(`${path}:${i + 1}: not a JSON line`);
    }
  });
  return out;
}
