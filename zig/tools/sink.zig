//! Measuring receiver: one UDP socket (joined to the group when the address is multicast)
//! drained with recvmmsg; every datagram in the generator's format is checked for sequence
//! (duplicates, reordering, late arrivals), content (the whole pattern) and latency
//! (CLOCK_REALTIME at receive minus the sender's stamp, into a log-linear histogram).
//!
//! With cfg.gro the socket enables UDP_GRO: a UDP GSO batch (mcrelay's egress sends them)
//! that crossed veth intact, or datagrams the receiving NIC's GRO coalesced, arrive as one
//! message with a (SOL_UDP, UDP_GRO, int gso_size) control message, and the sink splits it
//! into gso_size pieces (the last may be shorter), each checked as one datagram with the
//! message's receive time. Without UDP_GRO the kernel segments such a batch in the
//! receiver's udp_queue_rcv_skb, which on veth runs in the sender's softirq.
//!
//! Memory is fixed at create: the counters and the pattern template live in the Sink; the
//! per-stream tables (duplicate bitmap, histogram) and the receive buffers are one anonymous
//! mapping, so pages of streams never seen are never touched.
const std = @import("std");
const linux = std.os.linux;
const assert = std.debug.assert;

const abi = @import("../abi.zig");
const constants = @import("../constants.zig");
const sys = @import("../sys.zig");
const gen = @import("gen.zig");
const net = @import("../net.zig");

/// Indexes into the first global_counter_count entries of Sink.counters().
pub const GlobalCounter = enum(u32) {
    /// Every datagram received, ours or not.
    datagrams,
    /// Payload bytes of every datagram received.
    bytes,
    /// Datagrams too short for the header or with the wrong magic.
    foreign,
    /// Datagrams of a new stream while all sink_streams_max slots were taken.
    streams_overflow,
    /// CLOCK_MONOTONIC when the latest batch arrived.
    last_rx_ns,
    /// CLOCK_MONOTONIC when the first batch arrived, 0 before.
    first_rx_ns,
    /// Messages that carried a UDP_GRO control message (several datagrams in one buffer).
    gro_batches,
    /// Datagrams split out of those messages (included in `datagrams`).
    gro_datagrams,
    /// Messages whose control data was truncated (MSG_CTRUNC): a UDP_GRO control message may
    /// be missing, so the message was taken as one datagram. Not expected: the control buffer
    /// holds several control messages and only UDP_GRO and SO_RXQ_OVFL are asked for.
    control_truncated,
    /// SO_RCVBUF as read back after asking for cfg.rcvbuf_bytes (the kernel reports twice
    /// what it grants): without CAP_NET_ADMIN, SO_RCVBUFFORCE fails and the request is clamped
    /// to net.core.rmem_max, so this is how the caller learns what it really got.
    rcvbuf_bytes,
    /// Datagrams the kernel dropped at this socket (receive buffer full, mostly): the largest
    /// of SO_RXQ_OVFL's count on received messages and SO_MEMINFO's SK_MEMINFO_DROPS read by
    /// summarize(). These never reach the sink, so they show as `lost` as well: this tells
    /// the sink's own loss from loss upstream.
    socket_drops,
    /// Datagrams whose sender stamp was ahead of our clock (skew between hosts): their
    /// latency was taken as 0.
    latency_clamped,
};
pub const global_counter_count: u32 = std.meta.fieldNames(GlobalCounter).len;

/// Indexes into one stream's block of stream_counter_count entries: one run of one stream.
/// A slot whose `used` is 0 holds nothing; `used` 2 is a run that ended because the generator
/// restarted (a lower seq with a later send stamp than max_seq's), and the stream goes on in
/// a new slot with `run` one higher. received counts every datagram of the run, duplicates
/// and late ones included: unique = received - duplicates - late, all distinct numbers in
/// [min_seq, max_seq]; lost = max_seq - min_seq + 1 - unique, whenever the sink started.
pub const StreamCounter = enum(u32) {
    stream_id,
    received,
    duplicates,
    /// Arrived after a higher sequence number, first copy.
    reordered,
    /// More than sink_seq_window behind max_seq: duplicate or reordered, cannot tell.
    late,
    bytes,
    /// Datagrams whose body differs from the pattern anywhere.
    pattern_errors,
    max_seq,
    lat_count,
    lat_sum_ns,
    lat_max_ns,
    /// Percentiles: filled by summarize(), the upper bound of the bucket holding the
    /// percentile (capped at lat_max_ns), so at most 1/16 above the true value.
    lat_p50_ns,
    lat_p99_ns,
    lat_p999_ns,
    /// Lowest sequence number of the run (within the window when it arrived).
    min_seq,
    /// Sender stamp of the datagram that set max_seq: a lower seq stamped later is a restart.
    max_sent_ns,
    /// 0 for a stream's first run, +1 at each restart of its generator.
    run,
    used,
};
pub const stream_counter_count: u32 = std.meta.fieldNames(StreamCounter).len;

const streams_max = constants.sink_streams_max;
/// Values of StreamCounter.used.
const used_live: u64 = 1;
const used_retired: u64 = 2;
const window = constants.sink_seq_window;
const window_words = window / 64;
const buckets = constants.sink_latency_buckets;
const batch_max = constants.sink_batch_max;

/// All counters: [global][streams_max * stream_counter_count].
pub const counter_count: u32 = global_counter_count + streams_max * stream_counter_count;

const rx_slot_bytes: u32 = constants.sink_rx_slot_bytes;

/// SOL_UDP: the option and control-message level of UDP (its protocol number).
const sol_udp: i32 = linux.IPPROTO.UDP;

fn cmsgSpace(data_bytes: usize) usize {
    return std.mem.alignForward(usize, @sizeOf(linux.cmsghdr) + data_bytes, @alignOf(linux.cmsghdr));
}

/// Control buffer of one message: room for UDP_GRO's int and a few more (24 + 24 + 24 bytes on
/// 64-bit), so MSG_CTRUNC means something unexpected, not a tight fit.
const control_bytes: usize = 4 * cmsgSpace(@sizeOf(i32));

/// Tables of one stream slot: zeroed when the slot is claimed.
const StreamTables = extern struct {
    /// Bit (seq mod window) set when seq was seen; valid for seq in (max_seq - window, max_seq].
    seen: [window_words]u64,
    histogram: [buckets]u64,
};

/// The anonymous mapping: about 24 MiB of stream tables and 4 MiB of receive buffers.
const Region = extern struct {
    streams: [streams_max]StreamTables,
    rx: [batch_max][rx_slot_bytes]u8,
};

comptime {
    assert(std.math.isPowerOfTwo(streams_max));
    assert(std.math.isPowerOfTwo(window) and window >= 64);
    assert(rx_slot_bytes > constants.udp_payload_max);
    assert(latencyBucket(std.math.maxInt(u64)) < buckets);
    // The region stays at tens of MiB: it is mapped whole by `mcrelay sink`.
    assert(@sizeOf(Region) <= 32 * 1024 * 1024);
    assert(streams_max <= std.math.maxInt(u32) / stream_counter_count);
}

pub const Sink = struct {
    fd: i32,
    /// Bound UDP port, host byte order: the kernel's choice when cfg.port was 0.
    port: u16,
    stream_count: u32,
    values: [counter_count]u64,
    /// pattern_period + rx_slot_bytes bytes, byte k = k mod 256 (see gen.patternOffset).
    template: [gen.pattern_period + rx_slot_bytes]u8,
    iovecs: [batch_max]std.posix.iovec,
    msgs: [batch_max]linux.mmsghdr,
    /// One control buffer per message, read for UDP_GRO when gro is on.
    control: [batch_max][control_bytes]u8 align(@alignOf(linux.cmsghdr)),
    /// UDP_GRO is enabled on the socket.
    gro: bool,
    region: *Region,

    pub fn create(cfg: *const abi.SinkConfig) sys.Error!*Sink {
        const self = try allocate();
        errdefer self.destroy();
        self.fd = try openSocket(cfg);
        self.port = try boundPort(self.fd);
        self.global(.rcvbuf_bytes).* = try rcvbufBytes(self.fd);
        self.gro = cfg.gro != 0;
        return self;
    }

    /// Memory only, no socket: create() and the unit tests that feed ingest() directly.
    fn allocate() sys.Error!*Sink {
        const allocator = std.heap.page_allocator;
        const self = allocator.create(Sink) catch return error.NOMEM;
        errdefer allocator.destroy(self);
        const address = try sys.call("mmap", linux.mmap(
            null,
            @sizeOf(Region),
            .{ .READ = true, .WRITE = true },
            .{ .TYPE = .PRIVATE, .ANONYMOUS = true },
            -1,
            0,
        ));
        // Field by field: the large arrays are written in place, not built on the stack.
        self.fd = -1;
        self.port = 0;
        self.stream_count = 0;
        self.gro = false;
        self.region = @ptrFromInt(address);
        @memset(&self.values, 0);
        for (&self.template, 0..) |*byte, k| byte.* = @truncate(k);
        for (&self.msgs, &self.iovecs, &self.region.rx, &self.control) |*msg, *iov, *buf, *control| {
            iov.* = .{ .base = buf, .len = buf.len };
            msg.* = .{
                .hdr = .{
                    .name = null,
                    .namelen = 0,
                    .iov = @ptrCast(iov),
                    .iovlen = 1,
                    .control = control,
                    .controllen = 0,
                    .flags = 0,
                },
                .len = 0,
            };
        }
        return self;
    }

    pub fn destroy(self: *Sink) void {
        if (self.fd >= 0) sys.close(self.fd);
        _ = linux.munmap(@ptrCast(self.region), @sizeOf(Region));
        std.heap.page_allocator.destroy(self);
    }

    /// One flat u64 region: [global counters][streams_max * stream_counter_count]; stable.
    pub fn counters(self: *Sink) []u64 {
        return &self.values;
    }

    pub fn streamCount(self: *Sink) u32 {
        return self.stream_count;
    }

    /// Receives (recvmmsg batches of sink_batch_max) until budget_ms elapses; returns the
    /// number of datagrams received in this call (a GRO message counts its pieces). A budget
    /// of 0 receives at most one batch of what is already queued, without waiting.
    pub fn run(self: *Sink, budget_ms: u32) sys.Error!u64 {
        assert(self.fd >= 0);
        const deadline_ns = sys.monotonicNs() + @as(u64, budget_ms) * std.time.ns_per_ms;
        var received: u64 = 0;
        // Bounded by the deadline: every iteration receives a batch, or waits at most until
        // the deadline, or returns.
        while (true) {
            // The kernel overwrites controllen with what it wrote: give every message its
            // whole buffer again (SO_RXQ_OVFL is always asked for, UDP_GRO with cfg.gro).
            for (&self.msgs) |*msg| msg.hdr.controllen = control_bytes;
            const rc = linux.recvmmsg(self.fd, &self.msgs, batch_max, linux.MSG.DONTWAIT, null);
            const count = sys.call("recvmmsg", rc) catch |err| switch (err) {
                error.INTR => continue,
                error.AGAIN => {
                    if (!self.wait(deadline_ns)) return received;
                    continue;
                },
                else => return err,
            };
            assert(count >= 1 and count <= batch_max);
            // One clock read per batch: the batch reached us at one moment.
            const rx_real_ns = sys.realtimeNs();
            const rx_mono_ns = sys.monotonicNs();
            for (self.msgs[0..count], self.region.rx[0..count]) |*msg, *buf| {
                if (msg.hdr.flags & linux.MSG.TRUNC != 0) {
                    // Cannot happen with slots larger than any UDP payload (or GRO buffer,
                    // at most 64 KiB); not ours anyway.
                    self.add(.datagrams, 1);
                    self.add(.bytes, msg.len);
                    self.add(.foreign, 1);
                    received += 1;
                    continue;
                }
                if (msg.hdr.flags & linux.MSG.CTRUNC != 0) self.add(.control_truncated, 1);
                const control = controlOf(&msg.hdr);
                if (control.drops) |drops| self.noteDrops(drops);
                const gso_size = if (self.gro) control.gso_size else 0;
                received += self.ingestMessage(buf[0..msg.len], gso_size, rx_real_ns);
            }
            if (self.global(.first_rx_ns).* == 0) self.global(.first_rx_ns).* = rx_mono_ns;
            self.global(.last_rx_ns).* = rx_mono_ns;
            if (rx_mono_ns >= deadline_ns) return received;
        }
    }

    /// Waits for the socket to become readable until the deadline; false when it passed.
    fn wait(self: *Sink, deadline_ns: u64) bool {
        const now_ns = sys.monotonicNs();
        if (now_ns >= deadline_ns) return false;
        const wait_ns = deadline_ns - now_ns;
        var ts: linux.timespec = .{
            .sec = @intCast(wait_ns / std.time.ns_per_s),
            .nsec = @intCast(wait_ns % std.time.ns_per_s),
        };
        var pfd = [1]linux.pollfd{.{ .fd = self.fd, .events = linux.POLL.IN }};
        const ready = sys.call("ppoll", linux.ppoll(&pfd, 1, &ts, null)) catch |err| switch (err) {
            error.INTR => return true, // The loop re-checks the deadline.
            else => return false, // EFAULT/EINVAL/ENOMEM: give the budget back.
        };
        return ready > 0;
    }

    /// Accounts one received message: gso_size 0 is one datagram; otherwise a GRO buffer of
    /// datagrams of gso_size bytes each, the last one possibly shorter, all received at
    /// rx_ns. Returns the datagrams accounted.
    pub fn ingestMessage(self: *Sink, payload: []const u8, gso_size: u32, rx_ns: u64) u64 {
        if (gso_size == 0) {
            self.ingest(payload, rx_ns);
            return 1;
        }
        self.add(.gro_batches, 1);
        var pieces: u64 = 0;
        var at: usize = 0;
        // An empty buffer is still one (empty, foreign) datagram, as without GRO.
        while (true) {
            const end = @min(payload.len, at + gso_size);
            self.ingest(payload[at..end], rx_ns);
            pieces += 1;
            at = end;
            if (at >= payload.len) break;
        }
        self.add(.gro_datagrams, pieces);
        return pieces;
    }

    /// Accounts one datagram received at CLOCK_REALTIME rx_ns.
    pub fn ingest(self: *Sink, payload: []const u8, rx_ns: u64) void {
        self.add(.datagrams, 1);
        self.add(.bytes, payload.len);
        const h = abi.payload_header_bytes;
        if (payload.len < h) return self.add(.foreign, 1);
        const header = std.mem.bytesToValue(abi.PayloadHeader, payload[0..h]);
        const magic = std.mem.littleToNative(u32, header.magic);
        if (magic != abi.payload_magic) return self.add(.foreign, 1);
        const stream_id = std.mem.littleToNative(u32, header.stream_id);
        const seq = std.mem.littleToNative(u64, header.seq);
        const sent_ns = std.mem.littleToNative(u64, header.sent_ns);

        var found = self.lookup(stream_id) orelse return self.add(.streams_overflow, 1);
        if (!found.fresh and restarted(self.stream(found.slot), seq, sent_ns)) {
            found = self.restart(found.slot) orelse return self.add(.streams_overflow, 1);
        }
        const s = self.stream(found.slot);
        s[@intFromEnum(StreamCounter.received)] += 1;
        s[@intFromEnum(StreamCounter.bytes)] += payload.len;
        const seen = &self.region.streams[found.slot].seen;
        if (found.fresh) {
            s[@intFromEnum(StreamCounter.max_seq)] = seq;
            s[@intFromEnum(StreamCounter.min_seq)] = seq;
            s[@intFromEnum(StreamCounter.max_sent_ns)] = sent_ns;
            setBit(seen, seq);
        } else {
            trackSeq(s, seen, seq, sent_ns);
        }

        const off = gen.patternOffset(seq);
        if (!std.mem.eql(u8, payload[h..], self.template[off + h .. off + payload.len])) {
            s[@intFromEnum(StreamCounter.pattern_errors)] += 1;
        }

        // A sender clock ahead of ours (skew between hosts) reads as latency 0, counted.
        if (sent_ns > rx_ns) self.add(.latency_clamped, 1);
        const latency_ns = rx_ns -| sent_ns;
        s[@intFromEnum(StreamCounter.lat_count)] += 1;
        s[@intFromEnum(StreamCounter.lat_sum_ns)] +%= latency_ns;
        const lat_max = &s[@intFromEnum(StreamCounter.lat_max_ns)];
        lat_max.* = @max(lat_max.*, latency_ns);
        self.region.streams[found.slot].histogram[latencyBucket(latency_ns)] += 1;
    }

    /// socket_drops only grows: SO_RXQ_OVFL and SK_MEMINFO_DROPS are the socket's running
    /// total (a u32 in the kernel) at the time they were read.
    fn noteDrops(self: *Sink, drops: u32) void {
        const total = self.global(.socket_drops);
        total.* = @max(total.*, drops);
    }

    /// SK_MEMINFO_DROPS now: the SO_RXQ_OVFL count rides only on datagrams queued after a
    /// drop, so drops after the last datagram received would otherwise go unseen.
    fn readDrops(self: *Sink) void {
        if (self.fd < 0) return;
        var meminfo: [sk_meminfo_vars]u32 = @splat(0);
        var len: linux.socklen_t = @sizeOf(@TypeOf(meminfo));
        const rc = linux.getsockopt(self.fd, linux.SOL.SOCKET, so_meminfo, @ptrCast(&meminfo), &len);
        // ENOPROTOOPT before Linux 4.?: SO_RXQ_OVFL's count is all there is.
        _ = sys.call("getsockopt", rc) catch return;
        if (len > sk_meminfo_drops * @sizeOf(u32)) self.noteDrops(meminfo[sk_meminfo_drops]);
    }

    /// Fills lat_p50/p99/p999 of every used stream from the histograms, and socket_drops.
    pub fn summarize(self: *Sink) void {
        self.readDrops();
        for (0..streams_max) |slot| {
            const s = self.stream(@intCast(slot));
            if (s[@intFromEnum(StreamCounter.used)] == 0) continue;
            const histogram = &self.region.streams[slot].histogram;
            const count = s[@intFromEnum(StreamCounter.lat_count)];
            const max_ns = s[@intFromEnum(StreamCounter.lat_max_ns)];
            s[@intFromEnum(StreamCounter.lat_p50_ns)] = percentile(histogram, count, max_ns, 500);
            s[@intFromEnum(StreamCounter.lat_p99_ns)] = percentile(histogram, count, max_ns, 990);
            s[@intFromEnum(StreamCounter.lat_p999_ns)] = percentile(histogram, count, max_ns, 999);
        }
    }

    const Found = struct { slot: u32, fresh: bool };

    /// Open addressing with linear probing; slots are never freed, so the first empty slot
    /// ends a probe. A full table costs streams_max probes per unknown stream: only in
    /// overflow, which is counted and reported.
    fn lookup(self: *Sink, stream_id: u32) ?Found {
        const shift: u5 = @intCast(32 - @ctz(streams_max));
        const home: u32 = (stream_id *% 0x9e3779b1) >> shift;
        for (0..streams_max) |probe| {
            const slot: u32 = (home + @as(u32, @intCast(probe))) & (streams_max - 1);
            const s = self.stream(slot);
            if (s[@intFromEnum(StreamCounter.used)] == 0) {
                self.claim(slot, stream_id);
                return .{ .slot = slot, .fresh = true };
            }
            if (s[@intFromEnum(StreamCounter.used)] == used_retired) continue;
            if (s[@intFromEnum(StreamCounter.stream_id)] == stream_id) return .{ .slot = slot, .fresh = false };
        }
        assert(self.stream_count == streams_max);
        return null;
    }

    /// The generator of `slot`'s stream restarted: the slot keeps the finished run and a new
    /// slot takes the stream from here, or null (streams_overflow) when the table is full.
    fn restart(self: *Sink, slot: u32) ?Found {
        const old = self.stream(slot);
        assert(old[@intFromEnum(StreamCounter.used)] == used_live);
        const stream_id: u32 = @intCast(old[@intFromEnum(StreamCounter.stream_id)]);
        const run_next = old[@intFromEnum(StreamCounter.run)] + 1;
        if (self.stream_count == streams_max) return null;
        old[@intFromEnum(StreamCounter.used)] = used_retired;
        const found = self.lookup(stream_id) orelse unreachable; // A free slot is left.
        assert(found.fresh);
        self.stream(found.slot)[@intFromEnum(StreamCounter.run)] = run_next;
        return found;
    }

    fn claim(self: *Sink, slot: u32, stream_id: u32) void {
        assert(self.stream_count < streams_max);
        const s = self.stream(slot);
        @memset(s, 0);
        @memset(&self.region.streams[slot].seen, 0);
        @memset(&self.region.streams[slot].histogram, 0);
        s[@intFromEnum(StreamCounter.stream_id)] = stream_id;
        s[@intFromEnum(StreamCounter.used)] = used_live;
        self.stream_count += 1;
    }

    fn stream(self: *Sink, slot: u32) *[stream_counter_count]u64 {
        assert(slot < streams_max);
        return self.values[global_counter_count + slot * stream_counter_count ..][0..stream_counter_count];
    }

    fn global(self: *Sink, counter: GlobalCounter) *u64 {
        return &self.values[@intFromEnum(counter)];
    }

    fn add(self: *Sink, counter: GlobalCounter, value: u64) void {
        self.global(counter).* +%= value;
    }
};

/// Classifies seq against the stream's max_seq and window bitmap (see StreamCounter).
fn trackSeq(s: *[stream_counter_count]u64, seen: *[window_words]u64, seq: u64, sent_ns: u64) void {
    const max_seq = &s[@intFromEnum(StreamCounter.max_seq)];
    if (seq > max_seq.*) {
        // Bits of (old max, seq] held sequence numbers a window older: forget them.
        const gap = seq - max_seq.*;
        if (gap >= window) {
            @memset(seen, 0);
        } else {
            clearCircular(seen, @intCast((max_seq.* + 1) % window), @intCast(gap));
        }
        max_seq.* = seq;
        s[@intFromEnum(StreamCounter.max_sent_ns)] = sent_ns;
        setBit(seen, seq);
    } else if (max_seq.* - seq >= window) {
        s[@intFromEnum(StreamCounter.late)] += 1;
    } else if (testBit(seen, seq)) {
        s[@intFromEnum(StreamCounter.duplicates)] += 1;
    } else {
        s[@intFromEnum(StreamCounter.reordered)] += 1;
        const min_seq = &s[@intFromEnum(StreamCounter.min_seq)];
        min_seq.* = @min(min_seq.*, seq);
        setBit(seen, seq);
    }
}

/// A generator restarted with the same stream id begins again at seq 0: a lower seq than
/// max_seq stamped later than max_seq's datagram. Reordered and duplicated datagrams (and
/// late ones) carry an earlier or equal stamp, so they never look like a restart.
fn restarted(s: *const [stream_counter_count]u64, seq: u64, sent_ns: u64) bool {
    return seq < s[@intFromEnum(StreamCounter.max_seq)] and sent_ns > s[@intFromEnum(StreamCounter.max_sent_ns)];
}

fn setBit(seen: *[window_words]u64, seq: u64) void {
    const bit = seq % window;
    seen[bit / 64] |= @as(u64, 1) << @intCast(bit % 64);
}

fn testBit(seen: *const [window_words]u64, seq: u64) bool {
    const bit = seq % window;
    return seen[bit / 64] & (@as(u64, 1) << @intCast(bit % 64)) != 0;
}

/// Clears `count` bits starting at bit `start`, wrapping at the end of the bitmap.
fn clearCircular(seen: *[window_words]u64, start: u32, count: u32) void {
    assert(start < window and count < window);
    const first = @min(count, window - start);
    clearLinear(seen, start, start + first);
    clearLinear(seen, 0, count - first);
}

/// Clears bits [lo, hi) a word at a time.
fn clearLinear(seen: *[window_words]u64, lo: u32, hi: u32) void {
    assert(lo <= hi and hi <= window);
    if (lo == hi) return;
    const lo_word = lo / 64;
    const hi_word = (hi - 1) / 64;
    const lo_mask = ~@as(u64, 0) << @intCast(lo % 64); // bits >= lo within its word
    const hi_mask = ~@as(u64, 0) >> @intCast(63 - (hi - 1) % 64); // bits <= hi - 1
    if (lo_word == hi_word) {
        seen[lo_word] &= ~(lo_mask & hi_mask);
        return;
    }
    seen[lo_word] &= ~lo_mask;
    @memset(seen[lo_word + 1 .. hi_word], 0);
    seen[hi_word] &= ~hi_mask;
}

/// Log-linear bucket: values below 16 exactly, above that 16 buckets per power of two
/// (the most significant bit and the next four), so a bucket is at most 1/16 wide.
pub fn latencyBucket(ns: u64) u32 {
    if (ns < 16) return @intCast(ns);
    const msb: u32 = 63 - @as(u32, @clz(ns));
    assert(msb >= 4);
    const sub: u32 = @intCast((ns >> @intCast(msb - 4)) & 15);
    return 16 * (msb - 3) + sub;
}

/// Largest value that falls into `bucket`.
pub fn bucketUpperNs(bucket: u32) u64 {
    if (bucket < 16) return bucket;
    const msb = bucket / 16 + 3;
    const sub: u64 = bucket % 16;
    const shift: u6 = @intCast(msb - 4);
    const lower = (16 + sub) << shift;
    return lower + ((@as(u64, 1) << shift) - 1);
}

/// The value at `per_mille` / 1000 of `count` samples: the upper bound of the bucket that
/// holds it, capped at the largest sample seen.
fn percentile(histogram: *const [buckets]u64, count: u64, max_ns: u64, per_mille: u64) u64 {
    assert(per_mille > 0 and per_mille <= 1000);
    if (count == 0) return 0;
    const rank: u64 = @intCast(@max(1, (@as(u128, count) * per_mille + 999) / 1000));
    var cumulative: u64 = 0;
    for (histogram, 0..) |n, bucket| {
        cumulative += n;
        if (cumulative >= rank) return @min(bucketUpperNs(@intCast(bucket)), max_ns);
    }
    unreachable; // The histogram holds lat_count samples.
}

/// What the sink reads from a message's control data.
const Control = struct {
    /// (SOL_UDP, UDP_GRO) int: the segment size of a GRO buffer, 0 without one.
    gso_size: u32 = 0,
    /// (SOL_SOCKET, SO_RXQ_OVFL) u32: the socket's drop count when the datagram was queued.
    drops: ?u32 = null,
};

fn controlOf(hdr: *const linux.msghdr) Control {
    const control: [*]const u8 = @ptrCast(hdr.control orelse return .{});
    return controlIn(control[0..hdr.controllen]);
}

/// Walks the control messages in `control` (as CMSG_FIRSTHDR/CMSG_NXTHDR).
fn controlIn(control: []const u8) Control {
    const header = @sizeOf(linux.cmsghdr);
    var out: Control = .{};
    var at: usize = 0;
    while (at + header <= control.len) {
        const head = std.mem.bytesToValue(linux.cmsghdr, control[at..][0..header]);
        if (head.len < header or head.len > control.len - at) return out;
        const data = control[at + header .. at + head.len];
        if (head.level == sol_udp and head.type == linux.UDP.GRO and data.len >= @sizeOf(i32)) {
            const size = std.mem.bytesToValue(i32, data[0..@sizeOf(i32)]);
            out.gso_size = if (size > 0) @intCast(size) else 0;
        } else if (head.level == linux.SOL.SOCKET and head.type == linux.SO.RXQ_OVFL and data.len >= @sizeOf(u32)) {
            out.drops = std.mem.bytesToValue(u32, data[0..@sizeOf(u32)]);
        }
        at += cmsgSpace(head.len - header);
    }
    return out;
}

/// The gso_size of UDP_GRO in `control`, 0 without one (the unit tests' view of controlIn).
fn groSizeIn(control: []const u8) u32 {
    return controlIn(control).gso_size;
}

/// SO_MEMINFO (asm-generic/socket.h) fills u32 meminfo[SK_MEMINFO_VARS]; SK_MEMINFO_DROPS is
/// the socket's sk_drops (linux/sock_diag.h).
const so_meminfo: u32 = 55;
const sk_meminfo_drops: usize = 8;
const sk_meminfo_vars: usize = 9;

/// SO_RCVBUF as the kernel reports it (twice the granted size).
fn rcvbufBytes(fd: i32) sys.Error!u64 {
    var value: c_int = 0;
    var len: linux.socklen_t = @sizeOf(c_int);
    _ = try sys.call("getsockopt", linux.getsockopt(fd, linux.SOL.SOCKET, linux.SO.RCVBUF, @ptrCast(&value), &len));
    return @intCast(@max(value, 0));
}

fn openSocket(cfg: *const abi.SinkConfig) sys.Error!i32 {
    const multicast = net.isMulticast(&cfg.addr);
    // Binding the group address (not INADDR_ANY) keeps other groups on the same port out.
    const sa = net.SockAddr.init(&cfg.addr, cfg.port, cfg.ifindex);
    const family = sa.family();
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(
        family,
        linux.SOCK.DGRAM | linux.SOCK.NONBLOCK | linux.SOCK.CLOEXEC,
        0,
    )));
    errdefer sys.close(fd);
    // Several sinks (or a sink beside the relay's own join socket) may share group and port.
    try sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.REUSEADDR, 1);
    if (cfg.rcvbuf_bytes != 0) {
        try net.setBufferBytes(fd, linux.SO.RCVBUF, linux.SO.RCVBUFFORCE, cfg.rcvbuf_bytes);
    }
    if (cfg.gro != 0) try sys.setsockoptInt(fd, sol_udp, linux.UDP.GRO, 1);
    // Every received message then carries the socket's drop count (socket_drops). qemu-user
    // does not translate this option (ENOPROTOOPT): the sink still runs, and socket_drops comes
    // from SO_MEMINFO at the end where that is known (docs/reference.md says when it is 0).
    sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.RXQ_OVFL, 1) catch |err| switch (err) {
        error.NOPROTOOPT => {},
        else => return err,
    };
    _ = try sys.call("bind", linux.bind(fd, &sa.any, sa.len()));
    if (!multicast) return fd;

    if (family == linux.AF.INET) {
        // Without this, a group joined by any other socket on any interface also reaches
        // this one; with it, only our own membership (group, interface) counts.
        sys.setsockoptInt(fd, linux.IPPROTO.IP, linux.IP.MULTICAST_ALL, 0) catch |err| switch (err) {
            error.NOPROTOOPT => {}, // Kernels before 2.6.31.
            else => return err,
        };
        const mreq: net.IpMreqn = .{
            .multiaddr = net.v4Bits(&cfg.addr),
            .address = 0,
            .ifindex = @intCast(cfg.ifindex),
        };
        try sys.setsockopt(fd, linux.IPPROTO.IP, linux.IP.ADD_MEMBERSHIP, &mreq);
    } else {
        const mreq: net.Ipv6Mreq = .{ .multiaddr = cfg.addr, .ifindex = cfg.ifindex };
        try sys.setsockopt(fd, linux.IPPROTO.IPV6, linux.IPV6.ADD_MEMBERSHIP, &mreq);
    }
    return fd;
}

fn boundPort(fd: i32) sys.Error!u16 {
    var storage: linux.sockaddr.storage = undefined;
    var len: linux.socklen_t = @sizeOf(linux.sockaddr.storage);
    _ = try sys.call("getsockname", linux.getsockname(fd, @ptrCast(&storage), &len));
    const sa: *const net.SockAddr = @ptrCast(&storage);
    // sin_port and sin6_port sit at the same offset.
    return std.mem.bigToNative(u16, sa.in.port);
}

// ---------------------------------------------------------------------------------------
// Tests

const testing = std.testing;

fn streamValue(sink: *Sink, slot: u32, counter: StreamCounter) u64 {
    return sink.stream(slot)[@intFromEnum(counter)];
}

fn globalValue(sink: *Sink, counter: GlobalCounter) u64 {
    return sink.global(counter).*;
}

/// The slot of a stream, without claiming one (unlike lookup).
fn slotOf(sink: *Sink, stream_id: u32) !u32 {
    for (0..streams_max) |slot| {
        const s = sink.stream(@intCast(slot));
        if (s[@intFromEnum(StreamCounter.used)] != 0 and s[@intFromEnum(StreamCounter.stream_id)] == stream_id) {
            return @intCast(slot);
        }
    }
    return error.TestStreamMissing;
}

/// A datagram in the generator's format, built independently of gen.zig's fill().
fn craft(buf: []u8, stream_id: u32, seq: u64, sent_ns: u64) []u8 {
    assert(buf.len >= abi.payload_header_bytes);
    const header: abi.PayloadHeader = .{
        .magic = std.mem.nativeToLittle(u32, abi.payload_magic),
        .stream_id = std.mem.nativeToLittle(u32, stream_id),
        .seq = std.mem.nativeToLittle(u64, seq),
        .sent_ns = std.mem.nativeToLittle(u64, sent_ns),
    };
    @memcpy(buf[0..abi.payload_header_bytes], std.mem.asBytes(&header));
    for (buf[abi.payload_header_bytes..], abi.payload_header_bytes..) |*byte, i| {
        byte.* = abi.patternByte(seq, @intCast(i));
    }
    return buf;
}

fn feed(sink: *Sink, stream_id: u32, seqs: []const u64) void {
    var buf: [100]u8 = undefined;
    for (seqs) |seq| sink.ingest(craft(&buf, stream_id, seq, 1000), 2000);
}

test "duplicates and reordering are told apart inside the window" {
    const sink = try Sink.allocate();
    defer sink.destroy();
    feed(sink, 5, &.{ 0, 1, 2, 1, 2, 4, 3, 3, 5 });
    const slot = try slotOf(sink, 5);
    try testing.expectEqual(@as(u64, 9), streamValue(sink, slot, .received));
    try testing.expectEqual(@as(u64, 3), streamValue(sink, slot, .duplicates));
    try testing.expectEqual(@as(u64, 1), streamValue(sink, slot, .reordered));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, slot, .late));
    try testing.expectEqual(@as(u64, 5), streamValue(sink, slot, .max_seq));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, slot, .pattern_errors));
    try testing.expectEqual(@as(u64, 900), streamValue(sink, slot, .bytes));
    try testing.expectEqual(@as(u64, 9), globalValue(sink, .datagrams));
    try testing.expectEqual(@as(u32, 1), sink.streamCount());
}

test "a window-wrapping jump forgets exactly the aliased numbers; a window behind is late" {
    const sink = try Sink.allocate();
    defer sink.destroy();
    feed(sink, 1, &.{ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 });
    // Gap window - 4: clears the bits of 10 .. window + 5, wrapping onto those of 0 .. 5.
    feed(sink, 1, &.{window + 5});
    const slot = try slotOf(sink, 1);
    feed(sink, 1, &.{ 6, 9 }); // Still inside the window and remembered.
    try testing.expectEqual(@as(u64, 2), streamValue(sink, slot, .duplicates));
    feed(sink, 1, &.{ 5, 0 }); // A window or more behind.
    try testing.expectEqual(@as(u64, 2), streamValue(sink, slot, .late));
    feed(sink, 1, &.{window + 3}); // Shares a bit with 3, which the jump cleared.
    try testing.expectEqual(@as(u64, 1), streamValue(sink, slot, .reordered));
    feed(sink, 1, &.{window + 3});
    try testing.expectEqual(@as(u64, 3), streamValue(sink, slot, .duplicates));
    // A jump of more than a window clears everything.
    feed(sink, 1, &.{ 3 * window, 3 * window - 1, 2 * window + 1 });
    try testing.expectEqual(@as(u64, 3), streamValue(sink, slot, .reordered));
    try testing.expectEqual(@as(u64, 3), streamValue(sink, slot, .duplicates));
    try testing.expectEqual(@as(u64, 2), streamValue(sink, slot, .late));
    try testing.expectEqual(@as(u64, 3 * window), streamValue(sink, slot, .max_seq));
    try testing.expectEqual(@as(u64, 20), streamValue(sink, slot, .received));
}

test "window wrap with large jumps agrees with an exact reference" {
    const sink = try Sink.allocate();
    defer sink.destroy();
    const range: u64 = 64 * window;
    const seen_ref = try testing.allocator.alloc(bool, range);
    defer testing.allocator.free(seen_ref);
    @memset(seen_ref, false);
    var expect_dup: u64 = 0;
    var expect_reordered: u64 = 0;
    var expect_late: u64 = 0;
    var max: u64 = 0;
    var prng = std.Random.DefaultPrng.init(0x5eed);
    const random = prng.random();
    var buf: [64]u8 = undefined;
    var seq: u64 = 0;
    const big_jumps = [_]u64{ window - 1, window, window + 1, window / 2, 2 * window + 3 };
    for (0..60_000) |i| {
        if (i > 0) {
            const r = random.uintLessThan(u32, 1000);
            seq = if (r < 1)
                // Rarely far ahead: the bitmap is cleared across its wrap point, or entirely.
                max + big_jumps[random.uintLessThan(usize, big_jumps.len)]
            else if (r < 500)
                max + 1
            else if (r < 600)
                max + random.intRangeAtMost(u64, 2, 100)
            else if (r < 900)
                // Just behind: duplicates and reordering.
                max -| random.uintLessThan(u64, 100)
            else
                // Anywhere within two windows: late as well.
                max -| random.uintLessThan(u64, 2 * window);
            if (seq >= range) break;
        }
        if (i == 0 or seq > max) {
            max = seq;
        } else if (max - seq >= window) {
            expect_late += 1;
        } else if (seen_ref[seq]) {
            expect_dup += 1;
        } else {
            expect_reordered += 1;
        }
        if (i == 0 or max - seq < window) seen_ref[seq] = true;
        sink.ingest(craft(&buf, 9, seq, 0), 0);
    }
    const slot = try slotOf(sink, 9);
    try testing.expectEqual(max, streamValue(sink, slot, .max_seq));
    try testing.expectEqual(expect_dup, streamValue(sink, slot, .duplicates));
    try testing.expectEqual(expect_reordered, streamValue(sink, slot, .reordered));
    try testing.expectEqual(expect_late, streamValue(sink, slot, .late));
    try testing.expect(expect_dup > 100 and expect_reordered > 100 and expect_late > 100);
}

test "clearLinear clears exactly [lo, hi)" {
    var seen: [window_words]u64 = undefined;
    var prng = std.Random.DefaultPrng.init(42);
    const random = prng.random();
    for (0..2000) |_| {
        @memset(&seen, ~@as(u64, 0));
        const lo = random.uintLessThan(u32, window);
        const hi = if (random.boolean()) @min(window, lo + random.uintLessThan(u32, 200)) else random.intRangeAtMost(u32, lo, window);
        clearLinear(&seen, lo, hi);
        for ([_]u32{ lo -| 1, lo, lo + 1, hi -| 1, hi, hi + 1, (lo + hi) / 2 }) |bit| {
            if (bit >= window) continue;
            const set = seen[bit / 64] & (@as(u64, 1) << @intCast(bit % 64)) != 0;
            try testing.expectEqual(!(bit >= lo and bit < hi), set);
        }
        var zeros: u32 = 0;
        for (seen) |word| zeros += @popCount(~word);
        try testing.expectEqual(hi - lo, zeros);
    }
}

test "foreign payloads are counted and create no stream" {
    const sink = try Sink.allocate();
    defer sink.destroy();
    var buf: [64]u8 = undefined;
    sink.ingest(craft(&buf, 1, 0, 0)[0 .. abi.payload_header_bytes - 1], 0);
    _ = craft(&buf, 1, 0, 0);
    buf[0] ^= 0xff;
    sink.ingest(&buf, 0);
    sink.ingest(&[_]u8{}, 0);
    try testing.expectEqual(@as(u64, 3), globalValue(sink, .foreign));
    try testing.expectEqual(@as(u64, 3), globalValue(sink, .datagrams));
    try testing.expectEqual(@as(u64, 23 + 64), globalValue(sink, .bytes));
    try testing.expectEqual(@as(u32, 0), sink.streamCount());
    // A bare header (no pattern bytes) is ours.
    sink.ingest(craft(buf[0..abi.payload_header_bytes], 1, 0, 0), 0);
    try testing.expectEqual(@as(u64, 3), globalValue(sink, .foreign));
    try testing.expectEqual(@as(u32, 1), sink.streamCount());
}

test "pattern corruption anywhere in the payload is detected once per datagram" {
    const sink = try Sink.allocate();
    defer sink.destroy();
    var buf: [1500]u8 = undefined;
    for ([_]usize{ abi.payload_header_bytes, 700, 1499 }, 0..) |at, seq| {
        _ = craft(&buf, 3, seq, 0);
        buf[at] +%= 1;
        buf[abi.payload_header_bytes + 1] +%= 1; // Two bad bytes: still one error.
        sink.ingest(&buf, 0);
    }
    sink.ingest(craft(&buf, 3, 3, 0), 0);
    const slot = try slotOf(sink, 3);
    try testing.expectEqual(@as(u64, 3), streamValue(sink, slot, .pattern_errors));
    try testing.expectEqual(@as(u64, 4), streamValue(sink, slot, .received));
}

test "a full stream table counts streams_overflow and keeps the known streams" {
    const sink = try Sink.allocate();
    defer sink.destroy();
    var buf: [32]u8 = undefined;
    for (0..streams_max) |i| sink.ingest(craft(&buf, @intCast(i * 7919), 0, 0), 0);
    try testing.expectEqual(streams_max, sink.streamCount());
    sink.ingest(craft(&buf, 0xdead_beef, 0, 0), 0);
    sink.ingest(craft(&buf, 0xdead_beef, 1, 0), 0);
    try testing.expectEqual(@as(u64, 2), globalValue(sink, .streams_overflow));
    sink.ingest(craft(&buf, 7919 * 5, 1, 0), 0);
    try testing.expectEqual(@as(u64, 1), streamValue(sink, try slotOf(sink, 7919 * 5), .max_seq));
    var used: u32 = 0;
    for (0..streams_max) |slot| used += @intCast(streamValue(sink, @intCast(slot), .used));
    try testing.expectEqual(streams_max, used);
}

test "latency percentiles of a known distribution, within one bucket" {
    const sink = try Sink.allocate();
    defer sink.destroy();
    var buf: [32]u8 = undefined;
    const rx_ns: u64 = 1_700_000_000 * std.time.ns_per_s;
    var sum: u64 = 0;
    for (1..1001) |i| {
        const latency_ns: u64 = i * 1000; // 1 us .. 1 ms, uniform
        sum += latency_ns;
        sink.ingest(craft(&buf, 2, i, rx_ns - latency_ns), rx_ns);
    }
    sink.summarize();
    const slot = try slotOf(sink, 2);
    try testing.expectEqual(@as(u64, 1000), streamValue(sink, slot, .lat_count));
    try testing.expectEqual(sum, streamValue(sink, slot, .lat_sum_ns));
    try testing.expectEqual(@as(u64, 1_000_000), streamValue(sink, slot, .lat_max_ns));
    const cases = [_]struct { StreamCounter, u64 }{
        .{ .lat_p50_ns, 500_000 },
        .{ .lat_p99_ns, 990_000 },
        .{ .lat_p999_ns, 999_000 },
    };
    for (cases) |case| {
        const got = streamValue(sink, slot, case[0]);
        try testing.expect(got >= case[1]);
        try testing.expect(got <= case[1] + case[1] / 16);
        try testing.expect(got <= 1_000_000);
    }
    // A sender clock ahead of ours counts as 0, not as a huge unsigned value.
    sink.ingest(craft(&buf, 4, 0, rx_ns + 5000), rx_ns);
    try testing.expectEqual(@as(u64, 0), streamValue(sink, try slotOf(sink, 4), .lat_max_ns));
    try testing.expectEqual(@as(u64, 1), sink.region.streams[try slotOf(sink, 4)].histogram[0]);
}

test "latency buckets are monotonic and at most 1/16 wide" {
    var prev: u32 = 0;
    var value: u64 = 0;
    while (value < 1 << 20) : (value += 1 + value / 64) {
        const bucket = latencyBucket(value);
        try testing.expect(bucket >= prev);
        prev = bucket;
        const upper = bucketUpperNs(bucket);
        try testing.expect(upper >= value);
        try testing.expect(upper - value <= value / 16);
        if (bucket > 0) try testing.expect(bucketUpperNs(bucket - 1) < value);
    }
    try testing.expectEqual(std.math.maxInt(u64), bucketUpperNs(latencyBucket(std.math.maxInt(u64))));
}

fn sinkConfig(addr: abi.Addr, ifindex: u32) abi.SinkConfig {
    return .{ .addr = addr, .port = 0, .ifindex = ifindex, .rcvbuf_bytes = 4 * 1024 * 1024 };
}

fn genConfig(addr: abi.Addr, port: u16, ifindex: u32) abi.GenConfig {
    return .{
        .addr = addr,
        .port = port,
        .ttl = 1,
        .ifindex = ifindex,
        .size = 200,
        .stream_id = 77,
        .rate_pps = 0,
        .count = 0,
        .duration_ns = 0,
    };
}

/// Interleaves generator and sink on one thread until the generator is done and the sink
/// drained (or the time limit passed): no thread, and the sink's buffer never overflows
/// because the generator sends one batch per step.
fn pump(g: *gen.Gen, sink: *Sink, gen_budget_ms: u32, limit_ms: u64) !void {
    const deadline_ns = sys.monotonicNs() + limit_ms * std.time.ns_per_ms;
    var done = false;
    while (!done and sys.monotonicNs() < deadline_ns) {
        done = try g.run(gen_budget_ms);
        while (try sink.run(0) > 0) {}
    }
    // Loopback delivers synchronously, but give stragglers a moment.
    _ = try sink.run(20);
}

fn genCounter(g: *gen.Gen, counter: gen.Counter) u64 {
    return g.counters()[@intFromEnum(counter)];
}

test "gen to sink over loopback: 1000 datagrams arrive once, in order, intact" {
    const sink = try Sink.create(&sinkConfig(net.v4Addr(127, 0, 0, 1), 0));
    defer sink.destroy();
    try testing.expect(sink.port != 0);
    var cfg = genConfig(net.v4Addr(127, 0, 0, 1), sink.port, 0);
    cfg.count = 1000;
    const g = try gen.Gen.create(&cfg);
    defer g.destroy();
    try pump(g, sink, 0, 5000);

    try testing.expectEqual(@as(u64, 1000), genCounter(g, .sent));
    try testing.expectEqual(@as(u64, 1000), genCounter(g, .seq_next));
    try testing.expectEqual(@as(u64, 200_000), genCounter(g, .bytes));
    try testing.expectEqual(@as(u64, 0), genCounter(g, .send_errors));
    try testing.expect(try g.run(0)); // Stays done.
    try testing.expectEqual(@as(u32, 1), sink.streamCount());
    const slot = try slotOf(sink, 77);
    try testing.expectEqual(@as(u64, 1000), streamValue(sink, slot, .received));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, slot, .duplicates));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, slot, .reordered));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, slot, .late));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, slot, .pattern_errors));
    try testing.expectEqual(@as(u64, 999), streamValue(sink, slot, .max_seq));
    try testing.expectEqual(@as(u64, 0), globalValue(sink, .foreign));
    try testing.expect(globalValue(sink, .first_rx_ns) > 0 and globalValue(sink, .last_rx_ns) >= globalValue(sink, .first_rx_ns));
    sink.summarize();
    try testing.expect(streamValue(sink, slot, .lat_p50_ns) <= streamValue(sink, slot, .lat_p999_ns));
    try testing.expect(streamValue(sink, slot, .lat_p999_ns) <= streamValue(sink, slot, .lat_max_ns));
    try testing.expect(streamValue(sink, slot, .lat_max_ns) < std.time.ns_per_s);
}

test "paced gen: 2000 pps for 0.25 s sends about 500, spread over about 0.25 s" {
    const sink = try Sink.create(&sinkConfig(net.v4Addr(127, 0, 0, 1), 0));
    defer sink.destroy();
    var cfg = genConfig(net.v4Addr(127, 0, 0, 1), sink.port, 0);
    cfg.rate_pps = 2000;
    cfg.duration_ns = 250 * std.time.ns_per_ms;
    const g = try gen.Gen.create(&cfg);
    defer g.destroy();
    try pump(g, sink, 5, 3000);

    const sent = genCounter(g, .sent);
    try testing.expect(sent >= 450 and sent <= 550);
    const spread_ns = genCounter(g, .last_ns) - genCounter(g, .started_ns);
    const expected_ns = (sent - 1) * std.time.ns_per_s / cfg.rate_pps;
    try testing.expect(spread_ns >= expected_ns - expected_ns / 10);
    try testing.expect(spread_ns <= expected_ns + expected_ns / 10);
    try testing.expectEqual(sent, streamValue(sink, try slotOf(sink, 77), .received));
    try testing.expectEqual(sent - 1, streamValue(sink, try slotOf(sink, 77), .max_seq));
}

test "gen to sink over IPv4 multicast on lo" {
    // Group traffic on lo needs no root: the sink joins on lo (ifindex 1 in every network
    // namespace) and the generator sends out of lo, which hands the datagram straight back.
    const lo_ifindex: u32 = 1;
    const group = net.v4Addr(239, 255, 77, 1);
    const sink = Sink.create(&sinkConfig(group, lo_ifindex)) catch |err| switch (err) {
        error.NODEV, error.ADDRNOTAVAIL, error.NOBUFS, error.ADDRINUSE => return error.SkipZigTest,
        else => return err,
    };
    defer sink.destroy();
    var cfg = genConfig(group, sink.port, lo_ifindex);
    cfg.count = 300;
    const g = try gen.Gen.create(&cfg);
    defer g.destroy();
    try pump(g, sink, 0, 2000);

    try testing.expectEqual(@as(u64, 300), genCounter(g, .sent));
    const slot = try slotOf(sink, 77);
    try testing.expectEqual(@as(u64, 300), streamValue(sink, slot, .received));
    try testing.expectEqual(@as(u64, 299), streamValue(sink, slot, .max_seq));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, slot, .duplicates));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, slot, .pattern_errors));
}

test "raw mode refuses what it cannot build: unicast, no interface; an unknown mode is refused" {
    var cfg = genConfig(net.v4Addr(127, 0, 0, 1), 9, 1);
    cfg.mode = abi.gen_mode_raw;
    try testing.expectError(error.INVAL, gen.Gen.create(&cfg));
    cfg = genConfig(net.v4Addr(239, 1, 2, 3), 9, 0);
    cfg.mode = abi.gen_mode_raw;
    try testing.expectError(error.INVAL, gen.Gen.create(&cfg));
    cfg.ifindex = 1;
    cfg.mode = 7;
    try testing.expectError(error.INVAL, gen.Gen.create(&cfg));
}

test "gen to sink over IPv6 loopback" {
    var lo6: abi.Addr = @splat(0);
    lo6[15] = 1;
    const sink = Sink.create(&sinkConfig(lo6, 0)) catch |err| switch (err) {
        error.AFNOSUPPORT, error.ADDRNOTAVAIL => return error.SkipZigTest,
        else => return err,
    };
    defer sink.destroy();
    var cfg = genConfig(lo6, sink.port, 0);
    cfg.count = 100;
    const g = try gen.Gen.create(&cfg);
    defer g.destroy();
    try pump(g, sink, 0, 2000);
    try testing.expectEqual(@as(u64, 100), streamValue(sink, try slotOf(sink, 77), .received));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, try slotOf(sink, 77), .pattern_errors));
}

test "a GRO message is split at gso_size: three datagrams, the last one short, each checked" {
    const sink = try Sink.allocate();
    defer sink.destroy();
    const gso_size = 200;
    var buf: [2 * gso_size + 120]u8 = undefined;
    _ = craft(buf[0..gso_size], 6, 0, 1000);
    _ = craft(buf[gso_size .. 2 * gso_size], 6, 1, 1000);
    _ = craft(buf[2 * gso_size ..], 6, 2, 1000);
    try testing.expectEqual(@as(u64, 3), sink.ingestMessage(&buf, gso_size, 5000));
    const slot = try slotOf(sink, 6);
    try testing.expectEqual(@as(u64, 3), streamValue(sink, slot, .received));
    try testing.expectEqual(@as(u64, 2), streamValue(sink, slot, .max_seq));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, slot, .duplicates));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, slot, .reordered));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, slot, .pattern_errors));
    try testing.expectEqual(@as(u64, buf.len), streamValue(sink, slot, .bytes));
    // Every piece has the batch's receive time: three latencies of 4000 ns.
    try testing.expectEqual(@as(u64, 3), streamValue(sink, slot, .lat_count));
    try testing.expectEqual(@as(u64, 3 * 4000), streamValue(sink, slot, .lat_sum_ns));
    try testing.expectEqual(@as(u64, 3), globalValue(sink, .datagrams));
    try testing.expectEqual(@as(u64, 1), globalValue(sink, .gro_batches));
    try testing.expectEqual(@as(u64, 3), globalValue(sink, .gro_datagrams));

    // Without a gso_size the same buffer is one datagram: seq 0 with a pattern error (the
    // second header sits where the pattern should be).
    try testing.expectEqual(@as(u64, 1), sink.ingestMessage(&buf, 0, 5000));
    try testing.expectEqual(@as(u64, 1), streamValue(sink, slot, .duplicates));
    try testing.expectEqual(@as(u64, 1), streamValue(sink, slot, .pattern_errors));
    try testing.expectEqual(@as(u64, 1), globalValue(sink, .gro_batches));

    // A gso_size of exactly the buffer length is one piece; a larger one too.
    var one: [64]u8 = undefined;
    try testing.expectEqual(@as(u64, 1), sink.ingestMessage(craft(&one, 6, 3, 0), 64, 0));
    try testing.expectEqual(@as(u64, 1), sink.ingestMessage(craft(&one, 6, 4, 0), 1000, 0));
    try testing.expectEqual(@as(u64, 4), streamValue(sink, slot, .max_seq));
    try testing.expectEqual(@as(u64, 1), streamValue(sink, slot, .pattern_errors));
}

fn putTestCmsg(buf: []u8, level: i32, kind: i32, data: []const u8) usize {
    const header = @sizeOf(linux.cmsghdr);
    const head: linux.cmsghdr = .{ .len = header + data.len, .level = level, .type = kind };
    @memcpy(buf[0..header], std.mem.asBytes(&head));
    @memcpy(buf[header..][0..data.len], data);
    return cmsgSpace(data.len);
}

test "UDP_GRO's gso_size is found among control messages, and only when whole" {
    var control: [control_bytes]u8 align(@alignOf(linux.cmsghdr)) = @splat(0);
    const ttl: i32 = 64;
    const size: i32 = 1316;
    var at = putTestCmsg(&control, linux.IPPROTO.IP, linux.IP.TTL, std.mem.asBytes(&ttl));
    at += putTestCmsg(control[at..], sol_udp, linux.UDP.GRO, std.mem.asBytes(&size));
    try testing.expectEqual(@as(u32, 1316), groSizeIn(control[0..at]));
    // Only the first message: no UDP_GRO.
    try testing.expectEqual(@as(u32, 0), groSizeIn(control[0..cmsgSpace(4)]));
    // Cut inside the UDP_GRO message (as with MSG_CTRUNC): not read past the end.
    try testing.expectEqual(@as(u32, 0), groSizeIn(control[0 .. at - 6]));
    try testing.expectEqual(@as(u32, 0), groSizeIn(control[0..0]));
    // A nonsensical length ends the walk.
    var bad: [control_bytes]u8 align(@alignOf(linux.cmsghdr)) = @splat(0);
    _ = putTestCmsg(&bad, sol_udp, linux.UDP.GRO, std.mem.asBytes(&size));
    @as(*align(1) usize, @ptrCast(&bad)).* = 2;
    try testing.expectEqual(@as(u32, 0), groSizeIn(&bad));
}

/// Sends `count` generator datagrams of `size` bytes (seq 0..count-1, stream 88) to
/// 127.0.0.1:port as ONE UDP GSO send of gso_size = size.
fn sendGsoBatch(port: u16, count: usize, size: usize) !void {
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(fd);
    try sys.setsockoptInt(fd, sol_udp, linux.UDP.SEGMENT, @intCast(size));
    const sa = net.SockAddr.init(&net.v4Addr(127, 0, 0, 1), port, 0);
    _ = try sys.call("connect", linux.connect(fd, &sa.any, sa.len()));
    var buf: [16 * 1024]u8 = undefined;
    assert(count * size <= buf.len);
    for (0..count) |i| _ = craft(buf[i * size ..][0..size], 88, i, sys.realtimeNs());
    const sent = try sys.call("send", linux.sendto(fd, &buf, count * size, 0, null, 0));
    try testing.expectEqual(count * size, sent);
}

test "a UDP GSO send over loopback: with GRO one buffer split into every datagram, without GRO the kernel's datagrams" {
    for ([_]u8{ 1, 0 }) |gro| {
        var cfg = sinkConfig(net.v4Addr(127, 0, 0, 1), 0);
        cfg.gro = gro;
        const sink = Sink.create(&cfg) catch |err| switch (err) {
            error.NOPROTOOPT => return error.SkipZigTest, // Kernels before 5.0: no UDP_GRO.
            else => return err,
        };
        defer sink.destroy();
        sendGsoBatch(sink.port, 9, 1000) catch |err| switch (err) {
            error.NOPROTOOPT, error.INVAL => return error.SkipZigTest, // No UDP_SEGMENT.
            else => return err,
        };
        var received: u64 = 0;
        const deadline_ns = sys.monotonicNs() + 2 * std.time.ns_per_s;
        while (received < 9 and sys.monotonicNs() < deadline_ns) received += try sink.run(50);
        try testing.expectEqual(@as(u64, 9), received);
        const slot = try slotOf(sink, 88);
        try testing.expectEqual(@as(u64, 9), streamValue(sink, slot, .received));
        try testing.expectEqual(@as(u64, 8), streamValue(sink, slot, .max_seq));
        try testing.expectEqual(@as(u64, 0), streamValue(sink, slot, .duplicates));
        try testing.expectEqual(@as(u64, 0), streamValue(sink, slot, .pattern_errors));
        try testing.expectEqual(@as(u64, 9), globalValue(sink, .datagrams));
        try testing.expectEqual(@as(u64, 0), globalValue(sink, .control_truncated));
        if (gro == 1) {
            try testing.expect(globalValue(sink, .gro_batches) >= 1);
            try testing.expectEqual(@as(u64, 9), globalValue(sink, .gro_datagrams));
        } else {
            try testing.expectEqual(@as(u64, 0), globalValue(sink, .gro_batches));
        }
    }
}

test "a generator restarted with the same stream starts a new run; reordering and late datagrams do not" {
    const sink = try Sink.allocate();
    defer sink.destroy();
    var buf: [64]u8 = undefined;
    // Run 0 starts at seq 100 (the sink joined late): nothing before it is lost.
    for (100..200) |seq| sink.ingest(craft(&buf, 5, seq, 1000 + seq), 9000);
    // Reordered (older stamp, lower seq) and a duplicate: still run 0.
    sink.ingest(craft(&buf, 5, 99, 1099), 9000);
    sink.ingest(craft(&buf, 5, 150, 1150), 9000);
    // The generator restarts: seq 0 again, stamped later than seq 199.
    for (0..50) |seq| sink.ingest(craft(&buf, 5, seq, 5000 + seq), 9000);
    try testing.expectEqual(@as(u32, 2), sink.streamCount());
    var runs: [2]u32 = undefined;
    var n: usize = 0;
    for (0..streams_max) |slot| {
        const s = sink.stream(@intCast(slot));
        if (s[@intFromEnum(StreamCounter.used)] == 0) continue;
        runs[s[@intFromEnum(StreamCounter.run)]] = @intCast(slot);
        n += 1;
    }
    try testing.expectEqual(@as(usize, 2), n);
    try testing.expectEqual(used_retired, streamValue(sink, runs[0], .used));
    try testing.expectEqual(@as(u64, 99), streamValue(sink, runs[0], .min_seq));
    try testing.expectEqual(@as(u64, 199), streamValue(sink, runs[0], .max_seq));
    try testing.expectEqual(@as(u64, 102), streamValue(sink, runs[0], .received));
    try testing.expectEqual(@as(u64, 1), streamValue(sink, runs[0], .duplicates));
    try testing.expectEqual(@as(u64, 1), streamValue(sink, runs[0], .reordered));
    try testing.expectEqual(used_live, streamValue(sink, runs[1], .used));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, runs[1], .min_seq));
    try testing.expectEqual(@as(u64, 49), streamValue(sink, runs[1], .max_seq));
    try testing.expectEqual(@as(u64, 50), streamValue(sink, runs[1], .received));
    try testing.expectEqual(@as(u64, 0), streamValue(sink, runs[1], .duplicates));
    // Later datagrams go to the live run; a stamp ahead of the receive time is counted.
    sink.ingest(craft(&buf, 5, 50, 9500), 9000);
    try testing.expectEqual(@as(u64, 51), streamValue(sink, runs[1], .received));
    try testing.expectEqual(@as(u64, 1), globalValue(sink, .latency_clamped));
}

test "datagrams the socket drops (buffer full) are counted in socket_drops" {
    var cfg = sinkConfig(net.v4Addr(127, 0, 0, 1), 0);
    cfg.rcvbuf_bytes = 4096; // The kernel's minimum: a few datagrams fit.
    const sink = try Sink.create(&cfg);
    defer sink.destroy();
    try testing.expect(globalValue(sink, .rcvbuf_bytes) > 0);
    try testing.expect(globalValue(sink, .rcvbuf_bytes) < 64 * 1024);
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(fd);
    const sa = net.SockAddr.init(&net.v4Addr(127, 0, 0, 1), sink.port, 0);
    var buf: [1000]u8 = undefined;
    const sent: u64 = 200;
    for (0..sent) |seq| {
        _ = try sys.call("sendto", linux.sendto(fd, craft(&buf, 3, seq, sys.realtimeNs()).ptr, buf.len, 0, &sa.any, sa.len()));
    }
    var received: u64 = 0;
    while (true) {
        const n = try sink.run(20);
        if (n == 0) break;
        received += n;
    }
    sink.summarize();
    const drops = globalValue(sink, .socket_drops);
    try testing.expect(drops > 0);
    try testing.expectEqual(sent, received + drops);
}
