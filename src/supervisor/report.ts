// Stats reports (for `stats`, `forward` and `list`) built from counter totals and rates.
import { formatEndpoint } from "../base/endpoint.ts";
import { formatInput, type Rule } from "../rules/rule.ts";
import type { Rates, Totals } from "./counters.ts";
import { RULE_DROPS, type ParseDrop, type WorkerCounter } from "../native/abi.ts";

export interface OutputReport {
  to: string;
  state: "active" | "pending";
  reason: string | null;
  ttl: number;
  /** Fixed DSCP, or "copy" (the input packet's). */
  dscp: number | "copy";
  gso: boolean;
  packets: number;
  bytes: number;
  pps: number;
  bps: number;
  send_errors: Record<string, number>;
}

export interface RuleReport {
  name: string;
  id: string;
  origin: string;
  input: string;
  source: string | null;
  /** 802.1Q VID the rule relays, or null: untagged frames only. */
  vlan: number | null;
  /** Storm cap (datagrams per second), or null. */
  max_pps: number | null;
  loop_guard: boolean;
  state: "active" | "pending";
  pending_reasons: string[];
  packets: number;
  bytes: number;
  pps: number;
  bps: number;
  /**
   * What was dropped that belongs to this rule: source_mismatch (its group and port from a
   * source it does not accept), own_source (from the input interface's own address),
   * output_errors (datagrams its outputs failed to send, all errnos).
   */
  drops: Record<string, number>;
  outputs: OutputReport[];
}

export interface InterfaceReport {
  interface: string;
  counters: Record<WorkerCounter, number>;
  parse_drops: Record<ParseDrop, number>;
}

export interface RuleView {
  rule: Rule;
  pending: string[];
  pendingOutputs?: Map<bigint, string>;
  origin: string;
}

export function buildRuleReports(views: RuleView[], totals: Totals, rates: Rates): RuleReport[] {
  return views.map(({ rule, pending, pendingOutputs, origin }) => {
    const id = rule.id.toString();
    const t = totals.rules.get(id);
    const r = rates.rules.get(id);
    return {
      name: rule.name,
      id,
      origin,
      input: formatInput(rule),
      source: rule.source?.text ?? null,
      vlan: rule.vlan,
      max_pps: rule.maxPps,
      loop_guard: rule.loopGuard,
      state: pending.length ? "pending" : "active",
      pending_reasons: pending,
      packets: t?.packets ?? 0,
      bytes: t?.bytes ?? 0,
      pps: round(r?.pps ?? 0),
      bps: round(r?.bps ?? 0),
      drops: {
        ...(t?.drops ?? Object.fromEntries(RULE_DROPS.map((n) => [n, 0]))),
        output_errors: rule.outputs.reduce((n, o) => n + Object.values(totals.outputs.get(o.id.toString())?.sendErrors ?? {}).reduce((a, b) => a + b, 0), 0),
      },
      outputs: rule.outputs.map((out) => {
        const oid = out.id.toString();
        const ot = totals.outputs.get(oid);
        const or = rates.outputs.get(oid);
        return {
          to: formatEndpoint(out.to),
          state: pendingOutputs?.has(out.id) ? "pending" : "active",
          reason: pendingOutputs?.get(out.id) ?? null,
          ttl: out.ttl,
          dscp: out.dscp ?? "copy",
          gso: out.gso,
          packets: ot?.packets ?? 0,
          bytes: ot?.bytes ?? 0,
          pps: round(or?.pps ?? 0),
          bps: round(or?.bps ?? 0),
          send_errors: ot?.sendErrors ?? {},
        };
      }),
    };
  });
}

export function buildInterfaceReports(totals: Totals): InterfaceReport[] {
  return [...totals.interfaces].map(([iface, t]) => ({ interface: iface, counters: t.worker, parse_drops: t.parseDrops }));
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}
