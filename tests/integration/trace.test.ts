// `mcrelay trace` and `mcrelay capture` against a live daemon (and a `forward --socket`): a
// matched packet with its per-output result, a wrong-port packet with its verdict, nothing of
// another rule; a pcap file tcpdump reads back with the expected count; -c N stops after exactly
// N of more packets; a trace whose client died ends by itself; each record has its own frame's
// receive time; a refused capture leaves an existing file alone; `trace | head -1` gives its
// session back at once; VLAN tags (PCP, DEI, QinQ) come back whole in a capture.
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, mcrelayCommand, note, startForward, startLogged, type RelayTopology } from "../support/relay-harness.ts";
import { RawClient, TempDir, TestDaemon, killBackground, sink, sinkReport, startStream, stopStream, waitFor } from "../support/daemon-harness.ts";
import { sendRawFrames } from "../support/udp-tools.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 180_000;

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir | undefined;
let daemon: TestDaemon | undefined;

interface Rec {
  verdict: string;
  reason: string | null;
  rule: string | null;
  src: string;
  dst: string;
  dst_port: number;
  src_port: number;
  length: number;
  ttl: number;
  dscp: number;
  vlan: number | null;
  interface: string;
  outputs: { to: string; result: string }[];
}

async function gen(to: string, count: number, extra: string[] = [], ratePps = 1000): Promise<void> {
  const r = await rt.topo.exec(rt.gen, [...mcrelayCommand("bun"), "gen", "--to", to, "--count", String(count), "--rate", String(ratePps), "--size", "120", ...extra], { timeoutMs: 60_000 });
  if (r.exitCode !== 0) throw new Error(`gen ${to}: ${r.stderr}`);
}

/** A trace (or capture) CLI running in the relay namespace; its readiness is the "tracing" log line. */
async function startTrace(args: string[], socket: string) {
  const p = startLogged(rt.topo, rt.relay, [...mcrelayCommand("bun"), ...args, "--socket", socket], args.slice(0, 2).join(" "));
  await p.waitForStderr(/(tracing|capturing) rule/, 30_000);
  return p;
}

describe_netns("trace and capture (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("trace");
    rt = await buildRelayTopology(topo, { label: "trace", sinks: 1 });
  }, T);

  afterEach(async () => {
    await killBackground();
    if (daemon?.running) await daemon.stop();
    daemon = undefined;
    dir?.remove();
    dir = undefined;
  }, T);

  afterAll(async () => {
    await topo?.destroy();
  }, T);

  async function startDaemon(): Promise<TestDaemon> {
    const s = rt.sinks[0]!;
    dir = new TempDir();
    const configPath = dir.file(
      "mcrelay.json5",
      JSON.stringify({
        rules: [
          { name: "cam", from: "239.1.1.1:5000@r0", to: [`239.2.2.1:6001@${s.relayIf}`, "10.99.2.77:7000"], ttl: 3 },
          { name: "other", from: "239.1.1.2:5000@r0", to: [`239.2.2.2:6002@${s.relayIf}`] },
        ],
      }),
    );
    daemon = await TestDaemon.start(rt, dir, { configPath });
    return daemon;
  }

  test(
    "trace shows matched packets with each output's result, wrong-port packets with their verdict, and nothing of another rule",
    async () => {
      const d = await startDaemon();
      const s = rt.sinks[0]!;
      const receiver = await sink(rt, s.ns, `239.2.2.1:6001@${s.ifname}`, ["--expect", "30"], 1);
      const tracing = await startTrace(["trace", "cam", "--json", "--duration", "15"], d.socket);
      await gen("239.1.1.1:5000@g0", 30); // matched
      await gen("239.1.1.1:5001@g0", 20); // the rule's group, a wrong port: no rule matches
      await gen("239.1.1.2:5000@g0", 25); // another rule: not traced
      const got = await sinkReport(receiver);
      expect(got.totals.received).toBe(30);
      await waitFor("50 trace records", () => tracing.stdout.trim().split("\n").filter(Boolean).length >= 50 || undefined, 20_000, 200);
      tracing.proc.kill("SIGINT");
      expect(await tracing.wait(20_000)).toBe(0);
      const recs = tracing.stdout.trim().split("\n").map((l) => JSON.parse(l) as Rec);
      const matched = recs.filter((r) => r.verdict === "matched");
      const wrongPort = recs.filter((r) => r.verdict === "no_match");
      note("trace", { records: recs.length, matched: matched.length, no_match: wrongPort.length, example: matched[0], stderr: tracing.stderr.split("\n").filter((l) => l.includes("trace ended")) });
      expect(matched.length).toBe(30);
      expect(wrongPort.length).toBe(20);
      expect(recs.length).toBe(50);
      expect(recs.some((r) => r.dst === "239.1.1.2")).toBe(false);
      for (const r of matched) {
        expect(r).toMatchObject({ rule: "cam", dst: "239.1.1.1", dst_port: 5000, src: rt.genAddr, length: 120, interface: "r0", vlan: null, dscp: 0 });
        expect(r.ttl).toBeGreaterThanOrEqual(1);
        // The multicast output sent; the unicast one has no neighbour (nobody owns 10.99.2.77):
        // sendmsg succeeds (the kernel queues for ARP) or fails with EHOSTUNREACH: named either way.
        expect(r.outputs.length).toBe(2);
        expect(r.outputs[0]).toEqual({ to: `239.2.2.1:6001@${s.relayIf}`, result: "sent" });
        expect(r.outputs[1]!.to).toBe("10.99.2.77:7000");
        expect(["sent", "EHOSTUNREACH"]).toContain(r.outputs[1]!.result);
      }
      for (const r of wrongPort) {
        expect(r).toMatchObject({ dst: "239.1.1.1", dst_port: 5001, rule: null, outputs: [] });
      }
      // After the client stopped, tracing is off: a new trace starts at once.
      const again = await RawClient.connect(d.socket);
      await again.hello();
      const started = await again.call("trace-start", { rule: "other" });
      await again.call("trace-stop", { session: started.session });
      again.close();
    },
    T,
  );

  test(
    "capture writes a pcap file tcpdump reads back with the expected count, input frames before rewrite",
    async () => {
      const d = await startDaemon();
      const file = dir!.join("cam.pcap");
      const cap = await startTrace(["capture", "cam", "-w", file, "--count", "40"], d.socket);
      await gen("239.1.1.1:5000@g0", 40);
      expect(await cap.wait(30_000)).toBe(0);
      const r = await rt.topo.exec(rt.relay, ["tcpdump", "-n", "-r", file], { timeoutMs: 30_000 });
      expect(r.exitCode).toBe(0);
      const lines = r.stdout.trim().split("\n");
      note("capture", { lines: lines.length, first: lines[0] });
      expect(lines.length).toBe(40);
      for (const l of lines) expect(l).toContain(`${rt.genAddr}.`), expect(l).toContain("> 239.1.1.1.5000: UDP, length 120");

      // To stdout, piped into tcpdump.
      const piped = startLogged(rt.topo, rt.relay, ["sh", "-c", `"$@" | tcpdump -n -r - 2>/dev/null | wc -l`, "sh", ...mcrelayCommand("bun"), "capture", "cam", "-w", "-", "--count", "15", "--socket", d.socket], "capture | tcpdump");
      await piped.waitForStderr(/capturing rule/, 30_000);
      await gen("239.1.1.1:5000@g0", 15);
      expect(await piped.wait(30_000)).toBe(0);
      expect(piped.stdout.trim()).toBe("15");
    },
    T,
  );

  test(
    "trace -c 25 and capture -c 25 stop by themselves after exactly 25 of 60 matching packets and exit 0; the pcap file holds exactly 25 distinct packets",
    async () => {
      const d = await startDaemon();
      const tracing = await startTrace(["trace", "cam", "--json", "-c", "25"], d.socket);
      await gen("239.1.1.1:5000@g0", 60);
      expect(await tracing.wait(30_000)).toBe(0);
      const recs = tracing.stdout.trim().split("\n").map((l) => JSON.parse(l) as Rec);
      expect(recs.length).toBe(25);
      for (const r of recs) expect(r).toMatchObject({ verdict: "matched", rule: "cam", dst: "239.1.1.1", dst_port: 5000 });
      expect(tracing.stderr).toContain("trace ended (count): 25 records");

      const file = dir!.join("count.pcap");
      const cap = await startTrace(["capture", "cam", "-c", "25", "-w", file], d.socket);
      await gen("239.1.1.1:5000@g0", 60);
      expect(await cap.wait(30_000)).toBe(0);
      expect(cap.stderr).toContain("capture ended (count): 25 frames");
      // The file read here, record by record (classic pcap: a 24-byte header, then a 16-byte
      // header per packet whose incl_len bytes follow), and by tcpdump.
      const pcap = readFileSync(file);
      expect(pcap.readUInt32LE(0)).toBe(0xa1b2c3d4);
      const frames: string[] = [];
      for (let at = 24; at < pcap.length; ) {
        const incl = pcap.readUInt32LE(at + 8);
        const frame = pcap.subarray(at + 16, at + 16 + incl);
        expect(frame.length).toBe(incl);
        // Ethernet, IPv4 to 239.1.1.1, UDP to port 5000.
        expect(frame.readUInt16BE(12)).toBe(0x0800);
        expect([...frame.subarray(30, 34)]).toEqual([239, 1, 1, 1]);
        expect(frame.readUInt16BE(14 + 20 + 2)).toBe(5000);
        frames.push(frame.toString("hex"));
        at += 16 + incl;
      }
      note("count", { trace_records: recs.length, pcap_packets: frames.length, pcap_bytes: pcap.length });
      expect(frames.length).toBe(25);
      expect(new Set(frames).size).toBe(25);
      const r = await rt.topo.exec(rt.relay, ["tcpdump", "-n", "-r", file], { timeoutMs: 30_000 });
      expect(r.exitCode).toBe(0);
      expect(r.stdout.trim().split("\n").length).toBe(25);
    },
    T,
  );

  test(
    "tracing a 20,000 pps stream loses no relayed packet; what the ring cannot hold is counted, not waited for",
    async () => {
      const d = await startDaemon();
      const s = rt.sinks[0]!;
      const receiver = await sink(rt, s.ns, `239.2.2.1:6001@${s.ifname}`, [], 2);
      const tracing = await startTrace(["trace", "cam", "--json", "--duration", "12"], d.socket);
      const stream = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 20_000, size: 200, stream: 3 });
      await Bun.sleep(4000);
      const gen = await stopStream(stream);
      expect(await tracing.wait(30_000)).toBe(0);
      const got = await sinkReport(receiver);
      const records = tracing.stdout.trim().split("\n").filter(Boolean).length;
      const ended = tracing.stderr.split("\n").find((l) => l.includes("trace ended"))!;
      const lost = Number(/(\d+) lost \(the trace ring overflowed\)/.exec(ended)?.[1] ?? 0);
      note("trace-under-load", { sent: gen.sent, received: got.totals.received, records, lost_records: lost, ended });
      expect(got.totals.received).toBe(gen.sent);
      expect(got.totals.duplicates).toBe(0);
      expect(records).toBeGreaterThan(1000);
      // Every packet of the stream is either a record or counted as lost to the ring: the trace
      // ran the whole time the stream did (it started first and lasts 12 s).
      expect(records + lost).toBe(gen.sent);
    },
    T,
  );

  test(
    "a trace whose client died is switched off by the daemon within the lease, and a busy trace is refused meanwhile",
    async () => {
      const d = await startDaemon();
      const c = await RawClient.connect(d.socket);
      await c.hello();
      const started = await c.call("trace-start", { rule: "cam" });
      expect(started).toMatchObject({ rule: "cam", interface: "r0", workers: 1 });
      c.close(); // dies without trace-stop
      const second = await RawClient.connect(d.socket);
      await second.hello();
      const busy = await second.request("trace-start", { rule: "other" });
      expect(busy.ok).toBe(false);
      expect(busy.error!.code).toBe("busy");
      const at = Date.now();
      const ok = await waitFor("the dead client's trace to end", async () => {
        const r = await second.request("trace-start", { rule: "other" });
        return r.ok ? r.result : undefined;
      }, 15_000, 500);
      note("lease", { ended_after_ms: Date.now() - at });
      await second.call("trace-stop", { session: ok.session });
      second.close();
      await d.proc.waitForStderr(/trace of rule cam ended \(not read for 5 s/, 5_000);
    },
    T,
  );

  test(
    "trace works against forward --socket",
    async () => {
      const s = rt.sinks[0]!;
      dir = new TempDir();
      const socket = dir.join("fwd.sock");
      const fwd = await startForward(rt.topo, rt.relay, "bun", ["--from", "239.1.1.3:5000@r0", "--to", `239.2.2.3:6003@${s.relayIf}`, "--socket", socket]);
      try {
        const tracing = await startTrace(["trace", "1", "--json", "--count", "10"], socket);
        await gen("239.1.1.3:5000@g0", 10);
        expect(await tracing.wait(30_000)).toBe(0);
        const recs = tracing.stdout.trim().split("\n").map((l) => JSON.parse(l) as Rec);
        expect(recs.length).toBe(10);
        for (const r of recs) expect(r).toMatchObject({ verdict: "matched", dst: "239.1.1.3", outputs: [{ to: `239.2.2.3:6003@${s.relayIf}`, result: "sent" }] });
      } finally {
        fwd.proc.kill("SIGINT");
        await fwd.wait(20_000);
      }
    },
    T,
  );
  test(
    "each record carries its own frame's receive time: a burst at 10,000 pps gives distinct, increasing times about 100 us apart, in the trace and in a capture",
    async () => {
      const d = await startDaemon();
      const tracing = await startTrace(["trace", "cam", "--json", "-c", "200"], d.socket);
      await gen("239.1.1.1:5000@g0", 200, [], 10_000);
      expect(await tracing.wait(30_000)).toBe(0);
      const times = tracing.stdout.trim().split("\n").map((l) => BigInt((JSON.parse(l) as { time_ns: string }).time_ns));
      const gaps = times.slice(1).map((t, i) => Number(t - times[i]!) / 1000);
      const sorted = [...gaps].sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)]!;
      note("trace-times", { records: times.length, median_gap_us: median, min_gap_us: sorted[0], max_gap_us: sorted.at(-1), equal: gaps.filter((g) => g === 0).length });
      expect(times.length).toBe(200);
      // Before, a group of ring blocks (several frames at this rate) shared one time.
      expect(gaps.filter((g) => g <= 0)).toEqual([]);
      // gen paces at 100 us; a loaded machine delays some frames and bunches the next ones.
      expect(median).toBeGreaterThan(50);
      expect(median).toBeLessThan(200);
      // The times are the kernel's realtime stamps: within the last minute.
      expect(Math.abs(Number(times[0]! / 1_000_000n) - Date.now())).toBeLessThan(60_000);

      // The pcap file's timestamps, read by tcpdump (-tt: seconds.microseconds).
      const file = dir!.join("times.pcap");
      const cap = await startTrace(["capture", "cam", "-c", "100", "-w", file], d.socket);
      await gen("239.1.1.1:5000@g0", 100, [], 10_000);
      expect(await cap.wait(30_000)).toBe(0);
      const r = await rt.topo.exec(rt.relay, ["tcpdump", "-n", "-tt", "-r", file], { timeoutMs: 30_000 });
      expect(r.exitCode).toBe(0);
      const us = r.stdout.trim().split("\n").map((l) => Math.round(Number(l.split(" ")[0]) * 1e6));
      expect(us.length).toBe(100);
      expect(new Set(us).size).toBe(100);
      for (let i = 1; i < us.length; i++) expect(us[i]!).toBeGreaterThan(us[i - 1]!);
    },
    T,
  );

  test(
    "a capture the daemon refuses (busy, no such rule) leaves an existing -w file as it was; a capture that ran replaces it with a new file of mode 0640",
    async () => {
      const d = await startDaemon();
      const file = dir!.join("keep.pcap");
      writeFileSync(file, "an earlier capture\n");
      chmodSync(file, 0o644);
      const holder = await RawClient.connect(d.socket);
      await holder.hello();
      const held = await holder.call("trace-start", { rule: "other" });
      const busy = await rt.topo.exec(rt.relay, [...mcrelayCommand("bun"), "capture", "cam", "-w", file, "-c", "1", "--socket", d.socket], { timeoutMs: 30_000 });
      expect(busy.exitCode).toBe(6);
      await holder.call("trace-stop", { session: held.session });
      holder.close();
      const missing = await rt.topo.exec(rt.relay, [...mcrelayCommand("bun"), "capture", "nosuch", "-w", file, "-c", "1", "--socket", d.socket], { timeoutMs: 30_000 });
      expect(missing.exitCode).toBe(6);
      note("capture-refused", { busy: busy.stderr.trim(), missing: missing.stderr.trim() });
      expect(readFileSync(file, "utf8")).toBe("an earlier capture\n");
      expect(statSync(file).mode & 0o777).toBe(0o644);
      expect(existsSync(`${file}.tmp`)).toBe(false);

      const cap = await startTrace(["capture", "cam", "-c", "5", "-w", file], d.socket);
      await gen("239.1.1.1:5000@g0", 5);
      expect(await cap.wait(30_000)).toBe(0);
      expect(statSync(file).mode & 0o777).toBe(0o640);
      expect(existsSync(`${file}.tmp`)).toBe(false);
      const r = await rt.topo.exec(rt.relay, ["tcpdump", "-n", "-r", file], { timeoutMs: 30_000 });
      expect(r.exitCode).toBe(0);
      expect(r.stdout.trim().split("\n").length).toBe(5);
    },
    T,
  );

  test(
    "trace piped into head -1 gives its session back when head exits: another trace starts at once, not busy",
    async () => {
      const d = await startDaemon();
      const piped = startLogged(rt.topo, rt.relay, ["sh", "-c", `"$@" | head -1`, "sh", ...mcrelayCommand("bun"), "trace", "cam", "--socket", d.socket], "trace | head -1");
      await piped.waitForStderr(/tracing rule/, 30_000);
      // More packets than head reads: the trace's next line finds the pipe closed.
      await gen("239.1.1.1:5000@g0", 20);
      expect(await piped.wait(30_000)).toBe(0);
      expect(piped.stdout.trim().split("\n").length).toBe(1);
      const c = await RawClient.connect(d.socket);
      await c.hello();
      const again = await c.request("trace-start", { rule: "other" });
      note("trace-head", { stdout: piped.stdout.trim(), again_ok: again.ok, error: again.error });
      expect(again.ok).toBe(true);
      await c.call("trace-stop", { session: (again.result as { session: string }).session });
      c.close();
    },
    T,
  );

  test(
    "a capture puts a VLAN tag the kernel moved out back whole: PCP and DEI kept, and the outer 802.1ad tag of a QinQ frame",
    async () => {
      const d = await startDaemon();
      const file = dir!.join("vlan.pcap");
      const cap = await startTrace(["capture", "cam", "-c", "2", "-w", file], d.socket);
      // For the rule's group: a tagged frame matches no (untagged) rule, a QinQ frame is a parse drop.
      const frame = { src: rt.genAddr, dst: "239.1.1.1", dport: 5000, size: 100 };
      await sendRawFrames(rt.topo, rt.gen, "g0", [
        { ...frame, seq: 1, tags: [[0x8100, (5 << 13) | (1 << 12) | 100]] },
        { ...frame, seq: 2, tags: [[0x88a8, (3 << 13) | 300], [0x8100, 200]] },
      ], 0.05);
      expect(await cap.wait(30_000)).toBe(0);
      // Read back independently: the bytes after the MAC addresses, and tcpdump -e.
      const pcap = readFileSync(file);
      const frames: Buffer[] = [];
      for (let at = 24; at < pcap.length; ) {
        const incl = pcap.readUInt32LE(at + 8);
        frames.push(pcap.subarray(at + 16, at + 16 + incl));
        at += 16 + incl;
      }
      expect(frames.length).toBe(2);
      expect(frames[0]!.subarray(12, 18).toString("hex")).toBe("8100b0640800");
      expect(frames[1]!.subarray(12, 22).toString("hex")).toBe("88a8612c810000c80800");
      const r = await rt.topo.exec(rt.relay, ["tcpdump", "-e", "-n", "-r", file], { timeoutMs: 30_000 });
      expect(r.exitCode).toBe(0);
      const lines = r.stdout.trim().split("\n");
      note("capture-vlan", { lines });
      expect(lines[0]).toContain("vlan 100, p 5, DEI");
      expect(lines[0]).toContain("> 239.1.1.1.5000: UDP");
      expect(lines[1]).toContain("802.1Q-QinQ");
      expect(lines[1]).toMatch(/vlan 300, p 3,.*vlan 200, p 0,/);
      expect(lines[1]).toContain("> 239.1.1.1.5000: UDP");
    },
    T,
  );
});
