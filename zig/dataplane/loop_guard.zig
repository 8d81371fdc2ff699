//! Loop containment: a datagram that comes back again and again, each time from a source other
//! than the one it first came from, is circling through relays (ours and others). Design and
//! measurements: docs/decisions/008-loop-detection.md.
//!
//! Each relayed datagram leaves a trace in a fixed table: a 64-bit signature of its payload
//! (length and first bytes), the source it first came from, and how often it has come back
//! from another source since. A stream that repeats one payload comes from one source: never a
//! return. Two senders that happen to send one identical datagram (a tiny heartbeat, a
//! redundant encoder on another group): one return, relayed. A loop brings the same payload
//! back from a relay's address every round trip: the `returns_max`-th return and every one
//! after it are dropped. The original source sending it again resets the count. Traces older
//! than the window are forgotten. Nothing allocates; one table access per datagram.
const std = @import("std");
const constants = @import("../constants.zig");

pub const slots = constants.loop_guard_slots;
pub const window_ns: u64 = @as(u64, constants.loop_guard_window_ms) * std.time.ns_per_ms;
pub const returns_max: u16 = constants.loop_guard_returns_max;
const signature_bytes_max: usize = constants.loop_guard_signature_bytes_max;

comptime {
    std.debug.assert(std.math.isPowerOfTwo(slots));
    std.debug.assert(returns_max >= 2); // a single coincidence is never dropped
}

const Entry = struct {
    signature: u64,
    /// IPv4 source of the first sighting (network byte order as read).
    source: u32,
    returns: u16,
    last_ns: u64,
};

pub const Verdict = enum { relay, loop };

pub const LoopGuard = struct {
    entries: [slots]Entry,

    pub fn clear(self: *LoopGuard) void {
        @memset(&self.entries, .{ .signature = 0, .source = 0, .returns = 0, .last_ns = 0 });
    }

    pub inline fn check(self: *LoopGuard, payload: []const u8, source: u32, now_ns: u64) Verdict {
        return self.checkSignature(signatureOf(payload), source, now_ns);
    }

    /// Starts loading the slot of `signature`: the table (384 KiB) does not stay in the caches
    /// next to the ring, and this slot was the costliest single load per datagram.
    pub inline fn prefetch(self: *LoopGuard, signature: u64) void {
        @prefetch(self.slotOf(signature), .{ .rw = .write, .locality = 3, .cache = .data });
    }

    inline fn slotOf(self: *LoopGuard, signature: u64) *Entry {
        return &self.entries[@as(usize, @truncate(signature)) & (slots - 1)];
    }

    pub inline fn checkSignature(self: *LoopGuard, signature: u64, source: u32, now_ns: u64) Verdict {
        const entry = self.slotOf(signature);
        if (entry.signature != signature or now_ns -% entry.last_ns > window_ns or entry.last_ns == 0) {
            entry.* = .{ .signature = signature, .source = source, .returns = 0, .last_ns = now_ns };
            return .relay;
        }
        entry.last_ns = now_ns;
        if (source == entry.source) {
            entry.returns = 0;
            return .relay;
        }
        entry.returns +|= 1;
        return if (entry.returns >= returns_max) .loop else .relay;
    }
};

pub inline fn signatureOf(payload: []const u8) u64 {
    const n = @min(payload.len, signature_bytes_max);
    // Never 0, so an empty slot (signature 0) cannot match.
    return std.hash.Wyhash.hash(payload.len, payload[0..n]) | 1;
}

test "a loop is cut at the second return; a repeating stream and a single coincidence are not" {
    const guard = try std.testing.allocator.create(LoopGuard);
    defer std.testing.allocator.destroy(guard);
    guard.clear();
    const t0: u64 = 1_000_000_000;
    const sender: u32 = 0x0a000001;
    const relay_b: u32 = 0x0a000202;
    const other: u32 = 0x0a000303;

    // One stream repeating one payload at 1 kpps: always the same source, always relayed.
    for (0..1000) |i| try std.testing.expectEqual(Verdict.relay, guard.check("same payload", sender, t0 + i * std.time.ns_per_ms));

    // A loop: the injected datagram comes back from relay B every few ms.
    const p = "injected once";
    try std.testing.expectEqual(Verdict.relay, guard.check(p, sender, t0));
    try std.testing.expectEqual(Verdict.relay, guard.check(p, relay_b, t0 + 3 * std.time.ns_per_ms));
    for (2..10) |i| try std.testing.expectEqual(Verdict.loop, guard.check(p, relay_b, t0 + i * 3 * std.time.ns_per_ms));

    // Two senders sending one identical heartbeat, alternating: never more than one return.
    const hb = "hb";
    for (0..20) |i| {
        const src = if (i % 2 == 0) sender else other;
        try std.testing.expectEqual(Verdict.relay, guard.check(hb, src, t0 + i * 10 * std.time.ns_per_ms));
    }

    // Past the window the trace is forgotten: a late copy starts afresh.
    const late = "late";
    try std.testing.expectEqual(Verdict.relay, guard.check(late, sender, t0));
    try std.testing.expectEqual(Verdict.relay, guard.check(late, relay_b, t0 + 1));
    try std.testing.expectEqual(Verdict.relay, guard.check(late, relay_b, t0 + 2 + window_ns + 1));
    try std.testing.expectEqual(Verdict.relay, guard.check(late, relay_b, t0 + 3 + window_ns + 1));
}

test "signatures differ with length and content, and are never zero" {
    try std.testing.expect(signatureOf("abc") != signatureOf("abd"));
    try std.testing.expect(signatureOf("abc") != signatureOf("abc\x00"));
    try std.testing.expect(signatureOf("") != 0);
}
