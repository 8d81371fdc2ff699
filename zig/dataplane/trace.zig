//! Per-rule packet tracing and capture: a bounded single-producer ring of fixed-size records in
//! the shared memory the supervisor created (after the counters), written by the dataplane
//! and read by the supervisor without any call. The supervisor arms it (rule id, group,
//! capture flag) by writing the header; the loop reads `enabled` once per group of blocks and
//! runs the traced copy of its frame loop only then, so with tracing off the packet path has
//! one predictable branch per batch and no other cost.
//!
//! While armed, a frame is recorded when it matched the traced rule, or when it did not match
//! any rule (no match, source mismatch, parse drop) and its destination is the rule's
//! group: a wrong port or source shows up, other rules' traffic does not. A record holds the
//! packet's facts, the verdict and, for a match, the result of each output's send (filled in
//! after the flush that carried it, then published). A full ring counts `overflow` and drops
//! the record; the dataplane never waits for the reader.
const std = @import("std");
const abi = @import("../abi.zig");
const parse = @import("parse.zig");
const stats_mod = @import("stats.zig");
const egress_mod = @import("egress.zig");

pub const magic: u32 = 0x4d435452; // "MCTR"
/// 2: time_ns is the frame's receive time; vlan_tci and vlan_tpid keep a metadata tag whole.
pub const layout_version: u32 = 2;
/// The region header takes one page, so records start page-aligned.
pub const header_bytes: u32 = 4096;
pub const record_bytes: u32 = @import("../constants.zig").trace_record_bytes;
/// Fixed part of a record; the frame's first bytes follow when capturing.
pub const record_head_bytes: u32 = 128;
pub const capture_bytes_max: u32 = record_bytes - record_head_bytes;
pub const records_max: u32 = @import("../constants.zig").trace_records_max;
pub const region_bytes: u32 = header_bytes + records_max * record_bytes;
pub const record_outputs_max: u32 = @import("../constants.zig").trace_record_outputs_max;
pub const pending_max: u32 = @import("../constants.zig").trace_pending_max;

pub const flag_capture: u32 = 1;
/// Record every frame that matched no rule, whatever its group (for `diagnose`: what arrives).
pub const flag_all_unmatched: u32 = 2;
/// egress.zig marks an output without a socket so.
const egress_no_fd: i32 = -1;

pub const Verdict = enum(u8) { matched = 0, no_match = 1, source_mismatch = 2, parse_drop = 3, vlan_mismatch = 4, own_source = 5, martian = 6, loop = 7, cap = 8 };
/// Output result codes: 0 sent, 1..=stats_mod.Output values of an error bucket, these two:
pub const result_pending: u8 = 254;
pub const result_unknown: u8 = 255;

/// Byte offsets in the header (the supervisor writes enabled, flags, rule_id, group, tail).
pub const Header = extern struct {
    magic: u32,
    layout_version: u32,
    record_bytes: u32,
    records_max: u32,
    enabled: u32,
    flags: u32,
    rule_id: u64,
    group: abi.Addr,
    /// Records written (published); only the dataplane writes it.
    head: u64,
    /// Records consumed; only the supervisor writes it.
    tail: u64,
    overflow: u64,
};

pub const RecordOutput = extern struct {
    /// Index of the output among the rule's outputs.
    output: u16,
    result: u8,
    _pad: u8 = 0,
};

pub const Record = extern struct {
    /// When the kernel received the frame (its slot's tp_sec/tp_nsec): CLOCK_REALTIME.
    time_ns: u64,
    rule_id: u64,
    src: abi.Addr,
    dst: abi.Addr,
    src_port: u16,
    dst_port: u16,
    payload_len: u32,
    wire_len: u32,
    captured_len: u32,
    /// 802.1Q VID (in-band or from the ring's metadata); 0xffff when untagged.
    vlan: u16,
    ttl: u8,
    tos: u8,
    verdict: u8,
    drop_reason: u8,
    outputs_recorded: u8,
    outputs_total: u8,
    ifindex: u32,
    /// The tag the kernel moved out of the frame into the ring's metadata, whole (PCP, DEI,
    /// VID), and its TPID (0x8100, 0x88a8 the outer tag of QinQ); vlan_tpid 0: none, the
    /// frame is as it was on the wire.
    vlan_tci: u16,
    vlan_tpid: u16,
    outputs: [record_outputs_max]RecordOutput,
    _reserved: [32]u8 = @splat(0),
};

comptime {
    std.debug.assert(@sizeOf(Header) <= header_bytes);
    std.debug.assert(@offsetOf(Header, "head") == 48);
    std.debug.assert(@offsetOf(Header, "tail") == 56);
    std.debug.assert(@offsetOf(Header, "overflow") == 64);
    std.debug.assert(@sizeOf(Record) == record_head_bytes);
    std.debug.assert(@offsetOf(Record, "vlan_tci") == 76);
    std.debug.assert(@offsetOf(Record, "vlan_tpid") == 78);
    std.debug.assert(@offsetOf(Record, "outputs") == 80);
    std.debug.assert(std.math.isPowerOfTwo(records_max));
    std.debug.assert(region_bytes % 4096 == 0);
}

const Pending = struct {
    slot: u32,
    which: u8,
    output: u32,
    /// Position of the datagram in the output's batch, and the output's counters right after
    /// it was queued: what the flush did to them tells this datagram's fate.
    position: u32,
    packets: u64,
    errors: u64,
};

const error_buckets = [_]stats_mod.Output{ .err_again, .err_nobufs, .err_netunreach, .err_hostunreach, .err_addrnotavail, .err_msgsize, .err_perm, .err_connrefused, .err_inval, .err_other };

fn errorSum(s: stats_mod.Stats, o: u32) u64 {
    var n: u64 = 0;
    inline for (error_buckets) |b| n += s.output(o, b).*;
    return n;
}

pub const Trace = struct {
    header: *Header,
    records: [*]u8,
    /// Records reserved in this group of blocks, not yet published.
    head_local: u64,
    pending: [pending_max]Pending,
    pending_count: u32,
    ifindex: u32,
    /// The current frame's receive time and metadata tag TPID (`frameStamp`).
    frame_time_ns: u64,
    frame_vlan_tpid: u16,

    /// Lays out a fresh region (the supervisor's memfd is zero-filled: disarmed).
    pub fn init(self: *Trace, region: []align(4096) u8, ifindex: u32) void {
        std.debug.assert(region.len >= region_bytes);
        self.header = @ptrCast(region.ptr);
        self.records = region.ptr + header_bytes;
        self.header.magic = magic;
        self.header.layout_version = layout_version;
        self.header.record_bytes = record_bytes;
        self.header.records_max = records_max;
        self.head_local = @atomicLoad(u64, &self.header.head, .acquire);
        self.pending_count = 0;
        self.ifindex = ifindex;
        self.frame_time_ns = 0;
        self.frame_vlan_tpid = 0;
    }

    /// Read once per group of blocks: the one branch tracing costs when off.
    pub inline fn armed(self: *const Trace) bool {
        return @atomicLoad(u32, &self.header.enabled, .monotonic) != 0;
    }

    /// Start of a traced group of blocks.
    pub fn begin(self: *Trace) void {
        self.head_local = @atomicLoad(u64, &self.header.head, .monotonic);
        self.pending_count = 0;
    }

    /// The next frame's kernel stamp (ring.zig Run.Stamp), given by the traced loop before
    /// anything of that frame is recorded: each record carries its own frame's receive time
    /// (a time per group of blocks made inter-arrival times in a capture meaningless).
    pub inline fn frameStamp(self: *Trace, time_ns: u64, vlan_tpid: u16) void {
        self.frame_time_ns = time_ns;
        self.frame_vlan_tpid = vlan_tpid;
    }

    fn reserve(self: *Trace) ?*Record {
        const tail = @atomicLoad(u64, &self.header.tail, .acquire);
        if (self.head_local -% tail >= records_max) {
            self.header.overflow += 1;
            return null;
        }
        const slot: u32 = @intCast(self.head_local & (records_max - 1));
        self.head_local += 1;
        return @ptrCast(@alignCast(self.records + @as(usize, slot) * record_bytes));
    }

    fn slotOf(self: *const Trace, r: *const Record) u32 {
        return @intCast((@intFromPtr(r) - @intFromPtr(self.records)) / record_bytes);
    }

    fn fill(self: *Trace, r: *Record, frame_data: []const u8, wire_len: u32, vlan_tci: ?u16) void {
        r.* = std.mem.zeroes(Record);
        r.time_ns = self.frame_time_ns;
        r.wire_len = wire_len;
        r.ifindex = self.ifindex;
        r.vlan = if (vlan_tci) |tci| tci & 0x0fff else 0xffff;
        if (vlan_tci) |tci| {
            r.vlan_tci = tci;
            r.vlan_tpid = if (self.frame_vlan_tpid != 0) self.frame_vlan_tpid else 0x8100;
        }
        if (self.header.flags & flag_capture != 0) {
            const n: u32 = @intCast(@min(frame_data.len, capture_bytes_max));
            const dest: [*]u8 = @ptrCast(r);
            @memcpy(dest[record_head_bytes..][0..n], frame_data[0..n]);
            r.captured_len = n;
        }
    }

    fn fillPacket(r: *Record, p: *const parse.Packet) void {
        r.src = p.src;
        r.dst = p.dst;
        r.src_port = p.src_port;
        r.dst_port = p.dst_port;
        r.payload_len = p.payload_len;
        r.ttl = p.ttl;
        r.tos = p.tos;
        if (p.vlan_tags > 0) r.vlan = p.vlan_id;
    }

    /// A frame that matched rule `rule`; its outputs' results come from `queued` after the flush.
    pub fn matched(self: *Trace, frame_data: []const u8, wire_len: u32, vlan_tci: ?u16, p: *const parse.Packet, rule: *const abi.RuleDesc) ?*Record {
        if (rule.id != self.header.rule_id) return null;
        const r = self.reserve() orelse return null;
        self.fill(r, frame_data, wire_len, vlan_tci);
        fillPacket(r, p);
        r.rule_id = rule.id;
        r.verdict = @intFromEnum(Verdict.matched);
        r.outputs_total = @intCast(@min(rule.output_count, 255));
        return r;
    }

    /// A matched datagram the loop guard or the storm cap dropped before any output.
    pub fn dropLater(r: *Record, verdict: Verdict) void {
        r.verdict = @intFromEnum(verdict);
    }

    /// Output `which` of the rule (egress index `output`) was handed the datagram.
    pub fn queued(self: *Trace, r: *Record, which: u32, output: u32, egress: *const egress_mod.Egress, s: stats_mod.Stats) void {
        if (which >= record_outputs_max) return;
        const k = r.outputs_recorded;
        r.outputs_recorded += 1;
        r.outputs[k] = .{ .output = @intCast(which), .result = result_unknown };
        if (egress.fds[output] == egress_no_fd) {
            r.outputs[k].result = @intCast(@intFromEnum(egress.setup_error[output]));
            return;
        }
        if (self.pending_count == pending_max) return;
        r.outputs[k].result = result_pending;
        self.pending[self.pending_count] = .{
            .slot = self.slotOf(r),
            .which = k,
            .output = output,
            .position = egress.pending[output] -| 1,
            .packets = s.output(output, .packets).*,
            .errors = errorSum(s, output),
        };
        self.pending_count += 1;
    }

    /// A frame that matched no rule: recorded when it is for the traced group.
    pub fn unmatched(self: *Trace, frame_data: []const u8, wire_len: u32, vlan_tci: ?u16, p: *const parse.Packet, verdict: Verdict) void {
        if (self.header.flags & flag_all_unmatched == 0 and !std.mem.eql(u8, &p.dst, &self.header.group)) return;
        const r = self.reserve() orelse return;
        self.fill(r, frame_data, wire_len, vlan_tci);
        fillPacket(r, p);
        r.verdict = @intFromEnum(verdict);
    }

    /// A frame the parser dropped: recorded when its IPv4 or IPv6 destination (read as far as
    /// the frame allows) is the traced group.
    pub fn dropped(self: *Trace, frame_data: []const u8, wire_len: u32, vlan_tci: ?u16, reason: parse.Drop) void {
        const dst = destination(frame_data) orelse return;
        if (self.header.flags & flag_all_unmatched == 0) {
            if (!std.mem.eql(u8, &self.header.group, &dst)) return;
        }
        const r = self.reserve() orelse return;
        self.fill(r, frame_data, wire_len, vlan_tci);
        r.dst = dst;
        r.verdict = @intFromEnum(Verdict.parse_drop);
        r.drop_reason = @intFromEnum(reason);
    }

    /// After the flush: each pending output result from what the flush did to its counters,
    /// then the records become visible to the reader.
    pub fn publish(self: *Trace, s: stats_mod.Stats) void {
        for (self.pending[0..self.pending_count]) |pd| {
            const r: *Record = @ptrCast(@alignCast(self.records + @as(usize, pd.slot) * record_bytes));
            const sent = s.output(pd.output, .packets).* - pd.packets;
            const failed = errorSum(s, pd.output) - pd.errors;
            // GSO and a full socket buffer fail a whole batch or its tail; an interleaved
            // failure in a sendmmsg batch is placed by position (sent ones come first).
            const ok = failed == 0 or (sent > 0 and pd.position < sent);
            r.outputs[pd.which].result = if (ok) 0 else lastBucket(s, pd.output);
        }
        self.pending_count = 0;
        @atomicStore(u64, &self.header.head, self.head_local, .release);
    }
};

/// The bucket of the output's most frequent error: the errno this flush most likely hit.
fn lastBucket(s: stats_mod.Stats, o: u32) u8 {
    var best: stats_mod.Output = .err_other;
    var most: u64 = 0;
    inline for (error_buckets) |b| {
        if (s.output(o, b).* > most) {
            most = s.output(o, b).*;
            best = b;
        }
    }
    return @intCast(@intFromEnum(best));
}

/// IPv4 (v4-mapped) or IPv6 destination of an Ethernet frame (behind up to two VLAN tags),
/// when the bytes are there.
fn destination(frame: []const u8) ?abi.Addr {
    var off: usize = 12;
    var tags: u32 = 0;
    while (true) {
        if (frame.len < off + 2) return null;
        const et = std.mem.readInt(u16, frame[off..][0..2], .big);
        if ((et == 0x8100 or et == 0x88a8) and tags < 2) {
            off += 4;
            tags += 1;
            continue;
        }
        if (et != 0x0800 and et != 0x86dd) return null;
        off += 2;
        if (et == 0x86dd) {
            if (frame.len < off + 40) return null;
            return frame[off + 24 ..][0..16].*;
        }
        break;
    }
    if (frame.len < off + 20) return null;
    const v4 = frame[off + 16 ..][0..4];
    return .{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3] };
}

test "trace ring: armed filter, records published after the flush, overflow counted" {
    const region = try std.testing.allocator.alignedAlloc(u8, .fromByteUnits(4096), region_bytes);
    defer std.testing.allocator.free(region);
    @memset(region, 0);
    const t = try std.testing.allocator.create(Trace);
    defer std.testing.allocator.destroy(t);
    t.init(region, 7);
    try std.testing.expect(!t.armed());
    t.header.group = [_]u8{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 239, 1, 1, 1 };
    t.header.rule_id = 5;
    t.header.enabled = 1;
    try std.testing.expect(t.armed());

    const words = try std.testing.allocator.create([stats_mod.total_words]u64);
    defer std.testing.allocator.destroy(words);
    const s = stats_mod.Stats.init(words);
    var p = std.mem.zeroes(parse.Packet);
    p.dst = t.header.group;
    p.dst_port = 5001;
    t.begin();
    t.unmatched(&.{}, 60, null, &p, .no_match);
    p.dst[15] = 2; // another group: not traced
    t.unmatched(&.{}, 60, null, &p, .no_match);
    try std.testing.expectEqual(@as(u64, 0), t.header.head); // not visible before publish
    t.publish(s);
    try std.testing.expectEqual(@as(u64, 1), t.header.head);
    const r: *const Record = @ptrCast(@alignCast(t.records));
    try std.testing.expectEqual(@as(u16, 5001), r.dst_port);
    try std.testing.expectEqual(@as(u8, @intFromEnum(Verdict.no_match)), r.verdict);
    try std.testing.expectEqual(@as(u16, 0xffff), r.vlan);

    // A frame cut after the IPv4 destination, dropped by the parser, still found by group.
    var frame: [34]u8 = @splat(0);
    frame[12] = 0x08;
    frame[30] = 239;
    frame[31] = 1;
    frame[32] = 1;
    frame[33] = 1;
    t.begin();
    t.dropped(&frame, 34, null, .ipv4_fragment);
    t.publish(s);
    try std.testing.expectEqual(@as(u64, 2), t.header.head);

    // Nobody reads: the ring fills and counts the rest.
    p.dst = t.header.group;
    t.begin();
    for (0..records_max + 10) |_| t.unmatched(&.{}, 60, null, &p, .no_match);
    t.publish(s);
    try std.testing.expectEqual(@as(u64, records_max), t.header.head);
    try std.testing.expectEqual(@as(u64, 12), t.header.overflow);
}

test "trace records: each its own frame's receive time, and a metadata tag kept whole with its TPID" {
    const region = try std.testing.allocator.alignedAlloc(u8, .fromByteUnits(4096), region_bytes);
    defer std.testing.allocator.free(region);
    @memset(region, 0);
    const t = try std.testing.allocator.create(Trace);
    defer std.testing.allocator.destroy(t);
    t.init(region, 7);
    t.header.group = [_]u8{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 239, 1, 1, 1 };
    t.header.enabled = 1;
    const words = try std.testing.allocator.create([stats_mod.total_words]u64);
    defer std.testing.allocator.destroy(words);
    const s = stats_mod.Stats.init(words);
    var p = std.mem.zeroes(parse.Packet);
    p.dst = t.header.group;

    // Three frames of one group of blocks, 100 us apart on the wire.
    const t0: u64 = 1_764_000_000_123_456_789;
    t.begin();
    t.frameStamp(t0, 0);
    t.unmatched(&.{}, 60, null, &p, .no_match);
    // PCP 5, DEI 1, VID 100 in an outer 802.1ad tag the kernel moved out.
    t.frameStamp(t0 + 100_000, 0x88a8);
    t.unmatched(&.{}, 60, (5 << 13) | (1 << 12) | 100, &p, .no_match);
    // A tag whose TPID the kernel did not give: 802.1Q.
    t.frameStamp(t0 + 200_000, 0);
    t.unmatched(&.{}, 60, 7, &p, .no_match);
    t.publish(s);
    const at = struct {
        fn f(tr: *const Trace, i: usize) *const Record {
            return @ptrCast(@alignCast(tr.records + i * record_bytes));
        }
    }.f;
    try std.testing.expectEqual(t0, at(t, 0).time_ns);
    try std.testing.expectEqual(t0 + 100_000, at(t, 1).time_ns);
    try std.testing.expectEqual(t0 + 200_000, at(t, 2).time_ns);
    try std.testing.expectEqual(@as(u16, 0), at(t, 0).vlan_tpid);
    try std.testing.expectEqual(@as(u16, 0xffff), at(t, 0).vlan);
    try std.testing.expectEqual(@as(u16, 0x88a8), at(t, 1).vlan_tpid);
    try std.testing.expectEqual(@as(u16, 0xb064), at(t, 1).vlan_tci);
    try std.testing.expectEqual(@as(u16, 100), at(t, 1).vlan);
    try std.testing.expectEqual(@as(u16, 0x8100), at(t, 2).vlan_tpid);
    try std.testing.expectEqual(@as(u16, 7), at(t, 2).vlan_tci);
}
