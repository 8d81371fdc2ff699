//! UDP egress: one socket per output, datagrams queued as pointers into the RX ring and sent
//! in sendmmsg batches. Sends never block: a full socket buffer drops and counts per output,
//! so a slow output can never stall the ring or the other outputs.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("../sys.zig");
const abi = @import("../abi.zig");
const constants = @import("../constants.zig");
const stats_mod = @import("stats.zig");
const net = @import("../net.zig");

const batch_max = constants.egress_batch_max;
const outputs_max = constants.outputs_max;
const no_fd: i32 = -1;
/// SOL_UDP: the option level of UDP options (the protocol number).
const sol_udp: i32 = 17;
const gso_bytes_max: usize = constants.egress_gso_bytes_max;
const gso_control_bytes = std.mem.alignForward(usize, @sizeOf(linux.cmsghdr) + @sizeOf(u16), @alignOf(linux.cmsghdr));
/// One IP_TOS (IPv4) or IPV6_TCLASS (IPv6) control message carrying an int.
const tos_control_bytes = std.mem.alignForward(usize, @sizeOf(linux.cmsghdr) + @sizeOf(c_int), @alignOf(linux.cmsghdr));
const ip_tos_type: i32 = 1; // IP_TOS
const ipv6_tclass_type: i32 = 67; // IPV6_TCLASS
const ecn_mask: u8 = 0x03;

/// The TOS byte an output sends a datagram with: its fixed DSCP or the input's, and the
/// input's ECN bits in both cases (as a router re-marking DSCP does).
pub inline fn outputTos(dscp: u8, input_tos: u8) u8 {
    if (dscp == abi.dscp_copy) return input_tos;
    std.debug.assert(dscp <= 63);
    return (dscp << 2) | (input_tos & ecn_mask);
}

/// Opens and configures the socket of one output. Returns the fd and whether it is connected
/// (a connected socket skips the route lookup per datagram; an output whose destination has
/// no route yet stays unconnected so every send reports its own errno).
fn openSocket(out: *const abi.OutputDesc, dest: *const net.SockAddr) sys.Error!struct { fd: i32, connected: bool } {
    const fd = try net.openSender(&out.addr, out.ifindex, out.ttl, constants.egress_sndbuf_bytes);
    errdefer sys.close(fd);
    // Nothing is ever read from an egress socket: keep its receive queue tiny.
    try sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.RCVBUF, 1);
    if (!std.mem.allEqual(u8, &out.source, 0)) {
        // Send from the output interface's address: when it changes, the supervisor gives a
        // new source, the settings differ, and the socket is rebuilt.
        const src = net.SockAddr.init(&out.source, 0, 0);
        if (src.family() != dest.family()) return error.AFNOSUPPORT;
        _ = try sys.callOwn("bind", linux.bind(fd, @ptrCast(&src), src.len()));
    }
    const connected = sys.callOwn("connect", linux.connect(fd, @ptrCast(dest), dest.len())) catch null;
    return .{ .fd = fd, .connected = connected != null };
}

fn sameSettings(a: *const abi.OutputDesc, b: *const abi.OutputDesc) bool {
    return a.id == b.id and a.port == b.port and a.ttl == b.ttl and a.ifindex == b.ifindex and
        a.dscp == b.dscp and a.flags == b.flags and
        std.mem.eql(u8, &a.addr, &b.addr) and std.mem.eql(u8, &a.source, &b.source);
}

pub const Egress = struct {
    count: u32,
    descs: [outputs_max]abi.OutputDesc,
    fds: [outputs_max]i32,
    /// Why an output has no socket (its errno bucket counts every datagram meant for it).
    setup_error: [outputs_max]stats_mod.Output,
    connected: [outputs_max]bool,
    addrs: [outputs_max]net.SockAddr,
    pending: [outputs_max]u32,
    msgs: [outputs_max][batch_max]linux.mmsghdr,
    iovs: [outputs_max][batch_max]std.posix.iovec_const,
    /// UDP GSO works for this output (cleared when the kernel or device refuses it, or off by
    /// the output's setting).
    gso: [outputs_max]bool,
    /// TOS byte of the queued batch: every datagram of one batch has the same (a GSO buffer
    /// has one IP header to copy). A datagram with another TOS flushes the batch first.
    batch_tos: [outputs_max]u8,
    /// IP_TOS / IPV6_TCLASS control message with batch_tos, attached to each send when the
    /// TOS is not 0 (the socket's default), so no setsockopt per change.
    tos_control: [outputs_max][tos_control_bytes]u8 align(@alignOf(linux.cmsghdr)),
    /// Outputs with queued datagrams, so a flush visits only those.
    dirty: [outputs_max]u16,
    dirty_count: u32,
    dirty_set: std.StaticBitSet(outputs_max),
    /// Scratch for reconcile.
    next_fds: [outputs_max]i32,
    next_connected: [outputs_max]bool,

    pub fn init(self: *Egress) void {
        self.count = 0;
        self.dirty_count = 0;
        self.dirty_set = .empty;
        @memset(&self.fds, no_fd);
        @memset(&self.pending, 0);
    }

    pub fn deinit(self: *Egress) void {
        for (self.fds[0..self.count]) |fd| if (fd != no_fd) sys.close(fd);
        self.count = 0;
    }

    /// Moves to a new set of outputs: sockets of outputs whose id and settings did not change
    /// are kept (no datagram lost on them); others are opened; the rest are closed. A socket
    /// that cannot be opened leaves that output failing, counted per datagram, and never fails
    /// the whole table.
    pub fn reconcile(self: *Egress, next: []const abi.OutputDesc) void {
        std.debug.assert(self.dirty_count == 0);
        std.debug.assert(next.len <= outputs_max);
        var kept = std.StaticBitSet(outputs_max).empty;
        for (next, 0..) |*out, i| {
            self.next_fds[i] = no_fd;
            for (self.descs[0..self.count], 0..) |*old, j| {
                if (!kept.isSet(j) and self.fds[j] != no_fd and sameSettings(old, out)) {
                    kept.set(j);
                    self.next_fds[i] = self.fds[j];
                    self.next_connected[i] = self.connected[j];
                    break;
                }
            }
        }
        for (0..self.count) |j| if (!kept.isSet(j) and self.fds[j] != no_fd) sys.close(self.fds[j]);

        for (next, 0..) |*out, i| {
            self.descs[i] = out.*;
            self.addrs[i] = net.SockAddr.init(&out.addr, out.port, 0);
            self.pending[i] = 0;
            self.fds[i] = self.next_fds[i];
            self.connected[i] = self.next_connected[i];
            self.setup_error[i] = .err_other;
            self.gso[i] = out.flags & abi.output_flag_gso_off == 0;
            self.batch_tos[i] = 0;
            if (self.fds[i] == no_fd) {
                if (openSocket(out, &self.addrs[i])) |s| {
                    self.fds[i] = s.fd;
                    self.connected[i] = s.connected;
                } else |err| {
                    self.setup_error[i] = stats_mod.errnoBucket(@enumFromInt(sys.toErrno(err)));
                }
            }
        }
        self.count = @intCast(next.len);
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
        if (n == batch_max or (n > 0 and tos != self.batch_tos[index])) {
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
            if (tos != self.batch_tos[index]) self.setBatchTos(index, tos);
        }
        const with_tos = self.batch_tos[index] != 0;
        self.iovs[index][n] = .{ .base = payload.ptr, .len = payload.len };
        self.msgs[index][n] = .{
            .hdr = .{
                .name = if (self.connected[index]) null else @ptrCast(&self.addrs[index]),
                .namelen = if (self.connected[index]) 0 else self.addrs[index].len(),
                .iov = @ptrCast(&self.iovs[index][n]),
                .iovlen = 1,
                .control = if (with_tos) &self.tos_control[index] else null,
                .controllen = if (with_tos) tos_control_bytes else 0,
                .flags = 0,
            },
            .len = 0,
        };
        self.pending[index] = n + 1;
    }

    fn setBatchTos(self: *Egress, index: u32, tos: u8) void {
        self.batch_tos[index] = tos;
        const v6 = self.addrs[index].family() == linux.AF.INET6;
        const head: *linux.cmsghdr = @ptrCast(&self.tos_control[index]);
        head.* = .{
            .len = @sizeOf(linux.cmsghdr) + @sizeOf(c_int),
            .level = if (v6) linux.IPPROTO.IPV6 else linux.IPPROTO.IP,
            .type = if (v6) ipv6_tclass_type else ip_tos_type,
        };
        std.mem.writeInt(c_int, self.tos_control[index][@sizeOf(linux.cmsghdr)..][0..@sizeOf(c_int)], tos, .native);
    }

    /// Sends everything queued. Called before the ring block the payloads live in is released.
    pub fn flush(self: *Egress, stats: stats_mod.Stats) void {
        var i: u32 = 0;
        while (i < self.dirty_count) : (i += 1) {
            const index = self.dirty[i];
            if (self.pending[index] > 0) self.flushOne(stats, index);
            self.dirty_set.unset(index);
        }
        self.dirty_count = 0;
    }

    fn flushOne(self: *Egress, stats: stats_mod.Stats, index: u32) void {
        const n = self.pending[index];
        if (n >= 2 and self.gso[index] and self.sameSize(index, n)) {
            if (self.flushGso(stats, index, n)) {
                self.pending[index] = 0;
                return;
            }
        }
        self.flushBatch(stats, index, n);
        self.pending[index] = 0;
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

    /// One sendmsg with UDP_SEGMENT for the whole batch: the stack is crossed once instead of
    /// once per datagram. Returns false when GSO cannot be used here (the batch goes the
    /// ordinary way; an output whose path refuses GSO outright stops trying it).
    fn flushGso(self: *Egress, stats: stats_mod.Stats, index: u32, n: u32) bool {
        const seg: u16 = @intCast(self.iovs[index][0].len);
        var control: [gso_control_bytes + tos_control_bytes]u8 align(@alignOf(linux.cmsghdr)) = @splat(0);
        const head: *linux.cmsghdr = @ptrCast(&control);
        head.* = .{ .len = @sizeOf(linux.cmsghdr) + @sizeOf(u16), .level = sol_udp, .type = linux.UDP.SEGMENT };
        std.mem.writeInt(u16, control[@sizeOf(linux.cmsghdr)..][0..2], seg, .native);
        // The batch's TOS rides along: the kernel copies one IP header to every segment.
        const with_tos = self.batch_tos[index] != 0;
        if (with_tos) @memcpy(control[gso_control_bytes..], &self.tos_control[index]);
        const control_len: usize = if (with_tos) control.len else gso_control_bytes;
        const msg = linux.msghdr_const{
            .name = if (self.connected[index]) null else @ptrCast(&self.addrs[index]),
            .namelen = if (self.connected[index]) 0 else self.addrs[index].len(),
            .iov = &self.iovs[index],
            .iovlen = n,
            .control = &control,
            .controllen = control_len,
            .flags = 0,
        };
        while (true) {
            const rc = linux.sendmsg(self.fds[index], &msg, linux.MSG.DONTWAIT);
            const e = linux.errno(rc);
            switch (e) {
                .SUCCESS => {
                    var bytes: u64 = 0;
                    for (self.iovs[index][0..n]) |iov| bytes += iov.len;
                    stats.output(index, .packets).* += n;
                    stats.output(index, .bytes).* += bytes;
                    stats.worker(.tx_packets).* += n;
                    stats.worker(.tx_bytes).* += bytes;
                    stats.worker(.tx_gso_sends).* += 1;
                    return true;
                },
                .INTR => continue,
                // Segment too large for the path MTU, or too many segments: not for this batch.
                .INVAL, .MSGSIZE => return false,
                // No checksum offload or no GSO on this path: never for this output.
                .IO, .OPNOTSUPP, .NOPROTOOPT => {
                    self.gso[index] = false;
                    return false;
                },
                else => {
                    // The whole buffer failed: every datagram in it is counted as failed.
                    stats.output(index, stats_mod.errnoBucket(e)).* += n;
                    stats.worker(.tx_errors).* += n;
                    return true;
                },
            }
        }
    }

    fn flushBatch(self: *Egress, stats: stats_mod.Stats, index: u32, n: u32) void {
        const msgs = &self.msgs[index];
        var sent: u32 = 0;
        // Bounded: every iteration sends or drops at least one datagram.
        while (sent < n) {
            const rc = linux.sendmmsg(self.fds[index], msgs[sent..n].ptr, n - sent, linux.MSG.DONTWAIT);
            const e = linux.errno(rc);
            switch (e) {
                .SUCCESS => {
                    const done: u32 = @intCast(rc);
                    std.debug.assert(done > 0 and done <= n - sent);
                    var bytes: u64 = 0;
                    for (self.iovs[index][sent .. sent + done]) |iov| bytes += iov.len;
                    stats.output(index, .packets).* += done;
                    stats.output(index, .bytes).* += bytes;
                    stats.worker(.tx_packets).* += done;
                    stats.worker(.tx_bytes).* += bytes;
                    sent += done;
                },
                .INTR => continue,
                .AGAIN, .NOBUFS => {
                    // The socket buffer is full: drop the rest of this batch rather than wait.
                    const dropped = n - sent;
                    stats.output(index, stats_mod.errnoBucket(e)).* += dropped;
                    stats.worker(.tx_errors).* += dropped;
                    sent = n;
                },
                else => {
                    // The first unsent datagram failed; count it and go on with the next.
                    stats.output(index, stats_mod.errnoBucket(e)).* += 1;
                    stats.worker(.tx_errors).* += 1;
                    sent += 1;
                },
            }
        }
    }
};

test "egress to loopback: sent, counted, sockets kept across reconcile" {
    const stats_words = try std.testing.allocator.create([stats_mod.total_words]u64);
    defer std.testing.allocator.destroy(stats_words);
    const stats = stats_mod.Stats.init(stats_words);
    const eg = try std.testing.allocator.create(Egress);
    defer std.testing.allocator.destroy(eg);
    eg.init();
    defer eg.deinit();

    // A receiver on 127.0.0.1 with an ephemeral port.
    const rx: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.NONBLOCK, 0)));
    defer sys.close(rx);
    var sa = linux.sockaddr.in{ .port = 0, .addr = std.mem.nativeToBig(u32, 0x7f000001) };
    _ = try sys.callOwn("bind", linux.bind(rx, @ptrCast(&sa), @sizeOf(linux.sockaddr.in)));
    var len: linux.socklen_t = @sizeOf(linux.sockaddr.in);
    _ = try sys.callOwn("getsockname", linux.getsockname(rx, @ptrCast(&sa), &len));
    const port = std.mem.bigToNative(u16, sa.port);

    const out = abi.OutputDesc{ .id = 7, .addr = .{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1 }, .source = .{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1 }, .port = port, .ttl = 4, .ifindex = 0 };
    eg.reconcile(&.{out});
    try std.testing.expect(eg.fds[0] != no_fd);
    try std.testing.expectEqual(@as(c_int, 4), try socketTtl(eg.fds[0]));
    const fd_before = eg.fds[0];
    const payload = "hello";
    for (0..batch_max + 3) |_| eg.queue(stats, 0, payload, 0);
    eg.flush(stats);
    try std.testing.expectEqual(@as(u64, batch_max + 3), stats.output(0, .packets).*);
    try std.testing.expectEqual(@as(u64, (batch_max + 3) * payload.len), stats.output(0, .bytes).*);

    var buf: [64]u8 = undefined;
    var got: u32 = 0;
    while (true) {
        const rc = linux.recvfrom(rx, &buf, buf.len, 0, null, null);
        if (linux.errno(rc) != .SUCCESS) break;
        try std.testing.expectEqualStrings(payload, buf[0..rc]);
        got += 1;
    }
    try std.testing.expectEqual(@as(u32, batch_max + 3), got);

    eg.reconcile(&.{out});
    try std.testing.expectEqual(fd_before, eg.fds[0]);
    var changed = out;
    changed.ttl = 9;
    eg.reconcile(&.{changed});
    try std.testing.expect(eg.fds[0] != no_fd);
    // A changed setting gets a socket that has it (the unicast TTL of this output).
    try std.testing.expectEqual(@as(c_int, 9), try socketTtl(eg.fds[0]));
}

fn socketTtl(fd: i32) sys.Error!c_int {
    var ttl: c_int = 0;
    var len: linux.socklen_t = @sizeOf(c_int);
    _ = try sys.call("getsockopt", linux.getsockopt(fd, linux.SOL.IP, linux.IP.TTL, std.mem.asBytes(&ttl), &len));
    return ttl;
}

test "an empty datagram behind full-size ones is sent, not lost in a GSO buffer" {
    const stats_words = try std.testing.allocator.create([stats_mod.total_words]u64);
    defer std.testing.allocator.destroy(stats_words);
    const stats = stats_mod.Stats.init(stats_words);
    const eg = try std.testing.allocator.create(Egress);
    defer std.testing.allocator.destroy(eg);
    eg.init();
    defer eg.deinit();

    const rx: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.NONBLOCK, 0)));
    defer sys.close(rx);
    var sa = linux.sockaddr.in{ .port = 0, .addr = std.mem.nativeToBig(u32, 0x7f000001) };
    _ = try sys.callOwn("bind", linux.bind(rx, @ptrCast(&sa), @sizeOf(linux.sockaddr.in)));
    var len: linux.socklen_t = @sizeOf(linux.sockaddr.in);
    _ = try sys.callOwn("getsockname", linux.getsockname(rx, @ptrCast(&sa), &len));
    const lo = abi.Addr{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1 };
    eg.reconcile(&.{.{ .id = 1, .addr = lo, .source = lo, .port = std.mem.bigToNative(u16, sa.port), .ttl = 4, .ifindex = 0 }});

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
    const stats_words = try std.testing.allocator.create([stats_mod.total_words]u64);
    defer std.testing.allocator.destroy(stats_words);
    const stats = stats_mod.Stats.init(stats_words);
    const eg = try std.testing.allocator.create(Egress);
    defer std.testing.allocator.destroy(eg);
    eg.init();
    defer eg.deinit();

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
    });
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

/// The TOS byte of each waiting datagram (IP_RECVTOS), in arrival order.
fn receiveTos(fd: i32, out: []u8) !usize {
    var n: usize = 0;
    var buf: [128]u8 = undefined;
    var cbuf: [64]u8 align(@alignOf(linux.cmsghdr)) = undefined;
    while (n < out.len) : (n += 1) {
        var iov = [_]std.posix.iovec{.{ .base = &buf, .len = buf.len }};
        var msg = linux.msghdr{ .name = null, .namelen = 0, .iov = &iov, .iovlen = 1, .control = &cbuf, .controllen = cbuf.len, .flags = 0 };
        const rc = linux.recvmsg(fd, &msg, 0);
        if (linux.errno(rc) != .SUCCESS) break;
        if (msg.controllen < @sizeOf(linux.cmsghdr) + 1) return error.TestNoTos;
        out[n] = cbuf[@sizeOf(linux.cmsghdr)];
    }
    return n;
}
