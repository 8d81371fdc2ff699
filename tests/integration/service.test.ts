// The daemon under a service manager: systemd's notification protocol read by a fake
// NOTIFY_SOCKET (a Unix datagram socket served by Python, as systemd would): READY=1 only once
// the control socket answers, RELOADING=1 then READY=1 around each reload (`mcrelay reload`
// and SIGHUP), STOPPING=1 on SIGTERM. And the final log line of each rule, whose packet and
// byte counts must be the numbers a receiver got, not just the words.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, LoggedProcess, note, type RelayTopology } from "../support/relay-harness.ts";
import { RawClient, TempDir, TestDaemon, burst, killBackground, waitFor } from "../support/daemon-harness.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 180_000;

const PYTHON3 = Bun.which("python3") ?? Bun.which("python3", { PATH: "/usr/bin:/bin:/usr/local/bin" }) ?? "python3";

/** Binds a Unix datagram socket at PATH, says "ready", prints each datagram as one JSON string line. */
const notify_py = String.raw`
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
sys.stderr.write("ready\n")
sys.stderr.flush()
while True:
    data = s.recv(65536)
    sys.stdout.write(json.dumps(data.decode()) + "\n")
    sys.stdout.flush()
`;

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir | undefined;
const procs: LoggedProcess[] = [];
const daemons: TestDaemon[] = [];

function notifications(p: LoggedProcess): string[] {
  return p.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as string);
}

/** The notification lines, reduced to their first KEY=VALUE (READY=1, RELOADING=1, STOPPING=1). */
function states(p: LoggedProcess): string[] {
  return notifications(p).map((m) => m.split("\n")[0]!);
}

describe_netns("service manager integration (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("service");
    rt = await buildRelayTopology(topo, { label: "service", sinks: 1 });
  }, T);

  afterEach(async () => {
    await killBackground();
    for (const d of daemons.splice(0)) if (d.running) await d.kill9();
    for (const p of procs.splice(0)) if (p.running) p.proc.kill("SIGKILL");
    dir?.remove();
    dir = undefined;
  }, T);

  afterAll(async () => {
    await topo?.destroy();
  }, T);

  test(
    "with NOTIFY_SOCKET set the daemon sends READY=1 once it answers, RELOADING=1 and READY=1 around each reload, STOPPING=1 on SIGTERM",
    async () => {
      dir = new TempDir();
      const notifySocket = dir.join("notify.sock");
      // The listener runs in the test's own namespace: a path-named socket is reached through the file system.
      const listener = new LoggedProcess(
        Bun.spawn({ cmd: [PYTHON3, "-c", notify_py, notifySocket], stdin: "ignore", stdout: "pipe", stderr: "pipe" }),
        "fake NOTIFY_SOCKET",
      );
      procs.push(listener);
      await listener.waitForStderr(/^ready$/, 30_000);
      const configPath = dir.file("mcrelay.json5", `{ rules: [ { name: "a", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"] } ] }`);
      const d = await TestDaemon.start(rt, dir, { configPath, env: { NOTIFY_SOCKET: notifySocket } });
      daemons.push(d);
      await waitFor("READY=1", () => states(listener).includes("READY=1"), 10_000, 20);
      expect(notifications(listener)).toEqual(["READY=1\nSTATUS=1 rules"]);

      expect(await d.json(["reload"])).toMatchObject({ added: [], removed: [] });
      await waitFor("the reload's notifications", () => states(listener).length >= 3, 10_000, 20);
      d.proc.proc.kill("SIGHUP");
      await waitFor("the SIGHUP reload's notifications", () => states(listener).length >= 5, 10_000, 20);
      expect(await d.stop()).toBe(0);
      await waitFor("STOPPING=1", () => states(listener).includes("STOPPING=1"), 10_000, 20);
      await Bun.sleep(200);
      note("sd_notify", notifications(listener));
      expect(states(listener)).toEqual(["READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]);
    },
    T,
  );

  test(
    "READY=1 comes only after the control socket answers and the rules forward",
    async () => {
      dir = new TempDir();
      const notifySocket = dir.join("notify.sock");
      const listener = new LoggedProcess(
        Bun.spawn({ cmd: [PYTHON3, "-c", notify_py, notifySocket], stdin: "ignore", stdout: "pipe", stderr: "pipe" }),
        "fake NOTIFY_SOCKET",
      );
      procs.push(listener);
      await listener.waitForStderr(/^ready$/, 30_000);
      const configPath = dir.file("mcrelay.json5", `{ rules: [ { name: "a", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"] } ] }`);
      const socket = dir.join("ctl.sock");
      const d = TestDaemon.start(rt, dir, { configPath, socket, env: { NOTIFY_SOCKET: notifySocket } });
      // The moment READY=1 arrives, the socket must answer ping.
      await waitFor("READY=1", () => states(listener).includes("READY=1"), 30_000, 5);
      const c = await RawClient.connect(socket, 2_000);
      try {
        await c.hello();
        expect((await c.call("ping")).pong).toBe(true);
      } finally {
        c.close();
      }
      const daemon = await d;
      daemons.push(daemon);
      const b = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.1:6001@s0", count: 300 });
      expect(b.sink.totals).toMatchObject({ received: 300, lost: 0, duplicates: 0, datagrams: 300 });
      expect(await daemon.stop()).toBe(0);
    },
    T,
  );

  test(
    "M5: a daemon whose worker cannot start (no CAP_SETUID/CAP_SETGID in its bounding set) answers ping and list within 1 s of its start, and READY=1 follows the worker's first failure, not a 10 s wait",
    async () => {
      dir = new TempDir();
      const notifySocket = dir.join("notify.sock");
      const listener = new LoggedProcess(
        Bun.spawn({ cmd: [PYTHON3, "-c", notify_py, notifySocket], stdin: "ignore", stdout: "pipe", stderr: "pipe" }),
        "fake NOTIFY_SOCKET",
      );
      procs.push(listener);
      await listener.waitForStderr(/^ready$/, 30_000);
      const configPath = dir.file("mcrelay.json5", `{ rules: [ { name: "a", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"] } ] }`);
      const socket = dir.join("ctl.sock");
      // A unit whose CapabilityBoundingSet forgot CAP_SETUID/CAP_SETGID: the daemon runs (it
      // needs CAP_NET_RAW), but its workers cannot become the worker user and refuse to run.
      const t0 = performance.now();
      const d = TestDaemon.start(rt, dir, { configPath, socket, prefix: ["setpriv", "--bounding-set", "-setuid,-setgid", "--"], env: { NOTIFY_SOCKET: notifySocket } });
      let pingMs = -1;
      let listMs = -1;
      let listed: { name: string; state: string }[] = [];
      while (listMs < 0 && performance.now() - t0 < 15_000) {
        try {
          const c = await RawClient.connect(socket, 500);
          try {
            await c.hello();
            if ((await c.call("ping", undefined, 2_000))?.pong === true) pingMs = performance.now() - t0;
            listed = (await c.call("list", undefined, 2_000)).rules;
            listMs = performance.now() - t0;
          } finally {
            c.close();
          }
        } catch {
          await Bun.sleep(10); // not listening yet
        }
      }
      const daemon = await d;
      daemons.push(daemon);
      // The rule is listed with its state; its worker's failure shows as the rule's error.
      expect(listed.map((r) => r.name)).toEqual(["a"]);
      // (Between two attempts the worker is "starting" and the rule shows no error.)
      const rule = await waitFor("rule a in error", async () => {
        const r = (await daemon.call("list")).rules[0];
        return r?.state === "error" ? r : undefined;
      }, 10_000, 20);
      expect(rule.reasons.join(" ")).toContain("privileges not dropped");
      await waitFor("READY=1", () => states(listener).includes("READY=1"), 15_000, 5);
      const readyMs = performance.now() - t0;
      const workers = (await daemon.json(["workers"])).workers;
      note("socket up with a failing worker", { ping_ms: Math.round(pingMs), list_ms: Math.round(listMs), ready_ms: Math.round(readyMs), restarts: workers[0]?.restarts, state: workers[0]?.state });
      expect(pingMs).toBeGreaterThan(0);
      expect(listMs).toBeLessThan(1_000);
      // Start-up ends with the worker's first failure (it goes on being retried with backoff).
      expect(readyMs).toBeLessThan(8_000);
      expect(workers[0]?.restarts).toBeGreaterThanOrEqual(1);
      expect(daemon.proc.stderr).toContain("not every worker is forwarding yet");
      expect(await daemon.stop()).toBe(0);
    },
    T,
  );

  test(
    "the final log line of each rule states the packets and bytes it relayed, as numbers a receiver confirms",
    async () => {
      dir = new TempDir();
      const configPath = dir.file(
        "mcrelay.json5",
        `{ rules: [
          { name: "busy", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"] },
          { name: "idle", from: "239.1.1.2:5000@r0", to: ["239.2.2.2:6002@r1"] },
        ] }`,
      );
      const d = await TestDaemon.start(rt, dir, { configPath });
      daemons.push(d);
      const count = 700;
      const b = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.1:6001@s0", count });
      expect(b.sink.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, datagrams: count });
      expect(await d.stop()).toBe(0);
      const finals = new Map<string, { packets: number; bytes: number }>();
      for (const m of d.proc.stderr.matchAll(/final: rule (\S+): (\d+) packets, (\d+) bytes/g)) {
        finals.set(m[1]!, { packets: Number(m[2]), bytes: Number(m[3]) });
      }
      note("final log lines", Object.fromEntries(finals));
      expect(Object.fromEntries(finals)).toEqual({
        busy: { packets: count, bytes: b.sink.totals.bytes },
        idle: { packets: 0, bytes: 0 },
      });
    },
    T,
  );
});
