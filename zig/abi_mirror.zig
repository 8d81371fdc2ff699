//! The one source of the TypeScript mirror of the ABI. From the Zig types themselves (struct
//! layouts, counter enums, limits) this derives, at compile time:
//!   - `description`: one line per fact ("RuleDesc.port = offset 40, 2 bytes",
//!     "parse.Drop[7] = ipv4_fragment", "constants.rules_max = 1024"). The library returns it
//!     (`mcr_abi_describe`) and TypeScript compares it line by line with the copy in the
//!     generated module, so a library and a mirror from different sources never run together,
//!     and a difference is named (field, counter or limit), not only counted.
//!   - `typescript`: src/native/abi.generated.ts, written by `zig build` (this file's `main`
//!     prints it; build.zig copies it into the source tree). `zig build test` fails while the
//!     committed file differs from what these types give.
//! Nothing here is hand-maintained except the lists of what is mirrored.
const std = @import("std");
const abi = @import("abi.zig");
const constants = @import("constants.zig");
const link = @import("link.zig");
const parse = @import("dataplane/parse.zig");
const stats = @import("dataplane/stats.zig");
const gen = @import("tools/gen.zig");
const sink = @import("tools/sink.zig");

const Named = struct { name: []const u8, T: type };

/// Structures that cross the boundary (TypeScript writes or reads them).
const structs = [_]Named{
    .{ .name = "TableHeader", .T = abi.TableHeader },
    .{ .name = "RuleDesc", .T = abi.RuleDesc },
    .{ .name = "OutputDesc", .T = abi.OutputDesc },
    .{ .name = "RingGeometry", .T = abi.RingGeometry },
    .{ .name = "DpConfig", .T = abi.DpConfig },
    .{ .name = "PacketSetup", .T = abi.PacketSetup },
    .{ .name = "LinkInfo", .T = abi.LinkInfo },
    .{ .name = "NlEvent", .T = abi.NlEvent },
    .{ .name = "GenConfig", .T = abi.GenConfig },
    .{ .name = "SinkConfig", .T = abi.SinkConfig },
    .{ .name = "PayloadHeader", .T = abi.PayloadHeader },
};

/// Word lists TypeScript reads by name: the TS constant, the Zig enum. The enum's values must
/// be 0..n-1 (they index a region of u64 words).
const Words = struct { ts: []const u8, zig: []const u8, E: type };
const word_lists = [_]Words{
    .{ .ts = "STATS_HEADER", .zig = "stats.Header", .E = stats.Header },
    .{ .ts = "WORKER_COUNTERS", .zig = "stats.Worker", .E = stats.Worker },
    .{ .ts = "PARSE_DROPS", .zig = "parse.Drop", .E = parse.Drop },
    .{ .ts = "RULE_COUNTERS", .zig = "stats.Rule", .E = stats.Rule },
    .{ .ts = "OUTPUT_COUNTERS", .zig = "stats.Output", .E = stats.Output },
    .{ .ts = "GEN_COUNTERS", .zig = "gen.Counter", .E = gen.Counter },
    .{ .ts = "SINK_GLOBAL_COUNTERS", .zig = "sink.GlobalCounter", .E = sink.GlobalCounter },
    .{ .ts = "SINK_STREAM_COUNTERS", .zig = "sink.StreamCounter", .E = sink.StreamCounter },
};

/// Single values TypeScript needs, beyond constants.zig (which is mirrored whole as LIMITS).
const Value = struct { ts: []const u8, zig: []const u8, value: comptime_int };
const values = [_]Value{
    .{ .ts = "ABI_VERSION", .zig = "abi.version", .value = abi.version },
    .{ .ts = "TABLE_MAGIC", .zig = "abi.table_magic", .value = abi.table_magic },
    .{ .ts = "RULE_FLAG_SOURCE_FILTER", .zig = "abi.rule_flag_source_filter", .value = abi.rule_flag_source_filter },
    .{ .ts = "RULE_FLAG_NO_LOOP_GUARD", .zig = "abi.rule_flag_no_loop_guard", .value = abi.rule_flag_no_loop_guard },
    .{ .ts = "DSCP_COPY", .zig = "abi.dscp_copy", .value = abi.dscp_copy },
    .{ .ts = "OUTPUT_FLAG_GSO_OFF", .zig = "abi.output_flag_gso_off", .value = abi.output_flag_gso_off },
    .{ .ts = "GEN_MODE_UDP", .zig = "abi.gen_mode_udp", .value = abi.gen_mode_udp },
    .{ .ts = "GEN_MODE_RAW", .zig = "abi.gen_mode_raw", .value = abi.gen_mode_raw },
    .{ .ts = "PAYLOAD_MAGIC", .zig = "abi.payload_magic", .value = abi.payload_magic },
    .{ .ts = "STATS_MAGIC", .zig = "stats.magic", .value = stats.magic },
    .{ .ts = "STATS_LAYOUT_VERSION", .zig = "stats.layout_version", .value = stats.layout_version },
    .{ .ts = "STATS_HEADER_WORDS", .zig = "stats.header_words", .value = stats.header_words },
    .{ .ts = "STATS_TOTAL_WORDS", .zig = "stats.total_words", .value = stats.total_words },
    .{ .ts = "IFF_UP", .zig = "link.IFF_UP", .value = link.IFF_UP },
};

fn print(comptime fmt: []const u8, args: anytype) []const u8 {
    return std.fmt.comptimePrint(fmt, args);
}

/// "rules_max" -> "rulesMax".
fn camel(comptime snake: []const u8) []const u8 {
    comptime {
        var out: []const u8 = "";
        var upper = false;
        for (snake) |c| {
            if (c == '_') {
                upper = true;
            } else {
                out = out ++ &[_]u8{if (upper) std.ascii.toUpper(c) else c};
                upper = false;
            }
        }
        return out;
    }
}

fn fieldNames(comptime T: type) []const [:0]const u8 {
    return @typeInfo(T).@"struct".field_names;
}

fn fieldType(comptime T: type, comptime i: usize) type {
    return @typeInfo(T).@"struct".field_types[i];
}

/// The integer constants of constants.zig, in declaration order.
fn limitNames() []const []const u8 {
    comptime {
        var out: []const []const u8 = &.{};
        for (@typeInfo(constants).@"struct".decl_names) |name| {
            const T = @TypeOf(@field(constants, name));
            if (@typeInfo(T) == .int or @typeInfo(T) == .comptime_int) out = out ++ &[_][]const u8{name};
        }
        return out;
    }
}

fn enumNames(comptime E: type) []const [:0]const u8 {
    comptime {
        const info = @typeInfo(E).@"enum";
        for (info.field_values, 0..) |v, i| {
            if (v != i) @compileError(@typeName(E) ++ ": counter enums must number their fields 0..n-1");
        }
        return info.field_names;
    }
}

/// The facts both sides must agree on, one per line.
pub const description: []const u8 = blk: {
    @setEvalBranchQuota(200_000);
    var out: []const u8 = "";
    for (values) |v| out = out ++ print("{s} = {d}\n", .{ v.zig, v.value });
    for (structs) |s| {
        out = out ++ print("{s} = size {d}, align {d}\n", .{ s.name, @sizeOf(s.T), @alignOf(s.T) });
        for (fieldNames(s.T), 0..) |f, i| {
            out = out ++ print("{s}.{s} = offset {d}, {d} bytes\n", .{ s.name, f, @offsetOf(s.T, f), @sizeOf(fieldType(s.T, i)) });
        }
    }
    for (word_lists) |w| {
        for (enumNames(w.E), 0..) |name, i| out = out ++ print("{s}[{d}] = {s}\n", .{ w.zig, i, name });
    }
    for (@typeInfo(abi.NlEventKind).@"enum".field_names, @typeInfo(abi.NlEventKind).@"enum".field_values) |name, v| {
        out = out ++ print("abi.NlEventKind.{s} = {d}\n", .{ name, v });
    }
    for (limitNames()) |name| out = out ++ print("constants.{s} = {d}\n", .{ name, @field(constants, name) });
    break :blk out;
};

/// src/native/abi.generated.ts.
pub const typescript: []const u8 = blk: {
    @setEvalBranchQuota(200_000);
    var out: []const u8 =
        \\// GENERATED by `zig build` from the Zig types (zig/abi_mirror.zig): DO NOT EDIT.
        \\// Change the Zig side (zig/abi.zig, zig/constants.zig, the counter enums) and run `zig build`;
        \\// `zig build test` fails while this file differs from what the Zig types give, and the
        \\// library refuses to load against a mirror whose ABI_DESCRIPTION differs from its own.
        \\/* eslint-disable */
        \\
        \\
    ;
    for (values) |v| {
        // Past 2^53 a JavaScript number is not exact: such values are bigints.
        const suffix = if (v.value > (1 << 53)) "n" else "";
        out = out ++ print("/** {s} */\nexport const {s} = {d}{s};\n", .{ v.zig, v.ts, v.value, suffix });
    }
    out = out ++ "\n/** Struct layouts: size, alignment, and each field's offset and size in bytes. */\nexport const LAYOUT = {\n";
    for (structs) |s| {
        out = out ++ print("  {s}: {{\n    size: {d},\n    align: {d},\n    fields: {{\n", .{ s.name, @sizeOf(s.T), @alignOf(s.T) });
        for (fieldNames(s.T), 0..) |f, i| {
            out = out ++ print("      {s}: {{ offset: {d}, size: {d} }},\n", .{ f, @offsetOf(s.T, f), @sizeOf(fieldType(s.T, i)) });
        }
        out = out ++ "    },\n  },\n";
    }
    out = out ++ "} as const;\n";
    for (word_lists) |w| {
        out = out ++ print("\n/** {s}, in word order. */\nexport const {s} = [\n", .{ w.zig, w.ts });
        for (enumNames(w.E)) |name| out = out ++ print("  \"{s}\",\n", .{name});
        out = out ++ "] as const;\n";
    }
    out = out ++ "\n/** abi.NlEventKind: the kind byte of an NlEvent. */\nexport const NL_EVENT_KINDS = {\n";
    for (@typeInfo(abi.NlEventKind).@"enum".field_names, @typeInfo(abi.NlEventKind).@"enum".field_values) |name, v| {
        out = out ++ print("  {d}: \"{s}\",\n", .{ v, name });
    }
    out = out ++ "} as const;\n\n/** Every integer constant of zig/constants.zig. */\nexport const LIMITS = {\n";
    for (limitNames()) |name| out = out ++ print("  {s}: {d},\n", .{ camel(name), @field(constants, name) });
    out = out ++ "} as const;\n\n/** What mcr_abi_describe returns for the library these types build. */\nexport const ABI_DESCRIPTION = `";
    out = out ++ description;
    out = out ++ "`;\n";
    break :blk out;
};

pub fn main() void {
    var rest: []const u8 = typescript;
    while (rest.len > 0) {
        const rc = std.os.linux.write(1, rest.ptr, rest.len);
        switch (std.os.linux.errno(rc)) {
            .SUCCESS => rest = rest[rc..],
            .INTR => continue,
            else => std.process.exit(1),
        }
    }
}

test "the description names each field with its offset and each counter with its index" {
    try std.testing.expect(std.mem.indexOf(u8, description, "RuleDesc.port = offset 40, 2 bytes\n") != null);
    try std.testing.expect(std.mem.indexOf(u8, description, "parse.Drop[0] = eth_truncated\n") != null);
    try std.testing.expect(std.mem.indexOf(u8, description, "constants.rules_max = 1024\n") != null);
    try std.testing.expectEqualStrings("rulesMax", comptime camel("rules_max"));
}

test "src/native/abi.generated.ts is what the Zig types give (run `zig build` after changing them)" {
    const committed = @embedFile("abi_generated_ts");
    if (!std.mem.eql(u8, committed, typescript)) {
        std.debug.print("src/native/abi.generated.ts is stale: run `zig build` to regenerate it\n", .{});
        return error.StaleAbiMirror;
    }
}
