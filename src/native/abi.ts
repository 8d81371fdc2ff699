// Mirrors zig/abi.zig and the counter layouts of zig/dataplane/stats.zig and zig/tools/*.
// The native module checks these numbers against the library right after loading it, so a
// drift between the two sides refuses to run instead of misreading memory.

export const ABI_VERSION = 11;

export const TABLE_MAGIC = 0x4d435254;
export const RULE_FLAG_SOURCE_FILTER = 1;
export const RULE_FLAG_NO_LOOP_GUARD = 2;
export const OUTPUT_FLAG_GSO_OFF = 1;
/** OutputDesc.dscp meaning "copy the input packet's DSCP". */
export const DSCP_COPY = 0xff;

export const SIZE = {
  tableHeader: 16,
  ruleDesc: 64,
  outputDesc: 56,
  dpConfig: 32,
  packetSetup: 20,
  ringGeometry: 16,
  linkInfo: 28,
  nlEvent: 64,
  genConfig: 56,
  sinkConfig: 32,
  payloadHeader: 24,
} as const;

export const LIMITS = {
  rulesMax: 1024,
  outputsMax: 2048,
  outputsPerRuleMax: 256,
  sinkStreamsMax: 1024,
  scmFdsMax: 16,
  udpPayloadMax: 65507,
} as const;

export const PARSE_DROPS = [
  "eth_truncated",
  "vlan_truncated",
  "vlan_stacked",
  "not_ip",
  "ipv6_truncated",
  "ipv4_truncated",
  "ipv4_bad_header",
  "ipv4_bad_checksum",
  "ipv4_fragment",
  "not_udp",
  "udp_truncated",
  "udp_bad_length",
  "udp_bad_checksum",
  "ipv6_bad_header",
  "ipv6_fragment",
  "ipv6_jumbogram",
  "ipv6_bad_extension",
] as const;
export type ParseDrop = (typeof PARSE_DROPS)[number];

export const STATS_HEADER_WORDS = 16;
export const STATS_HEADER = [
  "magic",
  "layout_version",
  "worker_words",
  "rule_words",
  "output_words",
  "rules_max",
  "outputs_max",
  "generation",
  "rule_count",
  "output_count",
] as const;

export const WORKER_COUNTERS = [
  "rx_frames",
  "rx_bytes",
  "rx_blocks",
  "rx_truncated",
  "matched",
  "no_match",
  "source_mismatch",
  "kernel_packets",
  "kernel_drops",
  "kernel_freezes",
  "tx_packets",
  "tx_bytes",
  "tx_errors",
  "tx_gso_sends",
  "polls",
  "coalesced",
  "wakeups",
  "run_calls",
  "join_errors",
  "ring_errors",
  "rx_gso_frames",
  "rx_gso_datagrams",
  "vlan_mismatch",
  "otherhost",
  "martian_source",
  "own_source",
  "loop_drops",
  "cap_drops",
] as const;
export type WorkerCounter = (typeof WORKER_COUNTERS)[number];

/** `input_errno` is a state (0, or the errno of the rule's failed join or port hold), not a counter. */
export const RULE_COUNTERS = ["id", "packets", "bytes", "source_mismatch", "own_source", "loop_drops", "cap_drops", "input_errno"] as const;
/** Per-rule drop counters (the rule counters after id, packets, bytes). */
export const RULE_DROPS = ["source_mismatch", "own_source", "loop_drops", "cap_drops"] as const;
export type RuleDrop = (typeof RULE_DROPS)[number];

export const OUTPUT_COUNTERS = [
  "id",
  "packets",
  "bytes",
  "err_again",
  "err_nobufs",
  "err_netunreach",
  "err_hostunreach",
  "err_addrnotavail",
  "err_msgsize",
  "err_perm",
  "err_connrefused",
  "err_inval",
  "err_other",
] as const;
/** Send-error buckets as users read them (errno names). */
export const SEND_ERROR_NAMES: Record<string, string> = {
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

export const STATS_TOTAL_WORDS =
  STATS_HEADER_WORDS +
  WORKER_COUNTERS.length +
  PARSE_DROPS.length +
  LIMITS.rulesMax * RULE_COUNTERS.length +
  LIMITS.outputsMax * OUTPUT_COUNTERS.length;

export const GEN_COUNTERS = ["sent", "bytes", "send_errors", "eagain", "started_ns", "last_ns", "seq_next"] as const;

export const SINK_GLOBAL_COUNTERS = [
  "datagrams",
  "bytes",
  "foreign",
  "streams_overflow",
  "last_rx_ns",
  "first_rx_ns",
] as const;

export const SINK_STREAM_COUNTERS = [
  "stream_id",
  "received",
  "duplicates",
  "reordered",
  "late",
  "bytes",
  "pattern_errors",
  "max_seq",
  "lat_count",
  "lat_sum_ns",
  "lat_max_ns",
  "lat_p50_ns",
  "lat_p99_ns",
  "lat_p999_ns",
  "used",
] as const;

/** The layout words mcr_abi_layout returns, in its order. */
export const EXPECTED_LAYOUT: readonly [string, number][] = [
  ["sizeof TableHeader", SIZE.tableHeader],
  ["sizeof RuleDesc", SIZE.ruleDesc],
  ["sizeof OutputDesc", SIZE.outputDesc],
  ["sizeof DpConfig", SIZE.dpConfig],
  ["sizeof PacketSetup", SIZE.packetSetup],
  ["sizeof RingGeometry", SIZE.ringGeometry],
  ["sizeof LinkInfo", SIZE.linkInfo],
  ["sizeof NlEvent", SIZE.nlEvent],
  ["sizeof GenConfig", SIZE.genConfig],
  ["sizeof SinkConfig", SIZE.sinkConfig],
  ["sizeof PayloadHeader", SIZE.payloadHeader],
  ["stats total words", STATS_TOTAL_WORDS],
  ["stats header words", STATS_HEADER_WORDS],
  ["worker counters", WORKER_COUNTERS.length],
  ["parse drop reasons", PARSE_DROPS.length],
  ["rule counters", RULE_COUNTERS.length],
  ["output counters", OUTPUT_COUNTERS.length],
  ["rules max", LIMITS.rulesMax],
  ["outputs max", LIMITS.outputsMax],
  ["outputs per rule max", LIMITS.outputsPerRuleMax],
  ["gen counters", GEN_COUNTERS.length],
  ["sink global counters", SINK_GLOBAL_COUNTERS.length],
  ["sink stream counters", SINK_STREAM_COUNTERS.length],
  ["sink streams max", LIMITS.sinkStreamsMax],
  ["scm fds max", LIMITS.scmFdsMax],
];

// Encoders for the structures TypeScript writes.

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
  view.setUint32(0, TABLE_MAGIC, true);
  view.setUint32(4, rules.length, true);
  view.setUint32(8, outputCount, true);
  view.setUint32(12, generation >>> 0, true);
  let outputIndex = 0;
  const outputsStart = SIZE.tableHeader + rules.length * SIZE.ruleDesc;
  rules.forEach((rule, i) => {
    const at = SIZE.tableHeader + i * SIZE.ruleDesc;
    view.setBigUint64(at, rule.id, true);
    buf.set(rule.group, at + 8);
    if (rule.source) buf.set(rule.source, at + 24);
    view.setUint16(at + 40, rule.port, true);
    view.setUint16(at + 42, (rule.source ? RULE_FLAG_SOURCE_FILTER : 0) | (rule.loopGuard ? 0 : RULE_FLAG_NO_LOOP_GUARD), true);
    view.setUint16(at + 44, outputIndex, true);
    view.setUint16(at + 46, rule.outputs.length, true);
    view.setUint16(at + 48, rule.vlan, true);
    if (rule.local) buf.set(rule.local, at + 52);
    view.setUint32(at + 56, rule.maxPps, true);
    for (const out of rule.outputs) {
      const o = outputsStart + outputIndex * SIZE.outputDesc;
      view.setBigUint64(o, out.id, true);
      buf.set(out.addr, o + 8);
      if (out.source) buf.set(out.source, o + 24);
      view.setUint16(o + 40, out.port, true);
      view.setUint8(o + 42, out.ttl);
      view.setUint8(o + 43, out.dscp ?? DSCP_COPY);
      view.setUint32(o + 44, out.ifindex, true);
      view.setUint32(o + 48, out.gso ? 0 : OUTPUT_FLAG_GSO_OFF, true);
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

export interface DpConfig {
  packetFd: number;
  wakeFd: number;
  ifindex: number;
  /** Counter memfd from the supervisor, or -1. */
  statsFd: number;
  geometry: RingGeometry;
}

export function encodeDpConfig(c: DpConfig): Uint8Array {
  const buf = new Uint8Array(SIZE.dpConfig);
  const v = new DataView(buf.buffer);
  v.setInt32(0, c.packetFd, true);
  v.setInt32(4, c.wakeFd, true);
  v.setUint32(8, c.ifindex, true);
  v.setInt32(12, c.statsFd, true);
  v.setUint32(16, c.geometry.blockBytes, true);
  v.setUint32(20, c.geometry.blockCount, true);
  v.setUint32(24, c.geometry.frameBytes, true);
  v.setUint32(28, c.geometry.frameCount, true);
  return buf;
}

export interface PacketSetup {
  ifindex: number;
  mtu: number;
  ringBytes: number;
  blockTimeoutMs: number;
  /** 0 when one worker serves the interface. */
  fanoutId: number;
}

export function encodePacketSetup(c: PacketSetup): Uint8Array {
  const buf = new Uint8Array(SIZE.packetSetup);
  const v = new DataView(buf.buffer);
  v.setUint32(0, c.ifindex, true);
  v.setUint32(4, c.mtu, true);
  v.setUint32(8, c.ringBytes, true);
  v.setUint32(12, c.blockTimeoutMs, true);
  v.setUint16(16, c.fanoutId, true);
  return buf;
}

export function decodeGeometry(words: Uint32Array): RingGeometry {
  return { blockBytes: words[0]!, blockCount: words[1]!, frameBytes: words[2]!, frameCount: words[3]! };
}

export interface GenConfig {
  addr: Addr16;
  port: number;
  ttl: number;
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
  buf.set(c.addr, 0);
  v.setUint16(16, c.port, true);
  v.setUint8(18, c.ttl);
  v.setUint32(20, c.ifindex, true);
  v.setUint32(24, c.size, true);
  v.setUint32(28, c.streamId >>> 0, true);
  v.setBigUint64(32, BigInt(Math.round(c.ratePps)), true);
  v.setBigUint64(40, BigInt(c.count), true);
  v.setBigUint64(48, c.durationNs, true);
  return buf;
}

export interface SinkConfig {
  addr: Addr16;
  port: number;
  ifindex: number;
  rcvbufBytes: number;
}

export function encodeSinkConfig(c: SinkConfig): Uint8Array {
  const buf = new Uint8Array(SIZE.sinkConfig);
  const v = new DataView(buf.buffer);
  buf.set(c.addr, 0);
  v.setUint16(16, c.port, true);
  v.setUint32(20, c.ifindex, true);
  v.setUint32(24, c.rcvbufBytes, true);
  return buf;
}

export interface LinkInfo {
  ifindex: number;
  mtu: number;
  flags: number;
  /** Dotted IPv4 address, or null when the link has none. */
  addr4: string | null;
}

export const IFF_UP = 0x1;

export function decodeLinkInfo(buf: Uint8Array): LinkInfo {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const a = buf.subarray(12 + 12, 12 + 16);
  const hasAddr = buf[12 + 10] === 0xff;
  return {
    ifindex: v.getUint32(0, true),
    mtu: v.getUint32(4, true),
    flags: v.getUint32(8, true),
    addr4: hasAddr ? `${a[0]}.${a[1]}.${a[2]}.${a[3]}` : null,
  };
}

export const NL_EVENT_KINDS = { 1: "link_new", 2: "link_del", 3: "addr_new", 4: "addr_del", 5: "dump_done", 6: "overflow", 7: "failed" } as const;
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
    const kind = NL_EVENT_KINDS[buf[at] as keyof typeof NL_EVENT_KINDS];
    if (!kind) continue;
    const family = buf[at + 1] === 2 ? 4 : buf[at + 1] === 10 ? 6 : 0;
    const nameBytes = buf.subarray(at + 36, at + 52);
    const nul = nameBytes.indexOf(0);
    out.push({
      kind,
      family,
      prefixlen: buf[at + 2]!,
      ifindex: v.getUint32(at + 4, true),
      flags: v.getUint32(at + 8, true),
      mtu: v.getUint32(at + 12, true),
      seq: v.getUint32(at + 16, true),
      addr: family ? decodeAddr(buf.slice(at + 20, at + 36)) : null,
      name: new TextDecoder().decode(nameBytes.subarray(0, nul < 0 ? 16 : nul)),
    });
  }
  return out;
}
