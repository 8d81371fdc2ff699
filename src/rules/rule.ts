// A forwarding rule as the supervisor holds it, and its resolution against the interfaces of
// this network namespace into the table a worker applies.
import { isMulticast, parseIp, type IpAddress } from "../base/address.ts";
import { formatEndpoint, type Endpoint } from "../base/endpoint.ts";
import { IFF_UP, type LinkInfo } from "../native/abi.ts";
import type { WireOutput, WireRule } from "./wire.ts";

export interface RuleOutput {
  id: bigint;
  to: Endpoint;
  ttl: number;
  /** Fixed DSCP 0..63, or null: copy the input packet's DSCP (the ECN bits are always copied). */
  dscp: number | null;
  /** Send batches as UDP GSO buffers (off for next hops that read with packet sockets). */
  gso: boolean;
}

export interface Rule {
  id: bigint;
  name: string;
  input: Endpoint & { iface: string };
  source: IpAddress | null;
  /** 802.1Q VID the input frames must carry, or null: untagged frames only. */
  vlan: number | null;
  /** Storm cap: datagrams per second relayed at most, or null for none. */
  maxPps: number | null;
  /** Loop containment (on unless the rule turns it off). */
  loopGuard: boolean;
  outputs: RuleOutput[];
}

/** An IPv4 address of an interface with its prefix length (10.1.2.1/24: addr 10.1.2.1, prefixlen 24). */
export interface Net4 {
  addr: string;
  prefixlen: number;
}

/**
 * An interface as rules need it: the native facts, its IPv6 addresses and its IPv4 addresses
 * with their prefix lengths when known.
 */
export type LinkFacts = LinkInfo & { addr6?: readonly string[]; net4?: readonly Net4[] };
export type LinkLookup = (ifname: string) => LinkFacts | null;

/** The addresses own-source drops compare IPv6 sources with: the first link-local, the first other. */
function ownIpv6(addrs: readonly string[]): string[] {
  const linkLocal = addrs.find((a) => a.startsWith("fe80:"));
  const other = addrs.find((a) => !a.startsWith("fe80:"));
  return [linkLocal, other].filter((a): a is string => a !== undefined);
}

/** Why a unicast input address is not the input interface's own, or null when it is. */
function unicastInputProblem(rule: Rule, input: LinkFacts): string | null {
  const addr = rule.input.addr;
  const own = addr.family === 4 ? input.addr4 === addr.text : (input.addr6 ?? []).includes(addr.text);
  if (own) return null;
  return `input address ${addr.text} is not a multicast group and not an address of ${rule.input.iface}`;
}

/** An IPv4 address as a 32-bit number. */
function v4Number(a: IpAddress): number {
  return ((a.bytes[12]! << 24) | (a.bytes[13]! << 16) | (a.bytes[14]! << 8) | a.bytes[15]!) >>> 0;
}

/**
 * Why `to` cannot be sent to on `iface`: it is the directed broadcast address of one of the
 * interface's IPv4 subnets (10.1.2.255 on 10.1.2.1/24). The kernel classifies it as broadcast
 * and, without SO_BROADCAST (our sockets never set it), refuses every datagram with EACCES.
 * /31 and /32 have no broadcast address (RFC 3021). Null when it is not one, or not known.
 */
export function broadcastProblem(to: Endpoint, iface: string, link: LinkFacts | null): string | null {
  if (to.addr.family !== 4 || isMulticast(to.addr)) return null;
  const dest = v4Number(to.addr);
  for (const net of link?.net4 ?? []) {
    const a = parseIp(net.addr);
    if (!a || a.family !== 4 || net.prefixlen >= 31) continue;
    const host = 0xffffffff >>> net.prefixlen;
    const broadcast = (v4Number(a) | host) >>> 0;
    if (dest !== broadcast) continue;
    const network = (v4Number(a) & ~host) >>> 0;
    const text = [24, 16, 8, 0].map((s) => (network >>> s) & 255).join(".");
    return (
      `output ${formatEndpoint(to)} is the broadcast address of ${iface}'s subnet ${text}/${net.prefixlen}: ` +
      "mcrelay sends without SO_BROADCAST, so the kernel would refuse every datagram (EACCES); send to a host or a multicast group"
    );
  }
  return null;
}

/**
 * Problems of a rule against the interfaces as they are now, for a rule being added: outputs to
 * a subnet's broadcast address. (A rule that exists when the address appears keeps its rule:
 * that output becomes pending with the same reason, see resolveRule.)
 */
export function interfaceProblems(rule: { outputs: readonly RuleOutput[] }, lookup: LinkLookup): string[] {
  const problems: string[] = [];
  for (const out of rule.outputs) {
    if (!out.to.iface) continue;
    const problem = broadcastProblem(out.to, out.to.iface, lookup(out.to.iface));
    if (problem) problems.push(problem);
  }
  return problems;
}

/**
 * Problems that make a rule unusable whatever the interfaces do. A rule being checked may lack
 * its input (invalid) and some outputs (invalid ones left out): what needs them is not checked.
 */
export function ruleProblems(rule: { input: Rule["input"] | null; source: IpAddress | null; outputs: readonly RuleOutput[] }): string[] {
  const problems: string[] = [];
  for (const out of rule.outputs) {
    if (rule.input && out.to.iface && out.to.iface === rule.input.iface) {
      problems.push(
        `output ${formatEndpoint(out.to)} uses the input interface ${rule.input.iface}: ` +
          "a relay on one interface would see its own traffic; use another interface",
      );
    }
  }
  if (rule.input && rule.source && rule.source.family !== rule.input.addr.family) {
    problems.push(
      `source ${rule.source.text} is an IPv${rule.source.family} address but the input ${formatEndpoint(rule.input)} is IPv${rule.input.addr.family}: ` +
        "no packet could match; give a source of the input's family",
    );
  }
  const seen = new Set<string>();
  for (const out of rule.outputs) {
    const key = formatEndpoint(out.to);
    if (seen.has(key)) problems.push(`output ${key} is listed twice`);
    seen.add(key);
  }
  return problems;
}

/** What a rule's input is, to tell two rules apart: its input, VLAN and source. */
export type RuleInput = Pick<Rule, "input" | "vlan" | "source">;

/** What a worker looks rules up by: two rules with the same key cannot both exist. */
export function inputKey(rule: RuleInput): string {
  return `${rule.input.iface}|${rule.input.addr.text}|${rule.input.port}|${rule.vlan ?? 0}|${rule.source?.text ?? "*"}`;
}

/** The input as written: "239.1.1.1:5000@eth0", with ",vlan=100" for a VLAN rule. */
export function formatInput(rule: Pick<Rule, "input" | "vlan">): string {
  return `${formatEndpoint(rule.input)}${rule.vlan !== null ? `,vlan=${rule.vlan}` : ""}`;
}

export function describeInput(rule: RuleInput): string {
  return `${formatInput(rule)} from ${rule.source ? rule.source.text : "any source"}`;
}

export interface Resolved {
  /** The rule as a worker applies it (usable outputs only), or null when it cannot forward. */
  wire: WireRule | null;
  /** Why the rule cannot forward now (input interface missing or down, no usable output). */
  pending: string[];
  /** Outputs that cannot send now, by output id, with the reason. */
  pendingOutputs: Map<bigint, string>;
}

/**
 * Resolves interface names against the current links. A missing or down input interface makes
 * the rule pending; a missing, down or address-less output interface, or an output that is now
 * the broadcast address of its interface's subnet, makes that output pending while the rule's
 * other outputs forward.
 */
export function resolveRule(rule: Rule, lookup: LinkLookup): Resolved {
  const pending: string[] = [];
  const pendingOutputs = new Map<bigint, string>();
  const input = lookup(rule.input.iface);
  if (!input) pending.push(`input interface ${rule.input.iface} does not exist`);
  else if ((input.flags & IFF_UP) === 0) pending.push(`input interface ${rule.input.iface} is down`);
  else if (!isMulticast(rule.input.addr)) {
    const problem = unicastInputProblem(rule, input);
    if (problem) pending.push(problem);
  }
  const outputs: WireOutput[] = [];
  for (const out of rule.outputs) {
    let ifindex = 0;
    let source: string | null = null;
    if (out.to.iface) {
      const link = lookup(out.to.iface);
      let why: string | null = null;
      if (!link) why = `output interface ${out.to.iface} does not exist`;
      else if ((link.flags & IFF_UP) === 0) why = `output interface ${out.to.iface} is down`;
      else if (out.to.addr.family === 4 && !link.addr4) why = `output interface ${out.to.iface} has no IPv4 address`;
      else why = broadcastProblem(out.to, out.to.iface, link);
      if (why) {
        pendingOutputs.set(out.id, why);
        continue;
      }
      ifindex = link!.ifindex;
      if (out.to.addr.family === 4) source = link!.addr4;
    }
    outputs.push({ id: out.id.toString(), addr: out.to.addr.text, port: out.to.port, ttl: out.ttl, dscp: out.dscp, gso: out.gso, ifindex, source });
  }
  if (outputs.length === 0 && rule.outputs.length > 0) {
    pending.push(`no output can send: ${[...pendingOutputs.values()].join("; ")}`);
  }
  if (pending.length > 0) return { wire: null, pending, pendingOutputs };
  return {
    wire: {
      id: rule.id.toString(),
      group: rule.input.addr.text,
      port: rule.input.port,
      source: rule.source?.text ?? null,
      vlan: rule.vlan ?? 0,
      // Own-source drops compare IPv4 sources with the interface's IPv4 address.
      local: rule.input.addr.family === 4 ? (input?.addr4 ?? null) : null,
      max_pps: rule.maxPps ?? 0,
      loop_guard: rule.loopGuard,
      local6: rule.input.addr.family === 6 ? ownIpv6(input?.addr6 ?? []) : [],
      outputs,
    },
    pending,
    pendingOutputs,
  };
}
