// The control socket stays responsive while workers come and go: `ping` round trips, measured
// in-process on a raw connection, stay under 100 ms at the 99th percentile while rules on four
// interfaces are added and removed in a loop (each add starts a worker, each remove stops one)
// and a stream flows through a steady rule.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, note, type RelayTopology } from "../support/relay-harness.ts";
import {
  RawClient,
  TempDir,
  TestDaemon,
  helloClient,
  killBackground,
  percentile,
  sink,
  sinkReport,
  startStream,
  stopStream,
  type WorkerRow,
} from "../support/daemon-harness.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 120_000;
/** How long workers are churned while pings are measured. */
const CHURN_MS = 12_000;
const PING_P99_MAX_MS = 100;
const CHURN_IFACES = ["r2", "r3", "r4", "r5"];

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir | undefined;
let daemon: TestDaemon | undefined;
const clients: RawClient[] = [];

describe_netns("control socket responsiveness (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("responsive");
    rt = await buildRelayTopology(topo, { label: "responsive", sinks: 5 });
    dir = new TempDir();
    daemon = await TestDaemon.start(rt, dir);
  }, T);

  afterAll(async () => {
    for (const c of clients.splice(0)) c.close();
    await killBackground();
    if (daemon?.running) await daemon.stop().catch(() => daemon?.kill9());
    await topo?.destroy();
    dir?.remove();
  }, T);

  test(
    `ping p99 stays under ${PING_P99_MAX_MS} ms while workers on four interfaces are started and stopped in a loop`,
    async () => {
      const d = daemon!;
      const admin = await helloClient(d.socket);
      const monitor = await helloClient(d.socket);
      clients.push(admin, monitor);

      // A steady rule with traffic: its worker keeps forwarding through the churn.
      await admin.call("add", { rule: { name: "steady", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"] } });
      const s = await sink(rt, rt.sinks[0]!.ns, "239.2.2.1:6001@s0");
      const gen = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 2000, size: 200 });

      let churning = true;
      const rtts: number[] = [];
      const pinging = (async () => {
        while (churning) {
          const t = performance.now();
          const r = await monitor.request("ping", undefined, 10_000);
          rtts.push(performance.now() - t);
          if (!r.ok) throw new Error(`ping refused: ${JSON.stringify(r)}`);
          await Bun.sleep(10);
        }
      })();

      let starts = 0;
      let stops = 0;
      let maxWorkers = 0;
      const deadline = performance.now() + CHURN_MS;
      while (performance.now() < deadline) {
        for (const [k, iface] of CHURN_IFACES.entries()) {
          const r = await admin.call("add", { rule: { name: `churn-${k}`, from: `239.3.3.${k + 1}:5000@${iface}`, to: [`239.4.4.${k + 1}:7000@r0`] } }, 20_000);
          if (r.rule.state !== "active") throw new Error(`churn-${k} not active: ${JSON.stringify(r)}`);
          starts += 1;
        }
        const workers = (await admin.call("workers")).workers as WorkerRow[];
        maxWorkers = Math.max(maxWorkers, workers.filter((w) => w.state === "running").length);
        for (const k of CHURN_IFACES.keys()) {
          await admin.call("remove", { rule: `churn-${k}` }, 20_000);
          stops += 1;
        }
      }
      churning = false;
      await pinging;
      const workersAfter = (await admin.call("workers")).workers as WorkerRow[];
      const sent = (await stopStream(gen)).sent;
      const got = await sinkReport(s);

      const p50 = percentile(rtts, 50);
      const p99 = percentile(rtts, 99);
      note("responsive", { slow: rtts.filter((x) => x > 20).map((x) => Math.round(x)), pings: rtts.length, p50_ms: p50, p99_ms: p99, max_ms: Math.max(...rtts), worker_starts: starts, worker_stops: stops, max_workers: maxWorkers, steady: { sent, received: got.totals.received, lost: got.totals.lost } });

      // The loop really started and stopped workers: every churn interface plus the steady one ran at once.
      expect(starts).toBeGreaterThanOrEqual(3 * CHURN_IFACES.length);
      expect(stops).toBe(starts);
      expect(maxWorkers).toBe(CHURN_IFACES.length + 1);
      expect(workersAfter.map((w) => w.interface)).toEqual(["r0"]);
      expect(rtts.length).toBeGreaterThan(100);
      expect(p99).toBeLessThan(PING_P99_MAX_MS);
      // The steady rule's worker was not disturbed.
      expect(got.totals).toMatchObject({ received: sent, lost: 0, duplicates: 0 });
    },
    T,
  );
});
