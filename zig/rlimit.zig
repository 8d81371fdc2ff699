//! The descriptor limit: the supervisor raises its soft RLIMIT_NOFILE to the hard limit at
//! start, so client connections and worker restarts draw from the largest pool the
//! administrator allows; the control server then keeps a reserve of it for workers.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");

pub const Nofile = struct { soft: u64, hard: u64 };

/// Sets the soft limit to the hard one and returns both as they are afterwards.
pub fn raiseNofile() sys.Error!Nofile {
    var lim: linux.rlimit = undefined;
    _ = try sys.call("getrlimit", linux.getrlimit(.NOFILE, &lim));
    if (lim.cur < lim.max) {
        const want = linux.rlimit{ .cur = lim.max, .max = lim.max };
        // EPERM cannot happen (the soft limit may always rise to the hard one); EINVAL means
        // the hard limit is above fs.nr_open: keep the soft limit as it was.
        if (sys.call("setrlimit", linux.setrlimit(.NOFILE, &want))) |_| {
            lim.cur = lim.max;
        } else |err| switch (err) {
            error.INVAL => {},
            else => return err,
        }
    }
    return .{ .soft = lim.cur, .hard = lim.max };
}

test "raising the descriptor limit leaves soft equal to hard" {
    const n = try raiseNofile();
    try std.testing.expectEqual(n.hard, n.soft);
    var lim: linux.rlimit = undefined;
    _ = try sys.call("getrlimit", linux.getrlimit(.NOFILE, &lim));
    try std.testing.expectEqual(n.soft, lim.cur);
}
