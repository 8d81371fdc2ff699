/**
 * Where packets can be dropped outside the contender's own counters, read before and after a
 * trial: every veth's rx/tx drops, each namespace's UDP and IP counters (/proc/net/snmp,
 * /proc/net/netstat), the kernel's multicast forwarding cache (/proc/net/ip_mr_cache), the
 * per-CPU backlog drops and squeezes (/proc/net/softnet_stat, shared by all namespaces), and
 * /proc/stat CPU time (recorded; its per-CPU steal is what steal.ts uses).
 */
import { readFileSync } from "node:fs";
import type { Topology } from "../lib/netns.ts";

export interface NsCounters {
  /** ifname -> link statistics. */
  links: Record<string, { rx_packets: number; tx_packets: number; rx_dropped: number; tx_dropped: number; rx_errors: number; tx_errors: number }>;
  /** "Udp.RcvbufErrors", "Ip.InDiscards", "IpExt.InMcastPkts", ... */
  snmp: Record<string, number>;
  /** Totals over /proc/net/ip_mr_cache entries. */
  mr_cache: { entries: number; packets: number; bytes: number; wrong_if: number };
  /** Lines of /proc/net/ip_mr_vif after its header: a non-zero count means multicast routing is on. */
  mr_vifs: number;
}

export interface Snapshot {
  at_ms: number;
  ns: Record<string, NsCounters>;
  softnet: { processed: number; dropped: number; time_squeeze: number }[];
  /** /proc/stat per CPU, in USER_HZ ticks. */
  cpu: { user: number; system: number; softirq: number; irq: number; idle: number; steal: number }[];
}

const SNMP_KEEP = new Set([
  "Ip.InReceives",
  "Ip.InDiscards",
  "Ip.InHdrErrors",
  "Ip.InAddrErrors",
  "Ip.ForwDatagrams",
  "Ip.OutDiscards",
  "Ip.OutNoRoutes",
  "Udp.InDatagrams",
  "Udp.NoPorts",
  "Udp.InErrors",
  "Udp.OutDatagrams",
  "Udp.RcvbufErrors",
  "Udp.SndbufErrors",
  "Udp.InCsumErrors",
  "Udp.MemErrors",
  "IpExt.InMcastPkts",
  "IpExt.OutMcastPkts",
  "IpExt.InNoRoutes",
  "TcpExt.PFMemallocDrop",
]);

function parseSnmp(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  const lines = text.split("\n");
  for (let i = 0; i + 1 < lines.length; i++) {
    const head = lines[i]!.split(/\s+/);
    const vals = lines[i + 1]!.split(/\s+/);
    if (head[0] !== vals[0] || !head[0]?.endsWith(":") || !/^-?\d/.test(vals[1] ?? "")) continue;
    const proto = head[0].slice(0, -1);
    head.slice(1).forEach((k, j) => {
      const key = `${proto}.${k}`;
      if (SNMP_KEEP.has(key)) out[key] = Number(vals[j + 1]);
    });
    i += 1;
  }
  return out;
}

function parseLinks(json: string): NsCounters["links"] {
  const out: NsCounters["links"] = {};
  let list: { ifname: string; stats64?: { rx: Record<string, number>; tx: Record<string, number> } }[] = [];
  try {
    list = JSON.parse(json);
  } catch {
    return out;
  }
  for (const l of list) {
    if (l.ifname === "lo" || !l.stats64) continue;
    out[l.ifname] = {
      rx_packets: l.stats64.rx.packets ?? 0,
      tx_packets: l.stats64.tx.packets ?? 0,
      rx_dropped: l.stats64.rx.dropped ?? 0,
      tx_dropped: l.stats64.tx.dropped ?? 0,
      rx_errors: l.stats64.rx.errors ?? 0,
      tx_errors: l.stats64.tx.errors ?? 0,
    };
  }
  return out;
}

function parseMrCache(text: string): NsCounters["mr_cache"] {
  const out = { entries: 0, packets: 0, bytes: 0, wrong_if: 0 };
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6) continue;
    out.entries += 1;
    out.packets += Number(f[3]) || 0;
    out.bytes += Number(f[4]) || 0;
    out.wrong_if += Number(f[5]) || 0;
  }
  return out;
}

const SEP = "@@mcr-bench@@";
const NS_SCRIPT = `cat /proc/net/snmp /proc/net/netstat; echo ${SEP}; ip -j -s link show; echo ${SEP}; cat /proc/net/ip_mr_cache 2>/dev/null; echo ${SEP}; cat /proc/net/ip_mr_vif 2>/dev/null`;

export async function readNs(topo: Topology, ns: string): Promise<NsCounters> {
  const r = await topo.exec(ns, ["sh", "-c", NS_SCRIPT], { check: true });
  const [snmp = "", links = "", mr = "", vif = ""] = r.stdout.split(`${SEP}\n`);
  return {
    snmp: parseSnmp(snmp),
    links: parseLinks(links),
    mr_cache: parseMrCache(mr),
    mr_vifs: vif.split("\n").slice(1).filter((l) => l.trim().length > 0).length,
  };
}

function readSoftnet(): Snapshot["softnet"] {
  return readFileSync("/proc/net/softnet_stat", "utf8")
    .trim()
    .split("\n")
    .map((line) => {
      const f = line.trim().split(/\s+/).map((h) => Number.parseInt(h, 16));
      return { processed: f[0] ?? 0, dropped: f[1] ?? 0, time_squeeze: f[2] ?? 0 };
    });
}

/** /proc/stat per CPU, in USER_HZ ticks (read around a trial's measured part for its steal). */
export function readProcStat(): Snapshot["cpu"] {
  return readFileSync("/proc/stat", "utf8")
    .split("\n")
    .filter((l) => /^cpu\d+ /.test(l))
    .map((l) => {
      const f = l.split(/\s+/).slice(1).map(Number);
      return { user: (f[0] ?? 0) + (f[1] ?? 0), system: f[2] ?? 0, idle: (f[3] ?? 0) + (f[4] ?? 0), irq: f[5] ?? 0, softirq: f[6] ?? 0, steal: f[7] ?? 0 };
    });
}

export async function snapshot(topo: Topology, namespaces: string[]): Promise<Snapshot> {
  const entries = await Promise.all(namespaces.map(async (ns) => [ns, await readNs(topo, ns)] as const));
  return { at_ms: performance.now(), ns: Object.fromEntries(entries), softnet: readSoftnet(), cpu: readProcStat() };
}

export interface CounterDelta {
  /** "ns-short/ifname" -> drops/errors during the trial, only non-zero entries. */
  veth: Record<string, { rx_dropped: number; tx_dropped: number; rx_errors: number; tx_errors: number }>;
  /** "ns-short" -> non-zero deltas of the kept SNMP counters. */
  snmp: Record<string, Record<string, number>>;
  mr_cache: { packets: number; wrong_if: number };
  softnet: { dropped: number; time_squeeze: number; processed_per_cpu: number[] };
  proc_stat_ms: { user: number; system: number; softirq: number; irq: number; idle: number; steal: number }[];
  /** Sum of the counters that mean "a packet was dropped here". */
  drops_total: number;
}

/** `short` maps a full namespace name to the role name used in records ("relay", "sink0"). */
export function delta(a: Snapshot, b: Snapshot, short: (ns: string) => string): CounterDelta {
  const veth: CounterDelta["veth"] = {};
  const snmp: CounterDelta["snmp"] = {};
  let drops = 0;
  const mr = { packets: 0, wrong_if: 0 };
  for (const [ns, after] of Object.entries(b.ns)) {
    const before = a.ns[ns];
    if (!before) continue;
    for (const [ifname, l] of Object.entries(after.links)) {
      const p = before.links[ifname];
      if (!p) continue;
      const d = {
        rx_dropped: l.rx_dropped - p.rx_dropped,
        tx_dropped: l.tx_dropped - p.tx_dropped,
        rx_errors: l.rx_errors - p.rx_errors,
        tx_errors: l.tx_errors - p.tx_errors,
      };
      if (d.rx_dropped || d.tx_dropped || d.rx_errors || d.tx_errors) veth[`${short(ns)}/${ifname}`] = d;
      drops += d.rx_dropped + d.tx_dropped;
    }
    const s: Record<string, number> = {};
    for (const [k, v] of Object.entries(after.snmp)) {
      const dv = v - (before.snmp[k] ?? 0);
      if (dv !== 0) s[k] = dv;
    }
    if (Object.keys(s).length) snmp[short(ns)] = s;
    drops += (s["Udp.RcvbufErrors"] ?? 0) + (s["Udp.SndbufErrors"] ?? 0) + (s["Ip.InDiscards"] ?? 0) + (s["Ip.OutDiscards"] ?? 0);
    // An ipmr cache entry lives as long as the daemon: compare entries present in both.
    mr.packets += Math.max(0, after.mr_cache.packets - before.mr_cache.packets);
    mr.wrong_if += Math.max(0, after.mr_cache.wrong_if - before.mr_cache.wrong_if);
  }
  const softnet = {
    dropped: b.softnet.reduce((n, c, i) => n + c.dropped - (a.softnet[i]?.dropped ?? 0), 0),
    time_squeeze: b.softnet.reduce((n, c, i) => n + c.time_squeeze - (a.softnet[i]?.time_squeeze ?? 0), 0),
    processed_per_cpu: b.softnet.map((c, i) => c.processed - (a.softnet[i]?.processed ?? 0)),
  };
  drops += softnet.dropped;
  const tick_ms = 10; // USER_HZ is 100 on Linux.
  const proc_stat_ms = b.cpu.map((c, i) => {
    const p = a.cpu[i]!;
    return {
      user: (c.user - p.user) * tick_ms,
      system: (c.system - p.system) * tick_ms,
      softirq: (c.softirq - p.softirq) * tick_ms,
      irq: (c.irq - p.irq) * tick_ms,
      idle: (c.idle - p.idle) * tick_ms,
      steal: (c.steal - p.steal) * tick_ms,
    };
  });
  return { veth, snmp, mr_cache: mr, softnet, proc_stat_ms, drops_total: drops };
}

/** What is arriving at a sink namespace: UDP datagrams so far and bytes queued on `port`. */
export async function sinkProgress(topo: Topology, ns: string, port: number): Promise<{ datagrams: number; queuedBytes: number }> {
  const r = await topo.exec(ns, ["sh", "-c", `cat /proc/net/snmp; echo ${SEP}; cat /proc/net/udp`]);
  const [snmp = "", udp = ""] = r.stdout.split(`${SEP}\n`);
  const datagrams = parseSnmp(snmp)["Udp.InDatagrams"] ?? 0;
  const portHex = port.toString(16).toUpperCase().padStart(4, "0");
  let queuedBytes = 0;
  for (const line of udp.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || !f[1]?.endsWith(`:${portHex}`)) continue;
    queuedBytes += Number.parseInt(f[4]!.split(":")[1] ?? "0", 16) || 0;
  }
  return { datagrams, queuedBytes };
}

/**
 * Waits until nothing more reaches the sinks: no new datagram in any sink namespace for
 * `quietMs` and no byte left in their sockets' queues, or `maxMs` passed. Returns the wait in ms.
 */
export async function waitDrained(topo: Topology, sinks: string[], port: number, quietMs: number, maxMs: number): Promise<number> {
  const started = performance.now();
  let last = -1;
  let quietSince = performance.now();
  for (;;) {
    const p = await Promise.all(sinks.map((ns) => sinkProgress(topo, ns, port)));
    const total = p.reduce((n, x) => n + x.datagrams, 0);
    const queued = p.reduce((n, x) => n + x.queuedBytes, 0);
    const now = performance.now();
    if (total !== last || queued > 0) {
      last = total;
      quietSince = now;
    } else if (now - quietSince >= quietMs) {
      return now - started;
    }
    if (now - started >= maxMs) return now - started;
    await Bun.sleep(50);
  }
}
