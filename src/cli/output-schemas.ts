// The JSON document each verb prints with --json, one valibot schema per verb. Verbs that print
// the daemon's answer as it is use that command's schema (control/responses.ts); the others
// (ping, version, config check, forward, gen, sink, and every error) are described here. The
// tests validate real output against these; docs/reference.md documents them.
import * as v from "valibot";
import { RuleSpecSchema } from "../config/rule-spec.ts";
import { ConfigProblemSchema } from "../config/file.ts";
import { InterfaceReportSchema, RESULT_SCHEMAS, RingSchema, RuleReportSchema, StatsSchema } from "../control/responses.ts";

const count = v.pipe(v.number(), v.integer(), v.minValue(0));
const seconds = v.pipe(v.number(), v.minValue(0));

/** What every verb prints on stdout with --json when it fails (the exit code says the same). */
export const ErrorOutputSchema = v.strictObject({
  ok: v.literal(false),
  error: v.strictObject({
    /** usage, config, not_running, permission, refused, system, shortfall or failure. */
    kind: v.string(),
    message: v.string(),
    exit_code: count,
    /** The daemon's error code (`not_found`, ...) or the errno name (`EPERM`), when there is one. */
    code: v.optional(v.string()),
  }),
});


export const ConfigCheckSchema = v.strictObject({
  file: v.string(),
  ok: v.boolean(),
  /** "mcrelay", or "mcr" for a file in mcr's format (rules with input/outputs). */
  format: v.picklist(["mcrelay", "mcr"]),
  rules: v.array(RuleSpecSchema),
  workers: v.record(v.string(), count),
  /** A plain `workers: N`: the worker processes, each interface's default count; null if not set. */
  workers_default: v.nullable(count),
  warnings: v.array(ConfigProblemSchema),
  errors: v.array(ConfigProblemSchema),
});
export type ConfigCheck = v.InferOutput<typeof ConfigCheckSchema>;

export const PingOutputSchema = v.strictObject({ ...RESULT_SCHEMAS.ping.entries, rtt_ms: seconds, daemon: v.string() });

export const VersionOutputSchema = v.strictObject({
  version: v.string(),
  protocol: v.number(),
  native_abi: v.number(),
  bun: v.string(),
  compiled: v.boolean(),
  arch: v.string(),
  daemon: v.strictObject({ version: v.nullable(v.string()), protocol: v.nullable(v.number()), mode: v.optional(v.string()), error: v.optional(v.string()) }),
});

export const GenOutputSchema = v.strictObject({
  to: v.string(),
  /** udp: a UDP socket; raw: prebuilt frames on a packet socket. */
  mode: v.picklist(["udp", "raw"]),
  sent: count,
  bytes: count,
  send_errors: count,
  buffer_full_waits: count,
  /** Times it fell more than 100 ms behind its schedule and skipped the packets due meanwhile. */
  schedule_slips: count,
  duration_s: seconds,
  rate_pps: count,
  stopped_by: v.string(),
});

const latency = v.strictObject({ p50: seconds, p99: seconds, p999: seconds, max: seconds, mean: seconds });

export const SinkStreamSchema = v.strictObject({
  stream: count,
  /** 0, then +1 each time the stream's generator restarted (its seq fell back to 0). */
  run: count,
  /** Lowest sequence number of the run; loss counts from it. */
  first_seq: count,
  received: count,
  lost: count,
  duplicates: count,
  reordered: count,
  late: count,
  bytes: count,
  pattern_errors: count,
  latency_us: latency,
});

export const SinkOutputSchema = v.strictObject({
  listen: v.string(),
  duration_s: seconds,
  /** The --expect given (null without it) and whether every stream got that many. */
  expect: v.nullable(count),
  complete: v.nullable(v.boolean()),
  /** --gro: UDP_GRO was enabled on the socket. */
  gro: v.boolean(),
  /** SO_RCVBUF as read back (twice the granted size); below the request when capped at rmem_max. */
  rcvbuf_bytes: count,
  /**
   * datagrams: every datagram, a GRO buffer counting its pieces; gro_batches: buffers that came
   * with a UDP_GRO gso_size and were split (gro_datagrams pieces); control_truncated: messages
   * with MSG_CTRUNC, taken as one datagram; socket_drops: datagrams the kernel dropped at the
   * sink's socket (in lost too); streams_overflow: datagrams of streams beyond the table;
   * latency_clamped: datagrams stamped ahead of the sink's clock (latency taken as 0).
   */
  totals: v.strictObject({
    received: count,
    lost: count,
    duplicates: count,
    reordered: count,
    pattern_errors: count,
    foreign: count,
    datagrams: count,
    bytes: count,
    gro_batches: count,
    gro_datagrams: count,
    control_truncated: count,
    socket_drops: count,
    streams_overflow: count,
    latency_clamped: count,
  }),
  streams: v.array(SinkStreamSchema),
});
export type SinkOutput = v.InferOutput<typeof SinkOutputSchema>;

export const ForwardOutputSchema = v.strictObject({
  duration_s: seconds,
  stopped_by: v.string(),
  /** What went wrong during the run (an input interface that vanished, a worker in backoff at the end): exit 7 when any. */
  problems: v.array(v.string()),
  rules: v.array(RuleReportSchema),
  workers: v.array(
    v.strictObject({ ...InterfaceReportSchema.entries, pid: v.nullable(count), pids: v.array(v.nullable(count)), restarts: count, ring: v.nullable(RingSchema) }),
  ),
});

/** The --json document of each reading verb (the key is the verb as typed, `config show`). */
export const VERB_OUTPUT_SCHEMAS: Record<string, v.GenericSchema> = {
  status: RESULT_SCHEMAS.status,
  list: RESULT_SCHEMAS.list,
  stats: StatsSchema,
  "stats --watch": v.strictObject({ time: v.string(), ...StatsSchema.entries }),
  workers: RESULT_SCHEMAS.workers,
  "log-level": RESULT_SCHEMAS["log-level"],
  ping: PingOutputSchema,
  version: VersionOutputSchema,
  events: v.looseObject({ seq: count, time: v.string(), kind: v.string() }),
  "config show": RESULT_SCHEMAS["config-show"],
  "config check": ConfigCheckSchema,
  add: RESULT_SCHEMAS.add,
  remove: RESULT_SCHEMAS.remove,
  reload: RESULT_SCHEMAS.reload,
  forward: ForwardOutputSchema,
  gen: GenOutputSchema,
  sink: SinkOutputSchema,
};
