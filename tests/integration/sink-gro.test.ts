// `mcrelay sink --gro` (issue 13): with UDP_GRO on its socket, a UDP GSO batch that crossed a
// veth intact arrives as one buffer and the sink splits it at its gso_size. mcrelay forward is
// the GSO sender (an output with 4 or more datagrams queued sends one UDP_SEGMENT buffer); the
// same relayed stream goes to a sink with --gro and to one without, and both must count every
// datagram exactly once, byte-exact.
import { afterEach, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, note, runGen, SINK_JSON, startForward, startSink, workerSum, type ForwardReport, type SinkReport } from "../support/relay-harness.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const mode = "bun" as const;
const TEST_TIMEOUT_MS = 240_000;

let topo: Topology | undefined;

afterEach(async () => {
  await topo?.destroy();
  topo = undefined;
});

describe_netns("sink --gro", () => {
  test(
    "relayed GSO batches: the --gro sink receives them as GRO buffers and counts all 20,000 datagrams once; a plain sink counts them too",
    async () => {
      topo = await Topology.create("sinkgro");
      const rt = await buildRelayTopology(topo, { label: "sinkgro", sinks: 2 });
      const [groSide, plainSide] = rt.sinks as [(typeof rt.sinks)[0], (typeof rt.sinks)[0]];
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", `239.2.2.2:6000@${groSide.relayIf}`, "--to", `239.2.2.2:6000@${plainSide.relayIf}`]);
      const count = 20_000;
      const size = 1316;
      const sinkArgs = ["--listen", "239.2.2.2:6000@s0", "--idle", "3", "--expect", String(count)];
      const groSink = await startSink(rt.topo, groSide.ns, mode, [...sinkArgs, "--gro"], "sink-gro");
      const plainSink = await startSink(rt.topo, plainSide.ns, mode, sinkArgs, "sink-plain");
      const gen = await runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "40000", "--count", String(count), "--size", String(size)]);
      const gro = await groSink.json<SinkReport>(120_000, SINK_JSON);
      const plain = await plainSink.json<SinkReport>(120_000, SINK_JSON);
      const relay = await fwd.stopJson<ForwardReport>();
      note("sinkgro", { gen, gro: gro.totals, plain: plain.totals, tx_gso_sends: workerSum(relay, "tx_gso_sends") });

      expect(gen.sent).toBe(count);
      // The premise: the relay sent GSO buffers (each output's batches of 4 or more).
      expect(workerSum(relay, "tx_gso_sends")).toBeGreaterThan(0);
      const exact = { received: count, lost: 0, duplicates: 0, pattern_errors: 0, foreign: 0, datagrams: count, bytes: count * size, control_truncated: 0 };
      expect(gro).toMatchObject({ gro: true, complete: true });
      expect(gro.totals).toMatchObject(exact);
      expect(gro.streams.map((s) => [s.received, s.lost, s.duplicates, s.late])).toEqual([[count, 0, 0, 0]]);
      // Buffers of several datagrams reached the socket whole and were split by the sink.
      expect(gro.totals.gro_batches).toBeGreaterThanOrEqual(1);
      expect(gro.totals.gro_datagrams).toBeGreaterThan(gro.totals.gro_batches);
      expect(gro.totals.gro_datagrams).toBeLessThanOrEqual(count);
      expect(plain).toMatchObject({ gro: false, complete: true });
      expect(plain.totals).toMatchObject({ ...exact, gro_batches: 0, gro_datagrams: 0 });
      expect(plain.streams.map((s) => [s.received, s.lost, s.duplicates, s.late])).toEqual([[count, 0, 0, 0]]);
    },
    TEST_TIMEOUT_MS,
  );
});
