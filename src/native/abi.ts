// The ABI as TypeScript uses it: encoders and decoders of the structures that cross the FFI
// boundary, over the layout generated from the Zig types (./abi.generated.ts, written by
// `zig build` from zig/abi_mirror.zig). No offset, counter name or limit is written here by
// hand: each field is looked up by name in LAYOUT, and its size is checked against what the
// encoder writes once, when this module loads. `checkDescription` compares the library's own
// description with the generated one, line by line, right after the library is loaded.
import {
  ABI_DESCRIPTION,
  DSCP_COPY,
  GEN_MODE_RAW,
  GEN_MODE_UDP,
  LAYOUT,
  NL_EVENT_KINDS,
  OUTPUT_COUNTERS,
  OUTPUT_FLAG_GSO_OFF,
  PARSE_DROPS,
  RULE_COUNTERS,
  RULE_FLAG_NO_LOOP_GUARD,
  RULE_FLAG_SOURCE_FILTER,
  TABLE_MAGIC,
  WORKER_COUNTERS,
} from "./abi.generated.ts";

export * from "./abi.generated.ts";

export type ParseDrop = (typeof PARSE_DROPS)[number];
export type WorkerCounter = (typeof WORKER_COUNTERS)[number];
export type OutputCounter = (typeof OUTPUT_COUNTERS)[number];
export type RuleCounter = (typeof RULE_COUNTERS)[number];
/** Per-rule drop counters (the rule counters after id, packets, bytes). */
export const RULE_DROPS = ["source_mismatch", "own_source", "loop_drops", "cap_drops"] as const satisfies readonly RuleCounter[];
export type RuleDrop = (typeof RULE_DROPS)[number];

type StructName = keyof typeof LAYOUT;

/** Byte sizes of the structures, by lower-camel name (SIZE.ruleDesc). */
export const SIZE = Object.fromEntries(Object.entries(LAYOUT).map(([name, s]) => [name[0]!.toLowerCase() + name.slice(1), s.size])) as {
  [K in StructName as Uncapitalize<K>]: (typeof LAYOUT)[K]["size"];
};

/**
 * Offset of a field, checked to be `bytes` wide: a field that changed size in Zig fails here,
 * when the module loads, instead of being half-written.
 */
function field<S extends StructName>(struct: S, name: keyof (typeof LAYOUT)[S]["fields"] & string, bytes: number): number {
  const f = (LAYOUT[struct].fields as Record<string, { offset: number; size: number }>)[name];
  if (!f) throw new Error(`abi mirror: ${struct} has no field ${name}`);
  if (f.size !== bytes) throw new Error(`abi mirror: ${struct}.${name} is ${f.size} bytes, the TypeScript side handles ${bytes}`);
  return f.offset;
}

const T = {
  magic: field("TableHeader", "magic", 4),
  ruleCount: field("TableHeader", "rule_count", 4),
  outputCount: field("TableHeader", "output_count", 4),
  generation: field("TableHeader", "generation", 4),
};
const R = {
  id: field("RuleDesc", "id", 8),
  group: field("RuleDesc", "group", 16),
  source: field("RuleDesc", "source", 16),
  port: field("RuleDesc", "port", 2),
  flags: field("RuleDesc", "flags", 2),
  outputFirst: field("RuleDesc", "output_first", 2),
  outputCount: field("RuleDesc", "output_count", 2),
  vlanId: field("RuleDesc", "vlan_id", 2),
  localAddr4: field("RuleDesc", "local_addr4", 4),
  maxPps: field("RuleDesc", "max_pps", 4),
  localAddr6: field("RuleDesc", "local_addr6", 32),
};
const O = {
  id: field("OutputDesc", "id", 8),
  addr: field("OutputDesc", "addr", 16),
  source: field("OutputDesc", "source", 16),
  port: field("OutputDesc", "port", 2),
  ttl: field("OutputDesc", "ttl", 1),
  dscp: field("OutputDesc", "dscp", 1),
  ifindex: field("OutputDesc", "ifindex", 4),
  flags: field("OutputDesc", "flags", 4),
};
const G = {
  blockBytes: field("RingGeometry", "block_bytes", 4),
  blockCount: field("RingGeometry", "block_count", 4),
  frameBytes: field("RingGeometry", "frame_bytes", 4),
  frameCount: field("RingGeometry", "frame_count", 4),
};
const P = {
  ifindex: field("PacketSetup", "ifindex", 4),
  mtu: field("PacketSetup", "mtu", 4),
  ringBytes: field("PacketSetup", "ring_bytes", 4),
  fanoutId: field("PacketSetup", "fanout_id", 2),
};
const L = {
  ifindex: field("LinkInfo", "ifindex", 4),
  mtu: field("LinkInfo", "mtu", 4),
  flags: field("LinkInfo", "flags", 4),
  addr4: field("LinkInfo", "addr4", 16),
};
const N = {
  kind: field("NlEvent", "kind", 1),
  family: field("NlEvent", "family", 1),
  prefixlen: field("NlEvent", "prefixlen", 1),
  ifindex: field("NlEvent", "ifindex", 4),
  flags: field("NlEvent", "flags", 4),
  mtu: field("NlEvent", "mtu", 4),
  seq: field("NlEvent", "seq", 4),
  addr: field("NlEvent", "addr", 16),
  name: field("NlEvent", "name", 16),
};
const GC = {
  addr: field("GenConfig", "addr", 16),
  port: field("GenConfig", "port", 2),
  ttl: field("GenConfig", "ttl", 1),
  mode: field("GenConfig", "mode", 1),
  ifindex: field("GenConfig", "ifindex", 4),
  size: field("GenConfig", "size", 4),
  streamId: field("GenConfig", "stream_id", 4),
  ratePps: field("GenConfig", "rate_pps", 8),
  count: field("GenConfig", "count", 8),
  durationNs: field("GenConfig", "duration_ns", 8),
};
const SC = {
  addr: field("SinkConfig", "addr", 16),
  port: field("SinkConfig", "port", 2),
  gro: field("SinkConfig", "gro", 1),
  ifindex: field("SinkConfig", "ifindex", 4),
  rcvbufBytes: field("SinkConfig", "rcvbuf_bytes", 4),
};

/** Send-error buckets of OUTPUT_COUNTERS as users read them (errno names). */
export const SEND_ERROR_NAMES: Partial<Record<OutputCounter, string>> = {
  err_again: "EAGAIN",
  err_nobufs: "ENOBUFS",
  err_netunreach: "ENETUNREACH",
  err_hostunreach: "EHOSTUNREACH",
  err_addrnotavail: "EADDRNOTAVAIL",
  err_msgsize: "EMSGSIZE",
  err_perm: "EPERM",
  err_connrefused: "ECONNREFUSED",
  err_inval: "EINVAL",
  err_other: "other",
};

/**
 * The differences between the library's description of its ABI and the mirror's, one line per
 * fact that differs ("RuleDesc.port: library offset 42, 2 bytes; mirror offset 40, 2 bytes").
 * Empty when they agree.
 */
export function describeDifferences(library: string, mirror: string = ABI_DESCRIPTION): string[] {
  const parse = (text: string) =>
    new Map(
      text
        .split("\n")
        .filter((l) => l.includes(" = "))
        .map((l) => [l.slice(0, l.indexOf(" = ")), l.slice(l.indexOf(" = ") + 3)] as const),
    );
  const lib = parse(library);
  const ts = parse(mirror);
  const out: string[] = [];
  for (const [key, want] of ts) {
    const got = lib.get(key);
    if (got === undefined) out.push(`${key}: mirror ${want}; library has no such entry`);
    else if (got !== want) out.push(`${key}: library ${got}; mirror ${want}`);
  }
  for (const [key, got] of lib) if (!ts.has(key)) out.push(`${key}: library ${got}; mirror has no such entry`);
  return out;
}

// Encoders and decoders.

/** 16-byte address; IPv4 is stored v4-mapped. */
export type Addr16 = Uint8Array;

export interface TableRule {
  id: bigint;
  group: Addr16;
  source: Addr16 | null;
  port: number;
  /** 802.1Q VID 1..4094, or 0: untagged frames only. */
  vlan: number;
  /** The input interface's IPv4 address (4 bytes), or null. */
  local: Uint8Array | null;
  /** Datagrams per second at most; 0 = no cap. */
  maxPps: number;
  loopGuard: boolean;
  /** IPv6 rules: up to two of the input interface's IPv6 addresses (16 bytes each). */
  local6: Addr16[];
  outputs: TableOutput[];
}

export interface TableOutput {
  id: bigint;
  addr: Addr16;
  /** Source address to send from; null lets the kernel choose. */
  source: Addr16 | null;
  port: number;
  ttl: number;
  /** Fixed DSCP, or null to copy the input's. */
  dscp: number | null;
  gso: boolean;
  ifindex: number;
}

export function encodeTable(rules: readonly TableRule[], generation: number): Uint8Array {
  const outputCount = rules.reduce((n, r) => n + r.outputs.length, 0);
  const buf = new Uint8Array(SIZE.tableHeader + rules.length * SIZE.ruleDesc + outputCount * SIZE.outputDesc);
  const view = new DataView(buf.buffer);
  view.setUint32(T.magic, TABLE_MAGIC, true);
  view.setUint32(T.ruleCount, rules.length, true);
  view.setUint32(T.outputCount, outputCount, true);
  view.setUint32(T.generation, generation >>> 0, true);
  let outputIndex = 0;
  const outputsStart = SIZE.tableHeader + rules.length * SIZE.ruleDesc;
  rules.forEach((rule, i) => {
    const at = SIZE.tableHeader + i * SIZE.ruleDesc;
    view.setBigUint64(at + R.id, rule.id, true);
    buf.set(rule.group, at + R.group);
    if (rule.source) buf.set(rule.source, at + R.source);
    view.setUint16(at + R.port, rule.port, true);
    view.setUint16(at + R.flags, (rule.source ? RULE_FLAG_SOURCE_FILTER : 0) | (rule.loopGuard ? 0 : RULE_FLAG_NO_LOOP_GUARD), true);
    view.setUint16(at + R.outputFirst, outputIndex, true);
    view.setUint16(at + R.outputCount, rule.outputs.length, true);
    view.setUint16(at + R.vlanId, rule.vlan, true);
    if (rule.local) buf.set(rule.local, at + R.localAddr4);
    view.setUint32(at + R.maxPps, rule.maxPps, true);
    rule.local6.slice(0, 2).forEach((a, k) => buf.set(a, at + R.localAddr6 + 16 * k));
    for (const out of rule.outputs) {
      const o = outputsStart + outputIndex * SIZE.outputDesc;
      view.setBigUint64(o + O.id, out.id, true);
      buf.set(out.addr, o + O.addr);
      if (out.source) buf.set(out.source, o + O.source);
      view.setUint16(o + O.port, out.port, true);
      view.setUint8(o + O.ttl, out.ttl);
      view.setUint8(o + O.dscp, out.dscp ?? DSCP_COPY);
      view.setUint32(o + O.ifindex, out.ifindex, true);
      view.setUint32(o + O.flags, out.gso ? 0 : OUTPUT_FLAG_GSO_OFF, true);
      outputIndex += 1;
    }
  });
  return buf;
}

export interface RingGeometry {
  blockBytes: number;
  blockCount: number;
  frameBytes: number;
  frameCount: number;
}

export interface PacketSetup {
  ifindex: number;
  mtu: number;
  ringBytes: number;
  /** 0 when one worker serves the interface. */
  fanoutId: number;
}

export function encodePacketSetup(c: PacketSetup): Uint8Array {
  const buf = new Uint8Array(SIZE.packetSetup);
  const v = new DataView(buf.buffer);
  v.setUint32(P.ifindex, c.ifindex, true);
  v.setUint32(P.mtu, c.mtu, true);
  v.setUint32(P.ringBytes, c.ringBytes, true);
  v.setUint16(P.fanoutId, c.fanoutId, true);
  return buf;
}

/** Decodes a RingGeometry the library wrote into `words` (a Uint32Array of its size). */
export function decodeGeometry(words: Uint32Array): RingGeometry {
  const v = new DataView(words.buffer, words.byteOffset, words.byteLength);
  return {
    blockBytes: v.getUint32(G.blockBytes, true),
    blockCount: v.getUint32(G.blockCount, true),
    frameBytes: v.getUint32(G.frameBytes, true),
    frameCount: v.getUint32(G.frameCount, true),
  };
}

/** How the generator sends (abi.gen_mode_*): a UDP socket, or raw frames on a packet socket. */
export const GEN_MODES = { udp: GEN_MODE_UDP, raw: GEN_MODE_RAW } as const;
export type GenMode = keyof typeof GEN_MODES;

export interface GenConfig {
  addr: Addr16;
  port: number;
  ttl: number;
  mode: GenMode;
  ifindex: number;
  size: number;
  streamId: number;
  ratePps: number;
  count: number;
  durationNs: bigint;
}

export function encodeGenConfig(c: GenConfig): Uint8Array {
  const buf = new Uint8Array(SIZE.genConfig);
  const v = new DataView(buf.buffer);
  buf.set(c.addr, GC.addr);
  v.setUint16(GC.port, c.port, true);
  v.setUint8(GC.ttl, c.ttl);
  v.setUint8(GC.mode, GEN_MODES[c.mode]);
  v.setUint32(GC.ifindex, c.ifindex, true);
  v.setUint32(GC.size, c.size, true);
  v.setUint32(GC.streamId, c.streamId >>> 0, true);
  v.setBigUint64(GC.ratePps, BigInt(Math.round(c.ratePps)), true);
  v.setBigUint64(GC.count, BigInt(c.count), true);
  v.setBigUint64(GC.durationNs, c.durationNs, true);
  return buf;
}

export interface SinkConfig {
  addr: Addr16;
  port: number;
  ifindex: number;
  rcvbufBytes: number;
  /** Enable UDP_GRO: a GSO batch arrives as one buffer, split by the sink at its gso_size. */
  gro?: boolean;
}

export function encodeSinkConfig(c: SinkConfig): Uint8Array {
  const buf = new Uint8Array(SIZE.sinkConfig);
  const v = new DataView(buf.buffer);
  buf.set(c.addr, SC.addr);
  v.setUint16(SC.port, c.port, true);
  v.setUint32(SC.ifindex, c.ifindex, true);
  v.setUint32(SC.rcvbufBytes, c.rcvbufBytes, true);
  v.setUint8(SC.gro, c.gro ? 1 : 0);
  return buf;
}

export interface LinkInfo {
  ifindex: number;
  mtu: number;
  flags: number;
  /** Dotted IPv4 address, or null when the link has none. */
  addr4: string | null;
}

export function decodeLinkInfo(buf: Uint8Array): LinkInfo {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  // v4-mapped: ::ffff:a.b.c.d (bytes 10 and 11 are 0xff), the address in the last four.
  const a = buf.subarray(L.addr4 + 12, L.addr4 + 16);
  const hasAddr = buf[L.addr4 + 10] === 0xff;
  return {
    ifindex: v.getUint32(L.ifindex, true),
    mtu: v.getUint32(L.mtu, true),
    flags: v.getUint32(L.flags, true),
    addr4: hasAddr ? `${a[0]}.${a[1]}.${a[2]}.${a[3]}` : null,
  };
}

export type NlEventKind = (typeof NL_EVENT_KINDS)[keyof typeof NL_EVENT_KINDS];

export interface NlEvent {
  kind: NlEventKind;
  ifindex: number;
  flags: number;
  mtu: number;
  seq: number;
  family: 4 | 6 | 0;
  prefixlen: number;
  /** Address text (addr events). */
  addr: string | null;
  /** Interface name (link events). */
  name: string;
}

export function decodeNlEvents(buf: Uint8Array, count: number, decodeAddr: (bytes: Uint8Array) => string): NlEvent[] {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: NlEvent[] = [];
  for (let i = 0; i < count; i++) {
    const at = i * SIZE.nlEvent;
    const kind = NL_EVENT_KINDS[buf[at + N.kind] as keyof typeof NL_EVENT_KINDS];
    if (!kind) continue;
    const family = buf[at + N.family] === 2 ? 4 : buf[at + N.family] === 10 ? 6 : 0;
    const nameBytes = buf.subarray(at + N.name, at + N.name + 16);
    const nul = nameBytes.indexOf(0);
    out.push({
      kind,
      family,
      prefixlen: buf[at + N.prefixlen]!,
      ifindex: v.getUint32(at + N.ifindex, true),
      flags: v.getUint32(at + N.flags, true),
      mtu: v.getUint32(at + N.mtu, true),
      seq: v.getUint32(at + N.seq, true),
      addr: family ? decodeAddr(buf.slice(at + N.addr, at + N.addr + 16)) : null,
      name: new TextDecoder().decode(nameBytes.subarray(0, nul < 0 ? 16 : nul)),
    });
  }
  return out;
}
