// Start-up times of the compiled executable, as an operator meets them (needs root: network
// namespaces). Each figure is the median (and min/max) of --runs runs:
//   version   `mcrelay version` from exec to exit (no daemon running)
//   forward   `mcrelay forward` spawned -> first relayed datagram at a plain UDP receiver
//   run       `mcrelay run --config` spawned -> first relayed datagram at the receiver
// For the last two a generator already sends 10,000 packets/s into the relay's input, so the
// first relayed datagram follows the relay's readiness by at most 0.1 ms. Times are taken on
// one clock (CLOCK_REALTIME): the spawn instant here, the receiver's arrival stamp there.
//   bun scripts/startup-timing.ts [--runs N] [--binary PATH] [--json]
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Topology } from "./lib/netns.ts";

const root = resolve(import.meta.dir, "..");
const PYTHON3 = Bun.which("python3") ?? "python3";

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] ?? fallback : fallback;
}
if (process.argv.includes("--help")) {
  console.log("usage: bun scripts/startup-timing.ts [--runs N] [--binary PATH] [--json]   (root)");
  process.exit(0);
}
const runs = Number(option("--runs", "7"));
const binary = resolve(option("--binary", join(root, "dist/mcrelay")));
const json = process.argv.includes("--json");

/** Wall-clock now in ms with sub-ms resolution. */
const nowMs = (): number => performance.timeOrigin + performance.now();

/** Joins the group on the interface and prints the arrival time (ms, realtime) of the first datagram. */
const firstDatagramPy = String.raw`
import socket, struct, sys, time
grp, port, ifname = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((grp, port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(grp) + socket.inet_aton("0.0.0.0") + struct.pack("@i", socket.if_nametoindex(ifname)))
print("ready", flush=True)
s.settimeout(30)
s.recv(65536)
print("%.3f" % (time.time() * 1000), flush=True)
`;

function stats(xs: number[]): { median: number; min: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 10) / 10;
  return { median: r(s[Math.floor(s.length / 2)]!), min: r(s[0]!), max: r(s.at(-1)!) };
}

/** Synchronous spawn: the exit is seen at once (an awaited `exited` adds event-loop latency). */
function timeVersion(): number {
  const t = nowMs();
  const r = Bun.spawnSync({ cmd: [binary, "version"], stdout: "ignore", stderr: "ignore", env: { ...process.env, MCRELAY_SOCKET: "/nonexistent/mcrelay.sock" } });
  const ms = nowMs() - t;
  if (r.exitCode !== 0) throw new Error("mcrelay version failed");
  return ms;
}

async function lines(stream: ReadableStream<Uint8Array>, want: number): Promise<string[]> {
  const out: string[] = [];
  let buf = "";
  const decoder = new TextDecoder();
  const reader = stream.getReader();
  while (out.length < want) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0 && out.length < want) {
      out.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  }
  reader.releaseLock();
  return out;
}

/** One run: relay argv started after the receiver and the generator; ms from spawn to first datagram. */
async function timeRelay(topo: Topology, ns: { gen: string; relay: string; sink: string }, argv: string[]): Promise<number> {
  const recv = topo.spawn(ns.sink, [PYTHON3, "-c", firstDatagramPy, "239.2.2.2", "6000", "s0"], { stdout: "pipe", stderr: "inherit" });
  const [ready] = await lines(recv.stdout, 1);
  if (ready !== "ready") throw new Error("receiver did not start");
  const gen = topo.spawn(ns.gen, [binary, "gen", "--to", "239.1.1.1:5000@g0", "--rate", "10000", "--size", "200"], { stderr: "ignore" });
  await Bun.sleep(300); // the generator is sending
  const t = nowMs();
  const relay = topo.spawn(ns.relay, argv, { stderr: "ignore", stdout: "ignore" });
  const [arrived] = await lines(recv.stdout, 1);
  relay.kill("SIGTERM");
  gen.kill("SIGTERM");
  await Promise.all([relay.exited, gen.exited, recv.exited]);
  if (!arrived || Number.isNaN(Number(arrived))) throw new Error("no datagram arrived within 30 s");
  return Number(arrived) - t;
}

const topo = await Topology.create("startup");
const results: Record<string, { median: number; min: number; max: number; runs: number[] }> = {};
const dir = mkdtempSync(join(tmpdir(), "mcr-startup-"));
try {
  const gen = await topo.ns("gen");
  const relay = await topo.ns("relay");
  const sink = await topo.ns("sink");
  await topo.link({ ns: gen, ifname: "g0", addr: "10.99.1.1/24" }, { ns: relay, ifname: "r0", addr: "10.99.1.2/24" });
  await topo.link({ ns: relay, ifname: "r1", addr: "10.99.2.1/24" }, { ns: sink, ifname: "s0", addr: "10.99.2.2/24" });
  await topo.addMulticastRoute(gen, "g0");
  const config = join(dir, "mcrelay.json5");
  writeFileSync(config, `{ rules: [ { name: "a", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] } ] }\n`);
  const ns = { gen, relay, sink };

  const version: number[] = [];
  for (let i = 0; i < runs; i++) version.push(timeVersion());
  const forward: number[] = [];
  for (let i = 0; i < runs; i++) forward.push(await timeRelay(topo, ns, [binary, "forward", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1"]));
  const run: number[] = [];
  for (let i = 0; i < runs; i++) {
    const state = join(dir, `state${i}`);
    run.push(await timeRelay(topo, ns, [binary, "run", "--config", config, "--socket", join(dir, `s${i}.sock`), "--state-dir", state]));
  }
  for (const [name, xs] of Object.entries({ version, forward, run })) results[name] = { ...stats(xs), runs: xs.map((x) => Math.round(x * 10) / 10) };
} finally {
  await topo.destroy();
  rmSync(dir, { recursive: true, force: true });
}
if (json) console.log(JSON.stringify({ binary, runs, ms: results }, null, 2));
else for (const [name, r] of Object.entries(results)) console.log(`${name.padEnd(8)} median ${r.median} ms (min ${r.min}, max ${r.max}; ${runs} runs)`);
