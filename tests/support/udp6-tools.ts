/**
 * Independent IPv6 (and IPv4) senders, receivers and capture for the IPv6 input tests, in Python
 * (bun has no IPv6 multicast options, no raw sockets):
 * - `udpSend6`: plain UDP datagrams to a group of either family, with a hop limit / TTL and
 *   optionally from a given source address;
 * - `startUdpReceiver6`: a plain UDP socket of the group's family, joined on an interface, that
 *   checks every datagram byte for byte and reports what arrived;
 * - `sendRawFrames6`: hand-made Ethernet + IPv6 frames on an AF_PACKET socket: extension header
 *   chains (hop-by-hop, destination options, routing, fragment), malformed chains, jumbograms;
 * - `startMldCapture`: an AF_PACKET socket on a link that records every MLDv2 report (ICMPv6
 *   type 143 behind its hop-by-hop header) with its records.
 *
 * Payload format: u32 sequence number, u32 stream id, then byte i = (seq * 7 + i) & 0xff.
 */
import type { Topology } from "../../scripts/lib/netns.ts";
import { execJson, startLogged, type LoggedProcess } from "./relay-harness.ts";

const python3 = Bun.which("python3") ?? Bun.which("python3", { PATH: "/usr/bin:/bin:/usr/local/bin" }) ?? "python3";

const common_py = String.raw`
import json, socket, struct, sys, time, select
IPV6_MULTICAST_IF, IPV6_MULTICAST_HOPS, IPV6_MULTICAST_LOOP, IPV6_JOIN_GROUP = 17, 18, 19, 20
IPV6_RECVHOPLIMIT, IPV6_HOPLIMIT, IPV6_RECVTCLASS, IPV6_TCLASS = 51, 52, 66, 67
def payload(seq, stream, size):
    head = struct.pack("!II", seq, stream)
    return head + bytes(((seq * 7 + i) & 0xff) for i in range(8, size))
def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET
`;

const sender_py =
  common_py +
  String.raw`
spec = json.loads(sys.argv[1])
fam = family(spec["group"])
s = socket.socket(fam, socket.SOCK_DGRAM)
ifindex = socket.if_nametoindex(spec["ifname"])
hops = spec.get("hops", 8)
if fam == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_IF, ifindex)
    s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_HOPS, hops)
    s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_LOOP, 0)
    s.setsockopt(socket.IPPROTO_IPV6, 16, hops)  # IPV6_UNICAST_HOPS
    s.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, spec.get("tos", 0))
else:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("=4s4si", b"\0" * 4, b"\0" * 4, ifindex))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, hops)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, hops)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, spec.get("tos", 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
if spec.get("bind"):
    s.bind((spec["bind"], 0))
dest = (spec["group"], spec["port"], 0, ifindex) if fam == socket.AF_INET6 else (spec["group"], spec["port"])
stream, size, count = spec.get("stream", 1), spec.get("size", 100), spec["count"]
rate = spec.get("rate_pps", 10000)
if spec.get("connect"):
    # A connected socket reports an ICMP port unreachable as ECONNREFUSED on a later send.
    s.connect(dest)
start = time.time()
sent = refused = 0
gso = spec.get("gso_batch", 0)
if gso:
    # UDP_SEGMENT: one sendmsg of gso datagrams of size bytes, cut by the kernel (veth passes
    # the buffer on as one super-frame).
    for first in range(0, count, gso):
        n = min(gso, count - first)
        buf = b"".join(payload(first + k, stream, size) for k in range(n))
        s.sendmsg([buf], [(socket.SOL_UDP, 103, struct.pack("=H", size))], 0, dest)
        sent += n
        time.sleep(0.002)
    count = 0
for seq in range(count):
    try:
        if spec.get("connect"):
            s.send(payload(seq, stream, size))
        else:
            s.sendto(payload(seq, stream, size), dest)
        sent += 1
    except ConnectionRefusedError:
        refused += 1
    ahead = (sent + refused) / rate - (time.time() - start)
    if ahead > 0.002:
        time.sleep(ahead)
print(json.dumps({"sent": sent, "source": s.getsockname()[0], "refused": refused}))
`;

const receiver_py =
  common_py +
  String.raw`
spec = json.loads(sys.argv[1])
group = spec["group"]
fam = family(group)
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
ifindex = socket.if_nametoindex(spec["ifname"])
if fam == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
    s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)
    s.bind((group, spec["port"], 0, ifindex if group.startswith("ff02") else 0))
    if group.startswith("ff"):
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_JOIN_GROUP, socket.inet_pton(socket.AF_INET6, group) + struct.pack("=I", ifindex))
else:
    s.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL
    s.setsockopt(socket.IPPROTO_IP, 13, 1)  # IP_RECVTOS
    s.bind((group, spec["port"]))
    if 224 <= int(group.split(".")[0]) <= 239:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("=4s4si", socket.inet_aton(group), b"\0" * 4, ifindex))
sys.stderr.write("receiver ready\n")
sys.stderr.flush()
idle_s, max_s, first_s = spec.get("idle_s", 2.0), spec.get("max_s", 60.0), spec.get("first_s", 60.0)
start = time.time()
last = None
datagrams = duplicates = bad = short = 0
hops, tclass, sources, seen = {}, {}, {}, set()
while True:
    now = time.time()
    if now - start > max_s or (last is not None and now - last > idle_s) or (last is None and now - start > first_s):
        break
    r, _, _ = select.select([s], [], [], 0.2)
    if not r:
        continue
    data, anc, flags, addr = s.recvmsg(70000, 256)
    last = time.time()
    datagrams += 1
    sources[addr[0]] = sources.get(addr[0], 0) + 1
    for level, kind, value in anc:
        if (level, kind) in ((socket.IPPROTO_IPV6, IPV6_HOPLIMIT), (socket.IPPROTO_IP, 2)):
            h = struct.unpack("=i", value[:4])[0]
            hops[h] = hops.get(h, 0) + 1
        elif (level, kind) == (socket.IPPROTO_IPV6, IPV6_TCLASS):
            c = struct.unpack("=i", value[:4])[0]
            tclass[c] = tclass.get(c, 0) + 1
        elif (level, kind) == (socket.IPPROTO_IP, 1):  # IP_TOS
            tclass[value[0]] = tclass.get(value[0], 0) + 1
    if len(data) < 8:
        short += 1
        continue
    seq, stream = struct.unpack("!II", data[:8])
    if data != payload(seq, stream, len(data)):
        bad += 1
    if (stream, seq) in seen:
        duplicates += 1
    seen.add((stream, seq))
print(json.dumps({"datagrams": datagrams, "numbered": len(seen), "short": short, "duplicates": duplicates,
                  "pattern_errors": bad, "hops": hops, "tclass": tclass, "sources": sources}))
`;

const raw6_py = String.raw`
import json, socket, struct, sys, time
spec = json.loads(sys.argv[1])
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def ext(kind, nxt, length8=1, segments_left=0, jumbo=False):
    size = 8 * length8
    if kind == "fragment":
        return struct.pack("!BBHI", nxt, 0, 0x0001, 0x1234)  # offset 0, more fragments
    if kind == "routing":
        return struct.pack("!BBBB", nxt, length8 - 1, 4, segments_left) + bytes(size - 4)
    body = bytearray(size)
    body[0], body[1] = nxt, length8 - 1
    if jumbo:
        body[2:8] = bytes([0xc2, 4]) + struct.pack("!I", 70000)
    else:
        at = 2
        while size - at >= 2:  # PadN options (at most 255 bytes of padding each) over the rest
            pad = min(size - at - 2, 255)
            body[at], body[at + 1] = 1, pad
            at += 2 + pad
    return bytes(body)
CODES = {"hop": 0, "dst": 60, "routing": 43, "fragment": 44, "udp": 17}
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((spec["ifname"], 0))
mac_src = sock.getsockname()[4]
sent = 0
for i, f in enumerate(spec["frames"]):
    src = socket.inet_pton(socket.AF_INET6, f["src"])
    dst = socket.inet_pton(socket.AF_INET6, f["dst"])
    mac_dst = bytes([0x33, 0x33]) + dst[12:16]
    seq, stream, size = f.get("seq", i), f.get("stream", 9), f.get("size", 64)
    body = struct.pack("!II", seq, stream) + bytes(((seq * 7 + k) & 0xff) for k in range(8, size))
    udp_len = 8 + size
    udp = struct.pack("!HHHH", f.get("sport", 40000), f["dport"], udp_len, 0) + body
    c = csum(src + dst + struct.pack("!IxxxB", udp_len, 17) + udp) or 0xffff
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    chain = f.get("chain", [])
    exts = b""
    for k, e in enumerate(chain):
        nxt = CODES[chain[k + 1]["kind"]] if k + 1 < len(chain) else CODES["udp"]
        exts += ext(e["kind"], nxt, e.get("length8", 1), e.get("segments_left", 0), e.get("jumbo", False))
    first = CODES[chain[0]["kind"]] if chain else CODES["udp"]
    payload_len = len(exts) + len(udp)
    if "payload_len" in f:
        payload_len = f["payload_len"]
    ip = struct.pack("!IHBB16s16s", 0x60000000, payload_len, first, f.get("hops", 1), src, dst)
    tag = struct.pack("!HH", 0x8100, f["vlan"]) if "vlan" in f else b""
    frame = mac_dst + mac_src + tag + b"\x86\xdd" + ip + exts + udp
    sent += 1 if sock.send(frame) == len(frame) else 0
    time.sleep(spec.get("pause_s", 0.001))
print(json.dumps({"sent": sent}))
`;

const mld_py = String.raw`
import json, socket, struct, sys, time, select
spec = json.loads(sys.argv[1])
ETH_P_IPV6 = 0x86dd
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
sock.bind((spec["ifname"], ETH_P_IPV6))
sys.stderr.write("capture ready\n")
sys.stderr.flush()
reports = []
end = time.time() + spec["seconds"]
while time.time() < end:
    r, _, _ = select.select([sock], [], [], 0.2)
    if not r:
        continue
    frame, addr = sock.recvfrom(65535)
    ip = frame[14:]
    if len(ip) < 40 or ip[0] >> 4 != 6:
        continue
    nxt, at = ip[6], 40
    while nxt in (0, 60) and at + 8 <= len(ip):
        nxt, at = ip[at], at + (ip[at + 1] + 1) * 8
    if nxt != 58 or at + 8 > len(ip) or ip[at] != 143:
        continue
    count = struct.unpack("!H", ip[at + 6:at + 8])[0]
    records, p = [], at + 8
    for _ in range(count):
        rtype, aux, nsrc = ip[p], ip[p + 1], struct.unpack("!H", ip[p + 2:p + 4])[0]
        group = socket.inet_ntop(socket.AF_INET6, ip[p + 4:p + 20])
        sources = [socket.inet_ntop(socket.AF_INET6, ip[p + 20 + 16 * k:p + 36 + 16 * k]) for k in range(nsrc)]
        records.append({"type": rtype, "group": group, "sources": sources})
        p += 20 + 16 * nsrc + 4 * aux
    reports.append({"from": socket.inet_ntop(socket.AF_INET6, ip[8:24]), "records": records})
print(json.dumps({"reports": reports}))
`;

export interface Send6Spec {
  ifname: string;
  group: string;
  port: number;
  count: number;
  size?: number;
  /** Hop limit (IPv6) or TTL (IPv4). */
  hops?: number;
  /** Traffic class (IPv6) or TOS byte (IPv4): DSCP << 2 | ECN. */
  tos?: number;
  bind?: string;
  stream?: number;
  rate_pps?: number;
  /** Connect the socket: an ICMP port unreachable then shows as a refused send. */
  connect?: boolean;
  /** Send with UDP_SEGMENT, this many datagrams of `size` bytes per sendmsg. */
  gso_batch?: number;
}

export async function udpSend6(topo: Topology, ns: string, spec: Send6Spec, timeoutMs = 120_000): Promise<{ sent: number; source: string; refused: number }> {
  return execJson(topo, ns, [python3, "-c", sender_py, JSON.stringify(spec)], timeoutMs);
}

export interface Receive6Spec {
  group: string;
  port: number;
  ifname: string;
  idle_s?: number;
  max_s?: number;
  first_s?: number;
}

export interface Receive6Report {
  datagrams: number;
  numbered: number;
  short: number;
  duplicates: number;
  pattern_errors: number;
  /** Count by hop limit (IPv6) or TTL (IPv4) as received. */
  hops: Record<string, number>;
  /** Count by traffic class (IPv6) or TOS byte (IPv4) as received. */
  tclass: Record<string, number>;
  /** Count by source address. */
  sources: Record<string, number>;
}

export class Receiver6 {
  constructor(private readonly proc: LoggedProcess) {}
  async report(timeoutMs = 120_000): Promise<Receive6Report> {
    return this.proc.json<Receive6Report>(timeoutMs);
  }
}

export async function startUdpReceiver6(topo: Topology, ns: string, spec: Receive6Spec, label = "udp6 receiver"): Promise<Receiver6> {
  const p = startLogged(topo, ns, [python3, "-c", receiver_py, JSON.stringify(spec)], label);
  await p.waitForStderr(/receiver ready/, 30_000);
  return new Receiver6(p);
}

export type ExtKind = "hop" | "dst" | "routing" | "fragment";

export interface RawFrame6 {
  src: string;
  dst: string;
  dport: number;
  sport?: number;
  size?: number;
  hops?: number;
  /** Extension headers before UDP, in order. */
  chain?: { kind: ExtKind; length8?: number; segments_left?: number; jumbo?: boolean }[];
  /** An 802.1Q tag with this VID in front of the IPv6 header. */
  vlan?: number;
  /** Overrides the IPv6 payload length (a lying header). */
  payload_len?: number;
  seq?: number;
  stream?: number;
}

export async function sendRawFrames6(topo: Topology, ns: string, ifname: string, frames: RawFrame6[], pauseS = 0.001): Promise<number> {
  const r = await execJson<{ sent: number }>(topo, ns, [python3, "-c", raw6_py, JSON.stringify({ ifname, frames, pause_s: pauseS })], 120_000);
  return r.sent;
}

export interface MldRecord {
  /** RFC 3810 5.2.12: 1 MODE_IS_INCLUDE, 2 MODE_IS_EXCLUDE, 3 CHANGE_TO_INCLUDE, 4 CHANGE_TO_EXCLUDE, 5 ALLOW_NEW_SOURCES, 6 BLOCK_OLD_SOURCES. */
  type: number;
  group: string;
  sources: string[];
}

export class MldCapture {
  constructor(private readonly proc: LoggedProcess) {}
  async reports(timeoutMs = 60_000): Promise<{ from: string; records: MldRecord[] }[]> {
    return (await this.proc.json<{ reports: { from: string; records: MldRecord[] }[] }>(timeoutMs)).reports;
  }
}

/** Captures MLDv2 reports on `ifname` for `seconds` (every frame on the link, received or sent). */
export async function startMldCapture(topo: Topology, ns: string, ifname: string, seconds: number): Promise<MldCapture> {
  const p = startLogged(topo, ns, [python3, "-c", mld_py, JSON.stringify({ ifname, seconds })], "mld capture");
  await p.waitForStderr(/capture ready/, 30_000);
  return new MldCapture(p);
}
