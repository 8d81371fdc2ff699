// The counter book: totals per rule, output and interface that survive worker restarts (a
// retired worker's last counts are kept), and per-second rates from successive samples.
import { describe, expect, test } from "bun:test";
import { PARSE_DROPS, RULE_DROPS, WORKER_COUNTERS } from "../../src/native/abi.ts";
import type { DataplaneSnapshot } from "../../src/stats/decode.ts";
import { CounterBook, GONE_INTERFACE_KEEP_MS } from "../../src/supervisor/counters.ts";

interface SnapOptions {
  rules?: [string, number, number, Partial<Record<(typeof RULE_DROPS)[number], number>>?][];
  outputs?: [string, number, number, Record<string, number>?][];
  worker?: Partial<Record<(typeof WORKER_COUNTERS)[number], number>>;
  drops?: Partial<Record<(typeof PARSE_DROPS)[number], number>>;
}

function snap(o: SnapOptions): DataplaneSnapshot {
  const worker = Object.fromEntries(WORKER_COUNTERS.map((n) => [n, o.worker?.[n] ?? 0])) as DataplaneSnapshot["worker"];
  const parseDrops = Object.fromEntries(PARSE_DROPS.map((n) => [n, o.drops?.[n] ?? 0])) as DataplaneSnapshot["parseDrops"];
  return {
    generation: 1,
    worker,
    parseDrops,
    rules: (o.rules ?? []).map(([id, packets, bytes, drops]) => ({
      id,
      packets,
      bytes,
      drops: Object.fromEntries(RULE_DROPS.map((n) => [n, drops?.[n] ?? 0])) as DataplaneSnapshot["rules"][number]["drops"],
      inputErrno: 0,
    })),
    outputs: (o.outputs ?? []).map(([id, packets, bytes, sendErrors]) => ({ id, packets, bytes, sendErrors: sendErrors ?? {} })),
  };
}

describe("counter book", () => {
  test("a live worker's latest snapshot replaces its earlier one (snapshots are cumulative)", () => {
    const book = new CounterBook();
    book.observe("eth0/100", "eth0", snap({ rules: [["1", 10, 1000]] }));
    book.observe("eth0/100", "eth0", snap({ rules: [["1", 25, 2500]] }));
    expect(book.totals().rules.get("1")).toMatchObject({ packets: 25, bytes: 2500 });
  });

  test("a retired worker's final counts are kept and the new worker's are added to them", () => {
    const book = new CounterBook();
    const final = snap({ rules: [["1", 10, 1000]], outputs: [["o1", 10, 1000, { ENOBUFS: 2 }]], worker: { rx_frames: 12 }, drops: { not_udp: 1 } });
    book.observe("eth0/100", "eth0", snap({ rules: [["1", 7, 700]] }));
    book.retire("eth0/100", "eth0", final);
    // The replacement starts counting from zero.
    book.observe("eth0/200", "eth0", snap({ rules: [["1", 5, 500]], outputs: [["o1", 5, 500, { ENOBUFS: 1, EAGAIN: 3 }]], worker: { rx_frames: 6 }, drops: { not_udp: 2 } }));
    const t = book.totals();
    expect(t.rules.get("1")).toMatchObject({ packets: 15, bytes: 1500 });
    expect(t.outputs.get("o1")).toEqual({ packets: 15, bytes: 1500, sendErrors: { ENOBUFS: 3, EAGAIN: 3 } });
    expect(t.interfaces.get("eth0")?.worker.rx_frames).toBe(18);
    expect(t.interfaces.get("eth0")?.parseDrops.not_udp).toBe(3);
  });

  test("a retired worker's last live snapshot is not counted on top of its final one", () => {
    const book = new CounterBook();
    book.observe("eth0/100", "eth0", snap({ rules: [["1", 10, 1000]] }));
    book.retire("eth0/100", "eth0", snap({ rules: [["1", 14, 1400]] }));
    expect(book.totals().rules.get("1")).toMatchObject({ packets: 14, bytes: 1400 });
  });

  test("totals stay exact over many restarts of one interface's worker", () => {
    const book = new CounterBook();
    for (let i = 0; i < 50; i++) {
      book.observe(`eth0/${i}`, "eth0", snap({ rules: [["1", i, i * 100]] }));
      book.retire(`eth0/${i}`, "eth0", snap({ rules: [["1", 100, 10_000]] }));
    }
    book.observe("eth0/live", "eth0", snap({ rules: [["1", 3, 300]] }));
    expect(book.totals().rules.get("1")).toMatchObject({ packets: 5003, bytes: 500_300 });
  });

  test("totals add workers of different interfaces for a rule id, and keep interfaces apart", () => {
    const book = new CounterBook();
    book.observe("eth0/1", "eth0", snap({ rules: [["1", 1, 10]], worker: { matched: 1 } }));
    book.observe("eth1/2", "eth1", snap({ rules: [["2", 2, 20]], worker: { matched: 2 } }));
    const t = book.totals();
    expect(t.rules.get("1")).toMatchObject({ packets: 1, bytes: 10 });
    expect(t.rules.get("2")).toMatchObject({ packets: 2, bytes: 20 });
    expect(t.interfaces.get("eth0")?.worker.matched).toBe(1);
    expect(t.interfaces.get("eth1")?.worker.matched).toBe(2);
  });

  test("per-rule drop counters are totalled across a worker restart like packets", () => {
    const book = new CounterBook();
    book.observe("eth0/1", "eth0", snap({ rules: [["1", 0, 0, { source_mismatch: 4 }]] }));
    book.retire("eth0/1", "eth0", snap({ rules: [["1", 0, 0, { source_mismatch: 7, own_source: 1 }]] }));
    book.observe("eth0/2", "eth0", snap({ rules: [["1", 0, 0, { source_mismatch: 2 }]] }));
    expect(book.totals().rules.get("1")!.drops).toEqual({ source_mismatch: 9, own_source: 1, loop_drops: 0, cap_drops: 0 });
  });

  test("totals() returns copies: changing them does not change the book", () => {
    const book = new CounterBook();
    const final = snap({ rules: [["1", 10, 1000]], outputs: [["o", 1, 1, { EAGAIN: 1 }]] });
    book.observe("eth0/100", "eth0", final);
    book.retire("eth0/100", "eth0", final);
    const t = book.totals();
    t.rules.get("1")!.packets = 1_000_000;
    t.outputs.get("o")!.sendErrors.EAGAIN = 1_000_000;
    t.interfaces.get("eth0")!.worker.rx_frames = 1_000_000;
    const again = book.totals();
    expect(again.rules.get("1")!.packets).toBe(10);
    expect(again.outputs.get("o")!.sendErrors.EAGAIN).toBe(1);
    expect(again.interfaces.get("eth0")!.worker.rx_frames).toBe(0);
  });

  test("rates come from two samples; a restart in between does not give a negative or doubled rate", () => {
    const book = new CounterBook();
    book.observe("eth0/100", "eth0", snap({ rules: [["1", 1000, 100_000]], outputs: [["o", 1000, 100_000]] }));
    book.sample(0);
    book.observe("eth0/100", "eth0", snap({ rules: [["1", 3000, 300_000]], outputs: [["o", 3000, 300_000]] }));
    book.sample(2000);
    expect(book.rates().rules.get("1")).toMatchObject({ pps: 1000, bps: 800_000 });
    expect(book.rates().outputs.get("o")).toEqual({ pps: 1000, bps: 800_000 });
    // The worker dies (its last counts retire), a new one has counted 500 in the next second.
    book.retire("eth0/100", "eth0", snap({ rules: [["1", 3000, 300_000]], outputs: [["o", 3000, 300_000]] }));
    book.observe("eth0/200", "eth0", snap({ rules: [["1", 500, 50_000]] }));
    book.sample(3000);
    expect(book.rates().rules.get("1")).toMatchObject({ pps: 500, bps: 400_000 });
  });
});

describe("counter book under rule churn", () => {
  const none = { rules: new Set<string>(), outputs: new Set<string>(), interfaces: new Set<string>() };

  test("1,000 rules added and removed on 1,000 interfaces: the book keeps only what rules there are now name", () => {
    const book = new CounterBook();
    const keep = { rules: new Set(["k"]), outputs: new Set(["ko"]), interfaces: new Set(["eth0"]) };
    let t = 0;
    for (let i = 0; i < 1000; i++) {
      // The kept rule's ring on eth0 restarts each round; rule i lives one round on its own interface.
      book.observe(`eth0/${i}`, "eth0", snap({ rules: [["k", 1, 10]], outputs: [["ko", 1, 10]], worker: { rx_frames: 1 } }));
      book.retire(`eth0/${i}`, "eth0", snap({ rules: [["k", 1, 10]], outputs: [["ko", 1, 10]], worker: { rx_frames: 1 } }));
      book.observe(`x${i}/1`, `x${i}`, snap({ rules: [[`r${i}`, 5, 50]], outputs: [[`o${i}`, 5, 50]] }));
      book.retire(`x${i}/1`, `x${i}`, snap({ rules: [[`r${i}`, 5, 50]], outputs: [[`o${i}`, 5, 50]] }));
      book.prune(keep, (t += 1000));
    }
    const totals = book.totals();
    expect([...totals.rules.keys()]).toEqual(["k"]);
    expect([...totals.outputs.keys()]).toEqual(["ko"]);
    // The kept rule's and interface's counts went on across every restart.
    expect(totals.rules.get("k")).toMatchObject({ packets: 1000, bytes: 10_000 });
    expect(totals.interfaces.get("eth0")!.worker.rx_frames).toBe(1000);
    // Interfaces no rule reads from stay for GONE_INTERFACE_KEEP_MS (one round a second here), then go.
    const rounds = GONE_INTERFACE_KEEP_MS / 1000;
    expect(totals.interfaces.size).toBe(1 + rounds);
    book.prune(keep, t + GONE_INTERFACE_KEEP_MS);
    expect([...book.totals().interfaces.keys()]).toEqual(["eth0"]);
  });

  test("an interface a worker still serves, or a rule reads from again within the grace, keeps its totals", () => {
    const book = new CounterBook();
    book.observe("eth1/1", "eth1", snap({ worker: { rx_frames: 3 } }));
    book.retire("eth1/1", "eth1", snap({ worker: { rx_frames: 3 } }));
    book.observe("eth1/2", "eth1", snap({ worker: { rx_frames: 4 } }));
    book.prune(none, 0);
    book.prune(none, GONE_INTERFACE_KEEP_MS * 2);
    expect(book.totals().interfaces.get("eth1")!.worker.rx_frames).toBe(7);
    book.retire("eth1/2", "eth1", snap({ worker: { rx_frames: 4 } }));
    book.prune(none, GONE_INTERFACE_KEEP_MS * 3);
    book.prune({ ...none, interfaces: new Set(["eth1"]) }, GONE_INTERFACE_KEEP_MS * 3 + 1);
    book.prune(none, GONE_INTERFACE_KEEP_MS * 4);
    expect(book.totals().interfaces.get("eth1")!.worker.rx_frames).toBe(7);
    book.prune(none, GONE_INTERFACE_KEEP_MS * 5);
    expect(book.totals().interfaces.has("eth1")).toBe(false);
  });
});
