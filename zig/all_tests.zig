//! Test root: every module with tests is referenced here so `zig build test` runs them all.
const std = @import("std");
const linux = std.os.linux;

test {
    isolateNetwork();
    _ = @import("abi.zig");
    _ = @import("abi_mirror.zig");
    _ = @import("constants.zig");
    _ = @import("sys.zig");
    _ = @import("net.zig");
    _ = @import("filter.zig");
    _ = @import("fanout.zig");
    _ = @import("ring.zig");
    _ = @import("scm.zig");
    _ = @import("shm.zig");
    _ = @import("background.zig");
    _ = @import("link.zig");
    _ = @import("netlink.zig");
    _ = @import("notify.zig");
    _ = @import("rlimit.zig");
    _ = @import("peer.zig");
    _ = @import("lock.zig");
    _ = @import("privileges.zig");
    _ = @import("seccomp.zig");
    _ = @import("confinement.zig");
    _ = @import("dataplane/parse.zig");
    _ = @import("dataplane/parse_ipv6.zig");
    _ = @import("dataplane/table.zig");
    _ = @import("dataplane/stats.zig");
    _ = @import("dataplane/egress.zig");
    _ = @import("dataplane/join.zig");
    _ = @import("dataplane/join6.zig");
    _ = @import("dataplane/loop.zig");
    _ = @import("dataplane/loop_guard.zig");
    _ = @import("dataplane/trace.zig");
    _ = @import("tools/gen.zig");
    _ = @import("tools/gen_raw.zig");
    _ = @import("tools/sink.zig");
    _ = @import("lib.zig");
    _ = @import("worker.zig");
}

/// Many tests send and capture frames on lo. This block runs first, and moves the test process
/// into a network namespace of its own (lo up, nothing else): two test runs at once (two work
/// trees, a developer's and CI's) would otherwise see each other's frames on the host's lo and
/// count them. Without the right to (not root), the tests use the host's lo as before.
fn isolateNetwork() void {
    if (linux.errno(linux.unshare(linux.CLONE.NEWNET)) != .SUCCESS) return;
    // A new namespace's lo is down.
    const rc = linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0);
    if (linux.errno(rc) != .SUCCESS) @panic("isolateNetwork: socket failed");
    const fd: i32 = @intCast(rc);
    defer _ = linux.close(fd);
    var ifr = std.mem.zeroes(linux.ifreq);
    @memcpy(ifr.ifrn.name[0..2], "lo");
    if (linux.errno(linux.ioctl(fd, linux.SIOCGIFFLAGS, @intFromPtr(&ifr))) != .SUCCESS) @panic("isolateNetwork: SIOCGIFFLAGS on lo failed");
    ifr.ifru.flags.UP = true;
    if (linux.errno(linux.ioctl(fd, linux.SIOCSIFFLAGS, @intFromPtr(&ifr))) != .SUCCESS) @panic("isolateNetwork: SIOCSIFFLAGS on lo failed");
}
