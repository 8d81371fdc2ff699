// The benchmark's steal handling (scripts/bench/steal.ts, report.ts): a trial that lost packets
// while the hypervisor took CPU time is repeated, at most twice, and the report shows the steal
// of every trial and which figure comes from a repeat.
import { describe, expect, test } from "bun:test";
import { CAL_RPS_VARIANT } from "../../scripts/bench/plan.ts";
import { genCeilingText, renderReport, lossSteal, stealCell } from "../../scripts/bench/report.ts";
import type { BenchRecord, SearchRecord } from "../../scripts/bench/results.ts";
import { trialRecord } from "../support/bench-records.ts";
import { repeatForSteal, significantSteal, stealBetween, stealExplains, stealFinalNote, stealRepeatNote, stealText, STEAL_REPEATS_MAX } from "../../scripts/bench/steal.ts";

const steal = (per_cpu_ms: number[], wall_ms = 35_000) => ({ per_cpu_ms, wall_ms });

describe("steal of a trial", () => {
  test("is the per-CPU difference of /proc/stat steal ticks, 10 ms each, over the measured wall time", () => {
    const s = stealBetween([{ steal: 100 }, { steal: 7 }], [{ steal: 220 }, { steal: 11 }], 35_012.4);
    expect(s).toEqual({ per_cpu_ms: [1200, 40], wall_ms: 35_012 });
  });

  test("is formatted per CPU in ms and as a share of the trial's wall time", () => {
    expect(stealText(steal([1200, 40]))).toBe("1200 / 40 ms (3.43 / 0.11 %)");
    expect(stealText(undefined)).toBe("—");
  });
});

describe("repeat decision", () => {
  // At 380k pps, 1:1, as in the session that motivated it (35 s trials).
  const at380k = (lost: number, per_cpu_ms: number[], wall_ms = 35_000, offered_pps = 380_000, fanout = 1) => ({ lost, offered_pps, shape: { fanout }, steal: steal(per_cpu_ms, wall_ms) });

  test("a lossy trial with steal of 1 % of its wall time on one CPU is repeated (last session's 0.35 s in 35 s)", () => {
    expect(repeatForSteal(at380k(18_545, [350, 0]), 1)).toBe(true);
    expect(repeatForSteal(at380k(18_545, [0, 350]), 1)).toBe(true);
  });

  test("a lossy trial with steal under 1 % of its wall time is not repeated: its loss is the relay's", () => {
    expect(repeatForSteal(at380k(11_782, [340, 340]), 1)).toBe(false);
  });

  test("a trial without loss is never repeated, whatever the steal", () => {
    expect(repeatForSteal(at380k(0, [3300, 3300]), 1)).toBe(false);
  });

  test("one 10 ms tick on a 1 s trial (1 %) is below the two-tick floor; two ticks are not", () => {
    expect(significantSteal(steal([10, 0], 1_000))).toBe(false);
    expect(repeatForSteal(at380k(5, [10, 0], 1_000), 1)).toBe(false);
    expect(repeatForSteal(at380k(5, [20, 0], 1_000), 1)).toBe(true);
  });

  test("a loss larger than what arrives during the stolen time is not repeated (an overloaded trial loses it anyway)", () => {
    // 40 ms at 2M pps is 80,000 packets: a trial far above capacity losing 1.6M is the relay's limit.
    expect(stealExplains(steal([40, 0], 2_000), 2_000_000, 1)).toBe(80_000);
    expect(repeatForSteal(at380k(1_600_000, [40, 0], 2_000, 2_000_000), 1)).toBe(false);
    expect(repeatForSteal(at380k(80_000, [40, 0], 2_000, 2_000_000), 1)).toBe(true);
    // Fan-out multiplies the copies that can be lost: 4 outputs, 100k pps, 350 ms -> 140,000 copies.
    expect(stealExplains(steal([350, 0]), 100_000, 4)).toBe(140_000);
    expect(repeatForSteal(at380k(140_000, [350, 0], 35_000, 100_000, 4), 1)).toBe(true);
    expect(repeatForSteal(at380k(140_001, [350, 0], 35_000, 100_000, 4), 1)).toBe(false);
  });

  test(`at most ${STEAL_REPEATS_MAX} repeats: the third attempt's loss stands`, () => {
    expect(repeatForSteal(at380k(114_018, [3300, 0]), 1)).toBe(true);
    expect(repeatForSteal(at380k(114_018, [3300, 0]), 2)).toBe(true);
    expect(repeatForSteal(at380k(114_018, [3300, 0]), 3)).toBe(false);
  });

  test("a latency trial (S5) with significant steal is repeated without loss; without steal it is not; at most twice", () => {
    // At 1k pps, as in the run that motivated it: 1780 ms of 30 s stolen, p99 2.2 ms, nothing lost.
    const at1k = (per_cpu_ms: number[]) => ({ purpose: "latency", lost: 0, offered_pps: 1_000, shape: { fanout: 1 }, steal: steal(per_cpu_ms, 30_000) });
    expect(repeatForSteal(at1k([1780, 2130]), 1)).toBe(true);
    expect(repeatForSteal(at1k([1780, 2130]), 2)).toBe(true);
    expect(repeatForSteal(at1k([1780, 2130]), 3)).toBe(false);
    expect(repeatForSteal(at1k([0, 290]), 1)).toBe(false);
    // S1's CPU trials: their p99 is evidence for the S1 latency target, so the same rule.
    expect(repeatForSteal({ ...at1k([30, 1130]), offered_pps: 300_000, purpose: "cpu" }, 1)).toBe(true);
    // The same steal on a trial that measures throughput only, without loss: not repeated.
    expect(repeatForSteal({ ...at1k([1780, 2130]), purpose: "search" }, 1)).toBe(false);
    expect(repeatForSteal({ ...at1k([1780, 2130]), purpose: undefined }, 1)).toBe(false);
  });

  test("a trial recorded before steal was recorded is not repeated", () => {
    expect(repeatForSteal({ lost: 100, offered_pps: 380_000, shape: { fanout: 1 } }, 1)).toBe(false);
  });

  test("the notes name the rate, the loss and the steal, and whether the last attempt's loss stands", () => {
    expect(stealRepeatNote(380_123.4, 114_018, steal([3300, 20]))).toBe("trial at 380123 pps lost 114018 with 3300 ms steal (CPU 0, 9.43 %): repeated");
    expect(stealRepeatNote(1_000, 0, steal([1780, 2130], 30_000), 2227.7)).toBe("latency trial at 1000 pps, p99 2228 µs, lost 0 with 2130 ms steal (CPU 1, 7.10 %): repeated");
    expect(stealFinalNote(380_000, 9_000, steal([20, 500]), 3)).toBe("trial at 380000 pps lost 9000 with 500 ms steal (CPU 1) on attempt 3: the loss stands");
    expect(stealFinalNote(380_000, 0, steal([0, 0]), 2)).toBe("trial at 380000 pps lost nothing on attempt 2 (steal 0 / 0 ms)");
  });
});

const trial = trialRecord;

describe("report", () => {
  test("a row from a repeat says so and what the attempt before it lost", () => {
    const first = { lost: 11_782, steal: steal([1200, 40]), attempt: 1 };
    expect(stealCell({ steal: steal([0, 10]), attempt: 2 }, [first])).toBe("0 / 10 (figure from attempt 2; attempt 1 lost 11782 with 1200 / 40 ms steal)");
    expect(stealCell({ steal: steal([0, 10]), attempt: 1 }, [])).toBe("0 / 10");
    // A latency row also says what the attempt before it measured.
    const stalled = { lost: 0, steal: steal([1780, 2130]), attempt: 1, purpose: "latency", latency_us: { p99: 2228 } };
    expect(stealCell({ steal: steal([0, 20]), attempt: 2 }, [stalled])).toBe("0 / 20 (figure from attempt 2; attempt 1, p99 2228 µs, lost 0 with 1780 / 2130 ms steal)");
  });

  test("a lossy trial's drop explanation carries its steal; a clean one or one without steal does not", () => {
    expect(lossSteal({ lost: 10, steal: steal([1200, 40]) })).toBe("lost during steal of CPU 0 / 1: 1200 / 40 ms (3.43 / 0.11 %)");
    expect(lossSteal({ lost: 0, steal: steal([1200, 40]) })).toBe("");
    expect(lossSteal({ lost: 10, steal: steal([0, 0]) })).toBe("");
  });

  test("the repeated trial leaves the CPU table and the targets, stays in the list of every trial, and its repeat is labelled", () => {
    const lossy = { lost: 11_782, loss_ratio: 11_782 / 10_500_000, received: 10_500_000 - 11_782 };
    const records: BenchRecord[] = [
      trial({ ...lossy, ts: "2026-12-02T01:00:00.000Z", steal: steal([1200, 40]), attempt: 1, repeated: true, accounting: { sent_all: 10_500_000, expected_all: 10_500_000, received_all: 10_488_218, lost_all: 11_782, counted: 11_782, unaccounted: 0 }, relay_drops: { ring_drops: 11_782 } }),
      trial({ ts: "2026-12-02T01:01:00.000Z", steal: steal([0, 10]), attempt: 2 }),
    ];
    const { markdown } = renderReport(records, { svgFile: "x.svg", resultsFile: "x.jsonl" });
    const cpuSection = markdown.slice(markdown.indexOf("### Relay CPU"), markdown.indexOf("<details>"));
    expect(cpuSection).toContain("figure from attempt 2; attempt 1, p99 200 µs, lost 11782 with 1200 / 40 ms steal");
    expect(cpuSection).not.toContain("0.112 %");
    const cpuTarget = markdown.split("\n").find((l) => l.startsWith("| S1 relay CPU"));
    expect(cpuTarget).toContain("loss 0.000 %");
    const appendix = markdown.slice(markdown.indexOf("<details>"));
    expect(appendix).toContain("1 (repeated: steal)");
    expect(appendix).toContain("1200 / 40 ms (3.43 / 0.11 %)");
    expect(markdown).toContain("**Steal:**");
  });

  test("a lossy trial that was not repeated keeps its loss and shows its steal in the drop explanation", () => {
    const records: BenchRecord[] = [
      trial({
        lost: 114_018,
        loss_ratio: 114_018 / 10_500_000,
        steal: steal([3300, 0]),
        attempt: 3,
        relay_drops: { ring_drops: 114_018 },
        accounting: { sent_all: 10_500_000, expected_all: 10_500_000, received_all: 10_385_982, lost_all: 114_018, counted: 114_018, unaccounted: 0 },
      }),
    ];
    const { markdown } = renderReport(records, { svgFile: "x.svg", resultsFile: "x.jsonl" });
    const row = markdown.split("\n").find((l) => l.startsWith("| mcrelay | 300 k"));
    expect(row).toContain("1.086 %");
    expect(row).toContain("mcrelay: ring_drops 114018");
    expect(row).toContain("lost during steal of CPU 0 / 1: 3300 / 0 ms (9.43 / 0.00 %)");
  });
});

function searchRec(variant: string, contender: SearchRecord["contender"], ndr: number): SearchRecord {
  const point = { pps: ndr, delivered_pps: ndr, loss_ratio: 0, confirmed: true };
  return { type: "search", schema: 1, run_id: "r1", ts: "2026-12-02T01:00:00.000Z", scenario: "S1", variant, contender, repeat: 0, shape: { payload: 1316, fanout: 1, streams: 1 }, ndr: point, pdr: point, at_generator_ceiling: false, trials: 8, elapsed_s: 90, notes: [] };
}

describe("calibration with the sink's receive on its own CPU, and the generator's ceiling", () => {
  const placement = { gen: 0, relay: 1, sink: 1, rps: "relay" };
  const records: BenchRecord[] = [
    searchRec("S1-1316", "mcrelay", 387_000),
    searchRec("S1-1316", "calibration", 404_000),
    searchRec(CAL_RPS_VARIANT, "calibration", 415_000),
    trial({ variant: CAL_RPS_VARIANT, contender: "calibration", purpose: "gen-ceiling", target_pps: 0, offered_pps: 463_000, duration_s: 10, sent: 4_630_000, expected: 4_630_000, received: 4_167_000, lost: 463_000, env: { placement } }),
  ];
  const { markdown } = renderReport(records, { svgFile: "x.svg", resultsFile: "x.jsonl" });

  test("the targets' calibration line keeps its status from the plain calibration and adds both figures", () => {
    const line = markdown.split("\n").find((l) => l.startsWith("| Calibration (gen→sink) NDR"));
    expect(line).toBe(
      "| Calibration (gen→sink) NDR ≥ 2× the best relay's S1 NDR | 404 k / 387 k pps = 1.04×; calibration, sink receive on CPU 1 (RPS): NDR 415 k pps = 1.07× (bounded by the sink's CPU); generator's own ceiling (gen --rate 0, no loss criterion): 463 k pps = 1.20× | **MISS** |",
    );
  });

  test("S1 has the RPS calibration as its own labelled row and the generator's ceiling with what the sink got", () => {
    const s1 = markdown.slice(markdown.indexOf("## S1"));
    expect(s1).toContain("| calibration, sink receive on CPU 1 (RPS) | 415 k |");
    expect(s1).toContain("**Generator's own ceiling** (`mcrelay gen --mode udp --rate 0`, sink's receive on its own CPU, no loss criterion): 463 k pps achieved over 10.0 s (the sink received 90.0 %).");
    expect(genCeilingText({ offered_pps: 458_000, received: 0, expected: 0, duration_s: 5 })).toBe("458 k pps achieved over 5.0 s");
  });
});

describe("merged runs", () => {
  test("a fixed-rate trial a later run measured again is superseded: the later figure counts, the earlier one is listed and labelled", () => {
    // S5 at 1k pps: run r1 under steal (p99 2.2 ms), run r2 (merged, later) quiet (p99 0.3 ms).
    const at1k = { variant: "S5-1316", scenario: "S5", purpose: "latency", target_pps: 1_000 };
    const records: BenchRecord[] = [
      trial({ ...at1k, run_id: "2026-12-02T073430Z", ts: "2026-12-02T07:50:00.000Z", latency_us: { p50: 150, p99: 2228, p999: 3000, max: 4000, mean: 200 }, steal: steal([1780, 2130]) }),
      trial({ ...at1k, run_id: "2026-12-02T090000Z", ts: "2026-12-02T09:05:00.000Z", latency_us: { p50: 120, p99: 301, p999: 400, max: 500, mean: 130 }, steal: steal([0, 0]) }),
    ];
    const { markdown } = renderReport(records, { svgFile: "x.svg", resultsFile: "x.jsonl" });
    const target = markdown.split("\n").find((l) => l.startsWith("| S5: p99"));
    expect(target).toContain("301 µs");
    expect(target).not.toContain("2228");
    expect(target).toContain("PASS");
    const appendix = markdown.slice(markdown.indexOf("<details>"));
    expect(appendix).toContain("(superseded by a later run)");
    expect(appendix).toContain("2228");
  });
});
