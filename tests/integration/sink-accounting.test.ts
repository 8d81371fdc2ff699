// `mcrelay sink` and `mcrelay gen` account for their own trouble, so a relay is not blamed for
// it: the sink reports the datagrams its own socket dropped (socket_drops) and the receive
// buffer it really got, counts loss from the first sequence number it saw (a sink started after
// its generator), and starts a new run when a generator restarts with the same stream id.
// The generator skips its backlog after a stall instead of bursting, and raw mode's MTU error
// names the MTU. Everything runs inside namespaces without a relay: any loss is the tools' own.
import { afterEach, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { EXIT } from "../../src/errors.ts";
import { GenOutputSchema } from "../../src/cli/output-schemas.ts";
import { mcrelayCommand, note, runGen, SINK_JSON, startLogged, startSink, type GenReport, type SinkReport } from "../support/relay-harness.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const mode = "bun" as const;
const TEST_TIMEOUT_MS = 120_000;

let topo: Topology | undefined;

afterEach(async () => {
  await topo?.destroy();
  topo = undefined;
});

describe_netns("gen accounting", () => {
  test(
    "gen --rate 1000 stopped for 1.5 s (SIGSTOP) skips the backlog when continued: one schedule slip, no burst, and the sink misses nothing",
    async () => {
      topo = await Topology.create("genslip");
      const ns = await topo.ns("a");
      const sink = await startSink(topo, ns, mode, ["--listen", "127.0.0.1:7002", "--idle", "2"]);
      const gen = startLogged(topo, ns, [...mcrelayCommand(mode), "gen", "--to", "127.0.0.1:7002", "--rate", "1000", "--duration", "4", "--json"], "gen");
      await Bun.sleep(1500);
      gen.proc.kill("SIGSTOP");
      await Bun.sleep(1500);
      gen.proc.kill("SIGCONT");
      const g = await gen.json<GenReport>(30_000, { schema: GenOutputSchema });
      const report = await sink.json<SinkReport>(30_000, SINK_JSON);
      note("genslip", { gen: g, totals: report.totals });
      expect(g.schedule_slips).toBeGreaterThanOrEqual(1);
      // About 2,500 of the 4,000 a run without the stop sends (1,500 fell due while stopped).
      expect(g.sent).toBeLessThan(3300);
      expect(g.sent).toBeGreaterThan(1500);
      expect(gen.stderr).toContain("behind the schedule");
      expect(report.totals).toMatchObject({ received: g.sent, lost: 0, socket_drops: 0 });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "gen --mode raw with a payload above the interface's MTU names the MTU",
    async () => {
      topo = await Topology.create("genraw");
      const a = await topo.ns("a");
      const b = await topo.ns("b");
      await topo.link({ ns: a, ifname: "g0", addr: "10.98.1.1/24", mtu: 1400 }, { ns: b, ifname: "s0", addr: "10.98.1.2/24", mtu: 1400 });
      const r = await topo.exec(a, [...mcrelayCommand(mode), "gen", "--mode", "raw", "--to", "239.1.1.1:5000@g0", "--size", "1400", "--count", "1"]);
      expect(r.exitCode).toBe(EXIT.system);
      expect(r.stderr).toContain("--size 1400");
      expect(r.stderr).toContain("MTU 1400: at most 1372 payload bytes");
    },
    TEST_TIMEOUT_MS,
  );
});

/** `argv` run as nobody with no capabilities (setpriv), as an unprivileged user would. */
function unprivileged(argv: string[]): string[] {
  return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", ...argv];
}

describe_netns("unprivileged gen and sink", () => {
  test(
    "without CAP_NET_ADMIN the sink reports the smaller buffer it got and warns; without CAP_NET_RAW raw gen names the capability",
    async () => {
      topo = await Topology.create("sinkpriv");
      const a = await topo.ns("a");
      const b = await topo.ns("b");
      await topo.link({ ns: a, ifname: "g0", addr: "10.98.2.1/24" }, { ns: b, ifname: "s0", addr: "10.98.2.2/24" });
      const requested = 2 ** 31 - 1;
      const sink = await topo.exec(a, unprivileged([...mcrelayCommand(mode), "sink", "--listen", "127.0.0.1:7003", "--duration", "0.2", "--rcvbuf", String(requested), "--json"]));
      expect(sink.exitCode).toBe(0);
      const report = JSON.parse(sink.stdout) as SinkReport;
      // Capped at net.core.rmem_max (reported doubled), far below the request.
      expect(report.rcvbuf_bytes).toBeGreaterThan(0);
      expect(report.rcvbuf_bytes).toBeLessThan(requested);
      expect(sink.stderr).toContain(`asked for ${requested} bytes, got ${report.rcvbuf_bytes}`);
      const gen = await topo.exec(a, unprivileged([...mcrelayCommand(mode), "gen", "--mode", "raw", "--to", "239.1.1.1:5000@g0", "--count", "1"]));
      expect(gen.exitCode).toBe(EXIT.permission);
      expect(gen.stderr).toContain("needs CAP_NET_RAW");
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("sink accounting", () => {
  test(
    "a sink stopped while a burst arrives at a small buffer reports the loss as socket_drops, all of it",
    async () => {
      topo = await Topology.create("sinkdrop");
      const ns = await topo.ns("a");
      const count = 5000;
      const sink = await startSink(topo, ns, mode, ["--listen", "127.0.0.1:7000", "--rcvbuf", "65536", "--idle", "2", "--expect", String(count)]);
      sink.proc.kill("SIGSTOP");
      let gen;
      try {
        gen = await runGen(topo, ns, mode, ["--to", "127.0.0.1:7000", "--rate", "0", "--count", String(count), "--size", "1000"]);
      } finally {
        sink.proc.kill("SIGCONT");
      }
      const report = await sink.json<SinkReport>(60_000, SINK_JSON);
      note("sinkdrop", { gen, totals: report.totals, rcvbuf_bytes: report.rcvbuf_bytes });
      expect(gen.sent).toBe(count);
      // As root SO_RCVBUFFORCE grants the request; the kernel reports twice the size.
      expect(report.rcvbuf_bytes).toBe(2 * 65536);
      expect(report.totals.socket_drops).toBeGreaterThan(0);
      // Nothing else lost anything: every missing datagram was dropped at the sink's socket.
      expect(report.totals.lost).toBe(report.totals.socket_drops);
      expect(report.totals.received + report.totals.socket_drops).toBe(count);
      expect(sink.stderr).toContain("dropped at the sink's own socket");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a sink started after its generator counts no loss before its first datagram; a restarted generator is a new run, each run complete",
    async () => {
      topo = await Topology.create("sinkrun");
      const ns = await topo.ns("a");
      // Stream 1 runs for 3 s; the sink joins about 1 s in.
      const early = startLogged(topo, ns, [...mcrelayCommand(mode), "gen", "--to", "127.0.0.1:7001", "--rate", "2000", "--duration", "3", "--stream", "1", "--json"], "gen early");
      await Bun.sleep(1000);
      const sink = await startSink(topo, ns, mode, ["--listen", "127.0.0.1:7001", "--idle", "2"]);
      await early.exited;
      // Stream 2 twice: the second generator begins again at seq 0.
      const first = await runGen(topo, ns, mode, ["--to", "127.0.0.1:7001", "--rate", "20000", "--count", "3000", "--stream", "2"]);
      const second = await runGen(topo, ns, mode, ["--to", "127.0.0.1:7001", "--rate", "20000", "--count", "1000", "--stream", "2"]);
      const report = await sink.json<SinkReport>(60_000, SINK_JSON);
      note("sinkrun", { totals: report.totals, streams: report.streams.map(({ latency_us: _, ...s }) => s) });
      expect(first.sent).toBe(3000);
      expect(second.sent).toBe(1000);
      const s1 = report.streams.filter((s) => s.stream === 1);
      expect(s1.length).toBe(1);
      expect(s1[0]!.first_seq).toBeGreaterThan(0);
      expect(s1[0]).toMatchObject({ run: 0, lost: 0, duplicates: 0 });
      const s2 = report.streams.filter((s) => s.stream === 2).sort((a, b) => a.run - b.run);
      expect(s2.map((s) => [s.run, s.first_seq, s.received, s.lost, s.duplicates, s.late])).toEqual([
        [0, 0, 3000, 0, 0, 0],
        [1, 0, 1000, 0, 0, 0],
      ]);
      expect(report.totals.lost).toBe(0);
      expect(report.totals.duplicates).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});
