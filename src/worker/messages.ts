// Messages between the supervisor and a worker (zig/worker.zig: one process serving the rings
// of several interfaces, each at a position among its packet sockets). Everything travels on the
// SOCK_SEQPACKET socketpair (fd 3 in the worker), one datagram per message, in order: to the
// worker, JSON messages (set-up and ring messages with their descriptors, requests) and rule
// tables (binary, each just before the `table` request naming it); from the worker, one JSON
// object per datagram, ended by a newline (read as a stream here). The worker checks what it
// receives by hand (zig/worker.zig parseMessage, the same constraints as these schemas); the
// supervisor validates what it sends to the worker and what it receives with these schemas.
import * as v from "valibot";
import { LOG_LEVELS } from "../log.ts";
import { LIMITS } from "../native/abi.ts";

const index = v.pipe(v.number(), v.integer(), v.minValue(0));
const powerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

/**
 * First message on the socketpair, with the worker's packet sockets attached: one per position
 * (0 .. positions-1), set up for an interface or blank (set up later by the supervisor, when it
 * adds an interface). `rings` ring messages follow at once.
 */
export const WorkerSetupSchema = v.strictObject({
  kind: v.literal("worker"),
  /** This worker's index among the workers, and how many there are. */
  index,
  workers: v.pipe(v.number(), v.integer(), v.minValue(1)),
  positions: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(LIMITS.ringsPerWorkerMax)),
  rings: index,
  /** The CPU to pin the dataplane thread to (mcr's `pinning`), or null: not pinned. */
  cpu: v.nullable(index),
  /** Who the worker becomes after taking the sockets (null: stay as started, tests only). */
  user: v.nullable(v.strictObject({ name: v.string(), uid: index, gid: index })),
});
export type WorkerSetupMessage = v.InferOutput<typeof WorkerSetupSchema>;

/**
 * A ring to serve: the packet socket at `position` is set up for this interface. Carries its
 * counter memfd. The worker checks the same (zig/worker.zig parseChecked).
 */
export const RingSchema = v.pipe(
  v.strictObject({
    kind: v.literal("ring"),
    position: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(LIMITS.ringsPerWorkerMax - 1)),
    ifname: v.string(),
    ifindex: v.pipe(v.number(), v.integer(), v.minValue(1)),
    /** This ring's index among the interface's sockets (its fanout member), and how many there are. */
    slot: index,
    members: v.pipe(v.number(), v.integer(), v.minValue(1)),
    /** As zig/ring.zig `geometry` makes it; the worker cannot ask the kernel, so it checks the same. */
    geometry: v.pipe(
      v.strictObject({
        blockBytes: v.pipe(v.number(), v.integer(), v.check(powerOfTwo, "geometry: blockBytes is not a power of two"), v.minValue(LIMITS.ringBlockBytesMin), v.maxValue(LIMITS.ringBlockBytesMax)),
        blockCount: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(LIMITS.ringBlocksMax)),
        frameBytes: v.pipe(v.number(), v.integer(), v.check(powerOfTwo, "geometry: frameBytes is not a power of two"), v.minValue(LIMITS.ringFrameBytesMin)),
        frameCount: v.pipe(v.number(), v.integer(), v.minValue(1)),
      }),
      v.forward(
        v.check((g) => g.frameBytes <= g.blockBytes, (issue) => `geometry: frameBytes ${(issue.input as { frameBytes: number }).frameBytes} is more than blockBytes`),
        ["frameBytes"],
      ),
      v.forward(
        v.check((g) => g.frameCount === (g.blockBytes / g.frameBytes) * g.blockCount, "geometry: frameCount is not blockBytes / frameBytes x blockCount"),
        ["frameCount"],
      ),
    ),
  }),
  v.forward(
    v.check((r) => r.slot < r.members, (issue) => {
      const r = issue.input as { slot: number; members: number };
      return `slot: ${r.slot} is not below members (${r.members})`;
    }),
    ["slot"],
  ),
);
export type RingMessage = v.InferOutput<typeof RingSchema>;

const position = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(LIMITS.ringsPerWorkerMax - 1));

export const ToWorkerSchema = v.variant("type", [
  // The table itself travels as bytes on the socketpair, just before this message.
  v.strictObject({ type: v.literal("table"), id: v.number(), position, generation: v.number(), hash: v.string(), bytes: v.pipe(v.number(), v.integer(), v.minValue(0)) }),
  // The ring message (with its counter memfd) travels on the socketpair just before this one.
  v.strictObject({ type: v.literal("ring-add"), id: v.number(), position }),
  // keep: the packet socket stays open (the supervisor makes it blank again and reuses the position).
  v.strictObject({ type: v.literal("ring-drop"), id: v.number(), position, keep: v.optional(v.boolean()) }),
  v.strictObject({ type: v.literal("ping"), id: v.number(), position }),
  v.strictObject({ type: v.literal("log-level"), id: v.number(), level: v.picklist(LOG_LEVELS) }),
  v.strictObject({ type: v.literal("stop"), id: v.number() }),
]);
export type ToWorker = v.InferOutput<typeof ToWorkerSchema>;

export const FromWorkerSchema = v.variant("type", [
  v.strictObject({
    type: v.literal("ready"),
    pid: v.number(),
    /**
     * The confinement probes the worker saw refused after its drop, and their cost (0 probes: no
     * packet socket was set up at start-up; each is probed when its ring is added); null without a drop.
     */
    confinement: v.nullable(v.strictObject({ probes: v.pipe(v.number(), v.integer(), v.minValue(0)), ms: v.number() })),
  }),
  v.strictObject({ type: v.literal("applied"), id: v.number(), generation: v.number(), hash: v.string() }),
  v.strictObject({ type: v.literal("pong"), id: v.number(), generation: v.number(), hash: v.string() }),
  v.strictObject({ type: v.literal("ok"), id: v.number() }),
  v.strictObject({ type: v.literal("error"), id: v.number(), message: v.string() }),
  v.strictObject({
    type: v.literal("fatal"),
    message: v.string(),
    /** The failure is the packet socket's at this position (as the supervisor set it up, e.g. its filter not locked). */
    position: v.optional(position),
  }),
]);
export type FromWorker = v.InferOutput<typeof FromWorkerSchema>;
