// The supervisor's side of a worker's trace ring (zig/dataplane/trace.zig): arm it for one
// rule, read what the dataplane published, disarm it. Plain reads and writes of the shared
// memory, no call into the worker. Offsets mirror trace.zig's extern structs (asserted there).
import { OUTPUT_COUNTERS, PARSE_DROPS, SEND_ERROR_NAMES } from "../native/abi.ts";

export const TRACE_MAGIC = 0x4d435452;
const H = { magic: 0, version: 4, recordBytes: 8, recordsMax: 12, enabled: 16, flags: 20, ruleId: 24, group: 32, head: 48, tail: 56, overflow: 64 } as const;
const R = {
  time: 0, ruleId: 8, src: 16, dst: 32, srcPort: 48, dstPort: 50, payloadLen: 52, wireLen: 56, capturedLen: 60, vlan: 64, ttl: 66, tos: 67,
  verdict: 68, dropReason: 69, outputsRecorded: 70, outputsTotal: 71, ifindex: 72, outputs: 80,
} as const;
const RECORD_HEAD_BYTES = 128;
const HEADER_BYTES = 4096;
export const FLAG_CAPTURE = 1;
export const FLAG_ALL_UNMATCHED = 2;

export const VERDICTS = ["matched", "no_match", "source_mismatch", "parse_drop", "vlan_mismatch", "own_source", "martian", "loop", "cap"] as const;
export type Verdict = (typeof VERDICTS)[number];

export interface RawRecord {
  timeNs: bigint;
  ruleId: bigint;
  src: Uint8Array;
  dst: Uint8Array;
  srcPort: number;
  dstPort: number;
  payloadLen: number;
  wireLen: number;
  /** 802.1Q VID, null when untagged. */
  vlan: number | null;
  ttl: number;
  tos: number;
  verdict: Verdict;
  /** Parse drop reason (verdict parse_drop). */
  reason: string | null;
  outputsTotal: number;
  /** Per output (index among the rule's outputs): "sent", an errno name, or "unknown". */
  outputs: { index: number; result: string }[];
  ifindex: number;
  /** The frame as captured (capture mode), else null. */
  frame: Uint8Array | null;
}

function view(mem: Uint8Array): DataView {
  return new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
}

/** Does the worker's region hold an initialised ring (the worker mapped it)? */
export function ready(mem: Uint8Array): boolean {
  return view(mem).getUint32(H.magic, true) === TRACE_MAGIC;
}

export function armedFor(mem: Uint8Array): bigint | null {
  const d = view(mem);
  return d.getUint32(H.enabled, true) ? d.getBigUint64(H.ruleId, true) : null;
}

/** Arms the ring for a rule: older records are skipped, the filter is written, then `enabled`. */
export function arm(mem: Uint8Array, o: { ruleId: bigint; group: Uint8Array; capture: boolean; allUnmatched?: boolean }): void {
  const d = view(mem);
  d.setUint32(H.enabled, 0, true);
  d.setBigUint64(H.tail, d.getBigUint64(H.head, true), true);
  d.setUint32(H.flags, (o.capture ? FLAG_CAPTURE : 0) | (o.allUnmatched ? FLAG_ALL_UNMATCHED : 0), true);
  d.setBigUint64(H.ruleId, o.ruleId, true);
  mem.set(o.group, H.group);
  d.setUint32(H.enabled, 1, true);
}

export function disarm(mem: Uint8Array): void {
  view(mem).setUint32(H.enabled, 0, true);
}

export function overflow(mem: Uint8Array): number {
  return Number(view(mem).getBigUint64(H.overflow, true));
}

function resultName(code: number): string {
  if (code === 0) return "sent";
  if (code >= 254) return "unknown";
  const bucket = OUTPUT_COUNTERS[code];
  return (bucket && SEND_ERROR_NAMES[bucket]) ?? `error ${code}`;
}

/** Takes up to `max` published records, oldest first, and frees their slots. */
export function drain(mem: Uint8Array, max: number): RawRecord[] {
  if (!ready(mem)) return [];
  const d = view(mem);
  const recordBytes = d.getUint32(H.recordBytes, true);
  const recordsMax = d.getUint32(H.recordsMax, true);
  const head = d.getBigUint64(H.head, true);
  let tail = d.getBigUint64(H.tail, true);
  const out: RawRecord[] = [];
  while (tail < head && out.length < max) {
    const at = HEADER_BYTES + Number(tail % BigInt(recordsMax)) * recordBytes;
    const verdict = VERDICTS[d.getUint8(at + R.verdict)] ?? "parse_drop";
    const vlan = d.getUint16(at + R.vlan, true);
    const outputs: RawRecord["outputs"] = [];
    const recorded = d.getUint8(at + R.outputsRecorded);
    for (let i = 0; i < recorded; i++) {
      outputs.push({ index: d.getUint16(at + R.outputs + i * 4, true), result: resultName(d.getUint8(at + R.outputs + i * 4 + 2)) });
    }
    const captured = d.getUint32(at + R.capturedLen, true);
    out.push({
      timeNs: d.getBigUint64(at + R.time, true),
      ruleId: d.getBigUint64(at + R.ruleId, true),
      src: mem.slice(at + R.src, at + R.src + 16),
      dst: mem.slice(at + R.dst, at + R.dst + 16),
      srcPort: d.getUint16(at + R.srcPort, true),
      dstPort: d.getUint16(at + R.dstPort, true),
      payloadLen: d.getUint32(at + R.payloadLen, true),
      wireLen: d.getUint32(at + R.wireLen, true),
      vlan: vlan === 0xffff ? null : vlan,
      ttl: d.getUint8(at + R.ttl),
      tos: d.getUint8(at + R.tos),
      verdict,
      reason: verdict === "parse_drop" ? (PARSE_DROPS[d.getUint8(at + R.dropReason)] ?? `reason ${d.getUint8(at + R.dropReason)}`) : null,
      outputsTotal: d.getUint8(at + R.outputsTotal),
      outputs,
      ifindex: d.getUint32(at + R.ifindex, true),
      frame: captured ? mem.slice(at + RECORD_HEAD_BYTES, at + RECORD_HEAD_BYTES + captured) : null,
    });
    tail += 1n;
  }
  d.setBigUint64(H.tail, tail, true);
  return out;
}
