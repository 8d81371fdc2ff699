//! An exclusive advisory lock on a directory (flock), held for as long as the descriptor is
//! open: the daemon takes its state directory's lock at start and keeps it until it exits
//! (the kernel drops it even after SIGKILL), so a second daemon on the same directory fails.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");

const LOCK_EX: i32 = 2;
const LOCK_NB: i32 = 4;

/// Opens `path` (a directory) and locks it; returns the descriptor that holds the lock.
/// AGAIN (EWOULDBLOCK) when another process holds it.
pub fn lockDir(path: [:0]const u8) sys.Error!i32 {
    const flags: linux.O = .{ .ACCMODE = .RDONLY, .DIRECTORY = true, .CLOEXEC = true };
    const fd: i32 = @intCast(try sys.retryCall("open", linux.open, .{ path.ptr, flags, @as(linux.mode_t, 0) }));
    errdefer sys.close(fd);
    _ = try sys.retryCall("flock", linux.flock, .{ fd, LOCK_EX | LOCK_NB });
    return fd;
}

test "a locked directory cannot be locked a second time until released" {
    var buf: [64]u8 = undefined;
    const dir = try std.fmt.bufPrintSentinel(&buf, "/tmp/mcr-lock-test-{d}", .{linux.getpid()}, 0);
    _ = try sys.call("mkdir", linux.mkdir(dir.ptr, 0o700));
    defer _ = linux.rmdir(dir.ptr);
    const first = try lockDir(dir);
    // flock locks belong to the open file description: a second open conflicts.
    try std.testing.expectError(error.AGAIN, lockDir(dir));
    sys.close(first);
    const again = try lockDir(dir);
    sys.close(again);
}
