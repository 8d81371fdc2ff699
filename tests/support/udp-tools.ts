/**
 * Independent senders and receivers for the fidelity tests, in Python (bun has no UDP_SEGMENT,
 * no IP_RECVTTL/IP_RECVTOS ancillary data and no raw sockets):
 * - `udpSend`: plain UDP datagrams, optionally as UDP GSO buffers (UDP_SEGMENT), with a TOS;
 * - `startUdpReceiver`: a plain UDP socket (joined to a group on an interface) that checks every
 *   datagram byte for byte and reports its size, IP TTL and TOS as the kernel delivered them;
 * - `sendRawFrames`: hand-made Ethernet frames on an AF_PACKET socket (VLAN tags, martian
 *   sources, another host's MAC, bad UDP checksums).
 *
 * Payload format (datagrams of 8 bytes or more): u32 sequence number, u32 stream id, then byte i
 * = (seq * 7 + i) & 0xff. Shorter datagrams (zero-length included) carry no sequence number and
 * are counted by size only.
 */
import { Topology } from "../../scripts/lib/netns.ts";
import { execJson, startLogged, type LoggedProcess } from "./relay-harness.ts";

const python3 = Bun.which("python3") ?? Bun.which("python3", { PATH: "/usr/bin:/bin:/usr/local/bin" }) ?? "python3";

const common_py = String.raw`
import json, socket, struct, sys, time, select
def payload(seq, stream, size):
    if size < 8:
        return bytes(size)
    head = struct.pack("!II", seq, stream)
    return head + bytes(((seq * 7 + i) & 0xff) for i in range(8, size))
`;

const sender_py =
  common_py +
  String.raw`
spec = json.loads(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ifindex = socket.if_nametoindex(spec["ifname"])
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("=4s4si", b"\0" * 4, b"\0" * 4, ifindex))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, spec.get("ttl", 8))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, spec.get("tos", 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
if spec.get("bind"):
    s.bind((spec["bind"], 0))
dest = (spec["group"], spec["port"])
stream = spec.get("stream", 1)
seq = 0
sent = 0
gso_sends = 0
for r in range(spec.get("repeat", 1)):
    for batch in spec["batches"]:
        bufs = []
        for size in batch:
            bufs.append(payload(0 if spec.get("fixed") else seq, stream, size))
            if size >= 8:
                seq += 1
        if spec.get("gso") and len(batch) > 1:
            # One sendmsg, cut into datagrams of batch[0] bytes by the kernel (UDP_SEGMENT).
            cmsg = [(socket.SOL_UDP, 103, struct.pack("=H", batch[0]))]
            s.sendmsg([b"".join(bufs)], cmsg, 0, dest)
            gso_sends += 1
            sent += len(batch)
        else:
            for b in bufs:
                s.sendto(b, dest)
                sent += 1
        if spec.get("pause_s", 0) > 0:
            time.sleep(spec["pause_s"])
print(json.dumps({"sent": sent, "gso_sends": gso_sends, "numbered": seq}))
`;

const receiver_py =
  common_py +
  String.raw`
spec = json.loads(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL
s.setsockopt(socket.IPPROTO_IP, 13, 1)  # IP_RECVTOS
group = spec["group"]
s.bind((group, spec["port"]))
if 224 <= int(group.split(".")[0]) <= 239:
    ifindex = socket.if_nametoindex(spec["ifname"])
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("=4s4si", socket.inet_aton(group), b"\0" * 4, ifindex))
sys.stderr.write("receiver ready\n")
sys.stderr.flush()
idle_s, max_s = spec.get("idle_s", 2.0), spec.get("max_s", 60.0)
start = time.time()
last = None
datagrams = 0
sizes, ttls, toss = {}, {}, {}
seen = set()
streams = {}
duplicates = bad = short = 0
while True:
    now = time.time()
    if now - start > max_s or (last is not None and now - last > idle_s) or (last is None and now - start > spec.get("first_s", max_s)):
        break
    r, _, _ = select.select([s], [], [], 0.2)
    if not r:
        continue
    data, anc, flags, addr = s.recvmsg(70000, 256)
    last = time.time()
    datagrams += 1
    sizes[len(data)] = sizes.get(len(data), 0) + 1
    for level, kind, value in anc:
        if level == socket.IPPROTO_IP and kind == 2:  # IP_TTL
            t = struct.unpack("=i", value[:4])[0]
            ttls[t] = ttls.get(t, 0) + 1
        elif level == socket.IPPROTO_IP and kind == 1:  # IP_TOS
            t = value[0]
            toss[t] = toss.get(t, 0) + 1
    if len(data) < 8:
        short += 1
        continue
    seq, stream = struct.unpack("!II", data[:8])
    streams[stream] = streams.get(stream, 0) + 1
    if data != payload(seq, stream, len(data)):
        bad += 1
    key = (stream, seq)
    if key in seen:
        duplicates += 1
    seen.add(key)
print(json.dumps({"datagrams": datagrams, "numbered": len(seen), "short": short, "duplicates": duplicates,
                  "pattern_errors": bad, "sizes": sizes, "ttl": ttls, "tos": toss, "streams": streams}))
`;

const raw_py = String.raw`
import json, socket, struct, sys, time
spec = json.loads(sys.argv[1])
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((spec["ifname"], 0))
mac_src = sock.getsockname()[4]
sent = 0
for i, f in enumerate(spec["frames"]):
    dst = socket.inet_aton(f["dst"])
    if 224 <= dst[0] <= 239:
        mac_dst = bytes([0x01, 0x00, 0x5e, dst[1] & 0x7f, dst[2], dst[3]])
    else:
        mac_dst = bytes.fromhex(f.get("mac_dst", "ffffffffffff").replace(":", ""))
    if "mac_dst" in f:
        mac_dst = bytes.fromhex(f["mac_dst"].replace(":", ""))
    src = socket.inet_aton(f["src"])
    size = f.get("size", 32)
    body = struct.pack("!II", f.get("seq", i), f.get("stream", 9)) + bytes(((f.get("seq", i) * 7 + k) & 0xff) for k in range(8, size)) if size >= 8 else bytes(size)
    udp_len = 8 + size
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, f.get("tos", 0), 20 + udp_len, (0x4d00 + i) & 0xffff, 0, f.get("ttl", 8), 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", f.get("sport", 40000), f["dport"], udp_len, 0) + body
    c = csum(src + dst + struct.pack("!BBH", 0, 17, udp_len) + udp)
    c = c or 0xffff
    if f.get("bad_udp_checksum"):
        c ^= 0x5a5a
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    tags = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in f.get("tags", []))
    frame = mac_dst + mac_src + tags + b"\x08\x00" + ip + udp
    sent += 1 if sock.send(frame) == len(frame) else 0
    time.sleep(spec.get("pause_s", 0.001))
print(json.dumps({"sent": sent}))
`;

export interface SendSpec {
  ifname: string;
  group: string;
  port: number;
  /** Each batch is sent back to back; with `gso` a batch of 2+ goes as one UDP_SEGMENT buffer. */
  batches: number[][];
  gso?: boolean;
  repeat?: number;
  /** Sleep after each batch. */
  pause_s?: number;
  ttl?: number;
  tos?: number;
  stream?: number;
  bind?: string;
  /** Every datagram carries the same payload (sequence number 0). */
  fixed?: boolean;
}

export interface SendResult {
  sent: number;
  gso_sends: number;
  /** Datagrams that carried a sequence number (8 bytes or more). */
  numbered: number;
}

export async function udpSend(topo: Topology, ns: string, spec: SendSpec, timeoutMs = 120_000): Promise<SendResult> {
  return execJson<SendResult>(topo, ns, [python3, "-c", sender_py, JSON.stringify(spec)], timeoutMs);
}

export interface ReceiveSpec {
  group: string;
  port: number;
  /** Interface to join the group on (multicast groups only). */
  ifname: string;
  /** Stop after this long without a datagram, once one arrived. */
  idle_s?: number;
  /** Stop after this long in any case. */
  max_s?: number;
  /** Stop after this long if nothing arrived at all. */
  first_s?: number;
}

export interface ReceiveReport {
  datagrams: number;
  /** Distinct (stream, seq) pairs among datagrams of 8 bytes or more. */
  numbered: number;
  /** Datagrams shorter than 8 bytes (no sequence number). */
  short: number;
  duplicates: number;
  pattern_errors: number;
  /** Count by payload size, by IP TTL, by IP TOS byte as received. */
  sizes: Record<string, number>;
  ttl: Record<string, number>;
  tos: Record<string, number>;
  /** Count by stream id (the second word of the payload). */
  streams: Record<string, number>;
}

export class UdpReceiver {
  constructor(private readonly proc: LoggedProcess) {}
  /** Waits for the receiver to stop by itself (idle or max time) and returns its report. */
  async report(timeoutMs = 120_000): Promise<ReceiveReport> {
    return this.proc.json<ReceiveReport>(timeoutMs);
  }
}

export async function startUdpReceiver(topo: Topology, ns: string, spec: ReceiveSpec, label = "udp receiver"): Promise<UdpReceiver> {
  const p = startLogged(topo, ns, [python3, "-c", receiver_py, JSON.stringify(spec)], label);
  await p.waitForStderr(/receiver ready/, 30_000);
  return new UdpReceiver(p);
}

export interface RawFrame {
  src: string;
  dst: string;
  dport: number;
  sport?: number;
  size?: number;
  ttl?: number;
  tos?: number;
  /** In-band tags, outermost first: [tpid, vid]. */
  tags?: [number, number][];
  /** Destination MAC (default: the group's multicast MAC, or broadcast). */
  mac_dst?: string;
  bad_udp_checksum?: boolean;
  seq?: number;
  stream?: number;
}

export async function sendRawFrames(topo: Topology, ns: string, ifname: string, frames: RawFrame[], pauseS = 0.001): Promise<number> {
  const r = await execJson<{ sent: number }>(topo, ns, [python3, "-c", raw_py, JSON.stringify({ ifname, frames, pause_s: pauseS })], 120_000);
  return r.sent;
}

const unicast_probe_py = String.raw`
import json, socket, struct, sys, time, select
spec = json.loads(sys.argv[1])
icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((spec["to"], spec["port"]))
sent = errors = unreach = 0
def drain_icmp(wait):
    global unreach
    end = time.time() + wait
    while True:
        r, _, _ = select.select([icmp], [], [], max(0, end - time.time()))
        if not r:
            return
        data = icmp.recv(2048)
        ihl = (data[0] & 0x0f) * 4
        if data[ihl] == 3 and data[ihl + 1] == 3:
            unreach += 1
for i in range(spec["count"]):
    try:
        s.send(struct.pack("!II", i, spec.get("stream", 1)) + bytes(((i * 7 + k) & 0xff) for k in range(8, spec.get("size", 100))))
        sent += 1
    except OSError:
        errors += 1
    drain_icmp(spec.get("pause_s", 0.002))
drain_icmp(1.0)
print(json.dumps({"sent": sent, "errors": errors, "icmp_port_unreachable": unreach}))
`;

export interface UnicastProbe {
  sent: number;
  /** Sends that failed (ECONNREFUSED after an ICMP port unreachable). */
  errors: number;
  icmp_port_unreachable: number;
}

/** Sends `count` datagrams on a connected UDP socket and counts the ICMP port unreachables that come back. */
export async function unicastProbe(topo: Topology, ns: string, spec: { to: string; port: number; count: number; size?: number; stream?: number; pause_s?: number }): Promise<UnicastProbe> {
  return execJson<UnicastProbe>(topo, ns, [python3, "-c", unicast_probe_py, JSON.stringify(spec)], 120_000);
}

const igmp_capture_py = String.raw`
import json, socket, struct, sys, time, select
spec = json.loads(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind((spec["ifname"], 0))
sys.stderr.write("capture ready\n"); sys.stderr.flush()
end = time.time() + spec["seconds"]
reports = []
while time.time() < end:
    r, _, _ = select.select([s], [], [], 0.2)
    if not r:
        continue
    data = s.recv(4096)
    ip = data[14:]
    if len(ip) < 20 or ip[9] != 2:
        continue
    igmp = ip[(ip[0] & 0x0f) * 4:]
    if igmp[0] != 0x22:
        reports.append({"type": igmp[0]})
        continue
    n = struct.unpack("!H", igmp[6:8])[0]
    at = 8
    records = []
    for _ in range(n):
        rtype, aux, nsrc = igmp[at], igmp[at + 1], struct.unpack("!H", igmp[at + 2:at + 4])[0]
        group = socket.inet_ntoa(igmp[at + 4:at + 8])
        sources = [socket.inet_ntoa(igmp[at + 8 + 4 * k:at + 12 + 4 * k]) for k in range(nsrc)]
        records.append({"type": rtype, "group": group, "sources": sources})
        at += 8 + 4 * nsrc + 4 * aux
    reports.append({"type": 0x22, "records": records})
print(json.dumps({"reports": reports}))
`;

export interface IgmpRecord {
  /** 1 MODE_IS_INCLUDE, 2 MODE_IS_EXCLUDE, 3 CHANGE_TO_INCLUDE, 4 CHANGE_TO_EXCLUDE, 5 ALLOW_NEW_SOURCES, 6 BLOCK_OLD_SOURCES. */
  type: number;
  group: string;
  sources: string[];
}

/** Captures IGMP on `ifname` for `seconds` (started and ready when this resolves); `done` gives the reports. */
export async function captureIgmp(topo: Topology, ns: string, ifname: string, seconds: number): Promise<{ done: Promise<{ reports: { type: number; records?: IgmpRecord[] }[] }> }> {
  const p = startLogged(topo, ns, [python3, "-c", igmp_capture_py, JSON.stringify({ ifname, seconds })], "igmp capture");
  await p.waitForStderr(/capture ready/, 30_000);
  return { done: p.json((seconds + 30) * 1000) };
}
