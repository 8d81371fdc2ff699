// The checks that cannot be driven by a fault in a namespace any more: `run` itself refuses to
// start without CAP_NET_RAW (exit 5), so a worker failing for want of a capability is fed to
// the check directly, as the worker manager reports it.
import { describe, expect, test } from "bun:test";
import { checkGso, checkWorkers, diagnose, type DiagnoseInput } from "../../src/diagnose/checks.ts";

function input(workers: DiagnoseInput["workers"]): DiagnoseInput {
  return {
    windowS: 2, rules: [], before: new Map(), interfaces: new Map(), interfacesBefore: new Map(), workers,
    links: new Map(), routes: new Map(), igmpMaxMemberships: 20, unmatched: new Map(), traceNote: null,
  };
}

describe("diagnose: worker checks", () => {
  test("a worker failing with EPERM is reported as a missing capability, naming CAP_NET_RAW", () => {
    const f = checkWorkers(input([{ interface: "eth0", slot: 0, state: "backoff", restarts: 3, backoff_ms: 2000, last_error: "ring setup eth0: EPERM" }]));
    expect(f).toHaveLength(1);
    expect(f[0]).toMatchObject({ check: "capabilities", severity: "error" });
    expect(f[0]!.fix).toContain("CAP_NET_RAW");
  });

  test("a worker in backoff for another reason is worker-backoff; a restarted one is a warning; errors come first", () => {
    const all = diagnose(input([
      { interface: "eth1", slot: 0, state: "running", restarts: 2, backoff_ms: 0, last_error: "exited (SIGKILL)" },
      { interface: "eth0", slot: 0, state: "backoff", restarts: 1, backoff_ms: 500, last_error: "exited (code 1)" },
    ]));
    expect(all.map((x) => `${x.severity} ${x.check}`)).toEqual(["error worker-backoff", "warning worker-restarts"]);
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
