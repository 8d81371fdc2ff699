// What a worker can hold, counted the way the worker pool splits rules: per interface and per
// worker (flow hash), pending rules included, with messages naming the interface and the limit.
import { describe, expect, test } from "bun:test";
import { ruleFromSpec } from "../../src/config/rule-spec.ts";
import { NATIVE_LIMITS } from "../../src/limits.ts";
import { capacityProblems } from "../../src/rules/capacity.ts";
import { workerSlot } from "../../src/rules/flow-hash.ts";
import type { Rule } from "../../src/rules/rule.ts";

function rule(i: number, iface = "eth0", outputs = 1): Rule {
  const group = `239.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  const to = Array.from({ length: outputs }, (_, k) => `239.200.${k >> 8}.${k & 255}:6000@eth9`);
  const built = ruleFromSpec({ name: `r${i}`, from: `${group}:5000@${iface}`, to }, BigInt(i + 1));
  if (!built.ok) throw new Error(built.problems.join("; "));
  return built.rule;
}

describe("worker capacity", () => {
  test(`${NATIVE_LIMITS.rulesMax} rules on one interface fit; one more is refused naming the interface and rules_max`, () => {
    const rules = Array.from({ length: NATIVE_LIMITS.rulesMax }, (_, i) => rule(i));
    expect(capacityProblems(rules, () => 1)).toEqual([]);
    expect(capacityProblems([...rules, rule(NATIVE_LIMITS.rulesMax)], () => 1)).toEqual([
      `interface eth0: ${NATIVE_LIMITS.rulesMax + 1} rules, but a worker holds at most ${NATIVE_LIMITS.rulesMax} (rules_max)`,
    ]);
  });

  test("the limits are per interface: 1,024 rules on each of two interfaces fit", () => {
    const rules = [...Array.from({ length: 1024 }, (_, i) => rule(i, "eth0")), ...Array.from({ length: 1024 }, (_, i) => rule(i, "eth1"))];
    expect(capacityProblems(rules, () => 1)).toEqual([]);
  });

  test("8 rules of 256 outputs fit (2,048); a 9th rule of 256 outputs is refused naming outputs_max", () => {
    const rules = Array.from({ length: 8 }, (_, i) => rule(i, "eth0", 256));
    expect(capacityProblems(rules, () => 1)).toEqual([]);
    expect(capacityProblems([...rules, rule(8, "eth0", 256)], () => 1)).toEqual([
      `interface eth0: 2304 outputs, but a worker holds at most ${NATIVE_LIMITS.outputsMax} (outputs_max)`,
    ]);
  });

  test("with several workers each worker's share is counted (as the flow hash splits), naming the worker", () => {
    // 1,100 rules over 2 workers: each worker gets about half, so all fit.
    const rules = Array.from({ length: 1100 }, (_, i) => rule(i));
    expect(capacityProblems(rules, () => 2)).toEqual([]);
    // Rules that all hash to worker 0 of workers 0-1: one over the limit is refused, naming worker 0 as `workers` numbers it.
    const same: Rule[] = [];
    for (let i = 0; same.length <= NATIVE_LIMITS.rulesMax; i++) {
      const r = rule(i);
      if (workerSlot(r.input.addr.text, r.input.port, 2) === 0) same.push(r);
    }
    expect(capacityProblems(same, () => 2)).toEqual([`interface eth0 on worker 0 (workers 0-1): ${NATIVE_LIMITS.rulesMax + 1} rules, but a worker holds at most ${NATIVE_LIMITS.rulesMax} (rules_max)`]);
  });
});

describe("input interfaces per worker", () => {
  const max = NATIVE_LIMITS.ringsPerWorkerMax;
  test(`rules on ${max} input interfaces fit; a rule on one more is refused naming rings_per_worker_max`, () => {
    const rules = Array.from({ length: max }, (_, i) => rule(i, `in${i}`));
    expect(capacityProblems(rules, () => 1)).toEqual([]);
    // More rules on interfaces already served take no ring.
    expect(capacityProblems([...rules, rule(max, "in0"), rule(max + 1, `in${max - 1}`)], () => 1)).toEqual([]);
    expect(capacityProblems([...rules, rule(max, `in${max}`)], () => 1)).toEqual([
      `worker 0: rules on ${max + 1} input interfaces, but a worker serves at most ${max} (rings_per_worker_max)`,
    ]);
  });

  test("an interface of N workers takes a ring in workers 0..N-1: each worker over the limit is named", () => {
    // 33 interfaces, 3 of them with 2 workers: worker 0 serves 33, worker 1 serves 3.
    const rules = Array.from({ length: max + 1 }, (_, i) => rule(i, `in${i}`));
    const workersFor = (iface: string) => (["in0", "in1", "in2"].includes(iface) ? 2 : 1);
    expect(capacityProblems(rules, workersFor)).toEqual([`worker 0: rules on ${max + 1} input interfaces, but a worker serves at most ${max} (rings_per_worker_max)`]);
    // 33 interfaces of 2 workers each: both workers are over.
    expect(capacityProblems(rules, () => 2)).toEqual([
      `worker 0: rules on ${max + 1} input interfaces, but a worker serves at most ${max} (rings_per_worker_max)`,
      `worker 1: rules on ${max + 1} input interfaces, but a worker serves at most ${max} (rings_per_worker_max)`,
    ]);
  });
});
