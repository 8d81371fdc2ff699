//! Shared counter memory: the supervisor creates a memfd, maps it, and passes it to the worker,
//! which keeps its dataplane counters there. The supervisor reads them without asking, and
//! still has the last counts when a worker dies (even by SIGKILL).
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");

const page_bytes = 4096;

pub fn create(bytes: usize) sys.Error!i32 {
    const fd: i32 = @intCast(try sys.call("memfd_create", linux.memfd_create("mcrelay-stats", linux.MFD.CLOEXEC)));
    errdefer sys.close(fd);
    _ = try sys.call("ftruncate", linux.ftruncate(fd, @intCast(bytes)));
    return fd;
}

pub fn map(fd: i32, bytes: usize) sys.Error![]align(page_bytes) u8 {
    const len = std.mem.alignForward(usize, bytes, page_bytes);
    const addr = try sys.call("mmap", linux.mmap(null, len, .{ .READ = true, .WRITE = true }, .{ .TYPE = .SHARED }, fd, 0));
    return @as([*]align(page_bytes) u8, @ptrFromInt(addr))[0..len];
}

pub fn unmap(region: []align(page_bytes) u8) void {
    _ = linux.munmap(region.ptr, region.len);
}

test "two mappings of one memfd see the same counters" {
    const fd = try create(64 * 1024);
    defer sys.close(fd);
    const a = try map(fd, 64 * 1024);
    defer unmap(a);
    const b = try map(fd, 64 * 1024);
    defer unmap(b);
    const wa = std.mem.bytesAsSlice(u64, a);
    const wb = std.mem.bytesAsSlice(u64, b);
    try std.testing.expectEqual(@as(u64, 0), wb[100]);
    wa[100] = 42;
    try std.testing.expectEqual(@as(u64, 42), wb[100]);
}
