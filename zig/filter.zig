//! Classic BPF socket filter for the AF_PACKET RX socket.
//!
//! The kernel runs this before a frame is copied into the RX ring, so frames we never relay
//! cost no ring space and no wakeups. It filters on three things only:
//!   - pkt_type < PACKET_OUTGOING: the host's own transmissions (and looped-back copies) never
//!     reach the ring. This is the loop guard: two rules relaying in opposite directions
//!     between two interfaces must never see each other's output.
//!   - EtherType IPv4 with IPv4 protocol UDP.
//!   - EtherType IPv6 whose next header is UDP or a fragment header, or an extension header
//!     (hop-by-hop, destination options, routing) followed by UDP, a fragment or another of
//!     those extension headers. The parser walks the rest of a chain. Looking one header deep
//!     keeps ICMPv6 out of the ring, MLD reports included (hop-by-hop, then ICMPv6).
//!   - Any frame with a VLAN tag (802.1Q or 802.1ad) still in the frame: the kernel moves the
//!     outer tag into metadata before packet sockets see a frame, so a tag left in the frame
//!     is a second one (QinQ, double 802.1Q). The parser drops and counts those (vlan_stacked).
//! Fragments and malformed IPv4/IPv6/UDP frames pass on purpose: the parser counts each per
//! reason, and a frame dropped here would be invisible to the operator.
const std = @import("std");
const assert = std.debug.assert;
const linux = std.os.linux;
const sys = @import("sys.zig");
const constants = @import("constants.zig");

/// struct sock_filter (linux/filter.h).
pub const Insn = extern struct { code: u16, jt: u8, jf: u8, k: u32 };

/// struct sock_fprog: `filter` is pointer-aligned, so an extern struct gets the kernel's
/// padding after `len` (6 bytes on 64-bit, 2 on 32-bit).
pub const Program = extern struct { len: u16, filter: [*]const Insn };

comptime {
    assert(@sizeOf(Insn) == 8);
    assert(@offsetOf(Program, "filter") == @sizeOf(usize));
    assert(@sizeOf(Program) == 2 * @sizeOf(usize));
}

// Instruction classes (linux/bpf_common.h).
pub const BPF_LD: u16 = 0x00;
pub const BPF_LDX: u16 = 0x01;
pub const BPF_ST: u16 = 0x02;
pub const BPF_STX: u16 = 0x03;
pub const BPF_ALU: u16 = 0x04;
pub const BPF_JMP: u16 = 0x05;
pub const BPF_RET: u16 = 0x06;
pub const BPF_MISC: u16 = 0x07;
// Load sizes.
pub const BPF_W: u16 = 0x00;
pub const BPF_H: u16 = 0x08;
pub const BPF_B: u16 = 0x10;
// Load modes.
pub const BPF_IMM: u16 = 0x00;
pub const BPF_ABS: u16 = 0x20;
pub const BPF_IND: u16 = 0x40;
pub const BPF_MEM: u16 = 0x60;
pub const BPF_LEN: u16 = 0x80;
pub const BPF_MSH: u16 = 0xa0;
// Jump operations.
pub const BPF_JA: u16 = 0x00;
pub const BPF_JEQ: u16 = 0x10;
pub const BPF_JGT: u16 = 0x20;
pub const BPF_JGE: u16 = 0x30;
pub const BPF_JSET: u16 = 0x40;
// ALU operations.
pub const BPF_MUL: u16 = 0x20;
pub const BPF_RSH: u16 = 0x70;
pub const BPF_XOR: u16 = 0xa0;
// MISC operations.
pub const BPF_TAX: u16 = 0x00;
// Operand sources.
pub const BPF_K: u16 = 0x00;
pub const BPF_X: u16 = 0x08;
/// RET source: the accumulator (linux/filter.h).
pub const BPF_A: u16 = 0x10;
/// Most instructions the kernel accepts in one classic program.
pub const BPF_MAXINSNS: u32 = 4096;

/// Ancillary data is loaded with BPF_ABS at offsets from SKF_AD_OFF (-0x1000).
pub const SKF_AD_OFF: u32 = @bitCast(@as(i32, -0x1000));
pub const SKF_AD_PKTTYPE: u32 = 4;

pub const accept_bytes: u32 = constants.filter_accept_bytes;

/// pkt_type values (linux/if_packet.h): everything from OUTGOING up is not a received frame.
const packet_outgoing: u32 = linux.PACKET.OUTGOING;
const ethertype_ipv4: u32 = 0x0800;
const ethertype_ipv6: u32 = 0x86dd;
const ethertype_vlan: u32 = 0x8100;
const ethertype_qinq: u32 = 0x88a8;
const ip_protocol_udp: u32 = 17;
/// Offsets in the frame: EtherType, then for an 802.1Q frame the inner EtherType; the IPv4
/// protocol byte is 9 bytes into the IPv4 header.
const offset_ethertype: u32 = 12;
const offset_protocol: u32 = 14 + 9;
/// IPv6: the fixed header's next header byte, and the first extension header's (its first byte).
const offset_ipv6_next: u32 = 14 + 6;
const offset_ipv6_ext_next: u32 = 14 + 40;
const ipv6_hop_by_hop: u32 = 0;
const ipv6_routing: u32 = 43;
const ipv6_fragment: u32 = 44;
const ipv6_destination_options: u32 = 60;

comptime {
    assert(packet_outgoing == 4);
    assert(linux.PACKET.LOOPBACK > packet_outgoing);
    assert(SKF_AD_OFF == 0xfffff000);
    assert(accept_bytes > constants.mtu_max + 14 + 8);
}

fn stmt(code: u16, k: u32) Insn {
    return .{ .code = code, .jt = 0, .jf = 0, .k = k };
}

/// A conditional jump from instruction `from` to `true_to` / `false_to`. Classic BPF jumps only
/// forward, by an offset counted from the next instruction.
fn jump(code: u16, k: u32, from: u32, true_to: u32, false_to: u32) Insn {
    assert(true_to > from and false_to > from);
    return .{
        .code = code,
        .jt = @intCast(true_to - from - 1),
        .jf = @intCast(false_to - from - 1),
        .k = k,
    };
}

// Instruction indices of the ingress program, so the jumps are written by name.
const at_pkttype = 0;
const at_outgoing = 1;
const at_ethertype = 2;
const at_is_ipv4 = 3;
const at_protocol = 4;
const at_is_udp = 5;
const at_is_vlan = 6;
const at_is_qinq = 7;
const at_is_ipv6 = 8;
const at_v6_next = 9;
const at_v6_udp = 10;
const at_v6_fragment = 11;
const at_v6_hop = 12;
const at_v6_dst = 13;
const at_v6_routing = 14;
const at_ext_next = 15;
const at_ext_udp = 16;
const at_ext_fragment = 17;
const at_ext_dst = 18;
const at_ext_routing = 19;
const at_ext_hop = 20;
const at_accept = 21;
const at_reject = 22;
const ingress_len = 23;

const ingress_program: [ingress_len]Insn = .{
    stmt(BPF_LD | BPF_B | BPF_ABS, SKF_AD_OFF + SKF_AD_PKTTYPE),
    jump(BPF_JMP | BPF_JGE | BPF_K, packet_outgoing, at_outgoing, at_reject, at_ethertype),
    stmt(BPF_LD | BPF_H | BPF_ABS, offset_ethertype),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ethertype_ipv4, at_is_ipv4, at_protocol, at_is_vlan),
    stmt(BPF_LD | BPF_B | BPF_ABS, offset_protocol),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ip_protocol_udp, at_is_udp, at_accept, at_reject),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ethertype_vlan, at_is_vlan, at_accept, at_is_qinq),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ethertype_qinq, at_is_qinq, at_accept, at_is_ipv6),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ethertype_ipv6, at_is_ipv6, at_v6_next, at_reject),
    // IPv6: UDP or a fragment right after the fixed header, or one extension header first.
    stmt(BPF_LD | BPF_B | BPF_ABS, offset_ipv6_next),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ip_protocol_udp, at_v6_udp, at_accept, at_v6_fragment),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ipv6_fragment, at_v6_fragment, at_accept, at_v6_hop),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ipv6_hop_by_hop, at_v6_hop, at_ext_next, at_v6_dst),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ipv6_destination_options, at_v6_dst, at_ext_next, at_v6_routing),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ipv6_routing, at_v6_routing, at_ext_next, at_reject),
    // After the first extension header: UDP, a fragment or another extension header (the
    // parser walks and bounds the rest); ICMPv6 and the others are rejected.
    stmt(BPF_LD | BPF_B | BPF_ABS, offset_ipv6_ext_next),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ip_protocol_udp, at_ext_udp, at_accept, at_ext_fragment),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ipv6_fragment, at_ext_fragment, at_accept, at_ext_dst),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ipv6_destination_options, at_ext_dst, at_accept, at_ext_routing),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ipv6_routing, at_ext_routing, at_accept, at_ext_hop),
    jump(BPF_JMP | BPF_JEQ | BPF_K, ipv6_hop_by_hop, at_ext_hop, at_accept, at_reject),
    stmt(BPF_RET | BPF_K, accept_bytes),
    stmt(BPF_RET | BPF_K, 0),
};

comptime {
    // The named indices and the array agree: each label sits on the instruction it names.
    assert(ingress_program[at_pkttype].k == SKF_AD_OFF + SKF_AD_PKTTYPE);
    assert(ingress_program[at_is_vlan].k == ethertype_vlan);
    assert(ingress_program[at_is_qinq].k == ethertype_qinq);
    assert(ingress_program[at_is_ipv6].k == ethertype_ipv6);
    assert(ingress_program[at_v6_next].k == offset_ipv6_next);
    assert(ingress_program[at_ext_next].k == offset_ipv6_ext_next);
    assert(ingress_program[at_ext_hop].k == ipv6_hop_by_hop);
    assert(ingress_program[at_accept].code == BPF_RET | BPF_K);
    assert(ingress_program[at_accept].k == accept_bytes);
    assert(ingress_program[at_reject].code == BPF_RET | BPF_K);
    assert(ingress_program[at_reject].k == 0);
}

/// The static ingress program (see the file comment for what it accepts).
pub fn ingress() []const Insn {
    return &ingress_program;
}

/// Attaches a classic BPF program to `fd` (SO_ATTACH_FILTER). The kernel copies the program,
/// so `insns` need not outlive the call. error.INVAL: the kernel's checker refused the
/// program (a jump out of range, no final RET, an unknown opcode); error.NOMEM: no memory for
/// the copy; error.BADF / error.NOTSOCK: not a socket.
pub fn attach(fd: i32, insns: []const Insn) sys.Error!void {
    assert(fd >= 0);
    assert(insns.len > 0);
    assert(insns.len <= BPF_MAXINSNS);
    const program = Program{ .len = @intCast(insns.len), .filter = insns.ptr };
    try sys.setsockopt(fd, linux.SOL.SOCKET, linux.SO.ATTACH_FILTER, &program);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

const testing = std.testing;

/// A classic BPF interpreter for the instructions the ingress program uses, with the kernel's
/// rule that a load past the end of the frame ends the program with 0.
fn testRun(insns: []const Insn, frame: []const u8, pkt_type: u8) !u32 {
    var a: u32 = 0;
    var pc: usize = 0;
    // Jumps only go forward, so a program runs at most len instructions.
    var steps: usize = 0;
    while (steps < insns.len) : (steps += 1) {
        if (pc >= insns.len) return error.TestJumpOutOfRange;
        const insn = insns[pc];
        pc += 1;
        switch (insn.code) {
            BPF_LD | BPF_W | BPF_ABS, BPF_LD | BPF_H | BPF_ABS, BPF_LD | BPF_B | BPF_ABS => {
                if (insn.k >= SKF_AD_OFF) {
                    if (insn.k != SKF_AD_OFF + SKF_AD_PKTTYPE) return error.TestUnsupportedAncillary;
                    a = pkt_type;
                } else {
                    a = testLoad(frame, insn.code & 0x18, insn.k) orelse return 0;
                }
            },
            BPF_JMP | BPF_JA => pc += insn.k,
            BPF_JMP | BPF_JEQ | BPF_K, BPF_JMP | BPF_JGT | BPF_K, BPF_JMP | BPF_JGE | BPF_K, BPF_JMP | BPF_JSET | BPF_K => {
                const taken = switch (insn.code & 0xf0) {
                    BPF_JEQ => a == insn.k,
                    BPF_JGT => a > insn.k,
                    BPF_JGE => a >= insn.k,
                    BPF_JSET => a & insn.k != 0,
                    else => unreachable,
                };
                pc += if (taken) insn.jt else insn.jf;
            },
            BPF_RET | BPF_K => return insn.k,
            BPF_RET | BPF_A => return a,
            else => return error.TestUnsupportedInstruction,
        }
    }
    return error.TestFellOffTheEnd;
}

fn testLoad(frame: []const u8, size: u16, offset: u32) ?u32 {
    const bytes: u32 = switch (size) {
        BPF_W => 4,
        BPF_H => 2,
        BPF_B => 1,
        else => unreachable,
    };
    if (@as(u64, offset) + bytes > frame.len) return null;
    const field = frame[offset..][0..bytes];
    var value: u32 = 0;
    for (field) |byte| value = (value << 8) | byte;
    return value;
}

/// A minimal frame: EtherType `ethertype` after an optional 802.1Q tag; for IPv4, a header
/// with protocol `protocol`, fragment field `fragment`, and 8 zero bytes after it.
fn testFrame(buffer: []u8, vlan: bool, ethertype: u16, protocol: u8, fragment: u16) []u8 {
    @memset(buffer, 0);
    var offset: usize = 12;
    if (vlan) {
        std.mem.writeInt(u16, buffer[offset..][0..2], ethertype_vlan, .big);
        std.mem.writeInt(u16, buffer[offset + 2 ..][0..2], 42, .big);
        offset += 4;
    }
    std.mem.writeInt(u16, buffer[offset..][0..2], ethertype, .big);
    const l3 = offset + 2;
    buffer[l3] = 0x45;
    std.mem.writeInt(u16, buffer[l3 + 6 ..][0..2], fragment, .big);
    buffer[l3 + 9] = protocol;
    return buffer[0 .. l3 + 28];
}

fn testAccepts(frame: []const u8, pkt_type: u8) !bool {
    const verdict = try testRun(ingress(), frame, pkt_type);
    try testing.expect(verdict == 0 or verdict == accept_bytes);
    return verdict != 0;
}

test "ingress program is well formed: forward jumps in range, ends in RET" {
    const insns = ingress();
    try testing.expect(insns.len <= BPF_MAXINSNS);
    try testing.expectEqual(BPF_RET, insns[insns.len - 1].code & 0x07);
    for (insns, 0..) |insn, pc| {
        if (insn.code & 0x07 != BPF_JMP) continue;
        try testing.expect(pc + 1 + insn.jt < insns.len);
        try testing.expect(pc + 1 + insn.jf < insns.len);
    }
}

test "IPv4 UDP accepted when received, rejected when sent or looped back by this host" {
    var buffer: [64]u8 = undefined;
    const frame = testFrame(&buffer, false, 0x0800, 17, 0);
    for ([_]u8{ 0, 1, 2, 3 }) |pkt_type| try testing.expect(try testAccepts(frame, pkt_type));
    for ([_]u8{ 4, 5, 6, 7 }) |pkt_type| try testing.expect(!try testAccepts(frame, pkt_type));
    try testing.expectEqual(accept_bytes, try testRun(ingress(), frame, 2));
}

test "a tag left in the frame (a second tag) passes whatever follows, for the parser to count" {
    var buffer: [64]u8 = undefined;
    try testing.expect(try testAccepts(testFrame(&buffer, true, 0x0800, 17, 0), 2));
    try testing.expect(!try testAccepts(testFrame(&buffer, true, 0x0800, 17, 0), 4));
    try testing.expect(try testAccepts(testFrame(&buffer, true, 0x0800, 6, 0), 2));
    try testing.expect(try testAccepts(testFrame(&buffer, true, 0x86dd, 17, 0), 2));
    const qinq = testFrame(&buffer, true, 0x0800, 17, 0);
    std.mem.writeInt(u16, qinq[12..14], 0x88a8, .big);
    try testing.expect(try testAccepts(qinq, 2));
    std.mem.writeInt(u16, qinq[12..14], 0x9100, .big);
    try testing.expect(!try testAccepts(qinq, 2));
}

test "TCP, ICMP and ARP rejected" {
    var buffer: [64]u8 = undefined;
    try testing.expect(!try testAccepts(testFrame(&buffer, false, 0x0800, 6, 0), 2));
    try testing.expect(!try testAccepts(testFrame(&buffer, false, 0x0800, 1, 0), 2));
    try testing.expect(!try testAccepts(testFrame(&buffer, false, 0x0806, 17, 0), 1));
}

/// An IPv6 frame: fixed header with next header `next`, then (when `ext_next` is given) one
/// 8-byte extension header whose next header is `ext_next`, then 8 zero bytes.
fn testFrame6(buffer: []u8, next: u8, ext_next: ?u8) []u8 {
    @memset(buffer, 0);
    std.mem.writeInt(u16, buffer[12..14], 0x86dd, .big);
    buffer[14] = 0x60;
    buffer[14 + 6] = next;
    var end: usize = 14 + 40;
    if (ext_next) |n| {
        buffer[end] = n;
        end += 8;
    }
    return buffer[0 .. end + 8];
}

test "IPv6: UDP and fragments accepted, one extension header looked through, ICMPv6 (MLD) rejected" {
    var buffer: [128]u8 = undefined;
    try testing.expect(try testAccepts(testFrame6(&buffer, 17, null), 0));
    try testing.expect(try testAccepts(testFrame6(&buffer, 17, null), 2));
    try testing.expect(!try testAccepts(testFrame6(&buffer, 17, null), 4));
    try testing.expect(try testAccepts(testFrame6(&buffer, 44, null), 2));
    try testing.expect(!try testAccepts(testFrame6(&buffer, 58, null), 2)); // ICMPv6, ND
    try testing.expect(!try testAccepts(testFrame6(&buffer, 6, null), 2));
    for ([_]u8{ 0, 60, 43 }) |ext| {
        for ([_]u8{ 17, 44, 60, 43, 0 }) |after| try testing.expect(try testAccepts(testFrame6(&buffer, ext, after), 2));
        // An MLD report is hop-by-hop (router alert), then ICMPv6.
        for ([_]u8{ 58, 6, 59, 50 }) |after| try testing.expect(!try testAccepts(testFrame6(&buffer, ext, after), 2));
    }
    // Too short to show the extension header's next header.
    const chain = testFrame6(&buffer, 0, 17);
    try testing.expect(!try testAccepts(chain[0 .. 14 + 40], 2));
    try testing.expect(try testAccepts(chain[0 .. 14 + 41], 2));
}

test "IPv4 UDP fragments and malformed headers pass for userspace to count" {
    var buffer: [64]u8 = undefined;
    try testing.expect(try testAccepts(testFrame(&buffer, false, 0x0800, 17, 0x2000), 2));
    try testing.expect(try testAccepts(testFrame(&buffer, false, 0x0800, 17, 0x00b9), 2));
    try testing.expect(try testAccepts(testFrame(&buffer, true, 0x0800, 17, 0x2000), 2));
    const bad_version = testFrame(&buffer, false, 0x0800, 17, 0);
    bad_version[14] = 0x65;
    try testing.expect(try testAccepts(bad_version, 2));
}

test "frames too short for a load are rejected" {
    var buffer: [64]u8 = undefined;
    const frame = testFrame(&buffer, false, 0x0800, 17, 0);
    // The protocol byte is frame[23]: anything shorter cannot be shown to be UDP.
    for (0..24) |len| try testing.expect(!try testAccepts(frame[0..len], 2));
    try testing.expect(try testAccepts(frame[0..24], 2));

    const tagged = testFrame(&buffer, true, 0x0800, 17, 0);
    for (0..14) |len| try testing.expect(!try testAccepts(tagged[0..len], 2));
    try testing.expect(try testAccepts(tagged[0..14], 2));
}

fn testSocket() !i32 {
    const rc = linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0);
    return @intCast(sys.call("socket", rc) catch return error.SkipZigTest);
}

test "the kernel accepts the ingress program on a real socket" {
    const fd = try testSocket();
    defer sys.close(fd);
    try attach(fd, ingress());
}

test "the kernel refuses a program whose jump leaves it" {
    const fd = try testSocket();
    defer sys.close(fd);
    const bad = [_]Insn{
        .{ .code = BPF_JMP | BPF_JEQ | BPF_K, .jt = 5, .jf = 0, .k = 0 },
        stmt(BPF_RET | BPF_K, 0),
    };
    try testing.expectError(error.INVAL, attach(fd, &bad));
    // No final RET is refused too.
    const no_ret = [_]Insn{stmt(BPF_LD | BPF_H | BPF_ABS, 12)};
    try testing.expectError(error.INVAL, attach(fd, &no_ret));
}
