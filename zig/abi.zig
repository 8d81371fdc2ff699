//! Structures that cross the FFI boundary. TypeScript's mirror of them is generated from these
//! types (abi_mirror.zig -> src/native/abi.generated.ts) and compared field by field with the
//! library's own description right after loading (mcr_abi_describe in lib.zig); a change of
//! meaning that keeps the layout still bumps `version`.
const std = @import("std");

pub const version: u32 = 13;

/// Addresses are 16 bytes everywhere; IPv4 is stored v4-mapped (::ffff:a.b.c.d).
pub const Addr = [16]u8;

pub const table_magic: u32 = 0x4d435254; // "MCRT"

/// A rule table is one buffer: TableHeader, rule_count RuleDesc, output_count OutputDesc.
pub const TableHeader = extern struct {
    magic: u32,
    rule_count: u32,
    output_count: u32,
    generation: u32,
};

pub const rule_flag_source_filter: u16 = 1;
/// Loop containment off for this rule (it is on by default).
pub const rule_flag_no_loop_guard: u16 = 2;

pub const RuleDesc = extern struct {
    /// Stable identity: counters follow the id across table changes.
    id: u64,
    /// Destination address matched (multicast group or a local unicast address).
    group: Addr,
    /// Source address required when rule_flag_source_filter is set.
    source: Addr,
    /// Destination UDP port, host byte order.
    port: u16,
    flags: u16,
    /// Outputs of this rule: outputs[output_first .. output_first + output_count].
    output_first: u16,
    output_count: u16,
    /// 802.1Q VID the frames must carry, 1..4094; 0 = untagged frames only.
    vlan_id: u16 = 0,
    _pad: u16 = 0,
    /// The input interface's primary IPv4 address: a datagram from it is our own (martian).
    /// All zero when unknown.
    local_addr4: [4]u8 = @splat(0),
    /// Datagrams per second the rule relays at most (storm guard); 0 = no cap.
    max_pps: u32 = 0,
    _pad2: u32 = 0,
    /// IPv6 rules: the input interface's link-local address and its first other IPv6 address
    /// (own-source drops, as local_addr4 for IPv4). All zero when unknown or absent.
    local_addr6: [2]Addr = @splat(@splat(0)),
};

pub const OutputDesc = extern struct {
    /// Stable identity: the egress socket and counters are kept while id and settings match.
    id: u64,
    addr: Addr,
    /// Source address to send from (bound before connect); all-zero lets the kernel choose.
    source: Addr,
    port: u16,
    ttl: u8,
    /// Fixed DSCP 0..63, or dscp_copy: the input packet's DSCP. The ECN bits are always copied.
    dscp: u8 = dscp_copy,
    /// Egress interface; 0 lets the kernel route.
    ifindex: u32,
    /// output_flag_*.
    flags: u32 = 0,
    _pad: u32 = 0,
};

pub const dscp_copy: u8 = 0xff;
/// Never send this output's batches as UDP GSO buffers (next hop reads with a packet socket).
pub const output_flag_gso_off: u32 = 1;

pub const RingGeometry = extern struct {
    block_bytes: u32,
    block_count: u32,
    frame_bytes: u32,
    frame_count: u32,
};

/// Dataplane configuration at open (in the worker).
pub const DpConfig = extern struct {
    /// AF_PACKET socket set up by the supervisor (ring.setup): ring, filter, bind, fanout.
    packet_fd: i32,
    /// Readable when the worker's control channel has a message: run() returns early.
    wake_fd: i32,
    ifindex: u32,
    /// Shared memory (memfd) for the counters, from the supervisor; -1 keeps them private.
    stats_fd: i32,
    /// The ring as set up, to map it.
    geometry: RingGeometry,
};

/// How the supervisor sets up a packet socket (ring.setup).
pub const PacketSetup = extern struct {
    ifindex: u32,
    mtu: u32,
    ring_bytes: u32,
    /// PACKET_FANOUT group id; 0 when one worker serves the interface.
    fanout_id: u16,
    _pad: u16 = 0,
};

/// Link facts read with ioctl on an AF_INET socket.
pub const LinkInfo = extern struct {
    ifindex: u32,
    mtu: u32,
    flags: u32,
    /// Primary IPv4 address, v4-mapped; all-zero when the link has none.
    addr4: Addr,
};

pub const NlEventKind = enum(u8) { link_new = 1, link_del = 2, addr_new = 3, addr_del = 4, dump_done = 5, overflow = 6, failed = 7 };

/// One rtnetlink change, parsed (zig/netlink.zig).
pub const NlEvent = extern struct {
    kind: u8,
    family: u8,
    prefixlen: u8,
    _pad: u8 = 0,
    ifindex: u32,
    /// Link flags (IFF_*), or the errno of a failed request.
    flags: u32,
    mtu: u32,
    /// Netlink sequence number: matches a dump request's for its answers and dump_done.
    seq: u32,
    addr: Addr,
    name: [16]u8,
    _pad2: [12]u8 = @splat(0),
};

/// Traffic generator configuration.
pub const GenConfig = extern struct {
    addr: Addr,
    port: u16,
    ttl: u8,
    /// gen_mode_udp or gen_mode_raw.
    mode: u8 = gen_mode_udp,
    ifindex: u32,
    /// Payload bytes per datagram (>= payload header size).
    size: u32,
    stream_id: u32,
    /// Packets per second; 0 sends as fast as possible.
    rate_pps: u64,
    /// Stop after this many packets; 0 = no limit.
    count: u64,
    /// Stop after this long; 0 = no limit.
    duration_ns: u64,
};

/// The generator sends through a connected UDP socket (the kernel's whole send path, as an
/// application would).
pub const gen_mode_udp: u8 = 0;
/// The generator sends prebuilt Ethernet/IPv4/UDP frames on an AF_PACKET socket past the qdisc
/// (IPv4 multicast only): a cheaper instrument, so the relay and not the generator is the limit.
pub const gen_mode_raw: u8 = 1;

/// Measuring receiver configuration.
pub const SinkConfig = extern struct {
    addr: Addr,
    port: u16,
    /// 1: enable UDP_GRO on the socket, so a GSO batch arrives as one buffer that the sink
    /// splits at its gso_size (as a receiving host with GRO would); 0: one datagram per read.
    gro: u8 = 0,
    _pad: u8 = 0,
    ifindex: u32,
    /// Receive buffer bytes.
    rcvbuf_bytes: u32,
    _pad2: u32 = 0,
};

/// Every payload of `mcrelay gen` begins with this, little-endian, then a pattern.
pub const payload_magic: u32 = 0x4c52434d; // "MCRL"
pub const PayloadHeader = extern struct {
    magic: u32,
    stream_id: u32,
    seq: u64,
    /// CLOCK_REALTIME at send, nanoseconds.
    sent_ns: u64,
};
pub const payload_header_bytes: u32 = @sizeOf(PayloadHeader);

/// Pattern byte i (counted from the start of the payload, i >= payload_header_bytes).
pub fn patternByte(seq: u64, i: u32) u8 {
    return @truncate((seq *% 31) +% i);
}

comptime {
    std.debug.assert(@sizeOf(TableHeader) == 16);
    std.debug.assert(@sizeOf(RuleDesc) == 96);
    std.debug.assert(@sizeOf(OutputDesc) == 56);
    std.debug.assert(@sizeOf(DpConfig) == 32);
    std.debug.assert(@sizeOf(PacketSetup) == 16);
    std.debug.assert(@sizeOf(LinkInfo) == 28);
    std.debug.assert(@sizeOf(NlEvent) == 64);
    std.debug.assert(@sizeOf(GenConfig) == 56);
    std.debug.assert(@sizeOf(SinkConfig) == 32);
    std.debug.assert(@sizeOf(PayloadHeader) == 24);
}
