/**
 * The measuring receiver's mode: every trial's sinks (every contender's and the calibration's:
 * the same measuring side for all) run `mcrelay sink --gro`, and each trial records it
 * (`env.sink_gro`), so the report can say which mode produced a figure. Results files from
 * before it was recorded ran plain sinks.
 *
 * Why GRO: mcrelay's egress sends UDP GSO batches; on veth such a batch crosses intact, and a
 * receiver without UDP_GRO has the kernel segment it into datagrams in udp_queue_rcv_skb, with
 * the socket work per datagram, all in the SENDER's softirq: it was charged to the relay. A
 * receiving host with GRO gets the batch as one buffer; the sink then splits it itself.
 */

/** The harness's sinks enable UDP_GRO. */
export const SINK_GRO = true;

export type SinkMode = "gro" | "plain";

/** argv of one trial sink. */
export function sinkArgv(mcrelay: string, listen: string, durationS: number, gro: boolean = SINK_GRO): string[] {
  return [mcrelay, "sink", "--listen", listen, "--duration", String(durationS), ...(gro ? ["--gro"] : []), "--json"];
}

/** The sinks' mode of a trial from its env (absent before it was recorded: plain). */
export function sinkModeOf(env: Record<string, unknown> | undefined): SinkMode {
  return env?.sink_gro === true ? "gro" : "plain";
}

const WHY_GRO =
  "sinks enable UDP_GRO: a GSO batch crossing veth intact is received as one buffer and split by the sink, as a receiving host with GRO would; " +
  "without it the receiver's per-datagram segmentation and socket work ran in the sending relay's softirq and was charged to the relay. " +
  "On a physical NIC without UDP segmentation offload the segmentation would be paid by the relay's send.";

/** The Method line about the sinks, for the modes of a report's trials. */
export function sinkModeMethod(modes: readonly SinkMode[]): string {
  const set = new Set(modes);
  const gro = `- **Sinks** (\`mcrelay sink --gro\`, the same for every contender and the calibration): ${WHY_GRO}`;
  const plain =
    "- **Sinks** (`mcrelay sink` without `--gro`, results recorded before the harness enabled UDP_GRO): plain receivers. mcrelay's GSO batches crossed veth intact and were segmented into datagrams " +
    "in the receiver's UDP receive path, which on veth runs in the sending relay's softirq: that per-datagram work was charged to mcrelay's CPU per packet here (a contender that sends datagrams one by one is not affected).";
  if (set.size === 0 || (set.size === 1 && set.has("gro"))) return gro;
  if (set.size === 1) return plain;
  return `- **Sinks differ between trials (GRO and plain: see the sink column of every trial).** With GRO: ${WHY_GRO}`;
}

/** One line for the top of the report. */
export function sinkModeText(modes: readonly SinkMode[]): string {
  const set = new Set(modes);
  if (set.size === 0) return "Sink mode: no trials.";
  if (set.size === 1 && set.has("gro")) return "**Sinks of every figure below: `mcrelay sink --gro`** (UDP_GRO: GSO batches received as one buffer, split by the sink).";
  if (set.size === 1) return "**Sinks of every figure below: plain `mcrelay sink`, without UDP_GRO** (recorded before the harness enabled it): mcrelay's CPU per packet includes the receivers' segmentation of its GSO batches (see Method).";
  return "**Sink modes differ between trials (GRO and plain): see the sink column of every trial.**";
}
