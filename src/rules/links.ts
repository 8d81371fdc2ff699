// Interface facts for this network namespace, by name.
import { readFileSync } from "node:fs";
import { NativeError } from "../errors.ts";
import { linkQuery, NetlinkSocket } from "../native/lib.ts";
import { parseIp } from "../base/address.ts";
import type { LinkFacts, Net4 } from "./rule.ts";

/** Reads of one address dump before giving up (the kernel answers a dump at once). */
const DUMP_READS_MAX = 500;
/** Address dumps asked for before the last one read is taken, complete or not. */
const DUMP_ATTEMPTS_MAX = 3;

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

/**
 * The IPv4 addresses of interface `ifindex` with their prefix lengths, from one rtnetlink address
 * dump (the native link query gives the primary address only). For one-shot checks (`forward`);
 * the daemon keeps the same facts from its link monitor. A dump that ends in an error or is
 * interrupted by a change (an `overflow` event, zig/netlink.zig) is asked for again, a few times
 * at most; then the last one read is the answer.
 */
export function ipv4Networks(ifindex: number): Net4[] {
  const nl = NetlinkSocket.open();
  try {
    let out: Net4[] = [];
    for (let attempt = 0; attempt < DUMP_ATTEMPTS_MAX; attempt++) {
      const seq = nl.dump("addresses");
      out = [];
      let whole = true;
      let ended = false;
      for (let reads = 0; reads < DUMP_READS_MAX && !ended; reads++) {
        const events = nl.read();
        for (const e of events) {
          // The dump's answers carry its seq; notifications of changes (the socket listens to
          // them too) carry the seq of whoever made the change.
          if (e.kind === "addr_new" && e.seq === seq && e.family === 4 && e.ifindex === ifindex && e.addr) out.push({ addr: e.addr, prefixlen: e.prefixlen });
          if (e.kind === "overflow") whole = false;
          if ((e.kind === "dump_done" || e.kind === "overflow" || e.kind === "failed") && e.seq === seq) ended = true;
        }
        if (events.length === 0) Bun.sleepSync(1);
      }
      if (ended && whole) return out;
    }
    return out;
  } finally {
    nl.close();
  }
}
