//! Test root: every module with tests is referenced here so `zig build test` runs them all.
test {
    _ = @import("abi.zig");
    _ = @import("constants.zig");
    _ = @import("sys.zig");
    _ = @import("dataplane/parse.zig");
    _ = @import("filter.zig");
    _ = @import("tools/gen.zig");
    _ = @import("tools/sink.zig");
}
