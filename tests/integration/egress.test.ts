// What the output side puts on the wire, checked by independent receivers (plain Python sockets
// reading the TTL / hop limit and the arrival interface of each datagram): `forward --ttl`, a
// unicast output bound to an interface (IP_UNICAST_IF) against a route that says otherwise,
// a rule's only unicast output that learns ICMP port unreachable (ECONNREFUSED), and an IPv6 multicast output leaving by its interface (IPV6_MULTICAST_IF) against a route
// that says otherwise. Each receiver reads until it has been idle, so duplicates are counted.
// An output to the broadcast address of its interface's subnet (which no datagram could reach
// without SO_BROADCAST) is refused by forward and add, and pending when the address comes later.
import { afterEach, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import {
  buildRelayTopology,
  mcrelayCommand,
  note,
  runGen,
  startForward,
  type ForwardReport,
  type RelayTopology,
  type RelayTopologyOptions,
} from "../support/relay-harness.ts";
import { startReceiver } from "../support/receiver.ts";
import { TempDir, TestDaemon, waitFor } from "../support/daemon-harness.ts";

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

async function ip(rt: RelayTopology, ns: string, args: string[]): Promise<void> {
  await rt.topo.exec(ns, ["ip", ...args], { check: true });
}

/** Udp NoPorts of a namespace (/proc/net/snmp): datagrams for a port nobody listens on. */
async function udpNoPorts(rt: RelayTopology, ns: string): Promise<number> {
  const r = await rt.topo.exec(ns, ["cat", "/proc/net/snmp"], { check: true });
  const lines = r.stdout.split("\n").filter((l) => l.startsWith("Udp: "));
  const [head, values] = [lines[0]!.split(/\s+/), lines[1]!.split(/\s+/)];
  return Number(values[head.indexOf("NoPorts")]);
}

async function gen(rt: RelayTopology, count: number, stream = 1): Promise<number> {
  const r = await runGen(rt.topo, rt.gen, mode, ["--to", "239.1.1.1:5000@g0", "--rate", "2000", "--count", String(count), "--size", "200", "--stream", String(stream)]);
  expect(r.send_errors).toBe(0);
  return r.sent;
}

describe_netns("egress (kernel, under bun)", () => {
  test(
    "forward --ttl 5 sends every packet with IP TTL 5 (seen by the receiver), and without --ttl with the default 8",
    async () => {
      const rt = await topology({ label: "fwdttl", sinks: 2 });
      const count = 1_000;
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--ttl", "5"]);
      const rx = await startReceiver(rt.topo, rt.sinks[0]!.ns, { addr: "239.2.2.2", port: 6000, ifname: "s0" });
      const sent = await gen(rt, count);
      const got = await rx.report();
      const report = await fwd.stopJson<ForwardReport>("SIGINT");
      // The same without --ttl, on the other sink.
      const fwd8 = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "239.2.2.3:6000@r2"]);
      const rx8 = await startReceiver(rt.topo, rt.sinks[1]!.ns, { addr: "239.2.2.3", port: 6000, ifname: "s0" });
      const sent8 = await gen(rt, count, 2);
      const got8 = await rx8.report();
      await fwd8.stopJson<ForwardReport>("SIGINT");
      note("forward --ttl", { got, got8 });

      expect([sent, sent8]).toEqual([count, count]);
      expect(got).toMatchObject({ datagrams: count, unique: count, duplicates: 0, ttls: { "5": count } });
      expect(report.rules[0]!.outputs[0]).toMatchObject({ ttl: 5, packets: count });
      expect(got8).toMatchObject({ datagrams: count, unique: count, duplicates: 0, ttls: { "8": count } });
    },
    T,
  );

  test(
    "a unicast output bound to an interface leaves by that interface even when the route points elsewhere (IP_UNICAST_IF)",
    async () => {
      const rt = await topology({ label: "ucastif", sinks: 2 });
      const [s1, s2] = rt.sinks as [(typeof rt.sinks)[0], (typeof rt.sinks)[0]];
      // 10.50.0.2 exists behind both outputs; the relay's route says r2, the rule says r1.
      const dest = "10.50.0.2";
      await ip(rt, s1.ns, ["addr", "add", `${dest}/32`, "dev", "s0"]);
      await ip(rt, s2.ns, ["addr", "add", `${dest}/32`, "dev", "s0"]);
      await ip(rt, rt.relay, ["route", "add", `${dest}/32`, "via", s2.addr, "dev", s2.relayIf]);
      // The premise: without the binding the kernel would send it to sink 2.
      const route = await rt.topo.exec(rt.relay, ["ip", "-o", "route", "get", dest], { check: true });
      expect(route.stdout).toContain(`dev ${s2.relayIf}`);

      const count = 1_000;
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", `${dest}:7000@${s1.relayIf}`]);
      const rx1 = await startReceiver(rt.topo, s1.ns, { addr: dest, port: 7000, ifname: "s0", label: "receiver on the bound side" });
      const rx2 = await startReceiver(rt.topo, s2.ns, { addr: dest, port: 7000, ifname: "s0", label: "receiver on the routed side" });
      const sent = await gen(rt, count);
      // The routed side expects nothing: it listens through the whole run, until the bound side idled out.
      const [got1, got2] = [await rx1.report(), await rx2.stop()];
      const report = await fwd.stopJson<ForwardReport>("SIGINT");
      note("IP_UNICAST_IF", { got1, got2, output: report.rules[0]!.outputs[0] });

      expect(sent).toBe(count);
      // Every packet at the receiver behind r1, from r1's address, arriving on its s0; none behind r2.
      expect(got1).toMatchObject({ datagrams: count, unique: count, duplicates: 0, sources: { [s1.relayAddr]: count }, ifaces: { s0: count } });
      expect(got2.datagrams).toBe(0);
      expect(report.rules[0]!.outputs[0]).toMatchObject({ packets: count, send_errors: {} });
    },
    T,
  );

  test(
    "a rule's only unicast output learns ICMP port unreachable from its destination: ECONNREFUSED counted, every other datagram on the wire",
    async () => {
      const rt = await topology({ label: "ucastrefused", sinks: 1 });
      const s = rt.sinks[0]!;
      // Nothing listens on port 7000 in the sink namespace: it answers ICMP port unreachable
      // (rate-limited by the kernel). A 1:1 rule sends on the output's own connected socket,
      // which reports it on a later send; the shared unconnected socket never would. gso=off:
      // a GSO buffer reaches a port without a socket unsplit and counts once in NoPorts.
      const count = 1_000;
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", `${s.addr}:7000@${s.relayIf},gso=off`]);
      const before = await udpNoPorts(rt, s.ns);
      const sent = await gen(rt, count);
      await Bun.sleep(300);
      const noPorts = (await udpNoPorts(rt, s.ns)) - before;
      const report = await fwd.stopJson<ForwardReport>("SIGINT");
      const output = report.rules[0]!.outputs[0]!;
      note("ECONNREFUSED", { noPorts, output });

      expect(sent).toBe(count);
      const refused = output.send_errors.ECONNREFUSED ?? 0;
      expect(refused).toBeGreaterThan(0);
      expect(Object.keys(output.send_errors)).toEqual(["ECONNREFUSED"]);
      // What the relay counts as sent is what reached the sink's UDP layer (as NoPorts).
      expect(output.packets + refused).toBe(count);
      expect(noPorts).toBe(output.packets);
    },
    T,
  );

  test(
    "an IPv6 multicast output reaches a receiver joined on that interface with the rule's hop limit, even when the route points elsewhere (IPV6_MULTICAST_IF)",
    async () => {
      const rt = await topology({ label: "v6out", sinks: 2 });
      const [s1, s2] = rt.sinks as [(typeof rt.sinks)[0], (typeof rt.sinks)[0]];
      const group = "ff15::4d:1";
      for (const [k, s] of [s1, s2].entries()) {
        await ip(rt, rt.relay, ["-6", "addr", "add", `fd00:4d:${k + 1}::1/64`, "dev", s.relayIf, "nodad"]);
        await ip(rt, s.ns, ["-6", "addr", "add", `fd00:4d:${k + 1}::2/64`, "dev", "s0", "nodad"]);
      }
      // The relay's route for the group says r1; the rule says r2.
      await ip(rt, rt.relay, ["-6", "route", "add", "ff15::/16", "dev", s1.relayIf, "table", "local"]);
      const count = 1_000;
      const fwd = await startForward(rt.topo, rt.relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", `[${group}]:6000@${s2.relayIf}`, "--ttl", "3"]);
      const rx2 = await startReceiver(rt.topo, s2.ns, { addr: group, port: 6000, ifname: "s0", label: "IPv6 receiver behind r2" });
      const rx1 = await startReceiver(rt.topo, s1.ns, { addr: group, port: 6000, ifname: "s0", label: "IPv6 receiver behind r1" });
      const sent = await gen(rt, count);
      const [got2, got1] = [await rx2.report(), await rx1.stop()];
      const report = await fwd.stopJson<ForwardReport>("SIGINT");
      note("IPv6 multicast output", { got2, got1, output: report.rules[0]!.outputs[0] });

      expect(sent).toBe(count);
      expect(got2).toMatchObject({ datagrams: count, unique: count, duplicates: 0, ttls: { "3": count }, ifaces: { s0: count } });
      expect(got1.datagrams).toBe(0);
      expect(report.rules[0]!.outputs[0]).toMatchObject({ to: `[${group}]:6000@${s2.relayIf}`, packets: count, send_errors: {} });
    },
    T,
  );

  test(
    "an output to its interface's subnet broadcast address is refused by forward and add, and pending (the daemon unharmed) when the subnet appears later",
    async () => {
      const rt = await topology({ label: "bcast", sinks: 1 });
      const s = rt.sinks[0]!; // r1 is 10.99.2.1/24: its broadcast address is 10.99.2.255
      const why = `is the broadcast address of ${s.relayIf}'s subnet 10.99.2.0/24: mcrelay sends without SO_BROADCAST`;
      const fwd = await rt.topo.exec(rt.relay, [...mcrelayCommand(mode), "forward", "--from", "239.1.1.1:5000@r0", "--to", `10.99.2.255:7000@${s.relayIf}`, "--duration", "1"]);
      expect(fwd.exitCode).toBe(2);
      expect(fwd.stderr).toContain(`--to: output 10.99.2.255:7000@${s.relayIf} ${why}`);

      const dir = new TempDir();
      try {
        // 10.77.5.255 is a host address until r1 gets 10.77.5.1/24.
        const rules = [{ name: "later", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1", `10.77.5.255:7000@${s.relayIf}`] }];
        const d = await TestDaemon.start(rt, dir, { configPath: dir.file("mcrelay.json5", JSON.stringify({ rules })) });
        const add = await d.cli(["add", "-n", "bc", "-f", "239.1.1.3:5000@r0", "-t", `10.99.2.255:7000@${s.relayIf}`]);
        expect(add.exitCode).not.toBe(0);
        expect(add.stderr).toContain(`rule bc refused, nothing changed: output 10.99.2.255:7000@${s.relayIf} ${why}`);

        await ip(rt, rt.relay, ["addr", "add", "10.77.5.1/24", "dev", s.relayIf]);
        type Listed = { rules: { name: string; state: string; outputs: { to: string; state: string; reason: string | null }[] }[] };
        const pending = await waitFor("broadcast output pending", async () => {
          const out = (await d.json<Listed>(["list"])).rules[0]!.outputs;
          return out[1]!.state === "pending" ? out : undefined;
        });
        note("broadcast output", pending);
        expect(pending[1]!.reason).toContain(`output 10.77.5.255:7000@${s.relayIf} is the broadcast address of ${s.relayIf}'s subnet 10.77.5.0/24`);
        expect(pending[0]!.state).toBe("active");
        expect((await d.json<Listed>(["list"])).rules.map((r) => [r.name, r.state])).toEqual([["later", "active"]]);
        expect(d.running).toBe(true);
        await d.stop();
      } finally {
        dir.remove();
      }
    },
    T,
  );
});
