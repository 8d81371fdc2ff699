// `mcrelay sink`: joins a group (or listens on a unicast address) and measures what arrives:
// loss, duplicates, reordering, payload pattern errors, one-way latency, per stream.
import { defineCommand } from "citty";
import * as v from "valibot";
import { endpointSchema, formatEndpoint } from "../base/endpoint.ts";
import { EXIT, UsageError } from "../errors.ts";
import type { SinkOutput } from "./output-schemas.ts";
import { LIMITS } from "../native/abi.ts";
import { Sink, type SinkStream } from "../native/lib.ts";
import { lookupLink } from "../rules/links.ts";
import { checkFlags, intFlag, jsonArg, secondsFlag, validate } from "./args.ts";
import { printJson, printLine, printTable } from "./output.ts";
import { watchStop } from "./stop-signal.ts";
import { logger } from "../log.ts";

const log = logger("sink");

/** Enough for a burst of about 25,000 datagrams of 1316 bytes while the sink is descheduled. */
const RCVBUF_DEFAULT_BYTES = 32 * 1024 * 1024;

const args = {
  listen: { type: "string", alias: "l", valueHint: "ADDR:PORT[@IFACE]", description: "GROUP:PORT@IFACE to join, or ADDR:PORT to listen on", required: true },
  expect: { type: "string", alias: "e", valueHint: "N", description: "Packets expected per stream; loss is counted against it, and fewer than N in any stream (or no stream at all) exits 9" },
  count: { type: "string", alias: "c", valueHint: "N", description: "Stop after receiving this many packets" },
  duration: { type: "string", alias: "d", valueHint: "SECONDS", description: "Stop after this many seconds" },
  idle: { type: "string", alias: "i", valueHint: "SECONDS", description: "Stop after this many seconds without packets (once one arrived)" },
  rcvbuf: { type: "string", valueHint: "BYTES", description: "Receive buffer to ask for (default 32 MiB); without CAP_NET_ADMIN the kernel caps it at net.core.rmem_max, and the report's rcvbuf_bytes says what was granted" },
  gro: { type: "boolean", description: "Enable UDP_GRO: a UDP GSO batch arrives as one buffer and is split at its segment size, as a receiving host with GRO would (counted in gro_batches)" },
  ...jsonArg,
} as const;

const Schema = v.object({
  listen: endpointSchema("sink"),
  expect: v.optional(intFlag(0, Number.MAX_SAFE_INTEGER)),
  count: v.optional(intFlag(1, Number.MAX_SAFE_INTEGER)),
  duration: v.optional(secondsFlag()),
  idle: v.optional(secondsFlag()),
  rcvbuf: v.optional(intFlag(1, 2 ** 31 - 1), String(RCVBUF_DEFAULT_BYTES)),
});

export interface StreamReport {
  stream: number;
  /** 0 for the stream's first run; +1 each time its generator restarted (seq back to 0). */
  run: number;
  /** Lowest sequence number of the run: loss is counted from it, not from 0. */
  first_seq: number;
  received: number;
  lost: number;
  duplicates: number;
  reordered: number;
  late: number;
  bytes: number;
  pattern_errors: number;
  latency_us: { p50: number; p99: number; p999: number; max: number; mean: number };
}

export function streamReport(s: SinkStream, expect: number | undefined): StreamReport {
  // Late datagrams (more than the window behind max_seq) may be duplicates: not unique.
  const unique = Number(s.received - s.duplicates - s.late);
  // From the run's first number: a sink started after its generator lost nothing before it.
  const expected = expect ?? Number(s.max_seq - s.min_seq) + 1;
  const us = (ns: bigint) => Number(ns) / 1000;
  return {
    stream: Number(s.stream_id),
    run: Number(s.run),
    first_seq: Number(s.min_seq),
    received: unique,
    lost: Math.max(0, expected - unique),
    duplicates: Number(s.duplicates),
    reordered: Number(s.reordered),
    late: Number(s.late),
    bytes: Number(s.bytes),
    pattern_errors: Number(s.pattern_errors),
    latency_us: {
      p50: us(s.lat_p50_ns),
      p99: us(s.lat_p99_ns),
      p999: us(s.lat_p999_ns),
      max: us(s.lat_max_ns),
      mean: s.lat_count > 0n ? Number(s.lat_sum_ns / s.lat_count) / 1000 : 0,
    },
  };
}

export default defineCommand({
  meta: { name: "sink", description: "Receive and measure a stream from `mcrelay gen`" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    const input = validate(Schema, { listen: a.listen, expect: a.expect, count: a.count, duration: a.duration, idle: a.idle, rcvbuf: a.rcvbuf });
    let ifindex = 0;
    if (input.listen.iface) {
      const link = lookupLink(input.listen.iface);
      if (!link) throw new UsageError(`--listen: interface ${input.listen.iface} does not exist`);
      ifindex = link.ifindex;
    }
    const gro = a.gro === true;
    const sink = Sink.open({ addr: input.listen.addr.bytes, port: input.listen.port, ifindex, rcvbufBytes: input.rcvbuf, gro });
    // SO_RCVBUF reads back twice the granted size: below the request means it was capped.
    const rcvbufBytes = Number(sink.globals().rcvbuf_bytes);
    if (rcvbufBytes < input.rcvbuf) {
      log.warn(`receive buffer: asked for ${input.rcvbuf} bytes, got ${rcvbufBytes} (net.core.rmem_max applies without CAP_NET_ADMIN): a burst the socket cannot hold is dropped here and counted as lost (see socket_drops)`);
    }
    log.info(`listening on ${formatEndpoint(input.listen)}${gro ? " (UDP_GRO)" : ""}`);
    const stop = watchStop(input.duration);
    const startedAt = performance.now();
    let received = 0;
    let lastRxAt = 0;
    try {
      while (!stop.stopped) {
        const n = sink.run(50);
        const now = performance.now();
        if (n > 0) {
          received += n;
          lastRxAt = now;
        }
        if (input.count !== undefined && received >= input.count) break;
        if (input.idle !== undefined && lastRxAt > 0 && now - lastRxAt >= input.idle * 1000) break;
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      stop.dispose();
    }
    // streams() summarizes, which also reads the socket's drop count: before globals().
    const streams = sink.streams().map((s) => streamReport(s, input.expect));
    const globals = sink.globals();
    sink.close();
    const totals = {
      received: streams.reduce((n, s) => n + s.received, 0),
      lost: streams.reduce((n, s) => n + s.lost, 0) + (streams.length === 0 && input.expect ? input.expect : 0),
      duplicates: streams.reduce((n, s) => n + s.duplicates, 0),
      reordered: streams.reduce((n, s) => n + s.reordered, 0),
      pattern_errors: streams.reduce((n, s) => n + s.pattern_errors, 0),
      foreign: Number(globals.foreign),
      datagrams: Number(globals.datagrams),
      bytes: Number(globals.bytes),
      gro_batches: Number(globals.gro_batches),
      gro_datagrams: Number(globals.gro_datagrams),
      control_truncated: Number(globals.control_truncated),
      socket_drops: Number(globals.socket_drops),
      streams_overflow: Number(globals.streams_overflow),
      latency_clamped: Number(globals.latency_clamped),
    };
    const short = input.expect === undefined ? [] : streams.filter((s) => s.received < input.expect!);
    const complete = input.expect === undefined ? null : short.length === 0 && (streams.length > 0 || input.expect === 0);
    const result: SinkOutput = {
      listen: formatEndpoint(input.listen),
      duration_s: Number(((performance.now() - startedAt) / 1000).toFixed(3)),
      expect: input.expect ?? null,
      complete,
      gro,
      rcvbuf_bytes: rcvbufBytes,
      totals,
      streams,
    };
    if (totals.socket_drops > 0) log.warn(`${totals.socket_drops} datagram(s) dropped at the sink's own socket (receive buffer full): they are in lost, but the relay did deliver them; use a larger --rcvbuf (as root) or a less busy host`);
    if (totals.streams_overflow > 0) log.warn(`${totals.streams_overflow} datagram(s) of streams beyond the first ${LIMITS.sinkStreamsMax} were not tracked`);
    if (totals.latency_clamped > 0) log.warn(`${totals.latency_clamped} datagram(s) carried a send time ahead of this host's clock (clock skew): their latency was taken as 0`);
    if (totals.control_truncated > 0) log.warn(`${totals.control_truncated} message(s) arrived with truncated control data (MSG_CTRUNC): each was counted as one datagram`);
    if (complete === false) {
      // Loss is the sink's answer, not a crash: the report is printed, and the exit code says it.
      process.exitCode = EXIT.shortfall;
      const detail = streams.length === 0 ? "no stream arrived" : short.map((s) => `stream ${s.stream} received ${s.received}`).join(", ");
      log.error(`expected ${input.expect} packets per stream: ${detail}`);
    }
    if (a.json) {
      printJson(result);
      return;
    }
    printLine(`received ${totals.received.toLocaleString("en-US")} packets on ${result.listen}, lost ${totals.lost} (${totals.socket_drops} at this socket), duplicates ${totals.duplicates}, reordered ${totals.reordered}, pattern errors ${totals.pattern_errors}, foreign ${totals.foreign}${gro ? `, GRO buffers ${totals.gro_batches}` : ""}`);
    if (streams.length) {
      printTable(
        ["stream", "run", "received", "lost", "dup", "reord", "pattern err", "p50 us", "p99 us", "max us"],
        streams.map((s) => [s.stream, s.run, s.received, s.lost, s.duplicates, s.reordered, s.pattern_errors, Math.round(s.latency_us.p50), Math.round(s.latency_us.p99), Math.round(s.latency_us.max)]),
      );
    }
  },
});
