/**
 * NDR/PDR search for one contender on one scenario variant, in the manner of MLRsearch
 * (IETF BMWG draft, used by FD.io CSIT): short trials narrow two brackets at once, then
 * full-length trials confirm the results.
 *
 *   NDR: the highest offered rate with zero loss; PDR: the highest with loss <= 0.1 %.
 *   Each bracket is [lower, upper): lower = highest offered rate seen to pass, upper = lowest
 *   seen to fail. A trial updates both (a zero-loss trial passes both; a trial with loss in
 *   (0, 0.1 %] fails NDR and passes PDR).
 *
 * Coarse phase (trials of coarse_s):
 *   1. a trial at rate_max: the generator's ceiling in this topology; its delivered rate is
 *      the first estimate of the capacity;
 *   2. while a bracket has no lower bound: try 97 % of the delivered rate at its upper bound,
 *      and at most 90 %, 75 %, then 50 % of that bound on consecutive failures (sporadic loss
 *      far below the throughput is still found in a few trials);
 *   3. then bisect the wider bracket (relative width) until both are narrower than
 *      `precision` (relative) or coarse_trials_max trials ran; the next rate is the middle,
 *      or the delivered rate of the upper bound's trial when that is lower (a trial with
 *      heavy loss delivers about what the contender can carry), or just above the lower
 *      bound when that delivered rate is no higher than it, and the geometric middle once
 *      such a probe passed (the contender had collapsed under the overload, not saturated);
 * Final phase (trials of final_s): a trial at NDR's lower bound; if it loses anything, the
 * candidate steps down to max(precision, 3 %) below the lower of the trial's offered and
 * delivered rates and is tried again, up to final_retries times (a long trial that lost a lot
 * carried about what it delivered: a fixed step would spend every retry above that).
 * PDR likewise, unless a passing NDR final trial is within precision of PDR's lower bound.
 * Rates are the rates the generator achieved (the offered rate), not the ones asked for.
 */

export const PDR_LOSS_RATIO = 0.001;

export interface SearchParams {
  rateMin: number;
  rateMax: number;
  precision: number;
  coarseS: number;
  coarseWarmupS: number;
  finalS: number;
  finalWarmupS: number;
  coarseTrialsMax: number;
  finalRetries: number;
  /** Start narrower around a previous result (a repeat), or null. */
  hint: number | null;
}

export interface TrialRequest {
  targetPps: number;
  phase: "coarse" | "final";
  purpose: "ndr" | "pdr" | "search";
  warmupS: number;
  durationS: number;
}

export interface TrialOutcome {
  offeredPps: number;
  deliveredPps: number;
  lossRatio: number;
  genLimited: boolean;
}

interface Bracket {
  lower: number | null;
  upper: number | null;
  /** Delivered rate of the trial that set `upper`. */
  upperDelivered: number;
}

export interface SearchResult {
  ndr: { pps: number; deliveredPps: number; lossRatio: number; confirmed: boolean } | null;
  pdr: { pps: number; deliveredPps: number; lossRatio: number; confirmed: boolean } | null;
  atGeneratorCeiling: boolean;
  trials: number;
  notes: string[];
}

type Stage = "coarse" | "final-ndr" | "final-pdr" | "done";

export class NdrPdrSearch {
  private readonly ndr: Bracket = { lower: null, upper: null, upperDelivered: 0 };
  private readonly pdr: Bracket = { lower: null, upper: null, upperDelivered: 0 };
  private stage: Stage = "coarse";
  private coarseTrials = 0;
  private trials = 0;
  private finalTries = 0;
  private finalCandidate = 0;
  private pending: TrialRequest | null = null;
  private maxOffered = 0;
  /** Consecutive coarse trials that failed while looking for a lower bound. */
  private seeks = 0;
  /** The rate of the last probe just above a lower bound (see chooseCoarse). */
  private probedAbove: number | null = null;
  private ceilingPass = false;
  private readonly notes: string[] = [];
  private ndrFinal: SearchResult["ndr"] = null;
  /** Lower bounds at the end of the coarse phase, for the notes. */
  private coarseNdr: number | null = null;
  private coarsePdr: number | null = null;
  private pdrFinal: SearchResult["pdr"] = null;

  constructor(private readonly p: SearchParams) {
    if (!(p.rateMin > 0 && p.rateMax > p.rateMin && p.precision > 0 && p.precision < 1)) throw new Error("search: bad parameters");
  }

  get done(): boolean {
    return this.stage === "done";
  }

  /** The next trial to run, or null when the search is over. */
  next(): TrialRequest | null {
    if (this.pending) throw new Error("search: next() before record() of the previous trial");
    const req = this.choose();
    this.pending = req;
    return req;
  }

  record(o: TrialOutcome): void {
    const req = this.pending;
    if (!req) throw new Error("search: record() without a trial");
    this.pending = null;
    this.trials += 1;
    // A generator that could not offer the rate asked for tested the rate it did offer.
    const rate = o.offeredPps;
    this.maxOffered = Math.max(this.maxOffered, rate);
    this.update(rate, o);
    if (req.phase === "coarse") {
      this.coarseTrials += 1;
      if (o.genLimited && o.lossRatio === 0 && req.targetPps >= this.p.rateMax) this.ceilingPass = true;
      return;
    }
    if (req.purpose === "ndr") this.recordFinalNdr(rate, o);
    else this.recordFinalPdr(rate, o);
  }

  /** A note from outside the search (a trial repeated because of steal). */
  note(text: string): void {
    this.notes.push(text);
  }

  result(): SearchResult {
    return { ndr: this.ndrFinal, pdr: this.pdrFinal, atGeneratorCeiling: this.ceilingPass, trials: this.trials, notes: this.notes };
  }

  private update(rate: number, o: TrialOutcome): void {
    const pass = (b: Bracket, ok: boolean) => {
      if (ok) {
        b.lower = b.lower === null ? rate : Math.max(b.lower, rate);
        // A pass above the failing rate: the newer result wins (noise or non-monotonic loss).
        if (b.upper !== null && b.upper <= rate) b.upper = null;
      } else {
        if (b.upper === null || rate <= b.upper) {
          b.upper = rate;
          b.upperDelivered = o.deliveredPps;
        }
        if (b.lower !== null && b.lower >= rate) b.lower = null;
      }
    };
    pass(this.ndr, o.lossRatio === 0);
    pass(this.pdr, o.lossRatio <= PDR_LOSS_RATIO);
  }

  private narrow(b: Bracket): boolean {
    if (b.lower === null) return b.upper !== null && b.upper <= this.p.rateMin;
    if (b.upper === null) return this.ceilingPass || b.lower >= this.p.rateMax * 0.97;
    return (b.upper - b.lower) / b.upper <= this.p.precision;
  }

  private coarse(targetPps: number): TrialRequest {
    const t = Math.round(Math.min(this.p.rateMax, Math.max(this.p.rateMin, targetPps)));
    return { targetPps: t, phase: "coarse", purpose: "search", warmupS: this.p.coarseWarmupS, durationS: this.p.coarseS };
  }

  private final(purpose: "ndr" | "pdr", targetPps: number): TrialRequest {
    return { targetPps: Math.round(targetPps), phase: "final", purpose, warmupS: this.p.finalWarmupS, durationS: this.p.finalS };
  }

  private choose(): TrialRequest | null {
    if (this.stage === "coarse") {
      const req = this.chooseCoarse();
      if (req) return req;
      this.stage = "final-ndr";
      this.finalTries = 0;
      this.finalCandidate = this.ndr.lower ?? 0;
      this.coarseNdr = this.ndr.lower;
      this.coarsePdr = this.pdr.lower;
    }
    if (this.stage === "final-ndr") {
      if (this.finalCandidate >= this.p.rateMin && this.finalTries <= this.p.finalRetries) return this.final("ndr", this.finalCandidate);
      if (!this.ndrFinal) {
        this.notes.push(this.coarseNdr === null ? `NDR below ${this.p.rateMin} pps` : `NDR not confirmed: coarse trials passed at ${Math.round(this.coarseNdr)} pps, full-length trials lost packets`);
      }
      this.stage = "final-pdr";
      this.finalTries = 0;
      this.finalCandidate = this.pdr.lower ?? 0;
      // A final NDR trial (or one whose loss was within 0.1 %) close enough to PDR's lower
      // bound already confirms PDR.
      if (this.pdrFinal && this.finalCandidate <= this.pdrFinal.pps * (1 + this.p.precision)) {
        this.stage = "done";
        return null;
      }
    }
    if (this.stage === "final-pdr") {
      if (this.finalCandidate >= this.p.rateMin && this.finalTries <= this.p.finalRetries) return this.final("pdr", this.finalCandidate);
      if (!this.pdrFinal) {
        this.notes.push(this.coarsePdr === null ? `PDR below ${this.p.rateMin} pps` : `PDR not confirmed: coarse trials passed at ${Math.round(this.coarsePdr)} pps, full-length trials lost more than 0.1 %`);
      }
      this.stage = "done";
    }
    return null;
  }

  private chooseCoarse(): TrialRequest | null {
    if (this.coarseTrials === 0) {
      if (this.p.hint !== null) return this.coarse(this.p.hint * 1.05);
      return this.coarse(this.p.rateMax);
    }
    if (this.coarseTrials >= this.p.coarseTrialsMax) {
      this.notes.push(`coarse phase stopped after ${this.coarseTrials} trials`);
      return null;
    }
    if (this.narrow(this.ndr) && this.narrow(this.pdr)) return null;
    // Find a lower bound first (PDR's, then NDR's), from the delivered rate at the upper bound.
    for (const b of [this.pdr, this.ndr]) {
      if (b.lower === null && b.upper !== null && b.upper > this.p.rateMin) {
        const step = [0.9, 0.75][this.seeks] ?? 0.5;
        this.seeks += 1;
        return this.coarse(Math.min(b.upperDelivered * 0.97, b.upper * step));
      }
    }
    this.seeks = 0;
    // Every trial passed so far: go up (a hinted start that was too low).
    for (const b of [this.pdr, this.ndr]) {
      if (b.upper === null && !this.narrow(b)) return this.coarse(Math.max(b.lower! * 1.5, this.maxOffered * 1.1));
    }
    const width = (b: Bracket) => (b.lower !== null && b.upper !== null ? (b.upper - b.lower) / b.upper : 0);
    const b = width(this.ndr) >= width(this.pdr) ? this.ndr : this.pdr;
    if (b.lower === null || b.upper === null) return null;
    // A trial that lost a lot delivered about what the contender can carry: try that rate
    // instead of the middle, or just above the lower bound when it is no higher.
    const mid = (b.lower + b.upper) / 2;
    const nearLower = b.lower * (1 + this.p.precision / 2);
    if (b.upperDelivered <= nearLower) {
      // Either the contender carries about `lower` (a probe just above it fails), or it
      // collapsed under the overload of the upper trial (the probe passes): then bisect
      // geometrically instead of creeping up by `precision`.
      const probePassed = this.probedAbove !== null && b.lower >= this.probedAbove * 0.97;
      if (!probePassed) {
        this.probedAbove = b.lower * (1 + this.p.precision);
        return this.coarse(Math.min(mid, this.probedAbove));
      }
      return this.coarse(Math.sqrt(b.lower * b.upper));
    }
    return this.coarse(Math.min(mid, b.upperDelivered));
  }

  private recordFinalNdr(rate: number, o: TrialOutcome): void {
    this.finalTries += 1;
    if (o.lossRatio <= PDR_LOSS_RATIO && (!this.pdrFinal || this.pdrFinal.pps < rate)) {
      this.pdrFinal = { pps: rate, deliveredPps: o.deliveredPps, lossRatio: o.lossRatio, confirmed: true };
    }
    if (o.lossRatio === 0) {
      this.ndrFinal = { pps: rate, deliveredPps: o.deliveredPps, lossRatio: 0, confirmed: true };
      this.finalCandidate = 0; // done with NDR
      this.finalTries = this.p.finalRetries + 1;
      return;
    }
    this.notes.push(`NDR final trial at ${rate} pps lost ${(o.lossRatio * 100).toFixed(4)} %: stepping down`);
    this.finalCandidate = this.stepDown(rate, o);
  }

  private recordFinalPdr(rate: number, o: TrialOutcome): void {
    this.finalTries += 1;
    if (o.lossRatio <= PDR_LOSS_RATIO) {
      if (!this.pdrFinal || this.pdrFinal.pps < rate) this.pdrFinal = { pps: rate, deliveredPps: o.deliveredPps, lossRatio: o.lossRatio, confirmed: true };
      this.finalCandidate = 0;
      this.finalTries = this.p.finalRetries + 1;
      return;
    }
    this.notes.push(`PDR final trial at ${rate} pps lost ${(o.lossRatio * 100).toFixed(4)} %: stepping down`);
    this.finalCandidate = this.stepDown(rate, o);
  }

  /** The next final candidate after a trial at `rate` that lost too much: a step below the
   * rate it delivered when that is lower (S2 1:4 on 2026-12-02: coarse trials passed at 317k
   * pps, full-length ones lost 15.9 %, 9.5 % and 1.5 % stepping 3 % at a time, and NDR was left
   * unconfirmed). */
  private stepDown(rate: number, o: TrialOutcome): number {
    return Math.min(rate, o.deliveredPps) * (1 - Math.max(this.p.precision, 0.03));
  }
}
