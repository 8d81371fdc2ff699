// The control protocol between clients and the daemon: newline-delimited JSON over a Unix
// stream socket. Every message carries the protocol version `v`; the first request of a
// connection is `hello`, and a peer of another major version gets `protocol_mismatch`
// naming both versions. Requests carry an id that the response echoes.
import * as v from "valibot";
import { LOG_LEVELS } from "../log.ts";
import { RuleSpecSchema } from "../config/rule-spec.ts";
import { PROTOCOL_VERSION } from "../version.ts";

export { PROTOCOL_VERSION };

// Bounds of the control server (see server.ts and docs/operations.md). Worst case held for
// clients: CLIENTS_MAX_DEFAULT x (INPUT_BYTES_MAX + one read + one answer + events backlog).

/** A line longer than this is refused and the connection closed (the largest `add` is ~20 KiB). */
export const LINE_BYTES_MAX = 64 * 1024;
/** Bytes read ahead per connection; past it reading pauses until lines are handled. */
export const INPUT_BYTES_MAX = LINE_BYTES_MAX;
/** Connections at once unless --clients-max says otherwise. */
export const CLIENTS_MAX_DEFAULT = 64;
export const CLIENTS_MAX_LIMIT = 4096;
/** Of the connection slots, this many are kept for peers with the admin right. */
export const ADMIN_SLOTS_RESERVED = 4;
/** Events queued for a subscriber that does not read; past it events are dropped and counted. */
export const EVENTS_BACKLOG_BYTES_MAX = 256 * 1024;
/** A client that takes none of its queued answers for this long is disconnected. */
export const WRITE_STALL_MS = 10_000;
/** An incomplete line older than this closes the connection. */
export const PARTIAL_LINE_TIMEOUT_MS = 10_000;
/** A connection that has not said hello after this long is closed. */
export const HELLO_TIMEOUT_MS = 10_000;
/** Requests handled in one go before the event loop reads sockets again. */
export const PUMP_SLICE_MS = 5;
/** Descriptors kept free for workers and packet sockets: the client cap is lowered to keep them. */
export const FD_RESERVE = 256;

export const ERROR_CODES = [
  "bad_json",
  "bad_request",
  "protocol_mismatch",
  "hello_required",
  "unknown_command",
  "not_found",
  "exists",
  "config_invalid",
  "too_large",
  "limit",
  "busy",
  "timeout",
  "forbidden",
  "internal",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

const id = v.union([v.pipe(v.string(), v.maxLength(64)), v.pipe(v.number(), v.integer())]);

/** Only `v` and `id` are read before the version check, so any version can be told off. */
export const EnvelopeSchema = v.looseObject({ v: v.pipe(v.number(), v.integer()), id: v.optional(id), cmd: v.optional(v.string()) });

const nameOrId = v.pipe(v.string(), v.minLength(1), v.maxLength(64));

export const RequestSchema = v.variant("cmd", [
  v.strictObject({ v: v.number(), id, cmd: v.literal("hello"), args: v.strictObject({ client: v.pipe(v.string(), v.maxLength(64)) }) }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("ping") }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("version") }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("status") }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("add"), args: v.strictObject({ rule: RuleSpecSchema, replace: v.optional(v.boolean()) }) }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("remove"), args: v.strictObject({ rule: nameOrId }) }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("list") }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("stats"), args: v.optional(v.strictObject({ rule: v.optional(nameOrId) })) }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("workers") }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("log-level"), args: v.optional(v.strictObject({ level: v.optional(v.picklist(LOG_LEVELS)) })) }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("reload") }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("config-show") }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("events") }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("trace-start"), args: v.strictObject({ rule: nameOrId, capture: v.optional(v.boolean()), all_unmatched: v.optional(v.boolean()) }) }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("trace-read"), args: v.strictObject({ session: v.pipe(v.string(), v.maxLength(64)) }) }),
  v.strictObject({ v: v.number(), id, cmd: v.literal("trace-stop"), args: v.strictObject({ session: v.pipe(v.string(), v.maxLength(64)) }) }),
]);
export type Request = v.InferOutput<typeof RequestSchema>;
export type Command = Request["cmd"];
export const COMMANDS: readonly Command[] = ["hello", "ping", "version", "status", "add", "remove", "list", "stats", "workers", "log-level", "reload", "config-show", "events", "trace-start", "trace-read", "trace-stop"];

/**
 * Requests that change rules, workers or logging: they need the admin right and are logged.
 * Read from the envelope, before the request's schema: a peer without the right never has its
 * arguments checked (a 64 KiB `add` of invalid outputs once drew a 3.5 MB answer).
 */
export function isChange(req: { cmd?: string; args?: unknown }): boolean {
  switch (req.cmd) {
    case "add":
    case "remove":
    case "reload":
    // A trace shows who sends what; a capture shows payloads.
    case "trace-start":
      return true;
    case "log-level":
      return typeof req.args === "object" && req.args !== null && (req.args as { level?: unknown }).level !== undefined;
    default:
      return false;
  }
}

/** After `events` is answered, the daemon sends {v, id, event} lines with the request's id. */
export const EventSchema = v.object({ v: v.number(), id: v.nullable(id), event: v.record(v.string(), v.unknown()) });

export type Response =
  | { v: number; id: string | number | null; ok: true; result: unknown }
  | { v: number; id: string | number | null; ok: false; error: { code: ErrorCode; message: string } };

export const ResponseSchema = v.variant("ok", [
  v.object({ v: v.number(), id: v.nullable(id), ok: v.literal(true), result: v.unknown() }),
  v.object({ v: v.number(), id: v.nullable(id), ok: v.literal(false), error: v.object({ code: v.string(), message: v.string() }) }),
]);

export function mismatchMessage(theirs: number, ours: number, who: "client" | "daemon"): string {
  return who === "daemon"
    ? `protocol mismatch: client speaks protocol ${theirs}, daemon speaks protocol ${ours}`
    : `protocol mismatch: daemon speaks protocol ${theirs}, client speaks protocol ${ours}`;
}
