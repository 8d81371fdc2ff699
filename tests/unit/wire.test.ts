// A worker's rule table crosses the supervisor -> worker hop once, as the bytes Zig's table
// builder reads (src/rules/wire.ts): its hash ignores order and generation, a table at the
// dataplane's limits fits one socketpair message, and the bytes are what the dataplane takes.
// Needs the native library (zig-out/lib/libmcrelay.so).
import { describe, expect, test } from "bun:test";
import { LAYOUT, LIMITS } from "../../src/native/abi.ts";
import { fdClose, scmPair, scmRecv, scmSend } from "../../src/native/lib.ts";
import { encodeWorkerTable, isTableBytes, tableBytesHash, tableHash, tableRuleCount, withGeneration, type WireRule } from "../../src/rules/wire.ts";

function rule(id: number, outputs = 1): WireRule {
  return {
    id: String(id),
    group: `239.${(id >> 16) & 255}.${(id >> 8) & 255}.${id & 255}`,
    port: 5000,
    source: null,
    vlan: 0,
    local: "10.0.0.1",
    max_pps: 0,
    loop_guard: true,
    local6: [],
    outputs: Array.from({ length: outputs }, (_, k) => ({
      id: String(id * 1000 + k),
      addr: "239.9.9.9",
      port: 6000 + k,
      ttl: 8,
      dscp: null,
      gso: true,
      ifindex: 3,
      source: "10.0.1.1",
    })),
  };
}

describe("worker table bytes", () => {
  test("the hash of a table ignores rule order and generation, and changes with any field", () => {
    const a = [rule(1), rule(2), rule(3)];
    const b = [rule(3), rule(1), rule(2)];
    expect(tableHash(a)).toBe(tableHash(b));
    const bytes = encodeWorkerTable(a);
    expect(tableBytesHash(withGeneration(bytes, 41))).toBe(tableBytesHash(bytes));
    const changed = [rule(1), rule(2), { ...rule(3), port: 5001 }];
    expect(tableHash(changed)).not.toBe(tableHash(a));
    expect(isTableBytes(bytes)).toBe(true);
    expect(isTableBytes(Uint8Array.from([0x77]))).toBe(false);
    expect(tableRuleCount(bytes)).toBe(3);
  });

  test("a table at the dataplane's limits crosses the socketpair whole, in one message", () => {
    // rules_max rules sharing outputs_max outputs: the largest table a worker takes.
    const perRule = Math.floor(LIMITS.outputsMax / LIMITS.rulesMax);
    const rules = Array.from({ length: LIMITS.rulesMax }, (_, i) => rule(i + 1, perRule));
    const bytes = withGeneration(encodeWorkerTable(rules), 7);
    expect(bytes.length).toBe(LAYOUT.TableHeader.size + LIMITS.rulesMax * LAYOUT.RuleDesc.size + LIMITS.outputsMax * LAYOUT.OutputDesc.size);
    const [a, b] = scmPair();
    try {
      scmSend(a, bytes, [], true);
      const got = scmRecv(b, true, bytes.length + 1);
      expect(got).not.toBeNull();
      expect(got!.data.length).toBe(bytes.length);
      expect(tableBytesHash(got!.data)).toBe(tableBytesHash(bytes));
      expect(Buffer.from(got!.data).equals(Buffer.from(bytes))).toBe(true);
    } finally {
      fdClose(a);
      fdClose(b);
    }
  });
});
