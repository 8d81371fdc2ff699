// `mcrelay trace RULE`: one line per packet of one rule (and per frame for its group that
// matched no rule), with the verdict and each output's result, until -c/--count records,
// --duration or Ctrl-C. Tracing is on only while this runs.
import { defineCommand } from "citty";
import * as v from "valibot";
import { logger } from "../log.ts";
import { OutputClosed, onOutputClosed } from "../terminal.ts";
import type { TraceRecordJson } from "../control/responses.ts";
import { checkFlags, intFlag, secondsFlag, validate } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { printJsonLine, printLine } from "./output.ts";
import { runTraceSession } from "./trace-session.ts";

const log = logger("trace");

/** Most records (or frames) `--count` may ask for. */
export const COUNT_MAX = 1_000_000_000;

const args = {
  rule: { type: "positional", description: "Rule (name or id)", required: true },
  count: { type: "string", alias: "c", valueHint: "N", description: `Stop after N packet records (1-${COUNT_MAX}) and exit 0, as tcpdump -c` },
  duration: { type: "string", valueHint: "SECONDS", description: "Stop after this many seconds" },
  ...socketArg,
  json: { type: "boolean", description: "One JSON object per record, one per line" },
} as const;

export function traceLine(r: TraceRecordJson): string {
  const time = r.time.slice(11, 23);
  const vlan = r.vlan === null ? "" : ` vlan ${r.vlan}`;
  const verdict = r.verdict === "parse_drop" ? `dropped (${r.reason})` : r.verdict === "matched" ? `matched ${r.rule}` : r.verdict.replace("_", " ");
  const outs = r.outputs.map((o) => `${o.to} ${o.result}`).join(", ");
  const more = r.outputs_total > r.outputs.length ? ` (+${r.outputs_total - r.outputs.length} outputs not traced)` : "";
  return `${time} ${r.interface}${vlan} ${r.src}:${r.src_port} > ${r.dst}:${r.dst_port} len ${r.length} ttl ${r.ttl} dscp ${r.dscp}: ${verdict}${outs ? ` -> ${outs}` : ""}${more}`;
}

export const traceFlags = v.object({ count: v.optional(intFlag(1, COUNT_MAX)), duration: v.optional(secondsFlag()) });

export default defineCommand({
  meta: { name: "trace", description: "Show each packet of one rule with its verdict and per-output result (tracing is on only while this runs)" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args, 1);
    const f = validate(traceFlags, { count: a.count, duration: a.duration });
    // `mcrelay trace cam | head -1`: when the reader goes, the session is stopped at once
    // (one trace at a time), then the command ends quietly, as `stats | head` does.
    const readerGone = new AbortController();
    onOutputClosed(() => readerGone.abort());
    await withClient(a.socket, async (c) => {
      try {
        const summary = await runTraceSession(
          c,
          { rule: a.rule, capture: false, count: f.count, durationS: f.duration, stop: readerGone.signal },
          (s) => log.info(`tracing rule ${s.rule} (${s.input} -> ${s.outputs.join(", ")}) on ${s.workers} worker(s); also frames for its group that match no rule`),
          (r) => (a.json ? printJsonLine(r) : printLine(traceLine(r))),
        );
        if (!readerGone.signal.aborted) log.info(`trace ended (${summary.stopped_by}): ${summary.records} records${summary.overflow ? `, ${summary.overflow} lost (the trace ring overflowed)` : ""}`);
      } catch (err) {
        if (!(err instanceof OutputClosed)) throw err;
      }
    });
  },
});
