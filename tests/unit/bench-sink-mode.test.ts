// The benchmark's sinks run with UDP_GRO (scripts/bench/sink-mode.ts): every trial's sink gets
// --gro, every trial records it, and the report says which mode produced its figures, old
// results files (no sink_gro recorded) labelled as plain sinks.
import { describe, expect, test } from "bun:test";
import { renderReport } from "../../scripts/bench/report.ts";
import type { BenchRecord, TrialRecord } from "../../scripts/bench/results.ts";
import { trialRecord } from "../support/bench-records.ts";
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
  const trial = (env: Record<string, unknown>): TrialRecord => trialRecord({ env });
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
