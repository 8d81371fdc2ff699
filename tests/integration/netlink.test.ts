// The daemon follows the interfaces through rtnetlink: a rule waits for an input interface
// that does not exist yet and forwards as soon as it is up; a link going down stops its
// workers on purpose (no failure, no restart) and coming up starts them again; a recreated
// interface (new ifindex, or the same one between two reads), a new output address and a new
// MTU each rebuild what depends on them; an output address renumbered to another prefix length
// keeps forwarding and moves the subnet broadcast check with it; an output interface without an address or down parks only that output (also at
// start); a hundred flaps leave the daemon responsive, in the right state and without
// growing; a netlink overflow is repaired by a re-read that still reports what changed;
// `mcrelay events` reports it all in order. Every check ends at a receiver in another
// namespace, not only at the daemon's own view. Each test builds its own topology (they
// change links under the daemon).
import type { RuleSpec } from "../../src/config/rule-spec.ts";
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import {
  buildRelayTopology,
  mcrelayCommand,
  note,
  recreateInputLink,
  runGen,
  startLogged,
  type GenReport,
  type LoggedProcess,
  type RelayTopology,
  type SinkReport,
} from "../support/relay-harness.ts";
import { startReceiver } from "../support/receiver.ts";
import {
  RawClient,
  TempDir,
  TestDaemon,
  helloClient,
  killBackground,
  percentile,
  pidAlive,
  ruleNamed,
  sink,
  sinkReport,
  startStream,
  stopStream,
  waitFor,
  type WorkerRow,
} from "../support/daemon-harness.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 300_000;

const IP = Bun.which("ip") ?? Bun.which("ip", { PATH: "/usr/sbin:/sbin:/usr/bin:/bin" }) ?? "ip";

/** Forwarding must start this soon after the input interface comes up (the requirement). */
const ACTIVE_WITHIN_MS = 1_000;
/** Responsiveness during link flaps: p99 of an in-process `ping` round trip. */
const PING_P99_MAX_MS = 100;
/** Supervisor RSS may grow this much over a round of 100 flaps after a warm-up round. */
const RSS_GROWTH_MAX_KIB = 20 * 1024;
const FLAPS = 100;
const WARMUP_FLAPS = 50;
/** One down/up cycle; with the two `ip` runs, 100 cycles take about 10 s. */
const FLAP_PERIOD_S = 0.09;

// ---------------------------------------------------------------------------------------
// Per-test state, torn down in afterEach whatever the test did

let topo: Topology | undefined;
let dir: TempDir | undefined;
const daemons: TestDaemon[] = [];
const extras: LoggedProcess[] = [];

afterEach(async () => {
  await killBackground();
  for (const p of extras.splice(0)) if (p.running) p.proc.kill("SIGKILL");
  for (const d of daemons.splice(0)) {
    if (!d.running) continue;
    try {
      await d.stop(15_000);
    } catch {
      await d.kill9();
    }
  }
  await topo?.destroy();
  topo = undefined;
  dir?.remove();
  dir = undefined;
}, T);

async function setup(label: string, sinks = 1): Promise<RelayTopology> {
  topo = await Topology.create(label);
  dir = new TempDir("mcr-nl-");
  return buildRelayTopology(topo, { label, sinks });
}

async function startDaemon(rt: RelayTopology, rules: RuleSpec[]): Promise<TestDaemon> {
  const configPath = dir!.file("mcrelay.json5", JSON.stringify({ rules }));
  const d = await TestDaemon.start(rt, dir!, { configPath });
  daemons.push(d);
  return d;
}

/** `ip ARGS` inside `ns`; throws on failure. */
async function ip(rt: RelayTopology, ns: string, args: string[]): Promise<void> {
  await rt.topo.exec(ns, [IP, ...args], { check: true });
}

async function ifindexOf(rt: RelayTopology, ns: string, ifname: string): Promise<number> {
  const r = await rt.topo.exec(ns, [IP, "-j", "link", "show", "dev", ifname], { check: true });
  return (JSON.parse(r.stdout) as { ifindex: number }[])[0]!.ifindex;
}

/** Creates g0 (generator) / r0 (relay) again, addresses set, r0 left down unless `up`. */
async function createInputLink(rt: RelayTopology, up: boolean): Promise<void> {
  await ip(rt, rt.gen, ["link", "add", "g0", "type", "veth", "peer", "name", "r0", "netns", rt.relay]);
  await ip(rt, rt.gen, ["addr", "add", `${rt.genAddr}/24`, "dev", "g0"]);
  await ip(rt, rt.gen, ["link", "set", "g0", "up"]);
  await rt.topo.addMulticastRoute(rt.gen, "g0");
  await ip(rt, rt.relay, ["addr", "add", `${rt.relayInAddr}/24`, "dev", "r0"]);
  if (up) await ip(rt, rt.relay, ["link", "set", "r0", "up"]);
}

// ---------------------------------------------------------------------------------------
// What the daemon says

interface OutputView {
  to: string;
  ttl: number;
  state: string;
  reason: string | null;
}

interface RuleView {
  name: string;
  id: string;
  state: string;
  reasons: string[];
  outputs: OutputView[];
}

type Worker = WorkerRow & { ring: Record<string, number>; consecutive_failures: number };

/** In-process (cheap) views, for polling. */
async function listNow(d: TestDaemon): Promise<RuleView[]> {
  return ((await d.call("list")) as { rules: RuleView[] }).rules;
}

async function workersNow(d: TestDaemon, ifname?: string): Promise<Worker[]> {
  const all = ((await d.call("workers")) as { workers: Worker[] }).workers;
  return ifname === undefined ? all : all.filter((w) => w.interface === ifname);
}

/** The CLI's views, for the assertions. */
async function listCli(d: TestDaemon): Promise<RuleView[]> {
  return (await d.json<{ rules: RuleView[] }>(["list"])).rules;
}

async function workersCli(d: TestDaemon, ifname?: string): Promise<Worker[]> {
  const all = (await d.json<{ workers: Worker[] }>(["workers"])).workers;
  return ifname === undefined ? all : all.filter((w) => w.interface === ifname);
}

async function waitRule(d: TestDaemon, name: string, what: string, ok: (r: RuleView) => boolean, timeoutMs = 20_000): Promise<RuleView> {
  return waitFor(`rule ${name} ${what}`, async () => {
    const r = (await listNow(d)).find((x) => x.name === name);
    return r !== undefined && ok(r) ? r : undefined;
  }, timeoutMs, 50);
}

/** Exactly one worker on `ifname`, running with its table applied (and `ok` if given). */
async function waitWorker(d: TestDaemon, ifname: string, what: string, ok: (w: Worker) => boolean = () => true, timeoutMs = 30_000): Promise<Worker> {
  return waitFor(`worker on ${ifname} ${what}`, async () => {
    const ws = await workersNow(d, ifname);
    const w = ws[0];
    return ws.length === 1 && w!.state === "running" && w!.pid !== null && w!.applied_hash === w!.table_hash && ok(w!) ? w : undefined;
  }, timeoutMs, 50);
}

/** Lines of the daemon's log that report a failure: a worker restarted or exited, or any error. */
function failureLines(d: TestDaemon): string[] {
  return d.proc.stderr.split("\n").filter((l) => /restart in \d+ ms|\(pid \d+\) exited|\[error\]|"level":"error"/.test(l));
}

// ---------------------------------------------------------------------------------------
// Traffic

/** A sink joined first, then `count` packets of `size` bytes from gen; what the sink saw. */
async function relayBurst(
  rt: RelayTopology,
  o: { to: string; sinkNs: string; listen: string; count: number; ratePps?: number; size?: number; stream?: number },
): Promise<{ gen: GenReport; sink: SinkReport }> {
  const s = await sink(rt, o.sinkNs, o.listen, ["--expect", String(o.count)], 1);
  const gen = await runGen(rt.topo, rt.gen, "bun", [
    "--to", o.to,
    "--rate", String(o.ratePps ?? 2_000),
    "--count", String(o.count),
    "--size", String(o.size ?? 200),
    "--stream", String(o.stream ?? 1),
  ]);
  return { gen, sink: await sinkReport(s, 20_000) };
}

function expectAllArrived(r: { gen: GenReport; sink: SinkReport }, count: number): void {
  expect(r.gen.sent).toBe(count);
  expect(r.gen.send_errors).toBe(0);
  // The sink idles out rather than stopping at `count`: a duplicate or a stray would be seen.
  expect(r.sink.totals).toMatchObject({ received: count, lost: 0, duplicates: 0, pattern_errors: 0, datagrams: count });
}

/** What an independent receiver (tests/support/receiver.ts) got, in the form the assertions compare. */
interface Received {
  received: number;
  duplicates: number;
  first_at_ms: number | null;
  sources: Record<string, number>;
  ttls: Record<string, number>;
}

/**
 * `count` packets from gen while a receiver in the sink's namespace notes who sent them and with
 * which TTL; it reads until it has been idle, so duplicates and strays are counted too.
 */
async function sendAndCapture(rt: RelayTopology, side: { ns: string }, count: number, stream: number): Promise<Received> {
  const rx = await startReceiver(rt.topo, side.ns, { addr: "239.2.2.2", port: 6000, ifname: "s0" });
  extras.push(rx.proc);
  await runGen(rt.topo, rt.gen, "bun", ["--to", "239.1.1.1:5000@g0", "--rate", "1000", "--count", String(count), "--size", "200", "--stream", String(stream)]);
  const r = await rx.report();
  return { received: r.datagrams, duplicates: r.duplicates, first_at_ms: r.first_at_ms, sources: r.sources, ttls: r.ttls };
}

/** VmRSS of a process, KiB. */
function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

/** `count` down/up cycles of `ifname` inside `ns`, each `periodS` long, by one shell; duration ms. */
async function flap(rt: RelayTopology, ns: string, ifname: string, count: number, periodS: number): Promise<number> {
  const half = (periodS / 2).toFixed(3);
  const script = `i=0; while [ $i -lt "$1" ]; do "$2" link set "$3" down || exit 1; sleep ${half}; "$2" link set "$3" up || exit 1; sleep ${half}; i=$((i+1)); done`;
  const started = performance.now();
  await rt.topo.exec(ns, ["sh", "-c", script, "flap", String(count), IP, ifname], { check: true, timeoutMs: 120_000 });
  return performance.now() - started;
}

/** Worker processes of mcrelay in a namespace (pids of `ip netns pids` whose command line says _worker). */
function workerProcesses(ns: string): number[] {
  const r = Bun.spawnSync({ cmd: [IP, "netns", "pids", ns], stdout: "pipe", stderr: "pipe" });
  const pids = r.stdout.toString().split(/\s+/).filter(Boolean).map(Number);
  return pids.filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes("_worker") && pidAlive(pid);
    } catch {
      return false;
    }
  });
}

// ---------------------------------------------------------------------------------------

describe_netns("netlink: the daemon follows the interfaces (kernel, under bun)", () => {
  test(
    "a rule for a missing input interface is pending, and forwards within 1 s of the interface coming up",
    async () => {
      const rt = await setup("nl-late");
      await ip(rt, rt.relay, ["link", "del", "r0"]); // and g0 with it
      const d = await startDaemon(rt, [{ name: "late", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }]);

      const late = ruleNamed(await listCli(d), "late");
      expect(late.state).toBe("pending");
      expect(late.reasons).toContain("input interface r0 does not exist");
      expect(await workersCli(d)).toEqual([]);

      const added = await d.json<{ rule: RuleView; warnings: string[] }>(["add", "--name", "late-rt", "--from", "239.1.1.2:5000@r0", "--to", "239.2.2.3:6000@r1"]);
      expect(added.rule.state).toBe("pending");
      expect(added.warnings).toContain("input interface r0 does not exist");

      // The interface appears down first, then comes up while traffic is already offered.
      await createInputLink(rt, false);
      await waitRule(d, "late", "pending because r0 is down", (r) => r.reasons.includes("input interface r0 is down"));
      const rx = await startReceiver(rt.topo, rt.sinks[0]!.ns, { addr: "239.2.2.2", port: 6000, ifname: "s0", timeoutS: 60 });
      extras.push(rx.proc);
      const gen = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 2_000, stream: 9 });
      await Bun.sleep(500);
      expect(gen.running).toBe(true);

      const upAt = Date.now();
      await ip(rt, rt.relay, ["link", "set", "r0", "up"]);
      const upDoneAt = Date.now();
      const activeAt = await waitRule(d, "late", "active", (r) => r.state === "active", 20_000).then(() => Date.now());
      await Bun.sleep(1_000);
      const sent = (await stopStream(gen)).sent;
      // The receiver idles out after the stream stopped: every datagram it read is counted.
      const got = await rx.report();
      note("stream while r0 came up", { sent, got });
      expect(got.datagrams).toBeGreaterThan(0);
      expect(got.datagrams).toBeLessThanOrEqual(sent);
      expect(got).toMatchObject({ unique: got.datagrams, duplicates: 0 });
      const firstPacketMs = got.first_at_ms! - upAt;
      const activeMs = activeAt - upAt;
      note("time from r0 up to active / first packet", { ip_link_set_up_ms: upDoneAt - upAt, list_active_ms: activeMs, first_packet_ms: firstPacketMs });
      expect(activeMs).toBeLessThan(ACTIVE_WITHIN_MS);
      expect(firstPacketMs).toBeLessThan(ACTIVE_WITHIN_MS);

      const rules = await listCli(d);
      expect(rules.map((r) => [r.name, r.state, r.reasons])).toEqual([
        ["late", "active", []],
        ["late-rt", "active", []],
      ]);
      const w = await waitWorker(d, "r0", "serving both rules", (x) => x.rules === 2);
      expect(w.restarts).toBe(0);

      // Everything sent from now on arrives, for both rules.
      const a = await relayBurst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", count: 3_000 });
      expectAllArrived(a, 3_000);
      const b = await relayBurst(rt, { to: "239.1.1.2:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.3:6000@s0", count: 1_000, stream: 2 });
      expectAllArrived(b, 1_000);
      expect(failureLines(d)).toEqual([]);
    },
    T,
  );

  test(
    "input link down makes the rule pending and stops its worker without counting a failure; up forwards again",
    async () => {
      const rt = await setup("nl-downup");
      const d = await startDaemon(rt, [{ name: "du", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }]);
      const before = await waitWorker(d, "r0", "running");
      expectAllArrived(await relayBurst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", count: 1_000 }), 1_000);

      await ip(rt, rt.relay, ["link", "set", "r0", "down"]);
      await waitRule(d, "du", "pending because r0 is down", (r) => r.state === "pending");
      const pending = ruleNamed(await listCli(d), "du");
      expect(pending.state).toBe("pending");
      expect(pending.reasons).toEqual(["input interface r0 is down"]);
      await waitFor("no worker on r0", async () => (await workersNow(d, "r0")).length === 0, 10_000, 50);
      expect(await workersCli(d, "r0")).toEqual([]);
      await waitFor(`old worker pid ${before.pid} gone`, () => !pidAlive(before.pid!), 10_000, 50);
      const stats = await d.json<{ rules: { name: string; state: string }[]; workers: Worker[] }>(["stats"]);
      expect(ruleNamed(stats.rules, "du").state).toBe("pending");
      expect(stats.workers).toEqual([]);

      await ip(rt, rt.relay, ["link", "set", "r0", "up"]);
      await waitRule(d, "du", "active again", (r) => r.state === "active");
      const after = await waitWorker(d, "r0", "running again");
      const [w] = await workersCli(d, "r0");
      expect(w!.pid).toBe(after.pid);
      expect(w!.pid).not.toBe(before.pid);
      expect(w!.restarts).toBe(0);
      expect(w!.consecutive_failures).toBe(0);
      expect(w!.last_error).toBeNull();
      expect(failureLines(d)).toEqual([]);

      expectAllArrived(await relayBurst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", count: 3_000, stream: 2 }), 3_000);
    },
    T,
  );

  test(
    "a deleted and recreated input interface (new ifindex) gets a new worker and forwards, with no failure counted",
    async () => {
      const rt = await setup("nl-recreate");
      const d = await startDaemon(rt, [{ name: "rc", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }]);
      const first = await waitWorker(d, "r0", "running");
      const index1 = await ifindexOf(rt, rt.relay, "r0");

      // Slowly: the rule sees the interface vanish, then come back.
      await ip(rt, rt.relay, ["link", "del", "r0"]);
      const gone = await waitRule(d, "rc", "pending because r0 is gone", (r) => r.state === "pending");
      expect(gone.reasons).toEqual(["input interface r0 does not exist"]);
      await waitFor("no worker on r0", async () => (await workersNow(d, "r0")).length === 0, 10_000, 50);
      await createInputLink(rt, true);
      const index2 = await ifindexOf(rt, rt.relay, "r0");
      expect(index2).not.toBe(index1);
      const second = await waitWorker(d, "r0", "running on the new interface", (w) => w.pid !== first.pid);
      expectAllArrived(await relayBurst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", count: 2_000 }), 2_000);

      // Quickly: deleted and recreated by one shell, likely within one netlink poll, so the
      // rule may never look pending; only the ifindex tells the old interface from the new.
      await recreateInputLink(rt);
      const index3 = await ifindexOf(rt, rt.relay, "r0");
      expect(index3).not.toBe(index2);
      // A new ring on the new interface: in a new worker when the rule looked pending meanwhile
      // (no rule left, no worker), else in the same worker at another position (not restarted).
      const third = await waitWorker(d, "r0", "running on the recreated interface", (w) => w.pid !== second.pid || w.position !== second.position);
      if (third.pid !== second.pid) await waitFor(`worker pid ${second.pid} gone`, () => !pidAlive(second.pid!), 10_000, 50);
      await waitRule(d, "rc", "active", (r) => r.state === "active");

      const [w] = await workersCli(d, "r0");
      expect(w!.pid).toBe(third.pid);
      expect(w!.state).toBe("running");
      expect(w!.restarts).toBe(0);
      expect(w!.consecutive_failures).toBe(0);
      expect(w!.last_error).toBeNull();
      expect(failureLines(d)).toEqual([]);
      expectAllArrived(await relayBurst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", count: 3_000, stream: 2 }), 3_000);
    },
    T,
  );

  test(
    "an input interface deleted and created again under the same ifindex while the supervisor reads nothing gets a new plane and forwards again",
    async () => {
      const rt = await setup("nl-sameidx");
      const s1 = rt.sinks[0]!;
      const d = await startDaemon(rt, [{ name: "same", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }]);
      const before = await waitWorker(d, "r0", "running");
      expect((await sendAndCapture(rt, s1, 500, 1)).received).toBe(500);
      const index = await ifindexOf(rt, rt.relay, "r0");
      const sub = await helloClient(d.socket);
      try {
        await sub.call("events");
        // The supervisor is stopped so that it reads the delete and the new link in one poll
        // (as after a veth moved to another namespace and back, or a quick `ip link del` and
        // `ip link add ... index N`): by name and index nothing changed, yet the packet sockets
        // bound to the old interface were unhooked by its unregistration.
        const script = [
          `"$1" link del r0`,
          `"$1" link add r0 index "$2" type veth peer name g0 netns "$3"`,
          `"$1" addr add "$4/24" dev r0`,
          `"$1" link set r0 up`,
        ].join(" && ");
        process.kill(d.pid, "SIGSTOP");
        try {
          await rt.topo.exec(rt.relay, ["sh", "-c", script, "recreate", IP, String(index), rt.gen, rt.relayInAddr], { check: true });
        } finally {
          process.kill(d.pid, "SIGCONT");
        }
        expect(await ifindexOf(rt, rt.relay, "r0")).toBe(index);
        await ip(rt, rt.gen, ["addr", "add", `${rt.genAddr}/24`, "dev", "g0"]);
        await ip(rt, rt.gen, ["link", "set", "g0", "up"]);
        await rt.topo.addMulticastRoute(rt.gen, "g0");

        const recreated = await waitFor("a link-recreated event for r0", async () => {
          const line = await sub.nextLine(1_000).catch(() => null);
          const e = line === null ? null : (JSON.parse(line) as { event: Record<string, any> }).event;
          return e?.kind === "link" && e.type === "link-recreated" && e.interface === "r0" ? e : undefined;
        }, 10_000, 0);
        expect([recreated.from_ifindex, recreated.ifindex]).toEqual([index, index]);
      } finally {
        sub.close();
      }
      // A ring on the new interface: in the same worker at another position (or a new worker).
      const after = await waitWorker(d, "r0", "on a new plane", (w) => w.pid !== before.pid || w.position !== before.position, 10_000);
      expect(after.restarts).toBe(0);
      expect(ruleNamed(await listCli(d), "same").state).toBe("active");
      expect(await sendAndCapture(rt, s1, 500, 2)).toEqual({ received: 500, duplicates: 0, first_at_ms: expect.any(Number), sources: { [s1.relayAddr]: 500 }, ttls: { "8": 500 } });
      expect(failureLines(d)).toEqual([]);
    },
    T,
  );

  test(
    "an output interface's address renumbered to another prefix length keeps its output forwarding, and the output to the new subnet's broadcast address waits",
    async () => {
      const rt = await setup("nl-prefix");
      const s1 = rt.sinks[0]!;
      // r1 has 10.99.1.1/24: 10.99.255.255 is a host of another subnet, the broadcast address of
      // 10.99.0.0/16 (outputs to a subnet broadcast address are refused: no SO_BROADCAST).
      const wide = "10.99.255.255:6001@r1";
      const d = await startDaemon(rt, [{ name: "pfx", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1", wide] }]);
      const w0 = await waitWorker(d, "r0", "running");
      expect(ruleNamed(await listCli(d), "pfx").outputs.map((o) => [o.to, o.state])).toEqual([["239.2.2.2:6000@r1", "active"], [wide, "active"]]);
      const addrs = async () => {
        const r = await rt.topo.exec(rt.relay, [IP, "-4", "-j", "addr", "show", "dev", "r1"], { check: true });
        return (JSON.parse(r.stdout) as { addr_info: { local: string; prefixlen: number }[] }[])[0]!.addr_info.map((a) => `${a.local}/${a.prefixlen}`);
      };

      // Renumbered the routine way: the new prefix added (the kernel keeps both), the old deleted.
      await ip(rt, rt.relay, ["addr", "add", `${s1.relayAddr}/16`, "dev", "r1"]);
      await ip(rt, rt.relay, ["addr", "del", `${s1.relayAddr}/24`, "dev", "r1"]);
      expect(await addrs()).toEqual([`${s1.relayAddr}/16`]);
      const renumbered = await waitRule(d, "pfx", "with the broadcast output pending", (r) => r.outputs[1]!.state === "pending");
      expect(renumbered.state).toBe("active");
      expect(renumbered.outputs.map((o) => [o.to, o.state])).toEqual([["239.2.2.2:6000@r1", "active"], [wide, "pending"]]);
      expect(renumbered.outputs[1]!.reason).toContain("is the broadcast address of r1's subnet 10.99.0.0/16");
      await waitWorker(d, "r0", "holding the table without the broadcast output", (w) => w.table_hash !== w0.table_hash, 10_000);
      expect(await sendAndCapture(rt, s1, 500, 1)).toEqual({ received: 500, duplicates: 0, first_at_ms: expect.any(Number), sources: { [s1.relayAddr]: 500 }, ttls: { "8": 500 } });

      // Back, by one shell (likely within one poll): only the prefix length differs.
      await rt.topo.exec(rt.relay, ["sh", "-c", `"$1" addr add "$2/24" dev r1 && "$1" addr del "$2/16" dev r1`, "renumber", IP, s1.relayAddr], { check: true });
      expect(await addrs()).toEqual([`${s1.relayAddr}/24`]);
      await waitRule(d, "pfx", "with both outputs active again", (r) => r.outputs.every((o) => o.state === "active"));
      expect(await sendAndCapture(rt, s1, 500, 2)).toEqual({ received: 500, duplicates: 0, first_at_ms: expect.any(Number), sources: { [s1.relayAddr]: 500 }, ttls: { "8": 500 } });
      expect(failureLines(d)).toEqual([]);
    },
    T,
  );

  test(
    "after the output interface's address is replaced, relayed packets leave from the new address, with the rule's TTL",
    async () => {
      const rt = await setup("nl-srcaddr");
      const s1 = rt.sinks[0]!;
      const d = await startDaemon(rt, [{ name: "src", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"], ttl: 5 }]);
      const w0 = await waitWorker(d, "r0", "running");
      // The control: before the change, packets come from r1's address, with the rule's TTL.
      expect(await sendAndCapture(rt, s1, 500, 1)).toEqual({ received: 500, duplicates: 0, first_at_ms: expect.any(Number), sources: { [s1.relayAddr]: 500 }, ttls: { "5": 500 } });

      // Replaced without a moment without an address: the new one is added (secondary), the
      // old primary deleted, and the kernel promotes the new one.
      await rt.topo.sysctl(rt.relay, "net/ipv4/conf/r1/promote_secondaries", 1);
      await ip(rt, rt.relay, ["addr", "add", "10.99.2.5/24", "dev", "r1"]);
      await ip(rt, rt.relay, ["addr", "del", `${s1.relayAddr}/24`, "dev", "r1"]);
      const left = await rt.topo.exec(rt.relay, [IP, "-4", "-j", "addr", "show", "dev", "r1"], { check: true });
      expect((JSON.parse(left.stdout) as { addr_info: { local: string }[] }[])[0]!.addr_info.map((a) => a.local)).toEqual(["10.99.2.5"]);
      await waitWorker(d, "r0", "holding a table with the new address", (w) => w.table_hash !== w0.table_hash);
      const rule = ruleNamed(await listCli(d), "src");
      expect([rule.state, rule.outputs.map((o) => o.state)]).toEqual(["active", ["active"]]);
      expect(await sendAndCapture(rt, s1, 500, 2)).toEqual({ received: 500, duplicates: 0, first_at_ms: expect.any(Number), sources: { "10.99.2.5": 500 }, ttls: { "5": 500 } });
      expect(failureLines(d)).toEqual([]);
    },
    T,
  );

  test(
    "an output interface without an address or down parks only that output while the other forwards, and resumes when fixed",
    async () => {
      const rt = await setup("nl-output", 2);
      const [s1, s2] = [rt.sinks[0]!, rt.sinks[1]!];
      const d = await startDaemon(rt, [{ name: "two", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1", "239.2.2.3:6000@r2"] }]);
      const w0 = await waitWorker(d, "r0", "running");
      const outputStats = async () => ruleNamed((await d.json<{ rules: { name: string; outputs: { to: string; packets: number }[] }[] }>(["stats"])).rules, "two").outputs;

      // r1 loses its only IPv4 address: its output waits, r2's keeps forwarding.
      await ip(rt, rt.relay, ["addr", "del", `${s1.relayAddr}/24`, "dev", "r1"]);
      const bare = await waitRule(d, "two", "with r1's output pending", (r) => r.outputs[0]!.state === "pending");
      expect(bare.state).toBe("active");
      expect(bare.outputs.map((o) => [o.to, o.state, o.reason])).toEqual([
        ["239.2.2.2:6000@r1", "pending", "output interface r1 has no IPv4 address"],
        ["239.2.2.3:6000@r2", "active", null],
      ]);
      const bareTable = (await waitWorker(d, "r0", "holding the table without r1's output", (w) => w.table_hash !== w0.table_hash, 10_000)).table_hash;
      expectAllArrived(await relayBurst(rt, { to: "239.1.1.1:5000@g0", sinkNs: s2.ns, listen: "239.2.2.3:6000@s0", count: 1_000 }), 1_000);

      // A new address: r1's output sends again, from it.
      await ip(rt, rt.relay, ["addr", "add", "10.99.2.5/24", "dev", "r1"]);
      await waitRule(d, "two", "with every output active", (r) => r.outputs.every((o) => o.state === "active"));
      await waitWorker(d, "r0", "holding the table with r1's output again", (w) => w.table_hash !== bareTable, 10_000);
      // The default TTL (8) when the rule names none.
      expect(await sendAndCapture(rt, s1, 500, 2)).toEqual({ received: 500, duplicates: 0, first_at_ms: expect.any(Number), sources: { "10.99.2.5": 500 }, ttls: { "8": 500 } });

      // r2 down: its output waits, r1's keeps forwarding.
      const tableBefore = (await waitWorker(d, "r0", "settled")).table_hash;
      await ip(rt, rt.relay, ["link", "set", "r2", "down"]);
      await waitRule(d, "two", "with r2's output pending", (r) => r.outputs[1]!.state === "pending");
      const half = ruleNamed(await listCli(d), "two");
      expect(half.state).toBe("active");
      expect(half.reasons).toEqual([]);
      expect(half.outputs.map((o) => [o.to, o.state, o.reason])).toEqual([
        ["239.2.2.2:6000@r1", "active", null],
        ["239.2.2.3:6000@r2", "pending", "output interface r2 is down"],
      ]);
      const oneOutput = (await waitWorker(d, "r0", "holding the one-output table", (w) => w.table_hash !== tableBefore, 10_000)).table_hash;
      const statsBefore = await outputStats();
      expectAllArrived(await relayBurst(rt, { to: "239.1.1.1:5000@g0", sinkNs: s1.ns, listen: "239.2.2.2:6000@s0", count: 2_000, stream: 3 }), 2_000);
      const statsAfter = await waitFor("r1's output counted the burst", async () => {
        const o = await outputStats();
        return o[0]!.packets - statsBefore[0]!.packets >= 2_000 ? o : undefined;
      }, 10_000, 200);
      expect(statsAfter[0]!.packets - statsBefore[0]!.packets).toBe(2_000);
      expect(statsAfter[1]!.packets).toBe(statsBefore[1]!.packets);

      await ip(rt, rt.relay, ["link", "set", "r2", "up"]);
      await waitRule(d, "two", "with both outputs active", (r) => r.outputs.every((o) => o.state === "active"));
      await waitWorker(d, "r0", "holding the two-output table", (w) => w.table_hash !== oneOutput, 10_000);
      const [sa, sb] = await Promise.all([
        sink(rt, s1.ns, "239.2.2.2:6000@s0", ["--expect", "2000"], 1),
        sink(rt, s2.ns, "239.2.2.3:6000@s0", ["--expect", "2000"], 1),
      ]);
      const gen = await runGen(rt.topo, rt.gen, "bun", ["--to", "239.1.1.1:5000@g0", "--rate", "2000", "--count", "2000", "--size", "200", "--stream", "4"]);
      const [ra, rb] = await Promise.all([sinkReport(sa, 20_000), sinkReport(sb, 20_000)]);
      expectAllArrived({ gen, sink: ra }, 2_000);
      expectAllArrived({ gen, sink: rb }, 2_000);
      expect(failureLines(d)).toEqual([]);
    },
    T,
  );

  test(
    "after the MTU goes from 1500 to 9000, 8000-byte datagrams are relayed whole, the worker given a new ring without a restart",
    async () => {
      const rt = await setup("nl-mtu");
      const s1 = rt.sinks[0]!;
      const d = await startDaemon(rt, [{ name: "jumbo", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }]);
      const w0 = await waitWorker(d, "r0", "running");
      const frameBytes0 = w0.ring?.frame_bytes ?? 0;

      for (const [ns, dev] of [[s1.ns, "s0"], [rt.relay, "r1"], [rt.gen, "g0"], [rt.relay, "r0"]] as const) {
        await ip(rt, ns, ["link", "set", "dev", dev, "mtu", "9000"]);
      }
      // The plane of r0 is rebuilt for the new MTU: a ring with bigger frames, in the same
      // worker process (not restarted).
      const w1 = await waitWorker(d, "r0", "on a ring for the new MTU", (w) => (w.ring?.frame_bytes ?? 0) > frameBytes0);
      expect(w1.pid).toBe(w0.pid);
      note("ring frame bytes before / after the MTU change", { before: frameBytes0, after: w1.ring?.frame_bytes });
      expect(w1.ring?.frame_bytes).toBeGreaterThan(9000);
      expect(ruleNamed(await listCli(d), "jumbo").state).toBe("active");

      const count = 2_000;
      const r = await relayBurst(rt, { to: "239.1.1.1:5000@g0", sinkNs: s1.ns, listen: "239.2.2.2:6000@s0", count, size: 8_000, ratePps: 1_000 });
      expectAllArrived(r, count);
      expect(r.sink.totals.bytes).toBe(count * 8_000);
      expect(r.sink.totals.foreign).toBe(0);
      const [w] = await workersCli(d, "r0");
      expect(w!.restarts).toBe(0);
      expect(failureLines(d)).toEqual([]);
    },
    T,
  );

  test(
    "100 flaps of the input link in 10 s: pings stay fast, memory flat, and the rule ends active with one worker that forwards",
    async () => {
      const rt = await setup("nl-flap");
      const d = await startDaemon(rt, [{ name: "flap", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }]);
      await waitWorker(d, "r0", "running");
      const settle = async (what: string) => {
        await waitRule(d, "flap", `active ${what}`, (r) => r.state === "active", 30_000);
        return waitWorker(d, "r0", `running ${what}`, () => true, 30_000);
      };

      const rssStart = rssKiB(d.pid);
      const warmupMs = await flap(rt, rt.relay, "r0", WARMUP_FLAPS, FLAP_PERIOD_S);
      await settle("after the warm-up");
      await Bun.sleep(2_000);
      const rssBefore = rssKiB(d.pid);

      const client = await helloClient(d.socket);
      const rtts: number[] = [];
      let flapping = true;
      const pinger = (async (c: RawClient) => {
        while (flapping) {
          const t0 = performance.now();
          const pong = await c.call("ping", undefined, 10_000);
          rtts.push(performance.now() - t0);
          expect(pong.pong).toBe(true);
          await Bun.sleep(20);
        }
      })(client);
      let flapMs: number;
      try {
        flapMs = await flap(rt, rt.relay, "r0", FLAPS, FLAP_PERIOD_S);
      } finally {
        flapping = false;
        await pinger;
        client.close();
      }
      const last = await settle("after the flaps");
      await Bun.sleep(2_000);
      const rssAfter = rssKiB(d.pid);

      const p50 = percentile(rtts, 50);
      const p99 = percentile(rtts, 99);
      const numbers = {
        warmup_flaps: WARMUP_FLAPS,
        warmup_ms: Math.round(warmupMs),
        flaps: FLAPS,
        flap_ms: Math.round(flapMs),
        pings: rtts.length,
        ping_p50_ms: +p50.toFixed(2),
        ping_p99_ms: +p99.toFixed(2),
        ping_max_ms: +Math.max(...rtts).toFixed(2),
        rss_start_kib: rssStart,
        rss_before_kib: rssBefore,
        rss_after_kib: rssAfter,
        rss_growth_kib: rssAfter - rssBefore,
      };
      note("link flaps", numbers);
      expect(rtts.length).toBeGreaterThan(100);
      expect(p99).toBeLessThan(PING_P99_MAX_MS);
      expect(rssAfter - rssBefore).toBeLessThan(RSS_GROWTH_MAX_KIB);

      const rules = await listCli(d);
      expect(rules.map((r) => [r.name, r.state, r.reasons])).toEqual([["flap", "active", []]]);
      const ws = await workersCli(d);
      expect(ws.length).toBe(1);
      expect(ws[0]!.interface).toBe("r0");
      expect(ws[0]!.state).toBe("running");
      expect(ws[0]!.pid).toBe(last.pid);
      expect(ws[0]!.restarts).toBe(0);
      // No worker left behind by a flap that stopped it half-way through starting.
      await waitFor("exactly one worker process in the relay namespace", () => {
        const procs = workerProcesses(rt.relay);
        return procs.length === 1 && procs[0] === last.pid ? procs : undefined;
      }, 15_000, 200).catch((err) => {
        throw new Error(`${(err as Error).message}: worker processes ${JSON.stringify(workerProcesses(rt.relay))}, listed ${last.pid}`);
      });
      expect(failureLines(d)).toEqual([]);
      expectAllArrived(await relayBurst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", count: 3_000 }), 3_000);
    },
    T,
  );

  test(
    "`mcrelay events --json` streams link-down, rule pending, link-up, rule active in that order",
    async () => {
      const rt = await setup("nl-events");
      const d = await startDaemon(rt, [{ name: "ev", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }]);
      await waitWorker(d, "r0", "running");
      const ev = startLogged(rt.topo, rt.relay, [...mcrelayCommand("bun"), "events", "--socket", d.socket, "--json"], "events");
      extras.push(ev);

      // Subscribed once a change of our own shows up: an address on lo, a new one each try.
      await waitFor("the events stream to report a marker address", async () => {
        const n = (extras.length * 7 + Math.floor(performance.now())) % 250;
        const marker = `10.250.${n}.1`;
        await ip(rt, rt.relay, ["addr", "add", `${marker}/32`, "dev", "lo"]);
        const deadline = performance.now() + 1_500;
        while (performance.now() < deadline) {
          if (ev.stdout.includes(`"${marker}"`)) return true;
          if (!ev.running) throw new Error(`events ended: ${ev.output()}`);
          await Bun.sleep(50);
        }
        return false;
      }, 30_000, 0);

      await ip(rt, rt.relay, ["link", "set", "r0", "down"]);
      await waitRule(d, "ev", "pending", (r) => r.state === "pending");
      await ip(rt, rt.relay, ["link", "set", "r0", "up"]);
      await waitRule(d, "ev", "active", (r) => r.state === "active");
      const lines = () =>
        ev.stdout
          .split("\n")
          .filter((l) => l.trim().length > 0)
          .map((l) => JSON.parse(l) as Record<string, any>);
      await waitFor("the rule's active event", () => lines().some((e) => e.kind === "rule" && e.rule === "ev" && e.state === "active"), 10_000, 50);
      ev.proc.kill("SIGINT");
      expect(await ev.wait(15_000)).toBe(0);

      const all = lines();
      const seqs = all.map((e) => e.seq as number);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      expect(new Set(seqs).size).toBe(seqs.length);
      for (const e of all) expect(typeof e.time).toBe("string");
      const relevant = all.filter(
        (e) => (e.kind === "link" && e.interface === "r0" && (e.type === "link-down" || e.type === "link-up")) || (e.kind === "rule" && e.rule === "ev"),
      );
      expect(relevant.map((e) => (e.kind === "link" ? e.type : `rule ${e.state}`))).toEqual(["link-down", "rule pending", "link-up", "rule active"]);
      expect(relevant[1]!.reasons).toEqual(["input interface r0 is down"]);
      expect(relevant[3]!.reasons).toEqual([]);
      note("events", relevant);
    },
    T,
  );

  test(
    "a daemon started while an output interface is down forwards through the other output, and a rule added with a missing output interface is accepted with a warning",
    async () => {
      const rt = await setup("nl-outstart", 2);
      const [s1, s2] = [rt.sinks[0]!, rt.sinks[1]!];
      await ip(rt, rt.relay, ["link", "set", "r2", "down"]);
      const d = await startDaemon(rt, [{ name: "two", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1", "239.2.2.3:6000@r2"] }]);
      const two = ruleNamed(await listCli(d), "two");
      expect(two.state).toBe("active");
      expect(two.outputs.map((o) => [o.to, o.state, o.reason])).toEqual([
        ["239.2.2.2:6000@r1", "active", null],
        ["239.2.2.3:6000@r2", "pending", "output interface r2 is down"],
      ]);
      await waitWorker(d, "r0", "running");
      expectAllArrived(await relayBurst(rt, { to: "239.1.1.1:5000@g0", sinkNs: s1.ns, listen: "239.2.2.2:6000@s0", count: 1_000 }), 1_000);

      const added = await d.json<{ rule: RuleView; warnings: string[] }>(["add", "--name", "later", "--from", "239.1.1.4:5000@r0", "--to", "239.2.2.4:6000@nosuch0", "--to", "239.2.2.4:6000@r1"]);
      expect(added.warnings).toEqual(["output interface nosuch0 does not exist"]);
      expect(added.rule.state).toBe("active");
      await waitWorker(d, "r0", "serving both rules", (w) => w.rules === 2);
      expectAllArrived(await relayBurst(rt, { to: "239.1.1.4:5000@g0", sinkNs: s1.ns, listen: "239.2.2.4:6000@s0", count: 1_000, stream: 2 }), 1_000);

      await ip(rt, rt.relay, ["link", "set", "r2", "up"]);
      await waitRule(d, "two", "with both outputs active", (r) => r.outputs.every((o) => o.state === "active"));
      await waitWorker(d, "r0", "holding the two-output table", (w) => w.rules === 2);
      expectAllArrived(await relayBurst(rt, { to: "239.1.1.1:5000@g0", sinkNs: s2.ns, listen: "239.2.2.3:6000@s0", count: 1_000, stream: 3 }), 1_000);
      expect(failureLines(d)).toEqual([]);
    },
    T,
  );

  test(
    "after netlink notifications overflow (supervisor stopped during 12000 link changes and r0 going down) a re-read leaves the rule pending and reports r0 down, and up forwards again",
    async () => {
      const rt = await setup("nl-overflow");
      const d = await startDaemon(rt, [{ name: "ovf", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }]);
      await waitWorker(d, "r0", "running");
      const sub = await helloClient(d.socket);
      try {
        await sub.call("events");
        // r0 goes down, then more notifications than the receive buffer (4 MiB, doubled by the
        // kernel) holds, while the supervisor cannot read: the kernel drops some and says so
        // (ENOBUFS). Link notifications are large (a few KiB each with their statistics) and an
        // MTU change costs the kernel O(1), unlike address additions whose cost grows with the
        // number already there (30,000 of those took over 120 s on a loaded 2-core machine).
        // An even number of changes leaves lo's MTU as it was.
        const lines = ["link set r0 down"];
        for (let i = 0; i < 12_000; i++) lines.push(`link set lo mtu ${i % 2 === 0 ? 60000 : 65536}`);
        const batch = dir!.file("overflow.batch", `${lines.join("\n")}\n`);
        process.kill(d.pid, "SIGSTOP");
        try {
          await rt.topo.exec(rt.relay, [IP, "-batch", batch], { check: true, timeoutMs: 120_000 });
        } finally {
          process.kill(d.pid, "SIGCONT");
        }
        const pending = await waitRule(d, "ovf", "pending after the re-read", (r) => r.state === "pending", 30_000);
        expect(pending.reasons).toEqual(["input interface r0 is down"]);
        // The stream reports the overflow and, once everything is re-read, what changed.
        const events: Record<string, any>[] = [];
        const deadline = Date.now() + 30_000;
        const isLinkDown = (e: Record<string, any>) => e.kind === "link" && e.type === "link-down" && e.interface === "r0";
        while (Date.now() < deadline && !events.some(isLinkDown)) {
          const line = await sub.nextLine(Math.max(1, deadline - Date.now())).catch(() => null);
          if (line === null) break;
          events.push((JSON.parse(line) as { event: Record<string, any> }).event);
        }
        const count = (f: (e: Record<string, any>) => boolean) => events.filter(f).length;
        note("overflow", {
          events: events.length,
          resyncs: count((e) => e.type === "resync"),
          link_changes: count((e) => e.kind === "link" && e.interface === "lo"),
          rule_events: events.filter((e) => e.kind === "rule").map((e) => e.state),
        });
        expect(count((e) => e.kind === "link" && e.type === "resync")).toBeGreaterThan(0);
        expect(sub.closed).toBe(false);
        expect(count(isLinkDown)).toBe(1);
        expect(await workersCli(d, "r0")).toEqual([]);
      } finally {
        sub.close();
      }
      const r1 = ruleNamed(await listCli(d), "ovf").outputs[0]!;
      expect([r1.state, r1.reason]).toEqual(["active", null]);

      await ip(rt, rt.relay, ["link", "set", "r0", "up"]);
      await waitRule(d, "ovf", "active", (r) => r.state === "active");
      await waitWorker(d, "r0", "running again");
      expectAllArrived(await relayBurst(rt, { to: "239.1.1.1:5000@g0", sinkNs: rt.sinks[0]!.ns, listen: "239.2.2.2:6000@s0", count: 2_000 }), 2_000);
    },
    T,
  );
});
