// The supervisor's side of a worker's trace ring (zig/dataplane/trace.zig): arm it for one
// rule, read what the dataplane published, disarm it. Plain reads and writes of the shared
// memory, no call into the worker. Offsets mirror trace.zig's extern structs (asserted there).
// The worker can write every byte of this memory: nothing read from it decides where or how
// much is read (the geometry is ours, from the ABI constants), and nonsense in it (a head
// behind the tail or too far ahead, a foreign layout) is a corrupt ring whose records are
// dropped and counted, never an exception in the supervisor.
import { LIMITS, OUTPUT_COUNTERS, PARSE_DROPS, SEND_ERROR_NAMES } from "../native/abi.ts";

export const TRACE_MAGIC = 0x4d435452;
/** trace.zig's layout_version: 2 records each frame's own receive time and its whole metadata tag. */
export const TRACE_LAYOUT_VERSION = 2;
const H = { magic: 0, version: 4, recordBytes: 8, recordsMax: 12, enabled: 16, flags: 20, ruleId: 24, group: 32, head: 48, tail: 56, overflow: 64 } as const;
const R = {
  time: 0, ruleId: 8, src: 16, dst: 32, srcPort: 48, dstPort: 50, payloadLen: 52, wireLen: 56, capturedLen: 60, vlan: 64, ttl: 66, tos: 67,
  verdict: 68, dropReason: 69, outputsRecorded: 70, outputsTotal: 71, ifindex: 72, vlanTci: 76, vlanTpid: 78, outputs: 80,
} as const;
const RECORD_HEAD_BYTES = 128;
const HEADER_BYTES = 4096;
/** The ring's geometry as the dataplane was built with it (constants.zig), not as its header says. */
export const RECORD_BYTES = LIMITS.traceRecordBytes;
export const RECORDS_MAX = LIMITS.traceRecordsMax;
const OUTPUTS_MAX = LIMITS.traceRecordOutputsMax;
const CAPTURE_BYTES_MAX = RECORD_BYTES - RECORD_HEAD_BYTES;
/** Bytes of a whole ring region: a smaller view is never read. */
export const REGION_BYTES = HEADER_BYTES + RECORDS_MAX * RECORD_BYTES;
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
  /** The tag the kernel moved out of `frame` into the ring's metadata, whole, else null. */
  tag: { tpid: number; tci: number } | null;
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

/** What one drain took: the records, and why the rest was dropped when the ring made no sense. */
export interface Drained {
  records: RawRecord[];
  /** Set when the ring was corrupt: what was wrong; its unread records were dropped. */
  corrupt: string | null;
}

function view(mem: Uint8Array): DataView {
  return new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
}

/** Does the worker's region hold an initialised ring (the worker mapped it)? */
export function ready(mem: Uint8Array): boolean {
  if (mem.byteLength < REGION_BYTES || mem.byteOffset % 8 !== 0) return false;
  return view(mem).getUint32(H.magic, true) === TRACE_MAGIC;
}

/** What is wrong with the header's own description of the ring, if anything. */
function layoutProblem(d: DataView): string | null {
  const version = d.getUint32(H.version, true);
  const recordBytes = d.getUint32(H.recordBytes, true);
  const recordsMax = d.getUint32(H.recordsMax, true);
  if (version === TRACE_LAYOUT_VERSION && recordBytes === RECORD_BYTES && recordsMax === RECORDS_MAX) return null;
  return `layout ${version} with ${recordsMax} records of ${recordBytes} bytes, not ${TRACE_LAYOUT_VERSION} with ${RECORDS_MAX} of ${RECORD_BYTES}`;
}

export function armedFor(mem: Uint8Array): bigint | null {
  const d = view(mem);
  return d.getUint32(H.enabled, true) ? d.getBigUint64(H.ruleId, true) : null;
}

/** The group the ring is armed for (16 bytes, v4-mapped for IPv4). */
export function armedGroup(mem: Uint8Array): Uint8Array {
  return mem.slice(H.group, H.group + 16);
}

/** `head`, read with acquire semantics: the records before it are complete (the dataplane publishes with a release store). */
function loadHead(mem: Uint8Array): bigint {
  return Atomics.load(new BigUint64Array(mem.buffer, mem.byteOffset + H.head, 1), 0);
}

/** Arms the ring for a rule: older records are skipped, the filter is written, then `enabled`. */
export function arm(mem: Uint8Array, o: { ruleId: bigint; group: Uint8Array; capture: boolean; allUnmatched?: boolean }): void {
  const d = view(mem);
  d.setUint32(H.enabled, 0, true);
  d.setBigUint64(H.tail, loadHead(mem), true);
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

function recordAt(mem: Uint8Array, d: DataView, at: number): RawRecord {
  const verdict = VERDICTS[d.getUint8(at + R.verdict)] ?? "parse_drop";
  const vlan = d.getUint16(at + R.vlan, true);
  const tpid = d.getUint16(at + R.vlanTpid, true);
  const outputs: RawRecord["outputs"] = [];
  const recorded = Math.min(d.getUint8(at + R.outputsRecorded), OUTPUTS_MAX);
  for (let i = 0; i < recorded; i++) {
    outputs.push({ index: d.getUint16(at + R.outputs + i * 4, true), result: resultName(d.getUint8(at + R.outputs + i * 4 + 2)) });
  }
  // Never past the record: a captured length larger than a record holds is cut to it.
  const captured = Math.min(d.getUint32(at + R.capturedLen, true), CAPTURE_BYTES_MAX);
  return {
    timeNs: d.getBigUint64(at + R.time, true),
    ruleId: d.getBigUint64(at + R.ruleId, true),
    src: mem.slice(at + R.src, at + R.src + 16),
    dst: mem.slice(at + R.dst, at + R.dst + 16),
    srcPort: d.getUint16(at + R.srcPort, true),
    dstPort: d.getUint16(at + R.dstPort, true),
    payloadLen: d.getUint32(at + R.payloadLen, true),
    wireLen: d.getUint32(at + R.wireLen, true),
    vlan: vlan === 0xffff ? null : vlan & 0x0fff,
    tag: tpid === 0 ? null : { tpid, tci: d.getUint16(at + R.vlanTci, true) },
    ttl: d.getUint8(at + R.ttl),
    tos: d.getUint8(at + R.tos),
    verdict,
    reason: verdict === "parse_drop" ? (PARSE_DROPS[d.getUint8(at + R.dropReason)] ?? `reason ${d.getUint8(at + R.dropReason)}`) : null,
    outputsTotal: d.getUint8(at + R.outputsTotal),
    outputs,
    ifindex: d.getUint32(at + R.ifindex, true),
    frame: captured ? mem.slice(at + RECORD_HEAD_BYTES, at + RECORD_HEAD_BYTES + captured) : null,
  };
}

/**
 * Takes up to `max` published records, oldest first, and frees their slots. A ring whose
 * counters make no sense (head behind tail, or more than the ring holds ahead of it) is
 * skipped to its head: its records are dropped and `corrupt` says why.
 */
export function drain(mem: Uint8Array, max: number): Drained {
  if (!ready(mem)) return { records: [], corrupt: null };
  const d = view(mem);
  const head = loadHead(mem);
  let tail = d.getBigUint64(H.tail, true);
  const problem = layoutProblem(d) ?? (head < tail || head - tail > BigInt(RECORDS_MAX) ? `head ${head} and tail ${tail}: reversed, or more than ${RECORDS_MAX} records apart` : null);
  if (problem) {
    d.setBigUint64(H.tail, head, true);
    return { records: [], corrupt: problem };
  }
  const records: RawRecord[] = [];
  while (tail < head && records.length < max) {
    records.push(recordAt(mem, d, HEADER_BYTES + Number(tail % BigInt(RECORDS_MAX)) * RECORD_BYTES));
    tail += 1n;
  }
  d.setBigUint64(H.tail, tail, true);
  return { records, corrupt: null };
}
