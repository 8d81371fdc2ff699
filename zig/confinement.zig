//! The worker's check of its own confinement, made right after the privilege drop (after the
//! /proc/self/task/*/status check in zig/worker.zig verifyDropped): calls a confined worker must be
//! refused with EPERM, by the seccomp filter (seccomp.zig) or by the locked packet socket. A
//! probe that is answered otherwise means the confinement is not what it should be, and the
//! worker refuses to run.
//!
//! Each probe is harmless if it is not refused, so a broken filter costs a worker start, never
//! the socket or the host:
//! - the packet socket's filter is read locked (SO_LOCK_FILTER) before anything is tried on it,
//!   so its SO_DETACH_FILTER is refused by the kernel whatever seccomp does;
//! - PACKET_VERSION on a socket with a ring is EBUSY, a 0-byte write on a packet socket is
//!   EINVAL (shorter than an Ethernet header): nothing changes, nothing is sent;
//! - a dup or a new socket that is not refused is closed at once;
//! - SO_DETACH_FILTER on a fresh UDP socket without a filter is ENOENT;
//! - execve of a path that does not exist is ENOENT (seccomp answers before any path lookup);
//! - ptrace(PTRACE_PEEKDATA) of itself is ESRCH (PTRACE_TRACEME is not used: it would succeed
//!   without the filter and make the supervisor the worker's tracer);
//! - bpf() with an empty attribute is EINVAL (or EPERM when unprivileged BPF is off).
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");

/// What a probe got: refused (EPERM, as it must be), another errno, or success.
pub const Outcome = union(enum) {
    refused,
    errno: linux.E,
    succeeded,
    /// For a read-back probe: the value read.
    value: i32,
};

pub const Probe = struct {
    name: []const u8,
    run: *const fn (packet_fd: i32) Outcome,
    /// The probe reads what the supervisor set up on the socket (its lock), not what the
    /// worker's own filter refuses: a failure is the socket's, and a new socket may pass.
    of_socket: bool = false,
};

/// What a syscall's raw result means for a probe; a descriptor it returned is closed.
fn outcome(rc: usize, closes_fd: bool) Outcome {
    const e = linux.errno(rc);
    if (e == .PERM) return .refused;
    if (e != .SUCCESS) return .{ .errno = e };
    if (closes_fd) sys.close(@intCast(rc));
    return .succeeded;
}

fn lockRead(fd: i32) Outcome {
    var v: c_int = 0;
    var len: linux.socklen_t = @sizeOf(c_int);
    const rc = linux.getsockopt(fd, linux.SOL.SOCKET, linux.SO.LOCK_FILTER, std.mem.asBytes(&v), &len);
    if (linux.errno(rc) != .SUCCESS) return .{ .errno = linux.errno(rc) };
    return if (v == 1) .refused else .{ .value = v };
}

fn detachPacket(fd: i32) Outcome {
    var zero: c_int = 0;
    return outcome(linux.setsockopt(fd, linux.SOL.SOCKET, linux.SO.DETACH_FILTER, std.mem.asBytes(&zero), @sizeOf(c_int)), false);
}

fn packetOption(fd: i32) Outcome {
    var version: c_int = @intFromEnum(linux.tpacket_versions.V3);
    return outcome(linux.setsockopt(fd, linux.SOL.PACKET, linux.PACKET.VERSION, std.mem.asBytes(&version), @sizeOf(c_int)), false);
}

fn writePacket(fd: i32) Outcome {
    const empty: [1]u8 = .{0};
    return outcome(linux.write(fd, &empty, 0), false);
}

fn dupPacket(fd: i32) Outcome {
    return outcome(linux.dup(fd), true);
}

fn socketProbe(comptime family: u32, comptime kind: u32, comptime protocol: u32) *const fn (i32) Outcome {
    return struct {
        fn run(_: i32) Outcome {
            return outcome(linux.socket(family, kind | linux.SOCK.CLOEXEC, protocol), true);
        }
    }.run;
}

fn detachUdp(_: i32) Outcome {
    const rc = linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0);
    if (linux.errno(rc) != .SUCCESS) return .{ .errno = linux.errno(rc) };
    const udp: i32 = @intCast(rc);
    defer sys.close(udp);
    var zero: c_int = 0;
    return outcome(linux.setsockopt(udp, linux.SOL.SOCKET, linux.SO.DETACH_FILTER, std.mem.asBytes(&zero), @sizeOf(c_int)), false);
}

fn execveMissing(_: i32) Outcome {
    const path = "/nonexistent/mcrelay-confinement-probe";
    const argv = [_:null]?[*:0]const u8{path};
    const envp = [_:null]?[*:0]const u8{};
    return outcome(linux.execve(path, &argv, &envp), false);
}

fn ptraceSelf(_: i32) Outcome {
    const PTRACE_PEEKDATA = 2;
    var word: usize = 0;
    return outcome(linux.ptrace(PTRACE_PEEKDATA, linux.getpid(), @intFromPtr(&word), @intFromPtr(&word), 0), false);
}

fn bpfEmpty(_: i32) Outcome {
    return outcome(linux.syscall3(.bpf, 0, 0, 0), false);
}

/// In this order: the lock is read before the packet socket's filter is touched.
pub const probes = [_]Probe{
    .{ .name = "getsockopt(SO_LOCK_FILTER) of the packet socket is 1", .run = lockRead, .of_socket = true },
    .{ .name = "setsockopt(SO_DETACH_FILTER) on the packet socket", .run = detachPacket },
    .{ .name = "setsockopt(SOL_PACKET, PACKET_VERSION) on the packet socket", .run = packetOption },
    .{ .name = "write(0 bytes) on the packet socket", .run = writePacket },
    .{ .name = "dup(packet socket)", .run = dupPacket },
    .{ .name = "socket(AF_PACKET, SOCK_RAW)", .run = socketProbe(linux.AF.PACKET, linux.SOCK.RAW, 0) },
    .{ .name = "socket(AF_INET, SOCK_RAW)", .run = socketProbe(linux.AF.INET, linux.SOCK.RAW, linux.IPPROTO.UDP) },
    .{ .name = "socket(AF_NETLINK, SOCK_RAW)", .run = socketProbe(linux.AF.NETLINK, linux.SOCK.RAW, 0) },
    .{ .name = "socket(AF_UNIX, SOCK_STREAM)", .run = socketProbe(linux.AF.UNIX, linux.SOCK.STREAM, 0) },
    .{ .name = "setsockopt(SO_DETACH_FILTER) on a UDP socket", .run = detachUdp },
    .{ .name = "execve(a missing path)", .run = execveMissing },
    .{ .name = "ptrace(PTRACE_PEEKDATA, self)", .run = ptraceSelf },
    .{ .name = "bpf(BPF_MAP_CREATE, empty)", .run = bpfEmpty },
};

pub const Failure = struct {
    probe: []const u8,
    got: Outcome,
    /// The failed probe is about the packet socket itself (Probe.of_socket).
    of_socket: bool = false,
};

/// Runs every probe; the first one not refused, or null when all were.
pub fn verify(packet_fd: i32) ?Failure {
    for (probes) |p| {
        const got = p.run(packet_fd);
        if (got != .refused) return .{ .probe = p.name, .got = got, .of_socket = p.of_socket };
    }
    return null;
}

/// "NAME: got X, expected EPERM" into `buf` (truncated to fit); returns the text.
pub fn describe(f: Failure, buf: []u8) []const u8 {
    var got_buf: [32]u8 = undefined;
    const got: []const u8 = switch (f.got) {
        .refused => "EPERM",
        .errno => |e| std.fmt.bufPrint(&got_buf, "E{s}", .{@tagName(e)}) catch "?",
        .succeeded => "success",
        .value => |v| std.fmt.bufPrint(&got_buf, "{d}", .{v}) catch "?",
    };
    return std.fmt.bufPrint(buf, "{s}: got {s}, expected {s}", .{ f.probe, got, if (f.got == .value) "1" else "EPERM" }) catch buf[0..@min(buf.len, f.probe.len)];
}

test "without the worker's filter, as root, no probe changes anything: the packet socket keeps its locked filter and ring" {
    if (linux.geteuid() != 0) return error.SkipZigTest;
    const ring = @import("ring.zig");
    const fd: i32 = @intCast(try sys.check(linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(fd);
    _ = try ring.setup(fd, 1, 1500, 1 << 20, 0); // lo
    const expected = [_]Outcome{
        .refused, // locked
        .refused, // the lock refuses the detach, with or without seccomp
        .{ .errno = .BUSY }, // the ring is in place
        .{ .errno = .INVAL }, // shorter than an Ethernet header: nothing sent
        .succeeded, // dup (closed)
        .succeeded, // root may open raw sockets (closed)
        .succeeded,
        .succeeded,
        .succeeded,
        .{ .errno = .NOENT }, // no filter on a fresh UDP socket
        .{ .errno = .NOENT },
        .{ .errno = .SRCH },
        .{ .errno = .INVAL },
    };
    comptime std.debug.assert(expected.len == probes.len);
    for (probes, expected) |p, want| {
        const got = p.run(fd);
        std.testing.expectEqualDeep(want, got) catch |err| {
            std.debug.print("probe {s}\n", .{p.name});
            return err;
        };
    }
    try std.testing.expectEqualDeep(Outcome.refused, lockRead(fd));
    // The ring is still there (a second one is EBUSY).
    try std.testing.expectEqualDeep(Outcome{ .errno = .BUSY }, packetOption(fd));
    const f = verify(fd).?;
    try std.testing.expectEqualStrings(probes[2].name, f.probe);
}

test "only the lock read-back is the socket's failure: every other probe is the worker's own filter" {
    try std.testing.expect(probes[0].of_socket);
    for (probes[1..]) |p| try std.testing.expect(!p.of_socket);
}

test "describe names the probe and what it got" {
    var buf: [128]u8 = undefined;
    try std.testing.expectEqualStrings("execve(a missing path): got ENOENT, expected EPERM", describe(.{ .probe = "execve(a missing path)", .got = .{ .errno = .NOENT } }, &buf));
    try std.testing.expectEqualStrings("x: got 0, expected 1", describe(.{ .probe = "x", .got = .{ .value = 0 } }, &buf));
    var small: [8]u8 = undefined;
    try std.testing.expectEqualStrings("execve(a", describe(.{ .probe = "execve(a missing path)", .got = .succeeded }, &small));
}
