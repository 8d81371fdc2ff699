// scripts/mutants.ts: the list of deliberate breakages stays applicable as the code moves on
// (each search text occurs exactly once in its file, each named test exists), and CI's daily
// subset rotates through the whole list.
import { describe, expect, test } from "bun:test";
import { checkMutants, ciSelection, MUTANTS, type Mutant } from "../../scripts/mutants.ts";

describe("scripts/mutants.ts", () => {
  test("every mutant applies to the tree exactly once and names tests that exist", () => {
    expect(checkMutants()).toEqual([]);
    expect(MUTANTS.length).toBeGreaterThanOrEqual(25);
  });

  test("a search text that is gone, a test file that is gone and a filter that matches no test are reported", () => {
    const base: Mutant = { name: "x", breaks: "x", file: "src/limits.ts", search: "export const DEFAULT_TTL = 8;", replace: "", tests: [{ file: "tests/unit/state-file.test.ts" }] };
    expect(checkMutants(undefined, [base])).toEqual([]);
    expect(checkMutants(undefined, [{ ...base, search: "no such text anywhere" }])[0]).toContain("occurs 0 times in src/limits.ts");
    expect(checkMutants(undefined, [{ ...base, tests: [{ file: "tests/unit/nope.test.ts" }] }])).toEqual(["x: test file tests/unit/nope.test.ts does not exist"]);
    expect(checkMutants(undefined, [{ ...base, tests: [{ file: "tests/unit/state-file.test.ts", filter: "no test is called this" }] }])[0]).toContain("no test in tests/unit/state-file.test.ts is named like");
  });

  test("the CI subset is two mutants a day and covers the whole list over consecutive days", () => {
    const seen = new Set<string>();
    const day0 = Date.UTC(2026, 0, 1);
    for (let d = 0; d < Math.ceil(MUTANTS.length / 2); d++) {
      const picked = ciSelection(new Date(day0 + d * 86_400_000));
      expect(picked).toHaveLength(2);
      for (const m of picked) seen.add(m.name);
    }
    expect(seen.size).toBe(MUTANTS.length);
    // Stable within a day.
    expect(ciSelection(new Date(day0 + 1_000)).map((m) => m.name)).toEqual(ciSelection(new Date(day0 + 80_000_000)).map((m) => m.name));
  });
});
