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


pub const Joins = struct {
    ifindex: u32,
    fds: [sockets_max]i32,
    members: [sockets_max]u32,
    groups: [constants.rules_max]abi.Addr,
    group_socket: [constants.rules_max]u16,
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
        self.count = 0;
    }

    /// Makes the joined set equal to the IPv4 multicast groups in `wanted` (duplicates and
    /// unicast addresses are ignored). Returns how many joins failed (counted by the caller).
    pub fn reconcile(self: *Joins, wanted: []const abi.Addr) u32 {
        var failures: u32 = 0;
        // Leave what is no longer wanted.
        var i: u32 = 0;
        while (i < self.count) {
            if (contains(wanted, &self.groups[i])) {
                i += 1;
                continue;
            }
            self.membership(linux.IP.DROP_MEMBERSHIP, self.group_socket[i], &self.groups[i]) catch {};
            self.members[self.group_socket[i]] -= 1;
            self.count -= 1;
            self.groups[i] = self.groups[self.count];
            self.group_socket[i] = self.group_socket[self.count];
        }
        // Join what is new.
        for (wanted) |*group| {
            if (!net.isV4(group) or !net.isMulticast(group)) continue;
            if (contains(self.groups[0..self.count], group)) continue;
            const socket_index = self.socketWithRoom() catch {
                failures += 1;
                continue;
            };
            self.membership(linux.IP.ADD_MEMBERSHIP, socket_index, group) catch {
                failures += 1;
                continue;
            };
            self.members[socket_index] += 1;
            self.groups[self.count] = group.*;
            self.group_socket[self.count] = socket_index;
            self.count += 1;
        }
        return failures;
    }

    fn socketWithRoom(self: *Joins) sys.Error!u16 {
        for (0..sockets_max) |s| {
            if (self.members[s] >= per_socket) continue;
            if (self.fds[s] < 0) {
                self.fds[s] = @intCast(try sys.check(linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0)));
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
};

fn contains(list: []const abi.Addr, addr: *const abi.Addr) bool {
    for (list) |*a| if (std.mem.eql(u8, a, addr)) return true;
    return false;
}

test "joins spread over sockets and follow the wanted set (loopback)" {
    const j = try std.testing.allocator.create(Joins);
    defer std.testing.allocator.destroy(j);
    j.init(1);
    defer j.deinit();
    var groups: [45]abi.Addr = undefined;
    for (&groups, 0..) |*g, i| g.* = .{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 239, 77, 0, @intCast(i + 1) };
    const failed = j.reconcile(&groups);
    try std.testing.expectEqual(@as(u32, 0), failed);
    try std.testing.expectEqual(@as(u32, 45), j.count);
    try std.testing.expectEqual(@as(u32, 20), j.members[0]);
    try std.testing.expectEqual(@as(u32, 5), j.members[2]);
    try std.testing.expectEqual(@as(u32, 0), j.reconcile(groups[0..10]));
    try std.testing.expectEqual(@as(u32, 10), j.count);
}
