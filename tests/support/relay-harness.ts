/**
 * Shared pieces of the kernel integration tests: the standard relay topology (a generator
 * namespace, a relay namespace, N sink namespaces, one veth per hop), how to start mcrelay
 * (under bun or the compiled executable), a process wrapper that collects stdout and stderr and
 * waits for readiness lines, and an injector of raw Ethernet frames for the cases the kernel's
 * own UDP stack would never send (bad checksums, lying UDP lengths).
 *
 * Every address is in 10.0.0.0/8 and lives inside the topology's namespaces only.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import * as v from "valibot";
import { Topology } from "../../scripts/lib/netns.ts";
import { EXIT } from "../../src/errors.ts";
import { schemaProblems } from "../../src/control/responses.ts";
import { ForwardOutputSchema, GenOutputSchema, SinkOutputSchema, type SinkStreamSchema } from "../../src/cli/output-schemas.ts";

export const REPO_ROOT = resolve(import.meta.dir, "../..");
export const MAIN_TS = join(REPO_ROOT, "src/main.ts");
export const COMPILED_PATH = join(REPO_ROOT, "dist/mcrelay");

/** `bun src/main.ts`, `dist/mcrelay`, or the argv prefix that runs another build (the musl ones). */
export type Mode = "bun" | "compiled" | readonly string[];

/** The argv prefix that runs mcrelay: `bun src/main.ts`, `dist/mcrelay` or the one given. */
export function mcrelayCommand(mode: Mode): string[] {
  if (typeof mode !== "string") return [...mode];
  if (mode === "bun") return [process.execPath, MAIN_TS];
  if (!existsSync(COMPILED_PATH)) {
    throw new Error(
      `${COMPILED_PATH} is missing: build it with \`bun run build\` (\`bun run test\` builds it before running the tests)`,
    );
  }
  return [COMPILED_PATH];
}

// ---------------------------------------------------------------------------------------
// Topology

/** Subnet of the generator -> relay link when the source is routable (x.1 gen, x.2 relay). */
export const GEN_SUBNET = "10.99.1";
/** Generator address when `unroutableSource` is set: no route to it exists in the relay namespace. */
export const UNROUTABLE_GEN_ADDR = "10.77.0.1";

export interface RelayTopologyOptions {
  /** For `ip netns list` readers; at most 12 characters are kept. */
  label: string;
  /** Sink namespaces, each behind its own relay interface r1..rN (default 1). */
  sinks?: number;
  /** MTU of every link (default: the veth default, 1500). */
  mtu?: number;
  /** rp_filter mode set on all/default/every interface of the relay namespace (default: left alone). */
  rpFilter?: 0 | 1 | 2;
  /**
   * Address the generator from a subnet the relay namespace has no route back to: g0 is
   * 10.77.0.1/24 while r0 is 10.99.1.2/24 on the same link. Kernel multicast routing (RPF)
   * would drop such traffic; the relay must not.
   */
  unroutableSource?: boolean;
}

export interface SinkSide {
  /** Full namespace name. */
  ns: string;
  /** Interface in the sink namespace (always "s0"). */
  ifname: string;
  /** Address of `ifname`. */
  addr: string;
  /** The relay interface facing this sink ("r1", "r2", ...). */
  relayIf: string;
  /** Address of `relayIf`. */
  relayAddr: string;
}

export interface RelayTopology {
  topo: Topology;
  /** Generator namespace; its interface is "g0", with a 224.0.0.0/4 route through it. */
  gen: string;
  genIf: string;
  genAddr: string;
  /** Relay namespace; "r0" faces the generator. */
  relay: string;
  relayIn: string;
  relayInAddr: string;
  sinks: SinkSide[];
}

/**
 * gen(g0) --- (r0)relay(r1) --- (s0)sink1, relay(r2) --- (s0)sink2, ...
 * Link k (1-based) to sink k is 10.99.(k+1).0/24: relay side .1, sink side .2.
 * The caller destroys `topo` (afterEach or finally) whatever happens.
 */
export async function buildRelayTopology(topo: Topology, opts: RelayTopologyOptions): Promise<RelayTopology> {
  const sink_count = opts.sinks ?? 1;
  if (!Number.isInteger(sink_count) || sink_count < 1 || sink_count > 8) throw new Error(`sinks: ${sink_count} is not 1..8`);
  const mtu = opts.mtu;
  const gen = await topo.ns("gen");
  const relay = await topo.ns("relay");
  const genAddr = opts.unroutableSource ? UNROUTABLE_GEN_ADDR : `${GEN_SUBNET}.1`;
  const relayInAddr = `${GEN_SUBNET}.2`;
  await topo.link(
    { ns: gen, ifname: "g0", addr: `${genAddr}/24`, mtu },
    { ns: relay, ifname: "r0", addr: `${relayInAddr}/24`, mtu },
  );
  await topo.addMulticastRoute(gen, "g0");
  const sinks: SinkSide[] = [];
  for (let k = 1; k <= sink_count; k++) {
    const ns = await topo.ns(`sink${k}`);
    const side: SinkSide = { ns, ifname: "s0", addr: `10.99.${k + 1}.2`, relayIf: `r${k}`, relayAddr: `10.99.${k + 1}.1` };
    await topo.link(
      { ns: relay, ifname: side.relayIf, addr: `${side.relayAddr}/24`, mtu },
      { ns, ifname: side.ifname, addr: `${side.addr}/24`, mtu },
    );
    sinks.push(side);
  }
  if (opts.rpFilter !== undefined) await topo.setRpFilter(relay, opts.rpFilter);
  return { topo, gen, genIf: "g0", genAddr, relay, relayIn: "r0", relayInAddr, sinks };
}

// ---------------------------------------------------------------------------------------
// Processes

/** A process started inside a namespace whose stdout and stderr are collected as they come. */
export class LoggedProcess {
  stdout = "";
  stderr = "";
  readonly exited: Promise<number>;
  private wake: (() => void) | null = null;
  private readonly drained: Promise<void>;

  constructor(
    readonly proc: Subprocess<"ignore", "pipe", "pipe">,
    readonly label: string,
  ) {
    const pump = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) {
        this[key] += decoder.decode(chunk, { stream: true });
        this.notify();
      }
      this[key] += decoder.decode();
    };
    this.drained = Promise.all([pump(proc.stdout, "stdout"), pump(proc.stderr, "stderr")]).then(() => undefined);
    this.exited = Promise.all([proc.exited, this.drained]).then(([code]) => {
      this.notify();
      return code;
    });
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Resolves with the first stderr line matching `want`; fails on timeout or when the process ends first. */
  async waitForStderr(want: RegExp, timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = this.stderr.split("\n").find((l) => want.test(l));
      if (line !== undefined) return line;
      if (!this.running) {
        await this.exited;
        const again = this.stderr.split("\n").find((l) => want.test(l));
        if (again !== undefined) return again;
        throw new Error(`${this.label} ended (${this.describeExit()}) before printing ${want} on stderr:\n${this.output()}`);
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`${this.label}: no stderr line matching ${want} within ${timeoutMs} ms:\n${this.output()}`);
      await Promise.race([
        new Promise<void>((r) => (this.wake = r)),
        this.proc.exited.then(() => undefined),
        Bun.sleep(Math.min(remaining, 250)),
      ]);
    }
  }

  /** Waits for the process to end (SIGKILL after `timeoutMs`) and returns its exit code. */
  async wait(timeoutMs: number): Promise<number> {
    const done = await Promise.race([this.exited.then(() => true), Bun.sleep(timeoutMs).then(() => false)]);
    if (!done) {
      this.proc.kill("SIGKILL");
      await this.exited;
      throw new Error(`${this.label} did not end within ${timeoutMs} ms (killed):\n${this.output()}`);
    }
    return this.proc.exitCode ?? -1;
  }

  /** Waits for a clean exit (code 0, or one of `okCodes`) and parses stdout as one JSON document fitting `schema`. */
  async json<T = any>(timeoutMs = 30_000, expect: JsonExpect = {}): Promise<T> {
    const code = await this.wait(timeoutMs);
    if (!(expect.okCodes ?? [0]).includes(code)) throw new Error(`${this.label} ${this.describeExit()}:\n${this.output()}`);
    try {
      return parseDocument<T>(this.stdout, expect.schema, this.label);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${this.output()}`);
    }
  }

  /** Sends `signal` (default SIGINT, the foreground commands' stop request), then `json()`. */
  async stopJson<T = any>(signal: NodeJS.Signals = "SIGINT", timeoutMs = 30_000, expect: JsonExpect = {}): Promise<T> {
    if (this.running) this.proc.kill(signal);
    return this.json<T>(timeoutMs, expect);
  }

  describeExit(): string {
    if (this.proc.signalCode) return `killed by ${this.proc.signalCode}`;
    return `exit code ${this.proc.exitCode}`;
  }

  output(): string {
    return `--- stdout ---\n${this.stdout.slice(-4000)}\n--- stderr ---\n${this.stderr.slice(-4000)}`;
  }
}

/** Starts `argv` inside `ns` with stdout and stderr piped and collected; `topo.destroy()` stops it. */
export function startLogged(topo: Topology, ns: string, argv: string[], label = argv.slice(0, 3).join(" ")): LoggedProcess {
  const proc = topo.spawn(ns, argv, { stdout: "pipe", stderr: "pipe", killGraceMs: 5_000 });
  return new LoggedProcess(proc, label);
}

/** Runs `argv` inside `ns` to completion, requires exit code 0 and parses stdout as JSON. */
export async function execJson<T = any>(topo: Topology, ns: string, argv: string[], timeoutMs = 60_000, schema?: v.GenericSchema): Promise<T> {
  const r = await topo.exec(ns, argv, { timeoutMs });
  if (r.exitCode !== 0) {
    throw new Error(`${argv.join(" ")}: exit code ${r.exitCode}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`);
  }
  try {
    return parseDocument<T>(r.stdout, schema, argv.join(" "));
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${r.stderr}`);
  }
}

/** The readiness lines of the long-running verbs. */
export const READY = {
  forward: /forwarding \S+: /,
  sink: /listening on /,
} as const;

/** How long a process may take to print its readiness line on a busy 2-core machine. */
export const READY_TIMEOUT_MS = 30_000;

/** `mcrelay forward ... --json`, started and waited for until its worker applied the rules. */
export async function startForward(topo: Topology, ns: string, mode: Mode, args: string[], label = "forward"): Promise<LoggedProcess> {
  const p = startLogged(topo, ns, [...mcrelayCommand(mode), "forward", ...args, "--json"], label);
  await p.waitForStderr(READY.forward, READY_TIMEOUT_MS);
  return p;
}

/** `mcrelay sink ... --json`, started and waited for until it joined / bound. */
export async function startSink(topo: Topology, ns: string, mode: Mode, args: string[], label = "sink"): Promise<LoggedProcess> {
  const p = startLogged(topo, ns, [...mcrelayCommand(mode), "sink", ...args, "--json"], label);
  await p.waitForStderr(READY.sink, READY_TIMEOUT_MS);
  return p;
}

/** `mcrelay gen ... --json`, run to completion. */
export async function runGen(topo: Topology, ns: string, mode: Mode, args: string[], timeoutMs = 60_000): Promise<GenReport> {
  return execJson<GenReport>(topo, ns, [...mcrelayCommand(mode), "gen", ...args, "--json"], timeoutMs, GenOutputSchema);
}

// The JSON documents the verbs print (the parts the tests read).

export type GenReport = v.InferOutput<typeof GenOutputSchema>;
export type SinkStreamReport = v.InferOutput<typeof SinkStreamSchema>;
export type SinkReport = v.InferOutput<typeof SinkOutputSchema>;
export type ForwardReport = v.InferOutput<typeof ForwardOutputSchema>;

/** Options of the JSON readers: the verb's schema (the document must fit it) and the exit codes that still carry a report. */
export interface JsonExpect {
  schema?: v.GenericSchema;
  okCodes?: readonly number[];
}

/** The sink's report is also what it prints when fewer than --expect arrived (exit 9). */
export const SINK_JSON: JsonExpect = { schema: SinkOutputSchema, okCodes: [0, EXIT.shortfall] };
export const FORWARD_JSON: JsonExpect = { schema: ForwardOutputSchema };

/** Parses `text` as JSON and checks it against `schema`, naming every key that does not fit. */
export function parseDocument<T>(text: string, schema: v.GenericSchema | undefined, what: string): T {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`${what}: stdout is not JSON (${(err as Error).message}):\n${text}`);
  }
  if (schema) {
    const problems = schemaProblems(schema, doc);
    if (problems.length) throw new Error(`${what}: the JSON document does not fit its schema:\n  ${problems.join("\n  ")}\n${text.slice(0, 4000)}`);
  }
  return doc as T;
}

// ---------------------------------------------------------------------------------------
// One relay run: forwards and sinks started and ready, traffic, then every report collected

export interface FlowSink {
  ns: string;
  /** The sink's --listen endpoint. */
  listen: string;
  /** More sink flags (e.g. --expect N). */
  args?: string[];
  /**
   * After the traffic, how long the sink may take to stop by itself (--idle) before it gets
   * SIGINT. A sink expected to receive nothing never idles out: give it a short grace and
   * list it last, so the other sinks' waits have let any stray packet arrive.
   */
  graceMs?: number;
  label?: string;
}

export interface FlowOptions<T> {
  mode: Mode;
  /** Each is one `mcrelay forward` process in the relay namespace (flags without --json). */
  forwards: { args: string[]; label?: string }[];
  sinks: FlowSink[];
  /** Sends the traffic once every forward and sink is ready. */
  traffic: () => Promise<T>;
  /** --idle of every sink, seconds (default 2). */
  sinkIdleS?: number;
}

export interface FlowResult<T> {
  forwards: ForwardReport[];
  sinks: SinkReport[];
  traffic: T;
}

export const SINK_GRACE_MS_DEFAULT = 30_000;

/**
 * Starts the forwards (waiting for "forwarding ..."), then the sinks (waiting for "listening
 * on ..."), runs `traffic`, lets each sink stop after --idle seconds without packets (or stops
 * it with SIGINT after its grace), then stops the forwards with SIGINT and parses every report.
 */
export async function runFlow<T>(rt: RelayTopology, o: FlowOptions<T>): Promise<FlowResult<T>> {
  const forwards: LoggedProcess[] = [];
  for (const [i, f] of o.forwards.entries()) {
    forwards.push(await startForward(rt.topo, rt.relay, o.mode, f.args, f.label ?? `forward#${i + 1}`));
  }
  const sinks: LoggedProcess[] = [];
  for (const [i, s] of o.sinks.entries()) {
    const args = ["--listen", s.listen, "--idle", String(o.sinkIdleS ?? 2), ...(s.args ?? [])];
    sinks.push(await startSink(rt.topo, s.ns, o.mode, args, s.label ?? `sink#${i + 1} ${s.listen}`));
  }
  const traffic = await o.traffic();
  const sink_reports: SinkReport[] = [];
  for (const [i, s] of o.sinks.entries()) {
    const p = sinks[i]!;
    await Promise.race([p.exited, Bun.sleep(s.graceMs ?? SINK_GRACE_MS_DEFAULT)]);
    sink_reports.push(await p.stopJson<SinkReport>("SIGINT", 30_000, SINK_JSON));
  }
  for (const p of forwards) {
    if (!p.running) throw new Error(`${p.label} ended before it was asked to stop (${p.describeExit()}):\n${p.output()}`);
  }
  const forward_reports: ForwardReport[] = [];
  for (const p of forwards) forward_reports.push(await p.stopJson<ForwardReport>("SIGINT", 30_000, FORWARD_JSON));
  return { forwards: forward_reports, sinks: sink_reports, traffic };
}

/** Set MCR_TEST_METRICS=1 to print the numbers a test measured (counts, latency) to stderr. */
/**
 * Deletes the generator's link g0 (and with it the relay's r0) and creates the pair again with
 * the same names and addresses, in one shell: r0 comes back with a new ifindex, possibly within
 * one netlink poll of its deletion.
 */
export async function recreateInputLink(rt: RelayTopology): Promise<void> {
  const ip = Bun.which("ip") ?? Bun.which("ip", { PATH: "/usr/sbin:/sbin:/usr/bin:/bin" }) ?? "ip";
  const script = [
    `"$1" -n "$2" link del g0`,
    `"$1" -n "$2" link add g0 type veth peer name r0 netns "$3"`,
    `"$1" -n "$2" addr add "$4/24" dev g0`,
    `"$1" -n "$2" link set g0 up`,
    `"$1" -n "$2" route replace 224.0.0.0/4 dev g0`,
    `"$1" -n "$3" addr add "$5/24" dev r0`,
    `"$1" -n "$3" link set r0 up`,
  ].join(" && ");
  await rt.topo.exec(rt.gen, ["sh", "-c", script, "recreate", ip, rt.gen, rt.relay, rt.genAddr, rt.relayInAddr], { check: true });
}

export function note(what: string, data: unknown): void {
  if (process.env.MCR_TEST_METRICS) process.stderr.write(`[metrics] ${what}: ${JSON.stringify(data)}\n`);
}

// ---------------------------------------------------------------------------------------
// Raw frames

/** What `injectFrames` sends. */
export type FrameKind =
  /** A well-formed IPv4/UDP datagram (payload foreign to the sink): the positive control. */
  | "valid"
  // Malformed IPv4/UDP: the ingress filter lets them through on purpose, the parser counts each.
  /** IPv4 header checksum wrong: the parser's `ipv4_bad_checksum`. */
  | "bad-checksum"
  /** UDP length 100 bytes beyond the IPv4 payload: the parser's `udp_truncated`. */
  | "udp-length"
  /** UDP length 4 (below its own 8-byte header): the parser's `udp_bad_length`. */
  | "udp-short"
  /** IPv4 total length 200 bytes beyond the frame: the parser's `ipv4_truncated`. */
  | "ip-truncated"
  /** IPv4 header length field 3 words (below the 5-word minimum): the parser's `ipv4_bad_header`. */
  | "bad-ihl"
  // Not UDP at all: the ingress filter drops them before the ring.
  /** IPv4 carrying TCP (a SYN to dstPort). */
  | "tcp"
  /** IPv4 carrying an ICMP echo request. */
  | "icmp"
  /** An ARP request (EtherType 0x0806). */
  | "arp"
  /** An MLDv2 report: IPv6, hop-by-hop options (router alert), then ICMPv6 type 143. */
  | "icmpv6-mld";

/** The kinds the ingress BPF filter drops (everything that is not UDP over IPv4 or IPv6). */
export const NON_UDP_KINDS = ["tcp", "icmp", "arp", "icmpv6-mld"] as const satisfies readonly FrameKind[];
/** Malformed IPv4/UDP kinds and the parser drop reason that counts each. */
export const MALFORMED_KINDS = {
  "bad-checksum": "ipv4_bad_checksum",
  "udp-length": "udp_truncated",
  "udp-short": "udp_bad_length",
  "ip-truncated": "ipv4_truncated",
  "bad-ihl": "ipv4_bad_header",
} as const satisfies Partial<Record<FrameKind, string>>;

export interface InjectOptions {
  ifname: string;
  kind: FrameKind;
  count: number;
  src: string;
  /** An IPv4 multicast group: the destination MAC is derived from it. */
  group: string;
  srcPort?: number;
  dstPort: number;
  payloadBytes?: number;
  ttl?: number;
}

/**
 * Python, because bun has no raw sockets: AF_PACKET, one Ethernet frame per datagram, sent on
 * an interface of the namespace it runs in. Prints {"sent": n}.
 */
const injector_py = String.raw`
import json, socket, struct, sys, time
ifname, kind, count, src, group, sport, dport, size, ttl = sys.argv[1:10]
count, sport, dport, size, ttl = int(count), int(sport), int(dport), int(size), int(ttl)
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
g = socket.inet_aton(group)
if not 224 <= g[0] <= 239:
    sys.exit("group %s is not IPv4 multicast" % group)
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((ifname, 0))
mac_src = sock.getsockname()[4]
mac_dst = bytes([0x01, 0x00, 0x5e, g[1] & 0x7f, g[2], g[3]])
payload = bytes((i * 7 + 3) & 0xff for i in range(size))
def ipv4(i, proto, body, total_extra=0, ihl=5):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(body) + total_extra, (0x4d00 + i) & 0xffff, 0, ttl, proto, 0, socket.inet_aton(src), g)
    c = csum(hdr)
    if kind == "bad-checksum":
        c ^= 0x5a5a
    return mac_dst + mac_src + b"\x08\x00" + hdr[:10] + struct.pack("!H", c) + hdr[12:] + body
def frame(i):
    if kind in ("valid", "bad-checksum", "udp-length", "udp-short", "ip-truncated", "bad-ihl"):
        udp_len = {"udp-length": 8 + size + 100, "udp-short": 4}.get(kind, 8 + size)
        udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
        return ipv4(i, 17, udp, 200 if kind == "ip-truncated" else 0, 3 if kind == "bad-ihl" else 5)
    if kind == "tcp":
        tcp = struct.pack("!HHIIBBHHH", sport, dport, i, 0, 5 << 4, 0x02, 8192, 0, 0) + payload
        return ipv4(i, 6, tcp)
    if kind == "icmp":
        body = struct.pack("!BBHHH", 8, 0, 0, 0x4d, i & 0xffff) + payload
        body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
        return ipv4(i, 1, body)
    if kind == "arp":
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac_src, socket.inet_aton(src), b"\0" * 6, g)
        return b"\xff" * 6 + mac_src + b"\x08\x06" + arp
    if kind == "icmpv6-mld":
        dst6 = socket.inet_pton(socket.AF_INET6, "ff02::16")
        src6 = socket.inet_pton(socket.AF_INET6, "fe80::4d")
        # Hop-by-hop: next header ICMPv6, router alert (MLD), PadN.
        hop = bytes([58, 0, 5, 2, 0, 0, 1, 0])
        record = struct.pack("!BBH16s", 4, 0, 0, socket.inet_pton(socket.AF_INET6, "ff15::1"))
        mld = struct.pack("!BBHHH", 143, 0, 0, 0, 1) + record
        ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(hop) + len(mld), 0, 1, src6, dst6)
        return bytes([0x33, 0x33, 0, 0, 0, 0x16]) + mac_src + b"\x86\xdd" + ip6 + hop + mld
    sys.exit("unknown kind " + kind)
sent = 0
for i in range(count):
    f = frame(i)
    sent += 1 if sock.send(f) == len(f) else 0
    time.sleep(0.001)
print(json.dumps({"sent": sent}))
`;

const python3 = Bun.which("python3") ?? Bun.which("python3", { PATH: "/usr/bin:/bin:/usr/local/bin" }) ?? "python3";

/** Sends `count` raw Ethernet frames from `ifname` inside `ns`; returns how many went out. */
export async function injectFrames(topo: Topology, ns: string, o: InjectOptions): Promise<number> {
  const argv = [
    python3,
    "-c",
    injector_py,
    o.ifname,
    o.kind,
    String(o.count),
    o.src,
    o.group,
    String(o.srcPort ?? 40000),
    String(o.dstPort),
    String(o.payloadBytes ?? 64),
    String(o.ttl ?? 8),
  ];
  const r = await execJson<{ sent: number }>(topo, ns, argv, 60_000);
  return r.sent;
}

// ---------------------------------------------------------------------------------------
// Small helpers

/** The one stream a sink saw with id `id`, or undefined. */
export function stream(report: SinkReport, id: number): SinkStreamReport | undefined {
  return report.streams.find((s) => s.stream === id);
}

/** Sum of a worker counter over every worker of a forward report. */
export function workerSum(report: ForwardReport, key: string, group: "counters" | "parse_drops" = "counters"): number {
  return report.workers.reduce((n, w) => n + ((w[group] as Record<string, number>)[key] ?? 0), 0);
}
