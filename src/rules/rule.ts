// A forwarding rule as the supervisor holds it, and its resolution against the interfaces of
// this network namespace into the table a worker applies.
import { isMulticast, type IpAddress } from "../base/address.ts";
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

/** An interface as rules need it: the native facts, and its IPv6 addresses when known. */
export type LinkFacts = LinkInfo & { addr6?: readonly string[] };
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

/** Problems that make a rule unusable whatever the interfaces do. */
export function ruleProblems(rule: Rule): string[] {
  const problems: string[] = [];
  for (const out of rule.outputs) {
    if (out.to.iface && out.to.iface === rule.input.iface) {
      problems.push(
        `output ${formatEndpoint(out.to)} uses the input interface ${rule.input.iface}: ` +
          "a relay on one interface would see its own traffic; use another interface",
      );
    }
  }
  if (rule.source && rule.source.family !== rule.input.addr.family) {
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

/** What a worker looks rules up by: two rules with the same key cannot both exist. */
export function inputKey(rule: Rule): string {
  return `${rule.input.iface}|${rule.input.addr.text}|${rule.input.port}|${rule.vlan ?? 0}|${rule.source?.text ?? "*"}`;
}

/** The input as written: "239.1.1.1:5000@eth0", with ",vlan=100" for a VLAN rule. */
export function formatInput(rule: Rule): string {
  return `${formatEndpoint(rule.input)}${rule.vlan !== null ? `,vlan=${rule.vlan}` : ""}`;
}

export function describeInput(rule: Rule): string {
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
 * the rule pending; a missing, down or address-less output interface makes that output pending
 * while the rule's other outputs forward.
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
