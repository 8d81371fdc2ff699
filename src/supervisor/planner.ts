// The table planner: from the rules and the interfaces as they are now, each input interface's
// complete table (the usable rules in their worker form, how many workers, the ring size), and
// each rule's resolution (why it, or one of its outputs, cannot forward now). The daemon and the
// one-shot relay plan with this one function; neither builds tables itself.
import { capacityProblems } from "../rules/capacity.ts";
import { resolveRule, type LinkLookup, type Rule } from "../rules/rule.ts";
import type { Desired } from "./worker-pool.ts";

/** Why a rule cannot forward now (empty: it forwards), and which outputs cannot send. */
export interface Resolution {
  pending: string[];
  pendingOutputs: Map<bigint, string>;
}

export interface PlanOptions {
  lookup: LinkLookup;
  /** Workers on an input interface. */
  workersFor: (iface: string) => number;
  /** Ring of each packet socket of an input interface, in MiB; undefined: the native default. */
  ringMibFor: (iface: string) => number | undefined;
  /** mcr's `pinning`: the CPU of each worker of an interface, by slot; undefined: not pinned. */
  cpusFor?: (iface: string) => number[] | undefined;
}

export interface Plan {
  /** Per input interface with at least one usable rule. */
  tables: Map<string, Desired>;
  /** Per rule id. */
  resolutions: Map<bigint, Resolution>;
}

export function planTables(rules: Iterable<Rule>, o: PlanOptions): Plan {
  const tables = new Map<string, Desired>();
  const resolutions = new Map<bigint, Resolution>();
  for (const rule of rules) {
    const resolved = resolveRule(rule, o.lookup);
    resolutions.set(rule.id, { pending: resolved.pending, pendingOutputs: resolved.pendingOutputs });
    if (!resolved.wire) continue;
    const iface = rule.input.iface;
    let entry = tables.get(iface);
    if (!entry) {
      entry = { rules: [], workers: o.workersFor(iface), ringMib: o.ringMibFor(iface), cpus: o.cpusFor?.(iface) };
      tables.set(iface, entry);
    }
    entry.rules.push(resolved.wire);
  }
  return { tables, resolutions };
}

/** Problems when the rules do not fit the workers' tables (per interface and worker). */
export function planCapacity(rules: Iterable<Rule>, o: Pick<PlanOptions, "workersFor">): string[] {
  return capacityProblems(rules, o.workersFor);
}
