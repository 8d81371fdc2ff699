//! Counters of one dataplane in one flat u64 region that TypeScript reads through a single
//! BigUint64Array view. The dataplane thread is the only writer; readers see torn-free u64s
//! (aligned 64-bit stores) and accept that a snapshot spans a few microseconds.
const std = @import("std");
const constants = @import("../constants.zig");
const parse = @import("parse.zig");

pub const magic: u64 = 0x4d43525354415453; // "MCRSTATS"
pub const layout_version: u64 = 1;

/// Header words, at the start of the region.
pub const Header = enum(u32) {
    magic,
    layout_version,
    worker_words,
    rule_words,
    output_words,
    rules_max,
    outputs_max,
    /// Table generation applied by the dataplane (the TableHeader's generation).
    generation,
    rule_count,
    output_count,
    _reserved0,
    _reserved1,
    _reserved2,
    _reserved3,
    _reserved4,
    _reserved5,
};
pub const header_words: u32 = 16;

/// Per-worker counters; parse drop reasons follow them, one word each, in parse.Drop order.
pub const Worker = enum(u32) {
    rx_frames,
    rx_bytes,
    rx_blocks,
    /// Frames whose capture was shorter than the wire length (ring frame too small).
    rx_truncated,
    matched,
    no_match,
    source_mismatch,
    /// PACKET_STATISTICS, accumulated: what the kernel queued and what it dropped.
    kernel_packets,
    kernel_drops,
    kernel_freezes,
    tx_packets,
    tx_bytes,
    tx_errors,
    /// sendmsg calls that carried a whole batch as one UDP GSO buffer.
    tx_gso_sends,
    polls,
    /// Short sleeps taken instead of a poll while traffic flowed (wake-up coalescing).
    coalesced,
    wakeups,
    run_calls,
    /// Ingress group joins that failed (the stream may not arrive on a filtering NIC).
    join_errors,
    /// Times the packet socket reported an error (its interface went down or away).
    ring_errors,
    /// UDP GSO/GRO super-frames received (one frame standing for several datagrams, as veth
    /// delivers a sender's GSO buffer), and the datagrams they were split into.
    rx_gso_frames,
    rx_gso_datagrams,
    /// Tagged frames whose (group, port) has a rule for untagged frames only, none for the VID.
    vlan_mismatch,
    /// Martians, dropped as a router would: frames addressed to another host's MAC
    /// (PACKET_OTHERHOST), sources in 0/8, 127/8, 224/4 or 255.255.255.255, and datagrams whose
    /// source is the input interface's own address.
    otherhost,
    martian_source,
    own_source,
    /// Datagrams dropped as looping (loop guard) and above a rule's max_pps (storm cap).
    loop_drops,
    cap_drops,
    /// sendmmsg calls of the egress (one per flush and address family when nothing fails).
    tx_send_calls,
};
pub const worker_fixed_words: u32 = @typeInfo(Worker).@"enum".field_names.len;
pub const worker_words: u32 = worker_fixed_words + parse.drop_count;

/// Per rule: what it relayed, and what was dropped that belongs to it. `source_mismatch` counts
/// datagrams for the rule's group and port (and VLAN) from a source no rule accepts (on the
/// first rule of that key); `own_source` datagrams from the input interface's own address.
/// `input_errno` is a state, not a counter: 0 when the rule's input is joined (or its unicast
/// port held), else the errno of the last failure.
pub const Rule = enum(u32) { id, packets, bytes, source_mismatch, own_source, loop_drops, cap_drops, input_errno };
pub const rule_words: u32 = @typeInfo(Rule).@"enum".field_names.len;

/// Send errors are counted per output by errno, in these buckets.
pub const Output = enum(u32) {
    id,
    packets,
    bytes,
    err_again,
    err_nobufs,
    err_netunreach,
    err_hostunreach,
    err_addrnotavail,
    err_msgsize,
    err_perm,
    err_connrefused,
    err_inval,
    err_other,
};
pub const output_words: u32 = @typeInfo(Output).@"enum".field_names.len;

pub const total_words: u32 = header_words + worker_words +
    constants.rules_max * rule_words + constants.outputs_max * output_words;

pub const Stats = struct {
    words: *[total_words]u64,

    pub fn init(words: *[total_words]u64) Stats {
        @memset(words, 0);
        words[@intFromEnum(Header.magic)] = magic;
        words[@intFromEnum(Header.layout_version)] = layout_version;
        words[@intFromEnum(Header.worker_words)] = worker_words;
        words[@intFromEnum(Header.rule_words)] = rule_words;
        words[@intFromEnum(Header.output_words)] = output_words;
        words[@intFromEnum(Header.rules_max)] = constants.rules_max;
        words[@intFromEnum(Header.outputs_max)] = constants.outputs_max;
        return .{ .words = words };
    }

    pub inline fn header(self: Stats, h: Header) *u64 {
        return &self.words[@intFromEnum(h)];
    }

    pub inline fn worker(self: Stats, w: Worker) *u64 {
        return &self.words[header_words + @intFromEnum(w)];
    }

    pub inline fn drop(self: Stats, d: parse.Drop) *u64 {
        return &self.words[header_words + worker_fixed_words + @intFromEnum(d)];
    }

    pub fn rules(self: Stats) *[constants.rules_max * rule_words]u64 {
        return self.words[header_words + worker_words ..][0 .. constants.rules_max * rule_words];
    }

    pub fn outputs(self: Stats) *[constants.outputs_max * output_words]u64 {
        const start = header_words + worker_words + constants.rules_max * rule_words;
        return self.words[start..][0 .. constants.outputs_max * output_words];
    }

    pub inline fn rule(self: Stats, index: u32, r: Rule) *u64 {
        std.debug.assert(index < constants.rules_max);
        return &self.rules()[index * rule_words + @intFromEnum(r)];
    }

    pub inline fn output(self: Stats, index: u32, o: Output) *u64 {
        std.debug.assert(index < constants.outputs_max);
        return &self.outputs()[index * output_words + @intFromEnum(o)];
    }
};

/// The bucket a send errno is counted in.
pub fn errnoBucket(e: std.os.linux.E) Output {
    return switch (e) {
        .AGAIN => .err_again,
        .NOBUFS => .err_nobufs,
        .NETUNREACH, .NETDOWN => .err_netunreach,
        .HOSTUNREACH => .err_hostunreach,
        .ADDRNOTAVAIL => .err_addrnotavail,
        .MSGSIZE => .err_msgsize,
        .PERM, .ACCES => .err_perm,
        .CONNREFUSED => .err_connrefused,
        .INVAL => .err_inval,
        else => .err_other,
    };
}

test "stats layout is self-describing" {
    const buf = try std.testing.allocator.create([total_words]u64);
    defer std.testing.allocator.destroy(buf);
    const s = Stats.init(buf);
    try std.testing.expectEqual(magic, s.header(.magic).*);
    s.worker(.rx_frames).* += 3;
    s.drop(.ipv4_fragment).* += 1;
    s.rule(constants.rules_max - 1, .input_errno).* = 7;
    s.output(constants.outputs_max - 1, .err_other).* = 9;
    try std.testing.expectEqual(@as(u64, 9), buf[total_words - 1]);
    try std.testing.expectEqual(@as(u64, 7), buf[header_words + worker_words + constants.rules_max * rule_words - 1]);
    try std.testing.expectEqual(Output.err_again, errnoBucket(.AGAIN));
    try std.testing.expectEqual(Output.err_netunreach, errnoBucket(.NETUNREACH));
}
