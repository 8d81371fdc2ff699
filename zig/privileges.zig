//! Dropping a worker's privileges after it received its sockets. The kernel's set*id calls are
//! per thread: linked with libc (the library's tests, which fork from a threaded process) they
//! go through libc, which applies them to every thread of the process; the worker executable
//! (zig/worker.zig, no libc) has one thread and makes the calls itself. no_new_privs is likewise per thread, so it
//! is spread to every thread with the worker's seccomp filter (seccomp.zig) installed with
//! TSYNC (which also sets no_new_privs on each thread). The process is made non-dumpable right
//! after its uid changes (and again last): no core dump of the ring, and /proc/<pid> files (fd,
//! mem, environ) belong to root, so another process of the workers' user cannot ptrace it or
//! open its descriptors, not even between the uid change and the seccomp filter.
const std = @import("std");
const builtin = @import("builtin");
const linux = std.os.linux;
const sys = @import("sys.zig");
const filter = @import("filter.zig");
const seccomp = @import("seccomp.zig");
const confinement = @import("confinement.zig");
const constants = @import("constants.zig");

extern "c" fn setgroups(size: usize, list: ?[*]const linux.gid_t) c_int;
extern "c" fn setresuid(ruid: linux.uid_t, euid: linux.uid_t, suid: linux.uid_t) c_int;
extern "c" fn setresgid(rgid: linux.gid_t, egid: linux.gid_t, sgid: linux.gid_t) c_int;

const PR_CAP_AMBIENT_CLEAR_ALL: usize = 4;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x20080522;

fn libcCheck(rc: c_int) sys.Error!void {
    if (rc == 0) return;
    return sys.fromErrnoOf("libc set*id", std.c.errno(rc));
}

/// set*id for every thread: through libc when linked, else the raw call (one thread).
const ids = if (builtin.link_libc) struct {
    fn resuid(r: u32, e: u32, s: u32) sys.Error!void {
        try libcCheck(setresuid(r, e, s));
    }
    fn resgid(r: u32, e: u32, s: u32) sys.Error!void {
        try libcCheck(setresgid(r, e, s));
    }
    fn noGroups() sys.Error!void {
        try libcCheck(setgroups(0, null));
    }
} else struct {
    fn resuid(r: u32, e: u32, s: u32) sys.Error!void {
        _ = try sys.call("setresuid", linux.setresuid(r, e, s));
    }
    fn resgid(r: u32, e: u32, s: u32) sys.Error!void {
        _ = try sys.call("setresgid", linux.setresgid(r, e, s));
    }
    fn noGroups() sys.Error!void {
        _ = try sys.call("setgroups", linux.setgroups(0, &[_]linux.gid_t{}));
    }
};

fn prctl(option: linux.PR, arg2: usize) sys.Error!usize {
    return sys.call("prctl", linux.prctl(@intFromEnum(option), arg2, 0, 0, 0));
}

const CAP_SETUID: u5 = 7;

fn effectiveCaps() sys.Error!u64 {
    var header = linux.cap_user_header_t{ .version = LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    var data: [2]linux.cap_user_data_t = undefined;
    _ = try sys.call("capget", linux.capget(&header, &data[0]));
    return @as(u64, data[0].effective) | (@as(u64, data[1].effective) << 32);
}

/// Becomes uid/gid with no supplementary groups, no capabilities in any set, no_new_privs and
/// the worker's seccomp filter on every thread (its packet sockets, which it may not send on,
/// are the fd_count descriptors from fd_first; 0 for none), SIGKILL when the parent (the
/// supervisor) dies, and not dumpable.
///
/// Capabilities are per thread and capset(2) reaches only the calling thread, but the kernel
/// clears the permitted, effective and ambient sets of a thread whose ids all become non-zero
/// when one of them was 0. So with CAP_SETUID the ids go to 0 first and then to the target,
/// through libc (which repeats set*id on every thread): every thread loses its capabilities,
/// also when the supervisor is a non-root user holding them as ambient capabilities. Without
/// CAP_SETUID the ids stay; the caller's verification then says what remains.
pub fn drop(uid: u32, gid: u32, fd_first: i32, fd_count: u32) sys.Error!void {
    // Neither root's uid nor its group: gid 0 owns what root's processes create.
    if (uid == 0 or gid == 0) return error.INVAL;
    const caps = try effectiveCaps();
    if (caps & (@as(u64, 1) << CAP_SETUID) != 0) {
        try ids.resuid(0, 0, 0);
        // Groups and gid while the uid is 0: afterwards they cannot be changed any more.
        try ids.noGroups();
        try ids.resgid(gid, gid, gid);
        try becomeUser(uid);
    }
    // A uid change from 0 clears permitted, effective and ambient sets on every thread; clear
    // them explicitly anyway (and the inheritable set, which a uid change keeps).
    _ = prctl(.CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL) catch |err| switch (err) {
        error.INVAL => {}, // kernel without ambient capabilities
        else => return err,
    };
    var header = linux.cap_user_header_t{ .version = LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    const empty = [2]linux.cap_user_data_t{
        .{ .effective = 0, .permitted = 0, .inheritable = 0 },
        .{ .effective = 0, .permitted = 0, .inheritable = 0 },
    };
    _ = try sys.call("capset", linux.capset(&header, &empty[0]));
    _ = try prctl(.SET_NO_NEW_PRIVS, 1);
    try seccomp.install(fd_first, fd_count);
    // Cleared by the credential change above, so set afterwards.
    _ = try prctl(.SET_PDEATHSIG, @intFromEnum(linux.SIG.KILL));
    // Already 0 since becomeUser; again in case a step since reset it (a credential change
    // resets it to fs.suid_dumpable).
    _ = try prctl(.SET_DUMPABLE, 0);
}

/// The uid change, and at once not dumpable. A uid change sets dumpable to fs.suid_dumpable:
/// where that is 1, the worker, already running as the workers' user and still holding its
/// packet sockets, could be ptraced by another process of that user until the end of drop
/// (capabilities, seccomp). Clearing it right here closes that window.
fn becomeUser(uid: u32) sys.Error!void {
    try ids.resuid(uid, uid, uid);
    _ = try prctl(.SET_DUMPABLE, 0);
}

test "dropping in a child process gives nobody, no caps, no_new_privs" {
    if (linux.geteuid() != 0) return error.SkipZigTest;
    const pid = linux.fork();
    if (pid == 0) {
        drop(65534, 65534, -1, 0) catch linux.exit(2);
        var r: linux.uid_t = undefined;
        var e: linux.uid_t = undefined;
        var s: linux.uid_t = undefined;
        _ = linux.getresuid(&r, &e, &s);
        if (r != 65534 or e != 65534 or s != 65534) linux.exit(3);
        if (linux.getgroups(0, null) != 0) linux.exit(4);
        var header = linux.cap_user_header_t{ .version = LINUX_CAPABILITY_VERSION_3, .pid = 0 };
        var data: [2]linux.cap_user_data_t = undefined;
        _ = linux.capget(&header, &data[0]);
        if (data[0].permitted != 0 or data[0].effective != 0 or data[0].inheritable != 0) linux.exit(5);
        if (linux.prctl(@intFromEnum(linux.PR.GET_NO_NEW_PRIVS), 0, 0, 0, 0) != 1) linux.exit(6);
        // Privilege is really gone: setting uid back to root fails.
        if (setresuid(0, 0, 0) == 0) linux.exit(7);
        linux.exit(0);
    }
    const status = try waitChildBounded(@intCast(pid), constants.test_child_wait_ms_max);
    try std.testing.expectEqual(@as(u32, 0), linux.W.EXITSTATUS(status));
}

/// fs.suid_dumpable: what a change of ids sets the process's dumpable flag to.
const suid_dumpable_path = "/proc/sys/fs/suid_dumpable";

/// Writes `value` ('0', '1' or '2') to fs.suid_dumpable and returns the value it had.
fn suidDumpableSwap(value: u8) !u8 {
    const old = blk: {
        const fd: i32 = @intCast(try sys.call("openat", linux.openat(linux.AT.FDCWD, suid_dumpable_path, .{ .ACCMODE = .RDONLY, .CLOEXEC = true }, 0)));
        defer sys.close(fd);
        var buf: [1]u8 = undefined;
        if (try sys.call("read", linux.read(fd, &buf, buf.len)) != 1) return error.ShortRead;
        break :blk buf[0];
    };
    const fd: i32 = @intCast(try sys.call("openat", linux.openat(linux.AT.FDCWD, suid_dumpable_path, .{ .ACCMODE = .WRONLY, .CLOEXEC = true }, 0)));
    defer sys.close(fd);
    const text = [_]u8{value};
    if (try sys.call("write", linux.write(fd, &text, text.len)) != 1) return error.ShortWrite;
    return old;
}

/// The calling process's dumpable flag (PR_GET_DUMPABLE: 0, 1 or 2).
fn dumpable() usize {
    return linux.prctl(@intFromEnum(linux.PR.GET_DUMPABLE), 0, 0, 0, 0);
}

/// Runs `child` in a forked process and expects it to exit 0 (another code names the step
/// that failed).
fn expectChildExitsZero(comptime child: fn () u8) !void {
    const pid = linux.fork();
    if (pid == 0) linux.exit(child());
    const status = try waitChildBounded(@intCast(pid), constants.test_child_wait_ms_max);
    try std.testing.expectEqual(@as(u32, 0), linux.W.EXITSTATUS(status));
}

test "not dumpable from the uid change on, whatever fs.suid_dumpable makes of it" {
    if (linux.geteuid() != 0) return error.SkipZigTest;
    // Where fs.suid_dumpable is 0 (this kernel's default) or 2, a uid change alone makes the
    // process not dumpable, and this test could not fail. So it runs with 1, where the uid
    // change leaves the process dumpable and only becomeUser's prctl clears it; the global
    // setting is put back as soon as the child is done.
    const old = suidDumpableSwap('1') catch |err| switch (err) {
        // Not writable here (a container's read-only /proc/sys: EROFS, unnamed in sys.Error).
        error.ACCES, error.PERM, error.Unexpected => return error.SkipZigTest,
        else => return err,
    };
    defer _ = suidDumpableSwap(old) catch |err| std.debug.panic("fs.suid_dumpable left at 1, restore it to {c}: {t}", .{ old, err });
    try expectChildExitsZero(struct {
        fn child() u8 {
            // The premise: with this setting a change of ids makes the process dumpable (from
            // not dumpable, so that it is the change that did it).
            if (linux.prctl(@intFromEnum(linux.PR.SET_DUMPABLE), 0, 0, 0, 0) != 0) return 2;
            ids.resgid(65534, 65534, 65534) catch return 2;
            if (dumpable() != 1) return 3;
            becomeUser(65534) catch return 4;
            return if (dumpable() == 0) 0 else 5;
        }
    }.child);
}

test "a drop that changes no ids (no CAP_SETUID) still ends not dumpable" {
    if (linux.geteuid() != 0) return error.SkipZigTest;
    try expectChildExitsZero(struct {
        fn child() u8 {
            // Like a worker exec'd by a supervisor without CAP_SETUID: its ids stay, so no
            // change of ids resets the dumpable flag an exec gave it; only drop's last prctl
            // clears it.
            var header = linux.cap_user_header_t{ .version = LINUX_CAPABILITY_VERSION_3, .pid = 0 };
            var data: [2]linux.cap_user_data_t = undefined;
            if (linux.capget(&header, &data[0]) != 0) return 2;
            data[0].effective &= ~(@as(u32, 1) << CAP_SETUID);
            if (linux.capset(&header, &data[0]) != 0) return 2;
            if (linux.prctl(@intFromEnum(linux.PR.SET_DUMPABLE), 1, 0, 0, 0) != 0) return 2;
            drop(65534, 65534, -1, 0) catch return 3;
            if (linux.getuid() != 0) return 4; // the premise: the ids did not change
            return if (dumpable() == 0) 0 else 5;
        }
    }.child);
}

test "dropping to uid 0 or gid 0 is refused before anything changes" {
    if (linux.geteuid() != 0) return error.SkipZigTest;
    // In a child: were it not refused, the drop would change this process's ids.
    const pid = linux.fork();
    if (pid == 0) {
        if (drop(0, 65534, -1, 0)) linux.exit(2) else |err| if (err != error.INVAL) linux.exit(3);
        if (drop(65534, 0, -1, 0)) linux.exit(4) else |err| if (err != error.INVAL) linux.exit(5);
        var r: linux.uid_t = undefined;
        var e: linux.uid_t = undefined;
        var s: linux.uid_t = undefined;
        _ = linux.getresuid(&r, &e, &s);
        if (r != 0 or e != 0 or s != 0) linux.exit(6);
        if (linux.prctl(@intFromEnum(linux.PR.GET_NO_NEW_PRIVS), 0, 0, 0, 0) != 0) linux.exit(7);
        linux.exit(0);
    }
    const status = try waitChildBounded(@intCast(pid), constants.test_child_wait_ms_max);
    try std.testing.expectEqual(@as(u32, 0), linux.W.EXITSTATUS(status));
}

/// A forked test child runs in a copy of a process that may have had other threads: a lock
/// one of them held (libc's, stderr's) stays held in the child forever. Waiting without a
/// bound would then hang the whole test run (seen once under heavy load), so the parent waits
/// at most `timeout_ms`, then kills the child and fails the test.
fn waitChildBounded(pid: linux.pid_t, timeout_ms: u32) !u32 {
    var waited_ms: u32 = 0;
    while (true) {
        var status: i32 = 0;
        const rc = linux.waitpid(pid, &status, linux.W.NOHANG);
        switch (linux.errno(rc)) {
            .SUCCESS => if (rc == @as(usize, @intCast(pid))) return @bitCast(status),
            .INTR => {},
            else => return error.WaitFailed,
        }
        if (waited_ms >= timeout_ms) {
            _ = linux.kill(pid, linux.SIG.KILL);
            _ = linux.waitpid(pid, &status, 0);
            std.debug.print("forked test child {d} did not exit within {d} ms: killed\n", .{ pid, timeout_ms });
            return error.ChildTimedOut;
        }
        const ts = linux.timespec{ .sec = 0, .nsec = 10 * std.time.ns_per_ms };
        _ = linux.nanosleep(&ts, null);
        waited_ms += 10;
    }
}

fn expectErrno(expected: linux.E, rc: usize) !void {
    try std.testing.expectEqual(expected, linux.errno(rc));
}

/// In a child: a packet socket with the ingress filter attached and locked, as the supervisor
/// hands it over, and a blank one (not set up yet: a ring the supervisor may set up later),
/// both moved to the worker's packet descriptor range; then the worker's drop. What a
/// compromised worker would try must fail, on both.
fn confinedChild() !void {
    const first: i32 = 700;
    const set_up: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0)));
    try filter.attach(set_up, filter.ingress());
    try sys.setsockoptInt(set_up, linux.SOL.SOCKET, linux.SO.LOCK_FILTER, 1);
    const blank: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0)));
    _ = try sys.call("dup3", linux.dup3(set_up, first, @as(u32, @bitCast(linux.O{ .CLOEXEC = true }))));
    _ = try sys.call("dup3", linux.dup3(blank, first + 1, @as(u32, @bitCast(linux.O{ .CLOEXEC = true }))));
    sys.close(set_up);
    sys.close(blank);
    const fd = first;
    const placeholder: i32 = @intCast(try sys.call("openat", linux.openat(linux.AT.FDCWD, "/dev/null", .{ .ACCMODE = .RDONLY, .CLOEXEC = true }, 0)));
    try drop(65534, 65534, first, 2);
    // The blank socket: no injection, no binding it to a link, no renumbering.
    const blank_frame: [64]u8 = @splat(0);
    try expectErrno(.PERM, linux.write(first + 1, &blank_frame, blank_frame.len));
    try expectErrno(.PERM, linux.sendto(first + 1, &blank_frame, blank_frame.len, 0, null, 0));
    var sll = std.mem.zeroes(linux.sockaddr.ll);
    sll.ifindex = 1;
    try expectErrno(.PERM, linux.bind(first + 1, @ptrCast(&sll), @sizeOf(linux.sockaddr.ll)));
    try expectErrno(.PERM, linux.dup(first + 1));
    // A descriptor just past the range is not a packet socket: dup works there.
    const other: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0)));
    _ = try sys.call("dup3", linux.dup3(other, first + 2, @as(u32, @bitCast(linux.O{ .CLOEXEC = true }))));
    sys.close(other);
    sys.close(@intCast(try sys.call("dup", linux.dup(first + 2))));
    sys.close(first + 2);
    // A ring dropped without `keep`: its closed number is kept taken with a copy of a
    // descriptor from outside the range (worker.zig reserveFd), which the filter allows.
    sys.close(first + 1);
    _ = try sys.call("dup3", linux.dup3(placeholder, first + 1, @as(u32, @bitCast(linux.O{ .CLOEXEC = true }))));
    try expectErrno(.PERM, linux.dup(first + 1));
    var zero: c_int = 0;
    // Detaching the ingress filter (to sniff the whole link): locked, and filtered.
    try expectErrno(.PERM, linux.setsockopt(fd, linux.SOL.SOCKET, linux.SO.DETACH_FILTER, std.mem.asBytes(&zero), @sizeOf(c_int)));
    // Joining the link promiscuously or changing the ring: no SOL_PACKET option.
    try expectErrno(.PERM, linux.setsockopt(fd, linux.SOL.PACKET, linux.PACKET.VERSION, std.mem.asBytes(&zero), @sizeOf(c_int)));
    // New raw, packet or Unix sockets.
    try expectErrno(.PERM, linux.socket(linux.AF.PACKET, linux.SOCK.RAW, 0));
    try expectErrno(.PERM, linux.socket(linux.AF.INET, linux.SOCK.RAW, linux.IPPROTO.UDP));
    try expectErrno(.PERM, linux.socket(linux.AF.UNIX, linux.SOCK.STREAM, 0));
    try expectErrno(.PERM, linux.socket(linux.AF.NETLINK, linux.SOCK.RAW, 0));
    // Injecting frames through the packet socket, or renumbering it first.
    const frame: [64]u8 = @splat(0);
    try expectErrno(.PERM, linux.write(fd, &frame, frame.len));
    try expectErrno(.PERM, linux.sendto(fd, &frame, frame.len, 0, null, 0));
    try expectErrno(.PERM, linux.dup(fd));
    try expectErrno(.PERM, linux.fcntl(fd, linux.F.DUPFD_CLOEXEC, 100));
    // execve, ptrace, bpf, new namespaces.
    const argv = [_:null]?[*:0]const u8{"/bin/true"};
    const envp = [_:null]?[*:0]const u8{};
    try expectErrno(.PERM, linux.execve("/bin/true", &argv, &envp));
    try expectErrno(.PERM, linux.ptrace(linux.PTRACE.TRACEME, 0, 0, 0, 0));
    try expectErrno(.PERM, linux.syscall3(.bpf, 0, 0, 0));
    try expectErrno(.PERM, linux.unshare(linux.CLONE.NEWUSER));
    // What a worker needs still works: UDP sockets, reading the packet socket's statistics.
    const udp: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0)));
    try sys.setsockoptInt(udp, linux.SOL.SOCKET, linux.SO.RCVBUF, 4096);
    sys.close(udp);
    var st: [3]u32 = .{ 0, 0, 0 };
    var len: linux.socklen_t = @sizeOf([3]u32);
    _ = try sys.call("getsockopt", linux.getsockopt(fd, linux.SOL.PACKET, linux.PACKET.STATISTICS, std.mem.asBytes(&st), &len));
    // Not dumpable: /proc/self belongs to root now.
    if (linux.prctl(@intFromEnum(linux.PR.GET_DUMPABLE), 0, 0, 0, 0) != 0) return error.Dumpable;
    // The worker's own check agrees: every probe is refused.
    if (confinement.verify(fd)) |f| {
        var buf: [160]u8 = undefined;
        std.debug.print("confinement probe: {s}\n", .{confinement.describe(f, &buf)});
        return error.ProbeNotRefused;
    }
}

test "as the worker's uid with its packet socket: detaching the filter, new raw sockets, injection and execve fail" {
    if (linux.geteuid() != 0) return error.SkipZigTest;
    const pid = linux.fork();
    if (pid == 0) {
        confinedChild() catch |err| {
            std.debug.print("confined worker: {t}\n", .{err});
            linux.exit(1);
        };
        linux.exit(0);
    }
    const status = try waitChildBounded(@intCast(pid), constants.test_child_wait_ms_max);
    try std.testing.expect(linux.W.IFEXITED(status));
    try std.testing.expectEqual(@as(u32, 0), linux.W.EXITSTATUS(status));
}

test "a locked ingress filter cannot be detached even by root" {
    if (linux.geteuid() != 0) return error.SkipZigTest;
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(fd);
    try filter.attach(fd, filter.ingress());
    try sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.LOCK_FILTER, 1);
    var zero: c_int = 0;
    try expectErrno(.PERM, linux.setsockopt(fd, linux.SOL.SOCKET, linux.SO.DETACH_FILTER, std.mem.asBytes(&zero), @sizeOf(c_int)));
    try expectErrno(.PERM, linux.setsockopt(fd, linux.SOL.SOCKET, linux.SO.LOCK_FILTER, std.mem.asBytes(&zero), @sizeOf(c_int)));
}
