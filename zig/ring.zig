//! AF_PACKET receive ring (TPACKET_V2, PACKET_MMAP) on a socket created by the supervisor.
//! Nothing here needs privilege: the socket was opened by a privileged process and passed in.
//!
//! One frame per slot, handed to user space (and the worker woken) as soon as it is written:
//! a quiet stream is not held back. (TPACKET_V3 hands over whole blocks, which at low rates
//! wait for the retire timer: p99 one-way latency was about that timer, 1 ms; decision 023.)
//! A frame larger than a slot (a UDP GSO super-frame from another relay, up to 64 KiB) gets a
//! cut copy in its slot marked TP_STATUS_COPY, and the whole frame in the socket's receive
//! queue (PACKET_COPY_THRESH), in slot order: the iterator reads it from there.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const abi = @import("abi.zig");
const constants = @import("constants.zig");
const filter = @import("filter.zig");
const fanout = @import("fanout.zig");

const page_bytes: u32 = 4096;
/// Headroom the kernel leaves unwritten between a slot's sockaddr_ll and its frame
/// (PACKET_RESERVE): the release stamp lives there (`Ring.resumeSlot`).
const reserve_bytes: u32 = 32;
/// Room before the frame in a slot, rounded up: TPACKET_ALIGN(sizeof(tpacket2_hdr)) +
/// sizeof(sockaddr_ll), aligned, then the reserve.
const frame_header_bytes: u32 = 48 + 32 + reserve_bytes;
/// Where a slot keeps the sequence number of its last release by a worker. The kernel writes
/// the header (32 bytes), the sockaddr_ll (20 bytes from 32), and from the virtio_net_hdr on;
/// with the reserve, that starts at 80 or later for link headers up to 48 bytes.
const stamp_offset: u32 = 56;
/// Room for two in-band VLAN tags on top of the Ethernet header.
const l2_header_bytes_max: u32 = 14 + 8;

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
/// The slot holds a cut copy; the whole frame waits in the socket's receive queue.
const TP_STATUS_COPY: u32 = 1 << 1;
/// The skb's checksum is still to be filled in (CHECKSUM_PARTIAL: sent on this host, or by a
/// peer namespace over veth): it is valid by construction.
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
/// tp_vlan_tpid holds the TPID of the tag in tp_vlan_tci (0x8100, 0x88a8, ...).
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
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
/// struct tpacket2_hdr (linux/if_packet.h) at the start of every slot.
const SlotHeader = extern struct {
    status: u32,
    len: u32,
    snaplen: u32,
    mac: u16,
    net: u16,
    sec: u32,
    nsec: u32,
    vlan_tci: u16,
    vlan_tpid: u16,
    padding: [4]u8,
};
/// sockaddr_ll follows the tpacket2_hdr at TPACKET_ALIGN(sizeof(tpacket2_hdr)); its
/// sll_pkttype byte is 10 bytes in.
const sll_offset: u32 = 32;
const sll_pkttype_offset: u32 = 10;
const PACKET_RESERVE = 12;
/// The largest frame the receive queue can hold for a cut slot: an IP packet of 64 KiB, two
/// VLAN tags, and the virtio_net_hdr that recv puts first.
pub const copy_bytes_max: u32 = vnet_hdr_bytes + l2_header_bytes_max + 65535;
const copy_arena_bytes: u32 = constants.ring_copy_frames_max * std.mem.alignForward(u32, copy_bytes_max, 64);

comptime {
    std.debug.assert(vnet_hdr_bytes == 10);
    std.debug.assert(@sizeOf(SlotHeader) == 32);
    std.debug.assert(std.mem.alignForward(usize, @sizeOf(SlotHeader), 16) == sll_offset);
    std.debug.assert(stamp_offset >= sll_offset + 20 and stamp_offset % 8 == 0);
    // The stamp shares the status's cache line: a release writes one line per slot.
    std.debug.assert(stamp_offset + 8 <= 64);
}

/// Ring geometry for an interface MTU: a slot (frame) holds a whole maximum-size frame, so
/// jumbo frames arrive whole; blocks are only the kernel's allocation unit (slots of a power
/// of two in blocks of a power of two: slot i is at i * frame_bytes). The ring's total size
/// stays near `ring_bytes`.
pub fn geometry(mtu: u32, ring_bytes: u32) abi.RingGeometry {
    std.debug.assert(mtu > 0 and mtu <= constants.mtu_max);
    const frame_max = frame_header_bytes + vnet_hdr_bytes + l2_header_bytes_max + mtu;
    const frame_bytes = std.math.ceilPowerOfTwoAssert(u32, @max(frame_max, constants.ring_frame_bytes_min));
    const block_bytes = @max(constants.ring_block_bytes_min, frame_bytes);
    const block_count = std.math.clamp(ring_bytes / block_bytes, 4, constants.ring_blocks_max);
    std.debug.assert(block_bytes % page_bytes == 0 and block_bytes <= constants.ring_block_bytes_max);
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

/// Configures an AF_PACKET socket for receiving on an interface: TPACKET_V2, the ingress filter,
/// the RX ring, bind, and (with several workers) the fanout group. Done by the supervisor,
/// which keeps the socket for the interface's lifetime: a replaced worker attaches to the same
/// ring and fanout slot, so nothing is reassigned and what arrived meanwhile is still there.
/// Order matters: the filter and ring exist before bind, so no unfiltered frame is queued.
pub fn setup(fd: i32, ifindex: u32, mtu: u32, ring_bytes: u32, fanout_id: u16) sys.Error!abi.RingGeometry {
    const version: c_int = @intFromEnum(linux.tpacket_versions.V2);
    try sys.setsockoptInt(fd, linux.SOL.PACKET, linux.PACKET.VERSION, version);
    // A virtio_net_hdr before every frame: the gso_size of a UDP GSO super-frame (veth passes
    // a sender's GSO buffer on unsegmented), so it can be split into its datagrams. Only
    // allowed before the ring exists.
    try sys.setsockoptInt(fd, linux.SOL.PACKET, linux.PACKET.VNET_HDR, 1);
    // Headroom the kernel leaves alone in every slot, where releases are stamped.
    try sys.setsockoptInt(fd, linux.SOL.PACKET, PACKET_RESERVE, reserve_bytes);
    // Our own transmissions are never input (loop guard); the filter checks it too, for
    // kernels without this option.
    sys.setsockoptInt(fd, linux.SOL.PACKET, linux.PACKET.IGNORE_OUTGOING, 1) catch |err| switch (err) {
        error.NOPROTOOPT => {},
        else => return err,
    };
    // A socket made blank again by `reset` keeps its locked filter: the same program
    // (interface-independent), so it is not attached twice (a locked filter refuses it).
    if (!try filterLocked(fd)) try filter.attach(fd, filter.ingress());

    // A frame larger than a slot also goes whole to the receive queue (TP_STATUS_COPY). The
    // queue holds such frames until the worker reaches their slots; beyond its limit they stay
    // cut (rx_truncated). The ring's size is a fair limit: memory is only charged while used.
    // Past net.core.rmem_max that takes CAP_NET_ADMIN; a supervisor without it gets what
    // rmem_max allows (the default, 208 KiB, holds about two 64 KiB super-frames).
    try sys.setsockoptInt(fd, linux.SOL.PACKET, linux.PACKET.COPY_THRESH, 1);
    const queue_bytes: c_int = @intCast(@min(ring_bytes, std.math.maxInt(i32) / 2));
    sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.RCVBUFFORCE, queue_bytes) catch |err| switch (err) {
        error.PERM => try sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.RCVBUF, queue_bytes),
        else => return err,
    };

    const geo = geometry(mtu, ring_bytes);
    const req = TpacketReq{
        .block_size = geo.block_bytes,
        .block_nr = geo.block_count,
        .frame_size = geo.frame_bytes,
        .frame_nr = geo.frame_count,
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

/// struct tpacket_req (linux/if_packet.h): the TPACKET_V1/V2 ring request.
const TpacketReq = extern struct {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
};

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
    // Whole frames of cut slots that no worker read belong to the old interface: the next
    // ring's first cut slot must not take one of them.
    var sink: [1]u8 = undefined;
    while (true) {
        const rc = linux.recvfrom(fd, &sink, sink.len, linux.MSG.DONTWAIT | linux.MSG.TRUNC, null, null);
        if (linux.errno(rc) != .SUCCESS) break;
    }
    const none = std.mem.zeroes(TpacketReq);
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
    /// The oldest slot not given back to the kernel.
    slot_next: u32,
    /// Slots handed out by `peekRun` since the last `release` caught up, and whether the last
    /// run ended at a slot the kernel still owns: then nothing after it may be handed out yet
    /// (the kernel fills slots in order; a slot filled meanwhile after it must wait its turn).
    peeked: u32,
    dry: bool,
    /// The stamp the next released slot gets (1, 2, ...; 0 is "never released").
    stamp_next: u64,
    /// Where the whole frames of cut slots (TP_STATUS_COPY) are read to, one after the other:
    /// their payloads wait there for the egress flush, as the others wait in their slots. The
    /// loop flushes early when the room left may not hold another (`copyRoomLow`), then
    /// starts over (`copyReset`). Untouched (not resident) until the first super-frame.
    copy: *[copy_arena_bytes]u8,
    copy_used: u32,

    /// Maps the ring of a socket set up by `setup` (possibly used by a previous worker) and
    /// finds where to continue (`resumeSlot`).
    pub fn attach(fd: i32, geo: abi.RingGeometry) sys.Error!Ring {
        if (geo.block_count == 0 or geo.block_bytes % page_bytes != 0) return error.INVAL;
        if (geo.frame_bytes < 64 or geo.block_bytes % geo.frame_bytes != 0) return error.INVAL;
        // In u64: a geometry that did not come from `geometry` may overflow a u32 here.
        if (geo.frame_count != @as(u64, geo.block_bytes / geo.frame_bytes) * geo.block_count) return error.INVAL;
        const len = @as(usize, geo.block_bytes) * geo.block_count;
        const addr = linux.mmap(null, len, .{ .READ = true, .WRITE = true }, .{ .TYPE = .SHARED, .POPULATE = true }, fd, 0);
        _ = try sys.callOwn("mmap", addr);
        const map = @as([*]align(page_bytes) u8, @ptrFromInt(addr))[0..len];
        errdefer _ = linux.munmap(map.ptr, map.len);
        const copy = std.heap.page_allocator.create([copy_arena_bytes]u8) catch return error.NOMEM;
        var ring = Ring{ .fd = fd, .map = map, .geo = geo, .slot_next = 0, .peeked = 0, .dry = false, .stamp_next = 1, .copy = copy, .copy_used = 0 };
        ring.resumeSlot();
        return ring;
    }

    /// Where to continue: right after the slot released last, the one with the highest
    /// stamp. Slots are released in ring order and the kernel fills them in the same order, so
    /// everything after it is either still the kernel's or waiting in arrival order, whether
    /// the ring is empty, partly or completely full. The kernel never writes the stamp (it
    /// sits in the reserve), and a ring set up afresh is all zero: slot 0, as the kernel.
    fn resumeSlot(self: *Ring) void {
        var newest: u32 = 0;
        var newest_stamp: u64 = 0;
        var i: u32 = 0;
        while (i < self.geo.frame_count) : (i += 1) {
            const stamp = self.stampOf(i).*;
            if (stamp > newest_stamp) {
                newest_stamp = stamp;
                newest = i;
            }
        }
        self.slot_next = if (newest_stamp == 0) 0 else (newest + 1) % self.geo.frame_count;
        self.stamp_next = newest_stamp + 1;
    }

    pub fn deinit(self: *Ring) void {
        _ = linux.munmap(self.map.ptr, self.map.len);
        self.map = &.{};
        std.heap.page_allocator.destroy(self.copy);
    }

    fn slotHeader(self: *const Ring, slot: u32) *SlotHeader {
        std.debug.assert(slot < self.geo.frame_count);
        return @ptrCast(@alignCast(self.map.ptr + @as(usize, slot) * self.geo.frame_bytes));
    }

    fn stampOf(self: *const Ring, slot: u32) *u64 {
        std.debug.assert(slot < self.geo.frame_count);
        return @ptrCast(@alignCast(self.map.ptr + @as(usize, slot) * self.geo.frame_bytes + stamp_offset));
    }

    fn slotStatus(self: *const Ring, slot: u32) u32 {
        return @atomicLoad(u32, &self.slotHeader(slot).status, .acquire);
    }

    /// The next run of slots user space owns, after those already handed out: up to a block's
    /// worth of slots, not past the ring's end. Null when the next slot is the kernel's.
    pub fn peekRun(self: *Ring) ?Run {
        // With nothing handed out, there is nothing the next slot could overtake.
        if (self.peeked == 0) self.dry = false;
        if (self.dry) return null;
        const n = self.geo.frame_count;
        const first = (self.slot_next + self.peeked) % n;
        const want = @min(self.geo.block_bytes / self.geo.frame_bytes, n - first);
        var count: u32 = 0;
        while (count < want and self.slotStatus(first + count) & TP_STATUS_USER != 0) count += 1;
        if (count < want) self.dry = true;
        if (count == 0) return null;
        self.peeked += count;
        return .{ .ring = self, .first = first, .count = count };
    }

    /// Gives a run's slots back to the kernel; runs are released in the order they were handed
    /// out, after their payloads were sent.
    pub fn release(self: *Ring, run: Run) void {
        std.debug.assert(run.first == self.slot_next);
        std.debug.assert(run.count <= self.peeked);
        var i: u32 = 0;
        while (i < run.count) : (i += 1) {
            self.stampOf(run.first + i).* = self.stamp_next;
            self.stamp_next += 1;
            // Ordered after the stamp: once the kernel owns the slot it may refill it.
            @atomicStore(u32, &self.slotHeader(run.first + i).status, TP_STATUS_KERNEL, .release);
        }
        self.slot_next = (self.slot_next + run.count) % self.geo.frame_count;
        self.peeked -= run.count;
    }

    /// Kernel counters since the last call (reading resets them): packets seen, dropped
    /// because the ring was full, and times the queue froze.
    pub fn statistics(self: *Ring) sys.Error![3]u32 {
        return statisticsOf(self.fd);
    }

    /// The whole frame of a cut slot, from the receive queue. It must be this slot's: the queue
    /// holds them in slot order, but a worker that ended between reading whole frames and
    /// releasing their slots leaves fewer in the queue than there are cut slots (the next slots
    /// take later frames, the last ones find none); a frame of another length is not this
    /// slot's. Null when there is none (the queue was at its limit when the frame arrived) or
    /// it is not this slot's: the slot stays cut (rx_truncated). One frame is taken from the
    /// queue in any case, so the queue never runs ahead of the slots.
    fn wholeFrame(self: *Ring, wire_len: u32) ?[]const u8 {
        // The loop keeps room for one more (copyRoomLow); without room the frame is dropped.
        if (self.copyRoomLow()) {
            var byte: [1]u8 = undefined;
            _ = linux.recvfrom(self.fd, &byte, byte.len, linux.MSG.DONTWAIT | linux.MSG.TRUNC, null, null);
            return null;
        }
        const room = self.copy[self.copy_used..][0..copy_bytes_max];
        const rc = linux.recvfrom(self.fd, room, room.len, linux.MSG.DONTWAIT, null, null);
        if (linux.errno(rc) != .SUCCESS or rc < vnet_hdr_bytes) return null;
        if (rc - vnet_hdr_bytes != wire_len) return null;
        self.copy_used += std.mem.alignForward(u32, @intCast(rc), cache_line_bytes);
        return room[0..rc];
    }

    /// The copy area may not hold another whole frame: flush the egress, then `copyReset`.
    pub inline fn copyRoomLow(self: *const Ring) bool {
        return self.copy_used + copy_bytes_max > copy_arena_bytes;
    }

    /// The payloads in the copy area were sent: it can be reused.
    pub inline fn copyReset(self: *Ring) void {
        self.copy_used = 0;
    }
};

const cache_line_bytes = 64;
const prefetch_bytes_max = constants.ring_prefetch_bytes_max;

/// Consecutive slots user space owns, handed out together.
pub const Run = struct {
    ring: *Ring,
    first: u32,
    count: u32,

    pub const Iterator = struct {
        run: *const Run,
        next_index: u32,

        pub fn next(it: *Iterator) ?Frame {
            const run = it.run;
            const ring = run.ring;
            while (it.next_index < run.count) {
                const slot = run.first + it.next_index;
                it.next_index += 1;
                const slot_bytes = ring.geo.frame_bytes;
                const base = ring.map[@as(usize, slot) * slot_bytes ..][0..slot_bytes];
                // The next slot was written by the CPU that ran the receive softirq: start
                // pulling it in now (as much as this one, a stream's frames are alike), so its
                // lines arrive while this one is parsed and its checksum summed.
                if (it.next_index < run.count) {
                    const hdr_now = std.mem.bytesToValue(SlotHeader, base[0..@sizeOf(SlotHeader)]);
                    const ahead = @min(slot_bytes, @min(hdr_now.mac + hdr_now.snaplen, prefetch_bytes_max));
                    const next_base = base.ptr + slot_bytes;
                    var line: u32 = 0;
                    while (line < ahead) : (line += cache_line_bytes) @prefetch(next_base + line, .{});
                }
                if (frameOf(ring, base)) |frame| return frame;
            }
            return null;
        }

        fn frameOf(ring: *Ring, base: []const u8) ?Frame {
            const hdr = std.mem.bytesToValue(SlotHeader, base[0..@sizeOf(SlotHeader)]);
            // A cut slot's whole frame is taken from the queue whatever becomes of the slot:
            // left there, it would be taken for the next cut slot's.
            const whole = if (hdr.status & TP_STATUS_COPY != 0) ring.wholeFrame(hdr.len) else null;
            const start: u32 = hdr.mac;
            const end = start + hdr.snaplen;
            // The kernel wrote these; still, never index outside the slot.
            if (end > base.len or start < stamp_offset + 8 + vnet_hdr_bytes) return null;
            var data = base[start..end];
            var vnet_bytes = base[start - vnet_hdr_bytes ..][0..vnet_hdr_bytes];
            if (whole) |w| {
                vnet_bytes = w[0..vnet_hdr_bytes];
                data = w[vnet_hdr_bytes..];
            }
            const vnet = std.mem.bytesToValue(VnetHdr, vnet_bytes[0..vnet_hdr_bytes]);
            const gso_size = std.mem.littleToNative(u16, vnet.gso_size);
            const trusted = hdr.status & (TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID) != 0;
            return .{
                .data = data,
                .wire_len = hdr.len,
                .vlan_tci = if (hdr.status & TP_STATUS_VLAN_VALID != 0) hdr.vlan_tci else null,
                .checksum = if (trusted) .trusted else .unverified,
                .pkt_type = base[sll_offset + sll_pkttype_offset],
                .gso_size = if (vnet.gso_type & 0x7f == gso_type_udp_l4) gso_size else 0,
            };
        }
    };

    /// What the kernel wrote of a frame beyond its bytes and what Frame carries; read by the
    /// traced loop only, so the untraced one pays nothing for it.
    pub const Stamp = struct {
        /// When it was received (tp_sec, tp_nsec): CLOCK_REALTIME as the kernel stamps it
        /// (the skb's software timestamp when it has one, else the time of the copy).
        time_ns: u64,
        /// TPID of the tag the kernel moved into metadata (Frame.vlan_tci); 0x8100 when the
        /// kernel does not say (TP_STATUS_VLAN_TPID_VALID off), 0 when there is no such tag.
        vlan_tpid: u16,
    };

    /// The stamp of the frame `Iterator.next` returned last.
    pub fn stampOfLast(self: *const Run, it: *const Iterator) Stamp {
        std.debug.assert(it.run == self);
        std.debug.assert(it.next_index > 0 and it.next_index <= self.count);
        const slot = self.first + it.next_index - 1;
        const slot_bytes = self.ring.geo.frame_bytes;
        const base = self.ring.map[@as(usize, slot) * slot_bytes ..][0..@sizeOf(SlotHeader)];
        const hdr = std.mem.bytesToValue(SlotHeader, base);
        const tagged = hdr.status & TP_STATUS_VLAN_VALID != 0;
        const tpid_known = hdr.status & TP_STATUS_VLAN_TPID_VALID != 0;
        return .{
            .time_ns = @as(u64, hdr.sec) * std.time.ns_per_s + hdr.nsec,
            .vlan_tpid = if (!tagged) 0 else if (tpid_known) hdr.vlan_tpid else 0x8100,
        };
    }

    pub fn frames(self: *const Run) Iterator {
        return .{ .run = self, .next_index = 0 };
    }
};

test "geometry: frames fit a block for every MTU, jumbo included" {
    for ([_]u32{ 68, 576, 1500, 1504, 4000, 9000, 9216, 16000, 65535 }) |mtu| {
        const g = geometry(mtu, constants.ring_bytes_default);
        try std.testing.expect(g.frame_bytes >= frame_header_bytes + vnet_hdr_bytes + l2_header_bytes_max + mtu);
        try std.testing.expectEqual(@as(u32, 0), g.block_bytes % g.frame_bytes);
        try std.testing.expectEqual(g.frame_count * g.frame_bytes, g.block_count * g.block_bytes);
        try std.testing.expect(g.frame_bytes <= g.block_bytes);
        try std.testing.expect(g.block_count >= 4 and g.block_count <= constants.ring_blocks_max);
        try std.testing.expectEqual(@as(u32, 0), g.block_bytes % page_bytes);
        try std.testing.expect(std.math.isPowerOfTwo(g.block_bytes));
    }
    const g = geometry(1500, constants.ring_bytes_default);
    try std.testing.expectEqual(@as(u32, 1 << 16), g.block_bytes);
    // The copy area holds a UDP GSO super-frame as mcrelay's own egress sends it (the largest
    // buffer plus UDP, IPv4 and link headers), or a chain of relays would lose it.
    const egress_super_frame_bytes: u32 = vnet_hdr_bytes + l2_header_bytes_max + 20 + 8 + constants.egress_gso_bytes_max;
    try std.testing.expect(copy_bytes_max >= egress_super_frame_bytes);
    try std.testing.expectEqual(@as(u32, 2048), g.frame_bytes);
    try std.testing.expectEqual(@as(u32, 4096), g.frame_count);
    try std.testing.expectEqual(@as(u32, 128), g.block_count);
    // Larger rings (ring_mib) scale the block count, up to the maximum.
    try std.testing.expectEqual(@as(u32, 1024), geometry(1500, 64 << 20).block_count);
    try std.testing.expectEqual(constants.ring_blocks_max, geometry(1500, 1 << 30).block_count);
    // The largest frame gives the largest block a worker accepts (constants.ring_block_bytes_max).
    try std.testing.expectEqual(constants.ring_block_bytes_max, geometry(constants.mtu_max, constants.ring_bytes_default).block_bytes);
}

test "attach refuses a geometry whose slot count does not fit a u32, before mapping anything" {
    // (2^31 / 64) x 4096 slots is 2^37: computed in u32 it overflowed (a panic in safe builds).
    const geo: abi.RingGeometry = .{ .block_bytes = 1 << 31, .block_count = 4096, .frame_bytes = 64, .frame_count = 1 };
    try std.testing.expectError(error.INVAL, Ring.attach(-1, geo));
}

// Ring tests on lo. They need CAP_NET_RAW (packet sockets); without it they are skipped.

const test_port: u16 = 4999;

/// A packet socket on lo set up as the supervisor does: 2 KiB slots, `ring_bytes` of them.
fn testSocket(ring_bytes: u32) !struct { fd: i32, geo: abi.RingGeometry } {
    const rc = linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0);
    if (linux.errno(rc) == .PERM or linux.errno(rc) == .ACCES) return error.SkipZigTest;
    const fd: i32 = @intCast(try sys.call("socket", rc));
    errdefer sys.close(fd);
    const geo = try setup(fd, 1, 1500, ring_bytes, 0);
    return .{ .fd = fd, .geo = geo };
}

/// Sends one Ethernet frame 10.9.9.1 -> 239.1.1.1:test_port on lo with `payload_len` bytes of
/// payload starting with `marker` (big-endian u32), through a packet socket of its own.
fn testSend(tx: i32, payload_len: u32, marker: u32) !void {
    var frame: [14 + 20 + 8 + 9000]u8 = @splat(0);
    std.debug.assert(payload_len >= 4 and payload_len <= 9000);
    @memcpy(frame[0..6], &[_]u8{ 0x01, 0x00, 0x5e, 0x01, 0x01, 0x01 });
    @memcpy(frame[6..12], &[_]u8{ 0x02, 0, 0, 0, 0, 0x01 });
    frame[12] = 0x08;
    const ip = frame[14..34];
    ip[0] = 0x45;
    std.mem.writeInt(u16, ip[2..4], @intCast(20 + 8 + payload_len), .big);
    ip[8] = 4;
    ip[9] = 17;
    @memcpy(ip[12..16], &[_]u8{ 10, 9, 9, 1 });
    @memcpy(ip[16..20], &[_]u8{ 239, 1, 1, 1 });
    std.mem.writeInt(u16, frame[36..38], test_port, .big);
    std.mem.writeInt(u16, frame[38..40], @intCast(8 + payload_len), .big);
    std.mem.writeInt(u32, frame[42..46], marker, .big);
    const len = 42 + payload_len;
    var sll = linux.sockaddr.ll{ .protocol = std.mem.nativeToBig(u16, linux.ETH.P.IP), .ifindex = 1, .hatype = 0, .pkttype = 0, .halen = 6, .addr = .{ 0x01, 0x00, 0x5e, 0x01, 0x01, 0x01, 0, 0 } };
    _ = try sys.call("sendto", linux.sendto(tx, &frame, len, 0, @ptrCast(&sll), @sizeOf(linux.sockaddr.ll)));
}

const TestFrame = struct { marker: u32, len: u32, whole: bool };

/// Takes frames from the ring until `want` of ours (to test_port) arrived or a second passed,
/// releasing every run; returns ours in ring order. Other traffic on lo is skipped.
fn testTake(ring: *Ring, out: []TestFrame, want: usize) !usize {
    var n: usize = 0;
    var waited: u32 = 0;
    while (n < want and waited < 100) {
        const run = ring.peekRun() orelse {
            var pfd = [_]linux.pollfd{.{ .fd = ring.fd, .events = linux.POLL.IN, .revents = 0 }};
            _ = linux.poll(&pfd, 1, 10);
            waited += 1;
            continue;
        };
        var it = run.frames();
        while (it.next()) |f| {
            if (f.data.len < 46 or std.mem.readInt(u16, f.data[36..38], .big) != test_port) continue;
            if (n < out.len) out[n] = .{ .marker = std.mem.readInt(u32, f.data[42..46], .big), .len = @intCast(f.data.len), .whole = f.data.len == f.wire_len };
            n += 1;
        }
        ring.release(run);
    }
    return n;
}

test "frames larger than a slot arrive whole through the receive queue, in ring order with the others" {
    const s = try testSocket(1 << 20);
    defer sys.close(s.fd);
    var ring = try Ring.attach(s.fd, s.geo);
    defer ring.deinit();
    const tx: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(tx);
    const sizes = [_]u32{ 100, 5000, 1316, 9000, 3000, 4 };
    for (sizes, 0..) |size, i| try testSend(tx, size, @intCast(i + 1));
    var got: [8]TestFrame = undefined;
    try std.testing.expectEqual(sizes.len, try testTake(&ring, &got, sizes.len));
    for (sizes, got[0..sizes.len], 0..) |size, f, i| {
        try std.testing.expectEqual(@as(u32, @intCast(i + 1)), f.marker);
        try std.testing.expectEqual(42 + size, f.len);
        try std.testing.expect(f.whole);
    }
    // Nothing is left in the queue for a later cut slot to take.
    var byte: [1]u8 = undefined;
    try std.testing.expectEqual(linux.E.AGAIN, linux.errno(linux.recvfrom(s.fd, &byte, 1, linux.MSG.DONTWAIT, null, null)));
}

test "a worker attaching after another continues after the last slot released, also across the ring's end" {
    // 4 blocks of 64 KiB: 128 slots.
    const s = try testSocket(256 << 10);
    defer sys.close(s.fd);
    try std.testing.expectEqual(@as(u32, 128), s.geo.frame_count);
    const tx: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(tx);
    var got: [128]TestFrame = undefined;
    var marker: u32 = 1;

    var first = try Ring.attach(s.fd, s.geo);
    for (0..100) |_| {
        try testSend(tx, 64, marker);
        marker += 1;
    }
    try std.testing.expectEqual(@as(usize, 100), try testTake(&first, &got, 100));
    const after_first = first.slot_next;
    try std.testing.expect(after_first >= 100);
    // The next 50 go past the ring's end into slots already used (and stamped), and wait.
    for (0..50) |_| {
        try testSend(tx, 64, marker);
        marker += 1;
    }
    first.deinit();

    var second = try Ring.attach(s.fd, s.geo);
    defer second.deinit();
    try std.testing.expectEqual(after_first, second.slot_next);
    // The kernel refilled slot 0 and left its stamp alone (it sits in the reserve).
    if (after_first == 100) try std.testing.expectEqual(@as(u64, 1), second.stampOf(0).*);
    try std.testing.expectEqual(@as(usize, 50), try testTake(&second, &got, 50));
    for (got[0..50], 101..) |f, m| try std.testing.expectEqual(@as(u32, @intCast(m)), f.marker);
}

test "a socket made blank again drops the whole frames its cut slots left in the queue" {
    const s = try testSocket(1 << 20);
    defer sys.close(s.fd);
    const tx: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(tx);
    try testSend(tx, 5000, 7);
    var pfd = [_]linux.pollfd{.{ .fd = s.fd, .events = linux.POLL.IN, .revents = 0 }};
    _ = linux.poll(&pfd, 1, 1000);
    try reset(s.fd);
    var byte: [1]u8 = undefined;
    try std.testing.expectEqual(linux.E.AGAIN, linux.errno(linux.recvfrom(s.fd, &byte, 1, linux.MSG.DONTWAIT, null, null)));
}

test "a frame's stamp is its own receive time (realtime), and the TPID of a tag the kernel moved out" {
    const s = try testSocket(1 << 20);
    defer sys.close(s.fd);
    var ring = try Ring.attach(s.fd, s.geo);
    defer ring.deinit();
    const tx: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(tx);
    const before_ns = sys.realtimeNs();
    // Four frames 3 ms apart, read together afterwards: one run, four different times.
    for (1..5) |m| {
        try testSend(tx, 64, @intCast(m));
        const gap = linux.timespec{ .sec = 0, .nsec = 3 * std.time.ns_per_ms };
        _ = linux.nanosleep(&gap, null);
    }
    // A QinQ frame: the kernel moves the outer tag (0x88a8, PCP 5, DEI 1, VID 100) into the
    // slot's metadata and leaves the inner 0x8100 tag in the frame.
    var qinq: [14 + 8 + 20 + 8 + 8]u8 = @splat(0);
    @memcpy(qinq[0..6], &[_]u8{ 0x01, 0x00, 0x5e, 0x01, 0x01, 0x01 });
    @memcpy(qinq[6..12], &[_]u8{ 0x02, 0, 0, 0, 0, 0x01 });
    std.mem.writeInt(u16, qinq[12..14], 0x88a8, .big);
    std.mem.writeInt(u16, qinq[14..16], (5 << 13) | (1 << 12) | 100, .big);
    std.mem.writeInt(u16, qinq[16..18], 0x8100, .big);
    std.mem.writeInt(u16, qinq[18..20], 200, .big);
    std.mem.writeInt(u16, qinq[20..22], 0x0800, .big);
    qinq[22] = 0x45;
    std.mem.writeInt(u16, qinq[50..52], test_port, .big);
    var sll = linux.sockaddr.ll{ .protocol = std.mem.nativeToBig(u16, 0x88a8), .ifindex = 1, .hatype = 0, .pkttype = 0, .halen = 6, .addr = .{ 0x01, 0x00, 0x5e, 0x01, 0x01, 0x01, 0, 0 } };
    _ = try sys.call("sendto", linux.sendto(tx, &qinq, qinq.len, 0, @ptrCast(&sll), @sizeOf(linux.sockaddr.ll)));
    const after_ns = sys.realtimeNs();

    var times: [4]u64 = undefined;
    var n: usize = 0;
    var qinq_seen = false;
    var waited: u32 = 0;
    while ((n < times.len or !qinq_seen) and waited < 100) : (waited += 1) {
        const run = ring.peekRun() orelse {
            var pfd = [_]linux.pollfd{.{ .fd = ring.fd, .events = linux.POLL.IN, .revents = 0 }};
            _ = linux.poll(&pfd, 1, 10);
            continue;
        };
        var it = run.frames();
        while (it.next()) |f| {
            const stamp = run.stampOfLast(&it);
            if (f.data.len >= 46 and std.mem.readInt(u16, f.data[12..14], .big) == 0x0800 and std.mem.readInt(u16, f.data[36..38], .big) == test_port) {
                try std.testing.expectEqual(@as(u16, 0), stamp.vlan_tpid);
                try std.testing.expect(f.vlan_tci == null);
                if (n < times.len) times[n] = stamp.time_ns;
                n += 1;
            } else if (f.vlan_tci != null and f.data.len >= 16 and std.mem.readInt(u16, f.data[12..14], .big) == 0x8100) {
                try std.testing.expectEqual(@as(u16, 0x88a8), stamp.vlan_tpid);
                try std.testing.expectEqual(@as(u16, (5 << 13) | (1 << 12) | 100), f.vlan_tci.?);
                try std.testing.expect(stamp.time_ns >= before_ns and stamp.time_ns <= after_ns);
                qinq_seen = true;
            }
        }
        ring.release(run);
    }
    try std.testing.expectEqual(@as(usize, 4), n);
    try std.testing.expect(qinq_seen);
    try std.testing.expect(times[0] >= before_ns and times[3] <= after_ns);
    // At least the sleep apart (a slow machine only makes the gaps longer).
    for (times[0..3], times[1..4]) |a, b| try std.testing.expect(b >= a + 2 * std.time.ns_per_ms);
}
