//! Dropping a worker's privileges after it received its sockets. Credentials are changed
//! through libc because the kernel's set*id calls are per thread and libc applies them to
//! every thread of the process (Bun runs several); no_new_privs is likewise per thread, so it
//! is spread to every thread with a seccomp filter installed with TSYNC (which also sets
//! no_new_privs on each thread), a filter that allows everything.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const filter = @import("filter.zig");

extern "c" fn setgroups(size: usize, list: ?[*]const linux.gid_t) c_int;
extern "c" fn setresuid(ruid: linux.uid_t, euid: linux.uid_t, suid: linux.uid_t) c_int;
extern "c" fn setresgid(rgid: linux.gid_t, egid: linux.gid_t, sgid: linux.gid_t) c_int;

const PR_CAP_AMBIENT_CLEAR_ALL: usize = 4;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x20080522;

fn libcCheck(rc: c_int) sys.Error!void {
    if (rc == 0) return;
    return sys.fromErrno(std.c.errno(rc));
}

fn prctl(option: linux.PR, arg2: usize) sys.Error!usize {
    return sys.check(linux.prctl(@intFromEnum(option), arg2, 0, 0, 0));
}

const CAP_SETUID: u5 = 7;

fn effectiveCaps() sys.Error!u64 {
    var header = linux.cap_user_header_t{ .version = LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    var data: [2]linux.cap_user_data_t = undefined;
    _ = try sys.check(linux.capget(&header, &data[0]));
    return @as(u64, data[0].effective) | (@as(u64, data[1].effective) << 32);
}

/// Becomes uid/gid with no supplementary groups, no capabilities in any set, no_new_privs on
/// every thread, and SIGKILL when the parent (the supervisor) dies.
///
/// Capabilities are per thread and capset(2) reaches only the calling thread, but the kernel
/// clears the permitted, effective and ambient sets of a thread whose ids all become non-zero
/// when one of them was 0. So with CAP_SETUID the ids go to 0 first and then to the target,
/// through libc (which repeats set*id on every thread): every thread loses its capabilities,
/// also when the supervisor is a non-root user holding them as ambient capabilities. Without
/// CAP_SETUID the ids stay; the caller's verification then says what remains.
pub fn drop(uid: u32, gid: u32) sys.Error!void {
    if (uid == 0) return error.INVAL;
    const caps = try effectiveCaps();
    if (caps & (@as(u64, 1) << CAP_SETUID) != 0) {
        try libcCheck(setresuid(0, 0, 0));
        // Groups and gid while the uid is 0: afterwards they cannot be changed any more.
        try libcCheck(setgroups(0, null));
        try libcCheck(setresgid(gid, gid, gid));
        try libcCheck(setresuid(uid, uid, uid));
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
    _ = try sys.check(linux.capset(&header, &empty[0]));
    _ = try prctl(.SET_NO_NEW_PRIVS, 1);
    try spreadNoNewPrivs();
    // Cleared by the credential change above, so set afterwards.
    _ = try prctl(.SET_PDEATHSIG, @intFromEnum(linux.SIG.KILL));
}

/// An allow-all seccomp filter installed with TSYNC: the kernel sets no_new_privs on every
/// thread it synchronizes. With the constant-action bitmap (Linux 5.11) it costs nothing per
/// syscall.
fn spreadNoNewPrivs() sys.Error!void {
    const allow = [_]filter.Insn{.{ .code = filter.BPF_RET | filter.BPF_K, .jt = 0, .jf = 0, .k = linux.SECCOMP.RET.ALLOW }};
    const prog = filter.Program{ .len = allow.len, .filter = &allow };
    const rc = linux.seccomp(linux.SECCOMP.SET_MODE_FILTER, linux.SECCOMP.FILTER_FLAG.TSYNC, &prog);
    _ = try sys.check(rc);
}

test "dropping in a child process gives nobody, no caps, no_new_privs" {
    if (linux.geteuid() != 0) return error.SkipZigTest;
    const pid = linux.fork();
    if (pid == 0) {
        drop(65534, 65534) catch linux.exit(2);
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
    var status: i32 = 0;
    _ = linux.waitpid(@intCast(pid), &status, 0);
    try std.testing.expectEqual(@as(u32, 0), linux.W.EXITSTATUS(@bitCast(status)));
}
