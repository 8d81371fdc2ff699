// The flow hash that splits rules between the workers of an interface: the TypeScript twin
// (src/rules/flow-hash.ts, used by the supervisor to assign rules) must equal the native one
// (zig/fanout.zig, the function the kernel's fanout program computes) bit for bit, or a packet
// would reach a worker without its rule. Also: how evenly it spreads consecutive groups.
// Needs the native library (zig-out/lib/libmcrelay.so, built by `bun run build`).
import { describe, expect, test } from "bun:test";
import { fanoutHashNative } from "../../src/native/lib.ts";
import { flowHash, flowHash6, workerSlot } from "../../src/rules/flow-hash.ts";
import { parseIp } from "../../src/base/address.ts";

/** A small deterministic PRNG (mulberry32), so a failure names inputs that can be replayed. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function ipv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff].join(".");
}

describe("flow hash", () => {
  test("a known value: flowHash(239.1.1.1, 5000) is 0xff7e8ac2 in TypeScript and natively", () => {
    expect(flowHash(0xef010101, 5000)).toBe(0xff7e8ac2);
    expect(fanoutHashNative(0xef010101, 5000)).toBe(0xff7e8ac2);
  });

  test("TypeScript and native hashes agree on 200,000 random (address, port) pairs and on the edges", () => {
    const next = prng(0x5eed1234);
    const cases: [number, number][] = [
      [0, 0],
      [0xffffffff, 0xffff],
      [0xffffffff, 0],
      [0, 0xffff],
      [0xe0000000, 1],
      [0xefffffff, 65535],
      [0x80000000, 0x8000],
    ];
    for (let i = 0; i < 200_000; i++) cases.push([next(), next() & 0xffff]);
    const mismatches: string[] = [];
    for (const [dst, port] of cases) {
      const ts = flowHash(dst, port);
      const native = fanoutHashNative(dst, port);
      // Both must be unsigned 32-bit values, not merely equal modulo 2^32.
      if (ts !== native || ts < 0 || ts > 0xffffffff || !Number.isInteger(ts)) {
        mismatches.push(`${ipv4(dst)}:${port}: ts 0x${ts.toString(16)} native 0x${native.toString(16)}`);
        if (mismatches.length >= 10) break;
      }
    }
    expect(mismatches).toEqual([]);
  });

  test("workerSlot of a group string is the native hash of its address modulo the worker count", () => {
    const next = prng(0xabcdef01);
    for (let i = 0; i < 20_000; i++) {
      // Multicast groups 224.0.0.0/4.
      const dst = (0xe0000000 | (next() & 0x0fffffff)) >>> 0;
      const port = 1 + (next() % 65535);
      const members = 1 + (next() % 64);
      const want = members <= 1 ? 0 : fanoutHashNative(dst, port) % members;
      const got = workerSlot(ipv4(dst), port, members);
      if (got !== want) throw new Error(`${ipv4(dst)}:${port} over ${members}: workerSlot ${got}, native ${want}`);
    }
  });

  test("IPv6: a known value (ff3e::1 is 0x95530b31, as in zig/fanout.zig) and the group alone decides the worker", () => {
    expect(flowHash6(parseIp("ff3e::1")!.bytes)).toBe(0x95530b31);
    // The fold of the address words, hashed natively with port 0.
    const next = prng(0x6a6a);
    for (let i = 0; i < 2000; i++) {
      const bytes = new Uint8Array(16).map(() => next() & 0xff);
      bytes[0] = 0xff;
      let fold = 0;
      for (let w = 0; w < 16; w += 4) fold ^= (bytes[w]! << 24) | (bytes[w + 1]! << 16) | (bytes[w + 2]! << 8) | bytes[w + 3]!;
      expect(flowHash6(bytes)).toBe(fanoutHashNative(fold >>> 0, 0));
    }
    const group = "ff3e::1:2";
    const slots = new Set([5000, 5001, 6000, 65535].map((port) => workerSlot(group, port, 4)));
    expect(slots.size).toBe(1);
    expect(workerSlot(group, 5000, 4)).toBe(flowHash6(parseIp(group)!.bytes) % 4);
  });

  test.each([2, 3, 4, 8])("4,096 consecutive groups (239.1.0.0-239.1.15.255, port 5000) over %d workers are within ±15 percent of equal", (members) => {
    const counts = new Array<number>(members).fill(0);
    for (let i = 0; i < 4096; i++) counts[workerSlot(ipv4((0xef010000 + i) >>> 0), 5000, members)]! += 1;
    const equal = 4096 / members;
    const worst = Math.max(...counts.map((n) => Math.abs(n - equal) / equal));
    expect(counts.reduce((a, b) => a + b, 0)).toBe(4096);
    if (worst > 0.15) throw new Error(`over ${members} workers: ${JSON.stringify(counts)} (worst ${(worst * 100).toFixed(1)}% from ${equal})`);
  });

  test.each([2, 3, 4, 8])("4,096 random groups with random ports over %d workers are within ±15 percent of equal", (members) => {
    const next = prng(0x1000 + members);
    const counts = new Array<number>(members).fill(0);
    for (let i = 0; i < 4096; i++) {
      const dst = (0xe0000000 | (next() & 0x0fffffff)) >>> 0;
      counts[flowHash(dst, 1 + (next() % 65535)) % members]! += 1;
    }
    const equal = 4096 / members;
    const worst = Math.max(...counts.map((n) => Math.abs(n - equal) / equal));
    if (worst > 0.15) throw new Error(`over ${members} workers: ${JSON.stringify(counts)} (worst ${(worst * 100).toFixed(1)}% from ${equal})`);
  });
});
