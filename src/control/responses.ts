// The answer to each control command, one valibot schema per command. The daemon (and
// `forward --socket`) is typed against these and checks every answer before sending it; the
// CLI verbs parse what they receive with the same schema; the tests validate real output with
// it. JSON keys are snake_case and one concept has one name everywhere (`reasons` is why a rule
// is not active, `reason` why one output is not). Documented in docs/reference.md.
import * as v from "valibot";
import { LOG_LEVELS } from "../log.ts";
import { PARSE_DROPS, RULE_DROPS, WORKER_COUNTERS } from "../native/abi.ts";
import { ISSUES_SHOWN_MAX, RuleSpecSchema } from "../config/rule-spec.ts";
import { ConfigProblemSchema } from "../config/file.ts";
import type { Command } from "./protocol.ts";
import { DSCP_MAX, TTL_MAX, TTL_MIN } from "../limits.ts";

const count = v.pipe(v.number(), v.integer(), v.minValue(0));
const rate = v.pipe(v.number(), v.minValue(0));
const counterRecord = <K extends string>(keys: readonly K[]) => v.strictObject(Object.fromEntries(keys.map((k) => [k, count])) as Record<K, typeof count>);

export const OriginSchema = v.picklist(["config", "runtime", "cli"]);
/** join-failed: the input group could not be joined (retried); see the rule's reasons. */
export const RuleStateSchema = v.picklist(["active", "pending", "error", "join-failed"]);
export const OutputStateSchema = v.picklist(["active", "pending"]);

/**
 * One output of a rule as `list` shows it. Settings of an output (TTL, and as they are added
 * DSCP, VLAN, ...) are the keys besides `to`, `state` and `reason`: `mcrelay list` prints every
 * one of them, so a new setting is one line here and one in the daemon's view.
 */
const ttl = v.pipe(v.number(), v.integer(), v.minValue(TTL_MIN), v.maxValue(TTL_MAX));
const vlan = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(4095));
const u16 = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(0xffff));
/** A fixed DSCP (0-63), or "copy": the input packet's. */
const dscp = v.union([v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(DSCP_MAX)), v.literal("copy")]);

export const OutputViewSchema = v.strictObject({
  to: v.string(),
  ttl,
  dscp,
  /** UDP GSO batching of sends on this output (off: one send per datagram). */
  gso: v.boolean(),
  state: OutputStateSchema,
  reason: v.nullable(v.string()),
});
export type OutputView = v.InferOutput<typeof OutputViewSchema>;

/** A rule as `list`, `add` and rule events show it. */
export const RuleViewSchema = v.strictObject({
  name: v.string(),
  id: v.string(),
  origin: OriginSchema,
  input: v.string(),
  /** Only datagrams from this address match; null = any source. */
  source: v.nullable(v.string()),
  /** The 802.1Q VLAN id the rule relays, or null: untagged frames only. */
  vlan: v.nullable(vlan),
  /** Storm cap in datagrams per second, or null. */
  max_pps: v.nullable(count),
  /** Datagrams that loop back through relays are dropped (on unless the rule turns it off). */
  loop_guard: v.boolean(),
  outputs: v.array(OutputViewSchema),
  state: RuleStateSchema,
  /** Why the rule is not active (empty when it is). */
  reasons: v.array(v.string()),
});
export type RuleView = v.InferOutput<typeof RuleViewSchema>;

export const OutputReportSchema = v.strictObject({
  to: v.string(),
  state: OutputStateSchema,
  reason: v.nullable(v.string()),
  ttl,
  dscp,
  gso: v.boolean(),
  packets: count,
  bytes: count,
  pps: rate,
  bps: rate,
  /** Failed sends by errno name (`ENOBUFS`); only the errnos seen. */
  send_errors: v.record(v.string(), count),
});
export type OutputReport = v.InferOutput<typeof OutputReportSchema>;

export const RuleReportSchema = v.strictObject({
  name: v.string(),
  id: v.string(),
  origin: OriginSchema,
  input: v.string(),
  source: v.nullable(v.string()),
  vlan: v.nullable(vlan),
  max_pps: v.nullable(count),
  loop_guard: v.boolean(),
  state: RuleStateSchema,
  reasons: v.array(v.string()),
  packets: count,
  bytes: count,
  pps: rate,
  bps: rate,
  /**
   * What was dropped that belongs to this rule: source_mismatch (its group and port from a
   * source it does not accept), own_source (from the input interface's own address),
   * output_errors (datagrams its outputs failed to send, all errnos).
   */
  drops: v.strictObject({ ...counterRecord(RULE_DROPS).entries, output_errors: count }),
  outputs: v.array(OutputReportSchema),
});
export type RuleReport = v.InferOutput<typeof RuleReportSchema>;

export const InterfaceReportSchema = v.strictObject({
  interface: v.string(),
  counters: counterRecord(WORKER_COUNTERS),
  /** Every drop reason, zero or not (the human `stats` prints the non-zero ones). */
  parse_drops: counterRecord(PARSE_DROPS),
});
export type InterfaceReport = v.InferOutput<typeof InterfaceReportSchema>;

export const RingSchema = v.strictObject({ block_bytes: count, block_count: count, frame_bytes: count, frame_count: count });
export type RingInfo = v.InferOutput<typeof RingSchema>;

export const WorkerStateSchema = v.picklist(["starting", "running", "backoff", "stopping"]);

/** One ring: an input interface's socket in one worker process (a worker serves several). */
export const WorkerInfoSchema = v.strictObject({
  interface: v.string(),
  /** The socket's index among the interface's sockets (its fanout member). */
  slot: count,
  workers_on_interface: count,
  /** The worker process serving this ring (0 .. workers-1): socket `slot` is served by worker `slot`. */
  worker: count,
  /** The ring's packet socket among the worker's (null until set up). */
  position: v.nullable(count),
  /** The interface index the ring's socket is bound to (a recreated interface has a new one); null until set up. */
  ifindex: v.nullable(count),
  pid: v.nullable(count),
  state: WorkerStateSchema,
  uptime_s: rate,
  restarts: count,
  /** Times the worker process was replaced on purpose (its CPU changed, or to renew closed packet sockets): not failures. */
  recycled: count,
  consecutive_failures: count,
  backoff_ms: count,
  drift_repairs: count,
  table_hash: v.string(),
  applied_hash: v.nullable(v.string()),
  rules: count,
  last_error: v.nullable(v.string()),
  /** The packet ring of this socket; null while no worker process serves it. */
  ring: v.nullable(RingSchema),
  /** The confinement probes the running worker saw refused after its drop, and their cost; null while none runs (or it did not drop). */
  confinement: v.nullable(v.strictObject({ probes: count, ms: rate })),
});
export type WorkerInfo = v.InferOutput<typeof WorkerInfoSchema>;

export const ModeSchema = v.picklist(["daemon", "forward"]);

/**
 * The config file as the daemon runs it (null without --config, and in `forward`). After a
 * refused reload the rules running are those loaded at `loaded_at`, not the file's content:
 * `reload_error` says so until a reload succeeds.
 */
export const ConfigStatusSchema = v.nullable(
  v.strictObject({
    file: v.string(),
    /** When the file was last loaded whole and applied (start-up or a reload), ISO 8601. */
    loaded_at: v.string(),
    /** The last reload was refused (by `mcrelay reload`, SIGHUP or --watch-config); null once one succeeds. */
    reload_error: v.nullable(
      v.strictObject({
        at: v.string(),
        /** Who asked: `uid 0 pid 4242`, `SIGHUP`, `a change of the config file`. */
        requested_by: v.string(),
        /** The refusal the reload request got (`reload refused, nothing changed: ...`). */
        message: v.string(),
        /** Each problem with its place, as `config check --json` lists them. */
        problems: v.array(ConfigProblemSchema),
      }),
    ),
  }),
);
export type ConfigStatus = v.InferOutput<typeof ConfigStatusSchema>;

/**
 * The state file of runtime rules (null in `forward`, which keeps none). `set_aside`: at this
 * start the file did not parse and was moved to `path` (the daemon started without runtime rules);
 * null when it loaded, or there was none. `unloaded`: saved rules that parsed but were not loaded
 * (no longer valid, or more than the workers hold), kept in the file until `remove NAME|ID`.
 */
export const StateStatusSchema = v.nullable(
  v.strictObject({
    file: v.string(),
    set_aside: v.nullable(v.strictObject({ path: v.string(), reason: v.string(), at: v.string() })),
    unloaded: v.array(v.strictObject({ name: v.string(), id: v.string(), reason: v.string() })),
  }),
);
export type StateStatus = v.InferOutput<typeof StateStatusSchema>;

export const StatusSchema = v.strictObject({
  version: v.string(),
  protocol: v.number(),
  mode: ModeSchema,
  pid: count,
  started_at: v.string(),
  uptime_s: rate,
  config_file: v.nullable(v.string()),
  config: ConfigStatusSchema,
  state: StateStatusSchema,
  rules: v.strictObject({ total: count, active: count, pending: count, error: count, join_failed: count }),
  workers: v.strictObject({ total: count, starting: count, running: count, backoff: count, stopping: count }),
  /** Every interface a rule reads from or sends to. */
  interfaces: v.array(
    v.strictObject({
      name: v.string(),
      /** "up", "down" or "missing" (no such interface in this namespace). */
      state: v.picklist(["up", "down", "missing"]),
      inputs: count,
      outputs: count,
      workers: count,
    }),
  ),
});
export type Status = v.InferOutput<typeof StatusSchema>;

/** A rule in `config show`: the spec as written, with where it came from and its id. */
export const ShownRuleSchema = v.strictObject({ ...RuleSpecSchema.entries, origin: OriginSchema, id: v.string() });

export const StatsSchema = v.strictObject({
  rules: v.array(RuleReportSchema),
  interfaces: v.array(InterfaceReportSchema),
  workers: v.array(WorkerInfoSchema),
});
export type Stats = v.InferOutput<typeof StatsSchema>;

/** One packet as `trace` and `capture` report it (src/supervisor/tracer.ts). */
/** One trace record as the daemon sends it (the schema below checks it). */
export interface TraceRecordJson {
  time: string;
  time_ns: string;
  interface: string;
  vlan: number | null;
  src: string;
  dst: string;
  src_port: number;
  dst_port: number;
  length: number;
  wire_length: number;
  ttl: number;
  dscp: number;
  ecn: number;
  verdict: string;
  reason: string | null;
  rule: string | null;
  outputs: { to: string; result: string }[];
  outputs_total: number;
  frame?: string;
  /** The VLAN tag the kernel moved out of `frame` (capture only): its TPID and whole TCI. */
  frame_tag?: { tpid: number; tci: number };
}

export const TraceRecordSchema = v.strictObject({
  time: v.string(),
  time_ns: v.string(),
  interface: v.string(),
  vlan: v.nullable(vlan),
  src: v.string(),
  dst: v.string(),
  src_port: count,
  dst_port: count,
  length: count,
  wire_length: count,
  ttl: count,
  dscp: count,
  ecn: count,
  verdict: v.string(),
  reason: v.nullable(v.string()),
  rule: v.nullable(v.string()),
  outputs: v.array(v.strictObject({ to: v.string(), result: v.string() })),
  outputs_total: count,
  /** The frame's bytes, base64 (`capture` only). */
  frame: v.optional(v.string()),
  /** The VLAN tag the kernel moved out of `frame` (0x8100 or 0x88a8, PCP, DEI, VID): capture puts it back. */
  frame_tag: v.optional(v.strictObject({ tpid: u16, tci: u16 })),
});

const versionEntries = { daemon: v.string(), protocol: v.number(), mode: ModeSchema };

/** The result of each command; `responseSchema(cmd)` is what the client parses. */
export const RESULT_SCHEMAS = {
  hello: v.strictObject(versionEntries),
  /** starting: the socket is open but start-up has not finished (workers not all applied yet). */
  ping: v.strictObject({ pong: v.literal(true), rules: count, workers: count, starting: v.optional(v.boolean()) }),
  version: v.strictObject({ ...versionEntries, bun: v.string() }),
  status: StatusSchema,
  add: v.strictObject({ rule: RuleViewSchema, warnings: v.array(v.string()), replaced: v.boolean() }),
  // `not_loaded`: the removed entry was a saved rule that was not loaded (status `state.unloaded`), and why.
  remove: v.strictObject({ removed: v.string(), id: v.string(), warnings: v.array(v.string()), not_loaded: v.optional(v.string()) }),
  list: v.strictObject({ rules: v.array(RuleViewSchema) }),
  stats: StatsSchema,
  workers: v.strictObject({ workers: v.array(WorkerInfoSchema) }),
  "log-level": v.strictObject({ level: v.picklist(LOG_LEVELS) }),
  reload: v.strictObject({ added: v.array(v.string()), removed: v.array(v.string()), changed: v.array(v.string()), unchanged: count, warnings: v.array(v.string()) }),
  "config-show": v.strictObject({
    config_file: v.nullable(v.string()),
    state_dir: v.nullable(v.string()),
    /** Workers per interface as the config file sets them. */
    workers: v.record(v.string(), count),
    /** The config file's plain `workers: N` (worker processes; each interface's default), or null. */
    workers_default: v.nullable(count),
    rules: v.array(ShownRuleSchema),
  }),
  events: v.strictObject({ subscribed: v.literal(true), seq: count }),
  "trace-start": v.strictObject({
    session: v.string(),
    rule: v.string(),
    id: v.string(),
    interface: v.string(),
    input: v.string(),
    outputs: v.array(v.string()),
    capture: v.boolean(),
    workers: count,
  }),
  "trace-read": v.strictObject({ records: v.array(TraceRecordSchema), overflow: count, active: v.boolean() }),
  "trace-stop": v.strictObject({ records: v.array(TraceRecordSchema), overflow: count, total: count }),
} as const satisfies Record<Command, v.GenericSchema>;

export type ResultOf<C extends Command> = v.InferOutput<(typeof RESULT_SCHEMAS)[C]>;

/** "rules[0].outputs[1].ttl: Invalid type" for each of the first ISSUES_SHOWN_MAX problems, then "... and N more". */
export function schemaProblems(schema: v.GenericSchema, value: unknown): string[] {
  const r = v.safeParse(schema, value);
  if (r.success) return [];
  const shown = r.issues.slice(0, ISSUES_SHOWN_MAX).map((issue) => {
    const path = (issue.path ?? []).map((p) => (typeof p.key === "number" ? `[${p.key}]` : `.${String(p.key)}`)).join("").replace(/^\./, "");
    return `${path || "(top)"}: ${issue.message}`;
  });
  if (r.issues.length > ISSUES_SHOWN_MAX) shown.push(`... and ${r.issues.length - ISSUES_SHOWN_MAX} more`);
  return shown;
}
