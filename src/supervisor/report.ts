// Stats reports (for `stats`, `forward` and `list`) built from counter totals and rates.
import { formatEndpoint } from "../base/endpoint.ts";
import { formatInput, type Rule } from "../rules/rule.ts";
import type { Rates, Totals } from "./counters.ts";
import { RULE_DROPS, type RuleDrop } from "../native/abi.ts";
import type { InterfaceReport, OutputReport, RuleReport } from "../control/responses.ts";

export type { InterfaceReport, OutputReport, RuleReport };

export interface RuleView {
  rule: Rule;
  pending: string[];
  pendingOutputs?: Map<bigint, string>;
  origin: RuleReport["origin"];
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
      reasons: pending,
      packets: t?.packets ?? 0,
      bytes: t?.bytes ?? 0,
      pps: round(r?.pps ?? 0),
      bps: round(r?.bps ?? 0),
      drops: {
        ...(t?.drops ?? (Object.fromEntries(RULE_DROPS.map((n) => [n, 0])) as Record<RuleDrop, number>)),
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
