// The benchmark's sinks run with UDP_GRO (scripts/bench/sink-mode.ts): every trial's sink gets
// --gro, every trial records it, and the report says which mode produced its figures, old
// results files (no sink_gro recorded) labelled as plain sinks.
import { describe, expect, test } from "bun:test";
import { renderReport } from "../../scripts/bench/report.ts";
import type { BenchRecord, TrialRecord } from "../../scripts/bench/results.ts";
import { SINK_GRO, sinkArgv, sinkModeMethod, sinkModeOf, sinkModeText } from "../../scripts/bench/sink-mode.ts";

describe("sink argv", () => {
  test("the harness's sinks enable GRO: --gro before --json", () => {
    expect(SINK_GRO).toBe(true);
    expect(sinkArgv("/tmp/m", "239.2.2.2:6000@s0", 97)).toEqual(["/tmp/m", "sink", "--listen", "239.2.2.2:6000@s0", "--duration", "97", "--gro", "--json"]);
    expect(sinkArgv("/tmp/m", "239.2.2.2:6000@s0", 97, false)).toEqual(["/tmp/m", "sink", "--listen", "239.2.2.2:6000@s0", "--duration", "97", "--json"]);
  });
});

describe("sink mode of a trial", () => {
  test("is gro only when the trial recorded sink_gro: true; absent (old results) is plain", () => {
    expect(sinkModeOf({ sink_gro: true })).toBe("gro");
    expect(sinkModeOf({ sink_gro: false })).toBe("plain");
    expect(sinkModeOf({ gen_mode: "raw" })).toBe("plain");
    expect(sinkModeOf(undefined)).toBe("plain");
  });

  test("the Method line gives the reason for GRO, labels plain results, and says when they are mixed", () => {
    const gro = sinkModeMethod(["gro", "gro"]);
    expect(gro).toContain("`mcrelay sink --gro`");
    expect(gro).toContain(
      "sinks enable UDP_GRO: a GSO batch crossing veth intact is received as one buffer and split by the sink, as a receiving host with GRO would; without it the receiver's per-datagram segmentation and socket work ran in the sending relay's softirq and was charged to the relay. On a physical NIC without UDP segmentation offload the segmentation would be paid by the relay's send.",
    );
    const plain = sinkModeMethod(["plain"]);
    expect(plain).toContain("without `--gro`");
    expect(plain).toContain("charged");
    expect(plain).not.toContain("sinks enable UDP_GRO");
    expect(sinkModeMethod(["gro", "plain"])).toContain("Sinks differ between trials");
    expect(sinkModeText(["plain", "plain"])).toContain("without UDP_GRO");
    expect(sinkModeText(["gro"])).toContain("`mcrelay sink --gro`");
    expect(sinkModeText(["gro", "plain"])).toContain("differ");
  });
});

describe("report", () => {
  const trial = (env: Record<string, unknown>): TrialRecord =>
    ({
      type: "trial",
      schema: 1,
      run_id: "r",
      ts: "2026-12-02T00:00:00Z",
      scenario: "S1",
      variant: "S1-1316",
      contender: "mcrelay",
      repeat: 0,
      phase: "fixed",
      purpose: "cpu",
      shape: { payload: 1316, fanout: 1, streams: 1 },
      warmup_s: 1,
      duration_s: 2,
      target_pps: 150_000,
      offered_pps: 150_000,
      delivered_pps: 150_000,
      output_pps: 150_000,
      gen_limited: false,
      sent: 300_000,
      expected: 300_000,
      received: 300_000,
      lost: 0,
      loss_ratio: 0,
      duplicates: 0,
      reordered: 0,
      pattern_errors: 0,
      foreign: 0,
      gen_send_errors: 0,
      gen_buffer_full_waits: 0,
      per_output: [],
      latency_us: { p50: 10, p99: 20, p999: 30, max: 40, mean: 11 },
      cpu: { attributable: true, relay_ns: 1, relay_threads: 2, per_input_pkt_ns: 1300, per_output_pkt_ns: 1300, sink_ns: 1, window_s: 2 },
      rss_kib: { relay_max: 1024, relay_hwm: 1024 },
      relay_drops: {},
      relay_forwarded: 300_000,
      ring: null,
      kernel_counters: { veth: {}, snmp: {}, softnet: { dropped: 0, time_squeeze: 0, processed_per_cpu: [] }, proc_stat_ms: [], mr_cache: { packets: 0, wrong_if: 0 } },
      accounting: { sent_all: 300_000, expected_all: 300_000, received_all: 300_000, lost_all: 0, counted: 0, unaccounted: 0 },
      loadavg: [0, 0, 0],
      foreign_forwarders: [],
      problems: [],
      env,
    }) as TrialRecord;
  const render = (records: BenchRecord[]) => renderReport(records, { svgFile: "x.svg", resultsFile: "x.jsonl" }).markdown;

  test("a run whose trials recorded sink_gro says GRO at the top, in Method and per trial", () => {
    const md = render([trial({ gen_mode: "raw", sink_gro: true })]);
    expect(md).toContain("**Sinks of every figure below: `mcrelay sink --gro`**");
    expect(md).toContain("sinks enable UDP_GRO: a GSO batch crossing veth intact");
    expect(md).toMatch(/\| raw \| gro \|/);
  });

  test("an old results file (no sink_gro) is labelled as plain sinks", () => {
    const md = render([trial({ gen_mode: "raw" })]);
    expect(md).toContain("plain `mcrelay sink`, without UDP_GRO");
    expect(md).not.toContain("sinks enable UDP_GRO: a GSO batch");
    expect(md).toMatch(/\| raw \| plain \|/);
  });
});
