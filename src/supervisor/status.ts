// The answer to `status`: what an operator checks first (version, uptime, rules by state,
// workers by state, and every interface the rules use, with its link state).
import { IFF_UP } from "../native/abi.ts";
import type { LinkLookup } from "../rules/rule.ts";
import type { ConfigStatus, RuleView, StateStatus, Status, WorkerInfo } from "../control/responses.ts";
import { PROTOCOL_VERSION, VERSION } from "../version.ts";

export interface StatusInput {
  mode: Status["mode"];
  startedAt: Date;
  configFile: string | null;
  /** The daemon's config file, its last load and a refused reload (null: none, or `forward`). */
  config?: ConfigStatus;
  /** The state file, and whether it was set aside at start (null: none, `forward`). */
  state?: StateStatus;
  rules: RuleView[];
  workers: WorkerInfo[];
  lookup: LinkLookup;
}

/** The interface of "GROUP:PORT@IFACE" (null when the endpoint names none). */
function ifaceOf(endpoint: string): string | null {
  const at = endpoint.lastIndexOf("@");
  return at < 0 ? null : endpoint.slice(at + 1).split(",")[0]!;
}

export function buildStatus(o: StatusInput): Status {
  const rules = { total: o.rules.length, active: 0, pending: 0, error: 0, join_failed: 0 };
  for (const r of o.rules) rules[r.state === "join-failed" ? "join_failed" : r.state] += 1;
  // Worker processes (each serves the rings of several interfaces: one row per ring).
  const processes = new Map<number, WorkerInfo["state"]>();
  for (const w of o.workers) if (!processes.has(w.worker) || w.state === "running") processes.set(w.worker, w.state);
  const workers = { total: processes.size, starting: 0, running: 0, backoff: 0, stopping: 0 };
  for (const state of processes.values()) workers[state] += 1;
  const ifaces = new Map<string, { inputs: number; outputs: number; workers: number }>();
  const entry = (name: string) => {
    const e = ifaces.get(name) ?? { inputs: 0, outputs: 0, workers: 0 };
    ifaces.set(name, e);
    return e;
  };
  for (const r of o.rules) {
    const input = ifaceOf(r.input);
    if (input) entry(input).inputs += 1;
    for (const out of r.outputs) {
      const name = ifaceOf(out.to);
      if (name) entry(name).outputs += 1;
    }
  }
  for (const w of o.workers) entry(w.interface).workers += 1;
  const now = Date.now();
  return {
    version: VERSION,
    protocol: PROTOCOL_VERSION,
    mode: o.mode,
    pid: process.pid,
    started_at: o.startedAt.toISOString(),
    uptime_s: Math.round((now - o.startedAt.getTime()) / 100) / 10,
    config_file: o.configFile,
    config: o.config ?? null,
    state: o.state ?? null,
    rules,
    workers,
    interfaces: [...ifaces]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, e]) => {
        const link = o.lookup(name);
        return { name, state: !link ? "missing" : link.flags & IFF_UP ? "up" : "down", ...e };
      }),
  };
}
