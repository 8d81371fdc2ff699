/**
 * Fresh namespace topologies for one contender: generator, relay and sinks each in their own
 * namespace, joined by veth pairs, with the same sysctls and softirq placement whatever the
 * contender. The calibration has no relay: the generator is linked straight to the sink.
 *
 *   gen [g0 10.99.1.1] --- [r0 10.99.1.2] relay [r<i+1> 10.99.<10+i>.1] --- [s0 10.99.<10+i>.2] sink<i>
 *   gen [g0 10.99.1.1] --- [s0 10.99.1.2] sink0                          (calibration)
 */
import { Topology } from "../lib/netns.ts";

/** Fan-out is bounded by the address plan (10.99.10.0/24 .. 10.99.254.0/24). */
export const FANOUT_MAX = 200;

export type RpsMode = "off" | "relay";

export interface Placement {
  /** CPU of the generator (and so of the receive softirq of the relay's input when RPS is off). */
  gen: number;
  /** CPU of the relay's processes (mcrelay supervisor and worker, socat, smcrouted). */
  relay: number;
  sink: number;
  rps: RpsMode;
}

export interface BenchTopology {
  topo: Topology;
  calibration: boolean;
  gen: string;
  relay: string | null;
  sinks: string[];
  /** Relay's input interface ("r0") and output interfaces ("r1".."rN"). */
  inIf: string;
  outIfs: string[];
  /** Relay's address on each output link, for peers that pick the interface by address (socat). */
  outAddrs: string[];
  genAddr: string;
  /** Full namespace name -> role ("gen", "relay", "sink3"). */
  roles: Map<string, string>;
  /** Sysctls and placement applied, for the record. */
  applied: Record<string, string>;
}

export async function buildTopology(label: string, fanout: number, calibration: boolean, placement: Placement): Promise<BenchTopology> {
  if (!(Number.isInteger(fanout) && fanout >= 1 && fanout <= FANOUT_MAX)) throw new Error(`fanout ${fanout}: must be 1..${FANOUT_MAX}`);
  if (calibration && fanout !== 1) throw new Error("calibration: the generator links straight to one sink (fanout 1)");
  const topo = await Topology.create(label);
  try {
    return await populate(topo, fanout, calibration, placement);
  } catch (err) {
    await topo.destroy();
    throw err;
  }
}

async function populate(topo: Topology, fanout: number, calibration: boolean, placement: Placement): Promise<BenchTopology> {
  const gen = await topo.ns("gen");
  const roles = new Map<string, string>([[gen, "gen"]]);
  const sinks: string[] = [];
  const outIfs: string[] = [];
  const outAddrs: string[] = [];
  let relay: string | null = null;
  if (calibration) {
    const sink = await topo.ns("sink0");
    roles.set(sink, "sink0");
    sinks.push(sink);
    await topo.link({ ns: gen, ifname: "g0", addr: "10.99.1.1/24" }, { ns: sink, ifname: "s0", addr: "10.99.1.2/24" });
  } else {
    relay = await topo.ns("relay");
    roles.set(relay, "relay");
    await topo.link({ ns: gen, ifname: "g0", addr: "10.99.1.1/24" }, { ns: relay, ifname: "r0", addr: "10.99.1.2/24" });
    // Sinks are created and linked a few at a time: 1:50 needs 100 ip(8) calls.
    const indexes = Array.from({ length: fanout }, (_, i) => i);
    for (let at = 0; at < indexes.length; at += 8) {
      await Promise.all(
        indexes.slice(at, at + 8).map(async (i) => {
          const sink = await topo.ns(`sink${i}`);
          roles.set(sink, `sink${i}`);
          sinks[i] = sink;
          outIfs[i] = `r${i + 1}`;
          outAddrs[i] = `10.99.${10 + i}.1`;
          await topo.link({ ns: relay!, ifname: `r${i + 1}`, addr: `10.99.${10 + i}.1/24` }, { ns: sink, ifname: "s0", addr: `10.99.${10 + i}.2/24` });
        }),
      );
    }
  }
  await topo.addMulticastRoute(gen, "g0");
  const applied: Record<string, string> = {};
  const all = [...roles.keys()];
  await Promise.all(
    all.map(async (ns) => {
      // One sh per namespace: a few dozen sysctls for 1:50 would otherwise be hundreds of spawns.
      const script = [
        "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done",
        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
        "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
        ns === relay ? "echo 1 > /proc/sys/net/ipv4/ip_forward" : "true",
      ].join(" && ");
      await topo.exec(ns, ["sh", "-c", script], { check: true });
    }),
  );
  applied["net.ipv4.conf.*.rp_filter"] = "0 (every namespace)";
  // net.core.{r,w}mem_max are read-only in a child namespace and copied from the host's at
  // creation: the host's values apply, unchanged.
  for (const key of ["rmem_max", "wmem_max"]) {
    applied[`net.core.${key}`] = `${(await topo.sysctlGet(gen, `net.core.${key}`)).trim()} (host value, read-only in a namespace)`;
  }
  applied["net.ipv6.conf.all.disable_ipv6"] = "1 (every namespace: no ND/MLD chatter on the links)";
  applied["net.ipv4.ip_forward"] = "1 (relay namespace)";
  // Softirq placement. With RPS off, a veth frame is received on the CPU that sent it: the
  // relay's input is processed on the generator's CPU, its outputs on the relay's CPU. RPS
  // moves the relay's input to the relay's CPU; in the calibration (no relay) it moves the
  // sink's receive to the sink's CPU, so that the generator's CPU runs the generator alone.
  const mask = (1 << (relay ? placement.relay : placement.sink)).toString(16);
  const rpsTarget = relay ? { ns: relay, dev: "r0" } : { ns: sinks[0]!, dev: "s0" };
  const rps = placement.rps === "relay" ? mask : "0";
  await topo.exec(rpsTarget.ns, ["sh", "-c", `for q in /sys/class/net/${rpsTarget.dev}/queues/rx-*/rps_cpus; do echo ${rps} > $q; done`], { check: true });
  applied[`rps_cpus on ${rpsTarget.dev}`] = rps;
  return {
    topo,
    calibration,
    gen,
    relay,
    sinks,
    inIf: "r0",
    outIfs,
    outAddrs,
    genAddr: "10.99.1.1",
    roles,
    applied,
  };
}
