// A worker's rule table: the resolved rules the planner hands to the worker pool, and the one
// form they cross the supervisor -> worker hop in: the bytes Zig's table builder reads
// (src/native/abi.ts encodeTable), sent over the worker's socketpair. The worker does not parse
// or re-validate them: the Zig table builder is the one validator on that side. The content hash
// is over those bytes (generation zeroed), so both sides compute it from what is applied.
import { createHash } from "node:crypto";
import { parseIp } from "../base/address.ts";
import { LAYOUT, TABLE_MAGIC, encodeTable, type TableRule } from "../native/abi.ts";

/** One output of a resolved rule. */
export interface WireOutput {
  id: string;
  addr: string;
  port: number;
  ttl: number;
  /** Fixed DSCP, or null to copy the input's. */
  dscp: number | null;
  gso: boolean;
  ifindex: number;
  /** Address to send from (the output interface's); null lets the kernel choose. */
  source: string | null;
}

/** A resolved rule (its usable outputs only). */
export interface WireRule {
  id: string;
  group: string;
  port: number;
  source: string | null;
  /** 802.1Q VID the frames must carry; 0 = untagged only. */
  vlan: number;
  /** The input interface's IPv4 address: datagrams from it are our own (dropped). */
  local: string | null;
  /** Datagrams per second the rule relays at most; 0 = no cap. */
  max_pps: number;
  loop_guard: boolean;
  /** IPv6 rules: the input interface's link-local and first other IPv6 address (own-source drops). */
  local6: string[];
  outputs: WireOutput[];
}

const GENERATION = LAYOUT.TableHeader.fields.generation.offset;
const RULE_COUNT = LAYOUT.TableHeader.fields.rule_count.offset;

/** The table as the worker applies it: rules in id order, generation 0. */
export function encodeWorkerTable(rules: readonly WireRule[]): Uint8Array {
  return wireToNative([...rules].sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1)), 0);
}

/** Content hash of encoded table bytes (16 hex digits); the generation does not count. */
export function tableBytesHash(bytes: Uint8Array): string {
  const copy = bytes.slice();
  if (copy.length >= LAYOUT.TableHeader.size) new DataView(copy.buffer).setUint32(GENERATION, 0, true);
  return createHash("sha256").update(copy).digest("hex").slice(0, 16);
}

/** Content hash of a table: the same rules give the same hash, whatever their order. */
export function tableHash(rules: readonly WireRule[]): string {
  return tableBytesHash(encodeWorkerTable(rules));
}

/** A copy of encoded table bytes with this generation. */
export function withGeneration(bytes: Uint8Array, generation: number): Uint8Array {
  const copy = bytes.slice();
  new DataView(copy.buffer).setUint32(GENERATION, generation >>> 0, true);
  return copy;
}

/** True when these bytes start like a rule table (what the worker keeps off its channel). */
export function isTableBytes(bytes: Uint8Array): boolean {
  return bytes.length >= LAYOUT.TableHeader.size && new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true) === TABLE_MAGIC;
}

/** Rules in encoded table bytes (the header's count). */
export function tableRuleCount(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(RULE_COUNT, true);
}

function addr(text: string, what: string): Uint8Array {
  const a = parseIp(text);
  if (!a) throw new Error(`${what}: '${text}' is not an IP address`);
  return a.bytes;
}

export function wireToNative(rules: readonly WireRule[], generation: number): Uint8Array {
  const table: TableRule[] = rules.map((r) => ({
    id: BigInt(r.id),
    group: addr(r.group, `rule ${r.id} group`),
    source: r.source === null ? null : addr(r.source, `rule ${r.id} source`),
    port: r.port,
    vlan: r.vlan,
    local: r.local === null ? null : addr(r.local, `rule ${r.id} local`).subarray(12, 16),
    maxPps: r.max_pps,
    loopGuard: r.loop_guard,
    local6: r.local6.map((a, k) => addr(a, `rule ${r.id} local6[${k}]`)),
    outputs: r.outputs.map((o) => ({
      id: BigInt(o.id),
      addr: addr(o.addr, `rule ${r.id} output ${o.id}`),
      source: o.source === null ? null : addr(o.source, `rule ${r.id} output ${o.id} source`),
      port: o.port,
      ttl: o.ttl,
      dscp: o.dscp,
      gso: o.gso,
      ifindex: o.ifindex,
    })),
  }));
  return encodeTable(table, generation);
}
