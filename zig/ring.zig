//! AF_PACKET receive ring (TPACKET_V3, PACKET_MMAP) on a socket created by the supervisor.
//! Nothing here needs privilege: the socket was opened by a privileged process and passed in.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const abi = @import("abi.zig");
const constants = @import("constants.zig");
const filter = @import("filter.zig");
const fanout = @import("fanout.zig");

const page_bytes: u32 = 4096;
/// TPACKET_ALIGN(sizeof(tpacket3_hdr)) + sizeof(sockaddr_ll), rounded: room before the frame.
const frame_header_bytes: u32 = 48 + 32;
/// Block descriptor at the start of every block (struct tpacket_block_desc), aligned.
const block_header_bytes: u32 = 48;
/// Room for two in-band VLAN tags on top of the Ethernet header.
const l2_header_bytes_max: u32 = 14 + 8;
/// A UDP GSO super-frame as mcrelay's own egress sends it (the largest buffer plus UDP, IPv4
/// and link headers): a block must hold it whole, or a chain of relays loses it. Larger
/// super-frames from other senders (up to a 64 KiB IP packet) are cut at the block size and
/// counted in rx_truncated.
const egress_super_frame_bytes: u32 = frame_header_bytes + vnet_hdr_bytes + l2_header_bytes_max + 20 + 8 + constants.egress_gso_bytes_max;

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
/// The skb's checksum is still to be filled in (CHECKSUM_PARTIAL: sent on this host, or by a
/// peer namespace over veth): it is valid by construction.
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
/// The device or the stack verified the transport checksum (CHECKSUM_UNNECESSARY).
const TP_STATUS_CSUM_VALID: u32 = 1 << 7;

/// struct virtio_net_hdr (linux/virtio_net.h), written by the kernel right before the frame
/// when PACKET_VNET_HDR is on. Little-endian on the hosts we run on (vio_le).
pub const VnetHdr = extern struct {
    flags: u8,
    gso_type: u8,
    hdr_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
};
pub const vnet_hdr_bytes: u32 = @sizeOf(VnetHdr);
/// VIRTIO_NET_HDR_GSO_UDP_L4: a UDP GSO super-frame, gso_size payload bytes per datagram.
pub const gso_type_udp_l4: u8 = 5;
/// sockaddr_ll follows the tpacket3_hdr at TPACKET_ALIGN(sizeof(tpacket3_hdr)); its
/// sll_pkttype byte is 10 bytes in.
const sll_offset: u32 = 48;
const sll_pkttype_offset: u32 = 10;

comptime {
    std.debug.assert(vnet_hdr_bytes == 10);
    std.debug.assert(std.mem.alignForward(usize, @sizeOf(linux.tpacket3_hdr), 16) == sll_offset);
}

/// Ring geometry for an interface MTU: a block holds at least one whole maximum-size frame,
/// so jumbo frames arrive whole; the ring's total size stays near `ring_bytes`.
pub fn geometry(mtu: u32, ring_bytes: u32) abi.RingGeometry {
    std.debug.assert(mtu > 0 and mtu <= constants.mtu_max);
    const frame_max = frame_header_bytes + vnet_hdr_bytes + l2_header_bytes_max + mtu;
    const frame_bytes = std.math.ceilPowerOfTwoAssert(u32, @max(frame_max, 2048));
    const block_bytes = @max(constants.ring_block_bytes_min, std.math.ceilPowerOfTwoAssert(u32, frame_bytes + block_header_bytes));
    const block_count = std.math.clamp(ring_bytes / block_bytes, 4, constants.ring_blocks_max);
    std.debug.assert(block_bytes % page_bytes == 0);
    return .{
        .block_bytes = block_bytes,
        .block_count = block_count,
        .frame_bytes = frame_bytes,
        .frame_count = (block_bytes / frame_bytes) * block_count,
    };
}

pub const Checksum = enum {
    /// Pending (CHECKSUM_PARTIAL) or verified by the device or stack: nothing to check.
    trusted,
    /// Nobody checked it: the parser verifies the UDP checksum.
    unverified,
};

pub const Frame = struct {
    data: []const u8,
    /// Length on the wire; larger than data.len when the capture was cut short.
    wire_len: u32,
    vlan_tci: ?u16,
    checksum: Checksum,
    /// PACKET_HOST, PACKET_OTHERHOST, ... (linux/if_packet.h).
    pkt_type: u8,
    /// Payload bytes per datagram when the frame is a UDP GSO/GRO super-frame, else 0.
    gso_size: u16,
};

/// Configures an AF_PACKET socket for receiving on an interface: TPACKET_V3, the ingress filter,
/// the RX ring, bind, and (with several workers) the fanout group. Done by the supervisor,
/// which keeps the socket for the interface's lifetime: a replaced worker attaches to the same
/// ring and fanout slot, so nothing is reassigned and what arrived meanwhile is still there.
/// Order matters: the filter and ring exist before bind, so no unfiltered frame is queued.
pub fn setup(fd: i32, ifindex: u32, mtu: u32, ring_bytes: u32, block_timeout_ms: u32, fanout_id: u16) sys.Error!abi.RingGeometry {
    const version: c_int = @intFromEnum(linux.tpacket_versions.V3);
    try sys.setsockoptInt(fd, linux.SOL.PACKET, linux.PACKET.VERSION, version);
    // A virtio_net_hdr before every frame: the gso_size of a UDP GSO super-frame (veth passes
    // a sender's GSO buffer on unsegmented), so it can be split into its datagrams. Only
    // allowed before the ring exists.
    try sys.setsockoptInt(fd, linux.SOL.PACKET, linux.PACKET.VNET_HDR, 1);
    // Our own transmissions are never input (loop guard); the filter checks it too, for
    // kernels without this option.
    sys.setsockoptInt(fd, linux.SOL.PACKET, linux.PACKET.IGNORE_OUTGOING, 1) catch |err| switch (err) {
        error.NOPROTOOPT => {},
        else => return err,
    };
    // A socket made blank again by `reset` keeps its locked filter: the same program
    // (interface-independent), so it is not attached twice (a locked filter refuses it).
    if (!try filterLocked(fd)) try filter.attach(fd, filter.ingress());

    const geo = geometry(mtu, ring_bytes);
    const req = linux.tpacket_req3{
        .block_size = geo.block_bytes,
        .block_nr = geo.block_count,
        .frame_size = geo.frame_bytes,
        .frame_nr = geo.frame_count,
        .retire_blk_tov = block_timeout_ms,
        .sizeof_priv = 0,
        .feature_req_word = 0,
    };
    try sys.setsockopt(fd, linux.SOL.PACKET, linux.PACKET.RX_RING, &req);
    var sll = linux.sockaddr.ll{
        .protocol = std.mem.nativeToBig(u16, linux.ETH.P.ALL),
        .ifindex = @intCast(ifindex),
        .hatype = 0,
        .pkttype = 0,
        .halen = 0,
        .addr = @splat(0),
    };
    _ = try sys.call("bind", linux.bind(fd, @ptrCast(&sll), @sizeOf(linux.sockaddr.ll)));
    if (fanout_id != 0) try fanout.join(fd, fanout_id);
    // Locked last (the kernel refuses a fanout program on a locked socket): nobody holding
    // this descriptor, a worker included, can detach or replace the filter any more.
    try sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.LOCK_FILTER, 1);
    return geo;
}

fn filterLocked(fd: i32) sys.Error!bool {
    var v: c_int = 0;
    var len: linux.socklen_t = @sizeOf(c_int);
    _ = try sys.callOwn("getsockopt", linux.getsockopt(fd, linux.SOL.SOCKET, linux.SO.LOCK_FILTER, std.mem.asBytes(&v), &len));
    return v != 0;
}

/// The protocol a blank-again socket is bound to, on lo: lo's frames get their protocol from
/// their Ethernet header (eth_type_trans), always an EtherType >= 0x0600 or one of the 802.3/802.2
/// pseudo-protocols (0x0001, 0x0004), so this value never matches and the socket costs nothing.
/// (Bind cannot unbind: protocol 0 means "keep the current one", so binding to protocol 0 and no
/// interface would listen on every interface with ETH_P_ALL.)
pub const parked_protocol: u16 = 0x05ff;
const loopback_ifindex = 1; // fixed in every network namespace (LOOPBACK_IFINDEX)

/// Makes a set-up packet socket blank again, for another interface (a worker position reused
/// instead of spent): parked on lo with a protocol lo never carries, then its ring is freed.
/// The kernel refuses to free a ring that a process still maps (EBUSY): the worker unmaps
/// first. Not for a socket in a fanout group (it cannot leave one: bind refuses, EINVAL).
pub fn reset(fd: i32) sys.Error!void {
    const sll = linux.sockaddr.ll{
        .protocol = std.mem.nativeToBig(u16, parked_protocol),
        .ifindex = loopback_ifindex,
        .hatype = 0,
        .pkttype = 0,
        .halen = 0,
        .addr = @splat(0),
    };
    _ = try sys.call("bind", linux.bind(fd, @ptrCast(&sll), @sizeOf(linux.sockaddr.ll)));
    // The kernel's counters (reading resets them) belong to the plane that was removed, whose
    // counts were retired: the next interface's ring starts from zero.
    _ = try statisticsOf(fd);
    const none = std.mem.zeroes(linux.tpacket_req3);
    try sys.setsockopt(fd, linux.SOL.PACKET, linux.PACKET.RX_RING, &none);
}

/// PACKET_STATISTICS of a packet socket since the last read (reading resets them): packets
/// seen, dropped because the ring was full, times the queue froze.
pub fn statisticsOf(fd: i32) sys.Error![3]u32 {
    var st: [3]u32 = .{ 0, 0, 0 };
    var len: linux.socklen_t = @sizeOf([3]u32);
    _ = try sys.call("getsockopt", linux.getsockopt(fd, linux.SOL.PACKET, linux.PACKET.STATISTICS, std.mem.asBytes(&st), &len));
    return st;
}

pub const Ring = struct {
    fd: i32,
    map: []align(page_bytes) u8,
    geo: abi.RingGeometry,
    block_next: u32,

    /// Maps the ring of a socket set up by `setup` (possibly used by a previous worker) and
    /// finds where to continue: the oldest block handed to user space, else the block the
    /// kernel is filling (the one it opened last: highest sequence number).
    pub fn attach(fd: i32, geo: abi.RingGeometry) sys.Error!Ring {
        if (geo.block_count == 0 or geo.block_bytes % page_bytes != 0) return error.INVAL;
        const len = @as(usize, geo.block_bytes) * geo.block_count;
        const addr = linux.mmap(null, len, .{ .READ = true, .WRITE = true }, .{ .TYPE = .SHARED, .POPULATE = true }, fd, 0);
        _ = try sys.callOwn("mmap", addr);
        const map = @as([*]align(page_bytes) u8, @ptrFromInt(addr))[0..len];
        var ring = Ring{ .fd = fd, .map = map, .geo = geo, .block_next = 0 };
        ring.block_next = ring.resumeIndex();
        return ring;
    }

    fn resumeIndex(self: *Ring) u32 {
        var oldest_user: ?u32 = null;
        var oldest_seq: u64 = std.math.maxInt(u64);
        var newest: u32 = 0;
        var newest_seq: u64 = 0;
        for (0..self.geo.block_count) |i| {
            const desc = self.blockDesc(@intCast(i));
            const status = @atomicLoad(u32, @as(*const u32, @ptrCast(&desc.hdr.bh1.block_status)), .acquire);
            const seq = desc.hdr.bh1.seq_num;
            if (status & TP_STATUS_USER != 0 and seq < oldest_seq) {
                oldest_seq = seq;
                oldest_user = @intCast(i);
            }
            if (seq > newest_seq) {
                newest_seq = seq;
                newest = @intCast(i);
            }
        }
        return oldest_user orelse newest;
    }

    pub fn deinit(self: *Ring) void {
        _ = linux.munmap(self.map.ptr, self.map.len);
        self.map = &.{};
    }

    fn blockDesc(self: *Ring, index: u32) *linux.tpacket_block_desc {
        return @ptrCast(@alignCast(self.map.ptr + @as(usize, index) * self.geo.block_bytes));
    }

    /// The block `ahead` places after the next one to release, if user space owns it.
    pub fn peekBlock(self: *Ring, ahead: u32) ?Block {
        std.debug.assert(ahead < self.geo.block_count);
        const index = (self.block_next + ahead) % self.geo.block_count;
        const desc = self.blockDesc(index);
        const status = @atomicLoad(u32, @as(*const u32, @ptrCast(&desc.hdr.bh1.block_status)), .acquire);
        if (status & TP_STATUS_USER == 0) return null;
        const base = @as([*]const u8, @ptrCast(desc));
        return .{
            .base = base[0..self.geo.block_bytes],
            .count = desc.hdr.bh1.num_pkts,
            .offset = desc.hdr.bh1.offset_to_first_pkt,
            .index = index,
        };
    }

    /// Gives a block back to the kernel; blocks are released in ring order.
    pub fn release(self: *Ring, block: Block) void {
        std.debug.assert(block.index == self.block_next);
        const desc = self.blockDesc(block.index);
        @atomicStore(u32, @as(*u32, @ptrCast(&desc.hdr.bh1.block_status)), TP_STATUS_KERNEL, .release);
        self.block_next = (self.block_next + 1) % self.geo.block_count;
    }

    /// Kernel counters since the last call (reading resets them): packets seen, dropped
    /// because the ring was full, and times the queue froze.
    pub fn statistics(self: *Ring) sys.Error![3]u32 {
        return statisticsOf(self.fd);
    }
};

const cache_line_bytes = 64;
const prefetch_bytes_max = constants.ring_prefetch_bytes_max;

pub const Block = struct {
    base: []const u8,
    count: u32,
    offset: u32,
    index: u32,

    pub const Iterator = struct {
        block: *const Block,
        remaining: u32,
        offset: u32,

        pub fn next(it: *Iterator) ?Frame {
            if (it.remaining == 0) return null;
            const b = it.block.base;
            // The kernel wrote these; still, never index outside the block.
            if (it.offset + @sizeOf(linux.tpacket3_hdr) > b.len) {
                it.remaining = 0;
                return null;
            }
            const hdr = std.mem.bytesToValue(linux.tpacket3_hdr, b[it.offset..][0..@sizeOf(linux.tpacket3_hdr)]);
            const start = it.offset + hdr.mac;
            const end = start + hdr.snaplen;
            it.remaining -= 1;
            const here = it.offset;
            it.offset = if (hdr.next_offset == 0) @intCast(b.len) else it.offset + hdr.next_offset;
            if (end > b.len or start < here + sll_offset + sll_pkttype_offset + 1 or start < here + vnet_hdr_bytes) {
                it.remaining = 0;
                return null;
            }
            // The next frame was written by the CPU that ran the receive softirq: start pulling
            // it in now (as long as this one, a stream's frames are alike), so its lines arrive
            // while this one is parsed and its checksum summed.
            if (it.remaining > 0) {
                const ahead = @min(b.len, it.offset + @min(end - here, prefetch_bytes_max));
                var line = it.offset;
                while (line < ahead) : (line += cache_line_bytes) @prefetch(b.ptr + line, .{});
            }
            const vnet = std.mem.bytesToValue(VnetHdr, b[start - vnet_hdr_bytes ..][0..vnet_hdr_bytes]);
            const gso_size = std.mem.littleToNative(u16, vnet.gso_size);
            const trusted = hdr.status & (TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID) != 0;
            return .{
                .data = b[start..end],
                .wire_len = hdr.len,
                .vlan_tci = if (hdr.status & TP_STATUS_VLAN_VALID != 0) @truncate(hdr.variant.hv1.vlan_tci) else null,
                .checksum = if (trusted) .trusted else .unverified,
                .pkt_type = b[here + sll_offset + sll_pkttype_offset],
                .gso_size = if (vnet.gso_type & 0x7f == gso_type_udp_l4) gso_size else 0,
            };
        }
    };

    pub fn frames(self: *const Block) Iterator {
        return .{ .block = self, .remaining = self.count, .offset = self.offset };
    }
};

test "geometry: frames fit a block for every MTU, jumbo included" {
    for ([_]u32{ 68, 576, 1500, 1504, 4000, 9000, 9216, 16000, 65535 }) |mtu| {
        const g = geometry(mtu, constants.ring_bytes_default);
        try std.testing.expect(g.block_bytes >= frame_header_bytes + l2_header_bytes_max + mtu + block_header_bytes);
        try std.testing.expect(g.frame_bytes <= g.block_bytes);
        try std.testing.expect(g.block_count >= 4 and g.block_count <= constants.ring_blocks_max);
        try std.testing.expectEqual(@as(u32, 0), g.block_bytes % page_bytes);
        try std.testing.expect(std.math.isPowerOfTwo(g.block_bytes));
    }
    const g = geometry(1500, constants.ring_bytes_default);
    try std.testing.expectEqual(@as(u32, 1 << 16), g.block_bytes);
    try std.testing.expect(g.block_bytes >= egress_super_frame_bytes + block_header_bytes);
    try std.testing.expectEqual(@as(u32, 128), g.block_count);
    // Larger rings (ring_mib) scale the block count, up to the maximum.
    try std.testing.expectEqual(@as(u32, 1024), geometry(1500, 64 << 20).block_count);
    try std.testing.expectEqual(constants.ring_blocks_max, geometry(1500, 1 << 30).block_count);
}
