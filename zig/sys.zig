//! Syscall results as Zig errors, and back to -errno at the FFI boundary.
//! Every errno a socket, ring, mmap or ioctl call can plausibly return has a named error, so
//! the cause survives the trip through Zig's error unions and reaches TypeScript intact.
const std = @import("std");
const linux = std.os.linux;

pub const E = linux.E;

/// Named after the errno (EACCES -> error.ACCES). An errno outside this list is logged to
/// stderr with the syscall's name and its number (`call`), then becomes error.Unexpected, which
/// reaches TypeScript as -EPROTO. Errnos that can only mean a bug in this library (EFAULT: a
/// pointer we passed; with `callOwn`, EBADF/ENOTSOCK on a descriptor we created) panic instead:
/// TigerStyle, a broken invariant crashes at its source rather than travel as an error.
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

/// fromErrno for the result of `syscall`: EFAULT panics (a bad pointer from this library is a
/// bug), an errno with no name here is logged with the syscall's name before it becomes EPROTO.
pub fn fromErrnoOf(comptime syscall: []const u8, e: E) Error {
    if (e == .FAULT) @panic(syscall ++ ": EFAULT: this library passed a bad pointer (a bug)");
    const err = fromErrno(e);
    if (err == error.Unexpected) logUnknown(syscall, e);
    return err;
}

/// One line on stderr; no allocation, no formatting library (callable from any thread).
fn logUnknown(comptime syscall: []const u8, e: E) void {
    var buf: [128]u8 = undefined;
    const line = std.fmt.bufPrint(&buf, "mcrelay native: " ++ syscall ++ ": unexpected errno {d}, reported as EPROTO\n", .{@intFromEnum(e)}) catch return;
    _ = linux.write(2, line.ptr, line.len);
}

/// Positive errno for an error (the FFI returns its negation).
pub fn toErrno(err: Error) i32 {
    inline for (names) |name| {
        if (err == @field(Error, name)) return @intCast(@intFromEnum(@field(E, name)));
    }
    return @intCast(@intFromEnum(E.PROTO));
}

/// Checks the raw return of `syscall`; EINTR is returned as error.INTR for the caller to retry.
/// EFAULT panics; an errno with no name is logged with `syscall` (see fromErrnoOf).
pub fn call(comptime syscall: []const u8, rc: usize) Error!usize {
    const e = linux.errno(rc);
    if (e == .SUCCESS) return rc;
    return fromErrnoOf(syscall, e);
}

/// Like `call`, on a descriptor this library created and still owns: EBADF or ENOTSOCK can
/// only mean it was closed or mixed up here, a bug, and panic.
pub fn callOwn(comptime syscall: []const u8, rc: usize) Error!usize {
    switch (linux.errno(rc)) {
        .BADF => @panic(syscall ++ ": EBADF on a descriptor this library owns (a bug)"),
        .NOTSOCK => @panic(syscall ++ ": ENOTSOCK on a socket this library created (a bug)"),
        else => return call(syscall, rc),
    }
}

/// `call` for code that has not named its syscall yet.
pub fn check(rc: usize) Error!usize {
    return call("syscall", rc);
}

/// Like `call`, but retries on EINTR.
pub fn retryCall(comptime syscall: []const u8, comptime f: anytype, args: anytype) Error!usize {
    while (true) {
        return call(syscall, @call(.auto, f, args)) catch |err| switch (err) {
            error.INTR => continue,
            else => return err,
        };
    }
}

/// `retryCall` for code that has not named its syscall yet.
pub fn retry(comptime f: anytype, args: anytype) Error!usize {
    return retryCall("syscall", f, args);
}

pub fn close(fd: i32) void {
    _ = linux.close(fd);
}

/// setsockopt on a socket this library created: EBADF/ENOTSOCK panic (callOwn).
pub fn setsockoptInt(fd: i32, level: i32, opt: u32, value: c_int) Error!void {
    const v: c_int = value;
    _ = try callOwn("setsockopt", linux.setsockopt(fd, level, opt, std.mem.asBytes(&v), @sizeOf(c_int)));
}

pub fn setsockopt(fd: i32, level: i32, opt: u32, value: anytype) Error!void {
    const bytes = std.mem.asBytes(value);
    _ = try callOwn("setsockopt", linux.setsockopt(fd, level, opt, bytes.ptr, @intCast(bytes.len)));
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

test "an errno with no name becomes Unexpected (EPROTO at the boundary); named ones keep their name" {
    // ENOTRECOVERABLE (131) has no name here: logged with the syscall's name, then Unexpected.
    try std.testing.expectError(error.Unexpected, call("test_syscall", @bitCast(@as(isize, -131))));
    try std.testing.expectEqual(@as(i32, @intCast(@intFromEnum(E.PROTO))), toErrno(error.Unexpected));
    try std.testing.expectError(error.ADDRINUSE, call("bind", @bitCast(@as(isize, -98))));
    try std.testing.expectError(error.INTR, callOwn("poll", @bitCast(@as(isize, -4))));
}

test "errno round trip" {
    try std.testing.expectEqual(error.AGAIN, fromErrno(.AGAIN));
    try std.testing.expectEqual(@as(i32, 11), toErrno(error.AGAIN));
    try std.testing.expectEqual(@as(i32, 101), toErrno(error.NETUNREACH));
    try std.testing.expectError(error.BADF, check(@bitCast(@as(isize, -9))));
    try std.testing.expectEqual(@as(usize, 3), try check(3));
}
