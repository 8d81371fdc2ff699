// `mcrelay capture RULE -w FILE|-`: the input frames of one rule as the dataplane received them
// (before any rewrite), written as a pcap file tcpdump and Wireshark read; `-w -` writes to
// stdout (`mcrelay capture cam1 -w - | tcpdump -r -`). Frames for the rule's group that matched
// no rule are included too (a wrong port or source). Capture is on only while this runs.
import { closeSync, openSync, writeSync } from "node:fs";
import { defineCommand } from "citty";
import { UsageError } from "../errors.ts";
import { logger } from "../log.ts";
import { validate } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { pcapHeader, pcapRecord } from "./pcap.ts";
import { runTraceSession } from "./trace-session.ts";
import { COUNT_MAX, traceFlags } from "./trace.ts";

const log = logger("capture");

const args = {
  rule: { type: "positional", description: "Rule (name or id)", required: true },
  write: { type: "string", alias: "w", description: "pcap file to write, or - for stdout", required: true },
  count: { type: "string", alias: "c", valueHint: "N", description: `Stop after N captured frames (1-${COUNT_MAX}) and exit 0, as tcpdump -c` },
  duration: { type: "string", valueHint: "SECONDS", description: "Stop after this many seconds" },
  ...socketArg,
} as const;

export default defineCommand({
  meta: { name: "capture", description: "Write one rule's input frames (before rewrite) to a pcap file" },
  args,
  async run({ args: a }) {
    const f = validate(traceFlags, { count: a.count, duration: a.duration });
    if (!a.write) throw new UsageError("-w FILE (or -w - for stdout) is required");
    let fd: number;
    try {
      fd = a.write === "-" ? 1 : openSync(a.write, "w", 0o640);
    } catch (err) {
      throw new UsageError(`-w ${a.write}: cannot open: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const write = (b: Uint8Array) => {
      let off = 0;
      while (off < b.length) off += writeSync(fd, b, off);
    };
    write(pcapHeader());
    let truncated = 0;
    try {
      await withClient(a.socket, async (c) => {
        const summary = await runTraceSession(
          c,
          { rule: a.rule, capture: true, count: f.count, durationS: f.duration },
          (s) => log.info(`capturing rule ${s.rule} (${s.input}) to ${a.write === "-" ? "stdout" : a.write}`),
          (r) => {
            if (!r.frame) return false;
            const frame = Buffer.from(r.frame, "base64");
            if (frame.length < r.wire_length) truncated += 1;
            write(pcapRecord(BigInt(r.time_ns), frame, r.wire_length, r.frame_tag ?? null));
            return true;
          },
        );
        log.info(`capture ended (${summary.stopped_by}): ${summary.records} frames${truncated ? `, ${truncated} cut to the first 1920 bytes` : ""}${summary.overflow ? `, ${summary.overflow} lost (the trace ring overflowed)` : ""}`);
      });
    } finally {
      if (fd !== 1) closeSync(fd);
    }
  },
});
