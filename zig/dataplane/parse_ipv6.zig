//! IPv6 / UDP parsing of one received frame (the IPv6 half of parse.zig): the fixed header, the
//! extension headers that may precede UDP, and the UDP header.
//!
//! Everything after the Ethernet header is controlled by whoever sent the frame, so the walk over
//! extension headers is bounded twice: by a fixed count (`extension_headers_max`) and by the
//! IPv6 payload length, which is itself checked against the frame. Each header's length is read
//! only after its first 8 bytes are known to be inside the payload, and each step moves forward
//! by at least 8 bytes, so a hostile chain can neither loop nor read out of bounds.
//!
//! What is relayed: hop-by-hop options (first only, as RFC 8200 4.1 requires), destination
//! options and routing headers with no segments left, in any number up to the bound, then UDP.
//! What is dropped, each with its reason: fragments (no per-packet relay can relay a fragment),
//! jumbograms (RFC 2675: payload length 0 with a hop-by-hop header, or a Jumbo Payload option),
//! routing headers with segments left (this host is not the packet's final destination), chains
//! past the bound or past the payload, and IPv4-mapped addresses in the header (never valid on
//! the wire, RFC 4291 2.5.5.2, and they would alias IPv4 rules, which use that form).
const std = @import("std");
const assert = std.debug.assert;
const abi = @import("../abi.zig");
const parse = @import("parse.zig");

pub const header_bytes: u32 = 40;
pub const extension_headers_max: u32 = @import("../constants.zig").ipv6_extension_headers_max;
/// Largest extension header: (255 + 1) * 8 bytes.
pub const extension_bytes_max: u32 = 256 * 8;

pub const next_hop_by_hop: u8 = 0;
pub const next_routing: u8 = 43;
pub const next_fragment: u8 = 44;
pub const next_destination_options: u8 = 60;
pub const next_udp: u8 = parse.ip_protocol_udp;
pub const next_icmpv6: u8 = 58;

/// Hop-by-hop option types (RFC 8200 4.2, RFC 2675).
const option_pad1: u8 = 0;
const option_jumbo_payload: u8 = 0xc2;

comptime {
    // The largest offset a packet can report fits the u32 fields.
    assert(parse.eth_header_bytes + parse.vlan_tags_max * parse.vlan_tag_bytes + header_bytes +
        std.math.maxInt(u16) < std.math.maxInt(u32));
    // Offsets in a walk stay far from overflow even when every header has the largest length.
    assert(header_bytes + extension_headers_max * extension_bytes_max < std.math.maxInt(u32) / 2);
}

/// Parses the IPv6 packet at `l3_offset` (the link layer already parsed by parse.zig).
pub fn parseIpv6(frame: []const u8, l3_offset: u32, vlan_id: u16, tags: u8, options: parse.Options) parse.Result {
    assert(l3_offset <= frame.len);
    const ip = frame[l3_offset..];
    if (ip.len < header_bytes) return .{ .drop = .ipv6_truncated };
    if (ip[0] >> 4 != 6) return .{ .drop = .ipv6_bad_header };

    const payload_bytes: u32 = readU16(ip, 4);
    const first_next = ip[6];
    // RFC 2675: a jumbogram says payload length 0 and carries its length in hop-by-hop options.
    if (payload_bytes == 0 and first_next == next_hop_by_hop) return .{ .drop = .ipv6_jumbogram };
    // A frame may run past the payload (Ethernet padding): the payload length is the end.
    if (header_bytes + payload_bytes > ip.len) return .{ .drop = .ipv6_truncated };
    if (isV4Mapped(ip[8..24]) or isV4Mapped(ip[24..40])) return .{ .drop = .ipv6_bad_header };

    const datagram = ip[0 .. header_bytes + payload_bytes];
    const udp_offset = switch (walkExtensions(datagram, first_next)) {
        .ok => |offset| offset,
        .drop => |reason| return .{ .drop = reason },
    };
    assert(udp_offset >= header_bytes and udp_offset <= datagram.len);
    return parseUdp6(datagram, udp_offset, l3_offset, vlan_id, tags, options);
}

const Walk = union(enum) { ok: u32, drop: parse.Drop };

/// Follows the Next Header chain from the fixed header to UDP. Returns UDP's offset in
/// `datagram` (the IPv6 packet cut at its payload length).
fn walkExtensions(datagram: []const u8, first_next: u8) Walk {
    var next = first_next;
    var offset: u32 = header_bytes;
    var count: u32 = 0;
    while (count <= extension_headers_max) : (count += 1) {
        switch (next) {
            next_udp => return .{ .ok = offset },
            next_fragment => return .{ .drop = .ipv6_fragment },
            next_hop_by_hop, next_destination_options, next_routing => {},
            else => return .{ .drop = .not_udp },
        }
        // Hop-by-hop options may only follow the fixed header.
        if (next == next_hop_by_hop and count != 0) return .{ .drop = .ipv6_bad_extension };
        if (count == extension_headers_max) return .{ .drop = .ipv6_bad_extension };
        if (offset + 8 > datagram.len) return .{ .drop = .ipv6_bad_extension };
        const length: u32 = (@as(u32, datagram[offset + 1]) + 1) * 8;
        if (offset + length > datagram.len) return .{ .drop = .ipv6_bad_extension };
        const header = datagram[offset..][0..length];
        switch (next) {
            // Segments left: the packet is on its way to another node; not ours to relay.
            next_routing => if (header[3] != 0) return .{ .drop = .ipv6_bad_extension },
            next_hop_by_hop => switch (scanOptions(header)) {
                .ok => {},
                .drop => |reason| return .{ .drop = reason },
            },
            else => {},
        }
        next = header[0];
        offset += length;
        assert(length >= 8 and length <= extension_bytes_max);
    }
    unreachable; // The loop returns by the bound at count == extension_headers_max.
}

/// Walks the TLV options of a hop-by-hop header (after its 2-byte head): a Jumbo Payload option
/// makes the packet a jumbogram; an option running past the header is malformed. Each step
/// moves forward by at least one byte inside a header of at most 2048 bytes.
fn scanOptions(header: []const u8) union(enum) { ok, drop: parse.Drop } {
    assert(header.len >= 8 and header.len <= extension_bytes_max and header.len % 8 == 0);
    var at: u32 = 2;
    while (at < header.len) {
        const kind = header[at];
        if (kind == option_pad1) {
            at += 1;
            continue;
        }
        if (at + 2 > header.len) return .{ .drop = .ipv6_bad_extension };
        const end = at + 2 + @as(u32, header[at + 1]);
        if (end > header.len) return .{ .drop = .ipv6_bad_extension };
        if (kind == option_jumbo_payload) return .{ .drop = .ipv6_jumbogram };
        at = end;
    }
    return .ok;
}

fn parseUdp6(datagram: []const u8, udp_offset: u32, l3_offset: u32, vlan_id: u16, tags: u8, options: parse.Options) parse.Result {
    const udp = datagram[udp_offset..];
    if (udp.len < parse.udp_header_bytes) return .{ .drop = .udp_truncated };
    const udp_bytes: u32 = readU16(udp, 4);
    // Length 0 is a UDP jumbogram (RFC 2675 4); its IPv6 header was refused already.
    if (udp_bytes < parse.udp_header_bytes) return .{ .drop = .udp_bad_length };
    if (udp_bytes > udp.len) return .{ .drop = .udp_truncated };
    // Over IPv6 the checksum is mandatory (RFC 8200 8.1): zero is as wrong as a bad one.
    if (options.verify_udp_checksum and
        (readU16(udp, 6) == 0 or !udpChecksumOk(datagram[8..40], udp[0..udp_bytes]))) return .{ .drop = .udp_bad_checksum };

    return .{ .ok = .{
        .dst = datagram[24..40].*,
        .src = datagram[8..24].*,
        .dst_port = readU16(udp, 2),
        .src_port = readU16(udp, 0),
        .payload_offset = l3_offset + udp_offset + parse.udp_header_bytes,
        .payload_len = udp_bytes - parse.udp_header_bytes,
        .vlan_id = vlan_id,
        .vlan_tags = tags,
        // Traffic class (DSCP and ECN), as IPv4's TOS byte; hop limit as TTL.
        .tos = @truncate(readU16(datagram, 0) >> 4),
        .ttl = datagram[7],
    } };
}

/// RFC 8200 8.1 pseudo-header: source, destination, upper-layer length (32 bits), three zero
/// bytes, next header 17; then the UDP datagram with its checksum field. All ones when right.
pub fn udpChecksumOk(addresses: *const [32]u8, udp: []const u8) bool {
    assert(udp.len >= parse.udp_header_bytes and udp.len <= std.math.maxInt(u16));
    var pseudo: [40]u8 = undefined;
    @memcpy(pseudo[0..32], addresses);
    std.mem.writeInt(u32, pseudo[32..36], @intCast(udp.len), .big);
    pseudo[36..39].* = @splat(0);
    pseudo[39] = next_udp;
    return parse.foldSum(parse.sumWords(&pseudo) + parse.sumWords(udp)) == 0xffff;
}

/// Sources no router forwards from, in IPv6: the unspecified address (::), loopback (::1) and
/// multicast (ff00::/8). Link-local sources (fe80::/10) are legitimate on their link.
pub inline fn martianSource(src: *const abi.Addr) bool {
    if (src[0] == 0xff) return true;
    if (!std.mem.allEqual(u8, src[0..15], 0)) return false;
    return src[15] <= 1;
}

pub inline fn isV4Mapped(addr: []const u8) bool {
    assert(addr.len == 16);
    return std.mem.allEqual(u8, addr[0..10], 0) and addr[10] == 0xff and addr[11] == 0xff;
}

inline fn readU16(bytes: []const u8, offset: usize) u16 {
    return std.mem.readInt(u16, bytes[offset..][0..2], .big);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

const testing = std.testing;

const Ext = struct {
    next_header_type: u8,
    /// Header bytes, a multiple of 8 (8..2048).
    bytes: u32 = 8,
    /// Routing header: segments left.
    segments_left: u8 = 0,
    /// Hop-by-hop: put a Jumbo Payload option in it.
    jumbo_option: bool = false,
};

const Spec6 = struct {
    tag: ?u16 = null,
    exts: []const Ext = &.{},
    /// Next header after the chain.
    last_next: u8 = next_udp,
    src: abi.Addr = .{ 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 },
    dst: abi.Addr = .{ 0xff, 0x3e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 },
    traffic_class: u8 = 0,
    hop_limit: u8 = 1,
    payload_bytes: u32 = 18,
    /// Correct UDP checksum (else 0).
    checksum: bool = true,
    frame_bytes_min: u32 = 0,
};

fn l3Of(spec: Spec6) u32 {
    return parse.eth_header_bytes + if (spec.tag != null) parse.vlan_tag_bytes else 0;
}

/// Writes a well-formed IPv6 frame into `buffer` and returns it.
fn frame6(buffer: []u8, spec: Spec6) []u8 {
    const l3 = l3Of(spec);
    var ext_bytes: u32 = 0;
    for (spec.exts) |e| ext_bytes += e.bytes;
    const payload_length = ext_bytes + parse.udp_header_bytes + spec.payload_bytes;
    const frame_bytes = @max(l3 + header_bytes + payload_length, spec.frame_bytes_min);
    assert(frame_bytes <= buffer.len);
    const frame = buffer[0..frame_bytes];
    @memset(frame, 0);
    @memcpy(frame[0..6], &[6]u8{ 0x33, 0x33, 0, 0, 0, 1 });
    @memcpy(frame[6..12], &[6]u8{ 0x02, 0, 0, 0, 0, 1 });
    if (spec.tag) |vid| {
        write16(frame, 12, parse.ethertype_vlan);
        write16(frame, 14, vid);
        write16(frame, 16, parse.ethertype_ipv6);
    } else write16(frame, 12, parse.ethertype_ipv6);
    const ip = frame[l3..];
    std.mem.writeInt(u32, ip[0..4], (6 << 28) | (@as(u32, spec.traffic_class) << 20) | 0x12345, .big);
    write16(ip, 4, @intCast(payload_length));
    ip[6] = if (spec.exts.len > 0) spec.exts[0].next_header_type else spec.last_next;
    ip[7] = spec.hop_limit;
    @memcpy(ip[8..24], &spec.src);
    @memcpy(ip[24..40], &spec.dst);
    var at: u32 = header_bytes;
    for (spec.exts, 0..) |e, i| {
        assert(e.bytes % 8 == 0 and e.bytes >= 8 and e.bytes <= extension_bytes_max);
        const h = ip[at..][0..e.bytes];
        h[0] = if (i + 1 < spec.exts.len) spec.exts[i + 1].next_header_type else spec.last_next;
        h[1] = @intCast(e.bytes / 8 - 1);
        if (e.next_header_type == next_routing) {
            h[2] = 4; // Segment routing header type; its contents do not matter when none is left.
            h[3] = e.segments_left;
        } else {
            // PadN options (at most 255 bytes of padding each) over the rest of the header.
            var at_option: u32 = 2;
            while (at_option < e.bytes) {
                const remaining = e.bytes - at_option;
                if (remaining == 1) break; // Pad1 is a zero byte.
                const pad: u32 = @min(remaining - 2, 255);
                h[at_option] = 1;
                h[at_option + 1] = @intCast(pad);
                at_option += 2 + pad;
            }
            if (e.jumbo_option) {
                h[2] = option_jumbo_payload;
                h[3] = 4;
                std.mem.writeInt(u32, h[4..8], 70000, .big);
            }
        }
        at += e.bytes;
    }
    const udp = ip[at..];
    write16(udp, 0, 5000);
    write16(udp, 2, 6000);
    write16(udp, 4, @intCast(parse.udp_header_bytes + spec.payload_bytes));
    for (udp[8..][0..spec.payload_bytes], 0..) |*b, i| b.* = @truncate(i + 7);
    if (spec.checksum) fixChecksum6(ip, at, parse.udp_header_bytes + spec.payload_bytes);
    return frame;
}

/// Reference checksum: RFC 1071 over big-endian words of the pseudo-header and datagram.
fn fixChecksum6(ip: []u8, udp_offset: u32, udp_bytes: u32) void {
    const udp = ip[udp_offset..][0..udp_bytes];
    write16(udp, 6, 0);
    var scratch: [40 + 4096]u8 = undefined;
    @memcpy(scratch[0..32], ip[8..40]);
    std.mem.writeInt(u32, scratch[32..36], udp_bytes, .big);
    scratch[36..39].* = @splat(0);
    scratch[39] = next_udp;
    @memcpy(scratch[40..][0..udp_bytes], udp);
    const sum = parse.ipv4Checksum(scratch[0 .. 40 + udp_bytes]);
    write16(udp, 6, if (sum == 0) 0xffff else sum);
}

fn write16(bytes: []u8, offset: u32, value: u16) void {
    std.mem.writeInt(u16, bytes[offset..][0..2], value, .big);
}

fn expectOk6(frame: []const u8, options: parse.Options) !parse.Packet {
    return switch (parse.parseWith(frame, options)) {
        .ok => |p| p,
        .drop => |reason| {
            std.debug.print("unexpected drop: {s}\n", .{@tagName(reason)});
            return error.TestUnexpectedDrop;
        },
    };
}

fn expectDrop6(expected: parse.Drop, frame: []const u8) !void {
    switch (parse.parseWith(frame, .{ .verify_udp_checksum = true })) {
        .ok => return error.TestExpectedDrop,
        .drop => |reason| try testing.expectEqual(expected, reason),
    }
}

test "IPv6 UDP: raw addresses, ports, hop limit, traffic class and the payload" {
    var buffer: [256]u8 = undefined;
    const frame = frame6(&buffer, .{ .traffic_class = 0xb9, .hop_limit = 1 });
    const packet = try expectOk6(frame, .{ .verify_udp_checksum = true });
    try testing.expectEqualSlices(u8, &.{ 0xff, 0x3e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 }, &packet.dst);
    try testing.expectEqual(@as(u8, 0xfe), packet.src[0]);
    try testing.expectEqual(@as(u16, 6000), packet.dst_port);
    try testing.expectEqual(@as(u16, 5000), packet.src_port);
    try testing.expectEqual(@as(u32, 14 + 40 + 8), packet.payload_offset);
    try testing.expectEqual(@as(u32, 18), packet.payload_len);
    try testing.expectEqual(@as(u8, 0xb9), packet.tos);
    try testing.expectEqual(@as(u8, 1), packet.ttl);
    try testing.expectEqual(@as(u8, 7), frame[packet.payload_offset]);
}

test "hop-by-hop + destination options + routing (no segments left) before UDP are walked" {
    var buffer: [4096]u8 = undefined;
    const chains = [_][]const Ext{
        &.{ .{ .next_header_type = next_hop_by_hop }, .{ .next_header_type = next_destination_options } },
        &.{ .{ .next_header_type = next_hop_by_hop, .bytes = 16 }, .{ .next_header_type = next_routing, .bytes = 24 }, .{ .next_header_type = next_destination_options, .bytes = 2048 } },
        &.{.{ .next_header_type = next_routing }},
        &.{ .{ .next_header_type = next_destination_options }, .{ .next_header_type = next_destination_options } },
    };
    for (chains) |chain| {
        const frame = frame6(&buffer, .{ .exts = chain, .tag = 7 });
        const packet = try expectOk6(frame, .{ .verify_udp_checksum = true });
        var ext_bytes: u32 = 0;
        for (chain) |e| ext_bytes += e.bytes;
        try testing.expectEqual(18 + 40 + ext_bytes + 8, packet.payload_offset);
        try testing.expectEqual(@as(u32, 18), packet.payload_len);
        try testing.expectEqual(@as(u16, 7), packet.vlan_id);
        try testing.expectEqual(@as(u8, 7), frame[packet.payload_offset]);
    }
    // Exactly the bound of headers is walked; one more is refused.
    const eight: [extension_headers_max]Ext = @splat(.{ .next_header_type = next_destination_options });
    _ = try expectOk6(frame6(&buffer, .{ .exts = &eight }), .{});
    const nine: [extension_headers_max + 1]Ext = @splat(.{ .next_header_type = next_destination_options });
    try expectDrop6(.ipv6_bad_extension, frame6(&buffer, .{ .exts = &nine }));
}

test "fragments, jumbograms, routing with segments left and misplaced hop-by-hop drop" {
    var buffer: [512]u8 = undefined;
    try expectDrop6(.ipv6_fragment, frame6(&buffer, .{ .exts = &.{.{ .next_header_type = next_fragment }} }));
    try expectDrop6(.ipv6_fragment, frame6(&buffer, .{ .exts = &.{ .{ .next_header_type = next_hop_by_hop }, .{ .next_header_type = next_fragment } } }));
    try expectDrop6(.ipv6_jumbogram, frame6(&buffer, .{ .exts = &.{.{ .next_header_type = next_hop_by_hop, .jumbo_option = true }} }));
    const jumbo = frame6(&buffer, .{ .exts = &.{.{ .next_header_type = next_hop_by_hop }} });
    write16(jumbo, 14 + 4, 0);
    try expectDrop6(.ipv6_jumbogram, jumbo);
    try expectDrop6(.ipv6_bad_extension, frame6(&buffer, .{ .exts = &.{.{ .next_header_type = next_routing, .segments_left = 1 }} }));
    try expectDrop6(.ipv6_bad_extension, frame6(&buffer, .{ .exts = &.{ .{ .next_header_type = next_destination_options }, .{ .next_header_type = next_hop_by_hop } } }));
    // ICMPv6 (an MLD report behind its hop-by-hop header), TCP, No Next Header: not UDP.
    try expectDrop6(.not_udp, frame6(&buffer, .{ .exts = &.{.{ .next_header_type = next_hop_by_hop }}, .last_next = next_icmpv6 }));
    try expectDrop6(.not_udp, frame6(&buffer, .{ .last_next = 6 }));
    try expectDrop6(.not_udp, frame6(&buffer, .{ .last_next = 59 }));
}

test "header checks: version, truncation, payload length, IPv4-mapped addresses" {
    var buffer: [256]u8 = undefined;
    const good = frame6(&buffer, .{});
    for (0..good.len) |len| {
        const expected: parse.Drop = if (len < 14) .eth_truncated else .ipv6_truncated;
        try expectDrop6(expected, good[0..len]);
    }
    var frame = frame6(&buffer, .{});
    frame[14] = 0x45;
    try expectDrop6(.ipv6_bad_header, frame);
    frame = frame6(&buffer, .{});
    write16(frame, 14 + 4, 8 + 18 + 1);
    try expectDrop6(.ipv6_truncated, frame);
    const mapped: abi.Addr = .{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 239, 1, 1, 1 };
    try expectDrop6(.ipv6_bad_header, frame6(&buffer, .{ .dst = mapped }));
    try expectDrop6(.ipv6_bad_header, frame6(&buffer, .{ .src = mapped }));
    // Padding after the payload is not payload.
    const padded = frame6(&buffer, .{ .payload_bytes = 0, .frame_bytes_min = 120 });
    try testing.expectEqual(@as(u32, 0), (try expectOk6(padded, .{ .verify_udp_checksum = true })).payload_len);
    // A chain cut by the payload length.
    const cut = frame6(&buffer, .{ .exts = &.{.{ .next_header_type = next_destination_options, .bytes = 64 }}, .payload_bytes = 0 });
    write16(cut, 14 + 4, 40);
    try expectDrop6(.ipv6_bad_extension, cut);
}

test "UDP over IPv6: lengths and the mandatory checksum" {
    var buffer: [256]u8 = undefined;
    const frame = frame6(&buffer, .{ .payload_bytes = 31, .exts = &.{.{ .next_header_type = next_hop_by_hop }} });
    _ = try expectOk6(frame, .{ .verify_udp_checksum = true });
    const udp = 14 + 40 + 8;
    frame[udp + 8 + 5] ^= 1;
    try expectDrop6(.udp_bad_checksum, frame);
    // The kernel vouched for it: not verified.
    _ = try expectOk6(frame, .{});
    const zero = frame6(&buffer, .{ .checksum = false });
    try expectDrop6(.udp_bad_checksum, zero);
    _ = try expectOk6(zero, .{});
    for (0..8) |len| {
        const f = frame6(&buffer, .{});
        write16(f, 14 + 40 + 4, @intCast(len));
        try expectDrop6(.udp_bad_length, f);
    }
    const long = frame6(&buffer, .{});
    write16(long, 14 + 40 + 4, 8 + 18 + 1);
    try expectDrop6(.udp_truncated, long);
    const short_payload = frame6(&buffer, .{ .payload_bytes = 0 });
    write16(short_payload, 14 + 4, 4);
    try expectDrop6(.udp_truncated, short_payload);
}

test "martian IPv6 sources: ::, ::1 and multicast; link-local and global are legitimate" {
    const zero: abi.Addr = @splat(0);
    var loopback: abi.Addr = @splat(0);
    loopback[15] = 1;
    var two: abi.Addr = @splat(0);
    two[15] = 2;
    const multicast: abi.Addr = .{ 0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfb };
    const link_local: abi.Addr = .{ 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
    const global: abi.Addr = .{ 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
    try testing.expect(martianSource(&zero));
    try testing.expect(martianSource(&loopback));
    try testing.expect(martianSource(&multicast));
    try testing.expect(!martianSource(&two));
    try testing.expect(!martianSource(&link_local));
    try testing.expect(!martianSource(&global));
}

/// Parses and checks that an accepted payload lies inside the frame; returns the result.
fn expectInside(frame: []const u8, options: parse.Options) !parse.Result {
    const result = parse.parseWith(frame, options);
    switch (result) {
        .ok => |packet| {
            try testing.expect(packet.payload_offset <= frame.len);
            try testing.expect(packet.payload_len <= frame.len - packet.payload_offset);
            _ = frame[packet.payload_offset..][0..packet.payload_len];
        },
        .drop => |reason| try testing.expect(@intFromEnum(reason) < parse.drop_count),
    }
    return result;
}

test "fuzz: random and mutated extension chains end inside the frame, by their bound" {
    var prng = std.Random.DefaultPrng.init(0x6970_7636_6368_6169);
    const random = prng.random();
    var buffer: [4096]u8 = undefined;
    const kinds = [_]u8{ next_hop_by_hop, next_destination_options, next_routing, next_fragment, next_udp, next_icmpv6, 59, 51 };
    var oks: u32 = 0;
    var reasons = std.EnumSet(parse.Drop).empty;

    // Random bytes behind an IPv6 EtherType and version nibble: headers whose lengths and next
    // headers are anything.
    for (0..6000) |_| {
        const frame = buffer[0..random.uintAtMost(usize, 600)];
        random.bytes(frame);
        if (frame.len >= 15) {
            write16(frame, 12, parse.ethertype_ipv6);
            frame[14] = 0x60 | (frame[14] & 0x0f);
            if (frame.len >= 14 + 40 and random.boolean()) {
                // A payload length that fits, so the walk runs.
                write16(frame, 18, @intCast(random.uintAtMost(usize, frame.len - 54)));
                frame[20] = kinds[random.uintLessThan(usize, kinds.len)];
            }
        }
        switch (try expectInside(frame, .{ .verify_udp_checksum = random.boolean() })) {
            .ok => oks += 1,
            .drop => |reason| reasons.insert(reason),
        }
    }

    // Valid chains of random kinds and lengths, then mutated: next headers, lengths, payload
    // length, cut short.
    for (0..6000) |_| {
        var exts: [extension_headers_max + 2]Ext = undefined;
        const n = random.uintAtMost(usize, exts.len);
        for (exts[0..n], 0..) |*e, i| {
            const pick = [_]u8{ next_hop_by_hop, next_destination_options, next_routing };
            const kind = if (i == 0) pick[random.uintLessThan(usize, 3)] else pick[1 + random.uintLessThan(usize, 2)];
            e.* = .{ .next_header_type = kind, .bytes = 8 * (1 + random.uintLessThan(u32, 12)) };
        }
        const spec = Spec6{ .exts = exts[0..n], .payload_bytes = random.uintAtMost(u32, 200) };
        const frame = frame6(&buffer, spec);
        const valid = try expectInside(frame, .{ .verify_udp_checksum = true }) == .ok;
        try testing.expectEqual(n <= extension_headers_max, valid);
        if (valid) oks += 1;
        const mutations = random.intRangeAtMost(u32, 1, 6);
        for (0..mutations) |_| {
            const span = @min(frame.len, 14 + 40 + 8 * 12 * 3);
            const at = 14 + random.uintLessThan(usize, span - 14);
            frame[at] = switch (random.uintLessThan(u8, 3)) {
                0 => kinds[random.uintLessThan(usize, kinds.len)],
                1 => random.int(u8),
                else => frame[at] ^ (@as(u8, 1) << random.int(u3)),
            };
        }
        const len = if (random.uintLessThan(u32, 4) == 0) random.uintAtMost(usize, frame.len) else frame.len;
        switch (try expectInside(frame[0..len], .{ .verify_udp_checksum = random.boolean() })) {
            .ok => oks += 1,
            .drop => |reason| reasons.insert(reason),
        }
    }
    try testing.expect(oks > 1000);
    // The mutations reached every IPv6 reason.
    for ([_]parse.Drop{ .ipv6_truncated, .ipv6_bad_header, .ipv6_fragment, .ipv6_bad_extension, .ipv6_jumbogram, .not_udp, .udp_truncated, .udp_bad_length }) |reason| {
        if (!reasons.contains(reason)) {
            std.debug.print("fuzz never reached {s}\n", .{@tagName(reason)});
            return error.TestFuzzCoverage;
        }
    }
}
