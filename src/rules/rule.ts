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
 * with their prefix lengths when known. `incarnation` changes when the interface was deleted and
 * created again under the same ifindex (the link monitor knows; a one-shot lookup says nothing):
 * whatever was bound to the old one must be bound again.
 */
export type LinkFacts = LinkInfo & { addr6?: readonly string[]; net4?: readonly Net4[]; incarnation?: number };
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
 * Where a problem of a rule is: the key path in the rule as written (["to", 1] for the second
 * output, ["to", 0, "ttl"], ["source"]); empty for the rule as a whole. Every edge names the
 * field from it (the CLI its flag, a config file its key and place), never from the message.
 */
export type RulePath = readonly (string | number)[];

/** A problem of a rule and the field it is about. */
export interface RuleProblem {
  path: RulePath;
  message: string;
  /**
   * The message names what it is about itself ("output 239.2.2.2:6000@eth0 uses ..."), so its
   * text form needs no path before it; false for a field's own problem ("a TTL is at most 255").
   */
  named: boolean;
}

/** "to[1].ttl", or under a prefix: "rules[2].to[1].ttl". */
export function pathText(path: RulePath, prefix = ""): string {
  let text = prefix;
  for (const key of path) text += typeof key === "number" ? `[${key}]` : text ? `.${key}` : key;
  return text;
}

/** A problem as one line: "to[1]: message", or the message alone when it names its field or has none. */
export function problemText(p: RuleProblem): string {
  return p.named || p.path.length === 0 ? p.message : `${pathText(p.path)}: ${p.message}`;
}

/**
 * Outputs of a rule, by the index they are written at (`to[i]`); a rule being checked has
 * undefined where an output is invalid, so a problem of the others still names its index.
 */
type IndexedOutputs = readonly (RuleOutput | undefined)[];

/**
 * Problems of a rule against the interfaces as they are now, for a rule being added: outputs to
 * a subnet's broadcast address, each at its output. (A rule that exists when the address
 * appears keeps its rule: that output becomes pending with the same reason, see resolveRule.)
 */
export function outputInterfaceProblems(rule: { outputs: IndexedOutputs }, lookup: LinkLookup): RuleProblem[] {
  const problems: RuleProblem[] = [];
  rule.outputs.forEach((out, i) => {
    if (!out?.to.iface) return;
    const problem = broadcastProblem(out.to, out.to.iface, lookup(out.to.iface));
    if (problem) problems.push({ path: ["to", i], message: problem, named: true });
  });
  return problems;
}

/** outputInterfaceProblems as text (the rule store's refusal: each message names its output). */
export function interfaceProblems(rule: { outputs: IndexedOutputs }, lookup: LinkLookup): string[] {
  return outputInterfaceProblems(rule, lookup).map(problemText);
}

/**
 * Problems that make a rule unusable whatever the interfaces do, each at the field it is
 * about. A rule being checked may lack its input (invalid) and some outputs (undefined): what
 * needs them is not checked.
 */
export function ruleProblems(rule: { input: Rule["input"] | null; source: IpAddress | null; outputs: IndexedOutputs }): RuleProblem[] {
  const problems: RuleProblem[] = [];
  rule.outputs.forEach((out, i) => {
    if (!out) return;
    if (rule.input && out.to.iface && out.to.iface === rule.input.iface) {
      problems.push({
        path: ["to", i],
        message:
          `output ${formatEndpoint(out.to)} uses the input interface ${rule.input.iface}: ` +
          "a relay on one interface would see its own traffic; use another interface",
        named: true,
      });
    }
  });
  if (rule.input && rule.source && rule.source.family !== rule.input.addr.family) {
    problems.push({
      path: ["source"],
      message:
        `source ${rule.source.text} is an IPv${rule.source.family} address but the input ${formatEndpoint(rule.input)} is IPv${rule.input.addr.family}: ` +
        "no packet could match; give a source of the input's family",
      named: true,
    });
  }
  const seen = new Set<string>();
  rule.outputs.forEach((out, i) => {
    if (!out) return;
    const key = formatEndpoint(out.to);
    if (seen.has(key)) problems.push({ path: ["to", i], message: `output ${key} is listed twice`, named: true });
    seen.add(key);
  });
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
