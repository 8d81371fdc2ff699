//! Builds libmcrelay (the native dataplane loaded by bun:ffi) and runs its unit tests.
//!   zig build                      -> zig-out/lib/libmcrelay.so and zig-out/bin/mcrelay-worker
//!                                     (ReleaseSafe by default)
//!   zig build test                 -> unit tests next to the code
const std = @import("std");
const builtin = @import("builtin");

/// The one Zig release this code is written against; keep in step with scripts/toolchain.env.
const zig_version_pinned = "0.17.1";

comptime {
    const want = std.SemanticVersion.parse(zig_version_pinned) catch unreachable;
    if (builtin.zig_version.order(want) != .eq) {
        @compileError("mcrelay needs Zig " ++ zig_version_pinned ++ ", this is " ++
            builtin.zig_version_string ++ ": run scripts/bootstrap.sh and use .toolchain/bin/zig");
    }
}

/// The generated TypeScript mirror of the ABI (see zig/abi_mirror.zig).
const abi_mirror_path = "src/native/abi.generated.ts";

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    // Assertions stay on in the shipped library unless a benchmark proves they cost.
    const optimize = b.option(std.builtin.Optimize, "optimize", "debug, safe, fast or small (default safe)") orelse .safe;
    // The library embedded in dist/mcrelay is stripped (3.8 MB -> about 0.6 MB); a panic then
    // prints its message and addresses without symbol names.
    const strip = b.option(bool, "strip", "strip symbols and debug info from the library (default false)") orelse false;

    const lib_module = b.createModule(.{
        .root_source_file = b.path("zig/lib.zig"),
        .target = target,
        .optimize = optimize,
        .strip = strip,
        // The library runs inside Bun's process: its threads (background.zig) are libc's.
        .link_libc = true,
    });
    const lib = b.addLibrary(.{
        .name = "mcrelay",
        .linkage = .dynamic,
        .root_module = lib_module,
    });
    b.installArtifact(lib);

    // The worker executable (`mcrelay _worker`): static, no libc, one thread; embedded in
    // dist/mcrelay and started from a memory file (src/native/lib.ts workerExecutable).
    const worker = b.addExecutable(.{
        .name = "mcrelay-worker",
        .root_module = b.createModule(.{
            .root_source_file = b.path("zig/worker.zig"),
            .target = target,
            .optimize = optimize,
            .strip = strip,
            .single_threaded = true,
            .link_libc = false,
        }),
        .linkage = .static,
    });
    b.installArtifact(worker);

    // The TypeScript mirror of the ABI, generated from the Zig types (zig/abi_mirror.zig) and
    // written into the source tree on every `zig build`, so it never lags the library.
    const mirror_exe = b.addExecutable(.{
        .name = "abi-mirror",
        .root_module = b.createModule(.{
            .root_source_file = b.path("zig/abi_mirror.zig"),
            .target = b.graph.host,
            .optimize = .debug,
        }),
    });
    const mirror_run = b.addRunArtifact(mirror_exe);
    const mirror_update = b.addUpdateSourceFiles();
    mirror_update.addCopyFileToSource(mirror_run.captureStdOut(.{}), abi_mirror_path);
    b.getInstallStep().dependOn(&mirror_update.step);
    const mirror_step = b.step("abi", "Regenerate " ++ abi_mirror_path ++ " from the Zig types");
    mirror_step.dependOn(&mirror_update.step);

    const test_module = b.createModule(.{
        .root_source_file = b.path("zig/all_tests.zig"),
        .target = target,
        .optimize = .debug,
        .link_libc = true,
    });
    // A test compares the committed mirror with what the Zig types give.
    test_module.addAnonymousImport("abi_generated_ts", .{ .root_source_file = b.path(abi_mirror_path) });
    const tests = b.addTest(.{ .root_module = test_module });
    const run_tests = b.addRunArtifact(tests);
    // Always run (and report counts), even when nothing changed since the last run.
    run_tests.has_side_effects = true;
    const test_step = b.step("test", "Run the native unit tests");
    test_step.dependOn(&run_tests.step);
}
