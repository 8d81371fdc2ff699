//! rtnetlink: links and IPv4/IPv6 addresses as they appear, change and vanish. Messages are
//! parsed here into fixed-size records (`abi.NlEvent`) that TypeScript reads in batches, so
//! the supervisor never handles netlink bytes. A receive overflow (ENOBUFS) is reported as an
//! event: the caller then asks for a full dump, so no change is ever missed. So is a dump that
//! did not read a consistent table: one whose DONE carries an error, or one the kernel marks
//! interrupted (NLM_F_DUMP_INTR: the table changed while it was being read).
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const abi = @import("abi.zig");
const constants = @import("constants.zig");

const NETLINK_ROUTE: u32 = 0;
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// Set by the kernel on a dump message written after the table changed under the dump: what the
/// dump returns is not one consistent table (some entries may be missing).
const NLM_F_DUMP_INTR: u16 = 0x10;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

const Header = extern struct { len: u32, type: u16, flags: u16, seq: u32, pid: u32 };
const IfInfo = extern struct { family: u8, _pad: u8, type: u16, index: i32, flags: u32, change: u32 };
const IfAddr = extern struct { family: u8, prefixlen: u8, flags: u8, scope: u8, index: u32 };
const Attr = extern struct { len: u16, type: u16 };

pub const receive_buffer_bytes: u32 = constants.netlink_rcvbuf_bytes;

pub const Dump = enum(u32) { links = 1, addresses = 2 };

pub const Netlink = struct {
    fd: i32,
    seq: u32,
    /// One datagram: netlink messages are never split across reads.
    buf: [64 * 1024]u8 align(8),
    /// Records parsed from `buf` and not yet handed out.
    pending: [512]abi.NlEvent,
    pending_count: u32,
    pending_next: u32,

    pub fn create() sys.Error!*Netlink {
        const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.NETLINK, linux.SOCK.RAW | linux.SOCK.CLOEXEC | linux.SOCK.NONBLOCK, NETLINK_ROUTE)));
        errdefer sys.close(fd);
        sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.RCVBUFFORCE, receive_buffer_bytes) catch {
            try sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.RCVBUF, receive_buffer_bytes);
        };
        var sa = linux.sockaddr.nl{ .pid = 0, .groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR };
        _ = try sys.call("bind", linux.bind(fd, @ptrCast(&sa), @sizeOf(linux.sockaddr.nl)));
        const self = std.heap.page_allocator.create(Netlink) catch return error.NOMEM;
        self.* = .{ .fd = fd, .seq = 1, .buf = undefined, .pending = undefined, .pending_count = 0, .pending_next = 0 };
        return self;
    }

    pub fn destroy(self: *Netlink) void {
        sys.close(self.fd);
        std.heap.page_allocator.destroy(self);
    }

    /// Asks for every link or every address; the answers arrive as events, then `dump_done`.
    pub fn requestDump(self: *Netlink, what: Dump) sys.Error!u32 {
        const Request = extern struct { hdr: Header, gen: IfAddr };
        self.seq +%= 1;
        const req = Request{
            .hdr = .{
                .len = @sizeOf(Request),
                .type = if (what == .links) RTM_GETLINK else RTM_GETADDR,
                .flags = NLM_F_REQUEST | NLM_F_DUMP,
                .seq = self.seq,
                .pid = 0,
            },
            .gen = .{ .family = linux.AF.UNSPEC, .prefixlen = 0, .flags = 0, .scope = 0, .index = 0 },
        };
        var sa = linux.sockaddr.nl{ .pid = 0, .groups = 0 };
        _ = try sys.retryCall("sendto", linux.sendto, .{ self.fd, std.mem.asBytes(&req), @sizeOf(Request), 0, @as(*const linux.sockaddr, @ptrCast(&sa)), @sizeOf(linux.sockaddr.nl) });
        return self.seq;
    }

    /// Fills `out` with events until it is full or nothing is waiting; returns how many.
    pub fn read(self: *Netlink, out: []abi.NlEvent) sys.Error!u32 {
        var n: u32 = 0;
        while (n < out.len) {
            if (self.pending_next < self.pending_count) {
                out[n] = self.pending[self.pending_next];
                self.pending_next += 1;
                n += 1;
                continue;
            }
            const rc = linux.recvfrom(self.fd, &self.buf, self.buf.len, 0, null, null);
            switch (linux.errno(rc)) {
                .SUCCESS => {},
                .AGAIN => return n,
                .INTR => continue,
                .NOBUFS => {
                    // Notifications were dropped: the caller must re-dump everything.
                    out[n] = std.mem.zeroes(abi.NlEvent);
                    out[n].kind = @intFromEnum(abi.NlEventKind.overflow);
                    n += 1;
                    continue;
                },
                else => |e| return sys.fromErrnoOf("recvfrom", e),
            }
            self.pending_count = parse(self.buf[0..rc], &self.pending);
            self.pending_next = 0;
        }
        return n;
    }
};

fn attrs(payload: []const u8, visit: anytype) void {
    var at: usize = 0;
    while (at + @sizeOf(Attr) <= payload.len) {
        const a = std.mem.bytesToValue(Attr, payload[at..][0..@sizeOf(Attr)]);
        if (a.len < @sizeOf(Attr) or at + a.len > payload.len) return;
        visit.attr(a.type & 0x3fff, payload[at + @sizeOf(Attr) .. at + a.len]);
        at += std.mem.alignForward(usize, a.len, 4);
    }
}

/// Parses one netlink datagram into events; returns how many (bounded by `out.len`).
pub fn parse(data: []const u8, out: []abi.NlEvent) u32 {
    var n: u32 = 0;
    var at: usize = 0;
    while (at + @sizeOf(Header) <= data.len and n < out.len) {
        const h = std.mem.bytesToValue(Header, data[at..][0..@sizeOf(Header)]);
        if (h.len < @sizeOf(Header) or at + h.len > data.len) break;
        const body = data[at + @sizeOf(Header) .. at + h.len];
        at += std.mem.alignForward(usize, h.len, 4);
        var ev = std.mem.zeroes(abi.NlEvent);
        ev.seq = h.seq;
        if (h.flags & NLM_F_DUMP_INTR != 0 and h.type != NLMSG_DONE and h.type != NLMSG_ERROR) {
            // An entry of an interrupted dump: what the dump read cannot be trusted. Reported as
            // an overflow with seq 0 (like lost notifications) in place of the entry; the dump
            // still ends with its DONE, and the caller reads everything again.
            ev.seq = 0;
            ev.kind = @intFromEnum(abi.NlEventKind.overflow);
            out[n] = ev;
            n += 1;
            continue;
        }
        switch (h.type) {
            RTM_NEWLINK, RTM_DELLINK => {
                if (body.len < @sizeOf(IfInfo)) continue;
                const info = std.mem.bytesToValue(IfInfo, body[0..@sizeOf(IfInfo)]);
                ev.kind = @intFromEnum(if (h.type == RTM_NEWLINK) abi.NlEventKind.link_new else abi.NlEventKind.link_del);
                ev.ifindex = @intCast(info.index);
                ev.flags = info.flags;
                const V = struct {
                    ev: *abi.NlEvent,
                    fn attr(v: @This(), t: u16, p: []const u8) void {
                        switch (t) {
                            IFLA_IFNAME => {
                                const name = std.mem.sliceTo(p, 0);
                                const len = @min(name.len, v.ev.name.len - 1);
                                @memcpy(v.ev.name[0..len], name[0..len]);
                            },
                            IFLA_MTU => if (p.len >= 4) {
                                v.ev.mtu = std.mem.readInt(u32, p[0..4], .native);
                            },
                            else => {},
                        }
                    }
                };
                attrs(body[@sizeOf(IfInfo)..], V{ .ev = &ev });
            },
            RTM_NEWADDR, RTM_DELADDR => {
                if (body.len < @sizeOf(IfAddr)) continue;
                const info = std.mem.bytesToValue(IfAddr, body[0..@sizeOf(IfAddr)]);
                if (info.family != linux.AF.INET and info.family != linux.AF.INET6) continue;
                ev.kind = @intFromEnum(if (h.type == RTM_NEWADDR) abi.NlEventKind.addr_new else abi.NlEventKind.addr_del);
                ev.ifindex = info.index;
                ev.family = info.family;
                ev.prefixlen = info.prefixlen;
                const V = struct {
                    ev: *abi.NlEvent,
                    family: u8,
                    fn attr(v: @This(), t: u16, p: []const u8) void {
                        // For IPv4 the local address is IFA_LOCAL (IFA_ADDRESS is the peer on
                        // point-to-point links); IPv6 has IFA_ADDRESS only.
                        const wanted = if (v.family == linux.AF.INET) IFA_LOCAL else IFA_ADDRESS;
                        if (t != wanted) return;
                        if (v.family == linux.AF.INET and p.len >= 4) {
                            v.ev.addr = .{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, p[0], p[1], p[2], p[3] };
                        } else if (p.len >= 16) {
                            @memcpy(&v.ev.addr, p[0..16]);
                        }
                    }
                };
                attrs(body[@sizeOf(IfAddr)..], V{ .ev = &ev, .family = info.family });
            },
            NLMSG_DONE => {
                // DONE carries the dump's result (0, or -errno such as -EMSGSIZE when an entry
                // did not fit), and NLM_F_DUMP_INTR when the table changed during the dump. Either
                // way the dump is incomplete: reported as an overflow with the dump's seq (it
                // ends the dump, so the caller drops what it read), flags the errno (0 when only
                // interrupted).
                const err: i32 = if (body.len >= 4) std.mem.readInt(i32, body[0..4], .native) else 0;
                if (err < 0 or h.flags & NLM_F_DUMP_INTR != 0) {
                    ev.kind = @intFromEnum(abi.NlEventKind.overflow);
                    ev.flags = if (err < 0) @intCast(-@as(i64, err)) else 0;
                } else {
                    ev.kind = @intFromEnum(abi.NlEventKind.dump_done);
                }
            },
            NLMSG_ERROR => {
                if (body.len < 4) continue;
                const err = std.mem.readInt(i32, body[0..4], .native);
                if (err == 0) continue; // an acknowledgement
                ev.kind = @intFromEnum(abi.NlEventKind.failed);
                ev.flags = @intCast(-err);
            },
            NLMSG_OVERRUN => ev.kind = @intFromEnum(abi.NlEventKind.overflow),
            else => continue,
        }
        out[n] = ev;
        n += 1;
    }
    return n;
}

test "a link dump names loopback, then ends" {
    const nl = try Netlink.create();
    defer nl.destroy();
    const seq = try nl.requestDump(.links);
    var events: [64]abi.NlEvent = undefined;
    var saw_lo = false;
    var done = false;
    var tries: u32 = 0;
    while (!done and tries < 100) : (tries += 1) {
        var pfd = [_]linux.pollfd{.{ .fd = nl.fd, .events = linux.POLL.IN }};
        _ = linux.poll(&pfd, 1, 100);
        const n = try nl.read(&events);
        for (events[0..n]) |e| {
            if (e.kind == @intFromEnum(abi.NlEventKind.link_new) and std.mem.eql(u8, std.mem.sliceTo(&e.name, 0), "lo")) {
                saw_lo = true;
                try std.testing.expect(e.ifindex >= 1);
                try std.testing.expect(e.mtu > 0);
            }
            if (e.kind == @intFromEnum(abi.NlEventKind.dump_done) and e.seq == seq) done = true;
        }
    }
    try std.testing.expect(saw_lo);
    try std.testing.expect(done);
}

test "an address dump has loopback's 127.0.0.1" {
    const nl = try Netlink.create();
    defer nl.destroy();
    const seq = try nl.requestDump(.addresses);
    var events: [64]abi.NlEvent = undefined;
    var saw = false;
    var done = false;
    var tries: u32 = 0;
    while (!done and tries < 100) : (tries += 1) {
        var pfd = [_]linux.pollfd{.{ .fd = nl.fd, .events = linux.POLL.IN }};
        _ = linux.poll(&pfd, 1, 100);
        const n = try nl.read(&events);
        for (events[0..n]) |e| {
            if (e.kind == @intFromEnum(abi.NlEventKind.addr_new) and e.family == linux.AF.INET and e.addr[12] == 127 and e.addr[15] == 1) saw = true;
            if (e.kind == @intFromEnum(abi.NlEventKind.dump_done) and e.seq == seq) done = true;
        }
    }
    try std.testing.expect(saw);
}

test "malformed datagrams parse to nothing, never out of bounds" {
    var out: [8]abi.NlEvent = undefined;
    var prng = std.Random.DefaultPrng.init(3);
    var buf: [256]u8 = undefined;
    for (0..5000) |_| {
        prng.random().bytes(&buf);
        const len = prng.random().uintAtMost(usize, buf.len);
        _ = parse(buf[0..len], &out);
    }
    try std.testing.expectEqual(@as(u32, 0), parse(&.{}, &out));
}

/// One netlink message of `body_len` payload bytes in `buf` (header filled in), for the tests.
fn craft(buf: []u8, msg_type: u16, flags: u16, seq: u32, body: []const u8) []const u8 {
    const len = @sizeOf(Header) + body.len;
    const h = Header{ .len = @intCast(len), .type = msg_type, .flags = flags, .seq = seq, .pid = 0 };
    @memcpy(buf[0..@sizeOf(Header)], std.mem.asBytes(&h));
    @memcpy(buf[@sizeOf(Header)..len], body);
    return buf[0..len];
}

test "a dump's DONE ends it; a DONE carrying an error is an overflow with the dump's seq and the errno" {
    var buf: [64]u8 align(4) = undefined;
    var out: [4]abi.NlEvent = undefined;
    const ok: i32 = 0;
    try std.testing.expectEqual(@as(u32, 1), parse(craft(&buf, NLMSG_DONE, 0x2, 7, std.mem.asBytes(&ok)), &out));
    try std.testing.expectEqual(@intFromEnum(abi.NlEventKind.dump_done), out[0].kind);
    try std.testing.expectEqual(@as(u32, 7), out[0].seq);
    // Without a payload (older kernels for some families): complete.
    try std.testing.expectEqual(@as(u32, 1), parse(craft(&buf, NLMSG_DONE, 0x2, 7, &.{}), &out));
    try std.testing.expectEqual(@intFromEnum(abi.NlEventKind.dump_done), out[0].kind);

    const emsgsize: i32 = -@as(i32, @intFromEnum(linux.E.MSGSIZE));
    try std.testing.expectEqual(@as(u32, 1), parse(craft(&buf, NLMSG_DONE, 0x2, 8, std.mem.asBytes(&emsgsize)), &out));
    try std.testing.expectEqual(@intFromEnum(abi.NlEventKind.overflow), out[0].kind);
    try std.testing.expectEqual(@as(u32, 8), out[0].seq);
    try std.testing.expectEqual(@as(u32, @intFromEnum(linux.E.MSGSIZE)), out[0].flags);
}

test "an interrupted dump (NLM_F_DUMP_INTR) is an overflow: on an entry with seq 0, on DONE with the dump's seq" {
    var buf: [128]u8 align(4) = undefined;
    var out: [4]abi.NlEvent = undefined;
    // An RTM_NEWLINK entry of the dump, without attributes.
    const info = IfInfo{ .family = 0, ._pad = 0, .type = 1, .index = 5, .flags = 1, .change = 0 };
    try std.testing.expectEqual(@as(u32, 1), parse(craft(&buf, RTM_NEWLINK, 0x2, 9, std.mem.asBytes(&info)), &out));
    try std.testing.expectEqual(@intFromEnum(abi.NlEventKind.link_new), out[0].kind);
    try std.testing.expectEqual(@as(u32, 1), parse(craft(&buf, RTM_NEWLINK, 0x2 | NLM_F_DUMP_INTR, 9, std.mem.asBytes(&info)), &out));
    try std.testing.expectEqual(@intFromEnum(abi.NlEventKind.overflow), out[0].kind);
    try std.testing.expectEqual(@as(u32, 0), out[0].seq);

    const ok: i32 = 0;
    try std.testing.expectEqual(@as(u32, 1), parse(craft(&buf, NLMSG_DONE, 0x2 | NLM_F_DUMP_INTR, 9, std.mem.asBytes(&ok)), &out));
    try std.testing.expectEqual(@intFromEnum(abi.NlEventKind.overflow), out[0].kind);
    try std.testing.expectEqual(@as(u32, 9), out[0].seq);
    try std.testing.expectEqual(@as(u32, 0), out[0].flags);
}
