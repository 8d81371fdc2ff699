// What reaches a rule on the input side, checked outside the relay: a source-filtered rule
// relays the named source's packets and none of another's (counted by an independent
// receiver); the input group is joined on the input interface (read from /proc/net/igmp of the
// relay namespace, since veth would deliver the stream without a join); frames that are not
// IPv4/UDP never reach the ring, because the ingress BPF filter drops them, while malformed
// IPv4/UDP frames do reach it and are counted per reason.
import { afterEach, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import {
  buildRelayTopology,
  injectFrames,
  MALFORMED_KINDS,
  NON_UDP_KINDS,
  note,
  startForward,
  workerSum,
  type ForwardReport,
  type RelayTopology,
  type RelayTopologyOptions,
} from "../support/relay-harness.ts";
import { startReceiver } from "../support/receiver.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const mode = "bun" as const;
const T = 180_000;

let topo: Topology | undefined;

afterEach(async () => {
  await topo?.destroy();
  topo = undefined;
}, T);

async function topology(opts: RelayTopologyOptions): Promise<RelayTopology> {
  topo = await Topology.create(opts.label);
  return buildRelayTopology(topo, opts);
}

/** IPv4 groups joined per interface, from /proc/net/igmp of the namespace. */
async function igmpMemberships(rt: RelayTopology, ns: string): Promise<Record<string, string[]>> {
  const r = await rt.topo.exec(ns, ["cat", "/proc/net/igmp"], { check: true });
  const out: Record<string, string[]> = {};
  let dev: string | null = null;
  for (const line of r.stdout.split("\n")) {
    const head = /^\d+\s+(\S+)\s*:/.exec(line);
    if (head) {
      dev = head[1]!;
      out[dev] = [];
      continue;
    }
    // The group is the in_addr as a host-order hex word: 239.1.1.1 reads 010101EF here.
    const group = /^\s+([0-9A-Fa-f]{8})\s+\d+/.exec(line);
    if (group && dev !== null) {
      const v = Number.parseInt(group[1]!, 16);
      const bytes = new Uint8Array(new Uint32Array([v]).buffer);
      out[dev]!.push(Array.from(bytes).join("."));
    }
  }
  return out;
}

describe_netns("ingress (kernel, under bun)", () => {
  test(
    "a rule with --source relays every packet from that source and none from another source on the same group",
    async () => {
      const rt = await topology({ label: "source" });
      const other = "10.99.1.7";
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--source", rt.genAddr]);
      // Idle long enough to span the injector runs between the relayed bursts on a busy machine.
      const rx = await startReceiver(rt.topo, rt.sinks[0]!.ns, { addr: "239.2.2.2", port: 6000, ifname: "s0", idleS: 8, timeoutS: 120 });
      const frame = { ifname: "g0", kind: "valid" as const, group: "239.1.1.1", dstPort: 5000 };
      const matching = await injectFrames(rt.topo, rt.gen, { ...frame, src: rt.genAddr, count: 300 });
      const foreign = await injectFrames(rt.topo, rt.gen, { ...frame, src: other, count: 200 });
      // Interleaved once more, so a filter that only holds for the first packets is caught too.
      const matching2 = await injectFrames(rt.topo, rt.gen, { ...frame, src: rt.genAddr, count: 100 });
      const got = await rx.report();
      const report = await fwd.stopJson<ForwardReport>("SIGINT");
      note("source filter", { matching, foreign, matching2, got, counters: report.workers[0]?.counters });

      expect([matching, foreign, matching2]).toEqual([300, 200, 100]);
      expect(got.datagrams).toBe(400);
      expect(got.sources).toEqual({ [rt.sinks[0]!.relayAddr]: 400 });
      expect(report.rules[0]!.packets).toBe(400);
      expect(workerSum(report, "matched")).toBe(400);
      expect(workerSum(report, "source_mismatch")).toBe(200);
    },
    T,
  );

  test(
    "the input group is joined on the input interface while the rule runs (IGMP membership in /proc/net/igmp) and left when it stops",
    async () => {
      const rt = await topology({ label: "igmp" });
      const before = await igmpMemberships(rt, rt.relay);
      expect(before.r0 ?? []).not.toContain("239.1.1.1");
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      const during = await igmpMemberships(rt, rt.relay);
      // The output group is sent to, never joined; and nothing else joins the input group.
      const joined = Object.entries(during).filter(([, groups]) => groups.includes("239.1.1.1")).map(([dev]) => dev);
      const output_joined = Object.entries(during).filter(([, groups]) => groups.includes("239.2.2.2")).map(([dev]) => dev);
      await fwd.stopJson<ForwardReport>("SIGINT");
      const after = await igmpMemberships(rt, rt.relay);
      note("igmp", { before, during, after });

      expect(joined).toEqual(["r0"]);
      expect(output_joined).toEqual([]);
      expect(after.r0 ?? []).not.toContain("239.1.1.1");
    },
    T,
  );

  test(
    "frames that are not UDP over IPv4 or IPv6 (TCP, ICMP, ARP, an MLD report) never reach the ring (the ingress filter drops them); malformed IPv4/UDP frames do and are counted per reason",
    async () => {
      const rt = await topology({ label: "filter" });
      const per_kind = 40;
      const valid = 30;
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      // Only the valid frames, sent last, come out: the receiver idles out after them.
      const rx = await startReceiver(rt.topo, rt.sinks[0]!.ns, { addr: "239.2.2.2", port: 6000, ifname: "s0", idleS: 2, timeoutS: 180 });
      const frame = { ifname: "g0", src: rt.genAddr, group: "239.1.1.1", dstPort: 5000, count: per_kind };
      const sent: Record<string, number> = {};
      for (const kind of NON_UDP_KINDS) sent[kind] = await injectFrames(rt.topo, rt.gen, { ...frame, kind });
      for (const kind of Object.keys(MALFORMED_KINDS) as (keyof typeof MALFORMED_KINDS)[]) sent[kind] = await injectFrames(rt.topo, rt.gen, { ...frame, kind });
      sent.valid = await injectFrames(rt.topo, rt.gen, { ...frame, kind: "valid", count: valid });
      const got = await rx.report();
      const report = await fwd.stopJson<ForwardReport>("SIGINT");
      const drops = report.workers[0]!.parse_drops;
      note("ingress filter", { sent, got: got.datagrams, drops, counters: report.workers[0]?.counters });

      const malformed = Object.keys(MALFORMED_KINDS).length * per_kind;
      expect(Object.values(sent).reduce((a, b) => a + b, 0)).toBe((NON_UDP_KINDS.length + Object.keys(MALFORMED_KINDS).length) * per_kind + valid);
      // Only the valid frames came out of the relay.
      expect(got.datagrams).toBe(valid);
      expect(report.rules[0]!.packets).toBe(valid);
      // The ring saw exactly the IPv4/UDP frames, well-formed or not: nothing else got past the filter.
      expect(workerSum(report, "rx_frames")).toBe(malformed + valid);
      const expected_drops: Record<string, number> = {};
      for (const reason of Object.values(MALFORMED_KINDS)) expected_drops[reason] = per_kind;
      expect(Object.fromEntries(Object.entries(drops).filter(([, n]) => n !== 0))).toEqual(expected_drops);
      expect(workerSum(report, "kernel_drops")).toBe(0);
    },
    T,
  );
});
