//! Addresses and UDP sockets shared by the dataplane's egress, ingress joins and the traffic
//! tools: 16-byte addresses (IPv4 v4-mapped) to socket addresses, multicast request structs,
//! socket buffers, and one function that opens a configured sending socket.
const std = @import("std");
const linux = std.os.linux;
const assert = std.debug.assert;
const abi = @import("abi.zig");
const sys = @import("sys.zig");

/// Sets a socket buffer size, then tries the FORCE variant, which exceeds the sysctl
/// maximum but needs CAP_NET_ADMIN: EPERM leaves the clamped size in place.
pub fn setBufferBytes(fd: i32, opt: u32, opt_force: u32, bytes: u32) sys.Error!void {
    const value: c_int = @intCast(@min(bytes, std.math.maxInt(c_int)));
    try sys.setsockoptInt(fd, linux.SOL.SOCKET, opt, value);
    sys.setsockoptInt(fd, linux.SOL.SOCKET, opt_force, value) catch |err| switch (err) {
        error.PERM => {},
        else => return err,
    };
}

/// struct ip_mreqn (ip(7)): group and interface for IPv4 multicast options.
pub const IpMreqn = extern struct {
    /// Group, network byte order as stored in memory.
    multiaddr: u32,
    /// Local address, 0 = any (the index decides).
    address: u32,
    ifindex: i32,
};

/// struct ipv6_mreq (ipv6(7)).
pub const Ipv6Mreq = extern struct {
    multiaddr: [16]u8,
    ifindex: u32,
};

comptime {
    assert(@sizeOf(IpMreqn) == 12);
    assert(@sizeOf(Ipv6Mreq) == 20);
}

/// A socket address built from a 16-byte abi.Addr: v4-mapped and all-zero addresses become
/// AF_INET (all-zero = INADDR_ANY), everything else AF_INET6.
pub const SockAddr = extern union {
    any: linux.sockaddr,
    in: linux.sockaddr.in,
    in6: linux.sockaddr.in6,

    /// `port` in host byte order; `scope_id` matters for IPv6 link-local addresses only.
    pub fn init(addr: *const abi.Addr, port: u16, scope_id: u32) SockAddr {
        if (isV4(addr) or isUnspecified(addr)) {
            return .{ .in = .{ .port = std.mem.nativeToBig(u16, port), .addr = v4Bits(addr) } };
        }
        return .{ .in6 = .{
            .port = std.mem.nativeToBig(u16, port),
            .flowinfo = 0,
            .addr = addr.*,
            .scope_id = scope_id,
        } };
    }

    pub fn family(self: *const SockAddr) u32 {
        return self.any.family;
    }

    pub fn len(self: *const SockAddr) linux.socklen_t {
        return if (self.family() == linux.AF.INET) @sizeOf(linux.sockaddr.in) else @sizeOf(linux.sockaddr.in6);
    }
};

/// ::ffff:a.b.c.d
pub fn isV4(addr: *const abi.Addr) bool {
    return std.mem.allEqual(u8, addr[0..10], 0) and addr[10] == 0xff and addr[11] == 0xff;
}

/// :: or ::ffff:0.0.0.0
pub fn isUnspecified(addr: *const abi.Addr) bool {
    return std.mem.allEqual(u8, addr[0..10], 0) and
        (std.mem.allEqual(u8, addr[10..12], 0) or std.mem.allEqual(u8, addr[10..12], 0xff)) and
        std.mem.allEqual(u8, addr[12..16], 0);
}

/// 224.0.0.0/4 or ff00::/8
pub fn isMulticast(addr: *const abi.Addr) bool {
    if (isV4(addr)) return addr[12] & 0xf0 == 0xe0;
    return addr[0] == 0xff;
}

/// The IPv4 address as stored in struct in_addr (network byte order in memory).
pub fn v4Bits(addr: *const abi.Addr) u32 {
    return @bitCast(addr[12..16].*);
}

/// ::ffff:a.b.c.d (tests and callers building IPv4 addresses).
pub fn v4Addr(a: u8, b: u8, c: u8, d: u8) abi.Addr {
    return .{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d };
}


/// A non-blocking UDP socket that sends to `addr` with `ttl`, out of interface `ifindex` (0: the
/// kernel routes), never looping multicast back to this host (a local capture or sink would
/// take the copy for forwarded traffic), with a send buffer of `sndbuf_bytes`.
pub fn openSender(addr: *const abi.Addr, ifindex: u32, ttl: u8, sndbuf_bytes: u32) sys.Error!i32 {
    const v4 = isV4(addr) or isUnspecified(addr);
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(
        if (v4) linux.AF.INET else linux.AF.INET6,
        linux.SOCK.DGRAM | linux.SOCK.NONBLOCK | linux.SOCK.CLOEXEC,
        0,
    )));
    errdefer sys.close(fd);
    try setBufferBytes(fd, linux.SO.SNDBUF, linux.SO.SNDBUFFORCE, sndbuf_bytes);
    const hops: c_int = ttl;
    if (v4) {
        if (isMulticast(addr)) {
            if (ifindex != 0) {
                const mreq: IpMreqn = .{ .multiaddr = 0, .address = 0, .ifindex = @intCast(ifindex) };
                try sys.setsockopt(fd, linux.IPPROTO.IP, linux.IP.MULTICAST_IF, &mreq);
            }
            try sys.setsockoptInt(fd, linux.IPPROTO.IP, linux.IP.MULTICAST_TTL, hops);
            try sys.setsockoptInt(fd, linux.IPPROTO.IP, linux.IP.MULTICAST_LOOP, 0);
        } else {
            try sys.setsockoptInt(fd, linux.IPPROTO.IP, linux.IP.TTL, hops);
            // IPv4 takes the index in network byte order (ip(7)).
            if (ifindex != 0) try sys.setsockoptInt(fd, linux.IPPROTO.IP, linux.IP.UNICAST_IF, @bitCast(std.mem.nativeToBig(u32, ifindex)));
        }
    } else {
        const index: c_int = @intCast(ifindex);
        if (isMulticast(addr)) {
            if (ifindex != 0) try sys.setsockoptInt(fd, linux.IPPROTO.IPV6, linux.IPV6.MULTICAST_IF, index);
            try sys.setsockoptInt(fd, linux.IPPROTO.IPV6, linux.IPV6.MULTICAST_HOPS, hops);
            try sys.setsockoptInt(fd, linux.IPPROTO.IPV6, linux.IPV6.MULTICAST_LOOP, 0);
        } else {
            try sys.setsockoptInt(fd, linux.IPPROTO.IPV6, linux.IPV6.UNICAST_HOPS, hops);
            // IPv6 takes the index in host byte order.
            if (ifindex != 0) try sys.setsockoptInt(fd, linux.IPPROTO.IPV6, linux.IPV6.UNICAST_IF, index);
        }
    }
    return fd;
}

test "address helpers" {
    const lo = v4Addr(127, 0, 0, 1);
    try std.testing.expect(isV4(&lo));
    try std.testing.expect(!isMulticast(&lo));
    const group = v4Addr(239, 1, 2, 3);
    try std.testing.expect(isMulticast(&group));
    const sa = SockAddr.init(&group, 5000, 0);
    try std.testing.expectEqual(@as(u32, linux.AF.INET), sa.family());
    try std.testing.expectEqual(std.mem.nativeToBig(u16, 5000), sa.in.port);
    const any = std.mem.zeroes(abi.Addr);
    try std.testing.expect(isUnspecified(&any));
    var v6 = std.mem.zeroes(abi.Addr);
    v6[0] = 0xff;
    v6[15] = 1;
    try std.testing.expect(!isV4(&v6) and !isUnspecified(&v6));
    try std.testing.expectEqual(@as(u32, linux.AF.INET6), SockAddr.init(&v6, 1, 0).family());
    try std.testing.expect(isMulticast(&v6));
}
