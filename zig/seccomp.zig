//! The workers' seccomp filter, installed with TSYNC on every thread after the privilege drop.
//! A worker holds one dangerous object, the AF_PACKET socket (it could sniff the whole link or
//! inject frames with it, without any capability), and runs Bun, whose runtime needs a broad
//! and version-dependent set of syscalls. So the filter is built around what a worker may do
//! with sockets, and denies outright what no worker ever needs:
//! - sockets: only AF_INET/AF_INET6 SOCK_DGRAM can be created (egress and joins);
//! - the packet sockets: no send, write, bind, connect, dup or F_DUPFD on their descriptors (no
//!   injection, no rebinding to another interface or protocol, no renumbering around this
//!   rule). A worker holds its packet sockets at a contiguous range of descriptor numbers,
//!   placed there before the drop (one per interface it may serve, configured or not yet), and
//!   the rule covers the whole range; SOL_PACKET options and socket filter options (attach, detach, lock, BPF) on any
//!   socket are denied (the supervisor also locked the filter: SO_LOCK_FILTER);
//! - denied: execve, ptrace and process_vm_*, bpf, mount and friends, keyctl, module and kexec
//!   calls, namespaces (unshare, setns, clone with CLONE_NEW*), perf_event_open, userfaultfd,
//!   io_uring (it would bypass these rules), socketpair, handle-based opens, clock setting;
//!   clone3 gets ENOSYS (its flags cannot be inspected) so threads are made with clone.
//! Everything else is allowed. A syscall of another ABI (x32, i386) kills the process.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const filter = @import("filter.zig");
const Insn = filter.Insn;

const SECCOMP = linux.SECCOMP;
const builtin = @import("builtin");

/// AUDIT_ARCH_* of the syscall ABI this library is built for (linux/audit.h); the std's
/// `AUDIT.ARCH.current` does not compile in Zig 0.17.1.
const audit_arch: u32 = switch (builtin.cpu.arch) {
    .x86_64 => 0xC000003E,
    .aarch64 => 0xC00000B7,
    else => @compileError("the worker seccomp filter knows x86_64 and aarch64 only"),
};
const BPF_AND: u16 = 0x50;

const ret_allow: u32 = SECCOMP.RET.ALLOW;
const ret_eperm: u32 = SECCOMP.RET.ERRNO | @as(u32, @intFromEnum(linux.E.PERM));
const ret_enosys: u32 = SECCOMP.RET.ERRNO | @as(u32, @intFromEnum(linux.E.NOSYS));
const ret_kill: u32 = SECCOMP.RET.KILL_PROCESS;

const off_nr: u32 = @offsetOf(SECCOMP.data, "nr");
const off_arch: u32 = @offsetOf(SECCOMP.data, "arch");
/// Low 32 bits of an argument (little endian): descriptors, families and levels are ints.
fn offArg(comptime i: u32) u32 {
    return @offsetOf(SECCOMP.data, "arg0") + i * 8;
}

/// Syscalls no worker ever makes (those the architecture lacks are skipped).
const denied = [_][]const u8{
    "execve",          "execveat",          "ptrace",           "process_vm_readv", "process_vm_writev",
    "bpf",             "mount",             "umount2",          "pivot_root",       "chroot",
    "keyctl",          "add_key",           "request_key",      "unshare",          "setns",
    "init_module",     "finit_module",      "delete_module",    "kexec_load",       "kexec_file_load",
    "reboot",          "swapon",            "swapoff",          "perf_event_open",  "userfaultfd",
    "open_by_handle_at", "name_to_handle_at", "fanotify_init",  "acct",             "settimeofday",
    "clock_settime",   "clock_adjtime",     "adjtimex",         "quotactl",         "iopl",
    "ioperm",          "kcmp",              "fsopen",           "fsmount",          "fsconfig",
    "move_mount",      "open_tree",         "mount_setattr",    "socketpair",       "io_uring_setup",
    "io_uring_enter",  "io_uring_register", "personality",
};

/// Calls whose first argument is a descriptor that must not be the packet socket.
const packet_fd_denied = [_][]const u8{
    "sendto", "sendmsg", "sendmmsg", "write", "writev", "pwrite64", "pwritev", "pwritev2",
    "bind",   "connect", "dup",      "dup2",  "dup3",
};

/// SOL_SOCKET options that change a socket's filter.
const filter_options = [_]u32{ 26, 27, 44, 50, 51, 52, 68 }; // ATTACH_FILTER, DETACH_FILTER, LOCK_FILTER, ATTACH_BPF, ATTACH_REUSEPORT_CBPF/EBPF, DETACH_REUSEPORT_BPF

fn nr(comptime name: []const u8) ?u32 {
    if (!@hasField(linux.SYS, name)) return null;
    return @intCast(@intFromEnum(@field(linux.SYS, name)));
}

fn countPresent(comptime names: []const []const u8) usize {
    var n: usize = 0;
    for (names) |name| {
        if (nr(name) != null) n += 1;
    }
    return n;
}

/// Room for the program: the fixed parts, 2 per denied call, 6 per packet-socket call, 2 per option.
pub const insns_max = 48 + 2 * countPresent(&denied) + 6 * countPresent(&packet_fd_denied) + 2 * filter_options.len;

const Builder = struct {
    buf: [insns_max]Insn = undefined,
    len: usize = 0,

    fn emit(b: *Builder, code: u16, jt: u8, jf: u8, k: u32) void {
        b.buf[b.len] = .{ .code = code, .jt = jt, .jf = jf, .k = k };
        b.len += 1;
    }
    fn load(b: *Builder, offset: u32) void {
        b.emit(filter.BPF_LD | filter.BPF_W | filter.BPF_ABS, 0, 0, offset);
    }
    fn ret(b: *Builder, value: u32) void {
        b.emit(filter.BPF_RET | filter.BPF_K, 0, 0, value);
    }
    /// if (A == k) skip `skip` instructions.
    fn skipIfEq(b: *Builder, k: u32, skip: u8) void {
        b.emit(filter.BPF_JMP | filter.BPF_JEQ | filter.BPF_K, skip, 0, k);
    }
    /// if (A != k) skip `skip` instructions.
    fn skipIfNe(b: *Builder, k: u32, skip: u8) void {
        b.emit(filter.BPF_JMP | filter.BPF_JEQ | filter.BPF_K, 0, skip, k);
    }
    /// if (A < first or A >= end) skip `skip` instructions after these two.
    fn skipUnlessIn(b: *Builder, first: u32, end: u32, skip: u8) void {
        b.emit(filter.BPF_JMP | filter.BPF_JGE | filter.BPF_K, 0, skip + 1, first);
        b.emit(filter.BPF_JMP | filter.BPF_JGE | filter.BPF_K, skip, 0, end);
    }
};

/// The worker's program; its packet sockets are the descriptors fd_first .. fd_first+fd_count-1.
pub fn build(b: *Builder, fd_first: i32, fd_count: u32) void {
    const first: u32 = if (fd_count == 0) 0 else @bitCast(fd_first);
    const end: u32 = first + fd_count;
    b.load(off_arch);
    b.skipIfEq(audit_arch, 1);
    b.ret(ret_kill);
    b.load(off_nr);
    if (builtin.cpu.arch == .x86_64) {
        // x32 syscalls share the architecture value, with bit 30 set.
        b.emit(filter.BPF_JMP | filter.BPF_JGE | filter.BPF_K, 0, 1, 0x40000000);
        b.ret(ret_kill);
    }
    inline for (denied) |name| {
        if (comptime nr(name)) |n| {
            b.skipIfNe(n, 1);
            b.ret(ret_eperm);
        }
    }
    b.skipIfNe(nr("clone3").?, 1);
    b.ret(ret_enosys);
    // clone(flags, ...): no new namespaces.
    b.skipIfNe(nr("clone").?, 4);
    b.load(offArg(0));
    b.emit(filter.BPF_JMP | filter.BPF_JSET | filter.BPF_K, 0, 1, linux.CLONE.NEWUSER | linux.CLONE.NEWNET | linux.CLONE.NEWNS | linux.CLONE.NEWPID | linux.CLONE.NEWIPC | linux.CLONE.NEWUTS | linux.CLONE.NEWCGROUP);
    b.ret(ret_eperm);
    b.ret(ret_allow);
    // socket(family, type, protocol): IPv4 or IPv6 datagrams only.
    b.skipIfNe(nr("socket").?, 9);
    b.load(offArg(0));
    b.skipIfEq(linux.AF.INET, 2);
    b.skipIfEq(linux.AF.INET6, 1);
    b.ret(ret_eperm);
    b.load(offArg(1));
    b.emit(filter.BPF_ALU | BPF_AND | filter.BPF_K, 0, 0, 0xf);
    b.skipIfNe(linux.SOCK.DGRAM, 1);
    b.ret(ret_allow);
    b.ret(ret_eperm);
    // setsockopt(fd, level, name, ...): no SOL_PACKET, no socket filter options.
    b.skipIfNe(nr("setsockopt").?, 6 + filter_options.len * 2);
    b.load(offArg(1));
    b.skipIfNe(linux.SOL.PACKET, 1);
    b.ret(ret_eperm);
    b.skipIfEq(linux.SOL.SOCKET, 1);
    b.ret(ret_allow);
    b.load(offArg(2));
    inline for (filter_options) |opt| {
        b.skipIfNe(opt, 1);
        b.ret(ret_eperm);
    }
    // fcntl(packet fd, F_DUPFD*): no second number for the packet socket.
    b.load(off_nr); // (reached from the filter options with A = optname: reload)
    b.skipIfNe(nr("fcntl").?, 8);
    b.load(offArg(0));
    b.skipUnlessIn(first, end, 4);
    b.load(offArg(1));
    b.skipIfEq(linux.F.DUPFD, 1);
    b.skipIfNe(linux.F.DUPFD_CLOEXEC, 1);
    b.ret(ret_eperm);
    b.ret(ret_allow);
    // Sends, writes, bind, connect, dup on the packet socket.
    inline for (packet_fd_denied) |name| {
        if (comptime nr(name)) |n| {
            b.skipIfNe(n, 5);
            b.load(offArg(0));
            b.skipUnlessIn(first, end, 1);
            b.ret(ret_eperm);
            b.ret(ret_allow);
        }
    }
    b.ret(ret_allow);
}

/// Installs the worker's filter on every thread (TSYNC); needs no_new_privs (or CAP_SYS_ADMIN).
pub fn install(fd_first: i32, fd_count: u32) sys.Error!void {
    var b = Builder{};
    build(&b, fd_first, fd_count);
    const prog = filter.Program{ .len = @intCast(b.len), .filter = &b.buf };
    const rc = linux.seccomp(SECCOMP.SET_MODE_FILTER, SECCOMP.FILTER_FLAG.TSYNC, &prog);
    // A positive result is the id of a thread that could not be synchronized.
    const r = try sys.call("seccomp", rc);
    if (r != 0) return error.BUSY;
}

test "the worker filter fits the builder and the kernel's limit" {
    var b = Builder{};
    build(&b, 500, 32);
    try std.testing.expect(b.len <= insns_max);
    try std.testing.expect(b.len <= filter.BPF_MAXINSNS);
}
