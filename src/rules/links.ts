// Interface facts for this network namespace, by name.
import { readFileSync } from "node:fs";
import { NativeError } from "../errors.ts";
import { linkQuery } from "../native/lib.ts";
import { parseIp } from "../base/address.ts";
import type { LinkFacts } from "./rule.ts";

/** IFA_F_DADFAILED: an address the kernel refused (a duplicate on the link). */
const IFA_F_DADFAILED = 0x08;

/**
 * The IPv6 addresses of `ifname` in canonical text, from /proc/net/if_inet6 (one line per
 * address: 32 hex digits, ifindex, prefix length, scope, flags, name). Empty without IPv6.
 */
export function ipv6Addresses(ifname: string, table?: string): string[] {
  let text = table;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/net/if_inet6", "utf8");
    } catch {
      return [];
    }
  }
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6 || f[5] !== ifname || !/^[0-9a-f]{32}$/.test(f[0]!)) continue;
    if ((Number.parseInt(f[4]!, 16) & IFA_F_DADFAILED) !== 0) continue;
    const a = parseIp(f[0]!.match(/.{4}/g)!.join(":"));
    if (a) out.push(a.text);
  }
  return out;
}

/** The interface, or null when it does not exist. */
export function lookupLink(ifname: string): LinkFacts | null {
  try {
    return { ...linkQuery(ifname), addr6: ipv6Addresses(ifname) };
  } catch (err) {
    if (err instanceof NativeError && (err.code === "ENODEV" || err.code === "ENXIO")) return null;
    throw err;
  }
}
