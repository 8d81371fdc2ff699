import { describe, expect, test } from "bun:test";
import { parseListen } from "../../src/config/listen.ts";
import { parseConfig } from "../../src/config/file.ts";
import { renderMetrics, interfaceMetricName, EXPORTED_INTERFACE_COUNTERS } from "../../src/supervisor/metrics.ts";
import { PARSE_DROPS, WORKER_COUNTERS } from "../../src/native/abi.ts";
import type { MetricsInput } from "../../src/supervisor/metrics.ts";
import { parseExposition, sampleOf } from "../support/prom.ts";

const zero = <K extends string>(names: readonly K[]) => Object.fromEntries(names.map((n) => [n, 0])) as Record<K, number>;

function input(): MetricsInput {
  return {
    version: "1.2.3",
    protocol: 1,
    bun: "1.4.5",
    startedAtS: 1_700_000_000,
    config: null,
    rules: [
      {
        name: "a",
        id: "1",
        origin: "config",
        input: "239.1.1.1:5000@eth0",
        source: null,
        vlan: null,
        drops: { source_mismatch: 0, own_source: 0, cap_drops: 0, loop_drops: 0, output_errors: 0 },
        max_pps: null,
        loop_guard: true,
        state: "active" as const,
        current: "active" as const,
        reasons: [],
        packets: 10,
        bytes: 2000,
        pps: 0,
        bps: 0,
        outputs: [
          { to: "239.2.2.2:6000@eth1", state: "active" as const, reason: null, ttl: 8, dscp: "copy" as const, gso: true, packets: 9, bytes: 1800, pps: 0, bps: 0, send_errors: { ENOBUFS: 1 } },
          { to: 'weird"\\\nname', state: "pending" as const, reason: "no interface", ttl: 8, dscp: "copy" as const, gso: true, packets: 0, bytes: 0, pps: 0, bps: 0, send_errors: {} as Record<string, number> },
        ],
      },
    ],
    interfaces: [{ interface: "eth0", counters: { ...zero(WORKER_COUNTERS), rx_frames: 12, kernel_drops: 3 }, parse_drops: { ...zero(PARSE_DROPS), ipv4_fragment: 2 } }],
    workers: [
      {
        interface: "eth0", slot: 0, workers_on_interface: 1, worker: 0, position: 0, ifindex: 2, pid: 5, state: "running" as const, uptime_s: 1, restarts: 2, recycled: 3, consecutive_failures: 0,
        backoff_ms: 0, drift_repairs: 0, table_hash: "h", applied_hash: "h", rules: 1, last_error: null, ring: null, confinement: null,
      },
    ],
  };
}

describe("metrics exposition", () => {
  test("a worker process serving two interfaces has one restarts series: a sum over series counts each restart once", () => {
    const m = input();
    const row = m.workers[0]!;
    // Worker 0 serves eth0 and eth1 (two rows, the process's values on both); worker 1 a second ring of eth1.
    m.workers = [row, { ...row, interface: "eth1", position: 1 }, { ...row, interface: "eth1", slot: 1, worker: 1, restarts: 5, recycled: 0, backoff_ms: 800 }];
    const fams = parseExposition(renderMetrics(m));
    for (const f of ["mcrelay_worker_restarts_total", "mcrelay_worker_recycled_total", "mcrelay_worker_backoff_seconds"]) {
      expect(fams.get(f)!.samples.map((s) => s.labels)).toEqual([{ worker: "0" }, { worker: "1" }]);
    }
    expect(fams.get("mcrelay_worker_restarts_total")!.samples.reduce((n, s) => n + s.value, 0)).toBe(2 + 5);
    expect(sampleOf(fams, "mcrelay_worker_backoff_seconds", { worker: "1" })).toBe(0.8);
    // Per ring: up and drift repairs keep interface and slot.
    expect(fams.get("mcrelay_worker_up")!.samples.length).toBe(3);
    expect(fams.get("mcrelay_worker_drift_repairs_total")!.samples.map((s) => s.labels)).toEqual([
      { interface: "eth0", slot: "0" },
      { interface: "eth1", slot: "0" },
      { interface: "eth1", slot: "1" },
    ]);
  });

  test("every family is mcrelay_-prefixed, counters end in _total, label values are escaped and read back", () => {
    const text = renderMetrics(input());
    const fams = parseExposition(text);
    for (const f of fams.values()) {
      expect(f.name.startsWith("mcrelay_")).toBe(true);
      expect(f.type === "counter").toBe(f.name.endsWith("_total"));
    }
    expect(sampleOf(fams, "mcrelay_rule_packets_total", { rule: "a" })).toBe(10);
    expect(sampleOf(fams, "mcrelay_output_send_errors_total", { output: "239.2.2.2:6000@eth1", reason: "ENOBUFS" })).toBe(1);
    expect(sampleOf(fams, "mcrelay_output_active", { output: 'weird"\\\nname' })).toBe(0);
    expect(sampleOf(fams, "mcrelay_interface_ring_drops_total", { interface: "eth0" })).toBe(3);
    expect(sampleOf(fams, "mcrelay_interface_parse_drops_total", { interface: "eth0", reason: "ipv4_fragment" })).toBe(2);
    expect(sampleOf(fams, "mcrelay_worker_restarts_total", { worker: "0" })).toBe(2);
    expect(sampleOf(fams, "mcrelay_worker_recycled_total", { worker: "0" })).toBe(3);
    expect(sampleOf(fams, "mcrelay_rule_state", { rule: "a", state: "error" })).toBe(0);
    expect(text).toContain('output="weird\\"\\\\\\nname"');
  });

  test("the config file's reload state: successful 1/0 and when it last loaded; no family without a config file", () => {
    const ok = parseExposition(renderMetrics({ ...input(), config: { loadedAtS: 1_700_000_100, lastReloadOk: true } }));
    expect(sampleOf(ok, "mcrelay_config_last_reload_successful", {})).toBe(1);
    expect(sampleOf(ok, "mcrelay_config_last_reload_success_timestamp_seconds", {})).toBe(1_700_000_100);
    const refused = parseExposition(renderMetrics({ ...input(), config: { loadedAtS: 1_700_000_100, lastReloadOk: false } }));
    expect(sampleOf(refused, "mcrelay_config_last_reload_successful", {})).toBe(0);
    const none = parseExposition(renderMetrics(input()));
    expect(none.has("mcrelay_config_last_reload_successful")).toBe(false);
  });

  test("the state file set aside at start: 1, else 0; no family without a state file (forward)", () => {
    const aside = parseExposition(renderMetrics({ ...input(), state: { setAside: true } }));
    expect(sampleOf(aside, "mcrelay_state_file_set_aside", {})).toBe(1);
    const loaded = parseExposition(renderMetrics({ ...input(), state: { setAside: false } }));
    expect(sampleOf(loaded, "mcrelay_state_file_set_aside", {})).toBe(0);
    expect(parseExposition(renderMetrics(input())).has("mcrelay_state_file_set_aside")).toBe(false);
  });

  test("every exported worker counter has its own family", () => {
    const fams = parseExposition(renderMetrics(input()));
    for (const c of EXPORTED_INTERFACE_COUNTERS) expect(fams.has(interfaceMetricName(c))).toBe(true);
    expect(fams.has("mcrelay_interface_polls_total")).toBe(false);
  });
});

describe("listen address", () => {
  test("IPv4 and bracketed IPv6 with a port are accepted", () => {
    expect(parseListen("127.0.0.1:9464")).toEqual({ host: "127.0.0.1", port: 9464 });
    expect(parseListen("[::1]:9464")).toEqual({ host: "::1", port: 9464 });
  });
  test("a name, a missing port or a port out of range is refused with the reason", () => {
    expect(parseListen("localhost:9464")).toContain("not an IP address");
    expect(parseListen("127.0.0.1")).toContain("is not ADDRESS:PORT");
    expect(parseListen("127.0.0.1:0")).toContain("1-65535");
    expect(parseListen("::1:80")).toContain("not an IP address");
  });
  test("the config key `metrics` is validated and names its field", () => {
    expect(parseConfig(`{ metrics: "0.0.0.0:9100" }`, "m").metrics).toEqual({ host: "0.0.0.0", port: 9100 });
    expect(() => parseConfig(`{ metrics: "0.0.0.0" }`, "m")).toThrow("metrics");
  });
});
