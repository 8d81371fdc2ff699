// scripts/test.ts: a CI run fails when kernel tests were skipped, and the runners' closing lines
// are read into counts.
import { describe, expect, test } from "bun:test";
import { ciSkipProblem, parseBunSummary } from "../../scripts/test.ts";

describe("scripts/test.ts", () => {
  test("under CI=true, skipped tests or a machine that cannot run the kernel tests fail the run", () => {
    expect(ciSkipProblem(0, { CI: "true" }, true)).toBeUndefined();
    expect(ciSkipProblem(3, { CI: "true" }, true)).toBe("CI=true and 3 test(s) were skipped");
    expect(ciSkipProblem(0, { CI: "true" }, false)).toContain("the kernel tests cannot run here");
  });

  test("outside CI skipped tests are reported, not failed", () => {
    expect(ciSkipProblem(5, {}, false)).toBeUndefined();
    expect(ciSkipProblem(5, { CI: "false" }, true)).toBeUndefined();
  });

  test("bun's closing block is read into passed, failed and skipped counts", () => {
    const out = " 10 pass\n 2 skip\n 1 todo\n 3 fail\n 40 expect() calls\nRan 16 tests across 2 files. [1.00s]\n";
    expect(parseBunSummary(out)).toEqual({ passed: 10, failed: 3, skipped: 3 });
  });
});
