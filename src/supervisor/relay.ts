// The supervisor's forwarding core, shared by the one-shot `forward` and the daemon: one worker
// per input interface, each given the complete table of its interface's rules, and counters
// collected per rule and per output.
import { logger } from "../log.ts";
import { linkQuery } from "../native/lib.ts";
import type { LinkInfo } from "../native/abi.ts";
import { NativeError } from "../errors.ts";
import { resolveRule, type Rule } from "../rules/rule.ts";
import { tableHash } from "../rules/wire.ts";
import type { DataplaneSnapshot } from "../stats/decode.ts";
import type { WireRule } from "../worker/messages.ts";
import { WorkerHandle } from "./worker-handle.ts";
import { formatEndpoint } from "../config/endpoint.ts";

const log = logger("relay");

export function lookupLink(ifname: string): LinkInfo | null {
  try {
    return linkQuery(ifname);
  } catch (err) {
    if (err instanceof NativeError && (err.code === "ENODEV" || err.code === "ENXIO")) return null;
    throw err;
  }
}

export interface OutputReport {
  to: string;
  ttl: number;
  packets: number;
  bytes: number;
  send_errors: Record<string, number>;
}

export interface RuleReport {
  name: string;
  id: string;
  input: string;
  state: "active" | "pending";
  pending_reasons: string[];
  packets: number;
  bytes: number;
  outputs: OutputReport[];
}

export interface WorkerReport {
  interface: string;
  pid: number;
  counters: DataplaneSnapshot["worker"];
  parse_drops: DataplaneSnapshot["parseDrops"];
  ring: Record<string, number>;
}

export interface RelayReport {
  rules: RuleReport[];
  workers: WorkerReport[];
}

export class Relay {
  readonly #rules: Rule[] = [];
  readonly #workers = new Map<string, WorkerHandle>();
  readonly #pending = new Map<bigint, string[]>();
  readonly #final = new Map<string, DataplaneSnapshot>();
  readonly #info = new Map<string, { pid: number; ring: Record<string, number> }>();
  #generation = 0;

  /** Starts workers for the rules' input interfaces and applies their tables. */
  async start(rules: Rule[]): Promise<void> {
    this.#rules.push(...rules);
    const byIface = new Map<string, WireRule[]>();
    for (const rule of rules) {
      const resolved = resolveRule(rule, lookupLink);
      this.#pending.set(rule.id, resolved.pending);
      if (!resolved.wire) {
        log.warn(`rule ${rule.name} is pending: ${resolved.pending.join("; ")}`);
        continue;
      }
      const list = byIface.get(rule.input.iface) ?? [];
      list.push(resolved.wire);
      byIface.set(rule.input.iface, list);
    }
    for (const [ifname, wire] of byIface) {
      const link = lookupLink(ifname)!;
      const worker = await WorkerHandle.start({ ifname, link });
      this.#workers.set(ifname, worker);
      this.#info.set(ifname, { pid: worker.pid, ring: worker.ring });
      this.#generation += 1;
      await worker.applyTable(wire, this.#generation, tableHash(wire));
      for (const rule of rules.filter((r) => r.input.iface === ifname)) {
        log.info(`forwarding ${rule.name}: ${formatEndpoint(rule.input)} -> ${rule.outputs.map((o) => formatEndpoint(o.to)).join(", ")}`);
      }
    }
  }

  get workerCount(): number {
    return this.#workers.size;
  }

  async report(): Promise<RelayReport> {
    const snapshots = new Map<string, DataplaneSnapshot>(this.#final);
    for (const [ifname, w] of this.#workers) snapshots.set(ifname, await w.stats());
    return this.#buildReport(snapshots);
  }

  /** Stops every worker, keeping their final counters for `report`. */
  async stop(): Promise<RelayReport> {
    const stops = [...this.#workers].map(async ([ifname, w]) => {
      const final = await w.stop();
      if (final) this.#final.set(ifname, final);
    });
    await Promise.all(stops);
    this.#workers.clear();
    return this.#buildReport(this.#final);
  }

  #buildReport(snapshots: Map<string, DataplaneSnapshot>): RelayReport {
    const rules: RuleReport[] = this.#rules.map((rule) => {
      const snap = snapshots.get(rule.input.iface);
      const counters = snap?.rules.find((r) => r.id === rule.id.toString());
      const pending = this.#pending.get(rule.id) ?? [];
      return {
        name: rule.name,
        id: rule.id.toString(),
        input: formatEndpoint(rule.input),
        state: pending.length ? "pending" : "active",
        pending_reasons: pending,
        packets: counters?.packets ?? 0,
        bytes: counters?.bytes ?? 0,
        outputs: rule.outputs.map((out) => {
          const oc = snap?.outputs.find((o) => o.id === out.id.toString());
          return {
            to: formatEndpoint(out.to),
            ttl: out.ttl,
            packets: oc?.packets ?? 0,
            bytes: oc?.bytes ?? 0,
            send_errors: oc?.sendErrors ?? {},
          };
        }),
      };
    });
    const workers: WorkerReport[] = [...snapshots].map(([ifname, snap]) => ({
      interface: ifname,
      pid: this.#info.get(ifname)?.pid ?? 0,
      counters: snap.worker,
      parse_drops: snap.parseDrops,
      ring: this.#info.get(ifname)?.ring ?? {},
    }));
    return { rules, workers };
  }
}
