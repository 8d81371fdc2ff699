// The supervisor's view of the network: links and their addresses from rtnetlink, kept by a
// full dump at start and after any overflow, and by change notifications in between. Changes
// are reported as events (for reconciliation and for `mcrelay events`). A timer reads the
// socket every POLL_MS: one native call returns every waiting change, already parsed.
// A dump that cannot be sent (ENOBUFS or ENOMEM under memory pressure), that ends in an error or
// is interrupted is dropped and a full one is asked for again at the next poll: the table is
// never taken from an incomplete dump, and the timer never throws.
import { parseIp } from "../base/address.ts";
import { logger } from "../log.ts";
import { NetlinkSocket } from "../native/lib.ts";
import { IFF_UP, type NlEvent } from "../native/abi.ts";
import type { LinkFacts } from "../rules/rule.ts";
import { describe, type LinkEvent } from "../control/events.ts";

const log = logger("netlink");

export const POLL_MS = 50;
/** Poll interval until the first full dump is complete (start-up). */
const STARTUP_POLL_MS = 1;

/**
 * One address of a link. The kernel keys an IPv4 address by address and prefix length (10.0.0.1/24
 * and 10.0.0.1/16 can both be on a link, and deleting one leaves the other), so we do too; the
 * prefix length also says which subnet broadcast address an output must not use.
 */
interface Addr {
  addr: string;
  prefixlen: number;
}

interface Link {
  name: string;
  ifindex: number;
  flags: number;
  mtu: number;
  /** IPv4 addresses in the order the kernel reported them; the first is the primary. */
  v4: Addr[];
  v6: Addr[];
}

type Table = Map<number, Link>;

/** The netlink calls the monitor makes (a `NetlinkSocket`; tests wrap one to make a call fail). */
export type LinkSource = Pick<NetlinkSocket, "dump" | "read" | "close">;

function clone(t: Table): Table {
  const out: Table = new Map();
  for (const [k, l] of t) out.set(k, { ...l, v4: l.v4.map((a) => ({ ...a })), v6: l.v6.map((a) => ({ ...a })) });
  return out;
}

function addrKey(a: Addr): string {
  return `${a.addr}/${a.prefixlen}`;
}

export class LinkMonitor {
  #nl: LinkSource;
  #current: Table = new Map();
  /** The table as last reported to listeners: changes are always reported against it. */
  #reported: Table = new Map();
  #initialReported = false;
  /** The table being rebuilt by a dump, and the dumps still to run. */
  #next: Table | null = null;
  #dumpSeq = -1;
  #dumpQueue: ("links" | "addresses")[] = [];
  /** Why a full dump must be asked for at the next poll (the last request could not be sent). */
  #dumpRetry: string | null = null;
  /**
   * Links deleted since the last report, by ifindex. An interface deleted and created again with
   * the same index within one poll (moved to another namespace and back, `ip link add ... index
   * N`) looks unchanged in the table, but packet sockets bound to the old one are dead: the report
   * says `link-recreated` for it and its incarnation changes (`LinkFacts.incarnation`).
   */
  #deleted = new Set<number>();
  /** Incarnation of each link recreated with the same index (absent: 0). */
  #incarnations = new Map<number, number>();
  #incarnationNext = 1;
  #timer: ReturnType<typeof setInterval>;
  #readyResolve!: () => void;
  readonly ready: Promise<void>;
  #listeners: ((events: LinkEvent[]) => void)[] = [];
  dumps = 0;
  overflows = 0;
  #closed = false;

  constructor(opts: { source?: LinkSource } = {}) {
    this.#nl = opts.source ?? NetlinkSocket.open();
    this.ready = new Promise((r) => (this.#readyResolve = r));
    this.#startFullDump("start");
    this.#timer = setInterval(() => this.poll(), POLL_MS);
    // Start-up waits for the first complete table (two dumps, links then addresses): read it
    // every millisecond instead of every POLL_MS, which alone cost `run` about 100 ms.
    const early = () => {
      if (this.dumps > 0 || this.#closed) return;
      this.poll();
      setTimeout(early, STARTUP_POLL_MS);
    };
    setTimeout(early, 0);
  }

  onChange(fn: (events: LinkEvent[]) => void): void {
    this.#listeners.push(fn);
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#nl.close();
  }

  /** The link named `name` as the rules need it, or null when it does not exist. */
  lookup(name: string): LinkFacts | null {
    for (const l of this.#current.values()) {
      if (l.name !== name) continue;
      return {
        ifindex: l.ifindex,
        mtu: l.mtu,
        flags: l.flags,
        addr4: l.v4[0]?.addr ?? null,
        addr6: [...new Set(l.v6.map((a) => a.addr))],
        net4: l.v4.map((a) => ({ ...a })),
        incarnation: this.#incarnations.get(l.ifindex) ?? 0,
      };
    }
    return null;
  }

  #startFullDump(reason: string): void {
    if (this.#next) {
      // A dump is running: run a complete one again after it.
      this.#dumpQueue = ["links", "addresses"];
      return;
    }
    log.debug(`full dump (${reason})`);
    this.#next = new Map();
    this.#dumpQueue = ["addresses"];
    this.#request("links");
  }

  /**
   * Sends one dump request. A send that fails (ENOBUFS, ENOMEM) drops the dump in progress and
   * asks for a full one at the next poll; the table reported so far stays as it was.
   */
  #request(what: "links" | "addresses"): void {
    try {
      this.#dumpSeq = this.#nl.dump(what);
    } catch (err) {
      this.#abandonDump(`netlink dump request (${what}) failed: ${(err as Error).message}`);
    }
  }

  /** Drops the dump in progress; a full one is asked for at the next poll. */
  #abandonDump(why: string): void {
    log.warn(`${why}; reading everything again`);
    this.#next = null;
    this.#dumpQueue = [];
    this.#dumpSeq = -1;
    this.#dumpRetry = why;
  }

  /** Reads and applies every waiting change; public so tests and shutdown can flush. */
  poll(): void {
    if (this.#dumpRetry !== null && !this.#next) {
      const why = this.#dumpRetry;
      this.#dumpRetry = null;
      this.#startFullDump(`retry: ${why}`);
    }
    let events: NlEvent[];
    try {
      events = this.#nl.read();
    } catch (err) {
      log.error(`netlink read failed: ${(err as Error).message}`);
      return;
    }
    if (events.length === 0) return;
    let resync: string | null = null;
    for (const e of events) {
      if (e.kind === "overflow") {
        this.overflows += 1;
        if (this.#next && e.seq !== 0 && e.seq === this.#dumpSeq) {
          // Our dump ended in an error or was interrupted (zig/netlink.zig): what it read is
          // incomplete. Its table is dropped; the full dump below starts over.
          resync = `netlink dump ended incomplete${e.flags ? ` (errno ${e.flags})` : " (interrupted)"}, re-reading everything`;
          this.#next = null;
          this.#dumpQueue = [];
          this.#dumpSeq = -1;
        } else {
          resync = "netlink overflow: changes were lost, re-reading everything";
        }
        continue;
      }
      if (e.kind === "failed") {
        log.warn(`netlink request failed: errno ${e.flags}`);
        // A refused dump request never ends with DONE: without this the table would wait for it.
        if (this.#next && e.seq === this.#dumpSeq) this.#abandonDump(`netlink dump refused (errno ${e.flags})`);
        continue;
      }
      if (e.kind === "dump_done") {
        if (this.#next && e.seq === this.#dumpSeq) this.#dumpStep();
        continue;
      }
      this.#apply(this.#next ?? this.#current, e);
    }
    if (resync) {
      log.warn(resync);
      this.#emit([{ type: "resync", reason: resync }]);
      this.#startFullDump("overflow");
    }
    // While a dump runs, or one is still to be asked for again, the table is incomplete: report
    // once it is whole again.
    if (!this.#next && this.#dumpRetry === null) this.#report();
  }

  #report(): void {
    const events = diff(this.#reported, this.#current, this.#deleted);
    // A link deleted and created again under the same index is another interface: its facts get a
    // new incarnation, so what is bound to it (a plane of packet sockets) is rebuilt.
    for (const ifindex of this.#deleted) {
      if (this.#current.has(ifindex)) this.#incarnations.set(ifindex, this.#incarnationNext++);
      else this.#incarnations.delete(ifindex);
    }
    this.#deleted.clear();
    this.#reported = clone(this.#current);
    // The first report lists every interface and address the host has: one line at info, the
    // details at debug (a router with 50 interfaces would otherwise log 150 lines at start).
    const initial = !this.#initialReported;
    this.#initialReported = true;
    if (initial) {
      const names = [...this.#current.values()].map((l) => l.name);
      log.info(`${names.length} interfaces: ${names.join(", ")}`);
    }
    this.#emit(events, initial ? "debug" : "info");
  }

  #dumpStep(): void {
    const what = this.#dumpQueue.shift();
    if (what) {
      if (what === "links") this.#next = new Map();
      this.#request(what);
      return;
    }
    this.#current = this.#next!;
    this.#next = null;
    this.dumps += 1;
    if (this.dumps === 1) this.#readyResolve();
  }

  #apply(t: Table, e: NlEvent): void {
    switch (e.kind) {
      case "link_new": {
        const old = t.get(e.ifindex);
        t.set(e.ifindex, { name: e.name || old?.name || `if${e.ifindex}`, ifindex: e.ifindex, flags: e.flags, mtu: e.mtu || old?.mtu || 0, v4: old?.v4 ?? [], v6: old?.v6 ?? [] });
        return;
      }
      case "link_del":
        t.delete(e.ifindex);
        this.#deleted.add(e.ifindex);
        return;
      case "addr_new":
      case "addr_del": {
        const link = t.get(e.ifindex);
        if (!link || !e.addr) return;
        const entry = { addr: parseIp(e.addr)?.text ?? e.addr, prefixlen: e.prefixlen };
        const list = e.family === 4 ? link.v4 : link.v6;
        const at = list.findIndex((a) => a.addr === entry.addr && a.prefixlen === entry.prefixlen);
        if (e.kind === "addr_new" && at < 0) list.push(entry);
        if (e.kind === "addr_del" && at >= 0) list.splice(at, 1);
        return;
      }
    }
  }

  #emit(events: LinkEvent[], level: "info" | "debug" = "info"): void {
    if (events.length === 0) return;
    for (const ev of events) log[level](describe(ev));
    for (const fn of this.#listeners) fn(events);
  }
}

function byName(t: Table): Map<string, Link> {
  return new Map([...t.values()].map((l) => [l.name, l]));
}

/**
 * What changed between two tables, by interface name (what rules refer to). `deleted`: indexes
 * of links deleted meanwhile; one present in both tables under the same name was recreated.
 */
export function diff(before: Table, after: Table, deleted: ReadonlySet<number> = new Set()): LinkEvent[] {
  const out: LinkEvent[] = [];
  const a = byName(before);
  const b = byName(after);
  for (const [name, old] of a) {
    if (!b.has(name)) out.push({ type: "link-removed", interface: name, ifindex: old.ifindex });
  }
  for (const [name, now] of b) {
    const old = a.get(name);
    if (!old) {
      out.push({ type: "link-added", interface: name, ifindex: now.ifindex, up: (now.flags & IFF_UP) !== 0, mtu: now.mtu });
      for (const a of [...now.v4, ...now.v6]) out.push({ type: "address-added", interface: name, address: a.addr, prefixlen: a.prefixlen });
      continue;
    }
    if (old.ifindex !== now.ifindex || deleted.has(now.ifindex)) out.push({ type: "link-recreated", interface: name, from_ifindex: old.ifindex, ifindex: now.ifindex });
    const wasUp = (old.flags & IFF_UP) !== 0;
    const isUp = (now.flags & IFF_UP) !== 0;
    if (wasUp !== isUp) out.push({ type: isUp ? "link-up" : "link-down", interface: name, ifindex: now.ifindex });
    if (old.mtu !== now.mtu) out.push({ type: "mtu-changed", interface: name, ifindex: now.ifindex, from: old.mtu, to: now.mtu });
    // By address and prefix length: a prefix that changed is the old one removed, the new added.
    const oldAddrs = new Map([...old.v4, ...old.v6].map((a) => [addrKey(a), a]));
    const newAddrs = new Map([...now.v4, ...now.v6].map((a) => [addrKey(a), a]));
    for (const [k, a] of newAddrs) if (!oldAddrs.has(k)) out.push({ type: "address-added", interface: name, address: a.addr, prefixlen: a.prefixlen });
    for (const [k, a] of oldAddrs) if (!newAddrs.has(k)) out.push({ type: "address-removed", interface: name, address: a.addr, prefixlen: a.prefixlen });
  }
  return out;
}
