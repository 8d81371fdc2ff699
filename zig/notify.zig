//! systemd readiness (sd_notify): one datagram to the socket named by $NOTIFY_SOCKET, so a
//! Type=notify unit knows the daemon is ready only after sockets are bound and rules applied.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");

pub fn send(socket_path: []const u8, message: []const u8) sys.Error!void {
    var sa = linux.sockaddr.un{ .path = @splat(0) };
    if (socket_path.len == 0 or socket_path.len >= sa.path.len) return error.INVAL;
    if (socket_path[0] != '/' and socket_path[0] != '@') return error.INVAL;
    @memcpy(sa.path[0..socket_path.len], socket_path);
    // A leading '@' names an abstract socket: the kernel wants a NUL there.
    if (socket_path[0] == '@') sa.path[0] = 0;
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.UNIX, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(fd);
    const len: linux.socklen_t = @intCast(@offsetOf(linux.sockaddr.un, "path") + socket_path.len);
    _ = try sys.retryCall("sendto", linux.sendto, .{ fd, message.ptr, message.len, linux.MSG.NOSIGNAL, @as(*const linux.sockaddr, @ptrCast(&sa)), len });
}

test "a notification reaches a datagram socket" {
    const rx: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.UNIX, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(rx);
    var sa = linux.sockaddr.un{ .path = @splat(0) };
    const name = "@mcrelay-notify-test";
    @memcpy(sa.path[0..name.len], name);
    sa.path[0] = 0;
    _ = try sys.call("bind", linux.bind(rx, @ptrCast(&sa), @intCast(@offsetOf(linux.sockaddr.un, "path") + name.len)));
    try send(name, "READY=1");
    var buf: [32]u8 = undefined;
    const n = try sys.call("recvfrom", linux.recvfrom(rx, &buf, buf.len, 0, null, null));
    try std.testing.expectEqualStrings("READY=1", buf[0..n]);
    try std.testing.expectError(error.INVAL, send("relative", "x"));
}
