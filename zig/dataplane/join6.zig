//! Ingress MLD joins: each IPv6 multicast input group is joined on the input interface, so the
//! kernel sends MLDv2 reports (a NIC's multicast filter and MLD-snooping switches then deliver
//! the stream). A rule with a source joins source-specifically (MLDv2 INCLUDE {source},
//! MCAST_JOIN_SOURCE_GROUP), one without joins any-source (EXCLUDE {}, MCAST_JOIN_GROUP).
//!
//! A socket holds one filter mode per group, so an any-source and a source-specific membership
//! of the same group live on different sockets. Memberships are spread over sockets with the
//! IPv4 joins' bound per socket (the per-socket option memory, net.core.optmem_max, also limits
//! IPv6 memberships). The sockets are unbound UDP sockets that only hold memberships.
const std = @import("std");
const linux = std.os.linux;
const assert = std.debug.assert;
const sys = @import("../sys.zig");
const abi = @import("../abi.zig");
const constants = @import("../constants.zig");

const per_socket = constants.joins_per_socket_max;
const sockets_max = constants.join_sockets_max;

/// Protocol-independent multicast options (linux/in.h), at level SOL_IPV6.
const mcast_join_group: u32 = 42;
const mcast_leave_group: u32 = 45;
const mcast_join_source_group: u32 = 46;
const mcast_leave_source_group: u32 = 47;

/// struct sockaddr_storage holding a sockaddr_in6.
const Storage = extern struct {
    family: u16 = linux.AF.INET6,
    port: u16 = 0,
    flowinfo: u32 = 0,
    addr: [16]u8,
    scope_id: u32 = 0,
    _rest: [128 - 28]u8 = @splat(0),
};

/// struct group_req and struct group_source_req (linux/in.h): the interface, then the
/// 8-byte-aligned socket addresses.
const GroupReq = extern struct { ifindex: u32, _pad: u32 = 0, group: Storage };
const GroupSourceReq = extern struct { ifindex: u32, _pad: u32 = 0, group: Storage, source: Storage };

comptime {
    assert(@sizeOf(Storage) == 128);
    assert(@sizeOf(GroupReq) == 136);
    assert(@sizeOf(GroupSourceReq) == 264);
}

/// One wanted membership: a group, with or without a source.
pub const Membership = struct {
    group: abi.Addr,
    source: ?abi.Addr,

    fn eql(a: *const Membership, b: *const Membership) bool {
        if (!std.mem.eql(u8, &a.group, &b.group)) return false;
        if (a.source == null or b.source == null) return a.source == null and b.source == null;
        return std.mem.eql(u8, &a.source.?, &b.source.?);
    }
};

/// True for an IPv6 (not v4-mapped) multicast address: what this module joins.
pub fn isIpv6Multicast(addr: *const abi.Addr) bool {
    return addr[0] == 0xff;
}

pub const Joins6 = struct {
    ifindex: u32,
    fds: [sockets_max]i32,
    members: [sockets_max]u32,
    joined: [constants.rules_max]Membership,
    joined_socket: [constants.rules_max]u16,
    count: u32,
    /// Scratch: the memberships the current table wants.
    wanted: [constants.rules_max]Membership,

    pub fn init(self: *Joins6, ifindex: u32) void {
        self.ifindex = ifindex;
        self.count = 0;
        @memset(&self.fds, -1);
        @memset(&self.members, 0);
    }

    pub fn deinit(self: *Joins6) void {
        // Closing a socket leaves its groups.
        for (&self.fds) |*fd| if (fd.* >= 0) {
            sys.close(fd.*);
            fd.* = -1;
        };
        self.count = 0;
    }

    /// Makes the joined set equal to what `rules` want: each IPv6 multicast input group, with
    /// the rule's source when it filters on one. `errnos[i]` of each IPv6 multicast rule i gets
    /// 0 when its membership is held, else the errno of the failure (the others are left as
    /// they are: join.zig's). Returns how many joins failed; the caller retries them.
    pub fn reconcile(self: *Joins6, rules: []const abi.RuleDesc, errnos: []u16) u32 {
        assert(errnos.len >= rules.len);
        var wanted_count: u32 = 0;
        for (rules) |*rule| {
            if (!isIpv6Multicast(&rule.group)) continue;
            const m = Membership{ .group = rule.group, .source = sourceOf(rule) };
            if (find(self.wanted[0..wanted_count], &m) != null) continue;
            self.wanted[wanted_count] = m;
            wanted_count += 1;
        }
        assert(wanted_count <= constants.rules_max);
        const wanted = self.wanted[0..wanted_count];

        // Leave what is no longer wanted.
        var i: u32 = 0;
        while (i < self.count) {
            if (find(wanted, &self.joined[i]) != null) {
                i += 1;
                continue;
            }
            self.membership(false, self.joined_socket[i], &self.joined[i]) catch {};
            self.members[self.joined_socket[i]] -= 1;
            self.count -= 1;
            self.joined[i] = self.joined[self.count];
            self.joined_socket[i] = self.joined_socket[self.count];
        }
        // Join what is new.
        var failures: u32 = 0;
        for (wanted) |*m| {
            if (find(self.joined[0..self.count], m) != null) continue;
            self.add(m) catch |err| {
                failures += 1;
                // Every rule of this membership shows the errno.
                for (rules, 0..) |*rule, r| {
                    const of_rule = Membership{ .group = rule.group, .source = sourceOf(rule) };
                    if (isIpv6Multicast(&rule.group) and of_rule.eql(m)) errnos[r] = @intCast(sys.toErrno(err));
                }
            };
        }
        // Rules whose membership is held are satisfied.
        for (rules, 0..) |*rule, r| {
            if (!isIpv6Multicast(&rule.group)) continue;
            const m = Membership{ .group = rule.group, .source = sourceOf(rule) };
            if (find(self.joined[0..self.count], &m) != null) errnos[r] = 0;
        }
        return failures;
    }

    fn add(self: *Joins6, m: *const Membership) sys.Error!void {
        const socket_index = try self.socketFor(m);
        try self.membership(true, socket_index, m);
        self.members[socket_index] += 1;
        self.joined[self.count] = m.*;
        self.joined_socket[self.count] = socket_index;
        self.count += 1;
    }

    /// A socket with room that does not hold `m.group` in the other filter mode.
    fn socketFor(self: *Joins6, m: *const Membership) sys.Error!u16 {
        for (0..sockets_max) |s| {
            if (self.members[s] >= per_socket) continue;
            if (self.modeConflict(@intCast(s), m)) continue;
            if (self.fds[s] < 0) {
                self.fds[s] = @intCast(try sys.call("socket", linux.socket(linux.AF.INET6, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0)));
            }
            return @intCast(s);
        }
        return error.NOBUFS;
    }

    fn modeConflict(self: *const Joins6, socket_index: u16, m: *const Membership) bool {
        for (self.joined[0..self.count], self.joined_socket[0..self.count]) |*j, s| {
            if (s != socket_index or !std.mem.eql(u8, &j.group, &m.group)) continue;
            if ((j.source == null) != (m.source == null)) return true;
        }
        return false;
    }

    fn membership(self: *Joins6, join: bool, socket_index: u16, m: *const Membership) sys.Error!void {
        const fd = self.fds[socket_index];
        assert(fd >= 0);
        if (m.source) |source| {
            const req = GroupSourceReq{ .ifindex = self.ifindex, .group = .{ .addr = m.group }, .source = .{ .addr = source } };
            try sys.setsockopt(fd, linux.SOL.IPV6, if (join) mcast_join_source_group else mcast_leave_source_group, &req);
        } else {
            const req = GroupReq{ .ifindex = self.ifindex, .group = .{ .addr = m.group } };
            try sys.setsockopt(fd, linux.SOL.IPV6, if (join) mcast_join_group else mcast_leave_group, &req);
        }
    }
};

fn sourceOf(rule: *const abi.RuleDesc) ?abi.Addr {
    return if (rule.flags & abi.rule_flag_source_filter != 0) rule.source else null;
}

fn find(list: []const Membership, m: *const Membership) ?usize {
    for (list, 0..) |*x, i| if (x.eql(m)) return i;
    return null;
}

fn testRule(id: u64, group: abi.Addr, source: ?abi.Addr) abi.RuleDesc {
    return .{
        .id = id,
        .group = group,
        .source = source orelse @splat(0),
        .port = 5000,
        .flags = if (source != null) abi.rule_flag_source_filter else 0,
        .output_first = 0,
        .output_count = 1,
    };
}

fn group6(last: u8) abi.Addr {
    return .{ 0xff, 0x3e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x77, last };
}

test "MLD joins: any-source and source-specific memberships of one group on separate sockets (loopback)" {
    const j = try std.testing.allocator.create(Joins6);
    defer std.testing.allocator.destroy(j);
    j.init(1);
    defer j.deinit();
    const probe = linux.socket(linux.AF.INET6, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0);
    if (linux.errno(probe) != .SUCCESS) return error.SkipZigTest; // no IPv6 in this kernel
    sys.close(@intCast(probe));

    const source: abi.Addr = .{ 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7 };
    var rules: [45]abi.RuleDesc = undefined;
    for (&rules, 0..) |*r, i| r.* = testRule(i + 1, group6(@intCast(i)), null);
    rules[1] = testRule(2, group6(0), source); // group 0 twice: any-source and from `source`
    const v4_rule = testRule(99, .{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 239, 1, 1, 1 }, null);
    var all: [46]abi.RuleDesc = undefined;
    @memcpy(all[0..45], &rules);
    all[45] = v4_rule; // IPv4 groups are join.zig's

    var errnos: [46]u16 = @splat(0xffff);
    const failed = j.reconcile(&all, &errnos);
    if (failed > 0 and errnos[0] == @intFromEnum(linux.E.NODEV)) return error.SkipZigTest; // IPv6 off on lo
    try std.testing.expectEqual(@as(u32, 0), failed);
    for (errnos[0..45]) |e| try std.testing.expectEqual(@as(u16, 0), e);
    try std.testing.expectEqual(@as(u16, 0xffff), errnos[45]); // the IPv4 rule's word is join.zig's
    try std.testing.expectEqual(@as(u32, 45), j.count);
    var sock_any: ?u16 = null;
    var sock_ssm: ?u16 = null;
    for (j.joined[0..j.count], j.joined_socket[0..j.count]) |m, s| {
        if (!std.mem.eql(u8, &m.group, &group6(0))) continue;
        if (m.source == null) sock_any = s else sock_ssm = s;
    }
    try std.testing.expect(sock_any != null and sock_ssm != null and sock_any.? != sock_ssm.?);
    // Shrinking leaves what is gone; the same table again changes nothing.
    try std.testing.expectEqual(@as(u32, 0), j.reconcile(rules[0..10], &errnos));
    try std.testing.expectEqual(@as(u32, 10), j.count);
    try std.testing.expectEqual(@as(u32, 0), j.reconcile(rules[0..10], &errnos));
    try std.testing.expectEqual(@as(u32, 10), j.count);
}
