//! Ingress joins: the input group is joined on the input interface so that real NICs with a
//! multicast filter and IGMP-snooping switches deliver the stream. Joins are spread over
//! several sockets because the kernel allows igmp_max_memberships (default 20) per socket.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("../sys.zig");
const abi = @import("../abi.zig");
const constants = @import("../constants.zig");
const net = @import("../net.zig");

const per_socket = constants.joins_per_socket_max;
const sockets_max = constants.join_sockets_max;


/// What one rule needs on its input: its group joined (any-source, or source-specific when
/// the rule has a source), or, for a unicast input, its port held.
pub const Want = struct {
    group: abi.Addr,
    /// The rule's source filter; all-zero for any source.
    source: abi.Addr = @splat(0),
    port: u16,
};

const Kind = enum(u8) { any_source, source_specific, port };

const Held = struct {
    kind: Kind,
    group: abi.Addr,
    source: abi.Addr,
    port: u16,
    /// Join socket index (joins) or the bound socket (port holds).
    socket: u16,
    fd: i32,
};

/// struct group_source_req (linux/in.h): interface, then group and source as
/// sockaddr_storage (128 bytes, 8-aligned).
const GroupSourceReq = extern struct {
    interface: u32,
    _pad: u32 = 0,
    group: [128]u8 align(8),
    source: [128]u8 align(8),
};
const mcast_join_source_group: u32 = 46;
const mcast_leave_source_group: u32 = 47;

comptime {
    std.debug.assert(@sizeOf(GroupSourceReq) == 264);
    std.debug.assert(@offsetOf(GroupSourceReq, "group") == 8);
}

pub const Joins = struct {
    ifindex: u32,
    fds: [sockets_max]i32,
    members: [sockets_max]u32,
    held: [constants.rules_max]Held,
    count: u32,

    pub fn init(self: *Joins, ifindex: u32) void {
        self.ifindex = ifindex;
        self.count = 0;
        @memset(&self.fds, -1);
        @memset(&self.members, 0);
    }

    pub fn deinit(self: *Joins) void {
        // Closing a socket leaves its groups.
        for (self.fds) |fd| if (fd >= 0) sys.close(fd);
        for (self.held[0..self.count]) |h| if (h.kind == .port) sys.close(h.fd);
        self.count = 0;
    }

    /// Makes what is held equal to what `wanted` needs: IPv4 multicast groups joined
    /// any-source (when any rule of the group has no source) or per source (IGMPv3 INCLUDE,
    /// MCAST_JOIN_SOURCE_GROUP), and the ports of unicast inputs held by a bound UDP socket
    /// that is never read (the kernel then drops its copies silently instead of answering with
    /// ICMP port unreachable). `errnos[i]` gets 0 when want i is satisfied, else the errno of
    /// its failure (retried by the next call). Returns how many failed.
    pub fn reconcile(self: *Joins, wanted: []const Want, errnos: []u16) u32 {
        std.debug.assert(errnos.len >= wanted.len);
        // Leave what is no longer wanted.
        var i: u32 = 0;
        while (i < self.count) {
            if (self.stillWanted(&self.held[i], wanted)) {
                i += 1;
                continue;
            }
            self.release(&self.held[i]);
            self.count -= 1;
            self.held[i] = self.held[self.count];
        }
        var failures: u32 = 0;
        for (wanted, 0..) |*w, n| {
            errnos[n] = 0;
            const key = keyOf(w, wanted) orelse continue;
            if (self.find(&key) != null) continue;
            if (self.acquire(key)) |held| {
                self.held[self.count] = held;
                self.count += 1;
            } else |err| {
                errnos[n] = @intCast(sys.toErrno(err));
                failures += 1;
            }
        }
        return failures;
    }

    fn stillWanted(self: *Joins, h: *const Held, wanted: []const Want) bool {
        _ = self;
        for (wanted) |*w| {
            const key = keyOf(w, wanted) orelse continue;
            if (sameKey(&key, h)) return true;
        }
        return false;
    }

    fn find(self: *Joins, key: *const Held) ?u32 {
        for (self.held[0..self.count], 0..) |*h, i| if (sameKey(key, h)) return @intCast(i);
        return null;
    }

    fn acquire(self: *Joins, key: Held) sys.Error!Held {
        var held = key;
        switch (key.kind) {
            .port => held.fd = try holdPort(&key.group, key.port, self.ifindex),
            .any_source, .source_specific => {
                const socket_index = try self.socketWithRoom();
                if (key.kind == .any_source) {
                    try self.membership(linux.IP.ADD_MEMBERSHIP, socket_index, &key.group);
                } else {
                    try self.sourceMembership(mcast_join_source_group, socket_index, &key.group, &key.source);
                }
                self.members[socket_index] += 1;
                held.socket = socket_index;
            },
        }
        return held;
    }

    fn release(self: *Joins, h: *const Held) void {
        switch (h.kind) {
            .port => sys.close(h.fd),
            .any_source => self.membership(linux.IP.DROP_MEMBERSHIP, h.socket, &h.group) catch {},
            .source_specific => self.sourceMembership(mcast_leave_source_group, h.socket, &h.group, &h.source) catch {},
        }
        if (h.kind != .port) self.members[h.socket] -= 1;
    }

    fn socketWithRoom(self: *Joins) sys.Error!u16 {
        for (0..sockets_max) |s| {
            if (self.members[s] >= per_socket) continue;
            if (self.fds[s] < 0) {
                self.fds[s] = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0)));
                // Never bound: the socket receives nothing, it only holds memberships.
            }
            return @intCast(s);
        }
        return error.NOBUFS;
    }

    fn membership(self: *Joins, op: u32, socket_index: u16, group: *const abi.Addr) sys.Error!void {
        const mreq = net.IpMreqn{
            .multiaddr = net.v4Bits(group),
            .address = 0,
            .ifindex = @intCast(self.ifindex),
        };
        try sys.setsockopt(self.fds[socket_index], linux.SOL.IP, op, &mreq);
    }

    fn sourceMembership(self: *Joins, op: u32, socket_index: u16, group: *const abi.Addr, source: *const abi.Addr) sys.Error!void {
        var req = GroupSourceReq{ .interface = self.ifindex, .group = @splat(0), .source = @splat(0) };
        const g = net.SockAddr.init(group, 0, 0);
        const src = net.SockAddr.init(source, 0, 0);
        @memcpy(req.group[0..@sizeOf(linux.sockaddr.in)], std.mem.asBytes(&g.in));
        @memcpy(req.source[0..@sizeOf(linux.sockaddr.in)], std.mem.asBytes(&src.in));
        try sys.setsockopt(self.fds[socket_index], linux.SOL.IP, op, &req);
    }
};

/// A UDP socket bound to a unicast input's address and port, with the smallest receive buffer
/// and never read: it owns the port, so the host stays quiet (no ICMP port unreachable), and
/// its full queue makes the kernel drop its copies (Udp RcvbufErrors). EADDRINUSE: another
/// program owns the port (left alone, reported). IPv4 or IPv6; an IPv6 link-local address is
/// bound on the input interface (`ifindex` as its scope).
fn holdPort(addr: *const abi.Addr, port: u16, ifindex: u32) sys.Error!i32 {
    const link_local = !net.isV4(addr) and addr[0] == 0xfe and addr[1] & 0xc0 == 0x80;
    const sa = net.SockAddr.init(addr, port, if (link_local) ifindex else 0);
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(sa.family(), linux.SOCK.DGRAM | linux.SOCK.CLOEXEC | linux.SOCK.NONBLOCK, 0)));
    errdefer sys.close(fd);
    try sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.RCVBUF, 1);
    _ = try sys.callOwn("bind", linux.bind(fd, @ptrCast(&sa), sa.len()));
    return fd;
}

/// What satisfies a want: a port hold for unicast (IPv4 or IPv6), nothing for IPv6 groups (MLD
/// joins are join6.zig's), an any-source join when any rule of the group has no source, else a
/// source-specific join.
fn keyOf(w: *const Want, wanted: []const Want) ?Held {
    var key = Held{ .kind = .any_source, .group = w.group, .source = @splat(0), .port = 0, .socket = 0, .fd = -1 };
    if (!net.isMulticast(&w.group)) {
        key.kind = .port;
        key.port = w.port;
        return key;
    }
    if (!net.isV4(&w.group)) return null;
    if (std.mem.allEqual(u8, &w.source, 0)) return key;
    for (wanted) |*other| {
        if (std.mem.eql(u8, &other.group, &w.group) and std.mem.allEqual(u8, &other.source, 0)) return key;
    }
    key.kind = .source_specific;
    key.source = w.source;
    return key;
}

fn sameKey(a: *const Held, b: *const Held) bool {
    return a.kind == b.kind and a.port == b.port and std.mem.eql(u8, &a.group, &b.group) and std.mem.eql(u8, &a.source, &b.source);
}

test "joins spread over sockets and follow the wanted set (loopback)" {
    const j = try std.testing.allocator.create(Joins);
    defer std.testing.allocator.destroy(j);
    j.init(1);
    defer j.deinit();
    var wants: [45]Want = undefined;
    for (&wants, 0..) |*w, i| w.* = .{ .group = .{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 239, 77, 0, @intCast(i + 1) }, .port = 5000 };
    var errnos: [45]u16 = undefined;
    try std.testing.expectEqual(@as(u32, 0), j.reconcile(&wants, &errnos));
    try std.testing.expectEqual(@as(u32, 45), j.count);
    try std.testing.expectEqual(@as(u32, 20), j.members[0]);
    try std.testing.expectEqual(@as(u32, 5), j.members[2]);
    try std.testing.expectEqual(@as(u32, 0), j.reconcile(wants[0..10], &errnos));
    try std.testing.expectEqual(@as(u32, 10), j.count);
}

test "a source-specific join per source unless the group also has an any-source rule; a unicast input holds its port" {
    const j = try std.testing.allocator.create(Joins);
    defer std.testing.allocator.destroy(j);
    j.init(1);
    defer j.deinit();
    const ssm = abi.Addr{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 232, 1, 1, 1 };
    const asm_group = abi.Addr{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 239, 1, 1, 1 };
    const src1 = abi.Addr{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1 };
    const src2 = abi.Addr{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2 };
    const lo = abi.Addr{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1 };
    // A free port on 127.0.0.1.
    const probe = try holdPort(&lo, 0, 1);
    var sa = linux.sockaddr.in{ .port = 0, .addr = 0 };
    var len: linux.socklen_t = @sizeOf(linux.sockaddr.in);
    _ = try sys.callOwn("getsockname", linux.getsockname(probe, @ptrCast(&sa), &len));
    const port = std.mem.bigToNative(u16, sa.port);
    sys.close(probe);

    const wants = [_]Want{
        .{ .group = ssm, .source = src1, .port = 5000 },
        .{ .group = ssm, .source = src2, .port = 5000 },
        .{ .group = asm_group, .source = src1, .port = 5000 },
        .{ .group = asm_group, .port = 5001 },
        .{ .group = lo, .port = port },
    };
    var errnos: [wants.len]u16 = undefined;
    try std.testing.expectEqual(@as(u32, 0), j.reconcile(&wants, &errnos));
    // Two source-specific joins, one any-source join (shared by both 239.1.1.1 rules), one port.
    try std.testing.expectEqual(@as(u32, 4), j.count);
    var kinds = [_]u32{ 0, 0, 0 };
    for (j.held[0..j.count]) |h| kinds[@intFromEnum(h.kind)] += 1;
    try std.testing.expectEqualSlices(u32, &.{ 1, 2, 1 }, &kinds);

    // The port is now ours: another bind fails, and a second Joins reports EADDRINUSE.
    const j2 = try std.testing.allocator.create(Joins);
    defer std.testing.allocator.destroy(j2);
    j2.init(1);
    defer j2.deinit();
    var errnos2: [1]u16 = undefined;
    try std.testing.expectEqual(@as(u32, 1), j2.reconcile(wants[4..5], &errnos2));
    try std.testing.expectEqual(@as(u16, @intFromEnum(linux.E.ADDRINUSE)), errnos2[0]);

    // Leaving: only the any-source group stays.
    try std.testing.expectEqual(@as(u32, 0), j.reconcile(wants[3..4], &errnos));
    try std.testing.expectEqual(@as(u32, 1), j.count);
}
