// The read side of a supervisor's rules, shared by the daemon and the one-shot relay: a rule as
// `list` shows it (settings, state, reasons, from the store and the workers' state) and the
// `stats` report (from the same counter totals `/metrics` and `forward`'s report use).
import { readFileSync } from "node:fs";
import { isMulticast } from "../base/address.ts";
import { formatEndpoint } from "../base/endpoint.ts";
import { ControlError } from "../control/server.ts";
import { errnoName } from "../errors.ts";
import { formatInput, type Rule } from "../rules/rule.ts";
import { buildInterfaceReports, buildRuleReports } from "./report.ts";
import type { RuleStore, StoredRule } from "./rule-store.ts";
import type { WorkerPool } from "./worker-pool.ts";
import type { RuleView, Stats } from "../control/responses.ts";

/** A sysctl of this network namespace, or "?" when unreadable. */
function sysctl(key: string): string {
  try {
    return readFileSync(`/proc/sys/${key.replaceAll(".", "/")}`, "utf8").trim();
  } catch {
    return "?";
  }
}

/**
 * Why a rule's input is not joined (multicast) or its port not held (unicast), with the sysctl
 * to raise when that is the cause. mcrelay raises nothing by itself; the worker retries every
 * second, so raising the limit is enough.
 */
export function inputProblem(rule: Rule, errno: number): string {
  const name = errnoName(errno);
  if (!isMulticast(rule.input.addr)) {
    return errno === 98 // EADDRINUSE
      ? `input port ${rule.input.port} on ${rule.input.addr.text} is owned by another program: left alone (it receives the datagrams too)`
      : `input port ${rule.input.port} on ${rule.input.addr.text} not held: ${name} (the host may answer senders with ICMP port unreachable)`;
  }
  if ((errno === 105 || errno === 12) && rule.input.addr.family === 6) {
    // ENOBUFS or ENOMEM from an MLD join: the socket's option memory (net.core.optmem_max), or
    // (source-specific) the source limit.
    const hint = rule.source
      ? `net.core.optmem_max=${sysctl("net.core.optmem_max")}, net.ipv6.mld_max_msf=${sysctl("net.ipv6.mld_max_msf")}`
      : `net.core.optmem_max=${sysctl("net.core.optmem_max")}`;
    return `join failed: ${name} (${hint})`;
  }
  if (errno === 105) {
    // ENOBUFS: a membership limit.
    const hint = rule.source
      ? `net.ipv4.igmp_max_memberships=${sysctl("net.ipv4.igmp_max_memberships")}, net.ipv4.igmp_max_msf=${sysctl("net.ipv4.igmp_max_msf")}`
      : `net.ipv4.igmp_max_memberships=${sysctl("net.ipv4.igmp_max_memberships")}`;
    return `join failed: ${name} (${hint})`;
  }
  return `join failed: ${name}`;
}

export class RuleViews {
  readonly #store: RuleStore;
  readonly #pool: WorkerPool;

  constructor(store: RuleStore, pool: WorkerPool) {
    this.#store = store;
    this.#pool = pool;
  }

  /** A rule as `list` shows it: its settings, state and reasons. */
  view(s: StoredRule): RuleView {
    const worker = this.#pool.info().find((w) => w.interface === s.rule.input.iface);
    const failing = !s.pending.length && worker && worker.state === "backoff";
    // A rule its worker refused to take (the others of that worker go on forwarding).
    const refused = s.pending.length ? undefined : this.#pool.refusedRules().get(s.rule.id.toString());
    // A unicast input whose port another program owns still forwards: only a note.
    const joinFailed = s.inputErrno !== 0 && isMulticast(s.rule.input.addr);
    return {
      name: s.rule.name,
      id: s.rule.id.toString(),
      origin: s.origin,
      input: formatInput(s.rule),
      source: s.rule.source?.text ?? null,
      vlan: s.rule.vlan,
      max_pps: s.rule.maxPps,
      loop_guard: s.rule.loopGuard,
      outputs: s.rule.outputs.map((o) => ({
        to: formatEndpoint(o.to),
        ttl: o.ttl,
        dscp: o.dscp ?? "copy",
        gso: o.gso,
        state: s.pendingOutputs.has(o.id) ? "pending" : "active",
        reason: s.pendingOutputs.get(o.id) ?? null,
      })),
      state: s.pending.length ? "pending" : failing || refused ? "error" : joinFailed ? "join-failed" : "active",
      reasons: s.pending.length
        ? s.pending
        : refused
          ? [refused]
          : failing && worker.last_error
            ? [worker.last_error]
            : s.inputErrno
              ? [inputProblem(s.rule, s.inputErrno)]
              : [],
    };
  }

  /** Every rule as `list` shows it, in id order. */
  list() {
    return this.#store.all().map((s) => this.view(s));
  }

  /** `stats`: one rule (by name or id) or all, the interfaces' counters and the workers. */
  stats(name?: string): Stats {
    const selected = name ? [this.#store.find(name)].filter((s): s is StoredRule => !!s) : this.#store.all();
    if (name && selected.length === 0) throw new ControlError("not_found", `no rule named or numbered '${name}'`);
    this.#pool.refresh();
    const totals = this.#pool.counters.totals();
    const rules = buildRuleReports(
      selected.map((s) => ({ rule: s.rule, pending: s.pending, pendingOutputs: s.pendingOutputs, origin: s.origin })),
      totals,
      this.#pool.counters.rates(),
    );
    return { rules, interfaces: buildInterfaceReports(totals), workers: this.#pool.info() };
  }
}
