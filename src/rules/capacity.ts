// What a worker can hold (zig/constants.zig: rules_max rules and outputs_max outputs per
// table, rings_per_worker_max input interfaces), checked at every edge that brings rules in (add, config check, reload, state
// restore) before anything changes: a table a worker refuses would stop every rule of the
// interface (issue 11, H1). Rules are counted per worker the way the worker pool splits them
// (the flow hash over the interface's workers), pending ones included: a pending rule joins
// its table as soon as its interface appears.
import { NATIVE_LIMITS, WORKERS_PER_INTERFACE_MAX } from "../limits.ts";
import { workerSlot } from "./flow-hash.ts";
import type { Rule } from "./rule.ts";

interface Load {
  iface: string;
  slot: number;
  members: number;
  rules: number;
  outputs: number;
}

/** One line per worker table over a limit, naming the interface, the limit and the count; empty when all fit. */
export function capacityProblems(rules: Iterable<Rule>, workersFor: (iface: string) => number): string[] {
  const loads = new Map<string, Load>();
  for (const r of rules) {
    const iface = r.input.iface;
    const members = Math.max(1, Math.min(WORKERS_PER_INTERFACE_MAX, workersFor(iface)));
    const slot = workerSlot(r.input.addr.text, r.input.port, members);
    const key = `${iface}#${slot}`;
    const load = loads.get(key) ?? { iface, slot, members, rules: 0, outputs: 0 };
    load.rules += 1;
    load.outputs += r.outputs.length;
    loads.set(key, load);
  }
  const problems: string[] = [];
  // Worker process k serves a ring of every interface with more than k workers (worker-pool.ts:
  // an interface of N workers takes a ring position in workers 0..N-1), so worker 0 serves them
  // all. Numbered as `mcrelay workers` and the pool's errors number them (from 0).
  const members = new Map<string, number>();
  for (const l of loads.values()) members.set(l.iface, l.members);
  const widest = Math.max(0, ...members.values());
  for (let slot = 0; slot < widest; slot++) {
    const served = [...members.values()].filter((m) => m > slot).length;
    if (served > NATIVE_LIMITS.ringsPerWorkerMax) {
      problems.push(`worker ${slot}: rules on ${served} input interfaces, but a worker serves at most ${NATIVE_LIMITS.ringsPerWorkerMax} (rings_per_worker_max)`);
    }
  }
  for (const l of loads.values()) {
    // The worker by its number in `mcrelay workers` (from 0), as in the line above.
    const where = l.members > 1 ? `interface ${l.iface} on worker ${l.slot} (workers 0-${l.members - 1})` : `interface ${l.iface}`;
    if (l.rules > NATIVE_LIMITS.rulesMax) problems.push(`${where}: ${l.rules} rules, but a worker holds at most ${NATIVE_LIMITS.rulesMax} (rules_max)`);
    if (l.outputs > NATIVE_LIMITS.outputsMax) problems.push(`${where}: ${l.outputs} outputs, but a worker holds at most ${NATIVE_LIMITS.outputsMax} (outputs_max)`);
  }
  return problems;
}
