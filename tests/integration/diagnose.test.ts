// `mcrelay diagnose`: one test per check. Each creates the fault in the test's own namespaces
// (a missing or down interface, a wrong port, a wrong source, a joins limit of 0, a next hop
// nobody answers for, a route through a router with TTL 1, a storm cap, a killed worker, a
// client without the socket's group) and expects that finding; a healthy relay gets none and
// exit 0.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, mcrelayCommand, type RelayTopology } from "../support/relay-harness.ts";
import { TempDir, TestDaemon, killBackground, startStream, stopStream, waitFor, type StatsResult } from "../support/daemon-harness.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 180_000;
const IP = "ip";

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir | undefined;
let daemon: TestDaemon | undefined;
const cleanup: string[][] = [];

interface Finding {
  check: string;
  severity: string;
  rule: string | null;
  what: string;
  fix: string;
}

async function ipr(...args: string[]): Promise<void> {
  await rt.topo.exec(rt.relay, [IP, ...args], { check: true });
}

async function start(rules: object[]): Promise<TestDaemon> {
  dir = new TempDir();
  daemon = await TestDaemon.start(rt, dir, { configPath: dir.file("mcrelay.json5", JSON.stringify({ rules })) });
  return daemon;
}

async function diagnose(d: TestDaemon, extra: string[] = []): Promise<{ code: number; findings: Finding[]; text: string }> {
  const r = await d.cli(["diagnose", "--json", "--window", "2", ...extra]);
  if (r.exitCode !== 0 && r.exitCode !== 10) throw new Error(`diagnose: exit ${r.exitCode}\n${r.stdout}\n${r.stderr}`);
  return { code: r.exitCode, findings: (JSON.parse(r.stdout) as { findings: Finding[] }).findings, text: r.stdout };
}

function finding(fs: Finding[], check: string, rule: string | null = null): Finding {
  const f = fs.find((x) => x.check === check && (rule === null || x.rule === rule));
  if (!f) throw new Error(`no ${check} finding${rule ? ` for ${rule}` : ""} in ${JSON.stringify(fs, null, 1)}`);
  return f;
}

/** A veth pair inside the relay namespace: `a` faces nothing (its peer `b` is up). */
async function veth(a: string, b: string, o: { addr?: string; up?: boolean; mtu?: number } = {}): Promise<void> {
  await ipr("link", "add", a, "type", "veth", "peer", "name", b);
  cleanup.push(["link", "del", a]);
  if (o.mtu) await ipr("link", "set", a, "mtu", String(o.mtu));
  if (o.addr) await ipr("addr", "add", o.addr, "dev", a);
  await ipr("link", "set", b, "up");
  if (o.up ?? true) await ipr("link", "set", a, "up");
}

describe_netns("diagnose (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("diag");
    rt = await buildRelayTopology(topo, { label: "diag", sinks: 1 });
  }, T);

  afterEach(async () => {
    await killBackground();
    if (daemon?.running) await daemon.stop();
    daemon = undefined;
    dir?.remove();
    dir = undefined;
    for (const c of cleanup.splice(0).reverse()) await rt.topo.exec(rt.relay, [IP, ...c]);
  }, T);

  afterAll(async () => {
    await topo?.destroy();
  }, T);

  test("a healthy relay with its stream flowing: no finding, exit 0", async () => {
    const d = await start([{ name: "ok", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"] }]);
    const s = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 500 });
    await waitFor("packets", async () => (await d.json<StatsResult>(["stats"])).rules[0]!.packets > 100 || undefined);
    const r = await diagnose(d);
    await stopStream(s);
    expect(r.findings.filter((f) => f.severity !== "info")).toEqual([]);
    expect(r.code).toBe(0);
  }, T);

  test("interface-missing: the rule's input interface does not exist", async () => {
    const d = await start([{ name: "gone", from: "239.1.1.1:5000@nosuch0", to: ["239.2.2.1:6001@r1"] }]);
    const r = await diagnose(d);
    expect(r.code).toBe(10);
    expect(finding(r.findings, "interface-missing", "gone").what).toBe("input interface nosuch0 does not exist");
  }, T);

  test("interface-down: an output interface is down", async () => {
    await veth("dn0", "dn1", { addr: "10.98.1.1/24" });
    const d = await start([{ name: "down", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@dn0"] }]);
    await ipr("link", "set", "dn0", "down");
    await waitFor("output pending", async () => (await d.json<{ rules: { outputs: { state: string }[] }[] }>(["list"])).rules[0]!.outputs[0]!.state === "pending" || undefined);
    const r = await diagnose(d);
    expect(finding(r.findings, "interface-down", "down").what).toBe("output interface dn0 is down");
  }, T);

  test("interface-no-address: an output interface without an IPv4 address", async () => {
    await veth("na0", "na1");
    const d = await start([{ name: "noaddr", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@na0"] }]);
    const r = await diagnose(d);
    expect(finding(r.findings, "interface-no-address", "noaddr").what).toContain("na0 has no IPv4 address");
  }, T);

  test("an IPv6 output on an interface with only a link-local address (no IPv4) is no interface-no-address", async () => {
    await veth("v6o0", "v6o1");
    await waitFor("a link-local address on v6o0", async () => /fe80::/.test((await rt.topo.exec(rt.relay, [IP, "-6", "addr", "show", "dev", "v6o0"])).stdout) || undefined);
    const d = await start([{ name: "six", from: "239.1.1.1:5000@r0", to: ["[ff0e::1]:5000@v6o0", "239.2.2.1:6001@v6o0"] }]);
    const r = await diagnose(d);
    const f = r.findings.filter((x) => x.check === "interface-no-address");
    expect(f.map((x) => x.what)).toEqual(["output interface v6o0 has no IPv4 address, so nothing can be sent from it to an IPv4 destination"]);
  }, T);

  test("mtu-too-small: datagrams larger than the output interface's MTU", async () => {
    await veth("mt0", "mt1", { addr: "10.98.2.1/24", mtu: 600 });
    const d = await start([{ name: "big", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@mt0"] }]);
    const s = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 200, size: 1000 });
    await waitFor("packets", async () => (await d.json<StatsResult>(["stats"])).rules[0]!.packets > 20 || undefined);
    const r = await diagnose(d);
    await stopStream(s);
    expect(finding(r.findings, "mtu-too-small", "big").what).toMatch(/average 10\d\d bytes but mt0's MTU is 600/);
  }, T);

  test("no-frames: an active rule whose input saw no frame during the window", async () => {
    const d = await start([{ name: "quiet", from: "239.1.1.9:5000@r0", to: ["239.2.2.9:6009@r1"] }]);
    const r = await diagnose(d);
    expect(r.code).toBe(10);
    expect(finding(r.findings, "no-frames", "quiet").what).toBe("no UDP frame at all arrived on r0 in 2 s");
  }, T);

  test("frames-not-matching: the stream arrives on another port; diagnose names what arrives", async () => {
    const d = await start([{ name: "port", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"] }]);
    const s = startStream(rt, { to: "239.1.1.1:5001@g0", ratePps: 300 });
    await Bun.sleep(500);
    const r = await diagnose(d);
    await stopStream(s);
    const f = finding(r.findings, "frames-not-matching", "port");
    expect(f.what).toContain("Frames for 239.1.1.1 arrive on port 5001, not 5000");
    expect(f.what).toContain(`239.1.1.1:5001 from ${rt.genAddr}`);
  }, T);

  test("source-mismatch: the stream comes from another source than the rule's", async () => {
    const d = await start([{ name: "src", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"], source: "10.1.2.3" }]);
    const s = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 300 });
    await Bun.sleep(500);
    const r = await diagnose(d);
    await stopStream(s);
    expect(finding(r.findings, "source-mismatch", "src").what).toContain(`came from ${rt.genAddr}, but the rule accepts only 10.1.2.3`);
  }, T);

  test("join-failed: igmp_max_memberships 0 makes the join fail, and the sysctl is named", async () => {
    const was = (await rt.topo.exec(rt.relay, ["sysctl", "-n", "net.ipv4.igmp_max_memberships"], { check: true })).stdout.trim();
    await rt.topo.exec(rt.relay, ["sysctl", "-w", "net.ipv4.igmp_max_memberships=0"], { check: true });
    try {
      const d = await start([{ name: "join", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"] }]);
      const r = await diagnose(d);
      const f = finding(r.findings, "join-failed", "join");
      expect(f.what).toContain("IPv4 (IGMP) join of 239.1.1.1 on r0 fails");
      expect(f.fix).toContain("net.ipv4.igmp_max_memberships is 0");
    } finally {
      await rt.topo.exec(rt.relay, ["sysctl", "-w", `net.ipv4.igmp_max_memberships=${was}`], { check: true });
    }
  }, T);

  test("neighbour-unresolved: a unicast output's next hop never answers ARP", async () => {
    const d = await start([{ name: "arp", from: "239.1.1.1:5000@r0", to: ["10.99.2.77:7000"] }]);
    const s = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 200 });
    await waitFor("an unresolved neighbour", async () => {
      const r = await rt.topo.exec(rt.relay, [IP, "neigh", "show", "to", "10.99.2.77"]);
      return /INCOMPLETE|FAILED/.test(r.stdout) || undefined;
    });
    const r = await diagnose(d);
    await stopStream(s);
    expect(finding(r.findings, "neighbour-unresolved", "arp").what).toMatch(/next hop 10\.99\.2\.77 on r1 .* \(neighbour (INCOMPLETE|FAILED)\)/);
  }, T);

  test("send-errors: a unicast output without a route fails with ENETUNREACH, and the meaning is given", async () => {
    const d = await start([{ name: "noroute", from: "239.1.1.1:5000@r0", to: ["10.200.0.1:7000"] }]);
    const s = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 300 });
    await Bun.sleep(500);
    const r = await diagnose(d);
    await stopStream(s);
    const f = finding(r.findings, "send-errors", "noroute");
    expect(f.what).toMatch(/output 10\.200\.0\.1:7000: \d+ datagrams failed with ENETUNREACH/);
    expect(f.fix).toContain("no route");
    finding(r.findings, "no-route", "noroute");
  }, T);

  test("send-errors: an output without an interface to a subnet's broadcast address fails (EACCES, counted as EPERM), and the fix names the broadcast", async () => {
    // r1 is 10.99.2.1/24. With @r1 the output would be refused; without it the kernel routes it.
    const d = await start([{ name: "bcast", from: "239.1.1.1:5000@r0", to: ["10.99.2.255:7000"] }]);
    const s = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 300 });
    await Bun.sleep(500);
    const r = await diagnose(d);
    await stopStream(s);
    const f = finding(r.findings, "send-errors", "bcast");
    expect(f.what).toMatch(/output 10\.99\.2\.255:7000: \d+ datagrams failed with EPERM/);
    expect(f.fix).toContain("broadcast address");
    expect(f.fix).toContain("SO_BROADCAST");
  }, T);

  test("ttl-too-low: a unicast output behind a router with TTL 1", async () => {
    await ipr("route", "add", "10.201.0.0/24", "via", rt.sinks[0]!.addr);
    cleanup.push(["route", "del", "10.201.0.0/24"]);
    const d = await start([{ name: "ttl", from: "239.1.1.1:5000@r0", to: ["10.201.0.5:7000"], ttl: 1 }]);
    const r = await diagnose(d);
    expect(finding(r.findings, "ttl-too-low", "ttl").what).toBe(`output 10.201.0.5:7000 goes through the router ${rt.sinks[0]!.addr} with TTL 1: the router drops every datagram (TTL exceeded)`);
  }, T);

  test("cap: the rule's storm cap drops datagrams", async () => {
    const d = await start([{ name: "capped", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"], max_pps: 20 }]);
    const s = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 500 });
    await Bun.sleep(500);
    const r = await diagnose(d);
    await stopStream(s);
    expect(finding(r.findings, "cap", "capped")).toMatchObject({ severity: "error", what: expect.stringMatching(/^\d+ datagrams dropped by the rule's storm cap \(max_pps\) in the last 2 s \(\d+ in total\)$/) });
  }, T);

  test("without an `ip` that answers in JSON (a failing one, or none on PATH) addresses still come from the kernel and routes are unknown, not missing", async () => {
    const d = await start([{ name: "noip", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1", `${rt.sinks[0]!.addr}:7000`] }]);
    const s = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 300 });
    const fake = mkdtempSync(join(tmpdir(), "mcr-diag-ip-"));
    try {
      await waitFor("packets", async () => (await d.json<StatsResult>(["stats"])).rules[0]!.packets > 50 || undefined);
      // Busybox `ip` has no -j: it prints its usage and exits 1.
      writeFileSync(join(fake, "ip"), "#!/bin/sh\necho 'BusyBox: ip: invalid option -- j' >&2\nexit 1\n");
      chmodSync(join(fake, "ip"), 0o755);
      for (const path of [fake, join(fake, "empty")]) {
        const r = await rt.topo.exec(rt.relay, [...mcrelayCommand("bun"), "diagnose", "--json", "--window", "1", "--socket", d.socket], { timeoutMs: 30_000, env: { NO_COLOR: "1", PATH: path } });
        expect({ path, code: r.exitCode, stderr: r.stderr }).toEqual({ path, code: 0, stderr: "" });
        const fs = (JSON.parse(r.stdout) as { findings: Finding[] }).findings;
        expect(fs.filter((f) => f.severity !== "info")).toEqual([]);
        expect(finding(fs, "route-unknown", "noip").what).toContain(`output ${rt.sinks[0]!.addr}:7000 are unknown`);
      }
    } finally {
      await stopStream(s);
      rmSync(fake, { recursive: true, force: true });
    }
  }, T);

  test("worker-restarts: a worker restarted before the window is a note with the total; diagnose exits 0", async () => {
    const d = await start([{ name: "w", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"] }]);
    const s = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 300 });
    const pid = (await d.json<{ workers: { pid: number }[] }>(["workers"])).workers[0]!.pid;
    process.kill(pid, "SIGKILL");
    await waitFor("the worker back", async () => {
      const w = (await d.json<{ workers: { pid: number; state: string; restarts: number }[] }>(["workers"])).workers[0]!;
      return (w.restarts > 0 && w.state === "running" && w.pid !== pid) || undefined;
    });
    const was = (await d.json<StatsResult>(["stats"])).rules[0]!.packets;
    await waitFor("packets again", async () => (await d.json<StatsResult>(["stats"])).rules[0]!.packets > was + 50 || undefined);
    const r = await diagnose(d);
    await stopStream(s);
    const f = finding(r.findings, "worker-restarts");
    expect(f.severity).toBe("info");
    expect(f.what).toMatch(/^worker r0\/0 was restarted 1 times since the daemon started at \S+ \(last: .*\), none in the last 2 s/);
    expect(r.findings.filter((x) => x.severity !== "info")).toEqual([]);
    expect(r.code).toBe(0);
  }, T);

  test("socket-permission: a user outside the socket's group is told so, exit 10", async () => {
    const d = await start([{ name: "p", from: "239.1.1.1:5000@r0", to: ["239.2.2.1:6001@r1"] }]);
    const r = await rt.topo.exec(rt.relay, ["setpriv", "--reuid=2", "--regid=2", "--clear-groups", ...mcrelayCommand("bun"), "diagnose", "--json", "--socket", d.socket], { timeoutMs: 30_000, env: { NO_COLOR: "1" } });
    expect(r.exitCode).toBe(10);
    const f = finding((JSON.parse(r.stdout) as { findings: Finding[] }).findings, "socket-permission");
    expect(f.what).toContain("permission denied");
  }, T);
});
