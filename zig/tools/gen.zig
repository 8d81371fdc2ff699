//! Traffic generator: one connected UDP socket sending numbered, timestamped, patterned
//! datagrams (abi.PayloadHeader + pattern) in sendmmsg batches, paced against the monotonic
//! clock. In raw mode (abi.gen_mode_raw, gen_raw.zig) the same datagrams go out as prebuilt
//! Ethernet frames on an AF_PACKET socket that bypasses the qdisc, one sendmmsg per batch. It is the measuring instrument for the relay, so it never loses its own packets:
//! a full socket buffer makes it wait and retry, and only a real send error consumes a
//! sequence number without a datagram (the sink then counts it as loss).
//! Socket addresses come from net.zig (16-byte addresses, IPv4 v4-mapped).
const std = @import("std");
const linux = std.os.linux;
const assert = std.debug.assert;

const abi = @import("../abi.zig");
const constants = @import("../constants.zig");
const sys = @import("../sys.zig");
const net = @import("../net.zig");
const raw = @import("gen_raw.zig");

const ns_per_s = std.time.ns_per_s;
const ns_per_ms = std.time.ns_per_ms;
const ns_per_us = std.time.ns_per_us;

/// Indexes into Gen.counters(); TypeScript reads them through a BigUint64Array view.
pub const Counter = enum(u32) {
    /// Datagrams the kernel accepted.
    sent,
    /// Payload bytes of those datagrams.
    bytes,
    /// Datagrams not sent because of an error other than a full buffer (their sequence
    /// numbers are consumed: the sink sees them as loss), plus asynchronous ICMP errors.
    send_errors,
    /// Times the socket buffer was full (EAGAIN/ENOBUFS) and the generator waited.
    eagain,
    /// CLOCK_MONOTONIC of the first successful send, 0 before.
    started_ns,
    /// CLOCK_MONOTONIC of the latest successful send.
    last_ns,
    /// Next sequence number: every sequence number below it was sent or failed.
    seq_next,
    /// Times the generator fell more than slip_ns behind its schedule (stopped with Ctrl-Z or
    /// SIGSTOP, descheduled, a long wait on a full buffer) and skipped the backlog instead of
    /// sending it back to back.
    schedule_slips,
};
pub const counter_count: u32 = std.meta.fieldNames(Counter).len;

/// Bigger than the default so a batch at high rate never waits on the buffer. The kernel
/// clamps SO_SNDBUF to wmem_max; SO_SNDBUFFORCE lifts that when we have CAP_NET_ADMIN.
const sndbuf_bytes: u32 = constants.egress_sndbuf_bytes;
const pace_burst_ns: u64 = constants.gen_pace_burst_ns;
const eagain_wait_ns: u64 = constants.gen_eagain_wait_ns;
const enobufs_wait_ns: u64 = constants.gen_enobufs_wait_ns;
/// Further behind its schedule than this, a paced generator moves the schedule forward rather
/// than catch up: a stall of 60 s at 1000 pps would otherwise come out as 60,000 datagrams at
/// line rate, and the receivers' drops of that burst would read as the relay's loss.
const slip_ns: u64 = 100 * ns_per_ms;

/// The body of datagram `seq` is pattern_template[off + i] for payload offset i, with
/// off = (seq * 31) mod 256 (see abi.patternByte): one memcpy/memcmp per datagram.
pub const pattern_period: u32 = 256;

comptime {
    assert(constants.gen_batch_max > 0);
    assert(constants.udp_payload_max >= abi.payload_header_bytes);
    // The whole batch of maximum-size datagrams stays a few MiB.
    assert(@as(u64, constants.gen_batch_max) * constants.udp_payload_max <= 8 * 1024 * 1024);
}

pub const Gen = struct {
    fd: i32,
    cfg: abi.GenConfig,
    values: [counter_count]u64,
    /// gen_batch_max slots of slot_bytes: one batch of datagrams (raw mode: of frames, the
    /// headers written once at create).
    slots: []u8,
    /// cfg.size, plus the frame headers in raw mode.
    slot_bytes: u32,
    /// Bytes before the payload in a slot (0, or gen_raw.header_bytes).
    head_bytes: u32,
    /// Raw mode: the frames' headers and checksum sums, where they go, and the UDP socket
    /// that reserves their source port (-1 in UDP mode).
    frames: raw.Frames,
    dest: raw.SockaddrLl,
    port_fd: i32,
    /// pattern_period + cfg.size bytes, byte k = k mod 256.
    template: []u8,
    iovecs: [constants.gen_batch_max]std.posix.iovec,
    msgs: [constants.gen_batch_max]linux.mmsghdr,
    /// Packets to wait for before waking up when paced (1 at low rates).
    burst: u32,
    /// CLOCK_MONOTONIC of the first run(): duration is measured from it.
    epoch_ns: u64,
    /// Packet k is due at pace_epoch_ns + k / rate: epoch_ns, moved forward at each slip.
    pace_epoch_ns: u64,
    started: bool,
    done: bool,

    pub fn create(cfg: *const abi.GenConfig) sys.Error!*Gen {
        if (cfg.size < abi.payload_header_bytes) return error.INVAL;
        if (cfg.size > constants.udp_payload_max) return error.INVAL;
        if (cfg.port == 0) return error.INVAL;
        if (net.isUnspecified(&cfg.addr)) return error.INVAL;
        const is_raw = switch (cfg.mode) {
            abi.gen_mode_udp => false,
            abi.gen_mode_raw => true,
            else => return error.INVAL,
        };
        // Raw frames go to an IPv4 group out of a given interface (gen_raw.zig says why).
        if (is_raw and (cfg.ifindex == 0 or !net.isV4(&cfg.addr) or !net.isMulticast(&cfg.addr))) return error.INVAL;
        const head_bytes: u32 = if (is_raw) raw.header_bytes else 0;
        const slot_bytes = head_bytes + cfg.size;

        const allocator = std.heap.page_allocator;
        const self = allocator.create(Gen) catch return error.NOMEM;
        errdefer allocator.destroy(self);
        const slots = allocator.alloc(u8, @as(usize, constants.gen_batch_max) * slot_bytes) catch
            return error.NOMEM;
        errdefer allocator.free(slots);
        const template = allocator.alloc(u8, pattern_period + cfg.size) catch return error.NOMEM;
        errdefer allocator.free(template);
        for (template, 0..) |*byte, k| byte.* = @truncate(k);

        self.* = .{
            .fd = -1,
            .cfg = cfg.*,
            .values = @splat(0),
            .slots = slots,
            .slot_bytes = slot_bytes,
            .head_bytes = head_bytes,
            .frames = undefined,
            .dest = undefined,
            .port_fd = -1,
            .template = template,
            .iovecs = undefined,
            .msgs = undefined,
            .burst = burstPackets(cfg.rate_pps),
            .epoch_ns = 0,
            .pace_epoch_ns = 0,
            .started = false,
            .done = false,
        };
        if (is_raw) {
            try self.openRaw();
        } else {
            self.fd = try openSocket(cfg);
        }
        errdefer self.closeSockets();
        // UDP mode: the socket is connected, no msg_name. Raw mode: every frame names the
        // interface and the group's MAC. Pointers into self are stable (heap).
        for (&self.msgs, &self.iovecs, 0..) |*msg, *iov, i| {
            iov.* = .{ .base = self.slot(@intCast(i)).ptr, .len = slot_bytes };
            msg.* = .{
                .hdr = .{
                    .name = if (is_raw) @ptrCast(&self.dest) else null,
                    .namelen = if (is_raw) @sizeOf(raw.SockaddrLl) else 0,
                    .iov = @ptrCast(iov),
                    .iovlen = 1,
                    .control = null,
                    .controllen = 0,
                    .flags = 0,
                },
                .len = 0,
            };
        }
        return self;
    }

    /// Raw mode's sockets and frame headers: the link's MAC, IPv4 address and MTU decide the
    /// headers; a datagram that does not fit the MTU is refused here (MSGSIZE), since a raw
    /// frame is never fragmented.
    fn openRaw(self: *Gen) sys.Error!void {
        const link = try raw.queryLink(self.cfg.ifindex);
        if (raw.ip_bytes + raw.udp_bytes + self.cfg.size > link.mtu) return error.MSGSIZE;
        const reserved = try raw.reservePort(link.addr4);
        errdefer sys.close(reserved.fd);
        const group: [4]u8 = self.cfg.addr[12..16].*;
        self.frames.init(&link, reserved.port, group, self.cfg.port, self.cfg.ttl, 0, self.cfg.size, self.template);
        self.dest = raw.destination(self.cfg.ifindex, raw.multicastMac(group));
        self.fd = try raw.openSocket(self.cfg.ifindex, sndbuf_bytes);
        self.port_fd = reserved.fd;
        for (0..constants.gen_batch_max) |i| @memcpy(self.slot(@intCast(i))[0..raw.header_bytes], &self.frames.header);
    }

    fn closeSockets(self: *Gen) void {
        if (self.fd >= 0) sys.close(self.fd);
        if (self.port_fd >= 0) sys.close(self.port_fd);
        self.fd = -1;
        self.port_fd = -1;
    }

    pub fn destroy(self: *Gen) void {
        self.closeSockets();
        const allocator = std.heap.page_allocator;
        allocator.free(self.template);
        allocator.free(self.slots);
        allocator.destroy(self);
    }

    pub fn counters(self: *Gen) *[counter_count]u64 {
        return &self.values;
    }

    /// Sends until done or budget_ms elapsed; returns true when done (count reached or
    /// duration elapsed). A budget of 0 sends at most one batch (whatever is due) and never
    /// sleeps, so a caller can interleave the generator with other work.
    pub fn run(self: *Gen, budget_ms: u32) sys.Error!bool {
        if (self.done) return true;
        const start_ns = sys.monotonicNs();
        if (!self.started) {
            self.started = true;
            self.epoch_ns = start_ns;
            self.pace_epoch_ns = start_ns;
        }
        const deadline_ns = start_ns + @as(u64, budget_ms) * ns_per_ms;
        var now_ns = start_ns;
        // Bounded by the deadline: every iteration sends, sleeps toward a time no later than
        // the deadline, or returns.
        while (true) {
            if (self.finished(now_ns)) {
                self.done = true;
                return true;
            }
            self.slipIfBehind(now_ns);
            const due = self.packetsDue(now_ns);
            if (due > 0) {
                try self.sendBatch(due, deadline_ns);
            } else {
                if (now_ns >= deadline_ns) return false;
                self.sleepUntil(@min(self.wakeNs(), deadline_ns));
            }
            now_ns = sys.monotonicNs();
            if (now_ns >= deadline_ns) {
                self.done = self.finished(now_ns);
                return self.done;
            }
        }
    }

    fn finished(self: *const Gen, now_ns: u64) bool {
        if (self.cfg.count != 0 and self.values[@intFromEnum(Counter.seq_next)] >= self.cfg.count) {
            return true;
        }
        if (self.cfg.duration_ns != 0 and now_ns - self.epoch_ns >= self.cfg.duration_ns) {
            return true;
        }
        return false;
    }

    /// More than slip_ns behind (the next packet was due that long ago): the next packet is
    /// due now, and the ones that fell due during the stall are never sent (nor numbered).
    fn slipIfBehind(self: *Gen, now_ns: u64) void {
        if (self.cfg.rate_pps == 0) return;
        const seq_next = self.values[@intFromEnum(Counter.seq_next)];
        const due_ns = self.pace_epoch_ns +| dueNs(self.cfg.rate_pps, seq_next);
        if (now_ns <= due_ns or now_ns - due_ns <= slip_ns) return;
        self.pace_epoch_ns += now_ns - due_ns;
        self.add(.schedule_slips, 1);
    }

    /// Datagrams to send now: at most one batch, never past count, never ahead of the rate.
    fn packetsDue(self: *const Gen, now_ns: u64) u32 {
        const seq_next = self.values[@intFromEnum(Counter.seq_next)];
        var limit = seq_next +| constants.gen_batch_max;
        if (self.cfg.count != 0) limit = @min(limit, self.cfg.count);
        if (self.cfg.rate_pps != 0) limit = @min(limit, dueCount(self.cfg.rate_pps, now_ns -| self.pace_epoch_ns));
        if (limit <= seq_next) return 0;
        return @intCast(limit - seq_next);
    }

    /// When to wake while ahead of the rate: when `burst` packets are due, but not past the
    /// last packet of count or the end of duration (then run() notices it is finished).
    fn wakeNs(self: *const Gen) u64 {
        assert(self.cfg.rate_pps != 0); // Unpaced sending always has something due.
        const seq_next = self.values[@intFromEnum(Counter.seq_next)];
        var index = seq_next + self.burst - 1;
        if (self.cfg.count != 0) index = @min(index, self.cfg.count - 1);
        var wake_ns = self.pace_epoch_ns +| dueNs(self.cfg.rate_pps, index);
        if (self.cfg.duration_ns != 0) wake_ns = @min(wake_ns, self.epoch_ns + self.cfg.duration_ns);
        return wake_ns;
    }

    fn sleepUntil(self: *const Gen, wake_ns: u64) void {
        _ = self;
        const ts: linux.timespec = .{
            .sec = @intCast(wake_ns / ns_per_s),
            .nsec = @intCast(wake_ns % ns_per_s),
        };
        // EINTR only shortens the sleep: the caller re-reads the clock either way.
        _ = linux.clock_nanosleep(.MONOTONIC, .{ .ABSTIME = true }, &ts, null);
    }

    /// Fills `count` datagrams with the next sequence numbers and sends them, waiting and
    /// retrying while the socket buffer is full. Returns early at the deadline with the
    /// unsent rest not consumed: the next call rebuilds them with the same numbers.
    fn sendBatch(self: *Gen, count: u32, deadline_ns: u64) sys.Error!void {
        assert(count > 0 and count <= constants.gen_batch_max);
        const seq_first = self.values[@intFromEnum(Counter.seq_next)];
        for (0..count) |i| self.fill(@intCast(i), seq_first + i);

        var first: u32 = 0;
        // Bounded: each iteration sends or skips at least one datagram, or waits; waiting
        // stops at the deadline.
        while (first < count) {
            for (first..count) |i| self.stamp(@intCast(i));
            const rc = linux.sendmmsg(self.fd, self.msgs[first..].ptr, count - first, 0);
            const sent = sys.call("sendmmsg", rc) catch |err| switch (err) {
                error.INTR => continue,
                error.AGAIN, error.NOBUFS => {
                    self.add(.eagain, 1);
                    if (sys.monotonicNs() >= deadline_ns) return;
                    self.backoff(err == error.AGAIN, deadline_ns);
                    continue;
                },
                // A connected UDP socket reports an earlier datagram's ICMP port
                // unreachable on the next send, which is then not sent: retry it.
                error.CONNREFUSED => {
                    self.add(.send_errors, 1);
                    continue;
                },
                else => {
                    // This datagram cannot be sent (no route, interface down, ...): its
                    // sequence number is consumed so the receiver reports the loss.
                    self.add(.send_errors, 1);
                    self.add(.seq_next, 1);
                    first += 1;
                    continue;
                },
            };
            assert(sent >= 1 and sent <= count - first);
            const now_ns = sys.monotonicNs();
            if (self.values[@intFromEnum(Counter.started_ns)] == 0) {
                self.values[@intFromEnum(Counter.started_ns)] = now_ns;
            }
            self.values[@intFromEnum(Counter.last_ns)] = now_ns;
            self.add(.sent, sent);
            self.add(.bytes, sent * self.cfg.size);
            self.add(.seq_next, sent);
            first += @intCast(sent);
        }
    }

    fn backoff(self: *const Gen, buffer_full: bool, deadline_ns: u64) void {
        const now_ns = sys.monotonicNs();
        if (now_ns >= deadline_ns) return;
        if (buffer_full) {
            const wait_ns = @min(eagain_wait_ns, deadline_ns - now_ns);
            var ts: linux.timespec = .{ .sec = 0, .nsec = @intCast(wait_ns) };
            var pfd = [1]linux.pollfd{.{ .fd = self.fd, .events = linux.POLL.OUT }};
            // Timeout, EINTR and readiness all mean "try again".
            _ = linux.ppoll(&pfd, 1, &ts, null);
        } else {
            self.sleepUntil(@min(now_ns + enobufs_wait_ns, deadline_ns));
        }
    }

    /// Slot `index`: the whole frame in raw mode, the datagram in UDP mode.
    fn slot(self: *const Gen, index: u32) []u8 {
        assert(index < constants.gen_batch_max);
        return self.slots[@as(usize, index) * self.slot_bytes ..][0..self.slot_bytes];
    }

    /// The UDP payload in slot `index`.
    fn payload(self: *const Gen, index: u32) []u8 {
        return self.slot(index)[self.head_bytes..];
    }

    fn fill(self: *Gen, index: u32, seq: u64) void {
        const buf = self.payload(index);
        const h = abi.payload_header_bytes;
        std.mem.writeInt(u32, buf[@offsetOf(abi.PayloadHeader, "magic")..][0..4], abi.payload_magic, .little);
        std.mem.writeInt(u32, buf[@offsetOf(abi.PayloadHeader, "stream_id")..][0..4], self.cfg.stream_id, .little);
        std.mem.writeInt(u64, buf[@offsetOf(abi.PayloadHeader, "seq")..][0..8], seq, .little);
        const off = patternOffset(seq);
        @memcpy(buf[h..], self.template[off + h .. off + self.cfg.size]);
    }

    /// Stamped right before the sendmmsg that carries it (again on a retry), so latency
    /// measured by the sink excludes time spent waiting for buffer space. A raw frame's UDP
    /// checksum covers the stamp: it is written here too.
    fn stamp(self: *Gen, index: u32) void {
        const buf = self.payload(index);
        std.mem.writeInt(u64, buf[@offsetOf(abi.PayloadHeader, "sent_ns")..][0..8], sys.realtimeNs(), .little);
        if (self.head_bytes == 0) return;
        const seq = std.mem.readInt(u64, buf[@offsetOf(abi.PayloadHeader, "seq")..][0..8], .little);
        self.frames.checksum(self.slot(index), patternOffset(seq));
    }

    fn add(self: *Gen, counter: Counter, value: u64) void {
        self.values[@intFromEnum(counter)] +%= value;
    }
};

/// Offset into a pattern template (byte k = k mod 256) where datagram `seq`'s pattern starts.
pub fn patternOffset(seq: u64) u32 {
    return @as(u8, @truncate(seq *% 31));
}

/// Packets due `elapsed_ns` after the epoch: packet k is due at k / rate seconds, so the
/// first is due at once. 128-bit so no rate or elapsed time overflows.
fn dueCount(rate_pps: u64, elapsed_ns: u64) u64 {
    assert(rate_pps > 0);
    const due: u128 = @as(u128, elapsed_ns) * rate_pps / ns_per_s + 1;
    return @intCast(@min(due, std.math.maxInt(u64)));
}

/// Time after the epoch at which packet `index` is due, rounded up (so dueCount agrees).
fn dueNs(rate_pps: u64, index: u64) u64 {
    assert(rate_pps > 0);
    const t: u128 = (@as(u128, index) * ns_per_s + rate_pps - 1) / rate_pps;
    return @intCast(@min(t, std.math.maxInt(u64)));
}

fn burstPackets(rate_pps: u64) u32 {
    const packets: u128 = @as(u128, rate_pps) * pace_burst_ns / ns_per_s;
    return @intCast(std.math.clamp(packets, 1, constants.gen_batch_max));
}

fn openSocket(cfg: *const abi.GenConfig) sys.Error!i32 {
    const fd = try net.openSender(&cfg.addr, cfg.ifindex, cfg.ttl, sndbuf_bytes);
    errdefer sys.close(fd);
    const sa = net.SockAddr.init(&cfg.addr, cfg.port, cfg.ifindex);
    _ = try sys.retryCall("connect", linux.connect, .{ fd, @as(*const anyopaque, &sa), sa.len() });
    return fd;
}

// ---------------------------------------------------------------------------------------
// Tests. The gen -> sink tests over real sockets live in sink.zig (they need both).

const testing = std.testing;

fn testConfig(port: u16) abi.GenConfig {
    return .{
        .addr = net.v4Addr(127, 0, 0, 1),
        .port = port,
        .ttl = 1,
        .ifindex = 0,
        .size = 64,
        .stream_id = 7,
        .rate_pps = 0,
        .count = 0,
        .duration_ns = 0,
    };
}

test "create rejects sizes below the header or above a UDP payload, port 0, no address" {
    var cfg = testConfig(9);
    cfg.size = abi.payload_header_bytes - 1;
    try testing.expectError(error.INVAL, Gen.create(&cfg));
    cfg.size = constants.udp_payload_max + 1;
    try testing.expectError(error.INVAL, Gen.create(&cfg));
    cfg = testConfig(0);
    try testing.expectError(error.INVAL, Gen.create(&cfg));
    cfg = testConfig(9);
    cfg.addr = @splat(0);
    try testing.expectError(error.INVAL, Gen.create(&cfg));
}

test "filled datagrams carry the header and abi.patternByte" {
    var cfg = testConfig(9);
    cfg.size = 600;
    const gen = try Gen.create(&cfg);
    defer gen.destroy();
    for ([_]u64{ 0, 1, 255, 256, 1 << 40 }) |seq| {
        gen.fill(3, seq);
        gen.stamp(3);
        const buf = gen.payload(3);
        const header = std.mem.bytesToValue(abi.PayloadHeader, buf[0..abi.payload_header_bytes]);
        try testing.expectEqual(abi.payload_magic, header.magic);
        try testing.expectEqual(@as(u32, 7), header.stream_id);
        try testing.expectEqual(seq, header.seq);
        try testing.expect(header.sent_ns > 0);
        for (buf[abi.payload_header_bytes..], abi.payload_header_bytes..) |byte, i| {
            try testing.expectEqual(abi.patternByte(seq, @intCast(i)), byte);
        }
    }
}

test "pacing arithmetic: packet k is due at k / rate, the first at once" {
    try testing.expectEqual(@as(u64, 1), dueCount(1000, 0));
    try testing.expectEqual(@as(u64, 1), dueCount(1000, 999_999));
    try testing.expectEqual(@as(u64, 2), dueCount(1000, 1_000_000));
    try testing.expectEqual(@as(u64, 1_000_001), dueCount(1000, 1000 * ns_per_s));
    // No overflow at absurd rates and times.
    try testing.expectEqual(std.math.maxInt(u64), dueCount(std.math.maxInt(u64), std.math.maxInt(u64)));
    for ([_]u64{ 1, 3, 2000, 999_983, 10_000_000 }) |rate| {
        for ([_]u64{ 0, 1, 2, 17, 1000, 123_456 }) |k| {
            const t = dueNs(rate, k);
            try testing.expect(dueCount(rate, t) >= k + 1);
            if (t > 0) try testing.expect(dueCount(rate, t - 1) <= k);
        }
    }
    try testing.expectEqual(@as(u32, 1), burstPackets(2000));
    try testing.expectEqual(@as(u32, 50), burstPackets(1_000_000));
    try testing.expectEqual(constants.gen_batch_max, burstPackets(std.math.maxInt(u64)));
}


test "a paced generator stalled for 0.5 s skips the backlog instead of sending it at once" {
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.NONBLOCK | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(fd);
    var sa = net.SockAddr.init(&net.v4Addr(127, 0, 0, 1), 0, 0);
    _ = try sys.call("bind", linux.bind(fd, &sa.any, sa.len()));
    var len: linux.socklen_t = sa.len();
    _ = try sys.call("getsockname", linux.getsockname(fd, &sa.any, &len));
    var cfg = testConfig(std.mem.bigToNative(u16, sa.in.port));
    cfg.rate_pps = 1000;
    const g = try Gen.create(&cfg);
    defer g.destroy();
    _ = try g.run(50);
    const before = g.values[@intFromEnum(Counter.sent)];
    try testing.expect(before >= 40 and before <= 60);
    // The process does not run for 0.5 s (as under SIGSTOP): 500 packets fall due.
    const pause: linux.timespec = .{ .sec = 0, .nsec = 500 * ns_per_ms };
    _ = linux.nanosleep(&pause, null);
    _ = try g.run(20);
    const after = g.values[@intFromEnum(Counter.sent)];
    try testing.expectEqual(@as(u64, 1), g.values[@intFromEnum(Counter.schedule_slips)]);
    // 20 ms at 1000 pps, not the 500 of the stall on top.
    try testing.expect(after - before <= 40);
    try testing.expectEqual(after, g.values[@intFromEnum(Counter.seq_next)]);
}
