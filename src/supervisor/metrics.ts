// The Prometheus text exposition (format 0.0.4) of the daemon's counters and states, built from
// the same totals `stats` reports, so a scrape and `stats --json` taken at the same moment
// agree. Names start with `mcrelay_`; counters end in `_total`; labels are few and bounded
// (rule, output, interface, reason, state). Rendering is one pass over the totals into an
// array of lines joined once: nothing is kept between scrapes.
import { PARSE_DROPS, WORKER_COUNTERS, type WorkerCounter } from "../native/abi.ts";
import type { WorkerInfo } from "./worker-pool.ts";
import type { InterfaceReport, RuleReport } from "./report.ts";

export type RuleState = "active" | "pending" | "error" | "join-failed";
export const RULE_STATES: readonly RuleState[] = ["active", "pending", "error", "join-failed"];

export interface MetricsInput {
  version: string;
  protocol: number;
  bun: string;
  rules: (RuleReport & { current: RuleState })[];
  interfaces: InterfaceReport[];
  workers: WorkerInfo[];
  startedAtS: number;
  /** The config file's state (null without --config): when it was last loaded, and whether the last reload was refused. */
  config: { loadedAtS: number; lastReloadOk: boolean } | null;
  /** The state file (null: none, `forward`): whether it was set aside at start because it did not parse. */
  state?: { setAside: boolean } | null;
}

/** Worker counters whose Prometheus name differs from the counter's (the rest: `mcrelay_interface_<name>_total`). */
const INTERFACE_NAMES: Partial<Record<WorkerCounter, string>> = {
  kernel_packets: "ring_packets",
  kernel_drops: "ring_drops",
  kernel_freezes: "ring_freezes",
};

/** Worker counters that describe the loop itself, not traffic: not exported. */
const INTERNAL: ReadonlySet<string> = new Set(["polls", "coalesced", "wakeups", "run_calls"]);

const HELP: Record<string, string> = {
  rx_frames: "Frames taken from the input ring (after the kernel filter).",
  rx_bytes: "Bytes of the frames taken from the input ring.",
  rx_blocks: "Runs of ring slots processed.",
  rx_truncated: "Frames received cut short (larger than a ring slot, no whole copy kept).",
  matched: "Frames that matched a rule.",
  no_match: "UDP frames for which no rule matched (group or port).",
  source_mismatch: "Frames for a rule's group and port from another source than the rule's.",
  ring_packets: "Packets the kernel queued to the ring (PACKET_STATISTICS).",
  ring_drops: "Packets the kernel dropped because the ring was full (PACKET_STATISTICS).",
  ring_freezes: "Times the ring's queue was frozen (PACKET_STATISTICS).",
  tx_packets: "Datagrams sent on all outputs.",
  tx_bytes: "Payload bytes sent on all outputs.",
  tx_errors: "Datagrams that could not be sent, all outputs.",
  tx_gso_sends: "UDP GSO sends (each carries several datagrams).",
  join_errors: "Failed multicast joins (IGMP or MLD) on the input interface.",
  ring_errors: "Ring errors (unexpected block states).",
};

/** Escapes a label value (backslash, double quote, newline). */
export function labelValue(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labels(pairs: Record<string, string | number>): string {
  const parts = Object.entries(pairs).map(([k, v]) => `${k}="${labelValue(String(v))}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

class Writer {
  readonly lines: string[] = [];
  family(name: string, type: "counter" | "gauge", help: string): void {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  }
  sample(name: string, l: Record<string, string | number>, value: number): void {
    this.lines.push(`${name}${labels(l)} ${Number.isFinite(value) ? value : 0}`);
  }
}

/** Prometheus name of an interface counter (`mcrelay_interface_ring_drops_total`). */
export function interfaceMetricName(counter: WorkerCounter): string {
  return `mcrelay_interface_${INTERFACE_NAMES[counter] ?? counter}_total`;
}

export const EXPORTED_INTERFACE_COUNTERS: readonly WorkerCounter[] = WORKER_COUNTERS.filter((c) => !INTERNAL.has(c));

export function renderMetrics(m: MetricsInput): string {
  const w = new Writer();
  w.family("mcrelay_build_info", "gauge", "Version of the daemon (always 1).");
  w.sample("mcrelay_build_info", { version: m.version, protocol: m.protocol, bun: m.bun }, 1);
  w.family("mcrelay_start_time_seconds", "gauge", "When the daemon started, seconds since the epoch.");
  w.sample("mcrelay_start_time_seconds", {}, m.startedAtS);
  // As Prometheus names its own: an alert on `== 0` catches a config file that no longer loads
  // while the daemon keeps running the rules loaded before it (status shows the problems).
  if (m.config) {
    w.family("mcrelay_config_last_reload_successful", "gauge", "0 when the last reload of the config file was refused (the rules loaded before still run), else 1.");
    w.sample("mcrelay_config_last_reload_successful", {}, m.config.lastReloadOk ? 1 : 0);
    w.family("mcrelay_config_last_reload_success_timestamp_seconds", "gauge", "When the config file was last loaded, at start or by a reload, seconds since the epoch.");
    w.sample("mcrelay_config_last_reload_success_timestamp_seconds", {}, m.config.loadedAtS);
  }

  // An alert on `== 1`: the daemon runs without the runtime rules it had saved (status names the file).
  if (m.state) {
    w.family("mcrelay_state_file_set_aside", "gauge", "1 when the state file did not parse at start and was set aside (the daemon started without runtime rules), else 0.");
    w.sample("mcrelay_state_file_set_aside", {}, m.state.setAside ? 1 : 0);
  }

  w.family("mcrelay_rule_state", "gauge", "1 for the rule's current state (active, pending, error, join-failed), 0 for the others.");
  for (const r of m.rules) for (const s of RULE_STATES) w.sample("mcrelay_rule_state", { rule: r.name, state: s }, r.current === s ? 1 : 0);
  w.family("mcrelay_rule_packets_total", "counter", "Packets matched by the rule.");
  for (const r of m.rules) w.sample("mcrelay_rule_packets_total", { rule: r.name }, r.packets);
  w.family("mcrelay_rule_bytes_total", "counter", "UDP payload bytes matched by the rule.");
  for (const r of m.rules) w.sample("mcrelay_rule_bytes_total", { rule: r.name }, r.bytes);
  w.family("mcrelay_rule_drops_total", "counter", "Datagrams of the rule not relayed, by reason (source_mismatch, own_source, loop_drops, cap_drops, output_errors).");
  for (const r of m.rules) for (const [reason, n] of Object.entries(r.drops ?? {})) w.sample("mcrelay_rule_drops_total", { rule: r.name, reason }, n);

  w.family("mcrelay_output_active", "gauge", "1 when the output forwards, 0 when it is pending (no interface, no address).");
  for (const r of m.rules) for (const o of r.outputs) w.sample("mcrelay_output_active", { rule: r.name, output: o.to }, o.state === "active" ? 1 : 0);
  w.family("mcrelay_output_packets_total", "counter", "Datagrams sent on the output.");
  for (const r of m.rules) for (const o of r.outputs) w.sample("mcrelay_output_packets_total", { rule: r.name, output: o.to }, o.packets);
  w.family("mcrelay_output_bytes_total", "counter", "Payload bytes sent on the output.");
  for (const r of m.rules) for (const o of r.outputs) w.sample("mcrelay_output_bytes_total", { rule: r.name, output: o.to }, o.bytes);
  w.family("mcrelay_output_send_errors_total", "counter", "Datagrams not sent on the output, by errno (reason).");
  for (const r of m.rules) {
    for (const o of r.outputs) for (const [reason, n] of Object.entries(o.send_errors)) w.sample("mcrelay_output_send_errors_total", { rule: r.name, output: o.to, reason }, n);
  }

  for (const c of EXPORTED_INTERFACE_COUNTERS) {
    const name = interfaceMetricName(c);
    w.family(name, "counter", HELP[INTERFACE_NAMES[c] ?? c] ?? `Worker counter ${c}, summed over the interface's workers.`);
    for (const i of m.interfaces) w.sample(name, { interface: i.interface }, i.counters[c]);
  }
  w.family("mcrelay_interface_parse_drops_total", "counter", "Frames dropped by the parser, by reason.");
  for (const i of m.interfaces) for (const reason of PARSE_DROPS) w.sample("mcrelay_interface_parse_drops_total", { interface: i.interface, reason }, i.parse_drops[reason]);

  w.family("mcrelay_worker_up", "gauge", "1 when the ring's worker runs with the ring's table applied.");
  for (const x of m.workers) w.sample("mcrelay_worker_up", { interface: x.interface, slot: x.slot }, x.state === "running" && x.applied_hash === x.table_hash ? 1 : 0);
  // A worker process serves the rings of several interfaces and its restarts are the process's:
  // one series per process (`worker`, as `mcrelay workers` numbers it), so a sum over the
  // series counts each restart once. Its rows in `workers` all carry the same values.
  const procs = new Map<number, WorkerInfo>();
  for (const x of m.workers) if (!procs.has(x.worker)) procs.set(x.worker, x);
  const byWorker = [...procs.values()].sort((a, b) => a.worker - b.worker);
  w.family("mcrelay_worker_restarts_total", "counter", "Times the worker process was restarted after it exited or failed.");
  for (const x of byWorker) w.sample("mcrelay_worker_restarts_total", { worker: x.worker }, x.restarts);
  w.family("mcrelay_worker_recycled_total", "counter", "Times the worker process was replaced on purpose (its CPU changed, or to renew closed packet sockets): not failures.");
  for (const x of byWorker) w.sample("mcrelay_worker_recycled_total", { worker: x.worker }, x.recycled);
  w.family("mcrelay_worker_backoff_seconds", "gauge", "Current restart backoff of the worker process (0 when running).");
  for (const x of byWorker) w.sample("mcrelay_worker_backoff_seconds", { worker: x.worker }, x.backoff_ms / 1000);
  w.family("mcrelay_worker_drift_repairs_total", "counter", "Times the ring's table in its worker differed from the wanted one and was resent.");
  for (const x of m.workers) w.sample("mcrelay_worker_drift_repairs_total", { interface: x.interface, slot: x.slot }, x.drift_repairs);
  w.lines.push("");
  return w.lines.join("\n");
}
