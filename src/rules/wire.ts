// Rule tables as they travel to workers, their content hash, and their native encoding.
import { createHash } from "node:crypto";
import { parseIp } from "../config/address.ts";
import { encodeTable, type TableRule } from "../native/abi.ts";
import type { WireRule } from "../worker/messages.ts";

/** Content hash of a table: the same rules give the same hash, whatever their order. */
export function tableHash(rules: readonly WireRule[]): string {
  const canonical = [...rules]
    .sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1))
    .map((r) => [r.id, r.group, r.port, r.source, r.vlan, r.outputs.map((o) => [o.id, o.addr, o.port, o.ttl, o.dscp, o.gso, o.ifindex, o.source])]);
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
