// Faithful forwarding (issue 10), kernel tests under bun: every datagram that should be relayed
// arrives whole and once, as what it was; every frame that should not is dropped and counted.
// Receivers are independent: `mcrelay sink` or a plain Python UDP socket (tests/support/udp-tools.ts).
import { afterEach, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import {
  buildRelayTopology,
  note,
  runGen,
  startForward,
  startSink,
  workerSum,
  type ForwardReport,
  type RelayTopology,
  type RelayTopologyOptions,
  type SinkReport,
} from "../support/relay-harness.ts";
import { captureIgmp, sendRawFrames, startUdpReceiver, udpSend, unicastProbe, type RawFrame } from "../support/udp-tools.ts";
import { helloClient, TempDir, TestDaemon, waitFor, type ListedRule } from "../support/daemon-harness.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const mode = "bun" as const;
const TEST_TIMEOUT_MS = 240_000;

let topo: Topology | undefined;

afterEach(async () => {
  await topo?.destroy();
  topo = undefined;
});

async function topology(opts: RelayTopologyOptions): Promise<RelayTopology> {
  topo = await Topology.create(opts.label);
  return buildRelayTopology(topo, opts);
}

describe_netns("fidelity: GSO super-frames and empty datagrams", () => {
  test(
    "a chain of 3 relays (each rewriting the group) at 20k pps delivers 20,000 x 1316 B, each once and byte-exact",
    async () => {
      topo = await Topology.create("chain3");
      const t = topo;
      const names = ["gen", "hop1", "hop2", "hop3", "sink"];
      const ns: string[] = [];
      for (const n of names) ns.push(await t.ns(n));
      // gen g0 -- i0 hop1 o0 -- i0 hop2 o0 -- i0 hop3 o0 -- s0 sink
      for (let k = 0; k < 4; k++) {
        await t.link(
          { ns: ns[k]!, ifname: k === 0 ? "g0" : "o0", addr: `10.98.${k + 1}.1/24` },
          { ns: ns[k + 1]!, ifname: k === 3 ? "s0" : "i0", addr: `10.98.${k + 1}.2/24` },
        );
      }
      await t.addMulticastRoute(ns[0]!, "g0");
      const groups = ["239.1.1.1:5000", "239.2.2.2:5001", "239.3.3.3:5002", "239.4.4.4:5003"];
      const relays = [];
      for (let k = 1; k <= 3; k++) {
        relays.push(await startForward(t, ns[k]!, mode, ["--from", `${groups[k - 1]}@i0`, "--to", `${groups[k]}@o0`], `hop${k}`));
      }
      const count = 20_000;
      const size = 1316;
      const sink = await startSink(t, ns[4]!, mode, ["--listen", `${groups[3]}@s0`, "--idle", "3", "--expect", String(count)]);
      const gen = await runGen(t, ns[0]!, mode, ["--to", `${groups[0]}@g0`, "--rate", "20000", "--count", String(count), "--size", String(size)]);
      const got = await sink.json<SinkReport>(120_000);
      const reports: ForwardReport[] = [];
      for (const r of relays) reports.push(await r.stopJson<ForwardReport>());
      note("chain3", {
        gen,
        sink: got.totals,
        hops: reports.map((r) => ({ packets: r.rules[0]!.packets, gso_frames: workerSum(r, "rx_gso_frames"), gso_datagrams: workerSum(r, "rx_gso_datagrams"), truncated: workerSum(r, "rx_truncated") })),
      });

      expect(gen.sent).toBe(count);
      expect(got.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, foreign: 0, datagrams: count, bytes: count * size });
      for (const r of reports) {
        expect(r.rules[0]!.packets).toBe(count);
        expect(r.rules[0]!.outputs[0]!.packets).toBe(count);
        expect(workerSum(r, "rx_truncated")).toBe(0);
        expect(workerSum(r, "ipv4_fragment", "parse_drops")).toBe(0);
      }
      // The premise: hops 2 and 3 received the previous hop's GSO buffers as super-frames.
      for (const r of reports.slice(1)) {
        expect(workerSum(r, "rx_gso_frames")).toBeGreaterThan(0);
        expect(workerSum(r, "rx_gso_datagrams")).toBeGreaterThan(workerSum(r, "rx_gso_frames"));
      }
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "datagrams a sender sent with UDP_SEGMENT are relayed one by one, each with its own size",
    async () => {
      const rt = await topology({ label: "udpseg" });
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      const rx = await startUdpReceiver(rt.topo, rt.sinks[0]!.ns, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3 });
      const repeat = 100;
      // Three buffer shapes: a shorter last datagram, all equal, a tiny last one.
      const batches = [[...Array(7).fill(1000), 333], Array(5).fill(1316), [200, 200, 200, 17]];
      const sent = await udpSend(rt.topo, rt.gen, { ifname: "g0", group: "239.1.1.1", port: 5000, gso: true, batches, repeat, pause_s: 0.002 });
      const got = await rx.report();
      const relay = await fwd.stopJson<ForwardReport>();
      note("udpseg", { sent, got, counters: relay.workers[0]?.counters });

      const datagrams = repeat * batches.reduce((n, b) => n + b.length, 0);
      expect(sent).toMatchObject({ sent: datagrams, gso_sends: repeat * batches.length });
      expect(got).toMatchObject({ datagrams, numbered: datagrams, duplicates: 0, pattern_errors: 0 });
      expect(got.sizes).toEqual({ "1000": 7 * repeat, "333": repeat, "1316": 5 * repeat, "200": 3 * repeat, "17": repeat });
      expect(relay.rules[0]!.packets).toBe(datagrams);
      // Each buffer reached the relay as one super-frame and was split there.
      expect(workerSum(relay, "rx_gso_frames")).toBe(repeat * batches.length);
      expect(workerSum(relay, "rx_gso_datagrams")).toBe(datagrams);
      expect(workerSum(relay, "rx_frames")).toBe(repeat * batches.length);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a super-frame larger than a ring slot arrives whole through the socket's queue and is split: 65,458-byte GSO buffers (the largest veth passes) as well as 63,168-byte ones",
    async () => {
      const rt = await topology({ label: "gsobig" });
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      const rx = await startUdpReceiver(rt.topo, rt.sinks[0]!.ns, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3 });
      // 65 x 1000 + 458 = 65,458 bytes, a 65,500-byte frame: veth passes it whole (its
      // gso_max_size is 65,536; larger buffers are segmented before veth). A ring slot holds
      // 2 KiB: the slot gets a cut copy, the socket's queue the whole frame (TP_STATUS_COPY).
      const big = await udpSend(rt.topo, rt.gen, { ifname: "g0", group: "239.1.1.1", port: 5000, gso: true, batches: [[...Array(65).fill(1000), 458]], repeat: 10, pause_s: 0.005, stream: 1 });
      // 48 x 1316 = 63,168 bytes: what mcrelay's own egress sends at most.
      const fits = await udpSend(rt.topo, rt.gen, { ifname: "g0", group: "239.1.1.1", port: 5000, gso: true, batches: [Array(48).fill(1316)], repeat: 10, pause_s: 0.005, stream: 2 });
      const got = await rx.report();
      const relay = await fwd.stopJson<ForwardReport>();
      note("gsobig", { big, fits, got: got.streams, counters: relay.workers[0]?.counters, drops: relay.workers[0]?.parse_drops });
      expect([big.gso_sends, fits.gso_sends]).toEqual([10, 10]);
      expect(got.streams).toEqual({ "1": 660, "2": 480 });
      expect(got.duplicates).toBe(0);
      expect(got.pattern_errors).toBe(0);
      expect(workerSum(relay, "rx_truncated")).toBe(0);
      expect(workerSum(relay, "ipv4_truncated", "parse_drops")).toBe(0);
      expect(workerSum(relay, "rx_gso_frames")).toBe(20);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "300 zero-length datagrams alone and 300 right behind full-size ones all arrive",
    async () => {
      const rt = await topology({ label: "empty" });
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      const rx = await startUdpReceiver(rt.topo, rt.sinks[0]!.ns, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3 });
      const alone = await udpSend(rt.topo, rt.gen, { ifname: "g0", group: "239.1.1.1", port: 5000, batches: [[0]], repeat: 300, pause_s: 0.001 });
      // Back to back, so the relay queues the empty one in the same egress batch as the full
      // ones (the shape a GSO send would lose).
      const behind = await udpSend(rt.topo, rt.gen, { ifname: "g0", group: "239.1.1.1", port: 5000, batches: [[1316, 1316, 1316, 0]], repeat: 300, pause_s: 0.002 });
      const got = await rx.report();
      const relay = await fwd.stopJson<ForwardReport>();
      note("empty", { alone, behind, got, out: relay.rules[0]!.outputs[0], counters: relay.workers[0]?.counters });

      expect(alone.sent).toBe(300);
      expect(behind.sent).toBe(1200);
      expect(got.sizes).toEqual({ "0": 600, "1316": 900 });
      expect(got).toMatchObject({ datagrams: 1500, numbered: 900, duplicates: 0, pattern_errors: 0 });
      expect(relay.rules[0]!.outputs[0]!.packets).toBe(1500);
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("fidelity: per-output TTL and DSCP", () => {
  test(
    "two outputs of one rule: the rule's TTL and the input DSCP+ECN copied on one, its own TTL and a fixed DSCP (ECN kept) on the other",
    async () => {
      const rt = await topology({ label: "ttldscp", sinks: 2 });
      const fwd = await startForward(rt.topo, rt.relay, mode, [
        "--from", "239.1.1.1:5000@r0",
        "--ttl", "3",
        "--to", "239.2.2.2:6000@r1",
        "--to", "239.3.3.3:6000@r2,ttl=9,dscp=10,gso=off",
      ]);
      const rx1 = await startUdpReceiver(rt.topo, rt.sinks[0]!.ns, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3 });
      const rx2 = await startUdpReceiver(rt.topo, rt.sinks[1]!.ns, { group: "239.3.3.3", port: 6000, ifname: "s0", idle_s: 3 });
      // EF (DSCP 46) without ECN, then EF with ECT(1); bursts of 8 so that GSO batches form.
      const ef = await udpSend(rt.topo, rt.gen, { ifname: "g0", group: "239.1.1.1", port: 5000, tos: 0xb8, batches: [Array(8).fill(1000)], repeat: 25, pause_s: 0.002, stream: 1 });
      const ect = await udpSend(rt.topo, rt.gen, { ifname: "g0", group: "239.1.1.1", port: 5000, tos: 0xb9, batches: [Array(8).fill(1000)], repeat: 25, pause_s: 0.002, stream: 2 });
      const [got1, got2] = [await rx1.report(), await rx2.report()];
      const relay = await fwd.stopJson<ForwardReport>();
      note("ttldscp", { ef, ect, got1, got2, outputs: relay.rules[0]!.outputs });

      expect([ef.sent, ect.sent]).toEqual([200, 200]);
      expect(got1).toMatchObject({ datagrams: 400, numbered: 400, duplicates: 0, pattern_errors: 0, ttl: { "3": 400 }, tos: { "184": 200, "185": 200 } });
      expect(got2).toMatchObject({ datagrams: 400, numbered: 400, duplicates: 0, pattern_errors: 0, ttl: { "9": 400 }, tos: { "40": 200, "41": 200 } });
      expect(relay.rules[0]!.outputs.map((o) => [o.ttl, o.dscp, o.gso])).toEqual([[3, "copy", true], [9, 10, false]]);
      // gso=off: the second output never sent a GSO buffer; the first did (it is the default).
      expect(workerSum(relay, "tx_gso_sends")).toBeGreaterThan(0);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "config outputs in object form and an earlier-format rule with per-output TTLs: list shows each output's settings and receivers see them",
    async () => {
      const rt = await topology({ label: "cfgttl", sinks: 2 });
      const dir = new TempDir();
      try {
        const config = dir.file(
          "mcrelay.json5",
          `{ multicast_ttl: 6, rules: [
              { name: "obj", from: "239.1.1.1:5000@r0", to: [ { to: "239.2.2.2:6000@r1", ttl: 4, dscp: 46, gso: false }, "239.2.2.3:6000@r2,ttl=7" ] },
              { name: "old", input: { interface: "r0", group: "239.1.1.2", port: 5000 },
                outputs: [ { group: "239.2.2.4", port: 6000, interface: "r1", ttl: 2 }, { group: "239.2.2.5", port: 6000, interface: "r2" } ] } ] }`,
        );
        const d = await TestDaemon.start(rt, dir, { configPath: config });
        try {
          const rules = (await d.json<{ rules: ListedRule[] }>(["list"])).rules;
          const settings = Object.fromEntries(rules.map((r) => [r.name, r.outputs.map((o) => [o.to, o.ttl, o.dscp, o.gso])]));
          expect(settings).toEqual({
            obj: [["239.2.2.2:6000@r1", 4, 46, false], ["239.2.2.3:6000@r2", 7, "copy", true]],
            old: [["239.2.2.4:6000@r1", 2, "copy", true], ["239.2.2.5:6000@r2", 6, "copy", true]],
          });
          const human = await d.cli(["list"]);
          expect(human.stdout).toContain("239.2.2.2:6000@r1 ttl=4 dscp=46 gso=off");
          // add takes the same options, and the rule-wide ones as flags.
          await d.json(["add", "--name", "added", "--from", "239.1.1.9:5000@r0", "--ttl", "3", "--to", "239.2.2.9:6000@r1,ttl=5,dscp=12,gso=off", "--to", "239.2.2.9:6000@r2", "--max-pps", "700", "--no-loop-guard"]);
          const added = (await d.json<{ rules: (ListedRule & { max_pps: number | null; loop_guard: boolean })[] }>(["list"])).rules.find((r) => r.name === "added")!;
          expect(added).toMatchObject({ max_pps: 700, loop_guard: false });
          expect(added.outputs.map((o) => [o.to, o.ttl, o.dscp, o.gso])).toEqual([["239.2.2.9:6000@r1", 5, 12, false], ["239.2.2.9:6000@r2", 3, "copy", true]]);
          const bad = await d.cli(["add", "--name", "bad", "--from", "239.1.1.8:5000@r0", "--to", "239.2.2.8:6000@r1,dscp=64"]);
          expect(bad.exitCode).toBe(2);
          expect(bad.stderr).toContain("dscp 64 is out of range (0-63)");
          const rx = [
            await startUdpReceiver(rt.topo, rt.sinks[0]!.ns, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3 }),
            await startUdpReceiver(rt.topo, rt.sinks[1]!.ns, { group: "239.2.2.3", port: 6000, ifname: "s0", idle_s: 3 }),
            await startUdpReceiver(rt.topo, rt.sinks[0]!.ns, { group: "239.2.2.4", port: 6000, ifname: "s0", idle_s: 3 }),
            await startUdpReceiver(rt.topo, rt.sinks[1]!.ns, { group: "239.2.2.5", port: 6000, ifname: "s0", idle_s: 3 }),
          ];
          await udpSend(rt.topo, rt.gen, { ifname: "g0", group: "239.1.1.1", port: 5000, tos: 0x04, batches: [[500, 500]], repeat: 50, pause_s: 0.002 });
          await udpSend(rt.topo, rt.gen, { ifname: "g0", group: "239.1.1.2", port: 5000, tos: 0x04, batches: [[500, 500]], repeat: 50, pause_s: 0.002 });
          const got = [];
          for (const r of rx) got.push(await r.report());
          note("cfgttl", got);
          expect(got.map((g) => [g.datagrams, g.duplicates, g.ttl, g.tos])).toEqual([
            [100, 0, { "4": 100 }, { "184": 100 }],
            [100, 0, { "7": 100 }, { "4": 100 }],
            [100, 0, { "2": 100 }, { "4": 100 }],
            [100, 0, { "6": 100 }, { "4": 100 }],
          ]);
        } finally {
          await d.stop();
        }
      } finally {
        dir.remove();
      }
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("fidelity: VLANs", () => {
  test(
    "two VLANs with the same group and port, two rules: no cross-talk, the untagged rule gets neither, QinQ and double tags dropped and counted",
    async () => {
      const rt = await topology({ label: "vlans", sinks: 3 });
      const dir = new TempDir();
      try {
        const config = dir.file(
          "mcrelay.json5",
          `{ rules: [
              { name: "v100", from: "239.1.1.1:5000@r0,vlan=100", source: "${rt.genAddr}", to: ["239.2.2.2:6000@r1"] },
              { name: "v200", from: "239.1.1.1:5000@r0", vlan: 200, max_pps: 50000, to: ["239.2.2.2:6000@r2"] },
              { name: "plain", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r3"] } ] }`,
        );
        const d = await TestDaemon.start(rt, dir, { configPath: config });
        try {
          const listed = (await d.json<{ rules: (ListedRule & { vlan: number | null; max_pps: number | null })[] }>(["list"])).rules;
          expect(listed.map((r) => [r.name, r.state, r.input, r.vlan, r.source, r.max_pps])).toEqual([
            ["v100", "active", "239.1.1.1:5000@r0,vlan=100", 100, rt.genAddr, null],
            ["v200", "active", "239.1.1.1:5000@r0,vlan=200", 200, null, 50000],
            ["plain", "active", "239.1.1.1:5000@r0", null, null, null],
          ]);
          const human = (await d.cli(["list"])).stdout;
          expect(human).toContain(`239.1.1.1:5000@r0,vlan=100 from ${rt.genAddr}`);
          expect(human).toContain("239.1.1.1:5000@r0,vlan=200 max 50000 pps");
          const rx = [];
          for (const s of rt.sinks) rx.push(await startUdpReceiver(rt.topo, s.ns, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3, first_s: 15 }));
          const frame = (stream: number, seq: number, tags: [number, number][]): RawFrame => ({ src: rt.genAddr, dst: "239.1.1.1", dport: 5000, size: 200, stream, seq, tags });
          const frames: RawFrame[] = [];
          for (let i = 0; i < 100; i++) {
            frames.push(frame(100, i, [[0x8100, 100]]));
            frames.push(frame(200, i, [[0x8100, 200]]));
            frames.push(frame(1, i, []));
            if (i < 50) {
              frames.push(frame(7, i, [[0x88a8, 100], [0x8100, 200]]));
              frames.push(frame(8, i, [[0x8100, 100], [0x8100, 200]]));
            }
          }
          const sent = await sendRawFrames(rt.topo, rt.gen, "g0", frames, 0.0005);
          const got = [];
          for (const r of rx) got.push(await r.report());
          const stats = await d.json<{ interfaces: { interface: string; counters: Record<string, number>; parse_drops: Record<string, number> }[] }>(["stats"]);
          const r0 = stats.interfaces.find((i) => i.interface === "r0")!;
          note("vlans", { sent, got, counters: r0.counters, drops: r0.parse_drops });

          expect(sent).toBe(400);
          expect(got.map((g) => [g.datagrams, g.duplicates, g.pattern_errors, g.streams])).toEqual([
            [100, 0, 0, { "100": 100 }],
            [100, 0, 0, { "200": 100 }],
            [100, 0, 0, { "1": 100 }],
          ]);
          expect(r0.parse_drops.vlan_stacked).toBe(100);
          expect(r0.counters.matched).toBe(300);
        } finally {
          await d.stop();
        }
      } finally {
        dir.remove();
      }
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "tagged frames reaching only an untagged rule are not relayed and are counted as vlan_mismatch",
    async () => {
      const rt = await topology({ label: "vlanmiss" });
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      const rx = await startUdpReceiver(rt.topo, rt.sinks[0]!.ns, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3, first_s: 10 });
      const frames: RawFrame[] = [];
      for (let i = 0; i < 50; i++) {
        frames.push({ src: rt.genAddr, dst: "239.1.1.1", dport: 5000, size: 100, stream: 5, seq: i, tags: [[0x8100, 300]] });
        frames.push({ src: rt.genAddr, dst: "239.1.1.1", dport: 5000, size: 100, stream: 1, seq: i });
      }
      expect(await sendRawFrames(rt.topo, rt.gen, "g0", frames)).toBe(100);
      const got = await rx.report();
      const relay = await fwd.stopJson<ForwardReport>();
      note("vlanmiss", { got, counters: relay.workers[0]?.counters });
      expect(got.streams).toEqual({ "1": 50 });
      expect(workerSum(relay, "vlan_mismatch")).toBe(50);
      expect(workerSum(relay, "matched")).toBe(50);
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("fidelity: martians and per-rule drops", () => {
  test(
    "frames for another host's MAC, martian sources, the input's own address and bad UDP checksums are not relayed and each is counted",
    async () => {
      const rt = await topology({ label: "martians" });
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      // A second rule (its own relay) that only accepts one source nobody uses.
      const filtered = await startForward(rt.topo, rt.relay, mode, ["--name", "filtered", "--from", "239.1.1.5:5000@r0", "--source", "10.99.1.77", "--to", "239.2.2.5:6000@r1"], "forward filtered");
      const rx = await startUdpReceiver(rt.topo, rt.sinks[0]!.ns, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3, first_s: 15 });
      const base = { dst: "239.1.1.1", dport: 5000, size: 120 };
      const frames: RawFrame[] = [];
      for (let i = 0; i < 40; i++) frames.push({ ...base, src: rt.genAddr, stream: 1, seq: i });
      for (let i = 0; i < 50; i++) frames.push({ ...base, src: rt.genAddr, stream: 2, seq: i, mac_dst: "02:00:00:00:00:99" });
      for (const src of ["0.1.2.3", "127.0.0.1", "224.1.1.1", "255.255.255.255"]) {
        for (let i = 0; i < 20; i++) frames.push({ ...base, src, stream: 3, seq: i });
      }
      for (let i = 0; i < 20; i++) frames.push({ ...base, src: rt.relayInAddr, stream: 4, seq: i });
      for (let i = 0; i < 30; i++) frames.push({ ...base, src: rt.genAddr, stream: 5, seq: i, bad_udp_checksum: true });
      for (let i = 0; i < 25; i++) frames.push({ ...base, dst: "239.1.1.5", src: rt.genAddr, stream: 6, seq: i });
      expect(await sendRawFrames(rt.topo, rt.gen, "g0", frames, 0.0005)).toBe(frames.length);
      const got = await rx.report();
      const relay = await fwd.stopJson<ForwardReport>();
      const other = await filtered.stopJson<ForwardReport>();
      note("martians", { got, counters: relay.workers[0]?.counters, drops: relay.workers[0]?.parse_drops, rule: relay.rules[0]?.drops, filtered: other.rules[0]?.drops });

      expect(got.streams).toEqual({ "1": 40 });
      expect(got.duplicates).toBe(0);
      expect(workerSum(relay, "otherhost")).toBe(50);
      expect(workerSum(relay, "martian_source")).toBe(80);
      expect(workerSum(relay, "own_source")).toBe(20);
      expect(workerSum(relay, "udp_bad_checksum", "parse_drops")).toBe(30);
      expect(relay.rules[0]!).toMatchObject({ packets: 40, drops: { own_source: 20, source_mismatch: 0, output_errors: 0 } });
      // The rule with --source that matched nothing says why.
      expect(other.rules[0]!).toMatchObject({ packets: 0, drops: { source_mismatch: 25 } });
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("fidelity: loops and storm cap", () => {
  test(
    "two relays whose outputs reach each other's inputs over a LAN: one injected datagram comes back a handful of times at most, with loop_drops and a loop event",
    async () => {
      topo = await Topology.create("loop2");
      const t = topo;
      const [gen, lan, a, b, watch] = [await t.ns("gen"), await t.ns("lan"), await t.ns("a"), await t.ns("b"), await t.ns("watch")];
      // A shared segment (a bridge without IGMP snooping, so it floods multicast like a hub).
      await t.exec(lan, ["ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"], { check: true });
      await t.exec(lan, ["ip", "link", "set", "br0", "up"], { check: true });
      const ports: [string, string, string][] = [[gen, "g0", "10.97.0.1/24"], [a, "a0", "10.97.0.2/24"], [b, "b1", "10.97.0.3/24"], [watch, "w0", "10.97.0.4/24"]];
      for (const [i, [ns, ifname, addr]] of ports.entries()) {
        await t.link({ ns, ifname, addr }, { ns: lan, ifname: `p${i}` });
        await t.exec(lan, ["ip", "link", "set", `p${i}`, "master", "br0"], { check: true });
      }
      await t.link({ ns: a, ifname: "a1", addr: "10.97.1.1/24" }, { ns: b, ifname: "b0", addr: "10.97.1.2/24" });
      await t.addMulticastRoute(gen, "g0");
      // Relay A: the LAN's 239.1.1.1 to B; relay B: back onto the LAN as 239.1.1.1.
      const rt = { topo: t, gen, genIf: "g0", genAddr: "10.97.0.1", relay: a, relayIn: "a0", relayInAddr: "10.97.0.2", sinks: [] } satisfies RelayTopology;
      const dir = new TempDir();
      try {
        const config = dir.file("mcrelay.json5", `{ rules: [ { name: "a-to-b", from: "239.1.1.1:5000@a0", to: ["239.2.2.2:6000@a1"] } ] }`);
        const d = await TestDaemon.start(rt, dir, { configPath: config });
        try {
          const fwd = await startForward(t, b, mode, ["--name", "b-to-lan", "--from", "239.2.2.2:6000@b0", "--to", "239.1.1.1:5000@b1"], "relay B");
          const events = await helloClient(d.socket);
          expect(await events.call("events")).toMatchObject({ subscribed: true });
          const rx = await startUdpReceiver(t, watch, { group: "239.1.1.1", port: 5000, ifname: "w0", idle_s: 3, first_s: 15 });
          const sent = await udpSend(t, gen, { ifname: "g0", group: "239.1.1.1", port: 5000, batches: [[200]], stream: 77 });
          const got = await rx.report();
          const loopEvent = await waitFor("a loop event", async () => {
            const line = await events.nextLine(500);
            return line !== null && line.includes('"kind":"loop"') ? JSON.parse(line) : undefined;
          }, 15_000, 0);
          events.close();
          const stats = await d.json<{ rules: { name: string; packets: number; drops: Record<string, number> }[] }>(["stats"]);
          const relayB = await fwd.stopJson<ForwardReport>();
          note("loop2", { sent, got, a: stats.rules[0], b: relayB.rules[0], event: loopEvent });

          expect(sent.sent).toBe(1);
          // The premise: the loop exists (at least one copy came back to the LAN from B), and
          // it was cut after a handful of rounds.
          expect(got.streams["77"]).toBeGreaterThanOrEqual(2);
          expect(got.streams["77"]).toBeLessThanOrEqual(5);
          expect(stats.rules[0]!.drops.loop_drops).toBeGreaterThanOrEqual(1);
          expect(stats.rules[0]!.packets).toBeLessThanOrEqual(4);
          expect(JSON.stringify(loopEvent)).toContain('"rule":"a-to-b"');
        } finally {
          await d.stop();
        }
      } finally {
        dir.remove();
      }
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a stream repeating one identical payload at 1k pps through one relay loses nothing to the loop guard",
    async () => {
      const rt = await topology({ label: "samepay" });
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      const rx = await startUdpReceiver(rt.topo, rt.sinks[0]!.ns, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3 });
      const sent = await udpSend(rt.topo, rt.gen, { ifname: "g0", group: "239.1.1.1", port: 5000, batches: [[188]], repeat: 1000, pause_s: 0.001, fixed: true });
      const got = await rx.report();
      const relay = await fwd.stopJson<ForwardReport>();
      note("samepay", { sent, got: { datagrams: got.datagrams, duplicates: got.duplicates }, drops: relay.rules[0]!.drops });
      expect(sent.sent).toBe(1000);
      expect(got.datagrams).toBe(1000);
      expect(got.pattern_errors).toBe(0);
      expect(relay.rules[0]!).toMatchObject({ packets: 1000, drops: { loop_drops: 0, cap_drops: 0 } });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "two senders sending one identical datagram (once, and alternating heartbeats) are both relayed every time",
    async () => {
      const rt = await topology({ label: "coincide" });
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      const rx = await startUdpReceiver(rt.topo, rt.sinks[0]!.ns, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3, first_s: 15 });
      const other = "10.99.1.50";
      const same = (src: string) => ({ src, dst: "239.1.1.1", dport: 5000, size: 40, stream: 3, seq: 7 });
      // One identical datagram from two sources, then 20 heartbeats alternating between them.
      const frames: RawFrame[] = [same(rt.genAddr), same(other)];
      for (let i = 0; i < 20; i++) frames.push({ ...same(i % 2 ? other : rt.genAddr), seq: 1000 });
      expect(await sendRawFrames(rt.topo, rt.gen, "g0", frames, 0.01)).toBe(22);
      const got = await rx.report();
      const relay = await fwd.stopJson<ForwardReport>();
      note("coincide", { got: got.datagrams, drops: relay.rules[0]!.drops });
      expect(got.datagrams).toBe(22);
      expect(relay.rules[0]!).toMatchObject({ packets: 22, drops: { loop_drops: 0 } });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "max_pps caps a rule: 5,000 pps for 2 s through --max-pps 1000 relays about 2,000, the rest counted as cap_drops",
    async () => {
      const rt = await topology({ label: "cap" });
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--max-pps", "1000"]);
      const sink = await startSink(rt.topo, rt.sinks[0]!.ns, mode, ["--listen", "239.2.2.2:6000@s0", "--idle", "3"]);
      const gen = await runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "5000", "--count", "10000", "--size", "200"]);
      const got = await sink.json<SinkReport>(60_000);
      const relay = await fwd.stopJson<ForwardReport>();
      const rule = relay.rules[0]!;
      note("cap", { gen: gen.sent, got: got.totals, rule });
      expect(gen.sent).toBe(10_000);
      expect(rule.packets + rule.drops.cap_drops!).toBe(10_000);
      expect(rule.packets).toBeGreaterThanOrEqual(1_800);
      expect(rule.packets).toBeLessThanOrEqual(2_300);
      expect(got.totals.datagrams).toBe(rule.packets);
      expect(got.totals.duplicates).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("fidelity: joins and unicast inputs", () => {
  test(
    "a rule with a source joins source-specifically: an IGMPv3 INCLUDE report with the source is seen on the input link, and the stream is relayed",
    async () => {
      const rt = await topology({ label: "ssm" });
      const capture = await captureIgmp(rt.topo, rt.gen, "g0", 6);
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "232.1.1.1:5000@r0", "--source", rt.genAddr, "--to", "239.2.2.2:6000@r1"]);
      const mcfilter = await rt.topo.exec(rt.relay, ["cat", "/proc/net/mcfilter"]);
      const { reports } = await capture.done;
      const rx = await startUdpReceiver(rt.topo, rt.sinks[0]!.ns, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3, first_s: 15 });
      await udpSend(rt.topo, rt.gen, { ifname: "g0", group: "232.1.1.1", port: 5000, batches: [[300]], repeat: 50, pause_s: 0.002 });
      const got = await rx.report();
      await fwd.stopJson<ForwardReport>();
      const records = reports.flatMap((r) => r.records ?? []).filter((r) => r.group === "232.1.1.1");
      note("ssm", { records, mcfilter: mcfilter.stdout, got: got.datagrams });

      // INCLUDE-mode records (CHANGE_TO_INCLUDE, ALLOW_NEW_SOURCES or MODE_IS_INCLUDE) naming the source, never an EXCLUDE.
      expect(records.length).toBeGreaterThan(0);
      expect(records.every((r) => [1, 3, 5].includes(r.type))).toBe(true);
      expect(records.some((r) => r.sources.includes(rt.genAddr))).toBe(true);
      // The kernel's own view: a source filter for the group on r0, in include mode.
      const hex = (a: string) => a.split(".").map((x) => Number(x).toString(16).padStart(2, "0")).join("").toUpperCase();
      const line = mcfilter.stdout.split("\n").find((l) => l.includes("r0") && l.toUpperCase().includes(hex("232.1.1.1")));
      expect(line?.toUpperCase()).toContain(hex(rt.genAddr));
      expect(got.datagrams).toBe(50);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "with igmp_max_memberships reached, rules show join-failed with the reason; after the sysctl is raised they become active, are joined and forward",
    async () => {
      const rt = await topology({ label: "joinlim" });
      await rt.topo.sysctl(rt.relay, "net.ipv4.igmp_max_memberships", 2);
      const dir = new TempDir();
      try {
        const rules = [1, 2, 3, 4].map((k) => `{ name: "g${k}", from: "239.1.1.${k}:5000@r0", to: ["239.2.2.${k}:6000@r1"] }`);
        const d = await TestDaemon.start(rt, dir, { configPath: dir.file("mcrelay.json5", `{ rules: [ ${rules.join(", ")} ] }`) });
        try {
          type Listed = ListedRule & { state: string; reasons: string[] };
          const listed = async () => (await d.json<{ rules: Listed[] }>(["list"])).rules;
          const failed = await waitFor("two rules in join-failed", async () => {
            const r = await listed();
            const f = r.filter((x) => x.state === "join-failed");
            return f.length === 2 ? r : undefined;
          }, 20_000, 200);
          note("joinlim before", failed.map((r) => [r.name, r.state, r.reasons]));
          expect(failed.filter((r) => r.state === "active")).toHaveLength(2);
          for (const r of failed.filter((x) => x.state === "join-failed")) {
            expect(r.reasons).toEqual(["join failed: ENOBUFS (net.ipv4.igmp_max_memberships=2)"]);
          }
          const events = await helloClient(d.socket);
          expect(await events.call("events")).toMatchObject({ subscribed: true });
          await rt.topo.sysctl(rt.relay, "net.ipv4.igmp_max_memberships", 20);
          const after = await waitFor("every rule active", async () => {
            const r = await listed();
            return r.every((x) => x.state === "active") ? r : undefined;
          }, 20_000, 200);
          const recovered: string[] = [];
          for (let i = 0; i < 10 && recovered.length < 2; i++) {
            const line = await events.nextLine(1_000);
            if (line && line.includes('"kind":"rule"') && line.includes('"state":"active"')) recovered.push(JSON.parse(line).event.rule);
          }
          events.close();
          const maddr = await rt.topo.exec(rt.relay, ["ip", "maddr", "show", "dev", "r0"]);
          const rx = await startUdpReceiver(rt.topo, rt.sinks[0]!.ns, { group: "239.2.2.4", port: 6000, ifname: "s0", idle_s: 3, first_s: 15 });
          await udpSend(rt.topo, rt.gen, { ifname: "g0", group: "239.1.1.4", port: 5000, batches: [[200]], repeat: 20, pause_s: 0.002 });
          const got = await rx.report();
          note("joinlim after", { states: after.map((r) => [r.name, r.state]), recovered, maddr: maddr.stdout, got: got.datagrams });
          for (const k of [1, 2, 3, 4]) expect(maddr.stdout).toContain(`239.1.1.${k}`);
          expect(recovered.sort()).toEqual(failed.filter((r) => r.state === "join-failed").map((r) => r.name).sort());
          expect(got.datagrams).toBe(20);
        } finally {
          await d.stop();
        }
      } finally {
        dir.remove();
      }
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a unicast input stream is relayed and no ICMP port unreachable reaches its sender",
    async () => {
      const rt = await topology({ label: "unicast" });
      // The premise: without a relay the host answers every datagram with ICMP.
      const before = await unicastProbe(rt.topo, rt.gen, { to: rt.relayInAddr, port: 5000, count: 5, stream: 9 });
      expect(before.icmp_port_unreachable).toBeGreaterThan(0);
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", `${rt.relayInAddr}:5000@r0`, "--to", "239.2.2.2:6000@r1"]);
      const rx = await startUdpReceiver(rt.topo, rt.sinks[0]!.ns, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3, first_s: 15 });
      const probe = await unicastProbe(rt.topo, rt.gen, { to: rt.relayInAddr, port: 5000, count: 200, stream: 1 });
      const got = await rx.report();
      const relay = await fwd.stopJson<ForwardReport>();
      note("unicast", { before, probe, got: got.streams, rule: relay.rules[0]?.packets });
      expect(probe).toEqual({ sent: 200, errors: 0, icmp_port_unreachable: 0 });
      expect(got.streams).toEqual({ "1": 200 });
      expect(relay.rules[0]!.packets).toBe(200);
    },
    TEST_TIMEOUT_MS,
  );
});
