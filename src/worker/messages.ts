// Messages between the supervisor and a worker. Control messages travel over Bun's IPC
// channel as JSON; the socketpair (fd 3 in the worker) carries descriptors and wake-ups.
// Both directions are validated with valibot on receipt.
import * as v from "valibot";
import { LOG_LEVELS } from "../log.ts";

/** First message on the socketpair, with the AF_PACKET socket attached. */
export const PacketSocketSchema = v.strictObject({
  kind: v.literal("packet-socket"),
  ifname: v.string(),
  ifindex: v.pipe(v.number(), v.integer(), v.minValue(1)),
  /** This worker's index among the interface's workers, and how many there are. */
  slot: v.pipe(v.number(), v.integer(), v.minValue(0)),
  members: v.pipe(v.number(), v.integer(), v.minValue(1)),
  geometry: v.strictObject({
    blockBytes: v.pipe(v.number(), v.integer(), v.minValue(4096)),
    blockCount: v.pipe(v.number(), v.integer(), v.minValue(1)),
    frameBytes: v.pipe(v.number(), v.integer(), v.minValue(1)),
    frameCount: v.pipe(v.number(), v.integer(), v.minValue(1)),
  }),
  /** The CPU to pin the dataplane thread to (mcr's `pinning`), or null: not pinned. */
  cpu: v.nullable(v.pipe(v.number(), v.integer(), v.minValue(0))),
  /** Who the worker becomes after taking the socket (null: stay as started, tests only). */
  user: v.nullable(v.strictObject({ name: v.string(), uid: v.pipe(v.number(), v.integer(), v.minValue(0)), gid: v.pipe(v.number(), v.integer(), v.minValue(0)) })),
});
export type PacketSocketMessage = v.InferOutput<typeof PacketSocketSchema>;

export const ToWorkerSchema = v.variant("type", [
  // The table itself travels as bytes on the socketpair, just before this message.
  v.strictObject({ type: v.literal("table"), id: v.number(), generation: v.number(), hash: v.string(), bytes: v.pipe(v.number(), v.integer(), v.minValue(0)) }),
  v.strictObject({ type: v.literal("ping"), id: v.number() }),
  v.strictObject({ type: v.literal("log-level"), id: v.number(), level: v.picklist(LOG_LEVELS) }),
  v.strictObject({ type: v.literal("stop"), id: v.number() }),
]);
export type ToWorker = v.InferOutput<typeof ToWorkerSchema>;

export const FromWorkerSchema = v.variant("type", [
  v.strictObject({
    type: v.literal("ready"),
    pid: v.number(),
    /** The confinement probes the worker saw refused after its drop, and their cost; null without a drop. */
    confinement: v.nullable(v.strictObject({ probes: v.pipe(v.number(), v.integer(), v.minValue(1)), ms: v.number() })),
  }),
  v.strictObject({ type: v.literal("applied"), id: v.number(), generation: v.number(), hash: v.string() }),
  v.strictObject({ type: v.literal("pong"), id: v.number(), generation: v.number(), hash: v.string() }),
  v.strictObject({ type: v.literal("ok"), id: v.number() }),
  v.strictObject({ type: v.literal("error"), id: v.number(), message: v.string() }),
  v.strictObject({ type: v.literal("fatal"), message: v.string() }),
]);
export type FromWorker = v.InferOutput<typeof FromWorkerSchema>;
