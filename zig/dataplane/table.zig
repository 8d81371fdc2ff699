//! The rule table: fixed capacity, keyed by (destination address, port, VLAN id; 0 = untagged),
//! with an optional source filter. Built whole from a table buffer (never edited in place), looked up per packet.
const std = @import("std");
const abi = @import("../abi.zig");
const constants = @import("../constants.zig");
const sys = @import("../sys.zig");

const slot_empty: u16 = std.math.maxInt(u16);

pub const Table = struct {
    rules: [constants.rules_max]abi.RuleDesc,
    /// Next rule with the same key (a different source filter), or slot_empty.
    chain: [constants.rules_max]u16,
    outputs: [constants.outputs_max]abi.OutputDesc,
    /// Open addressing, linear probing: first rule index of each key, or slot_empty.
    slots: [constants.table_slots]u16,
    rule_count: u32,
    output_count: u32,
    generation: u32,

    pub fn clear(self: *Table) void {
        self.rule_count = 0;
        self.output_count = 0;
        self.generation = 0;
        @memset(&self.slots, slot_empty);
    }

    /// Validates a table buffer completely and builds the lookup structure from it.
    /// On error the table is left cleared: the caller keeps using its previous table.
    pub fn build(self: *Table, buf: []const u8) sys.Error!void {
        self.clear();
        errdefer self.clear();
        if (buf.len < @sizeOf(abi.TableHeader)) return error.INVAL;
        const head = std.mem.bytesToValue(abi.TableHeader, buf[0..@sizeOf(abi.TableHeader)]);
        if (head.magic != abi.table_magic) return error.INVAL;
        if (head.rule_count > constants.rules_max) return error.RANGE;
        if (head.output_count > constants.outputs_max) return error.RANGE;
        const rules_bytes = head.rule_count * @sizeOf(abi.RuleDesc);
        const outputs_bytes = head.output_count * @sizeOf(abi.OutputDesc);
        if (buf.len != @sizeOf(abi.TableHeader) + rules_bytes + outputs_bytes) return error.INVAL;

        const rules_src = buf[@sizeOf(abi.TableHeader)..][0..rules_bytes];
        const outputs_src = buf[@sizeOf(abi.TableHeader) + rules_bytes ..][0..outputs_bytes];
        for (0..head.rule_count) |i| {
            self.rules[i] = std.mem.bytesToValue(abi.RuleDesc, rules_src[i * @sizeOf(abi.RuleDesc) ..][0..@sizeOf(abi.RuleDesc)]);
        }
        for (0..head.output_count) |i| {
            self.outputs[i] = std.mem.bytesToValue(abi.OutputDesc, outputs_src[i * @sizeOf(abi.OutputDesc) ..][0..@sizeOf(abi.OutputDesc)]);
        }
        self.rule_count = head.rule_count;
        self.output_count = head.output_count;
        self.generation = head.generation;

        for (self.rules[0..self.rule_count], 0..) |rule, i| {
            if (rule.port == 0) return error.INVAL;
            if (rule.vlan_id > 4094) return error.INVAL;
            if (rule.flags & ~(abi.rule_flag_source_filter | abi.rule_flag_no_loop_guard) != 0) return error.INVAL;
            if (rule.output_count == 0 or rule.output_count > constants.outputs_per_rule_max) return error.INVAL;
            if (@as(u32, rule.output_first) + rule.output_count > self.output_count) return error.INVAL;
            for (self.rules[0..i]) |other| if (other.id == rule.id) return error.EXIST;
            try self.insert(@intCast(i));
        }
        for (self.outputs[0..self.output_count], 0..) |output, i| {
            if (output.port == 0 or output.ttl == 0) return error.INVAL;
            if (output.dscp > 63 and output.dscp != abi.dscp_copy) return error.INVAL;
            if (output.flags & ~abi.output_flag_gso_off != 0) return error.INVAL;
            for (self.outputs[0..i]) |other| if (other.id == output.id) return error.EXIST;
        }
    }

    fn insert(self: *Table, index: u16) sys.Error!void {
        const rule = &self.rules[index];
        self.chain[index] = slot_empty;
        var slot = hash(&rule.group, rule.port, rule.vlan_id);
        var probes: u32 = 0;
        while (probes < constants.table_slots) : (probes += 1) {
            const head = self.slots[slot];
            if (head == slot_empty) {
                self.slots[slot] = index;
                return;
            }
            const first = &self.rules[head];
            if (first.port == rule.port and first.vlan_id == rule.vlan_id and std.mem.eql(u8, &first.group, &rule.group)) {
                // Same key: one rule may match any source, the others need distinct sources.
                var at: u16 = head;
                while (true) {
                    const r = &self.rules[at];
                    if (sameSourceFilter(r, rule)) return error.EXIST;
                    if (self.chain[at] == slot_empty) break;
                    at = self.chain[at];
                }
                self.chain[at] = index;
                return;
            }
            slot = (slot + 1) & (constants.table_slots - 1);
        }
        unreachable; // table_slots >= 2 * rules_max: a free slot always exists.
    }

    /// The rule that takes a packet to (dst, port) from src, if any. Rules with a source filter
    /// win over the rule for any source.
    pub inline fn lookup(self: *const Table, dst: *const abi.Addr, port: u16, vlan_id: u16, src: *const abi.Addr) ?u16 {
        var slot = hash(dst, port, vlan_id);
        var probes: u32 = 0;
        while (probes < constants.table_slots) : (probes += 1) {
            const head = self.slots[slot];
            if (head == slot_empty) return null;
            std.debug.assert(head < self.rule_count);
            const first = &self.rules[head];
            if (first.port == port and first.vlan_id == vlan_id and std.mem.eql(u8, &first.group, dst)) {
                var any: ?u16 = null;
                var at: u16 = head;
                while (at != slot_empty) : (at = self.chain[at]) {
                    std.debug.assert(at < self.rule_count);
                    const r = &self.rules[at];
                    if (r.flags & abi.rule_flag_source_filter == 0) {
                        any = at;
                    } else if (std.mem.eql(u8, &r.source, src)) {
                        return at;
                    }
                }
                return any;
            }
            slot = (slot + 1) & (constants.table_slots - 1);
        }
        return null;
    }

    /// True when the key exists but no rule accepts this source (counted apart from no_match).
    pub fn keyExists(self: *const Table, dst: *const abi.Addr, port: u16, vlan_id: u16) bool {
        return self.keyHead(dst, port, vlan_id) != null;
    }

    /// The first rule of a key (the one its source mismatches are counted on), if the key exists.
    pub fn keyHead(self: *const Table, dst: *const abi.Addr, port: u16, vlan_id: u16) ?u16 {
        var slot = hash(dst, port, vlan_id);
        var probes: u32 = 0;
        while (probes < constants.table_slots) : (probes += 1) {
            const head = self.slots[slot];
            if (head == slot_empty) return null;
            std.debug.assert(head < self.rule_count);
            const first = &self.rules[head];
            if (first.port == port and first.vlan_id == vlan_id and std.mem.eql(u8, &first.group, dst)) return head;
            slot = (slot + 1) & (constants.table_slots - 1);
        }
        return null;
    }
};

fn sameSourceFilter(a: *const abi.RuleDesc, b: *const abi.RuleDesc) bool {
    const a_filtered = a.flags & abi.rule_flag_source_filter != 0;
    const b_filtered = b.flags & abi.rule_flag_source_filter != 0;
    if (a_filtered != b_filtered) return false;
    return !a_filtered or std.mem.eql(u8, &a.source, &b.source);
}

inline fn hash(addr: *const abi.Addr, port: u16, vlan_id: u16) u32 {
    const lo = std.mem.readInt(u64, addr[0..8], .little);
    const hi = std.mem.readInt(u64, addr[8..16], .little);
    const x = (lo *% 0x9e3779b97f4a7c15) ^ hi ^ (@as(u64, port) << 48) ^ (@as(u64, vlan_id) << 32);
    const mixed = (x ^ (x >> 29)) *% 0xbf58476d1ce4e5b9;
    return @truncate((mixed >> 32) & (constants.table_slots - 1));
}

// Tests.

fn v4(a: u8, b: u8, c: u8, d: u8) abi.Addr {
    return .{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d };
}

const TestTable = struct {
    buf: [@sizeOf(abi.TableHeader) + 64 * @sizeOf(abi.RuleDesc) + 64 * @sizeOf(abi.OutputDesc)]u8 = undefined,
    rules: [64]abi.RuleDesc = undefined,
    outputs: [64]abi.OutputDesc = undefined,
    rule_count: u32 = 0,
    output_count: u32 = 0,

    fn rule(self: *TestTable, id: u64, group: abi.Addr, port: u16, source: ?abi.Addr) void {
        self.outputs[self.output_count] = .{ .id = id * 100, .addr = v4(239, 9, 9, 9), .source = std.mem.zeroes(abi.Addr), .port = 6000, .ttl = 1, .ifindex = 0 };
        self.rules[self.rule_count] = .{
            .id = id,
            .group = group,
            .source = source orelse std.mem.zeroes(abi.Addr),
            .port = port,
            .flags = if (source != null) abi.rule_flag_source_filter else 0,
            .output_first = @intCast(self.output_count),
            .output_count = 1,
        };
        self.rule_count += 1;
        self.output_count += 1;
    }

    fn bytes(self: *TestTable) []const u8 {
        const head = abi.TableHeader{ .magic = abi.table_magic, .rule_count = self.rule_count, .output_count = self.output_count, .generation = 1 };
        var n: usize = 0;
        @memcpy(self.buf[n..][0..@sizeOf(abi.TableHeader)], std.mem.asBytes(&head));
        n += @sizeOf(abi.TableHeader);
        const r = std.mem.sliceAsBytes(self.rules[0..self.rule_count]);
        @memcpy(self.buf[n..][0..r.len], r);
        n += r.len;
        const o = std.mem.sliceAsBytes(self.outputs[0..self.output_count]);
        @memcpy(self.buf[n..][0..o.len], o);
        n += o.len;
        return self.buf[0..n];
    }
};

test "lookup by group and port, source filter wins over any-source" {
    const t = try std.testing.allocator.create(Table);
    defer std.testing.allocator.destroy(t);
    var tt = TestTable{};
    tt.rule(1, v4(239, 1, 1, 1), 5000, null);
    tt.rule(2, v4(239, 1, 1, 1), 5001, null);
    tt.rule(3, v4(239, 1, 1, 1), 5000, v4(10, 0, 0, 7));
    try t.build(tt.bytes());
    const any_src = v4(10, 0, 0, 1);
    const src7 = v4(10, 0, 0, 7);
    try std.testing.expectEqual(@as(?u16, 0), t.lookup(&v4(239, 1, 1, 1), 5000, 0, &any_src));
    try std.testing.expectEqual(@as(?u16, 2), t.lookup(&v4(239, 1, 1, 1), 5000, 0, &src7));
    try std.testing.expectEqual(@as(?u16, 1), t.lookup(&v4(239, 1, 1, 1), 5001, 0, &any_src));
    try std.testing.expectEqual(@as(?u16, null), t.lookup(&v4(239, 1, 1, 2), 5000, 0, &any_src));
    try std.testing.expectEqual(@as(?u16, null), t.lookup(&v4(239, 1, 1, 1), 5002, 0, &any_src));
}

test "source-filtered key without a match is known as a key" {
    const t = try std.testing.allocator.create(Table);
    defer std.testing.allocator.destroy(t);
    var tt = TestTable{};
    tt.rule(1, v4(239, 1, 1, 1), 5000, v4(10, 0, 0, 7));
    try t.build(tt.bytes());
    const other = v4(10, 0, 0, 8);
    try std.testing.expectEqual(@as(?u16, null), t.lookup(&v4(239, 1, 1, 1), 5000, 0, &other));
    try std.testing.expect(t.keyExists(&v4(239, 1, 1, 1), 5000, 0));
}

test "duplicate keys and ids are refused; a refused table is left empty" {
    const t = try std.testing.allocator.create(Table);
    defer std.testing.allocator.destroy(t);
    var tt = TestTable{};
    tt.rule(1, v4(239, 1, 1, 1), 5000, null);
    tt.rule(2, v4(239, 1, 1, 1), 5000, null);
    try std.testing.expectError(error.EXIST, t.build(tt.bytes()));
    try std.testing.expectEqual(@as(u32, 0), t.rule_count);
    var tt2 = TestTable{};
    tt2.rule(1, v4(239, 1, 1, 1), 5000, null);
    tt2.rule(1, v4(239, 1, 1, 2), 5000, null);
    try std.testing.expectError(error.EXIST, t.build(tt2.bytes()));
}

test "malformed table buffers are refused" {
    const t = try std.testing.allocator.create(Table);
    defer std.testing.allocator.destroy(t);
    var tt = TestTable{};
    tt.rule(1, v4(239, 1, 1, 1), 5000, null);
    const good = tt.bytes();
    try std.testing.expectError(error.INVAL, t.build(good[0 .. good.len - 1]));
    try std.testing.expectError(error.INVAL, t.build(good[0..3]));
    tt.rules[0].output_count = 2;
    try std.testing.expectError(error.INVAL, t.build(tt.bytes()));
    tt.rules[0].output_count = 1;
    tt.rules[0].port = 0;
    try std.testing.expectError(error.INVAL, t.build(tt.bytes()));
}

test "full table: every rule found, misses stay misses" {
    const t = try std.testing.allocator.create(Table);
    defer std.testing.allocator.destroy(t);
    const n = constants.rules_max;
    const buf = try std.testing.allocator.alloc(u8, @sizeOf(abi.TableHeader) + n * @sizeOf(abi.RuleDesc) + n * @sizeOf(abi.OutputDesc));
    defer std.testing.allocator.free(buf);
    const head = abi.TableHeader{ .magic = abi.table_magic, .rule_count = n, .output_count = n, .generation = 3 };
    @memcpy(buf[0..@sizeOf(abi.TableHeader)], std.mem.asBytes(&head));
    for (0..n) |i| {
        const rule = abi.RuleDesc{
            .id = i + 1,
            .group = v4(239, 2, @intCast(i >> 8), @intCast(i & 0xff)),
            .source = std.mem.zeroes(abi.Addr),
            .port = @intCast(5000 + (i % 7)),
            .flags = 0,
            .output_first = @intCast(i),
            .output_count = 1,
        };
        @memcpy(buf[@sizeOf(abi.TableHeader) + i * @sizeOf(abi.RuleDesc) ..][0..@sizeOf(abi.RuleDesc)], std.mem.asBytes(&rule));
        const out = abi.OutputDesc{ .id = i + 1, .addr = v4(239, 3, 0, 1), .source = std.mem.zeroes(abi.Addr), .port = 6000, .ttl = 1, .ifindex = 0 };
        @memcpy(buf[@sizeOf(abi.TableHeader) + n * @sizeOf(abi.RuleDesc) + i * @sizeOf(abi.OutputDesc) ..][0..@sizeOf(abi.OutputDesc)], std.mem.asBytes(&out));
    }
    try t.build(buf);
    try std.testing.expectEqual(@as(u32, 3), t.generation);
    const src = v4(10, 0, 0, 1);
    for (0..n) |i| {
        const found = t.lookup(&v4(239, 2, @intCast(i >> 8), @intCast(i & 0xff)), @intCast(5000 + (i % 7)), 0, &src);
        try std.testing.expectEqual(@as(?u16, @intCast(i)), found);
        try std.testing.expectEqual(@as(?u16, null), t.lookup(&v4(239, 2, @intCast(i >> 8), @intCast(i & 0xff)), @intCast(5000 + ((i + 1) % 7)), 0, &src));
    }
}

test "rules with the same group and port on different VLANs coexist; untagged is its own key" {
    const t = try std.testing.allocator.create(Table);
    defer std.testing.allocator.destroy(t);
    var tt = TestTable{};
    tt.rule(1, v4(239, 1, 1, 1), 5000, null);
    tt.rule(2, v4(239, 1, 1, 1), 5000, null);
    tt.rules[1].vlan_id = 100;
    tt.rule(3, v4(239, 1, 1, 1), 5000, null);
    tt.rules[2].vlan_id = 200;
    try t.build(tt.bytes());
    const any_src = v4(10, 0, 0, 1);
    try std.testing.expectEqual(@as(?u16, 0), t.lookup(&v4(239, 1, 1, 1), 5000, 0, &any_src));
    try std.testing.expectEqual(@as(?u16, 1), t.lookup(&v4(239, 1, 1, 1), 5000, 100, &any_src));
    try std.testing.expectEqual(@as(?u16, 2), t.lookup(&v4(239, 1, 1, 1), 5000, 200, &any_src));
    try std.testing.expectEqual(@as(?u16, null), t.lookup(&v4(239, 1, 1, 1), 5000, 300, &any_src));
    try std.testing.expect(!t.keyExists(&v4(239, 1, 1, 1), 5000, 300));
    // The same VLAN twice is a duplicate key; a VID past 4094 is refused.
    tt.rules[2].vlan_id = 100;
    try std.testing.expectError(error.EXIST, t.build(tt.bytes()));
    tt.rules[2].vlan_id = 4095;
    try std.testing.expectError(error.INVAL, t.build(tt.bytes()));
}
