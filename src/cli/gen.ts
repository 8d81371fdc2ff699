// `mcrelay gen`: a paced traffic generator whose payloads the sink can check (stream id,
// sequence number, send timestamp, deterministic pattern).
import { defineCommand } from "citty";
import * as v from "valibot";
import { isMulticast } from "../base/address.ts";
import { endpointSchema, formatEndpoint } from "../base/endpoint.ts";
import { readFileSync } from "node:fs";
import { EXIT, NativeError, PermissionError, SystemError, UsageError } from "../errors.ts";
import { TTL_MAX, TTL_MIN } from "../limits.ts";
import { LIMITS, SIZE } from "../native/abi.ts";
import { Generator } from "../native/lib.ts";
import { lookupLink } from "../rules/links.ts";
import { checkFlags, intFlag, jsonArg, secondsFlag, validate } from "./args.ts";
import { printJson, printLine, formatRate } from "./output.ts";
import type { GenOutputSchema } from "./output-schemas.ts";
import { watchStop } from "./stop-signal.ts";
import { logger } from "../log.ts";

const log = logger("gen");

const args = {
  to: { type: "string", alias: "t", valueHint: "ADDR:PORT[@IFACE]", description: "Destination ADDR:PORT[@IFACE] (multicast needs @IFACE)", required: true },
  rate: { type: "string", alias: "r", valueHint: "PPS", description: "Packets per second (default 1000; 0 = as fast as possible)" },
  count: { type: "string", alias: "c", valueHint: "N", description: "Stop after this many packets" },
  duration: { type: "string", alias: "d", valueHint: "SECONDS", description: "Stop after this many seconds" },
  size: { type: "string", valueHint: "BYTES", description: `Payload bytes (${SIZE.payloadHeader}-${LIMITS.udpPayloadMax}, default 1316)` },
  ttl: { type: "string", valueHint: "1-255", description: "TTL (default 8)" },
  stream: { type: "string", valueHint: "ID", description: "Stream id carried in every payload (default 1)" },
  mode: {
    type: "enum",
    options: ["udp", "raw"] as string[],
    description:
      "udp (default): a UDP socket, the kernel's whole send path; raw: prebuilt Ethernet frames on a packet socket past the qdisc (IPv4 multicast with @IFACE, needs CAP_NET_RAW), a cheaper instrument for benchmarks",
  },
  ...jsonArg,
} as const;

const Schema = v.object({
  to: endpointSchema("gen"),
  rate: v.optional(intFlag(0, 100_000_000)),
  count: v.optional(intFlag(1, Number.MAX_SAFE_INTEGER)),
  duration: v.optional(secondsFlag()),
  size: v.optional(intFlag(SIZE.payloadHeader, LIMITS.udpPayloadMax)),
  ttl: v.optional(intFlag(TTL_MIN, TTL_MAX)),
  stream: v.optional(intFlag(0, 0xffffffff)),
  mode: v.optional(v.picklist(["udp", "raw"], "must be udp or raw")),
});

export default defineCommand({
  meta: { name: "gen", description: "Send a paced, checkable UDP stream" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    const input = validate(Schema, { to: a.to, rate: a.rate, count: a.count, duration: a.duration, size: a.size, ttl: a.ttl, stream: a.stream, mode: a.mode });
    let ifindex = 0;
    if (input.to.iface) {
      const link = lookupLink(input.to.iface);
      if (!link) throw new UsageError(`--to: interface ${input.to.iface} does not exist`);
      ifindex = link.ifindex;
    }
    const mode = input.mode ?? "udp";
    if (mode === "raw" && !(input.to.addr.family === 4 && isMulticast(input.to.addr) && input.to.iface)) {
      throw new UsageError(`--mode raw: --to must be an IPv4 multicast group with @IFACE (raw frames take their MAC from the group; got ${formatEndpoint(input.to)})`);
    }
    const rate = input.rate ?? 1000;
    const size = input.size ?? 1316;
    let gen: Generator;
    try {
      gen = Generator.open({
        addr: input.to.addr.bytes,
        port: input.to.port,
        ttl: input.ttl ?? 8,
        mode,
        ifindex,
        size,
        streamId: input.stream ?? 1,
        ratePps: rate,
        count: input.count ?? 0,
        durationNs: input.duration ? BigInt(Math.round(input.duration * 1e9)) : 0n,
      });
    } catch (err) {
      throw mode === "raw" ? explainRawOpen(err, input.to.iface!, size) : err;
    }
    const stop = watchStop();
    log.debug(`sending to ${formatEndpoint(input.to)} at ${rate || "max"} pps`);
    try {
      // Slices of 100 ms let signals in; the native side keeps the pacing across slices.
      while (!stop.stopped) {
        if (gen.run(100)) break;
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      stop.dispose();
    }
    const c = gen.counters();
    gen.close();
    const sent = Number(c.sent);
    const spanS = c.last_ns > c.started_ns ? Number(c.last_ns - c.started_ns) / 1e9 : 0;
    const achieved = sent > 1 && spanS > 0 ? (sent - 1) / spanS : 0;
    const result = {
      to: formatEndpoint(input.to),
      mode,
      sent,
      bytes: Number(c.bytes),
      send_errors: Number(c.send_errors),
      buffer_full_waits: Number(c.eagain),
      schedule_slips: Number(c.schedule_slips),
      duration_s: Number(spanS.toFixed(6)),
      rate_pps: Math.round(achieved),
      stopped_by: stop.reason ?? "done",
    } satisfies v.InferOutput<typeof GenOutputSchema>;
    if (result.schedule_slips > 0) {
      log.warn(`fell more than 100 ms behind the schedule ${result.schedule_slips} time(s) (stopped or descheduled): the packets due meanwhile were skipped, not sent in a burst`);
    }
    const exitCode = genExitCode(sent, result.send_errors);
    if (exitCode !== EXIT.ok) {
      process.exitCode = exitCode;
      log.error(`every send to ${result.to} failed (${result.send_errors} send errors): no route, interface down, or nobody listening on a unicast destination`);
    }
    if (a.json) printJson(result);
    else printLine(`sent ${sent.toLocaleString("en-US")} packets to ${result.to} in ${spanS.toFixed(2)} s (${formatRate(achieved, "pps")}), ${result.send_errors} send errors${result.schedule_slips ? `, ${result.schedule_slips} schedule slips` : ""}`);
  },
});

/** Raw mode's open errors with what to do about them: the MTU that --size exceeds, the capability. */
function explainRawOpen(err: unknown, iface: string, size: number): unknown {
  if (!(err instanceof NativeError)) return err;
  if (err.code === "EMSGSIZE") {
    const mtu = interfaceMtu(iface);
    const most = mtu === null ? "" : ` (MTU ${mtu}: at most ${mtu - 28} payload bytes)`;
    return new SystemError(`--size ${size}: a raw frame of that payload does not fit ${iface}'s MTU${most}; raw frames are never fragmented (--mode udp fragments)`);
  }
  if (err.code === "EPERM" || err.code === "EACCES") {
    return new PermissionError(`--mode raw: opening an AF_PACKET socket on ${iface}: ${err.code}: needs CAP_NET_RAW (run as root, or setcap cap_net_raw+ep on the binary)`);
  }
  return err;
}

function interfaceMtu(iface: string): number | null {
  try {
    const mtu = Number.parseInt(readFileSync(`/sys/class/net/${iface}/mtu`, "utf8"), 10);
    return Number.isFinite(mtu) ? mtu : null;
  } catch {
    return null;
  }
}

/**
 * Nothing left the host and sends failed (no route, interface gone): not a measurement of
 * anything, so exit 7 (system, like a native failure at open); the report is printed as usual.
 * Some errors among sent datagrams exit 0: the sink counts those as loss.
 */
export function genExitCode(sent: number, sendErrors: number): number {
  return sent === 0 && sendErrors > 0 ? EXIT.system : EXIT.ok;
}
