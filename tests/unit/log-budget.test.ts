// LogBudget: a log line that a client can cause at will is written at most N times a second,
// and the lines left out are counted in the next one written.
import { describe, expect, test } from "bun:test";
import { LogBudget } from "../../src/log.ts";

describe("LogBudget", () => {
  test("at most N lines a second; the next second's first line counts the ones left out", () => {
    let now = 5_000;
    const lines: string[] = [];
    const b = new LogBudget(3, () => now);
    for (let i = 0; i < 10; i++) b.spend((more) => lines.push(`line ${i}${more}`));
    expect(lines).toEqual(["line 0", "line 1", "line 2"]);
    now += 999; // still the same second
    expect(b.spend((more) => lines.push(`late${more}`))).toBe(false);
    now += 1; // the next second
    expect(b.spend((more) => lines.push(`next${more}`))).toBe(true);
    expect(lines.at(-1)).toBe("next (8 more like it not logged before this one: at most 3 a second)");
    b.spend((more) => lines.push(`again${more}`));
    expect(lines.at(-1)).toBe("again");
  });
});
