// The supervisor's reading of a worker's trace ring (src/supervisor/trace-ring.ts) and the
// session over several workers (src/supervisor/tracer.ts), on plain memory laid out as
// zig/dataplane/trace.zig lays it out. The worker can write every byte of that memory: what it
// writes there must never throw in the supervisor nor make it read outside a record.
import { afterEach, describe, expect, test } from "bun:test";
import { ruleFromSpec } from "../../src/config/rule-spec.ts";
import type { Rule } from "../../src/rules/rule.ts";
import { armedFor, armedGroup, drain, RECORD_BYTES, RECORDS_MAX, REGION_BYTES, TRACE_LAYOUT_VERSION, TRACE_MAGIC } from "../../src/supervisor/trace-ring.ts";
import { Tracer } from "../../src/supervisor/tracer.ts";

const HEADER_BYTES = 4096;
const H = { magic: 0, version: 4, recordBytes: 8, recordsMax: 12, enabled: 16, ruleId: 24, group: 32, head: 48, tail: 56 };
const R = { time: 0, ruleId: 8, dst: 32, dstPort: 50, capturedLen: 60, vlan: 64, verdict: 68, outputsRecorded: 70, vlanTci: 76, vlanTpid: 78 };

/** A region as a worker's dataplane initialises it (Trace.init). */
function region(): Uint8Array {
  const mem = new Uint8Array(REGION_BYTES);
  const d = new DataView(mem.buffer);
  d.setUint32(H.magic, TRACE_MAGIC, true);
  d.setUint32(H.version, TRACE_LAYOUT_VERSION, true);
  d.setUint32(H.recordBytes, RECORD_BYTES, true);
  d.setUint32(H.recordsMax, RECORDS_MAX, true);
  return mem;
}

/** Publishes `n` records as the dataplane does (slot by slot, then head). */
function publish(mem: Uint8Array, n: number, o: { ruleId?: bigint; timeNs?: bigint; verdict?: number } = {}): void {
  const d = new DataView(mem.buffer);
  let head = d.getBigUint64(H.head, true);
  for (let i = 0; i < n; i++) {
    const at = HEADER_BYTES + Number(head % BigInt(RECORDS_MAX)) * RECORD_BYTES;
    mem.fill(0, at, at + RECORD_BYTES);
    d.setBigUint64(at + R.time, (o.timeNs ?? 1_764_000_000_000_000_000n) + head * 1000n, true);
    d.setBigUint64(at + R.ruleId, o.ruleId ?? 0n, true);
    d.setUint8(at + R.verdict, o.verdict ?? 1);
    d.setUint16(at + R.vlan, 0xffff, true);
    mem.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 239, 1, 1, 1], at + R.dst);
    d.setUint16(at + R.dstPort, 5000, true);
    head += 1n;
  }
  d.setBigUint64(H.head, head, true);
}

function rule(name: string, id: bigint, from: string): Rule {
  const built = ruleFromSpec({ name, from, to: ["239.9.9.9:6000@eth1"] }, id);
  if (!built.ok) throw new Error(built.problems.join("; "));
  return built.rule;
}

describe("trace ring read by the supervisor", () => {
  test("records are read oldest first; a capture length past the record is cut to it; outputs at most 4", () => {
    const mem = region();
    publish(mem, 3);
    const d = new DataView(mem.buffer);
    const first = HEADER_BYTES;
    d.setUint32(first + R.capturedLen, 0xffff_ffff, true);
    d.setUint8(first + R.outputsRecorded, 255);
    d.setUint16(first + R.vlanTci, 0xb064, true);
    d.setUint16(first + R.vlanTpid, 0x88a8, true);
    const got = drain(mem, 100);
    expect(got.corrupt).toBeNull();
    expect(got.records.length).toBe(3);
    expect(got.records[0]!.frame!.length).toBe(RECORD_BYTES - 128);
    expect(got.records[0]!.outputs.length).toBe(4);
    expect(got.records[0]!.tag).toEqual({ tpid: 0x88a8, tci: 0xb064 });
    expect(got.records[1]!.tag).toBeNull();
    expect(got.records.map((r) => r.timeNs)).toEqual([1_764_000_000_000_000_000n, 1_764_000_000_000_001_000n, 1_764_000_000_000_002_000n]);
    expect(drain(mem, 100).records.length).toBe(0);
  });

  test("nonsense a worker wrote in the header (records_max 0, a head far ahead or behind) is a corrupt ring: dropped and said, never thrown", () => {
    const zeroMax = region();
    publish(zeroMax, 5);
    new DataView(zeroMax.buffer).setUint32(H.recordsMax, 0, true);
    const a = drain(zeroMax, 100);
    expect(a.records).toEqual([]);
    expect(a.corrupt).toContain("0 records");

    const farAhead = region();
    publish(farAhead, 5);
    new DataView(farAhead.buffer).setBigUint64(H.head, 1n << 62n, true);
    const b = drain(farAhead, 100);
    expect(b.records).toEqual([]);
    expect(b.corrupt).toContain("apart");
    // Skipped to the head: the next records the worker publishes are read again.
    expect(new DataView(farAhead.buffer).getBigUint64(H.tail, true)).toBe(1n << 62n);
    publish(farAhead, 2);
    expect(drain(farAhead, 100)).toMatchObject({ corrupt: null });

    const behind = region();
    publish(behind, 5);
    new DataView(behind.buffer).setBigUint64(H.tail, 9n, true);
    expect(drain(behind, 100).corrupt).toContain("reversed");
  });
});

describe("trace sessions over several workers", () => {
  let tracer: Tracer | undefined;
  afterEach(() => tracer?.close());

  test("a read shares its budget between workers: a busy first worker does not starve the second", () => {
    const cam = rule("cam", 7n, "239.1.1.1:5000@eth0");
    const mems = [region(), region()];
    tracer = new Tracer({ find: () => cam, memories: () => mems });
    const started = tracer.start("cam", true);
    publish(mems[0]!, 400, { ruleId: 7n, verdict: 0 });
    publish(mems[1]!, 40, { ruleId: 7n, verdict: 0, timeNs: 1_764_000_000_500_000_000n });
    const read = tracer.read(started.session);
    // 256 records a capture read: the second worker's 40 all, the first worker the rest.
    expect(read.records.length).toBe(256);
    expect(read.records.filter((r) => r.time_ns.startsWith("17640000005")).length).toBe(40);
  });

  test("a record names the session's rule only when it carries that rule's id", () => {
    const cam = rule("cam", 7n, "239.1.1.1:5000@eth0");
    const mem = region();
    tracer = new Tracer({ find: () => cam, memories: () => [mem] });
    const started = tracer.start("cam", false);
    publish(mem, 1, { ruleId: 7n, verdict: 0 });
    publish(mem, 1, { ruleId: 99n, verdict: 0 });
    const recs = tracer.read(started.session).records;
    expect(recs.map((r) => r.rule)).toEqual(["cam", null]);
  });

  test("a rule replaced with another group (add --replace keeps its id) is traced on its new group", () => {
    let current = rule("cam", 7n, "239.1.1.1:5000@eth0");
    const mem = region();
    tracer = new Tracer({ find: () => current, memories: () => [mem] });
    const started = tracer.start("cam", false);
    expect(armedFor(mem)).toBe(7n);
    expect([...armedGroup(mem).subarray(12)]).toEqual([239, 1, 1, 1]);
    publish(mem, 3, { ruleId: 7n, verdict: 0 });
    current = rule("cam", 7n, "239.5.5.5:5000@eth0");
    // What was published under the old group is still handed over, then the new group is armed.
    expect(tracer.read(started.session).records.length).toBe(3);
    expect(armedFor(mem)).toBe(7n);
    expect([...armedGroup(mem).subarray(12)]).toEqual([239, 5, 5, 5]);
  });
});
