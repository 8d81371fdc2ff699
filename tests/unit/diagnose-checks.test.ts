// The checks fed directly with what gather would read: faults a namespace cannot make any
// more (`run` itself refuses to start without CAP_NET_RAW, exit 5, so a worker failing for want
// of a capability is given as the worker manager reports it), and the two readings a window
// apart that tell a problem now from an old total.
import { describe, expect, test } from "bun:test";
import { checkGso, checkInterfaces, checkJoinErrors, checkJoins, checkLoopsAndCaps, checkMtu, checkWorkers, diagnose, type DiagnoseInput, type RuleView, type WorkerView } from "../../src/diagnose/checks.ts";

function input(workers: DiagnoseInput["workers"], workersBefore: DiagnoseInput["workers"] = workers): DiagnoseInput {
  return {
    windowS: 2, rules: [], before: new Map(), interfaces: new Map(), interfacesBefore: new Map(), workers, workersBefore,
    since: "2026-12-02T10:00:00.000Z", links: new Map(), routes: new Map(), igmpMaxMemberships: 20, unmatched: new Map(), traceNote: null,
  };
}

function rule(o: Partial<RuleView> & { to?: string[] } = {}): RuleView {
  const { to = ["239.2.2.2:6000@eth1"], ...rest } = o;
  return {
    name: "r", input: "239.1.1.1:5000@eth0", source: null, state: "active", reasons: [], packets: 0, bytes: 0, drops: {},
    outputs: to.map((t) => ({ to: t, ttl: 8, gso: true, state: "active", reason: null, packets: 0, bytes: 0, send_errors: {} })),
    ...rest,
  };
}

const link = (o: { ipv4?: string[]; ipv6?: string[]; mtu?: number } = {}) => ({ exists: true, up: true, mtu: o.mtu ?? 1500, ipv4: o.ipv4 ?? [], ipv6: o.ipv6 ?? [] });
const worker = (restarts: number, o: Partial<WorkerView> = {}): WorkerView => ({ interface: "eth0", slot: 0, state: "running", restarts, backoff_ms: 0, last_error: restarts ? "exited (SIGKILL)" : null, ...o });

describe("diagnose: worker checks", () => {
  test("a worker failing with EPERM names the capabilities and a system call filter as the possible causes", () => {
    const f = checkWorkers(input([{ interface: "eth0", slot: 0, state: "backoff", restarts: 3, backoff_ms: 2000, last_error: "ring setup eth0: EPERM" }]));
    expect(f).toHaveLength(1);
    expect(f[0]).toMatchObject({ check: "capabilities", severity: "error" });
    expect(f[0]!.what).not.toContain("for want of privileges");
    expect(f[0]!.fix).toContain("CAP_NET_RAW");
    expect(f[0]!.fix).toContain("SystemCallFilter=");
    expect(f[0]!.fix).toContain("docs/operations.md");
  });

  test("a worker in backoff for another reason is worker-backoff; one restarted during the window is a warning; errors come first", () => {
    const now = [worker(2, { interface: "eth1" }), worker(1, { state: "backoff", backoff_ms: 500, last_error: "exited (code 1)" })];
    const all = diagnose(input(now, [worker(1, { interface: "eth1" }), worker(1, { state: "backoff", backoff_ms: 500 })]));
    expect(all.map((x) => `${x.severity} ${x.check}`)).toEqual(["error worker-backoff", "warning worker-restarts"]);
  });

  test("restarts all before the window are a note with the total and since when, not a warning", () => {
    const f = diagnose(input([worker(3)], [worker(3)]));
    expect(f.map((x) => `${x.severity} ${x.check}`)).toEqual(["info worker-restarts"]);
    expect(f[0]!.what).toContain("restarted 3 times since the daemon started at 2026-12-02T10:00:00.000Z");
  });

  test("an old EPERM in a running worker's last error is no capability error once it runs", () => {
    const w = worker(1, { last_error: "ring setup eth0: EPERM" });
    expect(checkWorkers(input([w], [w])).map((x) => `${x.severity} ${x.check}`)).toEqual(["info worker-restarts"]);
  });
});

describe("diagnose: GSO note", () => {
  const rule = (gso: boolean) => ({
    name: "r", input: "239.1.1.1:5000@eth0", source: null, state: "active", reasons: [], packets: 10, bytes: 1000, drops: {},
    outputs: [{ to: "239.2.2.2:6000@eth1", ttl: 8, gso, state: "active", reason: null, packets: 10, bytes: 1000, send_errors: {} }],
  });
  test("an output sent as GSO batches gets a note (not a problem); gso=off gets none", () => {
    const d = input([]);
    d.interfaces.set("eth0", { counters: { tx_gso_sends: 5 }, parse_drops: {} });
    const f = checkGso(d, rule(true));
    expect(f).toHaveLength(1);
    expect(f[0]).toMatchObject({ check: "gso-batches", severity: "info" });
    expect(checkGso(d, rule(false))).toEqual([]);
  });
});

describe("diagnose: output interfaces by the output's family", () => {
  test("an IPv6 output on an interface with only a link-local IPv6 address has what it needs", () => {
    const d = input([]);
    d.links.set("eth0", link({ ipv4: ["10.0.0.1"] }));
    d.links.set("eth1", link({ ipv6: ["fe80::1"] }));
    expect(checkInterfaces(d, rule({ to: ["[ff0e::1]:5000@eth1"] }))).toEqual([]);
  });

  test("an IPv6 output on an interface without any IPv6 address, and an IPv4 one without IPv4, are errors naming the family", () => {
    const d = input([]);
    d.links.set("eth0", link());
    d.links.set("eth1", link({ ipv4: ["10.0.0.1"] }));
    d.links.set("eth2", link({ ipv6: ["fe80::2"] }));
    const f = checkInterfaces(d, rule({ to: ["[ff0e::1]:5000@eth1", "239.2.2.2:6000@eth2"] }));
    expect(f.map((x) => x.what)).toEqual([
      "output interface eth1 has no IPv6 address (not even a link-local one), so the kernel has no source address for IPv6 datagrams sent from it",
      "output interface eth2 has no IPv4 address, so nothing can be sent from it to an IPv4 destination",
    ]);
  });

  test("the MTU check counts 48 bytes of headers for IPv6 outputs, 28 for IPv4", () => {
    const d = input([]);
    d.links.set("eth1", link({ mtu: 1500, ipv6: ["fe80::1"], ipv4: ["10.0.0.1"] }));
    const r = (to: string) => rule({ to: [to], packets: 10, bytes: 14_600 }); // 1460 bytes each
    expect(checkMtu(d, r("239.2.2.2:6000@eth1"))).toEqual([]);
    const f = checkMtu(d, r("[ff0e::1]:5000@eth1"));
    expect(f).toHaveLength(1);
    expect(f[0]!.fix).toContain("at least 1508");
  });
});

describe("diagnose: totals that only grow are problems only when they grew during the window", () => {
  test("loop, own-source and cap drops before the window are notes; drops during it are problems", () => {
    const d = input([]);
    const drops = { loop_drops: 5, own_source: 7, cap_drops: 9 };
    d.before.set("r", rule({ drops }));
    expect(checkLoopsAndCaps(d, rule({ drops })).map((x) => `${x.severity} ${x.check}`)).toEqual(["info loop", "info own-source", "info cap"]);
    const grew = checkLoopsAndCaps(d, rule({ drops: { loop_drops: 6, own_source: 8, cap_drops: 10 } }));
    expect(grew.map((x) => `${x.severity} ${x.check}`)).toEqual(["error loop", "warning own-source", "error cap"]);
    expect(grew[0]!.what).toBe("1 datagrams dropped as a loop (the same datagram came back within the guard's window) in the last 2 s (6 in total)");
  });

  test("join errors counted before the window, with every rule's join holding now, are a note", () => {
    const d = input([]);
    d.rules = [rule()];
    d.interfaces.set("eth0", { counters: { join_errors: 4 }, parse_drops: {} });
    d.interfacesBefore.set("eth0", { counters: { join_errors: 4 }, parse_drops: {} });
    expect(checkJoins(d, d.rules[0]!)).toEqual([]);
    expect(checkJoinErrors(d).map((x) => `${x.severity} ${x.check}`)).toEqual(["info join-errors"]);
    expect(diagnose(d).filter((x) => x.check.startsWith("join")).every((x) => x.severity === "info")).toBe(true);
    d.interfaces.set("eth0", { counters: { join_errors: 6 }, parse_drops: {} });
    expect(checkJoinErrors(d).map((x) => `${x.severity} ${x.check}`)).toEqual(["warning join-errors"]);
  });

  test("a rule whose join fails now is an error in its own family: MLD for an IPv6 group, IGMP for IPv4", () => {
    const d = input([]);
    const v6 = rule({ input: "[ff0e::1]:5000@eth0", state: "join-failed", reasons: ["join failed: ENOMEM (net.core.optmem_max=20480)"] });
    const v4 = rule({ name: "r4", state: "join-failed", reasons: ["join failed: ENOBUFS"] });
    d.rules = [v6, v4];
    d.igmpMaxMemberships = 0;
    d.interfaces.set("eth0", { counters: { join_errors: 8 }, parse_drops: {} });
    const f6 = checkJoins(d, v6);
    expect(f6).toHaveLength(1);
    expect(f6[0]!.what).toContain("IPv6 (MLD) join of ff0e::1 on eth0 fails (join failed: ENOMEM");
    expect(f6[0]!.fix).toContain("ip -6 maddr show dev eth0");
    const f4 = checkJoins(d, v4);
    expect(f4[0]!.what).toContain("IPv4 (IGMP) join of 239.1.1.1 on eth0 fails");
    expect(f4[0]!.fix).toContain("1 groups on eth0 but net.ipv4.igmp_max_memberships is 0");
    expect(checkJoinErrors(d)).toEqual([]); // the rules' findings say it
  });
});
