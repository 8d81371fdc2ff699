// `mcrelay diagnose`: each check is a small pure function from what was gathered (the
// daemon's rules, two stats readings a window apart, workers, the interfaces, routes and
// neighbours, a short trace of what arrives) to findings in plain words with what to do.
// gather.ts collects; the CLI orders findings (errors first) and prints them.
import type { TraceRecordJson } from "../supervisor/tracer.ts";

export type Severity = "error" | "warning" | "info";

export interface Finding {
  check: string;
  severity: Severity;
  rule: string | null;
  /** What is wrong, in plain words. */
  what: string;
  /** What to do about it. */
  fix: string;
}

export interface OutputView {
  to: string;
  ttl: number;
  /** UDP GSO allowed for this output (gso=off clears it). */
  gso?: boolean;
  state: string;
  reason: string | null;
  packets: number;
  bytes: number;
  send_errors: Record<string, number>;
}

export interface RuleView {
  name: string;
  input: string;
  source: string | null;
  state: string;
  reasons: string[];
  packets: number;
  bytes: number;
  drops: Record<string, number>;
  outputs: OutputView[];
}

export interface WorkerView {
  interface: string;
  slot: number;
  state: string;
  /** Restarts since the daemon started (they never go back to 0). */
  restarts: number;
  backoff_ms: number;
  last_error: string | null;
}

export interface LinkFacts {
  exists: boolean;
  up: boolean;
  mtu: number;
  /** The interface's IPv4 address (the one outputs send from), as the daemon sees it. */
  ipv4: string[];
  /** Its IPv6 addresses, link-local ones included. */
  ipv6: string[];
}

export interface RouteFacts {
  /** False when the route could not be asked for (no usable `ip`): nothing below is known. */
  known: boolean;
  /** Next hop: the gateway, or the destination itself when on-link; null without a route. */
  via: string | null;
  gateway: boolean;
  /** The kernel routes the destination as broadcast (a subnet's broadcast address). */
  broadcast?: boolean;
  dev: string | null;
  /** The neighbour entry's state (REACHABLE, STALE, INCOMPLETE, FAILED, ...), null when none. */
  neighbour: string | null;
}

export interface DiagnoseInput {
  windowS: number;
  rules: RuleView[];
  /** The same rules' counters at the start of the window (by name). */
  before: Map<string, RuleView>;
  interfaces: Map<string, { counters: Record<string, number>; parse_drops: Record<string, number> }>;
  interfacesBefore: Map<string, { counters: Record<string, number>; parse_drops: Record<string, number> }>;
  workers: WorkerView[];
  /** The same workers at the start of the window. */
  workersBefore: WorkerView[];
  /** When the daemon started (ISO 8601), the start of every total; null when unknown. */
  since: string | null;
  links: Map<string, LinkFacts>;
  /** Unicast outputs' routes, by the output's `to`. */
  routes: Map<string, RouteFacts>;
  igmpMaxMemberships: number | null;
  /** Frames that matched no rule, per input interface, from a short trace (null: not traced). */
  unmatched: Map<string, TraceRecordJson[]>;
  traceNote: string | null;
}

/** Interface name of an endpoint `ADDR:PORT@IFACE`, or null. */
export function ifaceOf(endpoint: string): string | null {
  const at = endpoint.lastIndexOf("@");
  return at >= 0 ? endpoint.slice(at + 1).split(",")[0]! : null;
}

/** Address of an endpoint (`[v6]` unwrapped). */
export function addrOf(endpoint: string): string {
  const hostPort = endpoint.includes("@") ? endpoint.slice(0, endpoint.lastIndexOf("@")) : endpoint;
  if (hostPort.startsWith("[")) return hostPort.slice(1, hostPort.indexOf("]"));
  return hostPort.slice(0, hostPort.lastIndexOf(":"));
}

function portOf(endpoint: string): number {
  const hostPort = endpoint.includes("@") ? endpoint.slice(0, endpoint.lastIndexOf("@")) : endpoint;
  return Number(hostPort.slice(hostPort.lastIndexOf(":") + 1));
}

/** An endpoint's address family, from its address's text. */
export function familyOf(endpoint: string): 4 | 6 {
  return addrOf(endpoint).includes(":") ? 6 : 4;
}

export function isMulticastV4(addr: string): boolean {
  const first = Number(addr.split(".")[0]);
  return first >= 224 && first <= 239;
}

const delta = (now: number | undefined, was: number | undefined) => Math.max(0, (now ?? 0) - (was ?? 0));

/** IP and UDP headers in front of a datagram's payload, by family. */
const HEADER_BYTES = { 4: 20 + 8, 6: 40 + 8 } as const;

/** ` since the daemon started at X` when that is known: what an old total counts from. */
const sinceText = (d: DiagnoseInput) => (d.since ? ` since the daemon started at ${d.since}` : "");

/** What each send errno means for a relay, and what to do. */
export const ERRNO_MEANING: Record<string, string> = {
  EAGAIN: "the output socket's buffer was full (the output cannot keep up): raise net.core.wmem_max, or lower the rate",
  ENOBUFS: "the socket buffer or the device queue was full: raise net.core.wmem_max / the interface's txqueuelen, or lower the rate",
  ENETUNREACH: "no route to the destination's network (or the output interface is down): add a route, bring the interface up",
  EHOSTUNREACH: "the destination host is unreachable (no ARP answer, or an ICMP host unreachable): check the next hop is up on that link",
  EADDRNOTAVAIL: "the source address is not (or no longer) on the output interface: check its address (an IPv6 output needs an IPv6 address on the interface, link-local is enough)",
  EMSGSIZE: "datagrams larger than the path allows: lower the sender's payload size or raise the MTU",
  // The dataplane counts EACCES here too: udp_sendmsg refuses a broadcast route without SO_BROADCAST.
  EPERM: "a firewall rule (nftables/iptables OUTPUT) refuses the datagrams: allow them; EACCES is counted here too, which a broadcast destination gets (mcrelay sends without SO_BROADCAST)",
  ECONNREFUSED: "the unicast receiver answered ICMP port unreachable (nothing listens on that port): start the receiver or fix the port",
  EINVAL: "the kernel refused the datagram as invalid (e.g. a broadcast address without SO_BROADCAST)",
  other: "another send error: run with --log-level debug and look at the worker's log",
};

/** EPERM (EACCES) on an output the kernel routes as broadcast. */
const BROADCAST_FIX =
  "the destination is a subnet's broadcast address (the kernel routes it as broadcast) and mcrelay sends without SO_BROADCAST, so the kernel refuses every datagram (EACCES): " +
  "send to a host or a multicast group (an output with @INTERFACE to its subnet's broadcast address is refused by add, and pending if the subnet appears later)";

// ---------------------------------------------------------------------------------------
// The checks

/**
 * An input or output interface that does not exist, is down, or has no address to send from:
 * an IPv4 output needs an IPv4 address on it (the daemon keeps such an output pending, see
 * resolveRule); an IPv6 output needs an IPv6 address, of which a link-local one is enough
 * (the kernel picks it as the source of multicast), and the daemon does not wait for one.
 */
export function checkInterfaces(d: DiagnoseInput, r: RuleView): Finding[] {
  const out: Finding[] = [];
  const input = ifaceOf(r.input);
  const seen = new Set<string>();
  const look = (iface: string, role: "input" | "output", family: 4 | 6) => {
    const key = role === "input" ? `input:${iface}` : `output:${iface}:${family}`;
    if (seen.has(key)) return;
    seen.add(key);
    const l = d.links.get(iface);
    if (!l || !l.exists) {
      out.push({ check: "interface-missing", severity: "error", rule: r.name, what: `${role} interface ${iface} does not exist`, fix: `create it or fix the rule's ${role} (ip link show lists the interfaces); mcrelay keeps the rule pending and starts relaying when it appears` });
    } else if (!l.up) {
      out.push({ check: "interface-down", severity: "error", rule: r.name, what: `${role} interface ${iface} is down`, fix: `ip link set ${iface} up (and check its cable/carrier)` });
    } else if (role === "output" && family === 4 && l.ipv4.length === 0) {
      out.push({ check: "interface-no-address", severity: "error", rule: r.name, what: `output interface ${iface} has no IPv4 address, so nothing can be sent from it to an IPv4 destination`, fix: `give ${iface} an IPv4 address (ip addr add ADDR/LEN dev ${iface})` });
    } else if (role === "output" && family === 6 && l.ipv6.length === 0) {
      out.push({ check: "interface-no-address", severity: "error", rule: r.name, what: `output interface ${iface} has no IPv6 address (not even a link-local one), so the kernel has no source address for IPv6 datagrams sent from it`, fix: `enable IPv6 on ${iface} (sysctl net.ipv6.conf.${iface}.disable_ipv6=0; a link-local address is enough for multicast) or give it one (ip -6 addr add ADDR/LEN dev ${iface})` });
    }
  };
  if (input) look(input, "input", familyOf(r.input));
  for (const o of r.outputs) {
    const iface = ifaceOf(o.to);
    if (iface) look(iface, "output", familyOf(o.to));
  }
  return out;
}

/** Pending rules and outputs with the daemon's own reason (when no interface check said more). */
export function checkPending(_d: DiagnoseInput, r: RuleView): Finding[] {
  const out: Finding[] = [];
  if (r.state === "pending") out.push({ check: "rule-pending", severity: "error", rule: r.name, what: `the rule is pending: ${r.reasons.join("; ")}`, fix: "fix what the reason names; the rule becomes active by itself" });
  if (r.state === "error") out.push({ check: "rule-error", severity: "error", rule: r.name, what: `the rule's worker is failing: ${r.reasons.join("; ")}`, fix: "see the worker findings and the daemon's log" });
  for (const o of r.outputs) {
    if (o.state === "pending") out.push({ check: "output-pending", severity: "error", rule: r.name, what: `output ${o.to} is pending: ${o.reason ?? "no reason given"}`, fix: "fix what the reason names (interface, address or route); the other outputs keep forwarding" });
  }
  return out;
}

/** Datagrams larger than an output interface's MTU are fragmented on the way out. */
export function checkMtu(d: DiagnoseInput, r: RuleView): Finding[] {
  if (r.packets === 0) return [];
  const average = r.bytes / r.packets;
  const out: Finding[] = [];
  for (const o of r.outputs) {
    const iface = ifaceOf(o.to);
    const l = iface ? d.links.get(iface) : undefined;
    if (!l?.exists) continue;
    const headers = HEADER_BYTES[familyOf(o.to)];
    if (average + headers > l.mtu) {
      out.push({ check: "mtu-too-small", severity: "warning", rule: r.name, what: `datagrams average ${Math.round(average)} bytes but ${iface}'s MTU is ${l.mtu}: with ${headers} bytes of IP and UDP headers each is sent as IP fragments, which many receivers and every per-packet relay drop`, fix: `raise ${iface}'s MTU to at least ${Math.ceil(average) + headers}, or have the sender use smaller datagrams` });
    }
  }
  return out;
}

/** An active rule whose input ring saw no frame at all during the window. */
export function checkNoFrames(d: DiagnoseInput, r: RuleView): Finding[] {
  const iface = ifaceOf(r.input);
  if (r.state !== "active" || !iface) return [];
  const now = d.interfaces.get(iface)?.counters.rx_frames;
  const was = d.interfacesBefore.get(iface)?.counters.rx_frames;
  if (now === undefined || delta(now, was) > 0 || delta(r.packets, d.before.get(r.name)?.packets) > 0) return [];
  const proto = addrOf(r.input).includes(":") ? "MLD" : "IGMP";
  return [{
    check: "no-frames",
    severity: "warning",
    rule: r.name,
    what: `no UDP frame at all arrived on ${iface} in ${d.windowS} s`,
    fix: `is the sender on this link and sending (tcpdump -ni ${iface} udp)? behind an ${proto}-snooping switch the stream only comes when someone answers a querier: check that the VLAN has an ${proto} querier, or a static group entry`,
  }];
}

/** Frames arrive on the rule's input but none match it: what arrives instead (from a short trace). */
export function checkNotMatching(d: DiagnoseInput, r: RuleView): Finding[] {
  const iface = ifaceOf(r.input);
  if (r.state !== "active" || !iface) return [];
  if (delta(r.packets, d.before.get(r.name)?.packets) > 0) return [];
  const frames = delta(d.interfaces.get(iface)?.counters.rx_frames, d.interfacesBefore.get(iface)?.counters.rx_frames);
  if (frames === 0) return [];
  const seen = d.unmatched.get(iface) ?? [];
  const counts = new Map<string, number>();
  for (const rec of seen) {
    if (rec.verdict === "source_mismatch") continue; // checkSource says it
    const key = `${rec.dst}:${rec.dst_port} from ${rec.src}${rec.vlan !== null ? ` vlan ${rec.vlan}` : ""}${rec.verdict === "parse_drop" ? ` (${rec.reason})` : ""}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const top = [...counts].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([k, n]) => `${k} x${n}`);
  const group = addrOf(r.input);
  const port = portOf(r.input);
  const samePort = seen.filter((x) => x.dst === group && x.dst_port !== port);
  const hint = samePort.length ? ` Frames for ${group} arrive on port ${samePort[0]!.dst_port}, not ${port}: the rule's port is probably wrong.` : "";
  return [{
    check: "frames-not-matching",
    severity: "error",
    rule: r.name,
    what: `${frames} frames arrived on ${iface} in ${d.windowS} s but none matched ${r.input}.${hint}${top.length ? ` Seen instead: ${top.join(", ")}.` : d.traceNote ? ` (${d.traceNote})` : ""}`,
    fix: "compare the rule's group, port, source and VLAN with what arrives (mcrelay trace RULE shows each frame)",
  }];
}

/** Frames for the rule's group and port from a source it does not accept. */
export function checkSource(d: DiagnoseInput, r: RuleView): Finding[] {
  const n = delta(r.drops.source_mismatch, d.before.get(r.name)?.drops.source_mismatch) || (r.packets === 0 ? r.drops.source_mismatch ?? 0 : 0);
  if (!n) return [];
  const iface = ifaceOf(r.input);
  const sources = [...new Set((d.unmatched.get(iface ?? "") ?? []).filter((x) => x.verdict === "source_mismatch" && x.dst === addrOf(r.input)).map((x) => x.src))];
  return [{
    check: "source-mismatch",
    severity: "error",
    rule: r.name,
    what: `${n} datagrams for ${r.input} came from ${sources.length ? sources.join(", ") : "another source"}, but the rule accepts only ${r.source ?? "its source"}`,
    fix: "fix the rule's --source (or remove it to accept any source)",
  }];
}

/** What to look at when a join of this family fails on `iface`. */
function joinFix(d: DiagnoseInput, iface: string, ipv6: boolean): string {
  if (ipv6) return `compare \`ip -6 maddr show dev ${iface}\` with the IPv6 rules' groups; check net.core.optmem_max (memory for a socket's memberships) and the daemon's log for the errno`;
  const groups = d.rules.filter((x) => ifaceOf(x.input) === iface && familyOf(x.input) === 4).length;
  const limit = d.igmpMaxMemberships;
  return limit !== null && groups > limit
    ? `${groups} groups on ${iface} but net.ipv4.igmp_max_memberships is ${limit}: sysctl -w net.ipv4.igmp_max_memberships=${Math.max(groups, 20) * 2}`
    : `check net.ipv4.igmp_max_memberships (now ${limit ?? "unknown"}) and the daemon's log for the errno`;
}

/**
 * The rule's own IGMP or MLD join fails now: the daemon says so in the rule's state
 * (join-failed, from the rule's last join errno, either family), which ends when a retry
 * succeeds. The interface's join_errors total is checkJoinErrors' business.
 */
export function checkJoins(d: DiagnoseInput, r: RuleView): Finding[] {
  const iface = ifaceOf(r.input);
  if (!iface || r.state !== "join-failed") return [];
  const ipv6 = familyOf(r.input) === 6;
  return [{
    check: "join-failed",
    severity: "error",
    rule: r.name,
    what: `the ${ipv6 ? "IPv6 (MLD)" : "IPv4 (IGMP)"} join of ${addrOf(r.input)} on ${iface} fails (${r.reasons.join("; ") || "no reason given"}): without a membership a NIC's multicast filter or an ${ipv6 ? "MLD" : "IGMP"}-snooping switch keeps the stream away`,
    fix: joinFix(d, iface, ipv6),
  }];
}

/**
 * Failed joins counted on an input interface (both families; the counter only grows): a
 * problem only when it grew during the window while no rule is join-failed now (a join that
 * fails and then holds); an older total is a note.
 */
export function checkJoinErrors(d: DiagnoseInput): Finding[] {
  const out: Finding[] = [];
  for (const [iface, now] of d.interfaces) {
    const total = now.counters.join_errors ?? 0;
    if (!total) continue;
    const onIface = d.rules.filter((x) => ifaceOf(x.input) === iface);
    if (onIface.some((x) => x.state === "join-failed")) continue; // checkJoins says it, per rule
    const recent = delta(total, d.interfacesBefore.get(iface)?.counters.join_errors);
    const families = new Set(onIface.map((x) => familyOf(x.input)));
    const fix = [...families].map((f) => joinFix(d, iface, f === 6)).join("; ");
    out.push(recent > 0
      ? { check: "join-errors", severity: "warning", rule: null, what: `${recent} joins of input groups on ${iface} failed in the last ${d.windowS} s, though every rule's join holds now (${total} in total${sinceText(d)})`, fix: `joins that fail now and then: ${fix || "see the daemon's log for the errno"}` }
      : { check: "join-errors", severity: "info", rule: null, what: `${total} joins of input groups on ${iface} failed${sinceText(d)}, none in the last ${d.windowS} s: every rule's join holds now`, fix: "nothing to do now; the daemon's log names the errno of each failure" });
  }
  return out;
}

/** A unicast output whose next hop has no resolved neighbour: the kernel drops after sendmsg succeeded. */
export function checkNeighbours(d: DiagnoseInput, r: RuleView): Finding[] {
  const out: Finding[] = [];
  for (const o of r.outputs) {
    const rt = d.routes.get(o.to);
    if (!rt) continue;
    if (!rt.known) {
      out.push({ check: "route-unknown", severity: "info", rule: r.name, what: `the route and next hop of output ${o.to} are unknown: this host has no \`ip\` that answers in JSON (iproute2's \`ip -j\`)`, fix: "install iproute2 to have routes, next hops and neighbours checked (ip route get ADDR shows the route meanwhile)" });
    } else if (rt.via === null) {
      out.push({ check: "no-route", severity: "error", rule: r.name, what: `no route to ${addrOf(o.to)} for output ${o.to}`, fix: "add a route, or name the output interface" });
    } else if (rt.neighbour === "FAILED" || rt.neighbour === "INCOMPLETE") {
      out.push({
        check: "neighbour-unresolved",
        severity: "error",
        rule: r.name,
        what: `the next hop ${rt.via}${rt.dev ? ` on ${rt.dev}` : ""} of output ${o.to} does not answer ARP (neighbour ${rt.neighbour}): the kernel drops these datagrams after the send succeeded, so no send error counts them`,
        fix: `check that ${rt.via} is up and on that link (ip neigh show ${rt.via}; arping)`,
      });
    }
  }
  return out;
}

/** Send errors during the window (or ever, if none flowed in it), by errno with its meaning. */
export function checkSendErrors(d: DiagnoseInput, r: RuleView): Finding[] {
  const out: Finding[] = [];
  const before = d.before.get(r.name);
  for (const o of r.outputs) {
    const was = before?.outputs.find((x) => x.to === o.to)?.send_errors ?? {};
    for (const [errno, n] of Object.entries(o.send_errors)) {
      const recent = delta(n, was[errno]);
      if (!n) continue;
      out.push({
        check: "send-errors",
        severity: recent > 0 ? "error" : "info",
        rule: r.name,
        what: `output ${o.to}: ${n} datagrams failed with ${errno}${recent > 0 ? ` (${recent} in the last ${d.windowS} s)` : " (none in the last window)"}`,
        fix: errno === "EPERM" && d.routes.get(o.to)?.broadcast ? BROADCAST_FIX : (ERRNO_MEANING[errno] ?? ERRNO_MEANING.other!),
      });
    }
  }
  return out;
}

/** A unicast output through a router with TTL 1: the router drops every datagram. */
export function checkTtl(d: DiagnoseInput, r: RuleView): Finding[] {
  const out: Finding[] = [];
  for (const o of r.outputs) {
    const rt = d.routes.get(o.to);
    if (rt?.gateway && o.ttl <= 1) {
      out.push({ check: "ttl-too-low", severity: "error", rule: r.name, what: `output ${o.to} goes through the router ${rt.via} with TTL ${o.ttl}: the router drops every datagram (TTL exceeded)`, fix: "give the rule (or the output) a TTL above the number of routers on the way, e.g. ttl=8" });
    }
  }
  return out;
}

/**
 * The loop guard, the own-source filter or the storm cap dropped the rule's datagrams. Only
 * drops during the window are a problem; the totals never go back to 0, so an older total is
 * a note.
 */
export function checkLoopsAndCaps(d: DiagnoseInput, r: RuleView): Finding[] {
  const out: Finding[] = [];
  const was = d.before.get(r.name)?.drops ?? {};
  const kinds = [
    { check: "loop", key: "loop_drops", severity: "error", what: "dropped as a loop (the same datagram came back within the guard's window)", fix: "two rules (here or on another relay) feed each other: break the cycle; loop_guard=false only if the repeats are genuine" },
    { check: "own-source", key: "own_source", severity: "warning", what: "from the input interface's own address were not relayed", fix: "the host itself sends this stream: a loop through another relay, or a local sender that should use another group" },
    { check: "cap", key: "cap_drops", severity: "error", what: "dropped by the rule's storm cap (max_pps)", fix: "raise max_pps if the stream is really that fast, or find the storm's source" },
  ] as const;
  for (const k of kinds) {
    const total = r.drops[k.key] ?? 0;
    if (!total) continue;
    const recent = delta(total, was[k.key]);
    out.push(recent > 0
      ? { check: k.check, severity: k.severity, rule: r.name, what: `${recent} datagrams ${k.what} in the last ${d.windowS} s (${total} in total)`, fix: k.fix }
      : { check: k.check, severity: "info", rule: r.name, what: `${total} datagrams ${k.what}${sinceText(d)}, none in the last ${d.windowS} s`, fix: `nothing is dropped now; if it comes back: ${k.fix}` });
  }
  return out;
}

/**
 * Outputs sent as UDP GSO batches: a consumer on the next hop that reads with a packet socket
 * (another relay, an IDS, tcpdump counts) sees one large frame per batch, not the datagrams.
 * Nothing here can tell who reads, so it is a note.
 */
export function checkGso(d: DiagnoseInput, r: RuleView): Finding[] {
  const iface = ifaceOf(r.input);
  const sends = iface ? d.interfaces.get(iface)?.counters.tx_gso_sends ?? 0 : 0;
  if (!sends) return [];
  const outs = r.outputs.filter((o) => o.gso !== false && o.packets > 0).map((o) => o.to);
  if (!outs.length) return [];
  return [{
    check: "gso-batches",
    severity: "info",
    rule: r.name,
    what: `${outs.join(", ")} ${outs.length > 1 ? "are" : "is"} sent as UDP GSO batches (${sends} on ${iface}'s workers): a UDP socket receives the datagrams, but a packet-socket reader on the next hop sees one large frame per batch`,
    fix: "if the receiver reads with a packet socket (another relay without GSO splitting, an IDS), add gso=off to that output",
  }];
}

/**
 * Workers failing now (in backoff, or restarted during the window), and why; restart totals
 * only grow, so restarts before the window are a note. EPERM from a worker is either a missing
 * capability or, under a service manager, a system call filter refusing a call.
 */
export function checkWorkers(d: DiagnoseInput): Finding[] {
  const out: Finding[] = [];
  for (const w of d.workers) {
    const who = `worker ${w.interface}/${w.slot}`;
    const was = d.workersBefore.find((x) => x.interface === w.interface && x.slot === w.slot);
    // A ring that appeared during the window has no earlier reading: no change seen.
    const recent = delta(w.restarts, was?.restarts ?? w.restarts);
    const failing = w.state === "backoff" || recent > 0;
    if (failing && w.last_error && /EPERM|EACCES|Operation not permitted|capabilit/i.test(w.last_error)) {
      out.push({ check: "capabilities", severity: "error", rule: null, what: `${who} was refused an operation (EPERM): ${w.last_error}`, fix: "the daemon lacks a capability it needs (CAP_NET_RAW, CAP_SETUID, CAP_SETGID, and CAP_KILL with --user), or a system call filter (systemd's SystemCallFilter=) refuses a call: see docs/operations.md and the daemon's log" });
    } else if (w.state === "backoff") {
      out.push({ check: "worker-backoff", severity: "error", rule: null, what: `${who} is waiting ${w.backoff_ms} ms before restart ${w.restarts + 1}: ${w.last_error ?? "no error recorded"}`, fix: "look at the daemon's log for why it keeps failing" });
    } else if (recent > 0) {
      out.push({ check: "worker-restarts", severity: "warning", rule: null, what: `${who} was restarted ${recent} times in the last ${d.windowS} s (${w.restarts} in total; last: ${w.last_error ?? "no error recorded"})`, fix: "frames arriving meanwhile waited in the ring; repeated restarts point at a crash: see the daemon's log" });
    } else if (w.restarts > 0) {
      out.push({ check: "worker-restarts", severity: "info", rule: null, what: `${who} was restarted ${w.restarts} times${sinceText(d)} (last: ${w.last_error ?? "no error recorded"}), none in the last ${d.windowS} s: it runs now`, fix: "nothing to do now; if restarts come back, the daemon's log says why" });
    }
  }
  return out;
}

/** The kernel dropped frames because the ring was full. */
export function checkRingDrops(d: DiagnoseInput): Finding[] {
  const out: Finding[] = [];
  for (const [iface, now] of d.interfaces) {
    const n = delta(now.counters.kernel_drops, d.interfacesBefore.get(iface)?.counters.kernel_drops);
    if (n) out.push({ check: "ring-drops", severity: "error", rule: null, what: `${n} frames dropped on ${iface} in ${d.windowS} s because the ring was full (the worker could not keep up)`, fix: `add workers for ${iface} (config workers: { ${iface}: 2 }) or find what slows the outputs (send errors)` });
  }
  return out;
}

export const RULE_CHECKS = [checkInterfaces, checkPending, checkMtu, checkNoFrames, checkNotMatching, checkSource, checkJoins, checkNeighbours, checkSendErrors, checkTtl, checkLoopsAndCaps, checkGso];
export const GLOBAL_CHECKS = [checkWorkers, checkRingDrops, checkJoinErrors];

const ORDER: Record<Severity, number> = { error: 0, warning: 1, info: 2 };

/** Every finding, most likely cause first (errors, then warnings, then notes; interfaces before traffic). */
export function diagnose(d: DiagnoseInput): Finding[] {
  const findings: Finding[] = [];
  for (const r of d.rules) {
    const fromInterfaces = checkInterfaces(d, r);
    findings.push(...fromInterfaces);
    for (const check of RULE_CHECKS.slice(1)) {
      // A missing or down interface explains the pending state: do not say it twice.
      if (check === checkPending && fromInterfaces.length) continue;
      findings.push(...check(d, r));
    }
  }
  for (const check of GLOBAL_CHECKS) findings.push(...check(d));
  return findings.map((f, i) => ({ f, i })).sort((a, b) => ORDER[a.f.severity] - ORDER[b.f.severity] || a.i - b.i).map((x) => x.f);
}
