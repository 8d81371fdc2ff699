/**
 * An independent receiver for the kernel tests: a plain UDP socket in Python (not mcrelay's own
 * sink), so what it reports does not depend on the code under test. It binds ADDR:PORT (IPv4 or
 * IPv6; a multicast group is joined on the named interface), asks the kernel for the TTL / hop
 * limit and the arrival interface of every datagram, and reads until its deadline, until it has
 * been idle for `idleS` seconds after the first datagram, or until `stop()` (SIGINT) for one
 * that expects nothing. It never stops at an expected count, so duplicates and strays that
 * come after the expected packets are counted too.
 *
 * The report counts datagrams per source address, per TTL and per arrival interface, and, for
 * payloads carrying mcrelay gen's header (magic, stream, seq), unique sequence numbers and
 * duplicates per stream.
 */
import type { Topology } from "../../scripts/lib/netns.ts";
import { startLogged, type LoggedProcess } from "./relay-harness.ts";

const PYTHON3 = Bun.which("python3") ?? Bun.which("python3", { PATH: "/usr/bin:/bin:/usr/local/bin" }) ?? "python3";

const receiver_py = String.raw`
import json, signal, socket, struct, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
addr, port, ifname, timeout, idle = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
v6 = ":" in addr
fam = socket.AF_INET6 if v6 else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
ifindex = socket.if_nametoindex(ifname) if ifname else 0
packed = socket.inet_pton(fam, addr)
multicast = packed[0] == 0xff if v6 else 224 <= packed[0] <= 239
if v6:
    s.bind((addr, port, 0, ifindex if multicast else 0))
    if multicast:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, packed + struct.pack("@I", ifindex))
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
else:
    s.bind((addr, port))
    if multicast:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, packed + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex))
    s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_RECVTTL", 12), 1)
    s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_PKTINFO", 8), 1)
names = dict((i, n) for i, n in socket.if_nameindex())
sys.stderr.write("ready\n")
sys.stderr.flush()
first, last, n = None, None, 0
sources, ttls, ifaces, streams = {}, {}, {}, {}
deadline = time.time() + timeout
def bump(d, k):
    d[k] = d.get(k, 0) + 1
def read():
    global first, last, n
    while True:
        now = time.time()
        left = deadline - now
        if last is not None:
            left = min(left, last + idle - now)
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data, anc, _, src = s.recvmsg(65536, 256)
        except socket.timeout:
            break
        last = time.time()
        if first is None:
            first = last
        n += 1
        bump(sources, src[0])
        for level, kind, value in anc:
            if level == socket.IPPROTO_IP and kind == getattr(socket, "IP_TTL", 2):
                bump(ttls, str(int.from_bytes(value[:4], sys.byteorder)))
            elif level == socket.IPPROTO_IP and kind == getattr(socket, "IP_PKTINFO", 8):
                bump(ifaces, names.get(struct.unpack_from("@i", value, 0)[0], "?"))
            elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT:
                bump(ttls, str(int.from_bytes(value[:4], sys.byteorder)))
            elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                bump(ifaces, names.get(struct.unpack_from("@I", value, 16)[0], "?"))
        if len(data) >= 16:
            magic, stream, seq = struct.unpack_from("<IIQ", data, 0)
            if magic == MAGIC:
                st = streams.setdefault(str(stream), {"seqs": set(), "duplicates": 0})
                if seq in st["seqs"]:
                    st["duplicates"] += 1
                else:
                    st["seqs"].add(seq)
try:
    read()
except KeyboardInterrupt:
    pass
out = {k: {"unique": len(v["seqs"]), "duplicates": v["duplicates"]} for k, v in streams.items()}
print(json.dumps({"datagrams": n, "unique": sum(v["unique"] for v in out.values()), "duplicates": sum(v["duplicates"] for v in out.values()),
                  "streams": out, "sources": sources, "ttls": ttls, "ifaces": ifaces,
                  "first_at_ms": None if first is None else first * 1000}))
`;

export interface ReceiverReport {
  /** Every datagram read, whatever it carried. */
  datagrams: number;
  /** Distinct (stream, seq) of gen datagrams, and repeats of one already seen. */
  unique: number;
  duplicates: number;
  streams: Record<string, { unique: number; duplicates: number }>;
  /** Datagrams per source address, per TTL (hop limit for IPv6), per arrival interface. */
  sources: Record<string, number>;
  ttls: Record<string, number>;
  ifaces: Record<string, number>;
  /** CLOCK_REALTIME of the first datagram, comparable with Date.now(); null when none came. */
  first_at_ms: number | null;
}

export interface ReceiverOptions {
  /** Address to bind: a multicast group (joined on `ifname`) or a local unicast address. */
  addr: string;
  port: number;
  /** Interface a group is joined on; for unicast it is only used to name arrival interfaces. */
  ifname?: string;
  /** Stop this long after starting, whatever arrived (default 60 s). */
  timeoutS?: number;
  /** Stop this long after the last datagram, once one arrived (default 1.5 s). */
  idleS?: number;
  label?: string;
}

export class Receiver {
  constructor(readonly proc: LoggedProcess) {}

  /** Waits for the receiver to stop by itself (deadline or idle) and returns what it counted. */
  async report(): Promise<ReceiverReport> {
    return this.proc.json<ReceiverReport>(180_000);
  }

  /** Stops it now (SIGINT: it prints what it counted so far) and returns its report. */
  async stop(): Promise<ReceiverReport> {
    return this.proc.stopJson<ReceiverReport>("SIGINT");
  }
}

/** abi.payload_magic ("MCRL", little-endian): the first word of every `mcrelay gen` datagram. */
const GEN_MAGIC = 0x4c52434d;

/** Starts a receiver in `ns` and waits until it is bound and joined. */
export async function startReceiver(topo: Topology, ns: string, o: ReceiverOptions): Promise<Receiver> {
  const script = receiver_py.replace("MAGIC", String(GEN_MAGIC));
  const argv = [PYTHON3, "-c", script, o.addr, String(o.port), o.ifname ?? "", String(o.timeoutS ?? 60), String(o.idleS ?? 1.5)];
  const p = startLogged(topo, ns, argv, o.label ?? `receiver ${o.addr}:${o.port}${o.ifname ? `@${o.ifname}` : ""}`);
  await p.waitForStderr(/^ready$/, 30_000);
  return new Receiver(p);
}
