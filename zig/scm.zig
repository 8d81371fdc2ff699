//! File descriptors over a Unix socket (SCM_RIGHTS). The supervisor opens privileged sockets
//! and hands them to workers this way. SOCK_SEQPACKET keeps message boundaries, so each
//! message and the descriptors attached to it arrive together, with one framing for all.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const constants = @import("constants.zig");
const abi = @import("abi.zig");

pub const fds_max: u32 = constants.scm_fds_max;
const SCM_RIGHTS: i32 = 1;
const MSG_CMSG_CLOEXEC: u32 = 0x40000000;

const cmsg_header_bytes = @sizeOf(linux.cmsghdr);
const control_bytes = std.mem.alignForward(usize, cmsg_header_bytes + fds_max * @sizeOf(i32), @alignOf(usize));

/// The largest message the channel carries: a worker's rule table at its limits.
pub const table_bytes_max: usize = @sizeOf(abi.TableHeader) + constants.rules_max * @sizeOf(abi.RuleDesc) +
    constants.outputs_max * @sizeOf(abi.OutputDesc);

comptime {
    // An AF_UNIX message must fit the sender's buffer (sk_sndbuf - 32). SO_SNDBUF is capped by
    // net.core.wmem_max (212992 by default) and then doubled by the kernel: 425984 at least.
    std.debug.assert(table_bytes_max + 32 <= 2 * 212992);
    std.debug.assert(constants.scm_sndbuf_bytes >= table_bytes_max);
}

pub fn pair() sys.Error![2]i32 {
    var fds: [2]i32 = undefined;
    _ = try sys.call("socketpair", linux.socketpair(linux.AF.UNIX, linux.SOCK.SEQPACKET | linux.SOCK.CLOEXEC, 0, &fds));
    errdefer {
        sys.close(fds[0]);
        sys.close(fds[1]);
    }
    // The default buffer (net.core.wmem_default, 212992) is smaller than a full rule table.
    for (fds) |fd| try sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.SNDBUF, @intCast(constants.scm_sndbuf_bytes));
    return fds;
}

pub fn send(fd: i32, data: []const u8, fds: []const i32, dont_wait: bool) sys.Error!usize {
    if (fds.len > fds_max) return error.INVAL;
    if (data.len == 0) return error.INVAL; // a message carries at least one byte
    var control: [control_bytes]u8 align(@alignOf(linux.cmsghdr)) = undefined;
    const used = cmsg_header_bytes + fds.len * @sizeOf(i32);
    const head: *linux.cmsghdr = @ptrCast(&control);
    head.* = .{ .len = used, .level = linux.SOL.SOCKET, .type = SCM_RIGHTS };
    @memcpy(control[cmsg_header_bytes..][0 .. fds.len * @sizeOf(i32)], std.mem.sliceAsBytes(fds));
    const iov = [_]std.posix.iovec_const{.{ .base = data.ptr, .len = data.len }};
    const msg = linux.msghdr_const{
        .name = null,
        .namelen = 0,
        .iov = &iov,
        .iovlen = 1,
        .control = if (fds.len > 0) &control else null,
        .controllen = if (fds.len > 0) std.mem.alignForward(usize, used, @alignOf(usize)) else 0,
        .flags = 0,
    };
    const flags: u32 = linux.MSG.NOSIGNAL | @as(u32, if (dont_wait) linux.MSG.DONTWAIT else 0);
    return sys.retryCall("sendmsg", linux.sendmsg, .{ fd, &msg, flags });
}

/// Moves `fds` to the descriptor numbers first, first+1, ... (close-on-exec), closing the
/// originals. EBUSY (nothing moved) when a number of the range is already in use.
pub fn place(fds: []const i32, first: i32) sys.Error!void {
    if (first < 0) return error.INVAL;
    for (0..fds.len) |i| {
        const target: i32 = first + @as(i32, @intCast(i));
        if (std.mem.indexOfScalar(i32, fds, target) != null) return error.BUSY;
        const rc = linux.fcntl(target, linux.F.GETFD, 0);
        if (linux.errno(rc) != .BADF) return error.BUSY;
    }
    for (fds, 0..) |fd, i| {
        const target: i32 = first + @as(i32, @intCast(i));
        _ = try sys.call("dup3", linux.dup3(fd, target, @as(u32, @bitCast(linux.O{ .CLOEXEC = true }))));
        sys.close(fd);
    }
}

pub const Received = struct { bytes: usize, fd_count: u32 };

/// Receives one message. Descriptors arrive close-on-exec. A message or descriptor list that
/// did not fit is an error (the descriptors that did arrive are closed, never leaked).
pub fn recv(fd: i32, buf: []u8, fds_out: []i32, dont_wait: bool) sys.Error!Received {
    var control: [control_bytes]u8 align(@alignOf(linux.cmsghdr)) = undefined;
    var iov = [_]std.posix.iovec{.{ .base = buf.ptr, .len = buf.len }};
    var msg = linux.msghdr{
        .name = null,
        .namelen = 0,
        .iov = &iov,
        .iovlen = 1,
        .control = &control,
        .controllen = control.len,
        .flags = 0,
    };
    const flags: u32 = MSG_CMSG_CLOEXEC | @as(u32, if (dont_wait) linux.MSG.DONTWAIT else 0);
    const n = try sys.retryCall("recvmsg", linux.recvmsg, .{ fd, &msg, flags });
    var count: u32 = 0;
    var overflow = false;
    if (msg.controllen >= cmsg_header_bytes) {
        const head: *const linux.cmsghdr = @ptrCast(&control);
        if (head.level == linux.SOL.SOCKET and head.type == SCM_RIGHTS and head.len >= cmsg_header_bytes) {
            const received: []align(1) const i32 = std.mem.bytesAsSlice(i32, control[cmsg_header_bytes..head.len]);
            for (received) |rfd| {
                if (count < fds_out.len) {
                    fds_out[count] = rfd;
                    count += 1;
                } else {
                    sys.close(rfd);
                    overflow = true;
                }
            }
        }
    }
    if (overflow or msg.flags & (linux.MSG.TRUNC | linux.MSG.CTRUNC) != 0) {
        for (fds_out[0..count]) |rfd| sys.close(rfd);
        return error.MSGSIZE;
    }
    if (n == 0 and count == 0) return error.CONNRESET; // peer closed
    return .{ .bytes = n, .fd_count = count };
}

test "descriptors cross a socketpair and stay usable" {
    const p = try pair();
    defer sys.close(p[0]);
    defer sys.close(p[1]);
    const pipe_fds = blk: {
        var fds: [2]i32 = undefined;
        _ = try sys.call("pipe2", linux.pipe2(&fds, .{ .CLOEXEC = true }));
        break :blk fds;
    };
    defer sys.close(pipe_fds[0]);
    defer sys.close(pipe_fds[1]);

    _ = try send(p[0], "fds", &pipe_fds, false);
    var buf: [16]u8 = undefined;
    var got: [4]i32 = undefined;
    const r = try recv(p[1], &buf, &got, false);
    try std.testing.expectEqualStrings("fds", buf[0..r.bytes]);
    try std.testing.expectEqual(@as(u32, 2), r.fd_count);
    defer for (got[0..r.fd_count]) |f| sys.close(f);
    // The received write end writes into the original pipe.
    _ = try sys.call("write", linux.write(got[1], "x", 1));
    var one: [1]u8 = undefined;
    try std.testing.expectEqual(@as(usize, 1), try sys.call("read", linux.read(pipe_fds[0], &one, 1)));

    // Message boundaries are kept; nothing waiting is EAGAIN without blocking.
    _ = try send(p[0], "a", &.{}, false);
    _ = try send(p[0], "bc", &.{}, true);
    try std.testing.expectEqual(@as(usize, 1), (try recv(p[1], &buf, &got, true)).bytes);
    try std.testing.expectEqual(@as(usize, 2), (try recv(p[1], &buf, &got, true)).bytes);
    try std.testing.expectError(error.AGAIN, recv(p[1], &buf, &got, true));
}

test "too many descriptors for the receiver: closed, reported" {
    const p = try pair();
    defer sys.close(p[0]);
    defer sys.close(p[1]);
    _ = try send(p[0], "x", &.{ 0, 1, 2 }, false);
    var buf: [4]u8 = undefined;
    var got: [1]i32 = undefined;
    try std.testing.expectError(error.MSGSIZE, recv(p[1], &buf, &got, false));
}

test "place moves descriptors to a free range and refuses a range in use" {
    var p: [2]i32 = undefined;
    _ = try sys.call("pipe2", linux.pipe2(&p, .{ .CLOEXEC = true }));
    try place(&p, 900);
    defer sys.close(900);
    defer sys.close(901);
    try std.testing.expectEqual(linux.E.BADF, linux.errno(linux.fcntl(p[0], linux.F.GETFD, 0)));
    _ = try sys.call("write", linux.write(901, "x", 1));
    var b: [1]u8 = undefined;
    try std.testing.expectEqual(@as(usize, 1), try sys.call("read", linux.read(900, &b, 1)));
    var q: [2]i32 = undefined;
    _ = try sys.call("pipe2", linux.pipe2(&q, .{ .CLOEXEC = true }));
    defer sys.close(q[0]);
    defer sys.close(q[1]);
    try std.testing.expectError(error.BUSY, place(&q, 899)); // 900 is taken
    try std.testing.expect(linux.errno(linux.fcntl(q[0], linux.F.GETFD, 0)) == .SUCCESS);
}
