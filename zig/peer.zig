//! The credentials of the process at the other end of a connected Unix socket, as the kernel
//! recorded them when it called connect(2): SO_PEERCRED (pid, uid, gid), SO_PEERGROUPS (its
//! supplementary groups) and SO_PEERPIDFD (a pidfd that pins the very process, so a later look
//! at /proc/<pid> can be checked against pid reuse). None of these can be forged by the peer.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");

pub const Cred = extern struct { pid: i32, uid: u32, gid: u32 };

/// Not in every libc header yet (Linux 6.5).
const SO_PEERPIDFD: u32 = 77;

pub fn cred(fd: i32) sys.Error!Cred {
    var c: Cred = undefined;
    var len: linux.socklen_t = @sizeOf(Cred);
    _ = try sys.call("getsockopt", linux.getsockopt(fd, linux.SOL.SOCKET, linux.SO.PEERCRED, std.mem.asBytes(&c), &len));
    // A short answer would be a kernel bug, not an operating error.
    std.debug.assert(len == @sizeOf(Cred));
    return c;
}

/// The peer's supplementary groups, at most `out.len`; ERANGE when it has more.
pub fn groups(fd: i32, out: []u32) sys.Error!usize {
    var len: linux.socklen_t = @intCast(out.len * @sizeOf(u32));
    _ = try sys.call("getsockopt", linux.getsockopt(fd, linux.SOL.SOCKET, linux.SO.PEERGROUPS, std.mem.sliceAsBytes(out).ptr, &len));
    return len / @sizeOf(u32);
}

/// A pidfd of the peer process (ENOPROTOOPT before Linux 6.5).
pub fn pidfd(fd: i32) sys.Error!i32 {
    var p: i32 = -1;
    var len: linux.socklen_t = @sizeOf(i32);
    _ = try sys.call("getsockopt", linux.getsockopt(fd, linux.SOL.SOCKET, SO_PEERPIDFD, std.mem.asBytes(&p), &len));
    return p;
}

/// Does the process behind a pidfd still run? (Signal 0 checks without sending anything.)
pub fn alive(pid_fd: i32) sys.Error!bool {
    _ = sys.call("syscall4", linux.syscall4(.pidfd_send_signal, @as(usize, @bitCast(@as(isize, pid_fd))), 0, 0, 0)) catch |err| switch (err) {
        error.SRCH => return false,
        else => return err,
    };
    return true;
}

test "the peer of a socketpair is this very process" {
    var fds: [2]i32 = undefined;
    _ = try sys.call("socketpair", linux.socketpair(linux.AF.UNIX, linux.SOCK.STREAM | linux.SOCK.CLOEXEC, 0, &fds));
    defer sys.close(fds[0]);
    defer sys.close(fds[1]);
    const c = try cred(fds[0]);
    try std.testing.expectEqual(linux.getpid(), c.pid);
    try std.testing.expectEqual(linux.geteuid(), c.uid);
    try std.testing.expectEqual(linux.getegid(), c.gid);
    var buf: [256]u32 = undefined;
    const n = try groups(fds[0], &buf);
    try std.testing.expect(n <= buf.len);
    const p = pidfd(fds[0]) catch |err| switch (err) {
        error.NOPROTOOPT => return, // kernel before 6.5
        else => return err,
    };
    defer sys.close(p);
    try std.testing.expect(try alive(p));
}
