// `run --metrics`: /metrics read by the reference parser (prometheus_client) and by a strict
// reader, its counters equal to `stats --json` and to what a sink received; /readyz 503 while a
// rule's input interface is missing and 200 once it appears; /healthz 200; scraping ten times a
// second while a stream runs loses no packet.
import { writeFileSync } from "node:fs";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, mcrelayCommand, note, type RelayTopology } from "../support/relay-harness.ts";
import { helloClient, TempDir, TestDaemon, burst, killBackground, ruleNamed, sink, sinkReport, startStream, stopStream, waitFor, type StatsResult } from "../support/daemon-harness.ts";
import { METRICS_CACHE_MS } from "../../src/supervisor/http.ts";
import { httpGet, parseExposition, parseWithPython, sampleOf, type Family } from "../support/prom.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 180_000;
const LISTEN = "127.0.0.1:9464";
const URL_BASE = `http://${LISTEN}`;
const IP = "ip";

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir | undefined;
let daemon: TestDaemon | undefined;

async function start(rules: object[]): Promise<TestDaemon> {
  dir = new TempDir();
  const configPath = dir.file("mcrelay.json5", JSON.stringify({ rules }));
  daemon = await TestDaemon.start(rt, dir, { configPath, extraArgs: ["--metrics", LISTEN] });
  return daemon;
}

describe_netns("metrics and health endpoints (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("metrics");
    rt = await buildRelayTopology(topo, { label: "metrics", sinks: 1 });
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

  test(
    "/metrics parses with prometheus_client and a strict reader, and its counters equal stats --json and the sink",
    async () => {
      const s = rt.sinks[0]!;
      const d = await start([{ name: "cam.1", from: "239.1.1.1:5000@r0", to: [`239.2.2.1:6001@${s.relayIf}`] }]);
      const got = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: s.ns, listen: `239.2.2.1:6001@${s.ifname}`, count: 3000, ratePps: 5000 });
      expect(got.sink.totals.received).toBe(3000);
      // Nothing flows now: both readings see the same counters.
      const stats = await d.json<StatsResult>(["stats"]);
      const page = await httpGet(rt.topo, rt.relay, `${URL_BASE}/metrics`);
      expect(page.status).toBe(200);
      const fams = parseExposition(page.body);
      for (const f of fams.values()) {
        expect(f.name.startsWith("mcrelay_")).toBe(true);
        if (f.type === "counter") expect(f.name.endsWith("_total")).toBe(true);
      }
      const rule = ruleNamed(stats.rules, "cam.1");
      expect(rule.packets).toBe(3000);
      expect(sampleOf(fams, "mcrelay_rule_packets_total", { rule: "cam.1" })).toBe(rule.packets);
      expect(sampleOf(fams, "mcrelay_rule_bytes_total", { rule: "cam.1" })).toBe(rule.bytes);
      expect(sampleOf(fams, "mcrelay_rule_state", { rule: "cam.1", state: "active" })).toBe(1);
      expect(sampleOf(fams, "mcrelay_rule_state", { rule: "cam.1", state: "pending" })).toBe(0);
      const out = rule.outputs[0]!;
      expect(sampleOf(fams, "mcrelay_output_packets_total", { rule: "cam.1", output: out.to })).toBe(out.packets);
      expect(sampleOf(fams, "mcrelay_output_bytes_total", { rule: "cam.1", output: out.to })).toBe(out.bytes);
      expect(out.packets).toBe(3000);
      const iface = stats.interfaces.find((i) => i.interface === "r0")!;
      expect(sampleOf(fams, "mcrelay_interface_rx_frames_total", { interface: "r0" })).toBe(iface.counters.rx_frames!);
      expect(sampleOf(fams, "mcrelay_interface_matched_total", { interface: "r0" })).toBe(iface.counters.matched!);
      expect(sampleOf(fams, "mcrelay_interface_ring_drops_total", { interface: "r0" })).toBe(iface.counters.kernel_drops!);
      for (const [reason, n] of Object.entries(iface.parse_drops)) {
        expect(sampleOf(fams, "mcrelay_interface_parse_drops_total", { interface: "r0", reason })).toBe(n);
      }
      expect(sampleOf(fams, "mcrelay_worker_up", { interface: "r0", slot: "0" })).toBe(1);
      expect(sampleOf(fams, "mcrelay_worker_restarts_total", { worker: "0" })).toBe(stats.workers[0]!.restarts);
      expect(fams.get("mcrelay_build_info")!.samples[0]!.labels.version).toMatch(/^\d+\.\d+\.\d+/);

      // The reference parser reads the same page (fetched again: counters unchanged).
      const py = await parseWithPython(rt.topo, rt.relay, `${URL_BASE}/metrics`);
      const byName = new Map<string, Family>(py.map((f) => [f.name, f]));
      // prometheus_client names a counter family without `_total` and its samples with it.
      const pyRule = byName.get("mcrelay_rule_packets")!;
      expect(pyRule.type).toBe("counter");
      expect(pyRule.samples).toEqual([{ name: "mcrelay_rule_packets_total", labels: { rule: "cam.1" }, value: 3000 }]);
      expect(byName.get("mcrelay_rule_state")!.type).toBe("gauge");
      const pySamples = py.reduce((n, f) => n + f.samples.length, 0);
      const tsSamples = [...fams.values()].reduce((n, f) => n + f.samples.length, 0);
      expect(pySamples).toBe(tsSamples);
      note("metrics", { families: fams.size, samples: tsSamples, bytes: page.body.length });
    },
    T,
  );

  test(
    "/readyz is 503 naming the pending rule while its input interface is missing, and 200 once it appears; /healthz is 200",
    async () => {
      const s = rt.sinks[0]!;
      await start([
        { name: "here", from: "239.1.1.2:5000@r0", to: [`239.2.2.2:6002@${s.relayIf}`] },
        { name: "late", from: "239.1.1.3:5000@late0", to: [`239.2.2.3:6003@${s.relayIf}`] },
      ]);
      const before = await httpGet(rt.topo, rt.relay, `${URL_BASE}/readyz`);
      expect(before.status).toBe(503);
      expect(before.body).toContain("rule late is pending");
      expect(before.body).toContain("late0");
      expect(before.body).not.toContain("rule here");
      const health = await httpGet(rt.topo, rt.relay, `${URL_BASE}/healthz`);
      expect(health.status).toBe(200);
      const metrics = parseExposition((await httpGet(rt.topo, rt.relay, `${URL_BASE}/metrics`)).body);
      expect(sampleOf(metrics, "mcrelay_rule_state", { rule: "late", state: "pending" })).toBe(1);

      await rt.topo.exec(rt.relay, [IP, "link", "add", "late0", "type", "veth", "peer", "name", "late1"], { check: true });
      await rt.topo.exec(rt.relay, [IP, "link", "set", "late1", "up"], { check: true });
      await rt.topo.exec(rt.relay, [IP, "link", "set", "late0", "up"], { check: true });
      const after = await waitFor("readyz 200", async () => {
        const r = await httpGet(rt.topo, rt.relay, `${URL_BASE}/readyz`);
        return r.status === 200 ? r : undefined;
      }, 20_000, 200);
      expect(after.body).toBe("ready\n");
      await rt.topo.exec(rt.relay, [IP, "link", "del", "late0"], { check: true });
      const notFound = await httpGet(rt.topo, rt.relay, `${URL_BASE}/nosuch`);
      expect(notFound.status).toBe(404);
    },
    T,
  );

  test(
    "a refused reload shows in /metrics: last_reload_successful 0 with the last good load's time, 1 again after a good reload",
    async () => {
      const s = rt.sinks[0]!;
      const good = { name: "cfg", from: "239.1.1.5:5000@r0", to: [`239.2.2.5:6005@${s.relayIf}`] };
      const d = await start([good]);
      const scrape = async () => parseExposition((await httpGet(rt.topo, rt.relay, `${URL_BASE}/metrics`)).body);
      const first = await scrape();
      expect(sampleOf(first, "mcrelay_config_last_reload_successful", {})).toBe(1);
      const loadedAt = sampleOf(first, "mcrelay_config_last_reload_success_timestamp_seconds", {})!;
      expect(Math.abs(loadedAt - Date.now() / 1000)).toBeLessThan(120);

      writeFileSync(d.configPath!, JSON.stringify({ rules: [{ ...good, bogus: true }] }));
      expect((await d.cli(["reload"])).exitCode).toBe(6);
      await Bun.sleep(METRICS_CACHE_MS + 100); // the page is a rendering up to 1 s old
      const refused = await scrape();
      expect(sampleOf(refused, "mcrelay_config_last_reload_successful", {})).toBe(0);
      expect(sampleOf(refused, "mcrelay_config_last_reload_success_timestamp_seconds", {})).toBe(loadedAt);

      await Bun.sleep(1100); // the timestamp has a resolution of one second
      writeFileSync(d.configPath!, JSON.stringify({ rules: [good] }));
      expect((await d.cli(["reload"])).exitCode).toBe(0);
      const fixed = await scrape();
      expect(sampleOf(fixed, "mcrelay_config_last_reload_successful", {})).toBe(1);
      expect(sampleOf(fixed, "mcrelay_config_last_reload_success_timestamp_seconds", {})!).toBeGreaterThan(loadedAt);
    },
    T,
  );

  test(
    "scraping /metrics ten times a second while a stream runs loses no packet",
    async () => {
      const s = rt.sinks[0]!;
      await start([{ name: "busy", from: "239.1.1.4:5000@r0", to: [`239.2.2.4:6004@${s.relayIf}`] }]);
      const receiver = await sink(rt, s.ns, `239.2.2.4:6004@${s.ifname}`, [], 2);
      const stream = startStream(rt, { to: "239.1.1.4:5000@g0", ratePps: 20_000, stream: 4 });
      // A scraper inside the relay namespace: 10 Hz for 8 s, every answer checked.
      const script = `let ok = 0, bad = 0; const end = Date.now() + 8000; while (Date.now() < end) { const t = Date.now(); const r = await fetch("${URL_BASE}/metrics"); const b = await r.text(); if (r.status === 200 && b.includes("mcrelay_rule_packets_total")) ok++; else bad++; await Bun.sleep(Math.max(0, 100 - (Date.now() - t))); } console.log(JSON.stringify({ ok, bad }));`;
      const scraped = await rt.topo.exec(rt.relay, [process.execPath, "-e", script], { timeoutMs: 60_000, check: true });
      const gen = await stopStream(stream);
      const report = await sinkReport(receiver);
      const scrapes = JSON.parse(scraped.stdout) as { ok: number; bad: number };
      note("scrape-10hz", { scrapes, sent: gen.sent, received: report.totals.received, lost: report.totals.lost });
      expect(scrapes.bad).toBe(0);
      expect(scrapes.ok).toBeGreaterThanOrEqual(60);
      expect(report.totals.received).toBe(gen.sent);
      expect(report.totals.duplicates).toBe(0);
    },
    T,
  );

  test(
    "stats --watch: one JSON line per interval with --json, plain blocks in a pipe, and on a terminal a screen redrawn in place with rules sorted by pps",
    async () => {
      const s = rt.sinks[0]!;
      const d = await start([
        { name: "slow", from: "239.1.1.6:5000@r0", to: [`239.2.2.6:6006@${s.relayIf}`] },
        { name: "fast", from: "239.1.1.7:5000@r0", to: [`239.2.2.7:6007@${s.relayIf}`] },
      ]);
      const slow = startStream(rt, { to: "239.1.1.6:5000@g0", ratePps: 200, stream: 6 });
      const fast = startStream(rt, { to: "239.1.1.7:5000@g0", ratePps: 3000, stream: 7 });
      await waitFor("both rates measured", async () => {
        const st = await d.json<StatsResult>(["stats"]);
        return st.rules.every((r) => r.pps > 0) || undefined;
      }, 20_000, 300);
      const cli = [...mcrelayCommand("bun"), "stats", "--socket", d.socket];
      const json = await rt.topo.exec(rt.relay, ["timeout", "-s", "INT", "3", ...cli, "--watch", "--json", "--interval", "0.5"], { timeoutMs: 30_000 });
      const docs = json.stdout.trim().split("\n").map((l) => JSON.parse(l) as StatsResult & { time: string });
      expect(docs.length).toBeGreaterThanOrEqual(3);
      for (const doc of docs) expect(doc.rules.map((r) => r.name).sort()).toEqual(["fast", "slow"]);
      expect(new Set(docs.map((x) => x.time)).size).toBe(docs.length);

      const plain = await rt.topo.exec(rt.relay, ["timeout", "-s", "INT", "2", ...cli, "--watch", "--interval", "0.5"], { timeoutMs: 30_000 });
      expect(plain.stdout).not.toContain("\u001b[");
      expect(plain.stdout.match(/^--- \d{4}-/gm)!.length).toBeGreaterThanOrEqual(2);

      // A terminal: script(1) gives the command a pty.
      const line = ["timeout", "-s", "INT", "3", ...cli, "--watch", "--interval", "0.5"].map((x) => `'${x}'`).join(" ");
      const tty = await rt.topo.exec(rt.relay, ["script", "-qfec", line, "/dev/null"], { timeoutMs: 30_000, env: { COLUMNS: "120", LINES: "30" } });
      const screens = tty.stdout.split("\u001b[H\u001b[J").filter((x) => x.trim());
      expect(screens.length).toBeGreaterThanOrEqual(3);
      const last = screens[screens.length - 1]!;
      expect(last).toContain("RULE");
      expect(last.indexOf("\nfast")).toBeGreaterThan(0);
      expect(last.indexOf("\nfast")).toBeLessThan(last.indexOf("\nslow"));
      await stopStream(slow);
      await stopStream(fast);
    },
    T,
  );

  test(
    "a reload that moves the file's `metrics` says it takes effect at the next start (the listener stays), and a refused reload with 150 problems keeps 100 of them and a count",
    async () => {
      dir = new TempDir();
      const s = rt.sinks[0]!;
      const rule = { name: "cam.1", from: "239.1.1.1:5000@r0", to: [`239.2.2.1:6001@${s.relayIf}`] };
      const configPath = dir.file("mcrelay.json5", JSON.stringify({ metrics: LISTEN, rules: [rule] }));
      const d = (daemon = await TestDaemon.start(rt, dir, { configPath }));
      expect((await httpGet(rt.topo, rt.relay, `${URL_BASE}/healthz`)).status).toBe(200);

      writeFileSync(configPath, JSON.stringify({ metrics: "127.0.0.1:9465", rules: [rule] }));
      const moved = await d.json<{ warnings: string[] }>(["reload"]);
      expect(moved.warnings).toContain(`metrics: 127.0.0.1:9465 takes effect at the next start; the HTTP listener stays on ${LISTEN} until then`);
      expect((await httpGet(rt.topo, rt.relay, `${URL_BASE}/healthz`)).status).toBe(200);
      // Back to the address in use: nothing to say.
      writeFileSync(configPath, JSON.stringify({ metrics: LISTEN, rules: [rule] }));
      expect((await d.json<{ warnings: string[] }>(["reload"])).warnings).toEqual([]);

      const bad = Array.from({ length: 150 }, (_, i) => ({ ...rule, name: `bad.${i}`, from: "not-an-endpoint" }));
      writeFileSync(configPath, JSON.stringify({ metrics: LISTEN, rules: bad }));
      const refused = await d.cli(["reload", "--json"]);
      expect(refused.exitCode).toBe(6);
      const status = await d.json<{ config: { reload_error: { message: string; problems: { message: string }[] } } }>(["status"]);
      const failure = status.config.reload_error;
      expect(failure.problems.length).toBe(101);
      expect(failure.problems.at(-1)!.message).toBe(`and 50 more problems: \`mcrelay config check ${configPath}\` lists them all`);
      expect(failure.message.split("\n").length).toBe(101);
      const page = parseExposition((await httpGet(rt.topo, rt.relay, `${URL_BASE}/metrics`)).body);
      expect(sampleOf(page, "mcrelay_config_last_reload_successful", {})).toBe(0);
    },
    T,
  );

  test(
    "run --metrics with a bad address is a usage error naming the flag",
    async () => {
      const r = await rt.topo.exec(rt.relay, [...mcrelayCommand("bun"), "run", "--metrics", "localhost:99999", "--socket", "/tmp/mcr-none.sock"], { timeoutMs: 30_000 });
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toContain("--metrics");
    },
    T,
  );

  test(
    "1,000 rules of distinct names added and removed: /metrics stays the size it was, and the rule kept beside them still counts",
    async () => {
      const s = rt.sinks[0]!;
      await start([{ name: "kept", from: "239.1.1.7:5000@r0", to: [`239.2.2.7:6007@${s.relayIf}`] }]);
      const page = async () => (await httpGet(rt.topo, rt.relay, `${URL_BASE}/metrics`)).body;
      const before = await page();
      const c = await helloClient(daemon!.socket);
      const started = performance.now();
      for (let i = 0; i < 1000; i++) {
        const name = `churn-${i}`;
        await c.call("add", { rule: { name, from: `239.5.${(i >> 8) + 1}.${i & 255}:5000@r0`, to: [`239.6.${(i >> 8) + 1}.${i & 255}:7000@${s.relayIf}`] } }, 20_000);
        await c.call("remove", { rule: name }, 20_000);
      }
      c.close();
      note("churn", { rules: 1000, seconds: Math.round((performance.now() - started) / 100) / 10 });
      // The daemon's 1 s check lets the removed rules' counts go; /metrics is rendered at most once a second.
      await Bun.sleep(METRICS_CACHE_MS + 1_100);
      const after = await page();
      const fams = parseExposition(after);
      expect([...new Set(fams.get("mcrelay_rule_packets_total")!.samples.map((x) => x.labels.rule))]).toEqual(["kept"]);
      expect([...new Set(fams.get("mcrelay_interface_rx_frames_total")!.samples.map((x) => x.labels.interface))]).toEqual(["r0"]);
      expect(after.split("\n").length).toBe(before.split("\n").length);
      expect(after.length).toBeLessThan(before.length + 200);
      const b = await burst(rt, { to: "239.1.1.7:5000@g0", sinkNs: s.ns, listen: `239.2.2.7:6007@${s.ifname}`, count: 200 });
      expect(b.sink.totals).toMatchObject({ received: 200, lost: 0 });
    },
    T,
  );

  test(
    "a worker serving two interfaces restarted once is one restart in /metrics, and stays one after the workers go from 2 to 1 and back",
    async () => {
      const s = rt.sinks[0]!;
      const rules = [
        { name: "a", from: "239.1.1.8:5000@r0", to: [`239.2.2.8:6008@${s.relayIf}`] },
        { name: "b", from: "239.1.1.9:5000@r1", to: ["239.2.2.9:6009@r0"] },
      ];
      const d = await start(rules);
      const setWorkers = async (workers: number) => {
        writeFileSync(d.configPath!, JSON.stringify({ workers, rules }));
        expect((await d.cli(["reload"])).exitCode).toBe(0);
      };
      type Row = { interface: string; worker: number; pid: number | null; state: string; restarts: number };
      const rows = async () => (await d.json<{ workers: Row[] }>(["workers"])).workers;
      const running = (want: number) =>
        waitFor(`${want} workers running`, async () => {
          const r = await rows();
          return r.length === want * 2 && r.every((x) => x.state === "running") ? r : undefined;
        }, 20_000, 100);
      await setWorkers(2);
      const victim = (await running(2)).find((x) => x.worker === 1)!.pid!;
      process.kill(victim, "SIGKILL");
      await waitFor("worker 1 restarted", async () => {
        const r = await rows();
        return r.filter((x) => x.worker === 1).every((x) => x.restarts === 1 && x.state === "running" && x.pid !== victim) ? r : undefined;
      }, 20_000, 100);
      const restarts = async () => {
        await Bun.sleep(METRICS_CACHE_MS + 100);
        const f = parseExposition((await httpGet(rt.topo, rt.relay, `${URL_BASE}/metrics`)).body).get("mcrelay_worker_restarts_total")!;
        return f.samples.map((x) => [x.labels, x.value]);
      };
      // Worker 1 serves a ring of r0 and one of r1: one series, one restart.
      expect((await rows()).filter((x) => x.worker === 1).map((x) => x.interface).sort()).toEqual(["r0", "r1"]);
      expect(await restarts()).toEqual([[{ worker: "0" }, 0], [{ worker: "1" }, 1]]);
      // Worker 1 stopped (one worker needed), then made again: its count goes on, in both views.
      await setWorkers(1);
      await running(1);
      expect(await restarts()).toEqual([[{ worker: "0" }, 0]]);
      await setWorkers(2);
      const again = await running(2);
      expect(again.filter((x) => x.worker === 1).map((x) => x.restarts)).toEqual([1, 1]);
      expect(await restarts()).toEqual([[{ worker: "0" }, 0], [{ worker: "1" }, 1]]);
    },
    T,
  );
});
