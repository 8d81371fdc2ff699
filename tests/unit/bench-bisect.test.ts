// The NDR/PDR search (scripts/bench/bisect.ts) driven by simulated contenders.
import { describe, expect, test } from "bun:test";
import { NdrPdrSearch, type SearchParams, type TrialOutcome, type TrialRequest } from "../../scripts/bench/bisect";

const PARAMS: SearchParams = {
  rateMin: 1000,
  rateMax: 2_000_000,
  precision: 0.03,
  coarseS: 2,
  coarseWarmupS: 1,
  finalS: 30,
  finalWarmupS: 3,
  coarseTrialsMax: 9,
  finalRetries: 2,
  hint: null,
};

/** A contender that carries `coarseCapacity` in short trials and `finalCapacity` in long ones
 * (a ring that absorbs 2 s of overload but not 30 s), losing everything above it; the generator
 * offers up to `ceiling`. */
function contender(coarseCapacity: number, finalCapacity: number, ceiling = 500_000) {
  return (req: TrialRequest): TrialOutcome => {
    const offered = Math.min(req.targetPps, ceiling);
    const capacity = req.phase === "coarse" ? coarseCapacity : finalCapacity;
    const delivered = Math.min(offered, capacity);
    return { offeredPps: offered, deliveredPps: delivered, lossRatio: (offered - delivered) / offered, genLimited: offered < req.targetPps };
  };
}

function run(trial: (req: TrialRequest) => TrialOutcome) {
  const search = new NdrPdrSearch(PARAMS);
  const finals: number[] = [];
  for (let i = 0; i < 100; i++) {
    const req = search.next();
    if (!req) break;
    if (req.phase === "final") finals.push(req.targetPps);
    search.record(trial(req));
  }
  expect(search.done).toBe(true);
  return { result: search.result(), finals };
}

describe("NDR/PDR search", () => {
  test("a contender whose long trials carry 25 % less than its short ones still gets a confirmed NDR", () => {
    // Stepping 3 % at a time from the coarse result (about 320k) would end at about 300k after
    // three final trials, all above 240k: NDR unconfirmed.
    const { result, finals } = run(contender(320_000, 240_000));
    expect(result.ndr?.confirmed).toBe(true);
    expect(result.ndr!.pps).toBeLessThanOrEqual(240_000);
    expect(result.ndr!.pps).toBeGreaterThanOrEqual(240_000 * 0.97 * 0.97);
    expect(finals[1]).toBeLessThan(finals[0]! * 0.8);
  });

  test("a final trial that lost a little steps down by 3 %, not more", () => {
    // Long trials carry 1 % less than short ones: the second candidate is 3 % below the first.
    const { result, finals } = run(contender(300_000, 297_000));
    expect(result.ndr?.confirmed).toBe(true);
    expect(finals.length).toBeGreaterThanOrEqual(2);
    expect(finals[1]! / finals[0]!).toBeGreaterThan(0.955);
    expect(finals[1]! / finals[0]!).toBeLessThan(0.975);
  });

  test("a contender that carries what it is offered is confirmed at the coarse result", () => {
    const { result, finals } = run(contender(300_000, 300_000));
    expect(result.ndr?.confirmed).toBe(true);
    expect(finals[0]).toBe(result.ndr!.pps);
    expect(result.ndr!.pps).toBeGreaterThan(300_000 * 0.96);
  });
});
