//! Syscall results as Zig errors, and back to -errno at the FFI boundary.
//! Every errno a socket, ring, mmap or ioctl call can plausibly return has a named error, so
//! the cause survives the trip through Zig's error unions and reaches TypeScript intact.
const std = @import("std");
const linux = std.os.linux;

pub const E = linux.E;

/// Named after the errno (EACCES -> error.ACCES). Unknown errnos become error.Unexpected,
/// which reaches TypeScript as -EPROTO with the real errno logged nowhere: keep the list full.
pub const Error = error{
    PERM, NOENT, SRCH, INTR, IO, NXIO, BADF, AGAIN, NOMEM, ACCES, FAULT, BUSY, EXIST, NODEV,
    INVAL, NFILE, MFILE, NOSPC, RANGE, NOSYS, NOTSOCK, DESTADDRREQ, MSGSIZE, PROTOTYPE,
    NOPROTOOPT, PROTONOSUPPORT, OPNOTSUPP, AFNOSUPPORT, ADDRINUSE, ADDRNOTAVAIL, NETDOWN,
    NETUNREACH, NOBUFS, ISCONN, NOTCONN, CONNREFUSED, HOSTUNREACH, ALREADY, PIPE, OVERFLOW,
    TIMEDOUT, CONNRESET, Unexpected,
};

const names = [_][]const u8{
    "PERM", "NOENT", "SRCH", "INTR", "IO", "NXIO", "BADF", "AGAIN", "NOMEM", "ACCES", "FAULT",
    "BUSY", "EXIST", "NODEV", "INVAL", "NFILE", "MFILE", "NOSPC", "RANGE", "NOSYS", "NOTSOCK",
    "DESTADDRREQ", "MSGSIZE", "PROTOTYPE", "NOPROTOOPT", "PROTONOSUPPORT", "OPNOTSUPP",
    "AFNOSUPPORT", "ADDRINUSE", "ADDRNOTAVAIL", "NETDOWN", "NETUNREACH", "NOBUFS", "ISCONN",
    "NOTCONN", "CONNREFUSED", "HOSTUNREACH", "ALREADY", "PIPE", "OVERFLOW",
    "TIMEDOUT", "CONNRESET",
};

pub fn fromErrno(e: E) Error {
    inline for (names) |name| {
        if (@hasField(E, name) and e == @field(E, name)) return @field(Error, name);
    }
    return error.Unexpected;
}

/// Positive errno for an error (the FFI returns its negation).
pub fn toErrno(err: Error) i32 {
    inline for (names) |name| {
        if (err == @field(Error, name)) return @intCast(@intFromEnum(@field(E, name)));
    }
    return @intCast(@intFromEnum(E.PROTO));
}

/// Checks a raw syscall return; EINTR is returned as error.INTR for the caller to retry.
pub fn check(rc: usize) Error!usize {
    const e = linux.errno(rc);
    if (e == .SUCCESS) return rc;
    return fromErrno(e);
}

/// Like check, but retries on EINTR.
pub fn retry(comptime f: anytype, args: anytype) Error!usize {
    while (true) {
        return check(@call(.auto, f, args)) catch |err| switch (err) {
            error.INTR => continue,
            else => return err,
        };
    }
}

pub fn close(fd: i32) void {
    _ = linux.close(fd);
}

pub fn setsockoptInt(fd: i32, level: i32, opt: u32, value: c_int) Error!void {
    const v: c_int = value;
    _ = try check(linux.setsockopt(fd, level, opt, std.mem.asBytes(&v), @sizeOf(c_int)));
}

pub fn setsockopt(fd: i32, level: i32, opt: u32, value: anytype) Error!void {
    const bytes = std.mem.asBytes(value);
    _ = try check(linux.setsockopt(fd, level, opt, bytes.ptr, @intCast(bytes.len)));
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonicNs() u64 {
    return clockNs(.MONOTONIC);
}

/// CLOCK_REALTIME in nanoseconds (payload timestamps: comparable across processes).
pub fn realtimeNs() u64 {
    return clockNs(.REALTIME);
}

fn clockNs(clock: linux.clockid_t) u64 {
    var ts: linux.timespec = undefined;
    _ = linux.clock_gettime(clock, &ts);
    return @as(u64, @intCast(ts.sec)) * std.time.ns_per_s + @as(u64, @intCast(ts.nsec));
}

test "errno round trip" {
    try std.testing.expectEqual(error.AGAIN, fromErrno(.AGAIN));
    try std.testing.expectEqual(@as(i32, 11), toErrno(error.AGAIN));
    try std.testing.expectEqual(@as(i32, 101), toErrno(error.NETUNREACH));
    try std.testing.expectError(error.BADF, check(@bitCast(@as(isize, -9))));
    try std.testing.expectEqual(@as(usize, 3), try check(3));
}
