import { describe, expect, test } from "bun:test";
import { dropsText, renderTop } from "../../src/cli/stats-top.ts";
import { PARSE_DROPS, WORKER_COUNTERS } from "../../src/native/abi.ts";
import type { RuleReport } from "../../src/supervisor/report.ts";

const zero = <K extends string>(names: readonly K[]) => Object.fromEntries(names.map((n) => [n, 0])) as Record<K, number>;

function rule(name: string, pps: number): RuleReport {
  return {
    name, id: name, origin: "config", input: `239.1.1.1:5000@eth0`, source: null, vlan: null, drops: { source_mismatch: 0, own_source: 0, cap_drops: 0, loop_drops: 0, output_errors: 0 }, max_pps: null, loop_guard: true, state: "active", reasons: [], packets: pps * 10, bytes: 0, pps, bps: pps * 8000,
    outputs: [{ to: "239.2.2.2:6000@eth1", state: "active", reason: null, ttl: 8, dscp: "copy", gso: true, packets: 0, bytes: 0, pps: 0, bps: 0, send_errors: { ENOBUFS: 2 } }],
  };
}

describe("stats --watch screen", () => {
  const interfaces = [{ interface: "eth0", counters: { ...zero(WORKER_COUNTERS), rx_frames: 5, no_match: 3 }, parse_drops: { ...zero(PARSE_DROPS), ipv4_fragment: 1 } }];
  const opts = { time: new Date("2026-01-01T10:00:00Z"), intervalS: 1, width: 100, height: 24, title: "mcrelay stats" };

  test("rules are sorted by packet rate, highest first, with non-zero drops per interface", () => {
    const lines = renderTop({ rules: [rule("b", 10), rule("a", 5000), rule("c", 300)], interfaces }, opts);
    const order = lines.filter((l) => /^[abc] /.test(l)).map((l) => l[0]);
    expect(order).toEqual(["a", "c", "b"]);
    expect(lines[0]).toContain("3 rules");
    expect(lines.find((l) => l.startsWith("eth0:"))).toBe("eth0: rx 5 frames; drops: no_match 3, ipv4_fragment 1");
    expect(lines.find((l) => l.startsWith("a "))).toMatch(/\s2\s/); // send errors summed
  });

  test("the screen fits the terminal: long lines are cut, rules beyond the height are counted", () => {
    const many = Array.from({ length: 50 }, (_, i) => rule(`r${i}`, i));
    const lines = renderTop({ rules: many, interfaces }, { ...opts, width: 40, height: 20 });
    expect(lines.length).toBeLessThanOrEqual(20);
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(40);
    expect(lines.some((l) => /^\.\.\. \d+ more rules/.test(l))).toBe(true);
  });

  test("work counters (send calls, GSO frames received, queue freezes) are not listed as drops; every loss is, on the screen and in plain stats", () => {
    const busy = {
      interface: "eth0",
      counters: { ...zero(WORKER_COUNTERS), rx_frames: 60, matched: 60, tx_packets: 60, tx_send_calls: 60, rx_gso_frames: 2, rx_gso_datagrams: 8, kernel_freezes: 1, loop_drops: 4, own_source: 2 },
      parse_drops: zero(PARSE_DROPS),
    };
    expect(dropsText(busy)).toBe("own_source 2, loop_drops 4");
    const lines = renderTop({ rules: [rule("a", 1)], interfaces: [busy] }, opts);
    expect(lines.find((l) => l.startsWith("eth0:"))).toBe("eth0: rx 60 frames; drops: own_source 2, loop_drops 4");
  });
});
