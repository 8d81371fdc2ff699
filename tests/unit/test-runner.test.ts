// scripts/test.ts: a CI run fails when kernel tests were skipped, and the runners' closing lines
// are read into counts.
import { describe, expect, test } from "bun:test";
import { ciSkipProblem, parseBunSummary } from "../../scripts/test.ts";

describe("scripts/test.ts", () => {
  test("under CI=true, a machine that cannot run the kernel tests (they skip) fails the run; other skips do not", () => {
    expect(ciSkipProblem(0, { CI: "true" }, true)).toBeUndefined();
    expect(ciSkipProblem(2, { CI: "true" }, true)).toBeUndefined();
    expect(ciSkipProblem(90, { CI: "true" }, false)).toBe("CI=true but the kernel tests cannot run here (they need root and iproute2): 90 test(s) were skipped");
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
