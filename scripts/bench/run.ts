/**
 * Carries out a plan: for each work item, a fresh topology per contender, the contenders in
 * alternating order (rotated per item and per repeat; searches advance one trial per
 * contender in turn, so slow drifts of the machine touch every contender alike), every trial
 * and result written as a JSON line as soon as it is known.
 */
import { logger } from "./log.ts";
import { NdrPdrSearch, type SearchParams } from "./bisect.ts";
import { CONTENDERS, type GenMode, type Tools } from "./contenders.ts";
import { trialOverheadS, type ModeParams, type WorkItem } from "./plan.ts";
import { SCHEMA_VERSION, type ContenderId, type ResultsFile, type SearchRecord, type TrialRecord } from "./results.ts";
import { buildTopology, type BenchTopology, type Placement } from "./topology.ts";
import { describeTrial, runTrial, type TrialContext, type TrialOutput, type TrialSpec } from "./trial.ts";
import { latencyCounts, repeatForSteal, stealFinalNote, stealRepeatNote } from "./steal.ts";

const log = logger("bench");

/** A trial that fails for a reason other than loss (a process that did not start) is tried again this often. */
const TRIAL_ATTEMPTS_MAX = 2;

export interface RunState {
  runId: string;
  params: ModeParams;
  placement: Placement;
  /** How the generator sends (`mcrelay gen --mode`), for every trial of the run. */
  genMode: GenMode;
  tools: Tools;
  env: Record<string, unknown>;
  results: ResultsFile;
  allowForeign: boolean;
  startedAt: number;
  /** Confirmed NDRs by variant and contender, for S4 and the profile. */
  ndrs: Map<string, Map<ContenderId, number[]>>;
  interrupted: boolean;
  only: Set<ContenderId> | null;
}

export function elapsedS(state: RunState): number {
  return (performance.now() - state.startedAt) / 1000;
}

function rotate<T>(list: T[], by: number): T[] {
  if (list.length === 0) return list;
  const k = ((by % list.length) + list.length) % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

function skip(state: RunState, item: WorkItem, contender: ContenderId, kind: "not-possible" | "not-run" | "time-budget" | "failed", reason: string): void {
  state.results.write({ type: "skip", schema: SCHEMA_VERSION, run_id: state.runId, scenario: item.scenario, variant: item.variant, contender, reason, kind });
  log.info(`${item.variant} ${contender}: skipped (${kind}): ${reason}`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function knownNdr(state: RunState, variant: string, c: ContenderId): number | null {
  const list = state.ndrs.get(variant)?.get(c);
  return list && list.length ? median(list) : null;
}

function noteNdr(state: RunState, variant: string, c: ContenderId, pps: number): void {
  const byC = state.ndrs.get(variant) ?? new Map<ContenderId, number[]>();
  byC.set(c, [...(byC.get(c) ?? []), pps]);
  state.ndrs.set(variant, byC);
}

export class OutOfTime extends Error {
  override name = "OutOfTime";
}

/** `mark` completes the record before it is written (the steal repeat's attempt and verdict). */
async function trialWithRetry(state: RunState, ctx: TrialContext, c: ContenderId, spec: TrialSpec, mark?: (r: TrialRecord) => void): Promise<TrialOutput> {
  const trialS = trialOverheadS(spec.shape) + spec.warmupS + spec.durationS + (spec.overload?.recoveryS ?? 0);
  if (elapsedS(state) + trialS > state.params.hardStopS) {
    throw new OutOfTime(`a ${Math.round(trialS)} s trial would end past the ${state.params.hardStopS} s limit at ${Math.round(elapsedS(state))} s`);
  }
  let last: Error | null = null;
  for (let attempt = 1; attempt <= TRIAL_ATTEMPTS_MAX; attempt++) {
    if (state.interrupted) throw new Error("interrupted");
    try {
      const out = await runTrial(ctx, CONTENDERS[c], spec);
      mark?.(out.record);
      state.results.write(out.record);
      if (out.overload) state.results.write(out.overload);
      if (out.profile) state.results.write(out.profile);
      log.info(describeTrial(out.record));
      return out;
    } catch (err) {
      last = err as Error;
      if (/another forwarder is active/.test(last.message)) throw last;
      log.warn(`${spec.variant} ${c} trial at ${spec.targetPps} pps failed (attempt ${attempt}): ${last.message}`);
    }
  }
  throw last!;
}

/**
 * A trial whose loss counts (search and fixed-rate trials): one that lost packets while the
 * hypervisor stole significant CPU time, or one whose p99 counts with such steal, is run again at
 * the same rate, at most STEAL_REPEATS_MAX times (steal.ts); every attempt is recorded, the
 * repeated ones marked, and
 * `note` receives what happened. The last attempt is returned: if it lost too, its loss stands.
 */
async function trialStealChecked(state: RunState, ctx: TrialContext, c: ContenderId, spec: TrialSpec, note: (text: string) => void): Promise<TrialOutput> {
  for (let attempt = 1; ; attempt++) {
    const out = await trialWithRetry(state, ctx, c, spec, (r) => {
      r.attempt = attempt;
      r.repeated = repeatForSteal(r, attempt);
    });
    const r = out.record;
    if (r.repeated) {
      const text = stealRepeatNote(r.offered_pps, r.lost, r.steal, latencyCounts(r.purpose) ? r.latency_us.p99 : undefined);
      log.warn(`${spec.variant} ${c}: ${text} (attempt ${attempt})`);
      note(text);
      continue;
    }
    if (attempt > 1) note(stealFinalNote(r.offered_pps, r.lost, r.steal, attempt));
    return out;
  }
}

/** Runs one item: its topologies, its trials, its records; throws when the run must stop. */
export async function runItem(state: RunState, item: WorkItem, index: number): Promise<void> {
  const contenders = item.contenders.filter((c) => state.only === null || state.only.has(c));
  const usable: ContenderId[] = [];
  for (const c of contenders) {
    const why = CONTENDERS[c].unsupported(item.shape);
    if (why) skip(state, item, c, why.startsWith("not possible") ? "not-possible" : "not-run", why);
    else usable.push(c);
  }
  if (usable.length === 0) return;
  const over = elapsedS(state) + item.estimateS > state.params.budgetS;
  if (over && index > 0) {
    for (const c of usable) skip(state, item, c, "time-budget", `estimated ${Math.round(item.estimateS)} s would pass the ${state.params.budgetS} s budget at ${Math.round(elapsedS(state))} s`);
    return;
  }
  log.info(`${item.title} [${usable.join(", ")}] (about ${Math.round(item.estimateS)} s)`);
  // An item may steer the softirq differently (S1 with RPS onto the relay's CPU).
  const placement: Placement = { ...state.placement, rps: item.rps ?? state.placement.rps };
  const topologies = new Map<ContenderId, BenchTopology>();
  try {
    for (const c of usable) {
      const label = `${item.variant.replace(/[^A-Za-z0-9]/g, "")}${c.slice(0, 4)}`;
      topologies.set(c, await buildTopology(label, item.shape.fanout, c === "calibration", placement));
    }
    const ctxFor = (c: ContenderId): TrialContext => {
      const bt = topologies.get(c)!;
      return {
        bt,
        placement,
        genMode: state.genMode,
        tools: state.tools,
        env: { ...state.env, placement, applied: bt.applied },
        runId: state.runId,
        allowForeign: state.allowForeign,
      };
    };
    switch (item.kind) {
      case "search":
        await runSearches(state, item, index, usable, ctxFor);
        break;
      case "fixed":
        await runFixed(state, item, index, usable, ctxFor);
        break;
      case "overload":
        await runOverload(state, item, index, usable, ctxFor);
        break;
      case "profile":
        await runProfile(state, item, usable, ctxFor);
        break;
    }
  } finally {
    await Promise.all([...topologies.values()].map((bt) => bt.topo.destroy()));
  }
}

function searchParams(state: RunState, item: WorkItem, hint: number | null): SearchParams {
  return { ...state.params.search, ...item.searchOverride, hint };
}

async function runSearches(state: RunState, item: WorkItem, index: number, usable: ContenderId[], ctxFor: (c: ContenderId) => TrialContext): Promise<void> {
  const repeatsMax = Math.max(...usable.map((c) => item.repeats?.[c] ?? 1));
  for (let r = 0; r < repeatsMax; r++) {
    const order = rotate(
      usable.filter((c) => (item.repeats?.[c] ?? 1) > r),
      index + r,
    );
    const live = new Map(order.map((c) => [c, { search: new NdrPdrSearch(searchParams(state, item, r > 0 ? knownNdr(state, item.variant, c) : null)), started: performance.now(), failed: false }]));
    while ([...live.values()].some((s) => !s.search.done && !s.failed)) {
      if (state.interrupted) return;
      for (const c of order) {
        const s = live.get(c)!;
        if (s.search.done || s.failed) continue;
        const req = s.search.next();
        if (!req) {
          writeSearch(state, item, c, r, s.search, s.started);
          continue;
        }
        const spec: TrialSpec = {
          scenario: item.scenario,
          variant: item.variant,
          contender: c,
          repeat: r,
          phase: req.phase,
          purpose: req.purpose,
          shape: item.shape,
          targetPps: req.targetPps,
          warmupS: req.warmupS,
          durationS: req.durationS,
        };
        try {
          const out = await trialStealChecked(state, ctxFor(c), c, spec, (text) => s.search.note(text));
          s.search.record({ offeredPps: out.record.offered_pps, deliveredPps: out.record.delivered_pps, lossRatio: out.record.loss_ratio, genLimited: out.record.gen_limited });
        } catch (err) {
          if (/another forwarder is active|interrupted/.test((err as Error).message)) throw err;
          s.failed = true;
          skip(state, item, c, err instanceof OutOfTime ? "time-budget" : "failed", `search repeat ${r + 1}: ${(err as Error).message}`);
        }
      }
    }
  }
}

const written = new WeakSet<NdrPdrSearch>();

function writeSearch(state: RunState, item: WorkItem, c: ContenderId, repeat: number, search: NdrPdrSearch, started: number): void {
  if (written.has(search)) return;
  written.add(search);
  const r = search.result();
  const rec: SearchRecord = {
    type: "search",
    schema: SCHEMA_VERSION,
    run_id: state.runId,
    ts: new Date().toISOString(),
    scenario: item.scenario,
    variant: item.variant,
    contender: c,
    repeat,
    shape: item.shape,
    ndr: r.ndr ? { pps: r.ndr.pps, delivered_pps: r.ndr.deliveredPps, loss_ratio: r.ndr.lossRatio, confirmed: r.ndr.confirmed } : null,
    pdr: r.pdr ? { pps: r.pdr.pps, delivered_pps: r.pdr.deliveredPps, loss_ratio: r.pdr.lossRatio, confirmed: r.pdr.confirmed } : null,
    at_generator_ceiling: r.atGeneratorCeiling,
    trials: r.trials,
    elapsed_s: Number(((performance.now() - started) / 1000).toFixed(1)),
    notes: r.notes,
  };
  state.results.write(rec);
  if (r.ndr) noteNdr(state, item.variant, c, r.ndr.pps);
  log.info(`${item.variant} ${c} repeat ${repeat + 1}: NDR ${r.ndr?.pps ?? "-"} pps, PDR ${r.pdr?.pps ?? "-"} pps (${r.trials} trials)${r.notes.length ? `; ${r.notes.join("; ")}` : ""}`);
}

async function runFixed(state: RunState, item: WorkItem, index: number, usable: ContenderId[], ctxFor: (c: ContenderId) => TrialContext): Promise<void> {
  const rates = item.rates ?? [];
  for (const [ri, rate] of rates.entries()) {
    for (const c of rotate(usable, index + ri)) {
      if (state.interrupted) return;
      const spec: TrialSpec = {
        scenario: item.scenario,
        variant: item.variant,
        contender: c,
        repeat: 0,
        phase: "fixed",
        purpose: item.purpose,
        shape: item.shape,
        targetPps: rate,
        warmupS: item.warmupS ?? state.params.fixed.warmupS,
        durationS: item.durationS ?? state.params.fixed.durationS,
      };
      try {
        // The generator's ceiling has no loss criterion: nothing to repeat.
        if (item.purpose === "gen-ceiling") await trialWithRetry(state, ctxFor(c), c, spec);
        else await trialStealChecked(state, ctxFor(c), c, spec, () => undefined);
      } catch (err) {
        if (/another forwarder is active|interrupted/.test((err as Error).message)) throw err;
        skip(state, item, c, err instanceof OutOfTime ? "time-budget" : "failed", `${rate} pps: ${(err as Error).message}`);
      }
    }
  }
}

/** NDR for S4: this run's S1 1316 B result, or a search in the item's own topology. */
async function ndrFor(state: RunState, item: WorkItem, c: ContenderId, ctx: TrialContext): Promise<number | null> {
  const known = knownNdr(state, "S1-1316", c);
  if (known) return known;
  if (state.params.mode === "smoke") return state.params.cpuRatePps;
  const search = new NdrPdrSearch(searchParams(state, item, null));
  const started = performance.now();
  for (let req = search.next(); req; req = search.next()) {
    const spec: TrialSpec = { scenario: item.scenario, variant: item.variant, contender: c, repeat: 0, phase: req.phase, purpose: req.purpose, shape: item.shape, targetPps: req.targetPps, warmupS: req.warmupS, durationS: req.durationS };
    const out = await trialStealChecked(state, ctx, c, spec, (text) => search.note(text));
    search.record({ offeredPps: out.record.offered_pps, deliveredPps: out.record.delivered_pps, lossRatio: out.record.loss_ratio, genLimited: out.record.gen_limited });
  }
  writeSearch(state, { ...item, variant: "S1-1316" }, c, 0, search, started);
  return search.result().ndr?.pps ?? null;
}

async function runOverload(state: RunState, item: WorkItem, index: number, usable: ContenderId[], ctxFor: (c: ContenderId) => TrialContext): Promise<void> {
  const s4 = state.params.s4;
  for (const c of rotate(usable, index)) {
    if (state.interrupted) return;
    try {
      const ndr = await ndrFor(state, item, c, ctxFor(c));
      if (!ndr) {
        skip(state, item, c, "failed", "no NDR to double");
        continue;
      }
      await trialWithRetry(state, ctxFor(c), c, {
        scenario: item.scenario,
        variant: item.variant,
        contender: c,
        repeat: 0,
        phase: "overload",
        purpose: "overload",
        shape: item.shape,
        targetPps: Math.round(2 * ndr),
        warmupPps: Math.round(ndr),
        warmupS: s4.warmupS,
        durationS: s4.overloadS,
        overload: { ndrPps: ndr, probePps: Math.round(ndr / 2), probeWindowS: s4.probeWindowS, recoveryS: s4.recoveryS },
      });
    } catch (err) {
      if (/another forwarder is active|interrupted/.test((err as Error).message)) throw err;
      skip(state, item, c, err instanceof OutOfTime ? "time-budget" : "failed", (err as Error).message);
    }
  }
}

async function runProfile(state: RunState, item: WorkItem, usable: ContenderId[], ctxFor: (c: ContenderId) => TrialContext): Promise<void> {
  for (const c of usable) {
    const rates = new Set(item.rates ?? []);
    const ndr = knownNdr(state, "S1-1316", c);
    if (ndr && state.params.mode !== "smoke") rates.add(Math.round(ndr));
    for (const rate of rates) {
      if (state.interrupted) return;
      try {
        await trialWithRetry(state, ctxFor(c), c, {
          scenario: item.scenario,
          variant: item.variant,
          contender: c,
          repeat: 0,
          phase: "profile",
          purpose: rate === ndr ? "profile-ndr" : "profile-cpu",
          shape: item.shape,
          targetPps: rate,
          warmupS: item.warmupS ?? 1,
          durationS: item.durationS ?? state.params.profileS,
          profileS: item.durationS ?? state.params.profileS,
        });
      } catch (err) {
        if (/another forwarder is active|interrupted/.test((err as Error).message)) throw err;
        skip(state, item, c, err instanceof OutOfTime ? "time-budget" : "failed", `profile at ${rate} pps: ${(err as Error).message}`);
      }
    }
  }
}

export type { TrialRecord };
