// The link monitor survives a netlink dump request that cannot be sent: `sendto` fails with
// ENOBUFS or ENOMEM under memory pressure, which cannot be caused on demand, so these tests wrap
// a real rtnetlink socket (the host's own links and addresses) and make chosen dump requests
// throw as the native call does. The monitor must neither throw from its timer (the supervisor
// has no uncaughtException handler) nor wait for ever for a dump that was never sent: it asks
// for a full dump again at the next poll, and reports changes again once it has one.
// Needs the native library (zig-out/lib/libmcrelay.so).
import { afterEach, expect, test } from "bun:test";
import { NativeError } from "../../src/errors.ts";
import type { NlEvent } from "../../src/native/abi.ts";
import { NetlinkSocket } from "../../src/native/lib.ts";
import type { LinkEvent } from "../../src/control/events.ts";
import { LinkMonitor, type LinkSource } from "../../src/supervisor/link-monitor.ts";

const ENOBUFS = 105;
const EMSGSIZE = 90;

/** A real netlink socket whose dump requests number `failing` (1 = the first) throw ENOBUFS. */
class FlakySource implements LinkSource {
  readonly #nl = NetlinkSocket.open();
  readonly #failing: ReadonlySet<number>;
  readonly #incomplete: ReadonlySet<number>;
  readonly #incompleteSeqs = new Set<number>();
  dumps = 0;
  /** Events handed out with the next read, as if the kernel had sent them. */
  inject: NlEvent[] = [];

  /**
   * `failing`: dump requests that throw; `incomplete`: dumps whose DONE arrives carrying an error
   * (EMSGSIZE), as zig/netlink.zig reports it: an overflow with the dump's seq, after an entry
   * (the link mcr-ghost0) that a complete dump would not have.
   */
  constructor(failing: number[], incomplete: number[] = []) {
    this.#failing = new Set(failing);
    this.#incomplete = new Set(incomplete);
  }

  dump(what: "links" | "addresses"): number {
    this.dumps += 1;
    if (this.#failing.has(this.dumps)) throw NativeError.fromErrno(`netlink dump ${what}`, ENOBUFS);
    const seq = this.#nl.dump(what);
    if (this.#incomplete.has(this.dumps)) this.#incompleteSeqs.add(seq);
    return seq;
  }

  read(): NlEvent[] {
    const out: NlEvent[] = [];
    for (const e of this.#nl.read()) {
      if (e.kind === "dump_done" && this.#incompleteSeqs.has(e.seq)) {
        out.push({ ...fakeLink(999_998, "mcr-ghost0"), seq: e.seq }, { ...e, kind: "overflow", flags: EMSGSIZE });
      } else {
        out.push(e);
      }
    }
    return [...out, ...this.inject.splice(0)];
  }

  close(): void {
    this.#nl.close();
  }
}

const monitors: LinkMonitor[] = [];
afterEach(() => {
  for (const m of monitors.splice(0)) m.close();
});

async function within<T>(what: string, p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function waitUntil(what: string, ok: () => boolean, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await Bun.sleep(10);
  }
}

function fakeLink(ifindex: number, name: string): NlEvent {
  return { kind: "link_new", ifindex, flags: 1, mtu: 1500, seq: 0, family: 0, prefixlen: 0, addr: null, name };
}

test("a link dump request that fails at start is sent again at the next poll, and the monitor gets ready", async () => {
  const source = new FlakySource([1]);
  const m = new LinkMonitor({ source });
  monitors.push(m);
  await within("ready", m.ready, 3_000);
  expect(m.dumps).toBe(1);
  expect(source.dumps).toBe(3); // the failed links request, then links and addresses
  expect(m.lookup("lo")?.ifindex).toBe(1);
});

test("an address dump request that fails half-way through the start-up dump does not throw from the timer; the full dump is read again", async () => {
  const source = new FlakySource([2]);
  const m = new LinkMonitor({ source });
  monitors.push(m);
  await within("ready", m.ready, 3_000);
  expect(source.dumps).toBe(4); // links, failed addresses, links, addresses
  expect(m.lookup("lo")?.net4).toContainEqual({ addr: "127.0.0.1", prefixlen: 8 });
});

test("after an overflow whose re-dump request fails, the monitor re-reads everything and reports changes again", async () => {
  const source = new FlakySource([3]);
  const m = new LinkMonitor({ source });
  monitors.push(m);
  const seen: LinkEvent[] = [];
  m.onChange((events) => seen.push(...events));
  await within("ready", m.ready, 3_000);

  source.inject.push({ kind: "overflow", ifindex: 0, flags: 0, mtu: 0, seq: 0, family: 0, prefixlen: 0, addr: null, name: "" });
  await waitUntil("the resync", () => seen.some((e) => e.type === "resync"), 3_000);
  await waitUntil("a complete re-read", () => m.dumps === 2, 3_000);
  expect(source.dumps).toBe(5); // links, addresses, failed links, links, addresses

  // The table is whole again: a change is reported.
  source.inject.push(fakeLink(999_999, "mcr-fake0"));
  await waitUntil("the fake link reported", () => seen.some((e) => e.type === "link-added" && e.interface === "mcr-fake0"), 3_000);
  expect(m.lookup("mcr-fake0")?.ifindex).toBe(999_999);
});

test("a dump whose DONE carries an error is dropped and read again, not taken as the table", async () => {
  const source = new FlakySource([], [2]);
  const m = new LinkMonitor({ source });
  monitors.push(m);
  await within("ready", m.ready, 3_000);
  expect(source.dumps).toBe(4); // links, addresses (ended in EMSGSIZE), links, addresses
  expect(m.dumps).toBe(1);
  expect(m.overflows).toBe(1);
  expect(m.lookup("mcr-ghost0")).toBeNull();
  expect(m.lookup("lo")?.ifindex).toBe(1);
});
