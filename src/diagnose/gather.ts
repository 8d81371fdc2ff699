// What `mcrelay diagnose` looks at: the daemon's rules and counters twice, a window apart,
// with a short trace of every unmatched frame on one input interface meanwhile; and, from this
// host's network namespace (run diagnose where the daemon runs), the interfaces, the routes and
// neighbour entries of unicast outputs, and the IGMP membership limit. Interfaces and their
// addresses come from the native link query the daemon uses (no `ip` needed); routes and
// neighbours from iproute2's `ip -j`, and are "unknown" where that is missing (busybox `ip`
// has no -j).
import { readFileSync } from "node:fs";
import type { ControlClient } from "../control/client.ts";
import type { Stats, Status } from "../control/responses.ts";
import type { TraceRecordJson } from "../supervisor/tracer.ts";
import { lookupLink } from "../rules/links.ts";
import { IFF_UP } from "../native/abi.ts";
import { addrOf, ifaceOf, isMulticastV4, type DiagnoseInput, type LinkFacts, type RouteFacts, type RuleView, type WorkerView } from "./checks.ts";

interface Listed {
  name: string;
  state: string;
  reasons: string[];
}

/** How long one `ip` may take before its answer is given up on. */
const IP_TIMEOUT_MS = 2_000;

/** What `ip -j ARGS` printed, parsed; "unusable" when there is no `ip` that answers in JSON. */
function ip(args: string[]): { ok: true; value: unknown } | { ok: false } {
  let r: ReturnType<typeof Bun.spawnSync>;
  try {
    r = Bun.spawnSync(["ip", "-j", ...args], { stdout: "pipe", stderr: "ignore", timeout: IP_TIMEOUT_MS });
  } catch {
    return { ok: false }; // no `ip` on PATH (spawn throws ENOENT)
  }
  if (r.exitCode !== 0) return { ok: false };
  try {
    return { ok: true, value: JSON.parse(r.stdout?.toString() || "null") };
  } catch {
    return { ok: false };
  }
}

/** The interface as the daemon sees it: the same native link query (and IPv6 address table). */
export function linkFacts(iface: string): LinkFacts {
  const l = lookupLink(iface);
  if (!l) return { exists: false, up: false, mtu: 0, ipv4: [], ipv6: [] };
  return { exists: true, up: (l.flags & IFF_UP) !== 0, mtu: l.mtu, ipv4: l.addr4 ? [l.addr4] : [], ipv6: [...(l.addr6 ?? [])] };
}

/** The route to a unicast output and its next hop's neighbour entry; `known: false` without a usable `ip`. */
export function routeFacts(addr: string, iface: string | null): RouteFacts {
  const routes = ip(["route", "get", addr, ...(iface ? ["oif", iface] : [])]);
  // `ip route get` exits 2 when there is no route, and so does a busybox `ip` that has no -j:
  // ask one question that has an answer to tell "no route" from "cannot ask".
  if (!routes.ok) return ip(["route", "show", "table", "local"]).ok ? { known: true, via: null, gateway: false, dev: null, neighbour: null } : unknownRoute();
  const route = (routes.value as { type?: string; gateway?: string; dev?: string }[] | null)?.[0];
  if (!route) return { known: true, via: null, gateway: false, dev: null, neighbour: null };
  const via = route.gateway ?? addr;
  const neigh = ip(["neigh", "show", "to", via, ...(route.dev ? ["dev", route.dev] : [])]);
  const state = neigh.ok ? (neigh.value as { state?: string[] }[] | null)?.[0]?.state?.[0] ?? null : null;
  return { known: true, via, gateway: !!route.gateway, broadcast: route.type === "broadcast", dev: route.dev ?? null, neighbour: state };
}

function unknownRoute(): RouteFacts {
  return { known: false, via: null, gateway: false, dev: null, neighbour: null };
}

function igmpMaxMemberships(): number | null {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/igmp_max_memberships", "utf8").trim());
  } catch {
    return null;
  }
}

function views(s: Stats, listed: Listed[]): RuleView[] {
  return s.rules.map((r) => {
    const l = listed.find((x) => x.name === r.name);
    return {
      name: r.name,
      input: r.input,
      source: r.source ?? null,
      state: l?.state ?? r.state,
      reasons: l?.reasons ?? r.reasons,
      packets: r.packets,
      bytes: r.bytes,
      drops: r.drops ?? {},
      outputs: r.outputs.map((o) => ({ to: o.to, ttl: o.ttl, gso: o.gso, state: o.state, reason: o.reason, packets: o.packets, bytes: o.bytes, send_errors: o.send_errors })),
    };
  });
}

async function stats(c: ControlClient, rule?: string): Promise<Stats> {
  return c.request("stats", rule ? { rule } : undefined);
}

/** Reads everything over `windowS` seconds; traces unmatched frames on one rule's input meanwhile. */
export async function gather(c: ControlClient, o: { rule?: string; windowS: number }): Promise<DiagnoseInput> {
  const since = ((await c.request("status")) as Status).started_at;
  const first = await stats(c, o.rule);
  const target = first.rules.find((r) => r.state === "active");
  let unmatched = new Map<string, TraceRecordJson[]>();
  let traceNote: string | null = null;
  let session: string | null = null;
  if (target) {
    try {
      session = ((await c.request("trace-start", { rule: target.name, all_unmatched: true })) as { session: string }).session;
    } catch (err) {
      traceNote = `no trace of what arrives: ${(err as Error).message}`;
    }
  }
  const records: TraceRecordJson[] = [];
  const deadline = Date.now() + o.windowS * 1000;
  while (Date.now() < deadline) {
    await Bun.sleep(Math.min(200, Math.max(0, deadline - Date.now())));
    if (session) records.push(...((await c.request("trace-read", { session })) as { records: TraceRecordJson[] }).records);
  }
  if (session) records.push(...((await c.request("trace-stop", { session })) as { records: TraceRecordJson[] }).records);
  const second = await stats(c, o.rule);
  // The rules' states at the end of the window: a join's failure shows in them within a second.
  const listed = ((await c.request("list")) as { rules: Listed[] }).rules;
  if (target) {
    const iface = ifaceOf(target.input) ?? "";
    unmatched = new Map([[iface, records.filter((r) => r.verdict !== "matched")]]);
    if (!traceNote) traceNote = `frames were traced on ${iface} only`;
  }

  const rules = views(second, listed);
  const ifaces = new Set<string>();
  const routes = new Map<string, RouteFacts>();
  for (const r of rules) {
    const input = ifaceOf(r.input);
    if (input) ifaces.add(input);
    for (const out of r.outputs) {
      const iface = ifaceOf(out.to);
      if (iface) ifaces.add(iface);
      const addr = addrOf(out.to);
      if (!addr.includes(":") && !isMulticastV4(addr)) routes.set(out.to, routeFacts(addr, iface));
    }
  }
  return {
    windowS: o.windowS,
    rules,
    before: new Map(views(first, listed).map((r) => [r.name, r])),
    interfaces: new Map(second.interfaces.map((i) => [i.interface, i])),
    interfacesBefore: new Map(first.interfaces.map((i) => [i.interface, i])),
    workers: second.workers,
    workersBefore: first.workers,
    since,
    links: new Map([...ifaces].map((i) => [i, linkFacts(i)])),
    routes,
    igmpMaxMemberships: igmpMaxMemberships(),
    unmatched,
    traceNote,
  };
}
