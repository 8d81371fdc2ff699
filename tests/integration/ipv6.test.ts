// IPv6 input (issue 16), kernel tests under bun: IPv6 groups relayed from unroutable sources
// with hop limit 1, MLDv2 joins seen on the input link, translation IPv6 <-> IPv4, extension
// header chains walked, and fragments, malformed chains and martian sources dropped and counted.
// Receivers are independent Python sockets and captures (tests/support/udp6-tools.ts).
import { afterEach, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { mcrelayCommand, note, REPO_ROOT, startForward, startLogged, workerSum, type ForwardReport, type RelayTopology } from "../support/relay-harness.ts";
import { TempDir, TestDaemon, ruleNamed, waitFor, type ListedRule, type StatsResult } from "../support/daemon-harness.ts";
import { sendRawFrames6, startMldCapture, startUdpReceiver6, udpSend6, type RawFrame6 } from "../support/udp6-tools.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const mode = "bun" as const;
const TEST_TIMEOUT_MS = 240_000;

let topo: Topology | undefined;

let dir: TempDir | undefined;

afterEach(async () => {
  await topo?.destroy();
  topo = undefined;
  dir?.remove();
  dir = undefined;
});

/** The generator's IPv6 address: the relay namespace has no route to fd77::/64. */
const GEN6 = "fd77::1";
const RELAY_IN6 = "fd99:1::2";
const GEN4 = "10.99.1.1";

interface Topo6 {
  t: Topology;
  gen: string;
  relay: string;
  sink: string;
}

/**
 * gen(g0) --- (r0)relay(r1) --- (s0)sink, IPv6 on every link with duplicate address detection
 * off (addresses usable at once, link-local ones included), plus IPv4 for the translation tests.
 * g0 is fd77::1/64 and r0 fd99:1::2/64 on the same link: the relay cannot route back to the
 * generator, which kernel multicast routing (RPF) would require.
 */
async function topology6(label: string): Promise<Topo6> {
  topo = await Topology.create(label);
  const t = topo;
  const gen = await t.ns("gen");
  const relay = await t.ns("relay");
  const sink = await t.ns("sink");
  for (const ns of [gen, relay, sink]) {
    await t.sysctl(ns, "net/ipv6/conf/all/disable_ipv6", 0);
    await t.sysctl(ns, "net/ipv6/conf/default/disable_ipv6", 0);
    await t.sysctl(ns, "net/ipv6/conf/all/accept_dad", 0);
    await t.sysctl(ns, "net/ipv6/conf/default/accept_dad", 0);
  }
  await t.link({ ns: gen, ifname: "g0", addr: `${GEN6}/64` }, { ns: relay, ifname: "r0", addr: `${RELAY_IN6}/64` });
  await t.link({ ns: relay, ifname: "r1", addr: "fd99:2::1/64" }, { ns: sink, ifname: "s0", addr: "fd99:2::2/64" });
  for (const [ns, dev, addr] of [
    [gen, "g0", `${GEN4}/24`],
    [relay, "r0", "10.99.1.2/24"],
    [relay, "r1", "10.99.2.1/24"],
    [sink, "s0", "10.99.2.2/24"],
  ] as const) {
    await t.exec(ns, ["ip", "addr", "add", addr, "dev", dev], { check: true });
  }
  await t.addMulticastRoute(gen, "g0");
  return { t, gen, relay, sink };
}

/** The topology as the daemon harness wants it (the daemon runs in the relay namespace). */
function asRelayTopology(x: Topo6): RelayTopology {
  return {
    topo: x.t,
    gen: x.gen,
    genIf: "g0",
    genAddr: GEN6,
    relay: x.relay,
    relayIn: "r0",
    relayInAddr: RELAY_IN6,
    sinks: [{ ns: x.sink, ifname: "s0", addr: "fd99:2::2", relayIf: "r1", relayAddr: "fd99:2::1" }],
  };
}

function rule0(r: ForwardReport) {
  expect(r.rules.length).toBe(1);
  return r.rules[0]!;
}

describe_netns("IPv6 input", () => {
  test(
    "10,000 datagrams from an unroutable IPv6 source with hop limit 1 are relayed to another group and port, byte-exact and once",
    async () => {
      const { t, gen, relay, sink } = await topology6("v6relay");
      // The relay has no route to the source: RPF would drop this stream.
      const route = await t.exec(relay, ["ip", "-6", "route", "get", GEN6]);
      expect(route.exitCode).not.toBe(0);

      const fwd = await startForward(t, relay, mode, ["--from", "[ff3e::1]:5000@r0", "--to", "[ff3e::2]:6000@r1"], "fwd6");
      const rx = await startUdpReceiver6(t, sink, { group: "ff3e::2", port: 6000, ifname: "s0", idle_s: 3 });
      const count = 10_000;
      const sent = await udpSend6(t, gen, { ifname: "g0", group: "ff3e::1", port: 5000, count, size: 200, hops: 1, bind: GEN6, rate_pps: 10_000 });
      expect(sent).toEqual({ sent: count, source: GEN6, refused: 0 });
      const got = await rx.report();
      const report = await fwd.stopJson<ForwardReport>();
      note("v6 relay", { got, rule: rule0(report), parse_drops: report.workers[0]?.parse_drops });
      expect(got.datagrams).toBe(count);
      expect(got.numbered).toBe(count);
      expect(got.duplicates).toBe(0);
      expect(got.pattern_errors).toBe(0);
      // Sent from the relay's address on r1 with the output's hop limit (default 8).
      expect(got.hops).toEqual({ "8": count });
      expect(Object.keys(got.sources)).toHaveLength(1);
      expect(Object.keys(got.sources)[0]).toMatch(/^(fd99:2::1|fe80:)/);
      const rule = rule0(report);
      expect(rule.packets).toBe(count);
      expect(rule.bytes).toBe(count * 200);
      expect(rule.outputs[0]!.packets).toBe(count);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "an IPv6 sender using UDP_SEGMENT (10 x 1,000 B per sendmsg): every datagram is relayed as itself",
    async () => {
      const { t, gen, relay, sink } = await topology6("v6gso");
      const fwd = await startForward(t, relay, mode, ["--from", "[ff3e::1]:5000@r0", "--to", "[ff3e::2]:6000@r1,gso=off"], "gso6");
      const rx = await startUdpReceiver6(t, sink, { group: "ff3e::2", port: 6000, ifname: "s0", idle_s: 3 });
      const sent = await udpSend6(t, gen, { ifname: "g0", group: "ff3e::1", port: 5000, count: 500, size: 1000, hops: 1, bind: GEN6, gso_batch: 10 });
      const got = await rx.report();
      const report = await fwd.stopJson<ForwardReport>();
      note("v6 gso", { sent, got, counters: report.workers[0]?.counters });
      expect(sent.sent).toBe(500);
      expect([got.datagrams, got.numbered, got.duplicates, got.pattern_errors]).toEqual([500, 500, 0, 0]);
      expect(rule0(report).bytes).toBe(500 * 1000);
      expect(workerSum(report, "rx_gso_frames")).toBeGreaterThan(0);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "MLDv2 reports on the input link: any-source (EXCLUDE {}) for a rule without source, INCLUDE {source} for a rule with one",
    async () => {
      const { t, gen, relay } = await topology6("mld");
      // Any-source: the worker joins ff3e::1 on r0.
      let capture = await startMldCapture(t, gen, "g0", 4);
      const asm = await startForward(t, relay, mode, ["--from", "[ff3e::1]:5000@r0", "--to", "[ff3e::2]:6000@r1"], "asm");
      const asmReports = await capture.reports();
      await asm.stopJson<ForwardReport>();
      // Source-specific: a rule with --source joins (ff3e::5, fd77::1) only.
      capture = await startMldCapture(t, gen, "g0", 4);
      const ssm = await startForward(t, relay, mode, ["--from", "[ff3e::5]:5000@r0", "--source", GEN6, "--to", "[ff3e::2]:6000@r1"], "ssm");
      const ssmReports = await capture.reports();
      await ssm.stopJson<ForwardReport>();
      note("mld", { asmReports, ssmReports });

      const asmRecords = asmReports.flatMap((r) => r.records).filter((r) => r.group === "ff3e::1");
      expect(asmRecords.length).toBeGreaterThan(0);
      // CHANGE_TO_EXCLUDE (4) or MODE_IS_EXCLUDE (2) with no source: "any source".
      for (const r of asmRecords) {
        expect([2, 4]).toContain(r.type);
        expect(r.sources).toEqual([]);
      }
      const ssmRecords = ssmReports.flatMap((r) => r.records).filter((r) => r.group === "ff3e::5");
      expect(ssmRecords.length).toBeGreaterThan(0);
      // ALLOW_NEW_SOURCES (5), CHANGE_TO_INCLUDE (3) or MODE_IS_INCLUDE (1) naming the source.
      for (const r of ssmRecords) {
        expect([1, 3, 5]).toContain(r.type);
        expect(r.sources).toEqual([GEN6]);
      }
      // No any-source join for the SSM rule's group.
      expect(ssmReports.flatMap((r) => r.records).some((r) => r.group === "ff3e::5" && r.sources.length === 0)).toBe(false);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a unicast stream to the input interface's own IPv6 address is relayed and no ICMPv6 port unreachable reaches the sender; an address of another interface is refused with the reason",
    async () => {
      const { t, gen, relay, sink } = await topology6("v6uni");
      await t.exec(gen, ["ip", "-6", "route", "add", "fd99:1::/64", "dev", "g0"], { check: true });
      // Routable both ways here, so an ICMPv6 error could reach the sender.
      await t.exec(relay, ["ip", "-6", "route", "add", "fd77::/64", "dev", "r0"], { check: true });
      const unowned = await udpSend6(t, gen, { ifname: "g0", group: RELAY_IN6, port: 5000, count: 5, hops: 1, bind: GEN6, connect: true, rate_pps: 5 });
      expect(unowned.refused).toBeGreaterThan(0);
      const fwd = await startForward(t, relay, mode, ["--from", `[${RELAY_IN6}]:5000@r0`, "--to", "[ff3e::2]:6000@r1"], "uni6");
      const rx = await startUdpReceiver6(t, sink, { group: "ff3e::2", port: 6000, ifname: "s0", idle_s: 3 });
      const owned = await udpSend6(t, gen, { ifname: "g0", group: RELAY_IN6, port: 5000, count: 1000, hops: 1, bind: GEN6, connect: true, rate_pps: 2000 });
      const got = await rx.report();
      const report = await fwd.stopJson<ForwardReport>();
      note("v6 unicast", { unowned, owned, got, rule: rule0(report) });
      expect(owned).toMatchObject({ sent: 1000, refused: 0 });
      expect([got.datagrams, got.numbered, got.duplicates, got.pattern_errors]).toEqual([1000, 1000, 0, 0]);
      expect(rule0(report).packets).toBe(1000);

      // fd99:2::1 belongs to r1, not r0: forward refuses to start a rule that cannot forward.
      const wrong = await t.exec(relay, [process.execPath, "src/main.ts", "forward", "--from", "[fd99:2::1]:5000@r0", "--to", "[ff3e::2]:6000@r1", "--duration", "1"], { cwd: REPO_ROOT });
      expect(wrong.exitCode).not.toBe(0);
      expect(wrong.stderr).toContain("is not a multicast group and not an address of r0");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "link scope: mDNS ([ff02::fb]:5353) relayed from one link to the next, and a unicast stream to the input's link-local address relayed without ICMPv6 errors",
    async () => {
      const { t, gen, relay, sink } = await topology6("v6link");
      const ll = await t.exec(relay, ["ip", "-6", "-o", "addr", "show", "dev", "r0", "scope", "link"], { check: true });
      const relayLinkLocal = /inet6 (fe80::[0-9a-f:]+)\//.exec(ll.stdout)![1]!;
      const mdns = await startForward(t, relay, mode, ["--from", "[ff02::fb]:5353@r0", "--to", "[ff02::fb]:5353@r1"], "mdns");
      const rx = await startUdpReceiver6(t, sink, { group: "ff02::fb", port: 5353, ifname: "s0", idle_s: 3 });
      await udpSend6(t, gen, { ifname: "g0", group: "ff02::fb", port: 5353, count: 300, hops: 255, stream: 5 });
      const got = await rx.report();
      const mdnsReport = await mdns.stopJson<ForwardReport>();
      expect([got.datagrams, got.numbered, got.duplicates, got.pattern_errors]).toEqual([300, 300, 0, 0]);
      expect(rule0(mdnsReport).packets).toBe(300);

      const uni = await startForward(t, relay, mode, ["--from", `[${relayLinkLocal}]:5000@r0`, "--to", "[ff3e::2]:6000@r1"], "ll unicast");
      const rx2 = await startUdpReceiver6(t, sink, { group: "ff3e::2", port: 6000, ifname: "s0", idle_s: 3 });
      const sent = await udpSend6(t, gen, { ifname: "g0", group: relayLinkLocal, port: 5000, count: 300, hops: 1, connect: true, rate_pps: 1000 });
      const got2 = await rx2.report();
      const uniReport = await uni.stopJson<ForwardReport>();
      note("v6 link scope", { relayLinkLocal, got, sent, got2, uni: rule0(uniReport) });
      expect(sent).toMatchObject({ sent: 300, refused: 0 });
      expect([got2.datagrams, got2.numbered, got2.duplicates]).toEqual([300, 300, 0]);
      expect(rule0(uniReport).state).toBe("active");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a failed MLD join (net.core.optmem_max 0) shows the rule as join-failed with the reason, counts join_errors, is named by diagnose; after the sysctl is raised the join is retried and reported",
    async () => {
      const x = await topology6("v6joinf");
      const { t, gen, relay, sink } = x;
      dir = new TempDir();
      // The packet socket and its filter need option memory: take it away only once they exist.
      const d = await TestDaemon.start(asRelayTopology(x), dir);
      await d.json(["add", "--name", "v4", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.1:6001@r1"]);
      const optmem = await t.sysctlGet(relay, "net/core/optmem_max");
      await t.sysctl(relay, "net/core/optmem_max", 0);
      let capture = await startMldCapture(t, gen, "g0", 4);
      await d.json(["add", "--name", "v6", "--from", "[ff3e::1]:5000@r0", "--to", "239.2.2.2:6000@r1"]);
      const failed = await waitFor("v6 join-failed", async () => {
        const r = ruleNamed((await d.json<{ rules: ListedRule[] }>(["list"])).rules, "v6");
        return r.state === "join-failed" ? r : undefined;
      });
      const reports = await capture.reports();
      const stats = await d.json<StatsResult>(["stats"]);
      const joinErrors = stats.interfaces.find((i) => i.interface === "r0")?.counters.join_errors ?? 0;
      const diag = await d.cli(["diagnose", "v6", "--json"]);
      note("v6 join failure", { failed, reports, joinErrors, diagnose: diag.stdout });
      expect(failed.reasons.join("; ")).toContain("join failed: ENOMEM (net.core.optmem_max=0)");
      expect(joinErrors).toBeGreaterThanOrEqual(1);
      expect(reports.flatMap((r) => r.records).some((r) => r.group === "ff3e::1")).toBe(false);
      const findings = JSON.parse(diag.stdout).findings as { check: string; rule: string; fix: string }[];
      expect(findings.find((f) => f.check === "join-failed" && f.rule === "v6")?.fix).toContain("ip -6 maddr show dev r0");

      // Raised again: the worker retries within about a second, the report goes out, the rule is active.
      capture = await startMldCapture(t, gen, "g0", 4);
      await t.sysctl(relay, "net/core/optmem_max", optmem);
      await waitFor("v6 active", async () => ruleNamed((await d.json<{ rules: ListedRule[] }>(["list"])).rules, "v6").state === "active" || undefined);
      const after = await capture.reports();
      note("v6 join retried", { after });
      expect(after.flatMap((r) => r.records).some((r) => r.group === "ff3e::1" && [2, 4].includes(r.type))).toBe(true);
      const rx = await startUdpReceiver6(t, sink, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3 });
      await udpSend6(t, gen, { ifname: "g0", group: "ff3e::1", port: 5000, count: 200, hops: 1, bind: GEN6 });
      expect((await rx.report()).numbered).toBe(200);
      expect(await d.stop()).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a rule with an IPv6 source relays that source only; others count as source_mismatch",
    async () => {
      const { t, gen, relay, sink } = await topology6("v6ssm");
      await t.exec(gen, ["ip", "addr", "add", "fd77::9/64", "dev", "g0", "nodad"], { check: true });
      const fwd = await startForward(t, relay, mode, ["--from", "[ff3e::5]:5000@r0", "--source", GEN6, "--to", "[ff3e::2]:6000@r1"], "ssm");
      const rx = await startUdpReceiver6(t, sink, { group: "ff3e::2", port: 6000, ifname: "s0", idle_s: 3 });
      await udpSend6(t, gen, { ifname: "g0", group: "ff3e::5", port: 5000, count: 300, hops: 1, bind: GEN6, stream: 1 });
      await udpSend6(t, gen, { ifname: "g0", group: "ff3e::5", port: 5000, count: 200, hops: 1, bind: "fd77::9", stream: 2 });
      const got = await rx.report();
      const report = await fwd.stopJson<ForwardReport>();
      note("v6 ssm", { got, rule: rule0(report) });
      expect(got.datagrams).toBe(300);
      expect(got.numbered).toBe(300);
      expect(rule0(report).packets).toBe(300);
      expect(rule0(report).drops.source_mismatch).toBe(200);
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("IPv6 rules in the daemon", () => {
  test(
    "IPv6 rules from the config file and from add (source, vlan, output options) are listed, forward, show in stats, and come back from the state file after a restart",
    async () => {
      const x = await topology6("v6daemon");
      const rt = asRelayTopology(x);
      dir = new TempDir();
      const config = dir.file(
        "mcrelay.json5",
        `{ rules: [ { name: "cfg6", from: "[ff3e::1]:5000@r0", to: ["[ff3e::2]:6000@r1,ttl=3", "239.2.2.2:6001@r1"] } ] }`,
      );
      let d = await TestDaemon.start(rt, dir, { configPath: config });
      await d.json(["add", "--name", "rt6", "--from", "[ff3e::7]:5000@r0", "--source", GEN6, "--to", "[ff3e::8]:6002@r1,dscp=46"]);
      await d.json(["add", "--name", "vlan6", "--from", "[ff3e::9]:5000@r0,vlan=100", "--to", "[ff3e::a]:6003@r1"]);
      // A source of the other family can never match: refused with the reason.
      const refused = await d.cli(["add", "--name", "bad", "--from", "[ff3e::b]:5000@r0", "--source", "10.1.1.1", "--to", "[ff3e::c]:6004@r1"]);
      expect(refused.exitCode).not.toBe(0);
      expect(refused.stderr).toContain("is an IPv4 address but the input");

      const listed = (await d.json<{ rules: ListedRule[] }>(["list"])).rules;
      note("v6 list", listed);
      expect(ruleNamed(listed, "cfg6")).toMatchObject({ input: "[ff3e::1]:5000@r0", source: null, state: "active" });
      expect(ruleNamed(listed, "cfg6").outputs.map((o) => [o.to, o.ttl])).toEqual([
        ["[ff3e::2]:6000@r1", 3],
        ["239.2.2.2:6001@r1", 8],
      ]);
      expect(ruleNamed(listed, "rt6")).toMatchObject({ input: "[ff3e::7]:5000@r0", source: GEN6, state: "active" });
      expect(ruleNamed(listed, "rt6").outputs[0]).toMatchObject({ to: "[ff3e::8]:6002@r1", dscp: 46 });
      expect(ruleNamed(listed, "vlan6").state).toBe("active");

      const forwards = async (label: string) => {
        const rx6 = await startUdpReceiver6(x.t, x.sink, { group: "ff3e::2", port: 6000, ifname: "s0", idle_s: 3 });
        const rx4 = await startUdpReceiver6(x.t, x.sink, { group: "239.2.2.2", port: 6001, ifname: "s0", idle_s: 3 });
        const rxs = await startUdpReceiver6(x.t, x.sink, { group: "ff3e::8", port: 6002, ifname: "s0", idle_s: 3 });
        await udpSend6(x.t, x.gen, { ifname: "g0", group: "ff3e::1", port: 5000, count: 500, hops: 1, bind: GEN6 });
        await udpSend6(x.t, x.gen, { ifname: "g0", group: "ff3e::7", port: 5000, count: 400, hops: 1, bind: GEN6, tos: 0x01 });
        const [g6, g4, gs] = [await rx6.report(), await rx4.report(), await rxs.report()];
        note(`v6 daemon ${label}`, { g6, g4, gs });
        expect([g6.numbered, g6.duplicates, g6.pattern_errors, g6.hops]).toEqual([500, 0, 0, { "3": 500 }]);
        expect([g4.numbered, g4.duplicates, g4.pattern_errors]).toEqual([500, 0, 0]);
        expect([gs.numbered, gs.duplicates, gs.pattern_errors]).toEqual([400, 0, 0]);
        // dscp=46 fixed, the input's ECN bit kept.
        expect(gs.tclass).toEqual({ [(46 << 2) | 1]: 400 });
      };
      await forwards("first run");
      const stats = await d.json<StatsResult>(["stats"]);
      expect(ruleNamed(stats.rules, "cfg6").packets).toBe(500);
      expect(ruleNamed(stats.rules, "rt6").packets).toBe(400);
      expect(ruleNamed(stats.rules, "cfg6").outputs.map((o) => o.packets)).toEqual([500, 500]);
      expect(await d.stop()).toBe(0);

      // The runtime rules are in the state file and come back whole.
      d = await TestDaemon.start(rt, dir, { configPath: config });
      const again = (await d.json<{ rules: ListedRule[] }>(["list"])).rules;
      expect(again).toEqual(listed);
      await forwards("after restart");
      expect(await d.stop()).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("IPv6 and several workers", () => {
  test(
    "2 workers on the input interface carry 8 IPv6 groups between them: every datagram once (the supervisor's split matches the kernel's fanout hash)",
    async () => {
      const x = await topology6("v6workers");
      dir = new TempDir();
      const groups = Array.from({ length: 8 }, (_, i) => `ff3e::10:${i + 1}`);
      const rules = groups.map((g, i) => `{ name: "g${i}", from: "[${g}]:5000@r0", to: ["[ff3e::2]:6000@r1"] }`).join(", ");
      const config = dir.file("mcrelay.json5", `{ workers: { r0: 2 }, rules: [ ${rules} ] }`);
      const d = await TestDaemon.start(asRelayTopology(x), dir, { configPath: config });
      const rx = await startUdpReceiver6(x.t, x.sink, { group: "ff3e::2", port: 6000, ifname: "s0", idle_s: 3 });
      for (const [i, g] of groups.entries()) {
        await udpSend6(x.t, x.gen, { ifname: "g0", group: g, port: 5000, count: 100, hops: 1, bind: GEN6, stream: i + 1 });
      }
      const got = await rx.report();
      const stats = await d.json<StatsResult>(["stats"]);
      const workers = stats.workers.filter((w) => w.interface === "r0");
      note("v6 workers", { got, rules: stats.rules.map((r) => [r.name, r.packets]), workers: workers.map((w) => [w.pid, w.rules]) });
      expect(workers.length).toBe(2);
      // The 8 groups landed on both workers (else this proves nothing about the split).
      expect(workers.every((w) => w.rules > 0)).toBe(true);
      expect([got.datagrams, got.numbered, got.duplicates, got.pattern_errors]).toEqual([800, 800, 0, 0]);
      for (const r of stats.rules) expect(r.packets).toBe(100);
      const counters = stats.interfaces.find((i) => i.interface === "r0")!.counters;
      expect(counters.no_match).toBe(0);
      expect(await d.stop()).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("IPv6 and VLANs", () => {
  test(
    "IPv6 frames tagged VID 100 go to the vlan=100 rule only, untagged ones to the untagged rule only",
    async () => {
      const x = await topology6("v6vlan");
      dir = new TempDir();
      const config = dir.file(
        "mcrelay.json5",
        `{ rules: [ { name: "tagged", from: "[ff3e::1]:5000@r0,vlan=100", to: ["[ff3e::2]:6000@r1"] }, { name: "untagged", from: "[ff3e::1]:5000@r0", to: ["[ff3e::3]:6001@r1"] } ] }`,
      );
      const d = await TestDaemon.start(asRelayTopology(x), dir, { configPath: config });
      const rxTagged = await startUdpReceiver6(x.t, x.sink, { group: "ff3e::2", port: 6000, ifname: "s0", idle_s: 3 });
      const rxUntagged = await startUdpReceiver6(x.t, x.sink, { group: "ff3e::3", port: 6001, ifname: "s0", idle_s: 3 });
      const frames: RawFrame6[] = [];
      for (let i = 0; i < 20; i++) frames.push({ src: GEN6, dst: "ff3e::1", dport: 5000, seq: i, stream: 1, vlan: 100 });
      for (let i = 0; i < 10; i++) frames.push({ src: GEN6, dst: "ff3e::1", dport: 5000, seq: i, stream: 2 });
      for (let i = 0; i < 5; i++) frames.push({ src: GEN6, dst: "ff3e::1", dport: 5000, seq: i, stream: 3, vlan: 200 });
      await sendRawFrames6(x.t, x.gen, "g0", frames);
      const [tagged, untagged] = [await rxTagged.report(), await rxUntagged.report()];
      const stats = await d.json<StatsResult>(["stats"]);
      note("v6 vlan", { tagged, untagged, counters: stats.interfaces[0]?.counters });
      expect([tagged.numbered, tagged.duplicates, tagged.pattern_errors]).toEqual([20, 0, 0]);
      expect([untagged.numbered, untagged.duplicates, untagged.pattern_errors]).toEqual([10, 0, 0]);
      expect(ruleNamed(stats.rules, "tagged").packets).toBe(20);
      expect(ruleNamed(stats.rules, "untagged").packets).toBe(10);
      expect(stats.interfaces.find((i) => i.interface === "r0")?.counters.vlan_mismatch).toBe(5);
      expect(await d.stop()).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("IPv6 rules traced", () => {
  test(
    "trace of an IPv6 rule shows matched datagrams with their output, and fragments for its group as parse drops",
    async () => {
      const { t, gen, relay } = await topology6("v6trace");
      dir = new TempDir();
      const socket = dir.join("fwd.sock");
      const fwd = await startForward(t, relay, mode, ["--from", "[ff3e::1]:5000@r0", "--to", "[ff3e::2]:6000@r1", "--socket", socket], "trace6");
      const tracing = startLogged(t, relay, [...mcrelayCommand(mode), "trace", "1", "--json", "--count", "15", "--socket", socket], "trace");
      await tracing.waitForStderr(/tracing rule/, 30_000);
      const frames: RawFrame6[] = [];
      for (let i = 0; i < 10; i++) frames.push({ src: "fe80::77", dst: "ff3e::1", dport: 5000, seq: i, size: 50, chain: [{ kind: "hop" }] });
      for (let i = 0; i < 5; i++) frames.push({ src: "fe80::77", dst: "ff3e::1", dport: 5000, seq: 10 + i, chain: [{ kind: "fragment" }] });
      await sendRawFrames6(t, gen, "g0", frames);
      expect(await tracing.wait(30_000)).toBe(0);
      fwd.proc.kill("SIGINT");
      await fwd.wait(20_000);
      const recs = tracing.stdout.trim().split("\n").map((l) => JSON.parse(l));
      note("v6 trace", { records: recs.length, first: recs[0], last: recs[recs.length - 1] });
      expect(recs.length).toBe(15);
      const matched = recs.filter((r) => r.verdict === "matched");
      expect(matched.length).toBe(10);
      for (const r of matched) {
        expect(r).toMatchObject({ src: "fe80::77", dst: "ff3e::1", dst_port: 5000, length: 50, ttl: 1, outputs: [{ to: "[ff3e::2]:6000@r1", result: "sent" }] });
      }
      const drops = recs.filter((r) => r.verdict === "parse_drop");
      expect(drops.length).toBe(5);
      for (const r of drops) expect(r).toMatchObject({ dst: "ff3e::1", reason: "ipv6_fragment" });
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("IPv6 loops", () => {
  test(
    "two relays whose IPv6 outputs reach each other's inputs over a LAN: one injected datagram comes back a handful of times at most, with loop_drops",
    async () => {
      topo = await Topology.create("loop6");
      const t = topo;
      const [gen, lan, a, b, watch] = [await t.ns("gen"), await t.ns("lan"), await t.ns("a"), await t.ns("b"), await t.ns("watch")];
      for (const ns of [gen, lan, a, b, watch]) {
        await t.sysctl(ns, "net/ipv6/conf/all/accept_dad", 0);
        await t.sysctl(ns, "net/ipv6/conf/default/accept_dad", 0);
      }
      // A shared segment that floods multicast (no MLD snooping).
      await t.exec(lan, ["ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"], { check: true });
      await t.exec(lan, ["ip", "link", "set", "br0", "up"], { check: true });
      const ports: [string, string, string][] = [[gen, "g0", "fd97::1/64"], [a, "a0", "fd97::2/64"], [b, "b1", "fd97::3/64"], [watch, "w0", "fd97::4/64"]];
      for (const [i, [ns, ifname, addr]] of ports.entries()) {
        await t.link({ ns, ifname, addr }, { ns: lan, ifname: `p${i}` });
        await t.exec(lan, ["ip", "link", "set", `p${i}`, "master", "br0"], { check: true });
      }
      await t.link({ ns: a, ifname: "a1", addr: "fd97:1::1/64" }, { ns: b, ifname: "b0", addr: "fd97:1::2/64" });
      // A: the LAN's ff3e::1 to B; B: back onto the LAN as ff3e::1 (hop limit 8 each time: no
      // TTL ends this loop, only the loop guard).
      const relayA = await startForward(t, a, mode, ["--name", "a-to-b", "--from", "[ff3e::1]:5000@a0", "--to", "[ff3e::2]:6000@a1"], "relay A");
      const relayB = await startForward(t, b, mode, ["--name", "b-to-lan", "--from", "[ff3e::2]:6000@b0", "--to", "[ff3e::1]:5000@b1"], "relay B");
      const rx = await startUdpReceiver6(t, watch, { group: "ff3e::1", port: 5000, ifname: "w0", idle_s: 3, first_s: 15 });
      const sent = await udpSend6(t, gen, { ifname: "g0", group: "ff3e::1", port: 5000, count: 1, stream: 77, bind: "fd97::1" });
      const got = await rx.report();
      const reportA = await relayA.stopJson<ForwardReport>();
      const reportB = await relayB.stopJson<ForwardReport>();
      note("loop6", { sent, got, a: rule0(reportA), b: rule0(reportB) });
      expect(sent.sent).toBe(1);
      // The loop exists (a copy came back to the LAN from B) and was cut after a few rounds.
      expect(got.datagrams).toBeGreaterThanOrEqual(2);
      expect(got.datagrams).toBeLessThanOrEqual(5);
      expect(rule0(reportA).drops.loop_drops).toBeGreaterThanOrEqual(1);
      expect(rule0(reportA).packets).toBeLessThanOrEqual(4);
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("IPv6 <-> IPv4 translation", () => {
  test(
    "IPv6 input to an IPv4 output: 2,000 datagrams arrive byte-exact at an IPv4 receiver, the traffic class copied into the TOS byte",
    async () => {
      const { t, gen, relay, sink } = await topology6("v6to4");
      const fwd = await startForward(t, relay, mode, ["--from", "[ff3e::1]:5000@r0", "--to", "239.2.2.2:6000@r1"], "v6to4");
      const rx = await startUdpReceiver6(t, sink, { group: "239.2.2.2", port: 6000, ifname: "s0", idle_s: 3 });
      // DSCP 46 + ECN 1 in the traffic class: copied into the IPv4 TOS byte.
      await udpSend6(t, gen, { ifname: "g0", group: "ff3e::1", port: 5000, count: 2000, size: 1200, hops: 1, bind: GEN6, tos: 0xb9 });
      const got = await rx.report();
      const report = await fwd.stopJson<ForwardReport>();
      note("v6 to v4", { got, rule: rule0(report) });
      expect(got.tclass).toEqual({ [0xb9]: 2000 });
      expect(got.datagrams).toBe(2000);
      expect(got.numbered).toBe(2000);
      expect(got.duplicates).toBe(0);
      expect(got.pattern_errors).toBe(0);
      expect(got.sources).toEqual({ "10.99.2.1": 2000 });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "IPv4 input to an IPv6 output: 2,000 datagrams arrive byte-exact at an IPv6 receiver, the TOS byte copied into the traffic class",
    async () => {
      const { t, gen, relay, sink } = await topology6("v4to6");
      const fwd = await startForward(t, relay, mode, ["--from", "239.1.1.1:5000@r0", "--to", "[ff3e::2]:6000@r1"], "v4to6");
      const rx = await startUdpReceiver6(t, sink, { group: "ff3e::2", port: 6000, ifname: "s0", idle_s: 3 });
      await udpSend6(t, gen, { ifname: "g0", group: "239.1.1.1", port: 5000, count: 2000, size: 1200, hops: 1, tos: 0xb9 });
      const got = await rx.report();
      const report = await fwd.stopJson<ForwardReport>();
      note("v4 to v6", { got, rule: rule0(report) });
      expect(got.tclass).toEqual({ [0xb9]: 2000 });
      expect(got.datagrams).toBe(2000);
      expect(got.numbered).toBe(2000);
      expect(got.duplicates).toBe(0);
      expect(got.pattern_errors).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});

describe_netns("IPv6 extension headers, fragments and martians on the wire", () => {
  test(
    "hop-by-hop + destination options before UDP are relayed; fragments, jumbograms and malformed chains are counted and not relayed",
    async () => {
      const { t, gen, relay, sink } = await topology6("v6ext");
      const fwd = await startForward(t, relay, mode, ["--from", "[ff3e::1]:5000@r0", "--to", "[ff3e::2]:6000@r1"], "ext");
      const rx = await startUdpReceiver6(t, sink, { group: "ff3e::2", port: 6000, ifname: "s0", idle_s: 3 });
      const base = { src: GEN6, dst: "ff3e::1", dport: 5000, size: 100 } as const;
      const frames: RawFrame6[] = [];
      let seq = 0;
      const add = (n: number, stream: number, f: Partial<RawFrame6>) => {
        for (let i = 0; i < n; i++) frames.push({ ...base, ...f, seq: seq++, stream });
      };
      add(40, 1, { chain: [{ kind: "hop" }, { kind: "dst", length8: 3 }] });
      add(10, 1, { chain: [{ kind: "hop" }, { kind: "routing", length8: 2 }, { kind: "dst" }] });
      add(20, 2, { chain: [{ kind: "fragment" }] });
      add(10, 2, { chain: [{ kind: "hop" }, { kind: "fragment" }] });
      add(10, 3, { chain: [{ kind: "hop", jumbo: true }] });
      add(10, 4, { chain: [{ kind: "routing", segments_left: 1 }] });
      add(10, 4, { chain: Array.from({ length: 9 }, () => ({ kind: "dst" as const })) });
      add(10, 4, { chain: [{ kind: "dst" }, { kind: "hop" }] });
      // A chain whose header claims more bytes than the payload holds.
      add(10, 4, { chain: [{ kind: "dst", length8: 40 }], payload_len: 64 });
      const sent = await sendRawFrames6(t, gen, "g0", frames);
      expect(sent).toBe(frames.length);
      const got = await rx.report();
      const report = await fwd.stopJson<ForwardReport>();
      const drops = report.workers[0]!.parse_drops;
      note("v6 ext", { got, rule: rule0(report), drops });
      // Exactly the 50 well-formed chains arrive, each once and whole.
      expect(got.datagrams).toBe(50);
      expect(got.numbered).toBe(50);
      expect(got.duplicates).toBe(0);
      expect(got.pattern_errors).toBe(0);
      expect(rule0(report).packets).toBe(50);
      expect(drops.ipv6_fragment).toBe(30);
      expect(drops.ipv6_jumbogram).toBe(10);
      expect(drops.ipv6_bad_extension).toBe(40);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "link-local IPv6 sources are relayed; ::1, :: and multicast sources are dropped as martians, the input interface's own addresses as own_source",
    async () => {
      const { t, gen, relay, sink } = await topology6("v6mart");
      const ll = await t.exec(relay, ["ip", "-6", "-o", "addr", "show", "dev", "r0", "scope", "link"], { check: true });
      const relayLinkLocal = /inet6 (fe80::[0-9a-f:]+)\//.exec(ll.stdout)?.[1];
      expect(relayLinkLocal).toBeDefined();
      const fwd = await startForward(t, relay, mode, ["--from", "[ff3e::1]:5000@r0", "--to", "[ff3e::2]:6000@r1"], "mart");
      const rx = await startUdpReceiver6(t, sink, { group: "ff3e::2", port: 6000, ifname: "s0", idle_s: 3 });
      const frames: RawFrame6[] = [];
      let seq = 0;
      for (const [src, stream, n] of [
        ["fe80::1234", 1, 30],
        ["::1", 2, 10],
        ["::", 2, 10],
        ["ff02::1", 2, 10],
        [relayLinkLocal!, 3, 10],
        [RELAY_IN6, 3, 10],
      ] as const) {
        for (let i = 0; i < n; i++) frames.push({ src, dst: "ff3e::1", dport: 5000, seq: seq++, stream });
      }
      await sendRawFrames6(t, gen, "g0", frames);
      const got = await rx.report();
      const report = await fwd.stopJson<ForwardReport>();
      note("v6 martians", { got, counters: report.workers[0]!.counters });
      expect(got.datagrams).toBe(30);
      expect(got.numbered).toBe(30);
      expect(rule0(report).packets).toBe(30);
      expect(workerSum(report, "martian_source")).toBe(30);
      expect(workerSum(report, "own_source")).toBe(20);
      expect(rule0(report).drops.own_source).toBe(20);
    },
    TEST_TIMEOUT_MS,
  );
});
