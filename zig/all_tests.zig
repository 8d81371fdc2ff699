//! Test root: every module with tests is referenced here so `zig build test` runs them all.
test {
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
