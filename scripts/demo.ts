// `bun run demo`: builds a throwaway generator -> relay -> sink topology in network namespaces,
// relays a generated stream through dist/mcrelay for a few seconds (group and port rewritten,
// source unroutable from the relay, TTL 1), prints what the sink received, removes everything.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { Topology } from "./lib/netns.ts";

const root = resolve(import.meta.dir, "..");
const mcrelay = resolve(root, "dist/mcrelay");
if (!existsSync(mcrelay)) {
  console.error("demo: dist/mcrelay is missing: run `bun run build` first");
  process.exit(1);
}
if (process.getuid?.() !== 0) {
  console.error("demo: needs root (it creates network namespaces)");
  process.exit(1);
}

const packets = 20_000;
const rate = 10_000;
const topo = await Topology.create("demo");
try {
  const gen = await topo.ns("gen");
  const relay = await topo.ns("relay");
  const sink = await topo.ns("sink");
  // The generator's address is in a subnet the relay has no route back to: the kernel's
  // reverse-path filter would drop this stream; a layer-2 relay does not care.
  await topo.link({ ns: gen, ifname: "gen0", addr: "10.77.0.1/24" }, { ns: relay, ifname: "in0", addr: "10.99.1.2/24" });
  await topo.link({ ns: relay, ifname: "out0", addr: "10.99.2.1/24" }, { ns: sink, ifname: "sink0", addr: "10.99.2.2/24" });
  await topo.addMulticastRoute(gen, "gen0");
  await topo.enableRpFilter(relay, 1);

  const forward = topo.spawn(relay, [mcrelay, "forward", "--from", "239.1.1.1:5000@in0", "--to", "239.2.2.2:6000@out0", "--duration", "6", "--json"], { stdout: "pipe", stderr: "pipe" });
  const receiver = topo.spawn(sink, [mcrelay, "sink", "--listen", "239.2.2.2:6000@sink0", "--expect", String(packets), "--duration", "6", "--json"], { stdout: "pipe", stderr: "pipe" });
  await waitForLine(forward.stderr, /forwarding/, "relay");
  await waitForLine(receiver.stderr, /listening on/, "sink");

  console.log(`demo: sending ${packets} packets of 1316 bytes at ${rate} pps, TTL 1, from unroutable 10.77.0.1 to 239.1.1.1:5000`);
  console.log("demo: the relay republishes them as 239.2.2.2:6000 on the sink's link");
  const sent = await topo.exec(gen, [mcrelay, "gen", "--to", "239.1.1.1:5000@gen0", "--rate", String(rate), "--count", String(packets), "--ttl", "1", "--json"], { check: true });
  const genReport = JSON.parse(sent.stdout);
  const [fwdOut, sinkOut] = await Promise.all([new Response(forward.stdout).text(), new Response(receiver.stdout).text()]);
  await Promise.all([forward.exited, receiver.exited]);
  const fwd = JSON.parse(fwdOut);
  const got = JSON.parse(sinkOut);
  const stream = got.streams[0];
  console.log("");
  console.log(`generator: sent ${genReport.sent} packets at ${genReport.rate_pps} pps`);
  console.log(`relay:     ${fwd.rules[0].packets} packets in, ${fwd.rules[0].outputs[0].packets} out, ${fwd.workers[0].counters.kernel_drops} ring drops`);
  console.log(
    `sink:      received ${got.totals.received}, lost ${got.totals.lost}, duplicates ${got.totals.duplicates}, ` +
      `reordered ${got.totals.reordered}, pattern errors ${got.totals.pattern_errors}` +
      (stream ? `, latency p50 ${Math.round(stream.latency_us.p50)} us, p99 ${Math.round(stream.latency_us.p99)} us` : ""),
  );
  if (got.totals.received !== packets) process.exitCode = 1;
} finally {
  await topo.destroy();
}

async function waitForLine(stream: ReadableStream<Uint8Array>, pattern: RegExp, who: string): Promise<void> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value);
    if (pattern.test(text)) {
      reader.releaseLock();
      return;
    }
  }
  throw new Error(`demo: ${who} did not start:\n${text}`);
}
