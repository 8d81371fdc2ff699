// `mcrelay capture RULE -w FILE|-`: the input frames of one rule as the dataplane received them
// (before any rewrite), written as a pcap file tcpdump and Wireshark read; `-w -` writes to
// stdout (`mcrelay capture cam1 -w - | tcpdump -r -`). Frames for the rule's group that matched
// no rule are included too (a wrong port or source). Capture is on only while this runs.
// A file is written as FILE.tmp (created new, mode 0640: it holds payloads) only once the
// daemon agreed to capture, and renamed to FILE when the capture ends: a refused or failed
// capture leaves an existing FILE as it was.
import { closeSync, constants, openSync, renameSync, unlinkSync, writeSync } from "node:fs";
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
    const file = a.write;
    const out = file === "-" ? null : new PcapFile(file);
    let fd = 1;
    const write = (b: Uint8Array) => {
      let off = 0;
      while (off < b.length) off += writeSync(fd, b, off);
    };
    let truncated = 0;
    let frames = 0;
    let ended = false;
    try {
      await withClient(a.socket, async (c) => {
        const summary = await runTraceSession(
          c,
          { rule: a.rule, capture: true, count: f.count, durationS: f.duration },
          (s) => {
            if (out) fd = out.open();
            write(pcapHeader());
            log.info(`capturing rule ${s.rule} (${s.input}) to ${out ? file : "stdout"}`);
          },
          (r) => {
            if (!r.frame) return false;
            const frame = Buffer.from(r.frame, "base64");
            if (frame.length < r.wire_length) truncated += 1;
            write(pcapRecord(BigInt(r.time_ns), frame, r.wire_length, r.frame_tag ?? null));
            frames += 1;
            return true;
          },
        );
        out?.commit();
        ended = true;
        log.info(`capture ended (${summary.stopped_by}): ${summary.records} frames${truncated ? `, ${truncated} cut to the first 1920 bytes` : ""}${summary.overflow ? `, ${summary.overflow} lost (the trace ring overflowed)` : ""}`);
      });
    } finally {
      if (out && !ended) out.abandon(frames);
    }
  },
});

/** FILE.tmp while the capture runs, FILE once it ended; an existing FILE is replaced only then. */
class PcapFile {
  readonly #file: string;
  readonly #tmp: string;
  #fd: number | null = null;

  constructor(file: string) {
    this.#file = file;
    this.#tmp = `${file}.tmp`;
  }

  /** Creates FILE.tmp, new (never another's file, nor a link), readable by its group at most. */
  open(): number {
    try {
      this.#fd = openSync(this.#tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o640);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      const why = code === "EEXIST" ? `${this.#tmp} exists (another capture writes it, or one was killed: remove it)` : `cannot create ${this.#tmp}: ${code}`;
      throw new UsageError(`-w ${this.#file}: ${why}`);
    }
    return this.#fd;
  }

  commit(): void {
    if (this.#fd === null) return;
    closeSync(this.#fd);
    this.#fd = null;
    renameSync(this.#tmp, this.#file);
  }

  /**
   * The capture failed after it began: FILE is left alone. Frames already written stay in
   * FILE.tmp (said on stderr); an empty one is removed.
   */
  abandon(frames: number): void {
    if (this.#fd === null) return;
    closeSync(this.#fd);
    this.#fd = null;
    if (frames > 0) {
      log.warn(`capture failed: ${frames} frames kept in ${this.#tmp}, ${this.#file} was left as it was`);
      return;
    }
    try {
      unlinkSync(this.#tmp);
    } catch {
      // Gone already: nothing to clean.
    }
  }
}
