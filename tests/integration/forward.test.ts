// Kernel integration tests of `mcrelay forward` under bun: real namespaces, real veth links,
// real traffic from `mcrelay gen`, and assertions on what `mcrelay sink` received (and on the
// relay's counters where they say something a receiver cannot).
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import {
  buildRelayTopology,
  execJson,
  FORWARD_JSON,
  recreateInputLink,
  startForward,
  startSink,
  SINK_JSON,
  injectFrames,
  mcrelayCommand,
  note,
  runFlow,
  runGen,
  stream,
  workerSum,
  type RelayTopology,
  type RelayTopologyOptions,
  type ForwardReport,
  type SinkReport,
} from "../support/relay-harness.ts";
import { EXIT } from "../../src/errors.ts";
import type { WorkerInfo } from "../../src/control/responses.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const mode = "bun" as const;
/** Generous: two cores, other work running, and each test starts several bun processes. */
const TEST_TIMEOUT_MS = 180_000;

let topo: Topology | undefined;

afterEach(async () => {
  await topo?.destroy();
  topo = undefined;
});

async function topology(opts: RelayTopologyOptions): Promise<RelayTopology> {
  topo = await Topology.create(opts.label);
  return buildRelayTopology(topo, opts);
}

async function ipIn(rt: RelayTopology, ns: string, args: string[]): Promise<void> {
  await rt.topo.exec(ns, ["ip", ...args], { check: true });
}

describe_netns("forward (kernel, under bun)", () => {
  test(
    "10,000 packets at 10,000 pps are relayed with group and port rewritten, none lost or duplicated",
    async () => {
      const rt = await topology({ label: "rewrite" });
      const count = 10_000;
      const size = 1316;
      const r = await runFlow(rt, {
        mode,
        forwards: [{ args: ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"] }],
        sinks: [{ ns: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", args: ["--expect", String(count)] }],
        traffic: () => runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "10000", "--count", String(count), "--size", String(size)]),
      });
      const [sink] = r.sinks;
      const [relay] = r.forwards;
      note("rewrite", { gen: r.traffic, sink: sink!.totals, latency_us: sink!.streams[0]?.latency_us });

      expect(r.traffic.sent).toBe(count);
      expect(sink!.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, foreign: 0, datagrams: count, bytes: count * size });
      expect(stream(sink!, 1)?.received).toBe(count);
      expect(relay!.rules[0]!.packets).toBe(count);
      expect(relay!.rules[0]!.outputs[0]).toMatchObject({ to: "239.2.2.2:6000@r1", packets: count, bytes: count * size, send_errors: {} });
      expect(workerSum(relay!, "matched")).toBe(count);
      expect(workerSum(relay!, "no_match")).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "the raw-mode generator's prebuilt frames pass the relay's checksum checks and arrive exactly once, byte for byte",
    async () => {
      const rt = await topology({ label: "gen-raw" });
      const count = 20_000;
      const size = 1317; // odd: the UDP checksum's padded last byte
      const r = await runFlow(rt, {
        mode,
        forwards: [{ args: ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"] }],
        sinks: [{ ns: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", args: ["--expect", String(count)] }],
        traffic: () =>
          runGen(rt.topo, rt.gen, mode, ["--mode", "raw", "--to", "239.1.1.1:5000@g0", "--rate", "20000", "--count", String(count), "--size", String(size)]),
      });
      const [sink] = r.sinks;
      const [relay] = r.forwards;
      note("gen-raw", { gen: r.traffic, sink: sink!.totals, latency_us: sink!.streams[0]?.latency_us });

      expect(r.traffic).toMatchObject({ mode: "raw", sent: count, send_errors: 0 });
      expect(sink!.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, foreign: 0, datagrams: count, bytes: count * size });
      // The relay verified every frame's UDP checksum (a packet socket's frame is unverified).
      expect(workerSum(relay!, "matched")).toBe(count);
      expect(Object.values(relay!.workers[0]!.parse_drops).reduce((a, b) => a + b, 0)).toBe(0);
      expect(relay!.rules[0]!.outputs[0]).toMatchObject({ packets: count, bytes: count * size });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a source with no route back from the relay, rp_filter=1 and TTL 1 is still relayed in full",
    async () => {
      const rt = await topology({ label: "unroutable", unroutableSource: true, rpFilter: 1 });
      // The premise: the relay namespace cannot route back to the source, and rp_filter is strict.
      const route = await rt.topo.exec(rt.relay, ["ip", "route", "get", rt.genAddr]);
      expect(route.exitCode).not.toBe(0);
      for (const dev of ["all", "default", "r0", "r1"]) {
        expect(await rt.topo.sysctlGet(rt.relay, `net/ipv4/conf/${dev}/rp_filter`)).toBe("1");
      }
      const count = 5_000;
      const r = await runFlow(rt, {
        mode,
        forwards: [{ args: ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"] }],
        sinks: [
          { ns: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", args: ["--expect", String(count)] },
          // A plain socket in the relay namespace, joined on the input: the kernel's own
          // receive path drops these packets (RPF), which is why a userspace relay is needed.
          { ns: rt.relay, listen: "239.1.1.1:5000@r0", graceMs: 1_000, label: "kernel-path sink in relay ns" },
        ],
        traffic: () => runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "10000", "--count", String(count), "--ttl", "1"]),
      });
      const [sink, kernel_path] = r.sinks;
      note("unroutable", { sink: sink!.totals, kernel_path: kernel_path!.totals, latency_us: sink!.streams[0]?.latency_us });

      expect(r.traffic.sent).toBe(count);
      expect(sink!.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, datagrams: count });
      expect(kernel_path!.totals.datagrams).toBe(0);
      expect(r.forwards[0]!.rules[0]!.packets).toBe(count);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "one input fanned out to three interfaces reaches every packet to each of three sinks",
    async () => {
      const rt = await topology({ label: "fanout", sinks: 3 });
      const count = 10_000;
      const r = await runFlow(rt, {
        mode,
        forwards: [{ args: ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--to", "239.2.2.2:6000@r2", "--to", "239.2.2.2:6000@r3"] }],
        sinks: rt.sinks.map((s) => ({ ns: s.ns, listen: "239.2.2.2:6000@s0", args: ["--expect", String(count)] })),
        traffic: () => runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "10000", "--count", String(count)]),
      });
      note("fanout", { sinks: r.sinks.map((s) => ({ ...s.totals, p99_us: s.streams[0]?.latency_us.p99 })) });

      expect(r.traffic.sent).toBe(count);
      expect(r.sinks).toHaveLength(3);
      for (const sink of r.sinks) {
        expect(sink.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, datagrams: count });
      }
      const rule = r.forwards[0]!.rules[0]!;
      expect(rule.packets).toBe(count);
      expect(rule.outputs.map((o) => o.packets)).toEqual([count, count, count]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a 1:16 fan-out over 8 interfaces reaches 16 independent receivers exactly, with one sendmmsg per flush for all outputs",
    async () => {
      const rt = await topology({ label: "fanout16", sinks: 8 });
      const count = 6_000;
      const groups = ["239.2.2.1", "239.2.2.2"];
      const outputs = rt.sinks.flatMap((s) => groups.map((g) => `${g}:6000@${s.relayIf}`));
      const r = await runFlow(rt, {
        mode,
        forwards: [{ args: ["--from", "239.1.1.1:5000@r0", ...outputs.flatMap((o) => ["--to", o])] }],
        sinks: rt.sinks.flatMap((s) => groups.map((g) => ({ ns: s.ns, listen: `${g}:6000@s0`, args: ["--expect", String(count)] }))),
        traffic: () => runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "3000", "--count", String(count), "--size", "700"]),
      });
      const [relay] = r.forwards;
      const calls = workerSum(relay!, "tx_send_calls");
      const blocks = workerSum(relay!, "rx_blocks");
      note("fanout16", { calls, blocks, gso: workerSum(relay!, "tx_gso_sends"), sinks: r.sinks.map((x) => x.totals.received) });

      expect(r.traffic.sent).toBe(count);
      expect(r.sinks).toHaveLength(16);
      for (const sink of r.sinks) {
        expect(sink.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, foreign: 0, datagrams: count });
      }
      expect(relay!.rules[0]!.outputs.map((o) => o.packets)).toEqual(outputs.map(() => count));
      expect(workerSum(relay!, "tx_errors")).toBe(0);
      // Each flush covers at least one ring block and makes one sendmmsg for all 16 outputs (a
      // sendmmsg per output would make about 16 per block).
      expect(calls).toBeGreaterThan(0);
      expect(calls).toBeLessThanOrEqual(blocks);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "8000-byte datagrams over MTU 9000 links are relayed whole",
    async () => {
      const rt = await topology({ label: "jumbo", mtu: 9000 });
      const count = 5_000;
      const size = 8000;
      const r = await runFlow(rt, {
        mode,
        forwards: [{ args: ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"] }],
        sinks: [{ ns: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", args: ["--expect", String(count)] }],
        traffic: () => runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "10000", "--count", String(count), "--size", String(size)]),
      });
      const [sink] = r.sinks;
      const [relay] = r.forwards;
      note("jumbo", { sink: sink!.totals, relay: relay!.workers[0]?.counters, latency_us: sink!.streams[0]?.latency_us });

      expect(r.traffic.sent).toBe(count);
      expect(sink!.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, datagrams: count, bytes: count * size });
      expect(relay!.rules[0]!).toMatchObject({ packets: count, bytes: count * size });
      expect(workerSum(relay!, "rx_truncated")).toBe(0);
      expect(workerSum(relay!, "ipv4_fragment", "parse_drops")).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "fragments and malformed frames are counted per reason and never relayed, while well-formed traffic is",
    async () => {
      const rt = await topology({ label: "malformed" });
      const fragmented = { count: 200, size: 3000 };
      // 3008 UDP bytes over MTU 1500: IPv4 payloads of 1480, 1480 and 48 bytes.
      const fragments_per_datagram = Math.ceil((fragmented.size + 8) / 1480);
      const good = { count: 1000, size: 1000 };
      const injected = { bad_checksum: 50, udp_length: 50, valid: 20 };
      const frame = { src: rt.genAddr, group: "239.1.1.1", dstPort: 5000, ifname: "g0" };
      const r = await runFlow(rt, {
        mode,
        forwards: [{ args: ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"] }],
        sinks: [{ ns: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0" }],
        traffic: async () => {
          const frag = await runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "1000", "--count", String(fragmented.count), "--size", String(fragmented.size), "--stream", "1"]);
          const bad_checksum = await injectFrames(rt.topo, rt.gen, { ...frame, kind: "bad-checksum", count: injected.bad_checksum });
          const udp_length = await injectFrames(rt.topo, rt.gen, { ...frame, kind: "udp-length", count: injected.udp_length });
          // The positive control: the same frames, well-formed, do get through.
          const valid = await injectFrames(rt.topo, rt.gen, { ...frame, kind: "valid", count: injected.valid });
          const ok = await runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "10000", "--count", String(good.count), "--size", String(good.size), "--stream", "2"]);
          return { frag, ok, bad_checksum, udp_length, valid };
        },
      });
      const [sink] = r.sinks;
      const [relay] = r.forwards;
      note("malformed", { traffic: r.traffic, sink: sink!.totals, parse_drops: relay!.workers[0]?.parse_drops, counters: relay!.workers[0]?.counters });

      expect(r.traffic).toMatchObject({ bad_checksum: injected.bad_checksum, udp_length: injected.udp_length, valid: injected.valid });
      expect(r.traffic.frag.sent).toBe(fragmented.count);
      expect(r.traffic.frag.send_errors).toBe(0);
      expect(r.traffic.ok.sent).toBe(good.count);

      // The receiver got the well-formed stream and the valid injected frames, nothing else.
      expect(stream(sink!, 1)).toBeUndefined();
      expect(stream(sink!, 2)).toMatchObject({ received: good.count, duplicates: 0, pattern_errors: 0 });
      expect(sink!.totals.foreign).toBe(injected.valid);
      expect(sink!.totals.datagrams).toBe(good.count + injected.valid);

      const drops = relay!.workers[0]!.parse_drops;
      expect(drops.ipv4_fragment).toBe(fragmented.count * fragments_per_datagram);
      expect(drops.ipv4_bad_checksum).toBe(injected.bad_checksum);
      expect(drops.udp_truncated).toBe(injected.udp_length);
      const other_drops = Object.entries(drops).filter(([k, n]) => !["ipv4_fragment", "ipv4_bad_checksum", "udp_truncated"].includes(k) && n !== 0);
      expect(other_drops).toEqual([]);
      expect(relay!.rules[0]!.packets).toBe(good.count + injected.valid);
      // Every frame that reached the ring was counted exactly once: relayed or dropped for one reason.
      expect(workerSum(relay!, "kernel_drops")).toBe(0);
      expect(workerSum(relay!, "rx_frames")).toBe(
        fragmented.count * fragments_per_datagram + injected.bad_checksum + injected.udp_length + injected.valid + good.count,
      );
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "two rules in opposite directions between the same interfaces do not loop",
    async () => {
      const rt = await topology({ label: "noloop" });
      const count = 5_000;
      const r = await runFlow(rt, {
        mode,
        forwards: [
          { args: ["--name", "r0-to-r1", "--from", "239.1.1.1:5000@r0", "--to", "239.1.1.1:5000@r1"], label: "forward A r0->r1" },
          { args: ["--name", "r1-to-r0", "--from", "239.1.1.1:5000@r1", "--to", "239.1.1.1:5000@r0"], label: "forward B r1->r0" },
        ],
        sinks: [
          { ns: rt.sinks[0]!.ns, listen: "239.1.1.1:5000@s0", args: ["--expect", String(count)] },
          // The generator does not loop its own packets back (IP_MULTICAST_LOOP 0): anything
          // this sink gets came back from the relay.
          { ns: rt.gen, listen: "239.1.1.1:5000@g0", graceMs: 1_000, label: "echo sink in gen ns" },
        ],
        traffic: () => runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "10000", "--count", String(count)]),
      });
      const [sink, echo] = r.sinks;
      const [a, b] = r.forwards;
      note("noloop", { sink: sink!.totals, echo: echo!.totals, a: a!.rules[0]!.packets, b: b!.rules[0]!.packets });

      expect(r.traffic.sent).toBe(count);
      expect(sink!.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, datagrams: count });
      expect(echo!.totals.datagrams).toBe(0);
      expect(a!.rules[0]!.packets).toBe(count);
      expect(b!.rules[0]!.packets).toBe(0);
      expect(workerSum(b!, "matched")).toBe(0);
      // The loop guard is the ingress filter: B's ring never sees what A sends out of r1 (the
      // host's own transmissions), so nothing reaches B's parser for it to drop as its own
      // source. A sees exactly the generator's stream.
      expect(workerSum(b!, "rx_frames")).toBe(0);
      expect(workerSum(a!, "rx_frames")).toBe(count);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "two opposite rules carry traffic both ways, each packet exactly once, none echoed back",
    async () => {
      const rt = await topology({ label: "bothways" });
      const sink_side = rt.sinks[0]!;
      await rt.topo.addMulticastRoute(sink_side.ns, sink_side.ifname);
      const forward_count = 4_000;
      const backward_count = 3_000;
      const r = await runFlow(rt, {
        mode,
        forwards: [
          { args: ["--name", "r0-to-r1", "--from", "239.1.1.1:5000@r0", "--to", "239.1.1.1:5000@r1"], label: "forward A r0->r1" },
          { args: ["--name", "r1-to-r0", "--from", "239.1.1.1:5000@r1", "--to", "239.1.1.1:5000@r0"], label: "forward B r1->r0" },
        ],
        // Neither generator hears itself (IP_MULTICAST_LOOP 0), so each sink sees only what
        // the relay sent it: the other side's stream, once, and never its own.
        sinks: [
          { ns: sink_side.ns, listen: "239.1.1.1:5000@s0", label: "sink on the r1 side" },
          { ns: rt.gen, listen: "239.1.1.1:5000@g0", label: "sink on the r0 side" },
        ],
        traffic: async () => [
          await runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "10000", "--count", String(forward_count), "--stream", "1"]),
          await runGen(rt.topo, sink_side.ns, mode, ["--to", "239.1.1.1:5000@s0", "--rate", "10000", "--count", String(backward_count), "--stream", "2"]),
        ],
      });
      const [r1_side, r0_side] = r.sinks;
      const [a, b] = r.forwards;
      note("bothways", { r1_side: r1_side!.totals, r0_side: r0_side!.totals, a: a!.rules[0]!.packets, b: b!.rules[0]!.packets });

      expect(r.traffic.map((g) => g.sent)).toEqual([forward_count, backward_count]);
      expect(r1_side!.streams.map((s) => [s.stream, s.received, s.duplicates])).toEqual([[1, forward_count, 0]]);
      expect(r1_side!.totals.datagrams).toBe(forward_count);
      expect(r0_side!.streams.map((s) => [s.stream, s.received, s.duplicates])).toEqual([[2, backward_count, 0]]);
      expect(r0_side!.totals.datagrams).toBe(backward_count);
      expect(a!.rules[0]!.packets).toBe(forward_count);
      expect(b!.rules[0]!.packets).toBe(backward_count);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "an output whose sends fail counts the errors per errno, an output on a down interface is pending, and the rule's other output forwards everything",
    async () => {
      const rt = await topology({ label: "senderr" });
      // d0: an interface that exists but is down (a veth to an otherwise empty namespace).
      const dead = await rt.topo.ns("dead");
      await rt.topo.link({ ns: rt.relay, ifname: "d0" }, { ns: dead, ifname: "x0" });
      await ipIn(rt, rt.relay, ["link", "set", "d0", "down"]);
      const count = 5_000;
      const r = await runFlow(rt, {
        mode,
        forwards: [
          {
            args: [
              "--from", "239.1.1.1:5000@r0",
              "--to", "239.2.2.2:6000@r1",
              // No route to 10.250.0.0/16 in the relay namespace (no default route either).
              "--to", "10.250.0.1:6000",
              "--to", "239.3.3.3:6000@d0",
            ],
          },
        ],
        // --expect is per stream; the traffic is two streams of count / 2.
        sinks: [{ ns: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", args: ["--expect", String(count / 2)] }],
        traffic: async () => {
          const first = await runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "10000", "--count", String(count / 2), "--stream", "1"]);
          // After a first batch of failures, the worker still relays a second one.
          const second = await runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "10000", "--count", String(count / 2), "--stream", "2"]);
          return [first, second];
        },
      });
      const [sink] = r.sinks;
      const [relay] = r.forwards;
      const [good, unreachable, down] = relay!.rules[0]!.outputs;
      note("senderr", { sink: sink!.totals, outputs: relay!.rules[0]!.outputs, counters: relay!.workers[0]?.counters });

      // runFlow checked the forward was still running after the traffic; it stopped on our SIGINT.
      expect(relay!.stopped_by).toBe("SIGINT");
      expect(sink!.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, datagrams: count });
      expect(stream(sink!, 1)?.received).toBe(count / 2);
      expect(stream(sink!, 2)?.received).toBe(count / 2);
      expect(relay!.rules[0]!.packets).toBe(count);
      expect(good).toMatchObject({ to: "239.2.2.2:6000@r1", packets: count, send_errors: {} });
      expect(unreachable).toMatchObject({ to: "10.250.0.1:6000", state: "active", packets: 0, send_errors: { ENETUNREACH: count } });
      // An output interface that is down is not sent to: the output is pending, with the reason.
      expect(down).toMatchObject({ to: "239.3.3.3:6000@d0", state: "pending", packets: 0, send_errors: {} });
      expect(down!.reason).toContain("output interface d0 is down");
      expect(workerSum(relay!, "tx_errors")).toBe(count);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a multicast output on an interface without an IPv4 address is pending, named in the report, while the other output forwards",
    async () => {
      const rt = await topology({ label: "noaddr" });
      // r9 has no address on either end. The kernel would not refuse the send (it picks a source
      // address from another interface), but an output without its own address is not usable:
      // it stays pending until the interface has one.
      const bare = await rt.topo.ns("bare");
      await rt.topo.link({ ns: rt.relay, ifname: "r9" }, { ns: bare, ifname: "b0" });
      const count = 2_000;
      const r = await runFlow(rt, {
        mode,
        forwards: [{ args: ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--to", "239.3.3.3:6000@r9"] }],
        sinks: [
          { ns: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", args: ["--expect", String(count)] },
          { ns: bare, listen: "239.3.3.3:6000@b0", args: ["--expect", String(count)], graceMs: 1000 },
        ],
        traffic: () => runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "10000", "--count", String(count)]),
      });
      note("noaddr", { sinks: r.sinks.map((s) => s.totals), outputs: r.forwards[0]!.rules[0]!.outputs });

      expect(r.sinks[0]!.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0 });
      expect(r.sinks[1]!.totals.datagrams).toBe(0);
      const [good, bare_out] = r.forwards[0]!.rules[0]!.outputs;
      expect(good).toMatchObject({ state: "active", packets: count, send_errors: {} });
      expect(bare_out).toMatchObject({ state: "pending", packets: 0, send_errors: {} });
      expect(bare_out!.reason).toContain("output interface r9 has no IPv4 address");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "multicast in, unicast out reaches a receiver in another namespace",
    async () => {
      const rt = await topology({ label: "unicast" });
      const count = 10_000;
      const dest = `${rt.sinks[0]!.addr}:7000`;
      const r = await runFlow(rt, {
        mode,
        forwards: [{ args: ["--from", "239.1.1.1:5000@r0", "--to", dest] }],
        sinks: [{ ns: rt.sinks[0]!.ns, listen: dest, args: ["--expect", String(count)] }],
        traffic: () => runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "10000", "--count", String(count)]),
      });
      const [sink] = r.sinks;
      note("unicast", { sink: sink!.totals, latency_us: sink!.streams[0]?.latency_us });

      expect(r.traffic.sent).toBe(count);
      expect(sink!.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, datagrams: count });
      expect(r.forwards[0]!.rules[0]!.outputs[0]).toMatchObject({ to: dest, packets: count, send_errors: {} });
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("forward with a control socket (kernel, under bun)", () => {
  test(
    "forward --socket answers stats while it relays, and refuses requests that need the daemon",
    async () => {
      const rt = await topology({ label: "fwdsock" });
      const dir = mkdtempSync(join(tmpdir(), "mcr-fwdsock-"));
      const socket = join(dir, "ctl.sock");
      try {
        const count = 3_000;
        const r = await runFlow(rt, {
          mode,
          forwards: [{ args: ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--socket", socket] }],
          sinks: [{ ns: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", args: ["--expect", String(count)] }],
          traffic: async () => {
            const sent = await runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "5000", "--count", String(count)]);
            // While forward still runs: its counters through the socket, as `mcrelay stats` shows them.
            const stats = await execJson<{ rules: { name: string; packets: number }[] }>(rt.topo, rt.relay, [...mcrelayCommand(mode), "stats", "--json", "--socket", socket]);
            const add = await rt.topo.exec(rt.relay, [...mcrelayCommand(mode), "add", "--name", "x", "--from", "239.1.1.9:5000@r0", "--to", "239.2.2.9:6000@r1", "--socket", socket]);
            return { sent, stats, add };
          },
        });
        expect(r.traffic.sent.sent).toBe(count);
        expect(r.traffic.stats.rules[0]).toMatchObject({ name: "forward", packets: count });
        expect(r.traffic.add.exitCode).toBe(6);
        expect(r.traffic.add.stderr).toContain("needs the daemon");
        expect(r.sinks[0]!.totals).toMatchObject({ received: count, lost: 0 });
        expect(existsSync(socket)).toBe(false); // removed when forward stopped
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    TEST_TIMEOUT_MS,
  );
});

async function ifindexOf(rt: RelayTopology, ns: string, ifname: string): Promise<number> {
  const r = await rt.topo.exec(ns, ["ip", "-j", "link", "show", ifname], { check: true });
  return (JSON.parse(r.stdout) as { ifindex: number }[])[0]!.ifindex;
}

describe_netns("forward and its interfaces (kernel, under bun)", () => {
  test(
    "input and output interfaces deleted and created again during a forward: it says so, forwards again on the new ones, and exits 7 naming the input that went away",
    async () => {
      const rt = await topology({ label: "fwdlinks" });
      const s1 = rt.sinks[0]!;
      const dir = mkdtempSync(join(tmpdir(), "mcr-fwdlinks-"));
      const socket = join(dir, "ctl.sock");
      try {
        const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--socket", socket]);
        const oldIn = await ifindexOf(rt, rt.relay, "r0");
        const oldOut = await ifindexOf(rt, rt.relay, "r1");
        // Both go away and come back with new indexes: the input with its generator's side, the
        // output with its receiver's side (the receiver is started after, on the new link).
        await recreateInputLink(rt);
        await ipIn(rt, rt.relay, ["link", "del", "r1"]);
        await rt.topo.link({ ns: rt.relay, ifname: "r1", addr: `${s1.relayAddr}/24` }, { ns: s1.ns, ifname: "s0", addr: `${s1.addr}/24` });
        const newIn = await ifindexOf(rt, rt.relay, "r0");
        expect(newIn).not.toBe(oldIn);
        expect(await ifindexOf(rt, rt.relay, "r1")).not.toBe(oldOut);
        await fwd.waitForStderr(/input interface r0 went away/, 10_000);
        await fwd.waitForStderr(/input interface r0 is back/, 10_000);
        await fwd.waitForStderr(/output interface r1 is back/, 10_000);
        // The worker's ring is bound to the new r0 and its table (with r1's new index) applied.
        const deadline = performance.now() + 20_000;
        for (;;) {
          const { workers } = await execJson<{ workers: WorkerInfo[] }>(rt.topo, rt.relay, [...mcrelayCommand(mode), "workers", "--json", "--socket", socket]);
          const w = workers[0];
          if (w && w.ifindex === newIn && w.state === "running" && w.applied_hash === w.table_hash) break;
          if (performance.now() > deadline) throw new Error(`worker not forwarding on the new r0 (index ${newIn}): ${JSON.stringify(workers)}\n${fwd.output()}`);
          await Bun.sleep(100);
        }
        const count = 2_000;
        const sink = await startSink(rt.topo, s1.ns, mode, ["--listen", "239.2.2.2:6000@s0", "--idle", "2", "--expect", String(count)]);
        const sent = await runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "5000", "--count", String(count)]);
        await Promise.race([sink.exited, Bun.sleep(30_000)]);
        const got = await sink.stopJson<SinkReport>("SIGINT", 30_000, SINK_JSON);
        expect(fwd.running).toBe(true);
        const report = await fwd.stopJson<ForwardReport>("SIGINT", 30_000, { ...FORWARD_JSON, okCodes: [EXIT.system] });
        note("fwdlinks", { sent, sink: got.totals, problems: report.problems });

        expect(sent.sent).toBe(count);
        expect(got.totals).toMatchObject({ received: count, lost: 0, duplicates: 0 });
        expect(report.rules[0]!.outputs[0]).toMatchObject({ to: "239.2.2.2:6000@r1", packets: count });
        expect(report.problems).toEqual(["input interface r0 went away during the run"]);
        expect(report.stopped_by).toBe("SIGINT");
        expect(fwd.stderr).toContain("output interface r1 went away");
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "forward on a terminal that is closed (pty hung up): it stops on the SIGHUP, its report to the dead terminal (EIO) ends quietly with exit 0, and the socket file is removed",
    async () => {
      const rt = await topology({ label: "fwdpty" });
      const dir = mkdtempSync(join(tmpdir(), "mcr-fwdpty-"));
      const socket = join(dir, "ctl.sock");
      // forward as the session leader on a pty (stdout and stderr on it); once it forwards, the
      // master is closed: the kernel sends SIGHUP and every later write gets EIO.
      const script = [
        "import os, pty, sys",
        "pid, fd = pty.fork()",
        "if pid == 0:",
        "    os.execvp(sys.argv[1], sys.argv[1:])",
        "seen = b''",
        "while b'forwarding ' not in seen:",
        "    chunk = os.read(fd, 4096)",
        "    if not chunk: break",
        "    seen += chunk",
        "os.close(fd)",
        "_, status = os.waitpid(pid, 0)",
        "print(os.waitstatus_to_exitcode(status))",
        "sys.stderr.write(seen.decode(errors='replace'))",
      ].join("\n");
      try {
        const r = await rt.topo.exec(rt.relay, ["python3", "-c", script, ...mcrelayCommand(mode), "forward", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--socket", socket], { timeoutMs: 60_000 });
        expect({ code: r.stdout.trim(), seen: r.stderr }).toMatchObject({ code: "0", seen: expect.stringContaining("forwarding ") });
        expect(existsSync(socket)).toBe(false);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "SIGHUP (the terminal closed) stops forward like SIGTERM: the report says SIGHUP and the socket file is removed",
    async () => {
      const rt = await topology({ label: "fwdhup" });
      const dir = mkdtempSync(join(tmpdir(), "mcr-fwdhup-"));
      const socket = join(dir, "ctl.sock");
      try {
        const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--socket", socket]);
        expect(existsSync(socket)).toBe(true);
        const report = await fwd.stopJson<ForwardReport>("SIGHUP", 30_000, FORWARD_JSON);
        expect(report.stopped_by).toBe("SIGHUP");
        expect(report.problems).toEqual([]);
        expect(existsSync(socket)).toBe(false);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    TEST_TIMEOUT_MS,
  );
});
