// Rule tables as they travel to workers: their schema (validated by the worker on receipt),
// their content hash, and their native encoding.
import { createHash } from "node:crypto";
import * as v from "valibot";
import { parseIp } from "../base/address.ts";
import { encodeTable, type TableRule } from "../native/abi.ts";
import { DSCP_MAX, MAX_PPS_MAX, PORT_MAX, PORT_MIN, TTL_MAX, TTL_MIN, VLAN_MAX } from "../limits.ts";

const port = v.pipe(v.number(), v.integer(), v.minValue(PORT_MIN), v.maxValue(PORT_MAX));
const id = v.pipe(v.string(), v.regex(/^\d{1,20}$/));

export const WireOutputSchema = v.strictObject({
  id,
  addr: v.string(),
  port,
  ttl: v.pipe(v.number(), v.integer(), v.minValue(TTL_MIN), v.maxValue(TTL_MAX)),
  /** Fixed DSCP, or null to copy the input's. */
  dscp: v.nullable(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(DSCP_MAX))),
  gso: v.boolean(),
  ifindex: v.pipe(v.number(), v.integer(), v.minValue(0)),
  /** Address to send from (the output interface's); null lets the kernel choose. */
  source: v.nullable(v.string()),
});
export type WireOutput = v.InferOutput<typeof WireOutputSchema>;

export const WireRuleSchema = v.strictObject({
  id,
  group: v.string(),
  port,
  source: v.nullable(v.string()),
  /** 802.1Q VID the frames must carry; 0 = untagged only. */
  vlan: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(VLAN_MAX)),
  /** The input interface's IPv4 address: datagrams from it are our own (dropped). */
  local: v.nullable(v.string()),
  /** Datagrams per second the rule relays at most; 0 = no cap. */
  max_pps: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(MAX_PPS_MAX)),
  loop_guard: v.boolean(),
  /** IPv6 rules: the input interface's link-local and first other IPv6 address (own-source drops). */
  local6: v.pipe(v.array(v.string()), v.maxLength(2)),
  outputs: v.pipe(v.array(WireOutputSchema), v.minLength(1)),
});
export type WireRule = v.InferOutput<typeof WireRuleSchema>;

/** Content hash of a table: the same rules give the same hash, whatever their order. */
export function tableHash(rules: readonly WireRule[]): string {
  const canonical = [...rules]
    .sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1))
    .map((r) => [r.id, r.group, r.port, r.source, r.vlan, r.local, r.max_pps, r.loop_guard, r.local6, r.outputs.map((o) => [o.id, o.addr, o.port, o.ttl, o.dscp, o.gso, o.ifindex, o.source])]);
  return createHash("sha256").update(JSON.stringify(canonical)).digest("hex").slice(0, 16);
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
