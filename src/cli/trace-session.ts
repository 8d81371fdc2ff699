// The client side of a trace session, shared by `trace` and `capture`: start it, read every
// 100 ms (which also keeps the daemon's lease on it), hand each record on, and stop it at
// the count (records output: exactly that many, however many more arrived), the duration,
// Ctrl-C, SIGTERM or `stop` (the output's reader went away). Whatever ends it, an error
// included (a write that failed), the session is stopped before this returns or throws: one
// trace runs at a time, and a session left to the daemon's lease makes every other trace
// `busy` for up to 6 s. Only a client killed outright leaves it to the lease.
import type { ControlClient } from "../control/client.ts";
import type { TraceRecordJson } from "../control/responses.ts";

export const READ_INTERVAL_MS = 100;

export interface TraceStart {
  session: string;
  rule: string;
  id: string;
  interface: string;
  input: string;
  outputs: string[];
  capture: boolean;
  workers: number;
}

export interface TraceSummary {
  start: TraceStart;
  records: number;
  overflow: number;
  stopped_by: "count" | "duration" | "signal";
}

export async function runTraceSession(
  c: ControlClient,
  o: { rule: string; capture: boolean; count?: number; durationS?: number; stop?: AbortSignal },
  onStart: (s: TraceStart) => void,
  /** Outputs one record; `false`: it output nothing (a record without a frame in a capture), not counted. */
  onRecord: (r: TraceRecordJson) => boolean | void,
): Promise<TraceSummary> {
  const start = (await c.request("trace-start", { rule: o.rule, capture: o.capture })) as TraceStart;
  let stoppedBy: TraceSummary["stopped_by"] | null = null;
  const onSignal = () => {
    stoppedBy ??= "signal";
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  o.stop?.addEventListener("abort", onSignal);
  const deadline = o.durationS ? Date.now() + o.durationS * 1000 : Infinity;
  let records = 0;
  let overflow = 0;
  const take = (list: TraceRecordJson[]) => {
    for (const r of list) {
      if (o.count !== undefined && records >= o.count) break;
      if (onRecord(r) === false) continue;
      records += 1;
    }
    if (o.count !== undefined && records >= o.count) stoppedBy ??= "count";
  };
  let stopped = false;
  try {
    onStart(start);
    while (stoppedBy === null) {
      const r = (await c.request("trace-read", { session: start.session })) as { records: TraceRecordJson[]; overflow: number };
      overflow = r.overflow;
      take(r.records);
      if (stoppedBy !== null) break;
      if (Date.now() >= deadline) {
        stoppedBy = "duration";
        break;
      }
      await Bun.sleep(Math.min(READ_INTERVAL_MS, Math.max(0, deadline - Date.now())));
    }
    const last = (await c.request("trace-stop", { session: start.session })) as { records: TraceRecordJson[]; overflow: number };
    stopped = true;
    overflow = last.overflow;
    if ((stoppedBy as TraceSummary["stopped_by"] | null) !== "count") take(last.records);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    o.stop?.removeEventListener("abort", onSignal);
    // Ended by an error (onStart or onRecord threw, a read failed): stop it anyway, best
    // effort (the connection may be what failed; the lease covers that case).
    if (!stopped) await c.request("trace-stop", { session: start.session }).catch(() => {});
  }
  return { start, records, overflow, stopped_by: stoppedBy ?? "signal" };
}
