//! One worker's dataplane: RX ring -> parse -> lookup -> batched egress, in a loop that runs
//! for a time budget and returns, so the worker's control code gets its turn. Nothing on the
//! packet path allocates, logs or crosses the FFI boundary.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("../sys.zig");
const abi = @import("../abi.zig");
const constants = @import("../constants.zig");
const ring_mod = @import("../ring.zig");
const egress_mod = @import("egress.zig");
const join_mod = @import("join.zig");
const join6_mod = @import("join6.zig");
const parse_ipv6 = @import("parse_ipv6.zig");
const net = @import("../net.zig");
const parse = @import("parse.zig");
const table_mod = @import("table.zig");
const stats_mod = @import("stats.zig");
const loop_guard_mod = @import("loop_guard.zig");
const shm = @import("../shm.zig");
const trace_mod = @import("trace.zig");

pub const stats_bytes: usize = stats_mod.total_words * @sizeOf(u64);
/// The shared region: counters, then (page-aligned) the trace ring (trace.zig).
pub const trace_offset: usize = std.mem.alignForward(usize, stats_bytes, 4096);
pub const shared_bytes: usize = trace_offset + trace_mod.region_bytes;

pub const RunResult = enum(i32) { budget = 0, woken = 1 };

const runs_per_turn_max = constants.runs_per_turn_max;
const join_retry_ns = constants.join_retry_ns;
const runs_per_flush_max = constants.runs_per_flush_max;

/// The coalescing window for a table with `output_count` outputs (constants.zig: a flush costs
/// a send message per output it touches, so more outputs wait longer for bigger batches).
pub fn coalesceWindowNs(output_count: u32) u64 {
    const scaled = @as(u64, output_count) * constants.coalesce_window_per_output_ns;
    return std.math.clamp(scaled, constants.coalesce_window_ns, constants.coalesce_window_max_ns);
}

pub const Dataplane = struct {
    cfg: abi.DpConfig,
    ring: ring_mod.Ring,
    egress: egress_mod.Egress,
    joins: join_mod.Joins,
    /// MLD joins of the IPv6 input groups.
    joins6: join6_mod.Joins6,
    /// Active table and the one the next apply builds into (then they swap).
    tables: [2]table_mod.Table,
    active: u1,
    /// The counters: in shared memory from the supervisor, or in `private_stats`.
    stats_words: *[stats_mod.total_words]u64,
    stats_region: ?[]align(4096) u8,
    private_stats: [stats_mod.total_words]u64 align(64),
    /// Scratch for carrying counters across a table change.
    rule_scratch: [constants.rules_max * stats_mod.rule_words]u64,
    output_scratch: [constants.outputs_max * stats_mod.output_words]u64,
    /// What each rule of the active table needs on its input (join or port), and the errno of
    /// each failure (0: satisfied). Failures are retried every join_retry_ns.
    wanted_inputs: [constants.rules_max]join_mod.Want,
    input_errnos: [constants.rules_max]u16,
    wanted_count: u32,
    join_failures: u32,
    last_join_ns: u64,
    /// When the loop last woke from poll or a coalescing sleep, and the active table's
    /// coalescing window (coalesceWindowNs).
    last_wake_ns: u64,
    window_ns: u64,
    loop_guard: loop_guard_mod.LoopGuard,
    /// Storm cap per rule (max_pps): time credit in ns, refilled by elapsed time up to the
    /// burst, spent 1e9 / max_pps per datagram; and when it was last refilled.
    cap_credit_ns: [constants.rules_max]u64,
    cap_last_ns: [constants.rules_max]u64,
    /// CLOCK_MONOTONIC read once per run of slots: the loop guard's and the cap's clock.
    run_ns: u64,
    /// Packet tracing, in the shared region (none with private counters).
    /// Allocated apart so the hot struct keeps its layout; null with private counters.
    trace: ?*trace_mod.Trace,

    pub fn create(cfg: *const abi.DpConfig) sys.Error!*Dataplane {
        if (cfg.ifindex == 0) return error.INVAL;
        const self = try allocUntouched();
        errdefer freeUntouched(self);
        self.cfg = cfg.*;
        self.ring = try ring_mod.Ring.attach(cfg.packet_fd, cfg.geometry);
        // A failure below (counter memory that cannot be mapped) must not leave the ring
        // mapped: the kernel then refuses to free it (a position made blank again) until exit.
        errdefer self.ring.deinit();
        self.egress.init();
        self.joins.init(cfg.ifindex);
        self.joins6.init(cfg.ifindex);
        self.tables[0].clear();
        self.tables[1].clear();
        self.active = 0;
        self.last_wake_ns = 0;
        self.window_ns = coalesceWindowNs(0);
        // The loop guard's 384 KiB are fresh zero pages (allocUntouched), which is its cleared
        // state (every entry zero): left untouched, they stay out of the worker's memory until
        // datagrams use them (a worker holds one loop guard per ring).
        std.debug.assert(self.loop_guard.entries[0].signature == 0 and self.loop_guard.entries[0].last_ns == 0);
        @memset(&self.cap_credit_ns, 0);
        @memset(&self.cap_last_ns, 0);
        self.run_ns = 0;
        self.wanted_count = 0;
        self.join_failures = 0;
        self.last_join_ns = 0;
        self.stats_region = null;
        self.stats_words = &self.private_stats;
        self.trace = null;
        if (cfg.stats_fd >= 0) {
            const t = std.heap.page_allocator.create(trace_mod.Trace) catch return error.NOMEM;
            errdefer std.heap.page_allocator.destroy(t);
            const region = try shm.map(cfg.stats_fd, shared_bytes);
            self.stats_region = region;
            self.stats_words = @ptrCast(@alignCast(region.ptr));
            sys.close(cfg.stats_fd); // the mapping keeps the memory
            t.init(@alignCast(region[trace_offset..]), cfg.ifindex);
            self.trace = t;
        }
        _ = stats_mod.Stats.init(self.stats_words);
        return self;
    }

    pub fn destroy(self: *Dataplane) void {
        self.destroyKeeping(false);
    }

    /// `keep_socket`: the packet socket stays open (its position is made blank again by the
    /// supervisor and reused); only the ring is unmapped.
    pub fn destroyKeeping(self: *Dataplane, keep_socket: bool) void {
        self.egress.deinit();
        self.joins.deinit();
        self.joins6.deinit();
        self.ring.deinit();
        if (self.stats_region) |region| shm.unmap(region);
        if (self.trace) |t| std.heap.page_allocator.destroy(t);
        if (!keep_socket) sys.close(self.cfg.packet_fd);
        freeUntouched(self);
    }

    /// The struct is about 8.6 MB, mostly per-output send batches (outputs_max x batch) that a
    /// table with few outputs never touches. `Allocator.create` fills the whole of it with 0xAA
    /// in safe builds, which made all of it resident in every worker; fresh pages from the page
    /// allocator are zero and stay untouched (not resident) until used. Every field is written
    /// before it is read (create sets the scalars, the arrays are filled as outputs are set up).
    fn allocUntouched() sys.Error!*Dataplane {
        const alignment = comptime std.mem.Alignment.of(Dataplane);
        const bytes = std.heap.page_allocator.rawAlloc(@sizeOf(Dataplane), alignment, @returnAddress()) orelse return error.NOMEM;
        return @ptrCast(@alignCast(bytes));
    }

    fn freeUntouched(self: *Dataplane) void {
        const alignment = comptime std.mem.Alignment.of(Dataplane);
        std.heap.page_allocator.rawFree(@as([*]u8, @ptrCast(self))[0..@sizeOf(Dataplane)], alignment, @returnAddress());
    }

    pub fn stats(self: *Dataplane) stats_mod.Stats {
        return .{ .words = self.stats_words };
    }

    /// Replaces the rule table with a complete new one. All or nothing: a refused table leaves
    /// the current one forwarding. Counters and egress sockets follow rule and output ids.
    pub fn apply(self: *Dataplane, buf: []const u8) sys.Error!void {
        const next = &self.tables[self.active +% 1];
        try next.build(buf);
        const current = &self.tables[self.active];
        const s = self.stats();

        @memcpy(&self.rule_scratch, s.rules());
        @memcpy(&self.output_scratch, s.outputs());
        @memset(s.rules(), 0);
        @memset(s.outputs(), 0);
        for (next.rules[0..next.rule_count], 0..) |rule, i| {
            s.rule(@intCast(i), .id).* = rule.id;
            for (current.rules[0..current.rule_count], 0..) |old, j| {
                if (old.id != rule.id) continue;
                const from = self.rule_scratch[j * stats_mod.rule_words ..][0..stats_mod.rule_words];
                @memcpy(s.rules()[i * stats_mod.rule_words ..][0..stats_mod.rule_words], from);
                break;
            }
        }
        for (next.outputs[0..next.output_count], 0..) |out, i| {
            s.output(@intCast(i), .id).* = out.id;
            for (current.outputs[0..current.output_count], 0..) |old, j| {
                if (old.id != out.id) continue;
                const from = self.output_scratch[j * stats_mod.output_words ..][0..stats_mod.output_words];
                @memcpy(s.outputs()[i * stats_mod.output_words ..][0..stats_mod.output_words], from);
                break;
            }
        }

        self.egress.reconcile(next.outputs[0..next.output_count], next.rules[0..next.rule_count]);
        for (next.rules[0..next.rule_count], 0..) |rule, i| {
            const specific = rule.flags & abi.rule_flag_source_filter != 0;
            self.wanted_inputs[i] = .{ .group = rule.group, .source = if (specific) rule.source else @splat(0), .port = rule.port };
        }
        self.wanted_count = next.rule_count;

        self.active +%= 1;
        self.window_ns = coalesceWindowNs(next.output_count);
        self.reconcileInputs();
        // Rule indices changed: every cap starts with a full burst.
        @memset(&self.cap_credit_ns, 0);
        @memset(&self.cap_last_ns, 0);
        s.header(.generation).* = next.generation;
        s.header(.rule_count).* = next.rule_count;
        s.header(.output_count).* = next.output_count;
    }

    /// Joins and port holds for the active table; each rule's errno lands in its counters.
    fn reconcileInputs(self: *Dataplane) void {
        const s = self.stats();
        const n = self.wanted_count;
        self.join_failures = self.joins.reconcile(self.wanted_inputs[0..n], self.input_errnos[0..n]);
        // IPv6 groups: MLD joins (join6.zig), their errnos in the same per-rule words.
        self.join_failures += self.joins6.reconcile(self.tables[self.active].rules[0..n], self.input_errnos[0..n]);
        s.worker(.join_errors).* += self.join_failures;
        for (self.input_errnos[0..n], 0..) |e, i| s.rule(@intCast(i), .input_errno).* = e;
        self.last_join_ns = sys.monotonicNs();
    }

    /// Forwards until `budget_ms` elapses or the wake fd becomes readable.
    pub fn run(self: *Dataplane, budget_ms: u32) sys.Error!RunResult {
        const s = self.stats();
        s.worker(.run_calls).* += 1;
        // A failed join (a membership limit, an interface without multicast) is retried once
        // per join_retry_ns: raising the sysctl is enough, nothing tells us it happened.
        if (self.join_failures > 0 and sys.monotonicNs() -% self.last_join_ns >= join_retry_ns) self.reconcileInputs();
        const deadline_ns = sys.monotonicNs() + @as(u64, budget_ms) * std.time.ns_per_ms;
        defer self.collectKernelStatistics();
        // Bounded by the deadline: every turn either processes runs of slots, sleeps, or polls
        // with a timeout that ends at the deadline.
        while (true) {
            const runs = self.drainTurn(s);
            const now_ns = sys.monotonicNs();
            if (now_ns >= deadline_ns) return .budget;
            if (runs == runs_per_turn_max) {
                if (self.wakePending()) return .woken;
                continue;
            }
            if (runs > 0) switch (self.coalesce(s, now_ns)) {
                .slept => continue,
                .woken => return .woken,
                .not_due => {},
            };
            if (try self.waitForFrames(s, now_ns, deadline_ns)) |result| return result;
        }
    }

    /// Up to runs_per_turn_max runs of slots (a block's worth each), in groups of up to
    /// runs_per_flush_max; returns how many. Stops early when the ring runs dry.
    fn drainTurn(self: *Dataplane, s: stats_mod.Stats) u32 {
        var runs: u32 = 0;
        while (runs < runs_per_turn_max) {
            const count = self.drainGroup(s);
            std.debug.assert(count <= runs_per_flush_max);
            runs += count;
            if (count < runs_per_flush_max) break;
        }
        std.debug.assert(runs <= runs_per_turn_max);
        return runs;
    }

    /// One group: the frames of up to runs_per_flush_max runs of slots (a block's worth each)
    /// are queued (bigger send batches: one UDP GSO buffer carries up to ~48 datagrams), every
    /// touched output is flushed, then the slots go back to the kernel. Returns how many runs.
    fn drainGroup(self: *Dataplane, s: stats_mod.Stats) u32 {
        // Payloads stay in their slots until the flush.
        var held: [runs_per_flush_max]ring_mod.Run = undefined;
        var count: u32 = 0;
        // Tracing costs this one branch per group when off.
        const traced = if (self.trace) |t| t.armed() else false;
        if (traced) self.trace.?.begin();
        while (count < runs_per_flush_max) : (count += 1) {
            const taken = self.ring.peekRun() orelse break;
            std.debug.assert(taken.first < self.ring.geo.frame_count);
            std.debug.assert(taken.count > 0 and taken.first + taken.count <= self.ring.geo.frame_count);
            if (traced) self.processRun(true, &taken) else self.processRun(false, &taken);
            held[count] = taken;
        }
        if (count == 0) return 0;
        self.egress.flush(s);
        if (traced) self.trace.?.publish(s);
        // sendmsg copied the payloads synchronously: the slots and the copy area can be reused.
        for (held[0..count]) |taken| self.ring.release(taken);
        self.ring.copyReset();
        return count;
    }

    /// A flush within a group, so the ring's copy area can be reused: traced records are
    /// published with their results, and a new batch of them begins.
    fn flushEarly(self: *Dataplane, comptime traced: bool, s: stats_mod.Stats) void {
        self.egress.flush(s);
        if (traced) {
            self.trace.?.publish(s);
            self.trace.?.begin();
        }
        self.ring.copyReset();
    }

    /// Under load the kernel would wake us for every frame: sleep out the rest of a short
    /// window instead, so one wake-up (a context switch) serves many frames and sends go out in
    /// bigger batches. A quiet stream (frames further apart than the window) is not delayed:
    /// its frame wakes the poll and is relayed at once. A control message ends the sleep: a
    /// stream that brings frames in every window never lets the loop reach its poll, and the
    /// supervisor's ping (1 s timeout) would otherwise wait for the run's 1 s budget.
    fn coalesce(self: *Dataplane, s: stats_mod.Stats, now_ns: u64) Coalesced {
        if (now_ns -% self.last_wake_ns >= self.window_ns) return .not_due;
        const woken = sleepOrWake(self.cfg.wake_fd, self.window_ns - (now_ns -% self.last_wake_ns));
        self.last_wake_ns = sys.monotonicNs();
        if (woken) {
            s.worker(.wakeups).* += 1;
            return .woken;
        }
        s.worker(.coalesced).* += 1;
        return .slept;
    }

    /// The ring ran dry: poll the ring and the wake descriptor until the deadline. Returns the
    /// run's result when it must end (woken, or the ring in error), null to go on draining.
    fn waitForFrames(self: *Dataplane, s: stats_mod.Stats, now_ns: u64, deadline_ns: u64) sys.Error!?RunResult {
        std.debug.assert(now_ns < deadline_ns);
        const remaining_ms: i32 = @intCast(@max(1, (deadline_ns - now_ns) / std.time.ns_per_ms));
        var fds = [_]linux.pollfd{
            .{ .fd = self.ring.fd, .events = linux.POLL.IN | linux.POLL.ERR },
            .{ .fd = self.cfg.wake_fd, .events = linux.POLL.IN },
        };
        const nfds: usize = if (self.cfg.wake_fd >= 0) 2 else 1;
        s.worker(.polls).* += 1;
        const rc = linux.poll(&fds, nfds, remaining_ms);
        self.last_wake_ns = sys.monotonicNs();
        switch (linux.errno(rc)) {
            .SUCCESS => {},
            .INTR => return null,
            // Our own two descriptors and a two-entry array: these can only be bugs.
            .BADF, .INVAL => unreachable,
            else => |e| return sys.fromErrnoOf("poll", e),
        }
        std.debug.assert(rc <= nfds);
        if (nfds == 2 and fds[1].revents != 0) {
            s.worker(.wakeups).* += 1;
            return .woken;
        }
        if (fds[0].revents & linux.POLL.ERR != 0) return self.ringError(s, deadline_ns);
        return null;
    }

    /// The interface went down or away (ENETDOWN). Reading SO_ERROR clears it; the supervisor
    /// stops or keeps this worker as the interface's fate requires.
    fn ringError(self: *Dataplane, s: stats_mod.Stats, deadline_ns: u64) RunResult {
        self.clearRingError(s);
        if (self.cfg.wake_fd < 0) return .budget;
        // Do not spin on a socket that may stay in error: wait for the control side.
        var wake = [_]linux.pollfd{.{ .fd = self.cfg.wake_fd, .events = linux.POLL.IN }};
        const left_ns = deadline_ns -| sys.monotonicNs();
        const woke = linux.poll(&wake, 1, @intCast(left_ns / std.time.ns_per_ms));
        if (linux.errno(woke) == .SUCCESS and woke > 0) return .woken;
        return .budget;
    }

    /// Reads (and so clears) the socket's pending error, and counts it.
    fn clearRingError(self: *Dataplane, s: stats_mod.Stats) void {
        var err: c_int = 0;
        var len: linux.socklen_t = @sizeOf(c_int);
        _ = linux.getsockopt(self.ring.fd, linux.SOL.SOCKET, linux.SO.ERROR, std.mem.asBytes(&err), &len);
        s.worker(.ring_errors).* += 1;
    }

    fn wakePending(self: *Dataplane) bool {
        if (self.cfg.wake_fd < 0) return false;
        var fds = [_]linux.pollfd{.{ .fd = self.cfg.wake_fd, .events = linux.POLL.IN }};
        const rc = linux.poll(&fds, 1, 0);
        return linux.errno(rc) == .SUCCESS and rc > 0;
    }

    fn processRun(self: *Dataplane, comptime traced: bool, slots: *const ring_mod.Run) void {
        const s = self.stats();
        const table = &self.tables[self.active];
        s.worker(.rx_blocks).* += 1;
        // One clock read per run of slots (vDSO, no syscall), not per datagram.
        self.run_ns = sys.monotonicNs();
        var frames = slots.frames();
        // The matched frame waiting for its relay (untraced only, see below).
        var pending: ?Matched = null;
        while (true) {
            // A super-frame read from the socket's queue waits in the ring's copy area until
            // the flush: with the area nearly full, flush before the next one is read (the
            // pending frame queued first: its payload may be in that area).
            if (self.ring.copyRoomLow()) {
                if (pending) |*previous| self.relayFrame(traced, s, previous, null);
                pending = null;
                self.flushEarly(traced, s);
            }
            const frame = frames.next() orelse break;
            if (traced) {
                // Each record's time is its frame's receive time (the untraced copy skips this).
                const stamp = slots.stampOfLast(&frames);
                self.trace.?.frameStamp(stamp.time_ns, stamp.vlan_tpid);
            }
            s.worker(.rx_frames).* += 1;
            s.worker(.rx_bytes).* += frame.wire_len;
            if (frame.data.len < frame.wire_len) s.worker(.rx_truncated).* += 1;
            // A frame for another host's MAC (promiscuous mode, a hub, a bridge port): a router
            // never forwards it.
            if (frame.pkt_type == linux.PACKET.OTHERHOST) {
                s.worker(.otherhost).* += 1;
                continue;
            }
            const packet = switch (parse.parseWith(frame.data, .{
                .verify_udp_checksum = frame.checksum == .unverified,
                .metadata_tags = @intFromBool(frame.vlan_tci != null),
            })) {
                .ok => |p| p,
                .drop => |reason| {
                    s.drop(reason).* += 1;
                    if (traced) self.trace.?.dropped(frame.data, frame.wire_len, frame.vlan_tci, reason);
                    continue;
                },
            };
            // The loop guard's slot of the first datagram is fetched while the lookup runs.
            const first_bytes = if (frame.gso_size != 0 and packet.payload_len > frame.gso_size) frame.gso_size else packet.payload_len;
            const first_signature = loop_guard_mod.signatureOf(frame.data[packet.payload_offset..][0..first_bytes]);
            self.loop_guard.prefetch(first_signature);
            if (martianSource(&packet.src)) {
                s.worker(.martian_source).* += 1;
                if (traced) self.trace.?.unmatched(frame.data, frame.wire_len, frame.vlan_tci, &packet, .martian);
                continue;
            }
            // The VID from metadata or the frame; VID 0 (a priority tag) is untagged.
            const vlan_id: u16 = if (frame.vlan_tci) |tci| tci & 0x0fff else packet.vlan_id;
            const index = table.lookup(&packet.dst, packet.dst_port, vlan_id, &packet.src) orelse {
                if (table.keyHead(&packet.dst, packet.dst_port, vlan_id)) |head| {
                    s.worker(.source_mismatch).* += 1;
                    s.rule(head, .source_mismatch).* += 1;
                    if (traced) self.trace.?.unmatched(frame.data, frame.wire_len, frame.vlan_tci, &packet, .source_mismatch);
                } else if (vlan_id != 0 and table.keyExists(&packet.dst, packet.dst_port, 0)) {
                    s.worker(.vlan_mismatch).* += 1;
                    if (traced) self.trace.?.unmatched(frame.data, frame.wire_len, frame.vlan_tci, &packet, .vlan_mismatch);
                } else {
                    s.worker(.no_match).* += 1;
                    if (traced) self.trace.?.unmatched(frame.data, frame.wire_len, frame.vlan_tci, &packet, .no_match);
                }
                continue;
            };
            std.debug.assert(index < table.rule_count);
            const rule = &table.rules[index];
            std.debug.assert(@as(u32, rule.output_first) + rule.output_count <= table.output_count);
            if (ownSource(rule, &packet.src)) {
                s.worker(.own_source).* += 1;
                s.rule(index, .own_source).* += 1;
                if (traced) self.trace.?.unmatched(frame.data, frame.wire_len, frame.vlan_tci, &packet, .own_source);
                continue;
            }
            const payload = frame.data[packet.payload_offset..][0..packet.payload_len];
            // A super-frame stands for several datagrams of gso_size bytes (the last may be
            // shorter): each is relayed as itself, as the sender sent it.
            const segment_bytes: u32 = if (frame.gso_size != 0 and payload.len > frame.gso_size) frame.gso_size else @intCast(@max(payload.len, 1));
            if (segment_bytes < payload.len) {
                s.worker(.rx_gso_frames).* += 1;
                s.worker(.rx_gso_datagrams).* += (payload.len + segment_bytes - 1) / segment_bytes;
            }
            const matched = Matched{ .rule = rule, .index = index, .payload = payload, .segment_bytes = segment_bytes, .first_signature = first_signature, .tos = packet.tos, .source = sourceKey(&packet.src) };
            if (traced) {
                // One record per frame (a super-frame's outputs are those of its first
                // datagram); traced groups keep every frame's records in order, unpipelined.
                const record = self.trace.?.matched(frame.data, frame.wire_len, frame.vlan_tci, &packet, rule);
                self.relayFrame(true, s, &matched, record);
                continue;
            }
            // Relay the previous frame now, this one after the next frame's parse: the loop
            // guard slot prefetched above arrives meanwhile (decision 024: a miss there cost
            // ~130 ns a frame when the relay followed at once).
            if (pending) |*previous| self.relayFrame(false, s, previous, null);
            pending = matched;
        }
        if (pending) |*previous| self.relayFrame(false, s, previous, null);
    }

    /// What relaying one matched frame needs (processRun parses a frame, relays it later).
    const Matched = struct {
        rule: *const abi.RuleDesc,
        index: u16,
        payload: []const u8,
        segment_bytes: u32,
        first_signature: u64,
        tos: u8,
        source: u32,
    };

    inline fn relayFrame(self: *Dataplane, comptime traced: bool, s: stats_mod.Stats, m: *const Matched, first_record: ?*trace_mod.Record) void {
        var record = first_record;
        var offset: u32 = 0;
        while (true) {
            const datagram = m.payload[offset..][0..@min(m.segment_bytes, m.payload.len - offset)];
            const signature = if (offset == 0) m.first_signature else loop_guard_mod.signatureOf(datagram);
            self.relay(traced, s, m.rule, m.index, datagram, signature, m.tos, m.source, record);
            record = null;
            offset += @intCast(datagram.len);
            if (offset >= m.payload.len) break;
        }
    }

    inline fn relay(self: *Dataplane, comptime traced: bool, s: stats_mod.Stats, rule: *const abi.RuleDesc, index: u16, datagram: []const u8, signature: u64, tos: u8, source: u32, record: ?*trace_mod.Record) void {
        if (rule.flags & abi.rule_flag_no_loop_guard == 0 and
            self.loop_guard.checkSignature(signature, source, self.run_ns) == .loop)
        {
            s.worker(.loop_drops).* += 1;
            s.rule(index, .loop_drops).* += 1;
            if (traced) if (record) |t| trace_mod.Trace.dropLater(t, .loop);
            return;
        }
        if (rule.max_pps != 0 and !self.capAllows(index, rule.max_pps)) {
            s.worker(.cap_drops).* += 1;
            s.rule(index, .cap_drops).* += 1;
            if (traced) if (record) |t| trace_mod.Trace.dropLater(t, .cap);
            return;
        }
        s.worker(.matched).* += 1;
        s.rule(index, .packets).* += 1;
        s.rule(index, .bytes).* += datagram.len;
        var o: u32 = rule.output_first;
        while (o < @as(u32, rule.output_first) + rule.output_count) : (o += 1) {
            self.egress.queue(s, o, datagram, tos);
            if (traced) if (record) |r| self.trace.?.queued(r, o - rule.output_first, o, &self.egress, s);
        }
    }

    /// Token bucket in time units: each datagram costs 1e9 / max_pps ns of credit; credit grows
    /// with elapsed time up to the burst. Integer math, no clock read of its own.
    inline fn capAllows(self: *Dataplane, index: u16, max_pps: u32) bool {
        const cost_ns: u64 = std.time.ns_per_s / max_pps;
        const burst_ns: u64 = @max(@as(u64, constants.rate_cap_burst_ms) * std.time.ns_per_ms, cost_ns);
        const elapsed = self.run_ns -| self.cap_last_ns[index];
        self.cap_last_ns[index] = self.run_ns;
        const credit = @min(self.cap_credit_ns[index] +| elapsed, burst_ns);
        if (credit < cost_ns) {
            self.cap_credit_ns[index] = credit;
            return false;
        }
        self.cap_credit_ns[index] = credit - cost_ns;
        return true;
    }

    /// The source as the loop guard tells sources apart: the IPv4 address, or the four words of
    /// an IPv6 address XORed (the last word alone would confuse fd00:1::1 and fd00:2::1).
    inline fn sourceKey(src: *const abi.Addr) u32 {
        const last = std.mem.readInt(u32, src[12..16], .big);
        if (net.isV4(src)) return last;
        return std.mem.readInt(u32, src[0..4], .big) ^ std.mem.readInt(u32, src[4..8], .big) ^
            std.mem.readInt(u32, src[8..12], .big) ^ last;
    }

    /// A datagram from the input interface's own address (the supervisor puts it in the rule).
    inline fn ownSource(rule: *const abi.RuleDesc, src: *const abi.Addr) bool {
        // An unknown address is all zero; :: is a martian source, dropped before this.
        if (!net.isV4(src)) return std.mem.eql(u8, src, &rule.local_addr6[0]) or std.mem.eql(u8, src, &rule.local_addr6[1]);
        return std.mem.eql(u8, src[12..16], &rule.local_addr4);
    }

    /// Sources no router forwards from: "this network" (0/8), loopback (127/8), multicast
    /// (224/4) and the limited broadcast address; IPv6 in parse_ipv6.martianSource. The parser
    /// refuses IPv4-mapped addresses in IPv6 headers, so a v4-mapped source is IPv4.
    inline fn martianSource(src: *const abi.Addr) bool {
        if (!net.isV4(src)) return parse_ipv6.martianSource(src);
        const first = src[12];
        if (first == 0 or first == 127 or first & 0xf0 == 0xe0) return true;
        return std.mem.allEqual(u8, src[12..16], 0xff);
    }

    fn collectKernelStatistics(self: *Dataplane) void {
        const st = self.ring.statistics() catch return;
        const s = self.stats();
        s.worker(.kernel_packets).* += st[0];
        s.worker(.kernel_drops).* += st[1];
        s.worker(.kernel_freezes).* += st[2];
    }
};

/// One worker thread serving several rings, one Dataplane per input interface (its table,
/// egress, joins and counter region stay its own): each turn drains every ring by up to
/// runs_per_turn_max runs of slots in drainGroup's groups (starting with the next ring each
/// turn, so a busy interface cannot starve another), then, as `run` does for one ring,
/// coalesces after a busy turn or polls every ring and the wake descriptor until the deadline.
/// Loop counters (polls, wakeups, coalesced, run_calls) are counted on every ring served. With
/// one ring this is `run` itself. All the rings share the wake descriptor of the first.
pub fn runMany(dps: []const *Dataplane, budget_ms: u32) sys.Error!RunResult {
    if (dps.len == 0 or dps.len > constants.rings_per_worker_max) return error.INVAL;
    if (dps.len == 1) return dps[0].run(budget_ms);
    const wake_fd = dps[0].cfg.wake_fd;
    for (dps) |dp| {
        if (dp.cfg.wake_fd != wake_fd) return error.INVAL;
        dp.stats().worker(.run_calls).* += 1;
        if (dp.join_failures > 0 and sys.monotonicNs() -% dp.last_join_ns >= join_retry_ns) dp.reconcileInputs();
    }
    const deadline_ns = sys.monotonicNs() + @as(u64, budget_ms) * std.time.ns_per_ms;
    defer for (dps) |dp| dp.collectKernelStatistics();
    // Rings whose socket reported an error (interface down) in this call are not polled again
    // until the next call: reading SO_ERROR clears it, a ring still down must not spin us.
    var errored = std.StaticBitSet(constants.rings_per_worker_max).empty;
    var first: usize = 0;
    // Bounded by the deadline, as run: every turn processes runs of slots, sleeps, or polls with a
    // timeout ending at the deadline.
    while (true) {
        var runs_all: u32 = 0;
        var busy = false;
        for (0..dps.len) |k| {
            const dp = dps[(first + k) % dps.len];
            const runs = dp.drainTurn(dp.stats());
            runs_all += runs;
            busy = busy or runs == runs_per_turn_max;
        }
        std.debug.assert(runs_all <= runs_per_turn_max * dps.len);
        first = (first + 1) % dps.len;
        const now_ns = sys.monotonicNs();
        if (now_ns >= deadline_ns) return .budget;
        if (busy) {
            if (dps[0].wakePending()) return .woken;
            continue;
        }
        if (runs_all > 0) switch (coalesceMany(dps, now_ns)) {
            .slept => continue,
            .woken => return .woken,
            .not_due => {},
        };
        if (try waitForFramesMany(dps, &errored, now_ns, deadline_ns)) |result| return result;
    }
}

/// `coalesce` for several rings: the window runs from the group's last wake-up (every ring's
/// last_wake_ns is set together) and is the window of the ring with the most outputs.
fn coalesceMany(dps: []const *Dataplane, now_ns: u64) Coalesced {
    const last_wake_ns = dps[0].last_wake_ns;
    var window_ns: u64 = 0;
    for (dps) |dp| window_ns = @max(window_ns, dp.window_ns);
    if (now_ns -% last_wake_ns >= window_ns) return .not_due;
    const woken = sleepOrWake(dps[0].cfg.wake_fd, window_ns - (now_ns -% last_wake_ns));
    const woke_ns = sys.monotonicNs();
    for (dps) |dp| {
        dp.last_wake_ns = woke_ns;
        if (woken) dp.stats().worker(.wakeups).* += 1 else dp.stats().worker(.coalesced).* += 1;
    }
    return if (woken) .woken else .slept;
}

const Coalesced = enum { not_due, slept, woken };

/// Sleeps `ns` (under a second), ended early when the wake descriptor becomes readable (a
/// control message): true then. One syscall either way, as the nanosleep it replaces.
fn sleepOrWake(wake_fd: i32, ns: u64) bool {
    std.debug.assert(ns > 0 and ns < std.time.ns_per_s);
    var ts = linux.timespec{ .sec = 0, .nsec = @intCast(ns) };
    if (wake_fd < 0) {
        _ = linux.nanosleep(&ts, null);
        return false;
    }
    var fds = [_]linux.pollfd{.{ .fd = wake_fd, .events = linux.POLL.IN, .revents = 0 }};
    const rc = linux.ppoll(&fds, 1, &ts, null);
    return linux.errno(rc) == .SUCCESS and rc > 0;
}

/// Every ring ran dry: poll the rings (but those in error) and the wake descriptor until the
/// deadline. Returns the run's result when it must end (woken, or nothing left to poll).
fn waitForFramesMany(dps: []const *Dataplane, errored: *std.StaticBitSet(constants.rings_per_worker_max), now_ns: u64, deadline_ns: u64) sys.Error!?RunResult {
    std.debug.assert(now_ns < deadline_ns);
    const wake_fd = dps[0].cfg.wake_fd;
    var fds: [constants.rings_per_worker_max + 1]linux.pollfd = undefined;
    var ring_of: [constants.rings_per_worker_max]u32 = undefined;
    var nfds: usize = 0;
    for (dps, 0..) |dp, i| {
        if (errored.isSet(i)) continue;
        fds[nfds] = .{ .fd = dp.ring.fd, .events = linux.POLL.IN | linux.POLL.ERR, .revents = 0 };
        ring_of[nfds] = @intCast(i);
        nfds += 1;
    }
    const rings = nfds;
    if (wake_fd >= 0) {
        fds[nfds] = .{ .fd = wake_fd, .events = linux.POLL.IN, .revents = 0 };
        nfds += 1;
    }
    if (nfds == 0) return .budget;
    const remaining_ms: i32 = @intCast(@max(1, (deadline_ns - now_ns) / std.time.ns_per_ms));
    for (dps) |dp| dp.stats().worker(.polls).* += 1;
    const rc = linux.poll(&fds, nfds, remaining_ms);
    const woke_ns = sys.monotonicNs();
    for (dps) |dp| dp.last_wake_ns = woke_ns;
    switch (linux.errno(rc)) {
        .SUCCESS => {},
        .INTR => return null,
        // Our own descriptors and an array within its bound: these can only be bugs.
        .BADF, .INVAL => unreachable,
        else => |e| return sys.fromErrnoOf("poll", e),
    }
    std.debug.assert(rc <= nfds);
    if (wake_fd >= 0 and fds[rings].revents != 0) {
        for (dps) |dp| dp.stats().worker(.wakeups).* += 1;
        return .woken;
    }
    for (fds[0..rings], ring_of[0..rings]) |fd, i| {
        if (fd.revents & linux.POLL.ERR == 0) continue;
        dps[i].clearRingError(dps[i].stats());
        errored.set(i);
    }
    return null;
}

// Tests. They need CAP_NET_RAW (packet sockets on lo); without it they are skipped.

fn testV4(a: u8, b: u8, c: u8, d: u8) abi.Addr {
    return .{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d };
}

/// A packet socket on lo (ifindex 1) set up as the supervisor does, with a small ring.
fn testRingSocket() !i32 {
    const rc = linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0);
    if (linux.errno(rc) == .PERM or linux.errno(rc) == .ACCES) return error.SkipZigTest;
    const fd: i32 = @intCast(try sys.call("socket", rc));
    errdefer sys.close(fd);
    _ = try ring_mod.setup(fd, 1, 1500, 1 << 20, 0);
    return fd;
}

/// One rule (id, 239.1.1.1:port) with one output to 127.0.0.1:out_port, as table bytes.
fn testTable(buf: []u8, id: u64, port: u16, out_port: u16) []const u8 {
    const head = abi.TableHeader{ .magic = abi.table_magic, .rule_count = 1, .output_count = 1, .generation = 1 };
    const rule = abi.RuleDesc{ .id = id, .group = testV4(239, 1, 1, 1), .source = @splat(0), .port = port, .flags = 0, .output_first = 0, .output_count = 1 };
    const out = abi.OutputDesc{ .id = id * 100, .addr = testV4(127, 0, 0, 1), .source = @splat(0), .port = out_port, .ttl = 1, .ifindex = 0 };
    var n: usize = 0;
    for ([_][]const u8{ std.mem.asBytes(&head), std.mem.asBytes(&rule), std.mem.asBytes(&out) }) |part| {
        @memcpy(buf[n..][0..part.len], part);
        n += part.len;
    }
    return buf[0..n];
}

/// Sends `count` Ethernet frames 10.9.9.1 -> 239.1.1.1:port (UDP, no checksum) on lo through
/// its own packet socket: both rings on lo see them as received multicast.
pub fn testInject(port: u16, count: u32) !void {
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(fd);
    var frame: [14 + 20 + 8 + 16]u8 = @splat(0);
    @memcpy(frame[0..6], &[_]u8{ 0x01, 0x00, 0x5e, 0x01, 0x01, 0x01 });
    @memcpy(frame[6..12], &[_]u8{ 0x02, 0, 0, 0, 0, 0x01 });
    frame[12] = 0x08;
    const ip = frame[14..34];
    ip[0] = 0x45;
    std.mem.writeInt(u16, ip[2..4], 20 + 8 + 16, .big);
    ip[8] = 4; // TTL
    ip[9] = 17; // UDP
    @memcpy(ip[12..16], &[_]u8{ 10, 9, 9, 1 });
    @memcpy(ip[16..20], &[_]u8{ 239, 1, 1, 1 });
    std.mem.writeInt(u16, ip[10..12], parse.ipv4Checksum(ip), .big);
    const udp = frame[34..42];
    std.mem.writeInt(u16, udp[0..2], 40000, .big);
    std.mem.writeInt(u16, udp[2..4], port, .big);
    std.mem.writeInt(u16, udp[4..6], 8 + 16, .big);
    var sll = linux.sockaddr.ll{ .protocol = std.mem.nativeToBig(u16, linux.ETH.P.IP), .ifindex = 1, .hatype = 0, .pkttype = 0, .halen = 6, .addr = .{ 0x01, 0x00, 0x5e, 0x01, 0x01, 0x01, 0, 0 } };
    for (0..count) |i| {
        frame[42] = @intCast(i); // payloads differ: the loop guard sees a stream, not a loop
        _ = try sys.call("sendto", linux.sendto(fd, &frame, frame.len, 0, @ptrCast(&sll), @sizeOf(linux.sockaddr.ll)));
    }
}

fn testReceiver() !struct { fd: i32, port: u16 } {
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.NONBLOCK, 0)));
    errdefer sys.close(fd);
    var sa = linux.sockaddr.in{ .port = 0, .addr = std.mem.nativeToBig(u32, 0x7f000001) };
    _ = try sys.call("bind", linux.bind(fd, @ptrCast(&sa), @sizeOf(linux.sockaddr.in)));
    var len: linux.socklen_t = @sizeOf(linux.sockaddr.in);
    _ = try sys.call("getsockname", linux.getsockname(fd, @ptrCast(&sa), &len));
    return .{ .fd = fd, .port = std.mem.bigToNative(u16, sa.port) };
}

fn testReceived(fd: i32) u32 {
    var n: u32 = 0;
    var buf: [256]u8 = undefined;
    while (linux.errno(linux.recvfrom(fd, &buf, buf.len, 0, null, null)) == .SUCCESS) n += 1;
    return n;
}

test "one thread serves two rings: each ring's table, relays and counters stay its own" {
    var pipe_fds: [2]i32 = undefined;
    _ = try sys.call("pipe2", linux.pipe2(&pipe_fds, .{ .CLOEXEC = true, .NONBLOCK = true }));
    defer sys.close(pipe_fds[0]);
    defer sys.close(pipe_fds[1]);
    const rx = [_]@TypeOf(try testReceiver()){ try testReceiver(), try testReceiver() };
    defer for (rx) |r| sys.close(r.fd);
    var dps: [2]*Dataplane = undefined;
    var buf: [512]u8 = undefined;
    for (&dps, 0..) |*dp, i| {
        const fd = try testRingSocket();
        const geo = ring_mod.geometry(1500, 1 << 20);
        dp.* = Dataplane.create(&.{ .packet_fd = fd, .wake_fd = pipe_fds[0], .ifindex = 1, .stats_fd = -1, .geometry = geo }) catch |err| {
            sys.close(fd);
            return err;
        };
        // Ring 0 relays port 5000, ring 1 port 5001 (both rings see every frame on lo).
        try dp.*.apply(testTable(&buf, 1 + i, @intCast(5000 + i), rx[i].port));
    }
    defer for (dps) |dp| dp.destroy();
    // Drain what lo carried before (other hosts' tools): counted from here on.
    _ = try runMany(&dps, 5);
    const before = [2][2]u64{
        .{ dps[0].stats().rule(0, .packets).*, dps[0].stats().worker(.no_match).* },
        .{ dps[1].stats().rule(0, .packets).*, dps[1].stats().worker(.no_match).* },
    };
    try testInject(5000, 7);
    try testInject(5001, 3);
    // A few slices drain both rings.
    for (0..20) |_| _ = try runMany(&dps, 5);
    try std.testing.expectEqual(@as(u64, 7), dps[0].stats().rule(0, .packets).* - before[0][0]);
    try std.testing.expectEqual(@as(u64, 3), dps[0].stats().worker(.no_match).* - before[0][1]);
    try std.testing.expectEqual(@as(u64, 3), dps[1].stats().rule(0, .packets).* - before[1][0]);
    try std.testing.expectEqual(@as(u64, 7), dps[1].stats().worker(.no_match).* - before[1][1]);
    try std.testing.expectEqual(@as(u32, 7), testReceived(rx[0].fd));
    try std.testing.expectEqual(@as(u32, 3), testReceived(rx[1].fd));
    // Each ring counted its own run calls and polls.
    try std.testing.expectEqual(dps[0].stats().worker(.run_calls).*, dps[1].stats().worker(.run_calls).*);
    try std.testing.expect(dps[0].stats().worker(.polls).* > 0);

    // The shared wake descriptor ends the run early, whichever ring it was given with.
    _ = try sys.call("write", linux.write(pipe_fds[1], "x", 1));
    const t0 = sys.monotonicNs();
    try std.testing.expectEqual(RunResult.woken, try runMany(&dps, 1000));
    try std.testing.expect(sys.monotonicNs() - t0 < 500 * std.time.ns_per_ms);
}

test "a dataplane whose counter memory cannot be mapped leaves its ring unmapped" {
    const fd = try testRingSocket();
    defer sys.close(fd);
    var pipe_fds: [2]i32 = undefined;
    _ = try sys.call("pipe2", linux.pipe2(&pipe_fds, .{ .CLOEXEC = true }));
    defer sys.close(pipe_fds[1]);
    // A pipe's read end is no writable memory file: mmap refuses it (EACCES), after the ring
    // was mapped.
    try std.testing.expectError(error.ACCES, Dataplane.create(&.{ .packet_fd = fd, .wake_fd = -1, .ifindex = 1, .stats_fd = pipe_fds[0], .geometry = ring_mod.geometry(1500, 1 << 20) }));
    sys.close(pipe_fds[0]);
    // The kernel frees a ring only when nothing maps it (EBUSY otherwise).
    try ring_mod.reset(fd);
}

test "runMany refuses no rings, too many, and rings with different wake descriptors" {
    var none: [0]*Dataplane = .{};
    try std.testing.expectError(error.INVAL, runMany(&none, 1));
    const fds = [_]i32{ try testRingSocket(), try testRingSocket() };
    const geo = ring_mod.geometry(1500, 1 << 20);
    const a = try Dataplane.create(&.{ .packet_fd = fds[0], .wake_fd = -1, .ifindex = 1, .stats_fd = -1, .geometry = geo });
    defer a.destroy();
    const b = try Dataplane.create(&.{ .packet_fd = fds[1], .wake_fd = 0, .ifindex = 1, .stats_fd = -1, .geometry = geo });
    defer b.destroy();
    try std.testing.expectError(error.INVAL, runMany(&.{ a, b }, 1));
    // Without a wake descriptor, one ring: run's own path, ending at the budget.
    try std.testing.expectEqual(RunResult.budget, try runMany(&.{a}, 1));
}

test "the coalescing window follows the active table's outputs, between its bounds" {
    const us = std.time.ns_per_us;
    try std.testing.expectEqual(@as(u64, 250 * us), coalesceWindowNs(0));
    try std.testing.expectEqual(@as(u64, 250 * us), coalesceWindowNs(1));
    try std.testing.expectEqual(@as(u64, 250 * us), coalesceWindowNs(8));
    try std.testing.expectEqual(@as(u64, 320 * us), coalesceWindowNs(16));
    try std.testing.expectEqual(@as(u64, 1000 * us), coalesceWindowNs(50));
    try std.testing.expectEqual(@as(u64, 1000 * us), coalesceWindowNs(constants.outputs_max));

    const fd = try testRingSocket();
    const geo = ring_mod.geometry(1500, 1 << 20);
    const dp = Dataplane.create(&.{ .packet_fd = fd, .wake_fd = -1, .ifindex = 1, .stats_fd = -1, .geometry = geo }) catch |err| {
        sys.close(fd);
        return err;
    };
    defer dp.destroy();
    try std.testing.expectEqual(@as(u64, 250 * us), dp.window_ns);
    // One rule with 50 outputs (1:50), then back to one output: the window follows each apply.
    var buf: [64 + 64 + 50 * @sizeOf(abi.OutputDesc)]u8 = undefined;
    const head = abi.TableHeader{ .magic = abi.table_magic, .rule_count = 1, .output_count = 50, .generation = 2 };
    const rule = abi.RuleDesc{ .id = 1, .group = testV4(239, 1, 1, 1), .source = @splat(0), .port = 5000, .flags = 0, .output_first = 0, .output_count = 50 };
    var n: usize = 0;
    for ([_][]const u8{ std.mem.asBytes(&head), std.mem.asBytes(&rule) }) |part| {
        @memcpy(buf[n..][0..part.len], part);
        n += part.len;
    }
    for (0..50) |i| {
        const out = abi.OutputDesc{ .id = 100 + i, .addr = testV4(127, 0, 0, 1), .source = @splat(0), .port = @intCast(6000 + i), .ttl = 1, .ifindex = 0 };
        @memcpy(buf[n..][0..@sizeOf(abi.OutputDesc)], std.mem.asBytes(&out));
        n += @sizeOf(abi.OutputDesc);
    }
    try dp.apply(buf[0..n]);
    try std.testing.expectEqual(@as(u64, 1000 * us), dp.window_ns);
    var one: [512]u8 = undefined;
    try dp.apply(testTable(&one, 1, 5000, 6000));
    try std.testing.expectEqual(@as(u64, 250 * us), dp.window_ns);
}

test "a control message ends a coalescing sleep (a stream busy in every window never reaches the poll)" {
    var pipe_fds: [2]i32 = undefined;
    _ = try sys.call("pipe2", linux.pipe2(&pipe_fds, .{ .CLOEXEC = true, .NONBLOCK = true }));
    defer sys.close(pipe_fds[0]);
    defer sys.close(pipe_fds[1]);
    const fd = try testRingSocket();
    const geo = ring_mod.geometry(1500, 1 << 20);
    const dp = Dataplane.create(&.{ .packet_fd = fd, .wake_fd = pipe_fds[0], .ifindex = 1, .stats_fd = -1, .geometry = geo }) catch |err| {
        sys.close(fd);
        return err;
    };
    defer dp.destroy();
    const s = dp.stats();
    // Nothing to read: the whole window is slept.
    var now = sys.monotonicNs();
    dp.last_wake_ns = now;
    try std.testing.expectEqual(Coalesced.slept, dp.coalesce(s, now));
    try std.testing.expect(sys.monotonicNs() - now >= dp.window_ns);
    // A control message waiting: the sleep ends at once and the run returns for it.
    _ = try sys.call("write", linux.write(pipe_fds[1], "x", 1));
    now = sys.monotonicNs();
    dp.last_wake_ns = now;
    try std.testing.expectEqual(Coalesced.woken, dp.coalesce(s, now));
    try std.testing.expect(sys.monotonicNs() - now < dp.window_ns);
    try std.testing.expectEqual(@as(u64, 1), s.worker(.wakeups).*);
    // Several rings: the same through the first ring's wake descriptor.
    now = sys.monotonicNs();
    dp.last_wake_ns = now;
    try std.testing.expectEqual(Coalesced.woken, coalesceMany(&.{dp}, now));
    // The window already over: no sleep at all.
    dp.last_wake_ns = now -% dp.window_ns;
    try std.testing.expectEqual(Coalesced.not_due, dp.coalesce(s, now));
}
