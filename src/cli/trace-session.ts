// The client side of a trace session, shared by `trace` and `capture`: start it, read every
// 100 ms (which also keeps the daemon's lease on it), hand each record on, and stop it at
// the count (records output: exactly that many, however many more arrived), the duration,
// Ctrl-C or SIGTERM. A client that dies without stopping leaves the
// daemon to end the session when its lease runs out.
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
  o: { rule: string; capture: boolean; count?: number; durationS?: number },
  onStart: (s: TraceStart) => void,
  /** Outputs one record; `false`: it output nothing (a record without a frame in a capture), not counted. */
  onRecord: (r: TraceRecordJson) => boolean | void,
): Promise<TraceSummary> {
  const start = (await c.request("trace-start", { rule: o.rule, capture: o.capture })) as TraceStart;
  onStart(start);
  let stoppedBy: TraceSummary["stopped_by"] | null = null;
  const onSignal = () => {
    stoppedBy ??= "signal";
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
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
  try {
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
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  const last = (await c.request("trace-stop", { session: start.session })) as { records: TraceRecordJson[]; overflow: number };
  overflow = last.overflow;
  if ((stoppedBy as TraceSummary["stopped_by"] | null) !== "count") take(last.records);
  return { start, records, overflow, stopped_by: stoppedBy ?? "signal" };
}
