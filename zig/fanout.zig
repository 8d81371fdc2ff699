//! Several workers on one interface: their AF_PACKET sockets share a PACKET_FANOUT group whose
//! classic-BPF program returns a hash of (destination address, destination port); the kernel
//! takes it modulo the number of members. The supervisor assigns each rule to the worker at
//! index `flowHash(group, port) % members` with the same function (src/rules/flow-hash.ts),
//! so every flow reaches the one worker that holds its rule, and no packet is duplicated.
//! IPv6 packets hash their destination address only (`flowHash6`): the port sits behind a chain
//! of extension headers of any length, which a classic-BPF program cannot walk, and a flow
//! must hash the same whatever headers its packets carry. Rules for one IPv6 group with
//! different ports therefore share a worker.
const std = @import("std");
const linux = std.os.linux;
const f = @import("filter.zig");
const sys = @import("sys.zig");

pub const mul1: u32 = 0x9e3779b1;
/// Ancillary load of skb->protocol (linux/filter.h SKF_AD_PROTOCOL).
const skf_ad_protocol: u32 = 0;
pub const mul2: u32 = 0x85ebca6b;

/// The hash the program computes, for IPv4 destination `dst` (host order) and port.
pub fn flowHash(dst: u32, port: u16) u32 {
    var a = dst *% mul1;
    a ^= port;
    a ^= a >> 16;
    a *%= mul2;
    a ^= a >> 13;
    return a;
}

/// The IPv6 hash: the four 32-bit words of the destination address XORed, then flowHash with
/// port 0. `dst` is the address in network byte order.
pub fn flowHash6(dst: *const [16]u8) u32 {
    var fold: u32 = 0;
    for (0..4) |i| fold ^= std.mem.readInt(u32, dst[i * 4 ..][0..4], .big);
    return flowHash(fold, 0);
}

fn stmt(code: u16, k: u32) f.Insn {
    return .{ .code = code, .jt = 0, .jf = 0, .k = k };
}

/// The hash over a packet whose IPv4 header starts at `l3`. The kernel runs fanout programs on
/// the skb as the stack sees it: data starts at the network header (unlike socket filters,
/// which see the link-layer header of a SOCK_RAW socket).
fn hashAt(comptime l3: u32) [18]f.Insn {
    return .{
        stmt(f.BPF_LD | f.BPF_W | f.BPF_ABS, l3 + 16), // A = destination address
        stmt(f.BPF_ALU | f.BPF_MUL | f.BPF_K, mul1),
        stmt(f.BPF_ST, 0), // M[0] = A
        stmt(f.BPF_LDX | f.BPF_B | f.BPF_MSH, l3), // X = IHL * 4
        stmt(f.BPF_LD | f.BPF_H | f.BPF_IND, l3 + 2), // A = destination port
        stmt(f.BPF_MISC | f.BPF_TAX, 0),
        stmt(f.BPF_LD | f.BPF_MEM, 0),
        stmt(f.BPF_ALU | f.BPF_XOR | f.BPF_X, 0), // A ^= port
        stmt(f.BPF_ST, 0),
        stmt(f.BPF_ALU | f.BPF_RSH | f.BPF_K, 16),
        stmt(f.BPF_MISC | f.BPF_TAX, 0),
        stmt(f.BPF_LD | f.BPF_MEM, 0),
        stmt(f.BPF_ALU | f.BPF_XOR | f.BPF_X, 0), // A ^= A >> 16
        stmt(f.BPF_ALU | f.BPF_MUL | f.BPF_K, mul2),
        stmt(f.BPF_ST, 0),
        stmt(f.BPF_ALU | f.BPF_RSH | f.BPF_K, 13),
        stmt(f.BPF_MISC | f.BPF_TAX, 0),
        stmt(f.BPF_LD | f.BPF_MEM, 0),
    };
}

const plain = hashAt(0);
/// An 802.1Q tag left in the data (not taken out by the driver): the IPv4 header is 4 further.
const tagged = hashAt(4);
const xor_ret = [_]f.Insn{ stmt(f.BPF_ALU | f.BPF_XOR | f.BPF_X, 0), stmt(f.BPF_RET | f.BPF_A, 0) };

/// flowHash6 over an IPv6 header at offset 0: destination words at 24, 28, 32, 36.
const ipv6_hash = [_]f.Insn{
    stmt(f.BPF_LD | f.BPF_W | f.BPF_ABS, 24),
    stmt(f.BPF_ST, 1),
    stmt(f.BPF_LD | f.BPF_W | f.BPF_ABS, 28),
    stmt(f.BPF_MISC | f.BPF_TAX, 0),
    stmt(f.BPF_LD | f.BPF_MEM, 1),
    stmt(f.BPF_ALU | f.BPF_XOR | f.BPF_X, 0),
    stmt(f.BPF_ST, 1),
    stmt(f.BPF_LD | f.BPF_W | f.BPF_ABS, 32),
    stmt(f.BPF_MISC | f.BPF_TAX, 0),
    stmt(f.BPF_LD | f.BPF_MEM, 1),
    stmt(f.BPF_ALU | f.BPF_XOR | f.BPF_X, 0),
    stmt(f.BPF_ST, 1),
    stmt(f.BPF_LD | f.BPF_W | f.BPF_ABS, 36),
    stmt(f.BPF_MISC | f.BPF_TAX, 0),
    stmt(f.BPF_LD | f.BPF_MEM, 1),
    stmt(f.BPF_ALU | f.BPF_XOR | f.BPF_X, 0), // A = the folded address; port 0 adds nothing
    stmt(f.BPF_ALU | f.BPF_MUL | f.BPF_K, mul1),
    stmt(f.BPF_ST, 0),
    stmt(f.BPF_ALU | f.BPF_RSH | f.BPF_K, 16),
    stmt(f.BPF_MISC | f.BPF_TAX, 0),
    stmt(f.BPF_LD | f.BPF_MEM, 0),
    stmt(f.BPF_ALU | f.BPF_XOR | f.BPF_X, 0), // A ^= A >> 16
    stmt(f.BPF_ALU | f.BPF_MUL | f.BPF_K, mul2),
    stmt(f.BPF_ST, 0),
    stmt(f.BPF_ALU | f.BPF_RSH | f.BPF_K, 13),
    stmt(f.BPF_MISC | f.BPF_TAX, 0),
    stmt(f.BPF_LD | f.BPF_MEM, 0),
};

/// A = skb->protocol; jeq 0x86dd -> IPv6 hash; jeq 0x8100 -> tagged; plain hash, ret;
/// tagged hash, ret; IPv6 hash, ret.
const program_insns = blk: {
    const plain_len: u8 = plain.len + xor_ret.len;
    const tagged_len: u8 = tagged.len + xor_ret.len;
    const head = [_]f.Insn{
        stmt(f.BPF_LD | f.BPF_H | f.BPF_ABS, f.SKF_AD_OFF + skf_ad_protocol),
        .{ .code = f.BPF_JMP | f.BPF_JEQ | f.BPF_K, .jt = 1 + plain_len + tagged_len, .jf = 0, .k = 0x86dd },
        .{ .code = f.BPF_JMP | f.BPF_JEQ | f.BPF_K, .jt = plain_len, .jf = 0, .k = 0x8100 },
    };
    break :blk head ++ plain ++ xor_ret ++ tagged ++ xor_ret ++ ipv6_hash ++ xor_ret;
};

pub fn program() []const f.Insn {
    return &program_insns;
}

/// Joins the fanout group `id` with the hash program (PACKET_FANOUT_CBPF). Every member of
/// the group must join the same way; the first join creates the group.
pub fn join(fd: i32, id: u16) sys.Error!void {
    const arg: u32 = @as(u32, id) | (@as(u32, linux.PACKET.FANOUT_CBPF) << 16);
    try sys.setsockoptInt(fd, linux.SOL.PACKET, linux.PACKET.FANOUT, @bitCast(arg));
    const prog = f.Program{ .len = program_insns.len, .filter = &program_insns };
    try sys.setsockopt(fd, linux.SOL.PACKET, linux.PACKET.FANOUT_DATA, &prog);
}

// Tests: a classic-BPF interpreter for the instructions above, run over real frames.

fn run(insns: []const f.Insn, pkt: []const u8, protocol: u16) u32 {
    var a: u32 = 0;
    var x: u32 = 0;
    var mem: [16]u32 = @splat(0);
    var pc: usize = 0;
    while (pc < insns.len) : (pc += 1) {
        const i = insns[pc];
        const load = struct {
            fn at(p: []const u8, off: u32, size: u32) ?u32 {
                if (off + size > p.len) return null;
                return switch (size) {
                    4 => std.mem.readInt(u32, p[off..][0..4], .big),
                    2 => std.mem.readInt(u16, p[off..][0..2], .big),
                    else => p[off],
                };
            }
        };
        switch (i.code) {
            f.BPF_LD | f.BPF_W | f.BPF_ABS => a = load.at(pkt, i.k, 4) orelse return 0,
            f.BPF_LD | f.BPF_H | f.BPF_ABS => a = if (i.k == f.SKF_AD_OFF + skf_ad_protocol) protocol else load.at(pkt, i.k, 2) orelse return 0,
            f.BPF_LD | f.BPF_H | f.BPF_IND => a = load.at(pkt, x + i.k, 2) orelse return 0,
            f.BPF_LDX | f.BPF_B | f.BPF_MSH => x = 4 * ((load.at(pkt, i.k, 1) orelse return 0) & 0xf),
            f.BPF_LD | f.BPF_MEM => a = mem[i.k],
            f.BPF_ST => mem[i.k] = a,
            f.BPF_MISC | f.BPF_TAX => x = a,
            f.BPF_ALU | f.BPF_MUL | f.BPF_K => a *%= i.k,
            f.BPF_ALU | f.BPF_XOR | f.BPF_X => a ^= x,
            f.BPF_ALU | f.BPF_RSH | f.BPF_K => a >>= @intCast(i.k),
            f.BPF_JMP | f.BPF_JEQ | f.BPF_K => pc += if (a == i.k) i.jt else i.jf,
            f.BPF_RET | f.BPF_A => return a,
            else => unreachable,
        }
    }
    unreachable;
}

/// The packet as a fanout program sees it: from the network header, or from an in-band
/// 802.1Q tag's second half (TCI, then the inner EtherType) when protocol is 0x8100.
fn frame(buf: []u8, tagged_frame: bool, dst: u32, port: u16, ihl: u8) []u8 {
    @memset(buf, 0);
    var l2: usize = 0;
    if (tagged_frame) {
        std.mem.writeInt(u16, buf[2..4], 0x0800, .big);
        l2 = 4;
    }
    buf[l2] = 0x40 | ihl;
    buf[l2 + 9] = 17;
    std.mem.writeInt(u32, buf[l2 + 16 ..][0..4], dst, .big);
    const udp = l2 + @as(usize, ihl) * 4;
    std.mem.writeInt(u16, buf[udp + 2 ..][0..2], port, .big);
    return buf[0 .. udp + 8 + 16];
}

test "the program computes flowHash for plain and tagged frames, with IP options" {
    var buf: [128]u8 = undefined;
    var prng = std.Random.DefaultPrng.init(7);
    const r = prng.random();
    for (0..2000) |_| {
        const dst = r.int(u32);
        const port = r.int(u16);
        const ihl: u8 = r.intRangeAtMost(u8, 5, 8);
        const want = flowHash(dst, port);
        try std.testing.expectEqual(want, run(program(), frame(&buf, false, dst, port, ihl), 0x0800));
        try std.testing.expectEqual(want, run(program(), frame(&buf, true, dst, port, ihl), 0x8100));
    }
    // Known value, shared with the TypeScript side's test.
    try std.testing.expectEqual(@as(u32, 0xff7e8ac2), flowHash(0xef010101, 5000));
}

fn frame6(buf: []u8, dst: *const [16]u8, port: u16, ext_bytes: usize) []u8 {
    @memset(buf, 0);
    buf[0] = 0x60;
    buf[6] = if (ext_bytes > 0) 0 else 17;
    @memcpy(buf[24..40], dst);
    const udp = 40 + ext_bytes;
    if (ext_bytes > 0) {
        buf[40] = 17;
        buf[41] = @intCast(ext_bytes / 8 - 1);
    }
    std.mem.writeInt(u16, buf[udp + 2 ..][0..2], port, .big);
    return buf[0 .. udp + 8 + 16];
}

test "IPv6: the program computes flowHash6 whatever the port and the extension headers" {
    var buf: [256]u8 = undefined;
    var prng = std.Random.DefaultPrng.init(11);
    const r = prng.random();
    for (0..2000) |_| {
        var dst: [16]u8 = undefined;
        r.bytes(&dst);
        const want = flowHash6(&dst);
        try std.testing.expectEqual(want, run(program(), frame6(&buf, &dst, r.int(u16), 0), 0x86dd));
        try std.testing.expectEqual(want, run(program(), frame6(&buf, &dst, r.int(u16), 8 * r.uintAtMost(usize, 8)), 0x86dd));
    }
    // Known value, shared with the TypeScript side's test: ff3e::1.
    const group: [16]u8 = .{ 0xff, 0x3e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
    try std.testing.expectEqual(flowHash(0xff3e0001, 0), flowHash6(&group));
    try std.testing.expectEqual(@as(u32, 0x95530b31), flowHash6(&group));
}

test "flows spread evenly over workers" {
    const members = 4;
    var counts: [members]u32 = @splat(0);
    for (0..4096) |i| {
        const g: u32 = 0xef000000 | @as(u32, @intCast(i / 4));
        counts[flowHash(g, @intCast(5000 + i % 4)) % members] += 1;
    }
    for (counts) |c| try std.testing.expect(c > 4096 / members * 85 / 100 and c < 4096 / members * 115 / 100);
}

test "the kernel accepts the program for a fanout group" {
    if (linux.geteuid() != 0) return error.SkipZigTest;
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(fd);
    var sll = std.mem.zeroes(linux.sockaddr.ll);
    sll.family = linux.AF.PACKET;
    sll.protocol = std.mem.nativeToBig(u16, linux.ETH.P.ALL);
    sll.ifindex = 1;
    _ = try sys.call("bind", linux.bind(fd, @ptrCast(&sll), @sizeOf(linux.sockaddr.ll)));
    try join(fd, 0x7e11);
}
