//! Raw transmit for the generator (`mcrelay gen --mode raw`): prebuilt Ethernet/IPv4/UDP frames
//! sent on an AF_PACKET socket with PACKET_QDISC_BYPASS, so a benchmark's generator costs one
//! syscall per batch and no UDP/IP send path per datagram. The frames are what the UDP mode's
//! socket would have put on the wire (same payload format, correct IP and UDP checksums), so
//! the relay and the sink cannot tell the modes apart; only the cost differs.
//!
//! IPv4 multicast only: the destination MAC follows from the group (RFC 1112), while a unicast
//! destination would need neighbour resolution, which this mode does not do.
const std = @import("std");
const linux = std.os.linux;
const assert = std.debug.assert;

const abi = @import("../abi.zig");
const sys = @import("../sys.zig");
const net = @import("../net.zig");

pub const eth_bytes: u32 = 14;
pub const ip_bytes: u32 = 20;
pub const udp_bytes: u32 = 8;
/// Bytes in front of the payload in every frame.
pub const header_bytes: u32 = eth_bytes + ip_bytes + udp_bytes;

const eth_p_ip: u16 = 0x0800;
const ip_proto_udp: u8 = 17;
/// Don't Fragment: the frame is sized for the link and never fragmented (and the IP id, fixed
/// at 0, then identifies nothing, RFC 6864).
const ip_flag_df: u16 = 0x4000;
/// PACKET_QDISC_BYPASS (linux/if_packet.h): hand frames to the driver, skipping the qdisc.
const packet_qdisc_bypass: u32 = 20;

const SIOCGIFNAME: u32 = 0x8910;
const SIOCGIFHWADDR: u32 = 0x8927;
const IFNAMSIZ = 16;
const Ifreq = extern struct {
    name: [IFNAMSIZ]u8,
    data: extern union {
        ifindex: i32,
        mtu: i32,
        addr: linux.sockaddr.in,
        hwaddr: linux.sockaddr,
        pad: [24]u8,
    },
};

/// The link facts a frame needs: the interface's MAC, IPv4 address and MTU.
pub const Link = struct {
    mac: [6]u8,
    /// Network byte order, as in the header.
    addr4: [4]u8,
    mtu: u32,
};

pub fn queryLink(ifindex: u32) sys.Error!Link {
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(fd);
    var req = std.mem.zeroes(Ifreq);
    req.data.ifindex = @intCast(ifindex);
    _ = try sys.call("ioctl", linux.ioctl(fd, SIOCGIFNAME, @intFromPtr(&req)));
    var link: Link = undefined;
    _ = try sys.call("ioctl", linux.ioctl(fd, linux.SIOCGIFMTU, @intFromPtr(&req)));
    link.mtu = @intCast(req.data.mtu);
    _ = try sys.call("ioctl", linux.ioctl(fd, SIOCGIFHWADDR, @intFromPtr(&req)));
    @memcpy(&link.mac, req.data.hwaddr.data[0..6]);
    // No IPv4 address on the interface: ADDRNOTAVAIL, which the caller reports.
    _ = try sys.call("ioctl", linux.ioctl(fd, linux.SIOCGIFADDR, @intFromPtr(&req)));
    link.addr4 = @bitCast(req.data.addr.addr);
    return link;
}

/// The Ethernet address an IPv4 group maps to: 01:00:5e and the group's low 23 bits.
pub fn multicastMac(group: [4]u8) [6]u8 {
    return .{ 0x01, 0x00, 0x5e, group[1] & 0x7f, group[2], group[3] };
}

/// Ones' complement sum of big-endian 16-bit words (an odd last byte padded with zero),
/// not folded (a u64 holds the sum of any frame).
pub fn sumWords(bytes: []const u8) u64 {
    var sum: u64 = 0;
    var i: usize = 0;
    while (i + 1 < bytes.len) : (i += 2) sum += std.mem.readInt(u16, bytes[i..][0..2], .big);
    if (i < bytes.len) sum += @as(u64, bytes[i]) << 8;
    return sum;
}

pub fn fold(sum_in: u64) u16 {
    var sum = sum_in;
    while (sum >> 16 != 0) sum = (sum & 0xffff) + (sum >> 16);
    return @truncate(sum);
}

/// One frame's headers, built once; per datagram only the UDP checksum changes. The
/// checksum of the pattern part of every payload is precomputed for each of the 256 pattern
/// offsets, so a datagram's checksum costs its 24-byte payload header, not its whole payload.
pub const Frames = struct {
    header: [header_bytes]u8,
    /// Pseudo header plus UDP header (checksum field 0), unfolded.
    base_sum: u64,
    /// pattern_sums[off]: sum of the payload bytes after the header when the pattern starts at
    /// template offset `off` (gen.patternOffset).
    pattern_sums: [256]u64,
    payload_bytes: u32,

    /// `template` is the generator's pattern template (byte k = k mod 256), at least
    /// 256 + payload_bytes long.
    pub fn init(self: *Frames, link: *const Link, src_port: u16, group: [4]u8, port: u16, ttl: u8, tos: u8, payload_bytes: u32, template: []const u8) void {
        assert(payload_bytes >= abi.payload_header_bytes);
        assert(template.len >= 256 + payload_bytes);
        self.payload_bytes = payload_bytes;
        const h = &self.header;
        const eth = multicastMac(group);
        @memcpy(h[0..6], &eth);
        @memcpy(h[6..12], &link.mac);
        std.mem.writeInt(u16, h[12..14], eth_p_ip, .big);
        const ip = h[eth_bytes..][0..ip_bytes];
        ip[0] = 0x45;
        ip[1] = tos;
        std.mem.writeInt(u16, ip[2..4], @intCast(ip_bytes + udp_bytes + payload_bytes), .big);
        std.mem.writeInt(u16, ip[4..6], 0, .big);
        std.mem.writeInt(u16, ip[6..8], ip_flag_df, .big);
        ip[8] = ttl;
        ip[9] = ip_proto_udp;
        std.mem.writeInt(u16, ip[10..12], 0, .big);
        @memcpy(ip[12..16], &link.addr4);
        @memcpy(ip[16..20], &group);
        std.mem.writeInt(u16, ip[10..12], ~fold(sumWords(ip)), .big);
        const udp = h[eth_bytes + ip_bytes ..][0..udp_bytes];
        const udp_len: u16 = @intCast(udp_bytes + payload_bytes);
        std.mem.writeInt(u16, udp[0..2], src_port, .big);
        std.mem.writeInt(u16, udp[2..4], port, .big);
        std.mem.writeInt(u16, udp[4..6], udp_len, .big);
        std.mem.writeInt(u16, udp[6..8], 0, .big);
        // Pseudo header: source, destination, protocol, UDP length.
        self.base_sum = sumWords(ip[12..20]) + ip_proto_udp + udp_len + sumWords(udp);
        const hb = abi.payload_header_bytes;
        // The payload header is 24 bytes: the pattern starts on a word boundary.
        comptime assert(abi.payload_header_bytes % 2 == 0);
        for (&self.pattern_sums, 0..) |*sum, off| sum.* = sumWords(template[off + hb .. off + payload_bytes]);
    }

    /// Writes the UDP checksum of a frame whose payload (after the headers) is complete and
    /// whose pattern starts at template offset `pattern_off`.
    pub fn checksum(self: *const Frames, frame: []u8, pattern_off: u32) void {
        assert(frame.len == header_bytes + self.payload_bytes);
        const payload_header = frame[header_bytes..][0..abi.payload_header_bytes];
        const sum = self.base_sum + sumWords(payload_header) + self.pattern_sums[pattern_off];
        var c = ~fold(sum);
        // 0 means "no checksum" in UDP over IPv4: a computed 0 is sent as all ones.
        if (c == 0) c = 0xffff;
        std.mem.writeInt(u16, frame[eth_bytes + ip_bytes + 6 ..][0..2], c, .big);
    }
};

/// sockaddr_ll (packet(7)).
pub const SockaddrLl = extern struct {
    family: u16,
    protocol: u16,
    ifindex: i32,
    hatype: u16 = 0,
    pkttype: u8 = 0,
    halen: u8,
    addr: [8]u8,
};

pub fn destination(ifindex: u32, mac: [6]u8) SockaddrLl {
    var addr: [8]u8 = @splat(0);
    @memcpy(addr[0..6], &mac);
    return .{
        .family = linux.AF.PACKET,
        .protocol = std.mem.nativeToBig(u16, eth_p_ip),
        .ifindex = @intCast(ifindex),
        .halen = 6,
        .addr = addr,
    };
}

/// A non-blocking AF_PACKET socket that transmits on `ifindex`, past the qdisc, and receives
/// nothing (protocol 0).
pub fn openSocket(ifindex: u32, sndbuf_bytes: u32) sys.Error!i32 {
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.NONBLOCK | linux.SOCK.CLOEXEC, 0)));
    errdefer sys.close(fd);
    try sys.setsockoptInt(fd, linux.SOL.PACKET, packet_qdisc_bypass, 1);
    try net.setBufferBytes(fd, linux.SO.SNDBUF, linux.SO.SNDBUFFORCE, sndbuf_bytes);
    const sa = SockaddrLl{ .family = linux.AF.PACKET, .protocol = 0, .ifindex = @intCast(ifindex), .halen = 0, .addr = @splat(0) };
    _ = try sys.call("bind", linux.bind(fd, @ptrCast(&sa), @sizeOf(SockaddrLl)));
    return fd;
}

/// A UDP socket bound to the interface's address and an ephemeral port: the port the raw
/// frames carry as their source, reserved so no other socket (another generator) takes it.
pub fn reservePort(addr4: [4]u8) sys.Error!struct { fd: i32, port: u16 } {
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0)));
    errdefer sys.close(fd);
    var sa = linux.sockaddr.in{ .port = 0, .addr = @bitCast(addr4) };
    _ = try sys.call("bind", linux.bind(fd, @ptrCast(&sa), @sizeOf(linux.sockaddr.in)));
    var len: linux.socklen_t = @sizeOf(linux.sockaddr.in);
    _ = try sys.call("getsockname", linux.getsockname(fd, @ptrCast(&sa), &len));
    // Nothing is ever read from it.
    try sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.RCVBUF, 1);
    return .{ .fd = fd, .port = std.mem.bigToNative(u16, sa.port) };
}

comptime {
    assert(@sizeOf(SockaddrLl) == 20);
    assert(header_bytes == 42);
}

const testing = std.testing;

test "multicast MAC keeps the group's low 23 bits" {
    try testing.expectEqualSlices(u8, &.{ 0x01, 0x00, 0x5e, 0x01, 0x01, 0x01 }, &multicastMac(.{ 239, 1, 1, 1 }));
    try testing.expectEqualSlices(u8, &.{ 0x01, 0x00, 0x5e, 0x7f, 0xfe, 0x09 }, &multicastMac(.{ 239, 255, 254, 9 }));
}

test "frames: IP header checksum verifies, UDP checksum equals a full computation for every pattern offset" {
    const payload_bytes: u32 = 101; // odd: the last word is padded
    var template: [256 + payload_bytes]u8 = undefined;
    for (&template, 0..) |*b, k| b.* = @truncate(k);
    const link = Link{ .mac = .{ 2, 0, 0, 0, 0, 1 }, .addr4 = .{ 10, 99, 1, 1 }, .mtu = 1500 };
    var frames: Frames = undefined;
    frames.init(&link, 40000, .{ 239, 1, 1, 1 }, 5000, 8, 0, payload_bytes, &template);
    const ip = frames.header[eth_bytes..][0..ip_bytes];
    try testing.expectEqual(@as(u16, 0xffff), fold(sumWords(ip)));

    var frame: [header_bytes + payload_bytes]u8 = undefined;
    for ([_]u64{ 0, 1, 7, 255, 256, 99_999 }) |seq| {
        @memcpy(frame[0..header_bytes], &frames.header);
        const payload = frame[header_bytes..];
        std.mem.writeInt(u32, payload[0..4], abi.payload_magic, .little);
        std.mem.writeInt(u32, payload[4..8], 3, .little);
        std.mem.writeInt(u64, payload[8..16], seq, .little);
        std.mem.writeInt(u64, payload[16..24], 1_700_000_000_123_456_789 + seq, .little);
        const off: u32 = @as(u8, @truncate(seq *% 31));
        @memcpy(payload[abi.payload_header_bytes..], template[off + abi.payload_header_bytes .. off + payload_bytes]);
        frames.checksum(&frame, off);
        // Receiver's check: pseudo header + UDP header with checksum + payload sums to 0xffff.
        const udp_all = frame[eth_bytes + ip_bytes ..];
        const sum = sumWords(ip[12..20]) + ip_proto_udp + udp_all.len + sumWords(udp_all);
        try testing.expectEqual(@as(u16, 0xffff), fold(sum));
    }
}
