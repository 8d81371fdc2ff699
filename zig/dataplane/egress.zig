//! UDP egress: datagrams queued per output as pointers into the RX ring, sent at the flush with
//! one `sendmmsg` for every output of an address family. Each message names its destination and
//! carries what differs between outputs as control messages: interface and source
//! (IP_PKTINFO / IPV6_PKTINFO), TTL (IP_TTL / IPV6_HOPLIMIT) and TOS (IP_TOS / IPV6_TCLASS). So a
//! batch never mixes settings, yet outputs that differ in all of them share one syscall: a 1:50
//! fan-out costs one `sendmmsg` per flush instead of fifty. An output with a large batch of
//! equal-size datagrams travels as one message carrying UDP_SEGMENT (GSO) in the same
//! `sendmmsg`. Sends never block: a full buffer drops and counts per output, so a slow output can
//! never stall the ring (decision 016).
//!
//! The sole output of a rule also has a socket of its own, connected to its destination with its
//! settings set on the socket (round 1's path). When a flush finds it the only output of its
//! family with datagrams (a 1:1 rule alone on the worker, the common case), its batch goes there:
//! the same single syscall, but without the per-message control messages and destination
//! (decision 016, "Own socket for a lone output").
const std = @import("std");
const linux = std.os.linux;
const sys = @import("../sys.zig");
const abi = @import("../abi.zig");
const constants = @import("../constants.zig");
const stats_mod = @import("stats.zig");
const net = @import("../net.zig");

const batch_max = constants.egress_batch_max;
const outputs_max = constants.outputs_max;
const mmsg_max = constants.egress_mmsg_max;
const gso_datagrams_min = constants.egress_gso_datagrams_min;
const gso_bytes_max: usize = constants.egress_gso_bytes_max;
const own_sockets_max = constants.egress_own_sockets_max;
pub const no_fd: i32 = -1;
/// SOL_UDP: the option level of UDP options (the protocol number).
const sol_udp: i32 = 17;
const ip_tos_type: i32 = 1; // IP_TOS
const ip_ttl_type: i32 = 2; // IP_TTL
const ip_pktinfo_type: i32 = 8; // IP_PKTINFO
const ipv6_pktinfo_type: i32 = 50; // IPV6_PKTINFO
const ipv6_hoplimit_type: i32 = 52; // IPV6_HOPLIMIT
const ipv6_tclass_type: i32 = 67; // IPV6_TCLASS
const ecn_mask: u8 = 0x03;

/// struct in_pktinfo (ip(7)): the interface and source of one datagram.
const InPktinfo = extern struct { ifindex: i32, spec_dst: u32, addr: u32 };
/// struct in6_pktinfo (ipv6(7)).
const In6Pktinfo = extern struct { addr: [16]u8, ifindex: u32 };

fn cmsgSpace(data_bytes: usize) usize {
    return std.mem.alignForward(usize, @sizeOf(linux.cmsghdr) + data_bytes, @alignOf(linux.cmsghdr));
}
/// Per output: PKTINFO, TTL and TOS always; UDP_SEGMENT last, for a GSO message only.
const pktinfo_space = cmsgSpace(@sizeOf(In6Pktinfo));
const int_space = cmsgSpace(@sizeOf(c_int));
const segment_space = cmsgSpace(@sizeOf(u16));
const control_bytes_max = pktinfo_space + 2 * int_space + segment_space;

comptime {
    std.debug.assert(@sizeOf(InPktinfo) == 12);
    std.debug.assert(@sizeOf(In6Pktinfo) == 20);
    std.debug.assert(gso_datagrams_min >= 2);
    std.debug.assert(mmsg_max >= batch_max);
}

const Family = enum(u1) { v4, v6 };

/// The TOS byte an output sends a datagram with: its fixed DSCP or the input's, and the
/// input's ECN bits in both cases (as a router re-marking DSCP does).
pub inline fn outputTos(dscp: u8, input_tos: u8) u8 {
    if (dscp == abi.dscp_copy) return input_tos;
    std.debug.assert(dscp <= 63);
    return (dscp << 2) | (input_tos & ecn_mask);
}

/// The unconnected socket every output of a family sends on: nothing set per destination,
/// multicast loopback off (a local capture or sink would take the copy for forwarded traffic),
/// a send buffer shared by all outputs, nothing ever read.
fn openFamilySocket(family: Family) sys.Error!i32 {
    const v6 = family == .v6;
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(
        if (v6) linux.AF.INET6 else linux.AF.INET,
        linux.SOCK.DGRAM | linux.SOCK.NONBLOCK | linux.SOCK.CLOEXEC,
        0,
    )));
    errdefer sys.close(fd);
    try net.setBufferBytes(fd, linux.SO.SNDBUF, linux.SO.SNDBUFFORCE, constants.egress_shared_sndbuf_bytes);
    try sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.RCVBUF, 1);
    if (v6) {
        try sys.setsockoptInt(fd, linux.IPPROTO.IPV6, linux.IPV6.MULTICAST_LOOP, 0);
    } else {
        try sys.setsockoptInt(fd, linux.IPPROTO.IP, linux.IP.MULTICAST_LOOP, 0);
    }
    return fd;
}

/// An output with a source address can only send if the address is this host's: checked
/// once when the output is set up (a throwaway bind), so the errno is the output's, as
/// before any datagram.
fn checkSource(out: *const abi.OutputDesc) sys.Error!void {
    if (std.mem.allEqual(u8, &out.source, 0)) return;
    const src = net.SockAddr.init(&out.source, 0, out.ifindex);
    const dest_v4 = net.isV4(&out.addr) or net.isUnspecified(&out.addr);
    if ((src.family() == linux.AF.INET) != dest_v4) return error.AFNOSUPPORT;
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(src.family(), linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(fd);
    _ = try sys.callOwn("bind", linux.bind(fd, @ptrCast(&src), src.len()));
}

/// The socket of a rule's sole output: connected to its destination, with its interface, TTL
/// and source set on the socket (net.openSender, bind), multicast loopback off. A connected
/// socket sends without a destination or control messages per message and reports ICMP errors
/// of a unicast destination on later sends. Fails when the destination has no route yet: the
/// output then sends on its family's socket only.
fn openOwnSocket(out: *const abi.OutputDesc, dest: *const net.SockAddr) sys.Error!i32 {
    const fd = try net.openSender(&out.addr, out.ifindex, out.ttl, constants.egress_sndbuf_bytes);
    errdefer sys.close(fd);
    // Nothing is ever read from an egress socket: keep its receive queue tiny.
    try sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.RCVBUF, 1);
    if (!std.mem.allEqual(u8, &out.source, 0)) {
        const src = net.SockAddr.init(&out.source, 0, out.ifindex);
        if (src.family() != dest.family()) return error.AFNOSUPPORT;
        _ = try sys.callOwn("bind", linux.bind(fd, @ptrCast(&src), src.len()));
    }
    _ = try sys.callOwn("connect", linux.connect(fd, @ptrCast(dest), dest.len()));
    return fd;
}

fn sameSettings(a: *const abi.OutputDesc, b: *const abi.OutputDesc) bool {
    return a.id == b.id and a.port == b.port and a.ttl == b.ttl and a.ifindex == b.ifindex and
        a.dscp == b.dscp and a.flags == b.flags and
        std.mem.eql(u8, &a.addr, &b.addr) and std.mem.eql(u8, &a.source, &b.source);
}

pub const Egress = struct {
    count: u32,
    descs: [outputs_max]abi.OutputDesc,
    /// The socket output i sends on (its family's), or no_fd when it cannot send: then
    /// setup_error is the errno bucket that counts every datagram meant for it.
    fds: [outputs_max]i32,
    setup_error: [outputs_max]stats_mod.Output,
    family: [outputs_max]Family,
    addrs: [outputs_max]net.SockAddr,
    pending: [outputs_max]u32,
    iovs: [outputs_max][batch_max]std.posix.iovec_const,
    /// UDP GSO works for this output (cleared when the kernel or device refuses it, or off by
    /// the output's setting).
    gso: [outputs_max]bool,
    /// TOS byte of the queued batch: every datagram of one batch has the same (a GSO buffer
    /// has one IP header to copy, and the control messages are the output's). A datagram with
    /// another TOS flushes the batch first.
    batch_tos: [outputs_max]u8,
    /// Control messages of each output's datagrams: PKTINFO, TTL, TOS (the batch's), and
    /// room for UDP_SEGMENT; `control_len` is the length without UDP_SEGMENT.
    control: [outputs_max][control_bytes_max]u8 align(@alignOf(linux.cmsghdr)),
    control_len: [outputs_max]u32,
    /// One socket per address family, opened when an output of the family first appears.
    family_fds: [2]i32,
    /// The connected socket of a rule's sole output (openOwnSocket), or no_fd. Used when the
    /// output is the only one of its family with datagrams in a flush.
    own_fds: [outputs_max]i32,
    /// Control messages of a send on an own socket: TOS (when not 0) and UDP_SEGMENT.
    own_control: [int_space + segment_space]u8 align(@alignOf(linux.cmsghdr)),
    /// Outputs with queued datagrams, so a flush visits only those.
    dirty: [outputs_max]u16,
    dirty_count: u32,
    dirty_set: std.StaticBitSet(outputs_max),
    /// The messages of one sendmmsg being built, and the output each belongs to.
    msgs: [mmsg_max]linux.mmsghdr,
    msg_output: [mmsg_max]u16,
    msg_count: u32,
    /// A GSO message the kernel refused is re-sent as plain messages from here.
    retry_msgs: [batch_max]linux.mmsghdr,
    retry_output: [batch_max]u16,
    /// Scratch for reconcile.
    kept: std.StaticBitSet(outputs_max),
    sole: std.StaticBitSet(outputs_max),
    own_next: [outputs_max]i32,

    pub fn init(self: *Egress) void {
        self.count = 0;
        self.dirty_count = 0;
        self.msg_count = 0;
        self.dirty_set = .empty;
        self.family_fds = .{ no_fd, no_fd };
        @memset(&self.fds, no_fd);
        @memset(&self.own_fds, no_fd);
        @memset(&self.pending, 0);
    }

    pub fn deinit(self: *Egress) void {
        for (self.own_fds[0..self.count]) |fd| if (fd != no_fd) sys.close(fd);
        @memset(&self.own_fds, no_fd);
        for (&self.family_fds) |*fd| {
            if (fd.* != no_fd) sys.close(fd.*);
            fd.* = no_fd;
        }
        self.count = 0;
    }

    /// Moves to a new set of outputs. An output whose id and settings did not change keeps its
    /// GSO verdict and its own socket (no datagram lost on it); every output is (re)described.
    /// `rules` says which outputs are their rule's only one: those get an own socket. An output
    /// that cannot send (its source is not this host's, no socket for its family) fails alone,
    /// counted per datagram, and never fails the whole table; one whose own socket cannot be
    /// opened sends on its family's socket.
    pub fn reconcile(self: *Egress, next: []const abi.OutputDesc, rules: []const abi.RuleDesc) void {
        std.debug.assert(self.dirty_count == 0 and self.msg_count == 0);
        std.debug.assert(next.len <= outputs_max);
        self.sole = .empty;
        for (rules) |rule| {
            std.debug.assert(rule.output_first + rule.output_count <= next.len);
            if (rule.output_count == 1) self.sole.set(rule.output_first);
        }
        // GSO verdicts and own sockets of unchanged outputs carry over (a refusal is not
        // retried each reload).
        var gso_next: [outputs_max]bool = undefined;
        self.kept = .empty;
        for (next, 0..) |*out, i| {
            gso_next[i] = out.flags & abi.output_flag_gso_off == 0;
            self.own_next[i] = no_fd;
            for (self.descs[0..self.count], 0..) |*old, j| {
                if (!self.kept.isSet(j) and self.fds[j] != no_fd and sameSettings(old, out)) {
                    self.kept.set(j);
                    gso_next[i] = self.gso[j];
                    if (self.sole.isSet(i)) {
                        self.own_next[i] = self.own_fds[j];
                        self.own_fds[j] = no_fd;
                    }
                    break;
                }
            }
        }
        for (self.own_fds[0..self.count]) |*fd| if (fd.* != no_fd) {
            sys.close(fd.*);
            fd.* = no_fd;
        };
        // Kept sockets were within the bound before; new ones only up to it.
        var own_count: u32 = 0;
        for (self.own_next[0..next.len]) |fd| own_count += @intFromBool(fd != no_fd);
        for (next, 0..) |*out, i| {
            self.descs[i] = out.*;
            const v6 = !(net.isV4(&out.addr) or net.isUnspecified(&out.addr));
            self.family[i] = if (v6) .v6 else .v4;
            self.addrs[i] = net.SockAddr.init(&out.addr, out.port, out.ifindex);
            self.pending[i] = 0;
            self.gso[i] = gso_next[i];
            self.fds[i] = no_fd;
            self.own_fds[i] = self.own_next[i];
            self.setup_error[i] = .err_other;
            self.setControl(@intCast(i), 0);
            if (self.familySocket(self.family[i])) |fd| {
                if (checkSource(out)) |_| {
                    self.fds[i] = fd;
                } else |err| {
                    self.setup_error[i] = stats_mod.errnoBucket(@enumFromInt(sys.toErrno(err)));
                }
            } else |err| {
                self.setup_error[i] = stats_mod.errnoBucket(@enumFromInt(sys.toErrno(err)));
            }
            if (self.fds[i] == no_fd) {
                if (self.own_fds[i] != no_fd) sys.close(self.own_fds[i]);
                self.own_fds[i] = no_fd;
            } else if (self.sole.isSet(i) and self.own_fds[i] == no_fd and own_count < own_sockets_max) {
                self.own_fds[i] = openOwnSocket(out, &self.addrs[i]) catch no_fd;
                own_count += @intFromBool(self.own_fds[i] != no_fd);
            }
        }
        std.debug.assert(own_count <= own_sockets_max);
        self.count = @intCast(next.len);
    }

    fn familySocket(self: *Egress, family: Family) sys.Error!i32 {
        const fd = &self.family_fds[@intFromEnum(family)];
        if (fd.* == no_fd) fd.* = try openFamilySocket(family);
        return fd.*;
    }

    /// Writes output `index`'s control messages for a batch with TOS `tos`.
    fn setControl(self: *Egress, index: u32, tos: u8) void {
        self.batch_tos[index] = tos;
        const out = &self.descs[index];
        const buf = &self.control[index];
        @memset(buf, 0);
        const v6 = self.family[index] == .v6;
        var at: usize = 0;
        if (v6) {
            const info = In6Pktinfo{ .addr = out.source, .ifindex = out.ifindex };
            at += putCmsg(buf[at..], linux.IPPROTO.IPV6, ipv6_pktinfo_type, std.mem.asBytes(&info));
            at += putCmsg(buf[at..], linux.IPPROTO.IPV6, ipv6_hoplimit_type, std.mem.asBytes(&@as(c_int, out.ttl)));
            at += putCmsg(buf[at..], linux.IPPROTO.IPV6, ipv6_tclass_type, std.mem.asBytes(&@as(c_int, tos)));
        } else {
            // spec_dst is the source (0: the kernel chooses); the address field is ignored on send.
            const source: u32 = if (std.mem.allEqual(u8, &out.source, 0)) 0 else net.v4Bits(&out.source);
            const info = InPktinfo{ .ifindex = @intCast(out.ifindex), .spec_dst = source, .addr = 0 };
            at += putCmsg(buf[at..], linux.IPPROTO.IP, ip_pktinfo_type, std.mem.asBytes(&info));
            at += putCmsg(buf[at..], linux.IPPROTO.IP, ip_ttl_type, std.mem.asBytes(&@as(c_int, out.ttl)));
            at += putCmsg(buf[at..], linux.IPPROTO.IP, ip_tos_type, std.mem.asBytes(&@as(c_int, tos)));
        }
        self.control_len[index] = @intCast(at);
    }

    /// Queues one datagram for an output; `input_tos` is the TOS byte it arrived with. The
    /// payload must stay valid until `flush`.
    pub inline fn queue(self: *Egress, stats: stats_mod.Stats, index: u32, payload: []const u8, input_tos: u8) void {
        std.debug.assert(index < self.count);
        if (self.fds[index] == no_fd) {
            stats.output(index, self.setup_error[index]).* += 1;
            stats.worker(.tx_errors).* += 1;
            return;
        }
        const tos = outputTos(self.descs[index].dscp, input_tos);
        var n = self.pending[index];
        if (n == batch_max) {
            // Full: in a fan-out every output fills at the same datagram, so everything queued
            // goes now, in one sendmmsg, rather than one early send per output.
            self.flush(stats);
            n = 0;
        } else if (n > 0 and tos != self.batch_tos[index]) {
            self.flushOne(stats, index);
            n = 0;
        }
        if (n == 0) {
            // Once per flush round: a batch flushed early (full, or another TOS) is still listed.
            if (!self.dirty_set.isSet(index)) {
                self.dirty_set.set(index);
                self.dirty[self.dirty_count] = @intCast(index);
                self.dirty_count += 1;
            }
            if (tos != self.batch_tos[index]) self.setControl(index, tos);
        }
        self.iovs[index][n] = .{ .base = payload.ptr, .len = payload.len };
        self.pending[index] = n + 1;
    }

    /// Sends everything queued: one sendmmsg per address family (more only past mmsg_max
    /// messages), on the output's own socket when it is the family's only one with datagrams.
    /// Called before the ring block the payloads live in is released.
    pub fn flush(self: *Egress, stats: stats_mod.Stats) void {
        std.debug.assert(self.msg_count == 0);
        for ([_]Family{ .v4, .v6 }) |family| {
            if (self.loneOwn(family)) |index| {
                self.sendOwn(stats, index);
                continue;
            }
            for (self.dirty[0..self.dirty_count]) |index| {
                if (self.pending[index] > 0 and self.family[index] == family) self.append(stats, index);
            }
            self.sendAll(stats, family);
        }
        for (self.dirty[0..self.dirty_count]) |index| {
            self.pending[index] = 0;
            self.dirty_set.unset(index);
        }
        self.dirty_count = 0;
    }

    /// Sends one output's batch now (the next datagram has another TOS).
    fn flushOne(self: *Egress, stats: stats_mod.Stats, index: u32) void {
        std.debug.assert(self.msg_count == 0);
        if (self.own_fds[index] != no_fd) {
            self.sendOwn(stats, index);
        } else {
            self.append(stats, index);
            self.sendAll(stats, self.family[index]);
        }
        self.pending[index] = 0;
    }

    /// The output with datagrams queued, if it is the only one of `family` and has its own
    /// socket. Stops at the second output found: a fan-out pays at most two steps.
    fn loneOwn(self: *const Egress, family: Family) ?u32 {
        var found: ?u32 = null;
        for (self.dirty[0..self.dirty_count]) |index| {
            if (self.pending[index] == 0 or self.family[index] != family) continue;
            if (found != null) return null;
            found = index;
        }
        const index = found orelse return null;
        return if (self.own_fds[index] != no_fd) index else null;
    }

    /// Sends output `index`'s batch on its own connected socket: no destination, no interface,
    /// source or TTL per message (the socket has them); TOS only when not the socket's 0;
    /// one UDP GSO message or one message per datagram, as `append` decides.
    fn sendOwn(self: *Egress, stats: stats_mod.Stats, index: u32) void {
        std.debug.assert(self.msg_count == 0);
        const n = self.pending[index];
        std.debug.assert(n > 0 and n <= batch_max);
        const fd = self.own_fds[index];
        std.debug.assert(fd != no_fd);
        const tos: c_int = self.batch_tos[index];
        var at: usize = 0;
        if (tos != 0) at = switch (self.family[index]) {
            .v4 => putCmsg(&self.own_control, linux.IPPROTO.IP, ip_tos_type, std.mem.asBytes(&tos)),
            .v6 => putCmsg(&self.own_control, linux.IPPROTO.IPV6, ipv6_tclass_type, std.mem.asBytes(&tos)),
        };
        if (n >= gso_datagrams_min and self.gso[index] and self.sameSize(index, n)) {
            const seg: u16 = @intCast(self.iovs[index][0].len);
            const len = at + putCmsg(self.own_control[at..], sol_udp, linux.UDP.SEGMENT, std.mem.asBytes(&seg));
            self.addOwnMessage(index, self.iovs[index][0..n], len);
        } else {
            for (0..n) |k| self.addOwnMessage(index, self.iovs[index][k..][0..1], at);
        }
        const count = self.msg_count;
        self.msg_count = 0;
        self.send(stats, fd, self.msgs[0..count], self.msg_output[0..count]);
    }

    fn addOwnMessage(self: *Egress, index: u32, iovs: []std.posix.iovec_const, control_len: usize) void {
        const k = self.msg_count;
        std.debug.assert(k < mmsg_max);
        self.msgs[k] = .{
            .hdr = .{
                .name = null,
                .namelen = 0,
                .iov = @ptrCast(iovs.ptr),
                .iovlen = iovs.len,
                .control = if (control_len > 0) &self.own_control else null,
                .controllen = control_len,
                .flags = 0,
            },
            .len = 0,
        };
        self.msg_output[k] = @intCast(index);
        self.msg_count = k + 1;
    }

    /// Adds output `index`'s queued datagrams to the sendmmsg being built: one UDP GSO
    /// message when the batch is large and of one size, else one message per datagram.
    fn append(self: *Egress, stats: stats_mod.Stats, index: u32) void {
        const n = self.pending[index];
        std.debug.assert(n > 0 and n <= batch_max);
        const name = &self.addrs[index];
        const namelen = self.addrs[index].len();
        if (n >= gso_datagrams_min and self.gso[index] and self.sameSize(index, n)) {
            if (self.msg_count == mmsg_max) self.sendAll(stats, self.family[index]);
            const at = self.control_len[index];
            const seg: u16 = @intCast(self.iovs[index][0].len);
            _ = putCmsg(self.control[index][at..], sol_udp, linux.UDP.SEGMENT, std.mem.asBytes(&seg));
            self.addMessage(index, name, namelen, self.iovs[index][0..n], at + segment_space);
            return;
        }
        for (0..n) |k| {
            if (self.msg_count == mmsg_max) self.sendAll(stats, self.family[index]);
            self.addMessage(index, name, namelen, self.iovs[index][k..][0..1], self.control_len[index]);
        }
    }

    fn addMessage(self: *Egress, index: u32, name: *net.SockAddr, namelen: linux.socklen_t, iovs: []std.posix.iovec_const, control_len: usize) void {
        const k = self.msg_count;
        std.debug.assert(k < mmsg_max);
        self.msgs[k] = .{
            .hdr = .{
                .name = @ptrCast(name),
                .namelen = namelen,
                .iov = @ptrCast(iovs.ptr),
                .iovlen = iovs.len,
                .control = &self.control[index],
                .controllen = control_len,
                .flags = 0,
            },
            .len = 0,
        };
        self.msg_output[k] = @intCast(index);
        self.msg_count = k + 1;
    }

    /// Every queued payload has the first one's length, except a shorter last one: the shape
    /// UDP GSO sends as one buffer cut into datagrams by the kernel (or the NIC).
    fn sameSize(self: *Egress, index: u32, n: u32) bool {
        const iovs = self.iovs[index][0..n];
        const seg = iovs[0].len;
        if (seg == 0 or seg * n > gso_bytes_max) return false;
        for (iovs[1 .. n - 1]) |iov| if (iov.len != seg) return false;
        // An empty last datagram would vanish: GSO cuts the buffer, and nothing is left to cut.
        return iovs[n - 1].len <= seg and iovs[n - 1].len > 0;
    }

    fn sendAll(self: *Egress, stats: stats_mod.Stats, family: Family) void {
        const n = self.msg_count;
        self.msg_count = 0;
        if (n == 0) return;
        self.send(stats, self.family_fds[@intFromEnum(family)], self.msgs[0..n], self.msg_output[0..n]);
    }

    /// sendmmsg until every message is sent or counted as failed. A message with several
    /// iovecs is a GSO buffer: it stands for that many datagrams.
    fn send(self: *Egress, stats: stats_mod.Stats, fd: i32, msgs: []linux.mmsghdr, outputs: []const u16) void {
        std.debug.assert(fd != no_fd and msgs.len == outputs.len);
        var sent: usize = 0;
        // Bounded: every iteration sends, drops or re-sends at least one message.
        while (sent < msgs.len) {
            const rc = linux.sendmmsg(fd, msgs[sent..].ptr, @intCast(msgs.len - sent), linux.MSG.DONTWAIT);
            stats.worker(.tx_send_calls).* += 1;
            const e = linux.errno(rc);
            switch (e) {
                .SUCCESS => {
                    const done: usize = rc;
                    std.debug.assert(done > 0 and done <= msgs.len - sent);
                    for (msgs[sent .. sent + done], outputs[sent .. sent + done]) |*m, o| countSent(stats, m, o);
                    sent += done;
                },
                .INTR => continue,
                // Our own socket and our own pointers: anything else is a bug here.
                .BADF, .NOTSOCK, .FAULT => @panic("sendmmsg: EBADF, ENOTSOCK or EFAULT on the egress socket (a bug)"),
                .AGAIN => {
                    // The socket buffer is full: everything left waits for nobody.
                    for (msgs[sent..], outputs[sent..]) |*m, o| countFailed(stats, m, o, e);
                    sent = msgs.len;
                },
                .NOBUFS => {
                    // This output's device queue is full: drop the rest of its batch, go on
                    // with the other outputs (their messages follow its contiguous ones).
                    const o = outputs[sent];
                    while (sent < msgs.len and outputs[sent] == o) : (sent += 1) countFailed(stats, &msgs[sent], o, e);
                },
                else => {
                    const m = &msgs[sent];
                    const o = outputs[sent];
                    sent += 1;
                    if (m.hdr.iovlen > 1) switch (e) {
                        // Segment too large for the path MTU, or too many segments: this batch
                        // goes as plain datagrams.
                        .INVAL, .MSGSIZE => {
                            self.resend(stats, fd, m, o);
                            continue;
                        },
                        // No checksum offload or no GSO on this path: never again for this output.
                        .IO, .OPNOTSUPP, .NOPROTOOPT => {
                            self.gso[o] = false;
                            self.resend(stats, fd, m, o);
                            continue;
                        },
                        else => {},
                    };
                    countFailed(stats, m, o, e);
                },
            }
        }
    }

    /// A GSO message the kernel refused, sent again as one message per datagram.
    fn resend(self: *Egress, stats: stats_mod.Stats, fd: i32, gso_msg: *const linux.mmsghdr, o: u16) void {
        const n = gso_msg.hdr.iovlen;
        std.debug.assert(n > 1 and n <= batch_max);
        const iovs: [*]const std.posix.iovec_const = @ptrCast(gso_msg.hdr.iov);
        for (0..n) |k| {
            self.retry_msgs[k] = .{ .hdr = gso_msg.hdr, .len = 0 };
            self.retry_msgs[k].hdr.iov = @ptrCast(@constCast(&iovs[k]));
            self.retry_msgs[k].hdr.iovlen = 1;
            // UDP_SEGMENT is the last control message (own socket or family socket): cut it.
            std.debug.assert(gso_msg.hdr.controllen >= segment_space);
            self.retry_msgs[k].hdr.controllen = gso_msg.hdr.controllen - segment_space;
            self.retry_output[k] = o;
        }
        // Plain messages only: no further resend.
        self.send(stats, fd, self.retry_msgs[0..n], self.retry_output[0..n]);
    }
};

fn putCmsg(buf: []u8, level: i32, kind: i32, data: []const u8) usize {
    const space = cmsgSpace(data.len);
    std.debug.assert(buf.len >= space);
    const head: *align(1) linux.cmsghdr = @ptrCast(buf.ptr);
    head.* = .{ .len = @sizeOf(linux.cmsghdr) + data.len, .level = level, .type = kind };
    @memcpy(buf[@sizeOf(linux.cmsghdr)..][0..data.len], data);
    return space;
}

fn messageBytes(m: *const linux.mmsghdr) u64 {
    const iovs: [*]const std.posix.iovec_const = @ptrCast(m.hdr.iov);
    var bytes: u64 = 0;
    for (iovs[0..m.hdr.iovlen]) |iov| bytes += iov.len;
    return bytes;
}

fn countSent(stats: stats_mod.Stats, m: *const linux.mmsghdr, o: u16) void {
    const datagrams = m.hdr.iovlen;
    const bytes = messageBytes(m);
    stats.output(o, .packets).* += datagrams;
    stats.output(o, .bytes).* += bytes;
    stats.worker(.tx_packets).* += datagrams;
    stats.worker(.tx_bytes).* += bytes;
    if (datagrams > 1) stats.worker(.tx_gso_sends).* += 1;
}

fn countFailed(stats: stats_mod.Stats, m: *const linux.mmsghdr, o: u16, e: linux.E) void {
    // A failed GSO buffer: every datagram in it is counted as failed.
    const datagrams = m.hdr.iovlen;
    stats.output(o, stats_mod.errnoBucket(e)).* += datagrams;
    stats.worker(.tx_errors).* += datagrams;
}

/// A non-blocking UDP receiver on 127.0.0.1 with an ephemeral port, reporting each datagram's
/// TTL and TOS (IP_RECVTTL, IP_RECVTOS).
const TestReceiver = struct { fd: i32, port: u16 };

fn testReceiver() !TestReceiver {
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.NONBLOCK, 0)));
    errdefer sys.close(fd);
    try sys.setsockoptInt(fd, linux.IPPROTO.IP, 13, 1); // IP_RECVTOS
    try sys.setsockoptInt(fd, linux.IPPROTO.IP, 12, 1); // IP_RECVTTL
    var sa = linux.sockaddr.in{ .port = 0, .addr = std.mem.nativeToBig(u32, 0x7f000001) };
    _ = try sys.callOwn("bind", linux.bind(fd, @ptrCast(&sa), @sizeOf(linux.sockaddr.in)));
    var len: linux.socklen_t = @sizeOf(linux.sockaddr.in);
    _ = try sys.callOwn("getsockname", linux.getsockname(fd, @ptrCast(&sa), &len));
    return .{ .fd = fd, .port = std.mem.bigToNative(u16, sa.port) };
}

const Received = struct { len: usize, ttl: u8, tos: u8 };

/// Every waiting datagram (up to out.len): its length, TTL and TOS.
fn receiveAll(fd: i32, out: []Received) !usize {
    var n: usize = 0;
    var buf: [2048]u8 = undefined;
    var cbuf: [128]u8 align(@alignOf(linux.cmsghdr)) = undefined;
    while (n < out.len) : (n += 1) {
        var iov = [_]std.posix.iovec{.{ .base = &buf, .len = buf.len }};
        var msg = linux.msghdr{ .name = null, .namelen = 0, .iov = &iov, .iovlen = 1, .control = &cbuf, .controllen = cbuf.len, .flags = 0 };
        const rc = linux.recvmsg(fd, &msg, 0);
        if (linux.errno(rc) != .SUCCESS) break;
        out[n] = .{ .len = rc, .ttl = 0, .tos = 0 };
        var at: usize = 0;
        while (at + @sizeOf(linux.cmsghdr) <= msg.controllen) {
            const head: *align(1) const linux.cmsghdr = @ptrCast(&cbuf[at]);
            const data = cbuf[at + @sizeOf(linux.cmsghdr) ..];
            if (head.level == linux.IPPROTO.IP and head.type == ip_ttl_type) out[n].ttl = @intCast(std.mem.readInt(c_int, data[0..4], .native));
            if (head.level == linux.IPPROTO.IP and head.type == ip_tos_type) out[n].tos = data[0];
            at += cmsgSpace(head.len - @sizeOf(linux.cmsghdr));
        }
    }
    return n;
}

const lo_addr = abi.Addr{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1 };

/// What every egress test starts from: counters and an Egress, both on the heap (an Egress is
/// megabytes), released in reverse.
const TestFixture = struct {
    words: *[stats_mod.total_words]u64,
    stats: stats_mod.Stats,
    eg: *Egress,

    fn create() !TestFixture {
        const words = try std.testing.allocator.create([stats_mod.total_words]u64);
        errdefer std.testing.allocator.destroy(words);
        const eg = try std.testing.allocator.create(Egress);
        eg.init();
        return .{ .words = words, .stats = stats_mod.Stats.init(words), .eg = eg };
    }

    fn destroy(self: TestFixture) void {
        self.eg.deinit();
        std.testing.allocator.destroy(self.eg);
        std.testing.allocator.destroy(self.words);
    }
};

test "egress to loopback: sent and counted, each output with its own TTL, GSO verdict kept across reconcile" {
    const fx = try TestFixture.create();
    defer fx.destroy();
    const stats = fx.stats;
    const eg = fx.eg;

    const rx = [_]TestReceiver{ try testReceiver(), try testReceiver() };
    defer for (rx) |r| sys.close(r.fd);
    const outs = [_]abi.OutputDesc{
        .{ .id = 7, .addr = lo_addr, .source = lo_addr, .port = rx[0].port, .ttl = 4, .ifindex = 0 },
        .{ .id = 8, .addr = lo_addr, .source = @splat(0), .port = rx[1].port, .ttl = 9, .ifindex = 0 },
    };
    eg.reconcile(&outs, &.{});
    try std.testing.expect(eg.fds[0] != no_fd and eg.fds[1] != no_fd);
    const payload = "hello";
    // Output 0: a full batch (sent early, as one GSO message) and 3 more; output 1: 2.
    for (0..batch_max + 3) |_| eg.queue(stats, 0, payload, 0);
    for (0..2) |_| eg.queue(stats, 1, payload, 0);
    eg.flush(stats);
    try std.testing.expectEqual(@as(u64, batch_max + 3), stats.output(0, .packets).*);
    try std.testing.expectEqual(@as(u64, (batch_max + 3) * payload.len), stats.output(0, .bytes).*);
    try std.testing.expectEqual(@as(u64, 2), stats.output(1, .packets).*);
    // The early flush, then one sendmmsg for both outputs' small batches.
    try std.testing.expectEqual(@as(u64, 2), stats.worker(.tx_send_calls).*);
    try std.testing.expectEqual(@as(u64, 1), stats.worker(.tx_gso_sends).*);

    var got: [batch_max + 8]Received = undefined;
    try std.testing.expectEqual(@as(usize, batch_max + 3), try receiveAll(rx[0].fd, &got));
    for (got[0 .. batch_max + 3]) |g| try std.testing.expectEqual(Received{ .len = payload.len, .ttl = 4, .tos = 0 }, g);
    try std.testing.expectEqual(@as(usize, 2), try receiveAll(rx[1].fd, &got));
    for (got[0..2]) |g| try std.testing.expectEqual(Received{ .len = payload.len, .ttl = 9, .tos = 0 }, g);

    var changed = outs;
    changed[0].ttl = 12;
    eg.gso[1] = false; // as if the kernel had refused GSO for output 1: kept while it is unchanged
    eg.reconcile(&changed, &.{});
    try std.testing.expect(!eg.gso[1]);
    try std.testing.expect(eg.gso[0]);
    eg.queue(stats, 0, payload, 0);
    eg.flush(stats);
    try std.testing.expectEqual(@as(usize, 1), try receiveAll(rx[0].fd, &got));
    try std.testing.expectEqual(@as(u8, 12), got[0].ttl);
}

test "1:50 fan-out: one sendmmsg per flush, small batches as plain datagrams and large ones as GSO, each receiver gets exactly its own" {
    const fx = try TestFixture.create();
    defer fx.destroy();
    const stats = fx.stats;
    const eg = fx.eg;

    const fanout = 50;
    var rx: [fanout]TestReceiver = undefined;
    var opened: usize = 0;
    defer for (rx[0..opened]) |r| sys.close(r.fd);
    var outs: [fanout]abi.OutputDesc = undefined;
    for (&rx, &outs, 0..) |*r, *o, i| {
        r.* = try testReceiver();
        opened += 1;
        // TTL 1..50; even outputs a fixed DSCP (i), odd ones copy the input's.
        o.* = .{ .id = i, .addr = lo_addr, .source = lo_addr, .port = r.port, .ttl = @intCast(i + 1), .ifindex = 0, .dscp = if (i % 2 == 0) @intCast(i) else abi.dscp_copy };
    }
    eg.reconcile(&outs, &.{});
    const payload: [300]u8 = @splat(0x5a);
    const input_tos: u8 = 0xb9; // DSCP 46, ECN 01
    const small = gso_datagrams_min - 1;
    const large = gso_datagrams_min + 6;
    for (0..small) |_| for (0..fanout) |o| eg.queue(stats, @intCast(o), &payload, input_tos);
    eg.flush(stats);
    try std.testing.expectEqual(@as(u64, 1), stats.worker(.tx_send_calls).*);
    try std.testing.expectEqual(@as(u64, 0), stats.worker(.tx_gso_sends).*);
    for (0..large) |_| for (0..fanout) |o| eg.queue(stats, @intCast(o), &payload, input_tos);
    eg.flush(stats);
    try std.testing.expectEqual(@as(u64, 2), stats.worker(.tx_send_calls).*);
    try std.testing.expectEqual(@as(u64, fanout), stats.worker(.tx_gso_sends).*);
    try std.testing.expectEqual(@as(u64, fanout * (small + large)), stats.worker(.tx_packets).*);
    try std.testing.expectEqual(@as(u64, 0), stats.worker(.tx_errors).*);

    var got: [small + large + 4]Received = undefined;
    for (rx, 0..) |r, i| {
        try std.testing.expectEqual(@as(u64, small + large), stats.output(@intCast(i), .packets).*);
        try std.testing.expectEqual(@as(usize, small + large), try receiveAll(r.fd, &got));
        const tos: u8 = if (i % 2 == 0) (@as(u8, @intCast(i)) << 2) | 0x01 else input_tos;
        for (got[0 .. small + large]) |g| try std.testing.expectEqual(Received{ .len = payload.len, .ttl = @intCast(i + 1), .tos = tos }, g);
    }
}

test "an output whose source is not this host's fails alone, counted per datagram" {
    const fx = try TestFixture.create();
    defer fx.destroy();
    const stats = fx.stats;
    const eg = fx.eg;
    const r = try testReceiver();
    defer sys.close(r.fd);
    const foreign = abi.Addr{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 77 };
    eg.reconcile(&.{
        .{ .id = 1, .addr = lo_addr, .source = foreign, .port = r.port, .ttl = 4, .ifindex = 0 },
        .{ .id = 2, .addr = lo_addr, .source = lo_addr, .port = r.port, .ttl = 4, .ifindex = 0 },
    }, &.{ testRule(1, 0, 1), testRule(2, 1, 1) });
    try std.testing.expectEqual(no_fd, eg.fds[0]);
    try std.testing.expectEqual(no_fd, eg.own_fds[0]);
    try std.testing.expectEqual(stats_mod.Output.err_addrnotavail, eg.setup_error[0]);
    for (0..3) |_| {
        eg.queue(stats, 0, "x", 0);
        eg.queue(stats, 1, "y", 0);
    }
    eg.flush(stats);
    try std.testing.expectEqual(@as(u64, 3), stats.output(0, .err_addrnotavail).*);
    try std.testing.expectEqual(@as(u64, 3), stats.output(1, .packets).*);
    var got: [8]Received = undefined;
    try std.testing.expectEqual(@as(usize, 3), try receiveAll(r.fd, &got));
}

test "an empty datagram behind full-size ones is sent, not lost in a GSO buffer" {
    const fx = try TestFixture.create();
    defer fx.destroy();
    const stats = fx.stats;
    const eg = fx.eg;

    const rx: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.NONBLOCK, 0)));
    defer sys.close(rx);
    var sa = linux.sockaddr.in{ .port = 0, .addr = std.mem.nativeToBig(u32, 0x7f000001) };
    _ = try sys.callOwn("bind", linux.bind(rx, @ptrCast(&sa), @sizeOf(linux.sockaddr.in)));
    var len: linux.socklen_t = @sizeOf(linux.sockaddr.in);
    _ = try sys.callOwn("getsockname", linux.getsockname(rx, @ptrCast(&sa), &len));
    const lo = abi.Addr{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1 };
    eg.reconcile(&.{.{ .id = 1, .addr = lo, .source = lo, .port = std.mem.bigToNative(u16, sa.port), .ttl = 4, .ifindex = 0 }}, &.{});

    const full: [100]u8 = @splat(0xab);
    // Two batches: three full and an empty one; one full and an empty one.
    const sizes = [_]usize{ 100, 100, 100, 0, 100, 0 };
    for (sizes[0..4]) |n| eg.queue(stats, 0, full[0..n], 0);
    eg.flush(stats);
    for (sizes[4..]) |n| eg.queue(stats, 0, full[0..n], 0);
    eg.flush(stats);
    try std.testing.expectEqual(@as(u64, sizes.len), stats.output(0, .packets).*);

    var buf: [256]u8 = undefined;
    var got: [sizes.len]usize = undefined;
    var count: usize = 0;
    while (count < got.len) {
        const rc = linux.recvfrom(rx, &buf, buf.len, 0, null, null);
        if (linux.errno(rc) != .SUCCESS) break;
        got[count] = rc;
        count += 1;
    }
    try std.testing.expectEqualSlices(usize, &sizes, got[0..count]);
}

test "TOS per output: DSCP copied or fixed, ECN kept, a batch never mixes two TOS values" {
    const fx = try TestFixture.create();
    defer fx.destroy();
    const stats = fx.stats;
    const eg = fx.eg;

    try std.testing.expectEqual(@as(u8, 0xb9), outputTos(abi.dscp_copy, 0xb9));
    try std.testing.expectEqual(@as(u8, (10 << 2) | 1), outputTos(10, 0xb9));
    try std.testing.expectEqual(@as(u8, 0), outputTos(0, 0xb8));

    const lo = abi.Addr{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1 };
    var rx: [2]i32 = undefined;
    var ports: [2]u16 = undefined;
    for (&rx, &ports) |*fd, *port| {
        fd.* = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.NONBLOCK, 0)));
        try sys.setsockoptInt(fd.*, linux.IPPROTO.IP, 13, 1); // IP_RECVTOS
        var sa = linux.sockaddr.in{ .port = 0, .addr = std.mem.nativeToBig(u32, 0x7f000001) };
        _ = try sys.callOwn("bind", linux.bind(fd.*, @ptrCast(&sa), @sizeOf(linux.sockaddr.in)));
        var len: linux.socklen_t = @sizeOf(linux.sockaddr.in);
        _ = try sys.callOwn("getsockname", linux.getsockname(fd.*, @ptrCast(&sa), &len));
        port.* = std.mem.bigToNative(u16, sa.port);
    }
    defer for (rx) |fd| sys.close(fd);
    eg.reconcile(&.{
        .{ .id = 1, .addr = lo, .source = lo, .port = ports[0], .ttl = 4, .ifindex = 0 },
        .{ .id = 2, .addr = lo, .source = lo, .port = ports[1], .ttl = 4, .ifindex = 0, .dscp = 10 },
    }, &.{});
    const payload: [64]u8 = @splat(1);
    // The input TOS changes inside what would otherwise be one GSO batch (equal sizes).
    const input_tos = [_]u8{ 0x00, 0x00, 0xb8, 0xb8, 0x02, 0x00 };
    for (input_tos) |tos| {
        eg.queue(stats, 0, &payload, tos);
        eg.queue(stats, 1, &payload, tos);
    }
    eg.flush(stats);
    try std.testing.expectEqual(@as(u64, input_tos.len), stats.output(0, .packets).*);
    try std.testing.expectEqual(@as(u64, input_tos.len), stats.output(1, .packets).*);

    var got: [input_tos.len]u8 = undefined;
    try std.testing.expectEqual(input_tos.len, try receiveTos(rx[0], &got));
    try std.testing.expectEqualSlices(u8, &input_tos, &got);
    // Fixed DSCP 10 (0x28), the input's ECN bits kept.
    try std.testing.expectEqual(input_tos.len, try receiveTos(rx[1], &got));
    try std.testing.expectEqualSlices(u8, &.{ 0x28, 0x28, 0x28, 0x28, 0x2a, 0x28 }, &got);
}

/// The TOS byte of each waiting datagram (IP_RECVTOS), in arrival order (receiveAll's).
fn receiveTos(fd: i32, out: []u8) !usize {
    var got: [16]Received = undefined;
    std.debug.assert(out.len <= got.len);
    const n = try receiveAll(fd, got[0..out.len]);
    for (got[0..n], out[0..n]) |g, *tos| tos.* = g.tos;
    return n;
}

fn testRule(id: u64, first: u16, count: u16) abi.RuleDesc {
    return .{ .id = id, .group = @splat(0), .source = @splat(0), .port = 5000, .flags = 0, .output_first = first, .output_count = count };
}

/// The local port a socket is bound to.
fn localPort(fd: i32) !u16 {
    var sa: linux.sockaddr.in = undefined;
    var len: linux.socklen_t = @sizeOf(linux.sockaddr.in);
    _ = try sys.callOwn("getsockname", linux.getsockname(fd, @ptrCast(&sa), &len));
    return std.mem.bigToNative(u16, sa.port);
}

/// The source port of each waiting datagram (up to out.len).
fn receiveSourcePorts(fd: i32, out: []u16) usize {
    var n: usize = 0;
    var buf: [2048]u8 = undefined;
    while (n < out.len) : (n += 1) {
        var sa: linux.sockaddr.in = undefined;
        var len: linux.socklen_t = @sizeOf(linux.sockaddr.in);
        const rc = linux.recvfrom(fd, &buf, buf.len, 0, @ptrCast(&sa), &len);
        if (linux.errno(rc) != .SUCCESS) break;
        out[n] = std.mem.bigToNative(u16, sa.port);
    }
    return n;
}

test "a rule's sole output sends alone on its own connected socket, beside others on the family socket, and no setting leaks" {
    const fx = try TestFixture.create();
    defer fx.destroy();
    const stats = fx.stats;
    const eg = fx.eg;

    const rx = [_]TestReceiver{ try testReceiver(), try testReceiver(), try testReceiver() };
    defer for (rx) |r| sys.close(r.fd);
    // Rule 1: output 0 alone (TTL 4, input DSCP copied). Rule 2: outputs 1 and 2 (TTL 9, DSCP 10).
    const outs = [_]abi.OutputDesc{
        .{ .id = 7, .addr = lo_addr, .source = lo_addr, .port = rx[0].port, .ttl = 4, .ifindex = 0 },
        .{ .id = 8, .addr = lo_addr, .source = @splat(0), .port = rx[1].port, .ttl = 9, .ifindex = 0, .dscp = 10 },
        .{ .id = 9, .addr = lo_addr, .source = @splat(0), .port = rx[2].port, .ttl = 9, .ifindex = 0, .dscp = 10 },
    };
    const rules = [_]abi.RuleDesc{ testRule(1, 0, 1), testRule(2, 1, 2) };
    eg.reconcile(&outs, &rules);
    try std.testing.expect(eg.own_fds[0] != no_fd);
    try std.testing.expectEqual(no_fd, eg.own_fds[1]);
    try std.testing.expectEqual(no_fd, eg.own_fds[2]);
    const own_port = try localPort(eg.own_fds[0]);
    const payload: [200]u8 = @splat(3);

    // Alone: 6 equal datagrams (one GSO message) with TOS 0xb8, then 3 with TOS 0 (the batch
    // is sent early on the change). Two calls on the own socket; TOS 0 must not inherit 0xb8.
    for (0..6) |_| eg.queue(stats, 0, &payload, 0xb8);
    for (0..3) |_| eg.queue(stats, 0, &payload, 0);
    eg.flush(stats);
    try std.testing.expectEqual(@as(u64, 2), stats.worker(.tx_send_calls).*);
    try std.testing.expectEqual(@as(u64, 1), stats.worker(.tx_gso_sends).*);
    try std.testing.expectEqual(@as(u64, 9), stats.output(0, .packets).*);
    var got: [16]Received = undefined;
    try std.testing.expectEqual(@as(usize, 9), try receiveAll(rx[0].fd, &got));
    for (got[0..9], 0..) |g, k| {
        const tos: u8 = if (k < 6) 0xb8 else 0;
        try std.testing.expectEqual(Received{ .len = payload.len, .ttl = 4, .tos = tos }, g);
    }

    // Beside outputs of the other rule: one sendmmsg on the family socket for all three, each
    // with its own TTL and TOS.
    for (0..2) |_| for (0..3) |o| eg.queue(stats, @intCast(o), &payload, 0xb9);
    eg.flush(stats);
    try std.testing.expectEqual(@as(u64, 3), stats.worker(.tx_send_calls).*);
    // The family socket got its port at its first send.
    const family_port = try localPort(eg.family_fds[0]);
    try std.testing.expect(own_port != family_port);
    var ports: [4]u16 = undefined;
    try std.testing.expectEqual(@as(usize, 2), receiveSourcePorts(rx[0].fd, &ports));
    try std.testing.expectEqualSlices(u16, &.{ family_port, family_port }, ports[0..2]);
    for (rx[1..]) |r| {
        try std.testing.expectEqual(@as(usize, 2), try receiveAll(r.fd, &got));
        for (got[0..2]) |g| try std.testing.expectEqual(Received{ .len = payload.len, .ttl = 9, .tos = 0x29 }, g);
    }

    // Alone again, a datagram on the own socket (its source port), then a reload: unchanged,
    // the output keeps its socket; with another TTL it gets a new one that has it.
    eg.queue(stats, 0, &payload, 0);
    eg.flush(stats);
    try std.testing.expectEqual(@as(usize, 1), receiveSourcePorts(rx[0].fd, &ports));
    try std.testing.expectEqual(own_port, ports[0]);
    const own_before = eg.own_fds[0];
    eg.reconcile(&outs, &rules);
    try std.testing.expectEqual(own_before, eg.own_fds[0]);
    var changed = outs;
    changed[0].ttl = 12;
    eg.reconcile(&changed, &rules);
    try std.testing.expect(eg.own_fds[0] != no_fd);
    eg.queue(stats, 0, &payload, 0);
    eg.flush(stats);
    try std.testing.expectEqual(@as(usize, 1), try receiveAll(rx[0].fd, &got));
    try std.testing.expectEqual(@as(u8, 12), got[0].ttl);
    // As part of a 1:2 rule the output has no own socket any more.
    eg.reconcile(&changed, &.{testRule(1, 0, 3)});
    try std.testing.expectEqual(no_fd, eg.own_fds[0]);
    try std.testing.expectEqual(@as(u64, 0), stats.worker(.tx_errors).*);
}

test "at most egress_own_sockets_max outputs get an own socket; the others send on the family socket" {
    const fx = try TestFixture.create();
    defer fx.destroy();
    const stats = fx.stats;
    const eg = fx.eg;

    const r = try testReceiver();
    defer sys.close(r.fd);
    const n = own_sockets_max + 6;
    var outs: [n]abi.OutputDesc = undefined;
    var rules: [n]abi.RuleDesc = undefined;
    for (&outs, &rules, 0..) |*o, *rule, i| {
        o.* = .{ .id = i, .addr = lo_addr, .source = @splat(0), .port = r.port, .ttl = 4, .ifindex = 0 };
        rule.* = testRule(i, @intCast(i), 1);
    }
    eg.reconcile(&outs, &rules);
    var own: u32 = 0;
    for (eg.own_fds[0..n]) |fd| own += @intFromBool(fd != no_fd);
    try std.testing.expectEqual(own_sockets_max, own);
    try std.testing.expectEqual(no_fd, eg.own_fds[n - 1]);
    // The last output alone: sent (on the family socket), received.
    eg.queue(stats, n - 1, "z", 0);
    eg.flush(stats);
    try std.testing.expectEqual(@as(u64, 1), stats.output(n - 1, .packets).*);
    var got: [2]Received = undefined;
    try std.testing.expectEqual(@as(usize, 1), try receiveAll(r.fd, &got));
    // A reload keeps the same count (kept sockets are not opened twice).
    eg.reconcile(&outs, &rules);
    own = 0;
    for (eg.own_fds[0..n]) |fd| own += @intFromBool(fd != no_fd);
    try std.testing.expectEqual(own_sockets_max, own);
}
