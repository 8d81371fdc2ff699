/**
 * What a run does, per mode: the scenarios of the issue as work items in priority order, the
 * trial lengths and search parameters, and an estimate of each item's time so a run fits its
 * budget (quick < 10 min, full < 1 h). Items that do not fit are skipped and reported as such,
 * lowest priority first; nothing is shortened silently.
 */
import type { ContenderId, Shape } from "./results.ts";
import type { SearchParams } from "./bisect.ts";
import type { RpsMode } from "./topology.ts";

export type Mode = "quick" | "full" | "smoke";

export interface ModeParams {
  mode: Mode;
  /** No work item starts that is estimated to end past this (seconds from the start). */
  budgetS: number;
  /** No trial starts that would end past this: the promise of the mode (quick < 10 min, full < 1 h). */
  hardStopS: number;
  search: Omit<SearchParams, "hint">;
  /** Precision and coarse-trial cap for variants no target depends on. */
  searchSecondary: { precision: number; coarseTrialsMax: number };
  /** Repeats of the target variants (S1 1316 B, S2 1:4) for mcrelay and the kernel; others get `repeatsOther`. */
  repeatsTarget: number;
  repeatsOther: number;
  fixed: { warmupS: number; durationS: number };
  s1Payloads: number[];
  s3: { mode: "search" | "fixed"; fixedPps: number; coarseS: number };
  s4: { warmupS: number; overloadS: number; recoveryS: number; probeWindowS: number };
  s5: { rates: number[]; warmupS: number; durationS: number };
  cpuRatePps: number;
  /** Length of the trial measuring the generator's own ceiling (`gen --rate 0`), once per run. */
  genCeilingS: number;
  profileS: number;
  fanout50Pps: number;
}

/** The calibration with RPS on the sink's veth: the sink's receive softirq on the sink's CPU. */
export const CAL_RPS_VARIANT = "S1-1316-cal-rps";

const COMMON_SEARCH = { rateMin: 1_000, rateMax: 2_000_000 };

export const MODES: Record<Mode, ModeParams> = {
  quick: {
    mode: "quick",
    budgetS: 570,
    hardStopS: 590,
    search: { ...COMMON_SEARCH, precision: 0.1, coarseS: 1, coarseWarmupS: 0.3, finalS: 10, finalWarmupS: 1, coarseTrialsMax: 6, finalRetries: 1 },
    searchSecondary: { precision: 0.1, coarseTrialsMax: 6 },
    repeatsTarget: 1,
    repeatsOther: 1,
    fixed: { warmupS: 1, durationS: 10 },
    s1Payloads: [1316],
    s3: { mode: "fixed", fixedPps: 100_000, coarseS: 3 },
    s4: { warmupS: 2, overloadS: 10, recoveryS: 4, probeWindowS: 0.25 },
    s5: { rates: [1_000, 10_000, 100_000], warmupS: 0.5, durationS: 4 },
    cpuRatePps: 300_000,
    genCeilingS: 5,
    profileS: 5,
    fanout50Pps: 5_000,
  },
  full: {
    mode: "full",
    budgetS: 3_480,
    hardStopS: 3_570,
    search: { ...COMMON_SEARCH, precision: 0.03, coarseS: 2, coarseWarmupS: 1, finalS: 30, finalWarmupS: 3, coarseTrialsMax: 9, finalRetries: 2 },
    searchSecondary: { precision: 0.05, coarseTrialsMax: 6 },
    repeatsTarget: 3,
    repeatsOther: 1,
    fixed: { warmupS: 3, durationS: 30 },
    s1Payloads: [1316, 64, 1472],
    s3: { mode: "search", fixedPps: 100_000, coarseS: 3 },
    s4: { warmupS: 3, overloadS: 30, recoveryS: 8, probeWindowS: 0.25 },
    s5: { rates: [1_000, 10_000, 100_000], warmupS: 3, durationS: 30 },
    cpuRatePps: 300_000,
    genCeilingS: 10,
    profileS: 10,
    fanout50Pps: 5_000,
  },
  // Not a benchmark: shows that every contender forwards and every measurement works.
  smoke: {
    mode: "smoke",
    budgetS: 600,
    hardStopS: 620,
    search: { ...COMMON_SEARCH, precision: 0.2, coarseS: 1, coarseWarmupS: 0.3, finalS: 2, finalWarmupS: 0.5, coarseTrialsMax: 3, finalRetries: 0 },
    searchSecondary: { precision: 0.2, coarseTrialsMax: 3 },
    repeatsTarget: 1,
    repeatsOther: 1,
    fixed: { warmupS: 0.5, durationS: 2 },
    s1Payloads: [1316],
    s3: { mode: "fixed", fixedPps: 20_000, coarseS: 2 },
    s4: { warmupS: 0.5, overloadS: 2, recoveryS: 1.5, probeWindowS: 0.25 },
    s5: { rates: [1_000], warmupS: 0.3, durationS: 2 },
    cpuRatePps: 20_000,
    genCeilingS: 2,
    profileS: 2,
    fanout50Pps: 2_000,
  },
};

export type ItemKind = "search" | "fixed" | "overload" | "profile";

export interface WorkItem {
  scenario: "S1" | "S2" | "S3" | "S4" | "S5";
  variant: string;
  title: string;
  kind: ItemKind;
  shape: Shape;
  contenders: ContenderId[];
  /** search: repeats per contender. */
  repeats?: Partial<Record<ContenderId, number>>;
  /** search: overrides of the mode's parameters. */
  searchOverride?: Partial<SearchParams>;
  /** fixed/profile: offered rates (aggregate input pps). */
  rates?: number[];
  purpose: string;
  /** Softirq placement for this item when it differs from the run's (--rps). */
  rps?: RpsMode;
  warmupS?: number;
  durationS?: number;
  estimateS: number;
}

const ALL: ContenderId[] = ["mcrelay", "kernel", "socat", "mcr", "calibration"];
const RELAYS: ContenderId[] = ["mcrelay", "kernel", "socat", "mcr"];

/** Seconds a trial costs beyond warm-up and measurement (sinks, relay, counters, drain), by shape. */
export function trialOverheadS(shape: Shape): number {
  return 1.2 + shape.fanout * 0.12 + shape.streams * 0.035;
}

function searchEstimate(p: ModeParams, shape: Shape, coarseMax: number, coarseS: number, repeatsTotal: number, firstRuns: number): number {
  const o = trialOverheadS(shape);
  const coarse = (n: number) => n * (o + p.search.coarseWarmupS + coarseS);
  const finals = 2 * (o + p.search.finalWarmupS + p.search.finalS);
  // A repeat starts near the previous result: about half the coarse trials.
  return firstRuns * (coarse(coarseMax) + finals) + (repeatsTotal - firstRuns) * (coarse(Math.ceil(coarseMax / 2)) + finals);
}

function fixedEstimate(shape: Shape, trials: number, warmupS: number, durationS: number): number {
  return trials * (trialOverheadS(shape) + warmupS + durationS) + 2;
}

function repeatsFor(p: ModeParams, target: boolean, contenders: ContenderId[]): Partial<Record<ContenderId, number>> {
  return Object.fromEntries(contenders.map((c) => [c, target && (c === "mcrelay" || c === "kernel") ? p.repeatsTarget : p.repeatsOther]));
}

export function buildPlan(p: ModeParams, scenarios: Set<string>): WorkItem[] {
  const items: WorkItem[] = [];
  const want = (s: string) => scenarios.has(s);
  const one: Shape = { payload: 1316, fanout: 1, streams: 1 };
  const search = (scenario: WorkItem["scenario"], variant: string, title: string, shape: Shape, contenders: ContenderId[], target: boolean, extra: Partial<WorkItem> = {}): WorkItem => {
    const repeats = repeatsFor(p, target, contenders);
    const total = Object.values(repeats).reduce((a, b) => a + (b ?? 0), 0);
    const coarseMax = target ? p.search.coarseTrialsMax : p.searchSecondary.coarseTrialsMax;
    const coarseS = extra.searchOverride?.coarseS ?? p.search.coarseS;
    const searchOverride = target ? extra.searchOverride : { precision: p.searchSecondary.precision, coarseTrialsMax: coarseMax, ...extra.searchOverride };
    return {
      scenario,
      variant,
      title,
      kind: "search",
      shape,
      contenders,
      repeats,
      purpose: "ndr-pdr",
      estimateS: searchEstimate(p, shape, coarseMax, coarseS, total, contenders.length) + contenders.length * 1.5,
      ...extra,
      searchOverride,
    };
  };
  const fixed = (scenario: WorkItem["scenario"], variant: string, title: string, shape: Shape, contenders: ContenderId[], rates: number[], purpose: string, warmupS: number, durationS: number): WorkItem => {
    // Contenders that cannot run the shape cost nothing (the kernel past 32 VIFs, socat past 1:8).
    const runs = contenders.filter((c) => !(c === "kernel" && shape.fanout + 1 > 32) && !(c === "socat" && shape.fanout > 8) && !(c === "calibration" && shape.fanout > 1));
    return {
      scenario,
      variant,
      title,
      kind: "fixed",
      shape,
      contenders,
      rates,
      purpose,
      warmupS,
      durationS,
      estimateS: fixedEstimate(shape, rates.length * runs.length, warmupS, durationS) + runs.length * (1 + shape.fanout * 0.05),
    };
  };

  if (p.mode === "smoke") {
    // One fixed rate per contender and scenario; S1 alone unless others are asked for.
    const r = p.cpuRatePps;
    const f = p.fixed;
    if (want("S1")) items.push(fixed("S1", "S1-1316", "smoke: 1 stream 1:1, 1316 B", one, ALL, [r], "smoke", f.warmupS, f.durationS));
    if (want("S1")) items.push({ ...fixed("S1", "S1-1316", "smoke: perf profile of mcrelay", one, ["mcrelay"], [r], "profile", f.warmupS, p.profileS), kind: "profile" });
    if (want("S2")) items.push(fixed("S2", "S2-1:4", "smoke: fan-out 1:4", { ...one, fanout: 4 }, RELAYS, [r / 2], "smoke", f.warmupS, f.durationS));
    if (want("S2")) items.push(fixed("S2", "S2-1:50", "smoke: fan-out 1:50", { ...one, fanout: 50 }, ["mcrelay", "kernel", "socat"], [p.fanout50Pps], "works-at-5k", f.warmupS, f.durationS));
    if (want("S3")) items.push(fixed("S3", "S3-100", "smoke: 100 streams", { ...one, streams: 100 }, ALL, [p.s3.fixedPps], "smoke", f.warmupS, f.durationS));
    if (want("S4")) items.push({ ...fixed("S4", "S4-1316", "smoke: overload", one, RELAYS, [], "overload", p.s4.warmupS, p.s4.overloadS), kind: "overload", estimateS: 3 * 12 });
    if (want("S5")) items.push(fixed("S5", "S5-1316", "smoke: latency", one, ALL, p.s5.rates, "latency", p.s5.warmupS, p.s5.durationS));
    if (want("S1")) {
      items.push({ ...fixed("S1", CAL_RPS_VARIANT, "smoke: generator ceiling (rate 0), sink receive on the sink's CPU (RPS)", one, ["calibration"], [0], "gen-ceiling", 0, p.genCeilingS), rps: "relay" });
      items.push({ ...fixed("S1", CAL_RPS_VARIANT, "smoke: calibration, sink receive on the sink's CPU (RPS)", one, ["calibration"], [r], "smoke", f.warmupS, f.durationS), rps: "relay" });
    }
    if (want("S1") && scenarios.has("search")) items.push(search("S1", "S1-1316", "smoke: search", one, ["mcrelay"], true));
    return items;
  }

  // Priority order: the targets first, then what only describes.
  if (want("S1")) {
    items.push(search("S1", "S1-1316", "S1: 1 stream, 1:1, 1316 B payload", one, ALL, true));
    // The same with RPS steering the relay's input softirq onto the relay's CPU, as a NIC's
    // interrupt would be on another core than the sender: the relay pays for its own input.
    items.push(search("S1", "S1-1316-rps", "S1: 1 stream, 1:1, 1316 B, RPS: relay input softirq on the relay's CPU", one, ["mcrelay", "kernel"], false, { rps: "relay" }));
    items.push(fixed("S1", "S1-1316", `S1: relay CPU per packet at ${p.cpuRatePps / 2000}k and ${p.cpuRatePps / 1000}k pps`, one, RELAYS, [p.cpuRatePps / 2, p.cpuRatePps], "cpu", p.fixed.warmupS, p.fixed.durationS));
    items.push({ ...fixed("S1", "S1-1316", "S1: perf profile of mcrelay (CPU target rate and NDR)", one, ["mcrelay"], [p.cpuRatePps], "profile", 1, p.profileS), kind: "profile" });
  }
  if (want("S2")) {
    items.push(search("S2", "S2-1:4", "S2: fan-out 1:4, 1316 B", { ...one, fanout: 4 }, RELAYS, true));
    for (const fanout of [8, 16]) items.push(search("S2", `S2-1:${fanout}`, `S2: fan-out 1:${fanout}, 1316 B`, { ...one, fanout }, RELAYS, false));
    items.push(fixed("S2", "S2-1:50", `S2: fan-out 1:50 at ${p.fanout50Pps / 1000}k pps input`, { ...one, fanout: 50 }, ["mcrelay", "kernel", "socat", "mcr"], [p.fanout50Pps], "works-at-5k", p.fixed.warmupS, p.fixed.durationS));
  }
  if (want("S4")) {
    items.push({
      ...fixed("S4", "S4-1316", `S4: overload at 2x NDR for ${p.s4.overloadS} s, then recovery`, one, RELAYS, [], "overload", p.s4.warmupS, p.s4.overloadS),
      kind: "overload",
      estimateS: RELAYS.length * (trialOverheadS(one) + p.s4.warmupS + p.s4.overloadS + p.s4.recoveryS + 2),
    });
  }
  if (want("S1")) {
    // After S4 (a target) in priority: the calibration again with the sink's receive softirq
    // moved off the generator's CPU by RPS, so that the generator's CPU runs only the generator
    // (without RPS it also runs the sink's receive path, and that calibration is about the
    // relay's own NDR); its NDR is then bounded by the sink's CPU (receive + sink). Before it,
    // the generator's own ceiling: one trial at `gen --rate 0`, no loss criterion.
    items.push({ ...fixed("S1", CAL_RPS_VARIANT, `S1: generator ceiling (gen --rate 0 for ${p.genCeilingS} s), sink receive on the sink's CPU (RPS)`, one, ["calibration"], [0], "gen-ceiling", 0, p.genCeilingS), rps: "relay" });
    items.push(search("S1", CAL_RPS_VARIANT, "S1: calibration, sink receive on the sink's CPU (RPS)", one, ["calibration"], false, { rps: "relay" }));
  }
  if (want("S5")) {
    items.push(fixed("S5", "S5-1316", "S5: one-way latency at 1k, 10k and 100k pps", one, ALL, p.s5.rates, "latency", p.s5.warmupS, p.s5.durationS));
  }
  if (want("S3")) {
    const shape = { ...one, streams: 100 };
    if (p.s3.mode === "fixed") {
      items.push(fixed("S3", "S3-100", `S3: 100 streams at equal rate, ${p.s3.fixedPps / 1000}k pps in total`, shape, ALL, [p.s3.fixedPps], "streams", p.fixed.warmupS, Math.min(p.fixed.durationS, 5)));
    } else {
      items.push(search("S3", "S3-100", "S3: 100 streams at equal rate", shape, ALL, false, { searchOverride: { coarseS: p.s3.coarseS } }));
    }
  }
  if (want("S1")) {
    for (const payload of p.s1Payloads.filter((b) => b !== 1316)) {
      items.push(search("S1", `S1-${payload}`, `S1: 1 stream, 1:1, ${payload} B payload`, { ...one, payload }, ALL, false));
    }
  }
  return items;
}

export function planEstimateS(items: WorkItem[]): number {
  return items.reduce((n, i) => n + i.estimateS, 0);
}
