//! Slow kernel work off the supervisor's event loop: setting up a packet socket allocates and
//! clears its ring (several ms for 32 MiB), and closing one waits for the network stack to let
//! go of it (tens of ms). Each runs on a short-lived native thread; TypeScript polls for the
//! result. The thread never calls into JavaScript.
const std = @import("std");
const sys = @import("sys.zig");
const abi = @import("abi.zig");
const ring = @import("ring.zig");
const constants = @import("constants.zig");

const thread_stack_bytes = constants.background_stack_bytes;

pub const SetupJob = struct {
    fd: i32,
    setup: abi.PacketSetup,
    ring_bytes: u32,
    done: std.atomic.Value(u32),
    result: i32,
    geometry: abi.RingGeometry,

    fn run(job: *SetupJob) void {
        if (ring.setup(job.fd, job.setup.ifindex, job.setup.mtu, job.ring_bytes, job.setup.fanout_id)) |geo| {
            job.geometry = geo;
            job.result = 0;
        } else |err| {
            job.result = -sys.toErrno(err);
        }
        job.done.store(1, .release);
    }
};

pub fn startSetup(fd: i32, setup: abi.PacketSetup, ring_bytes: u32) sys.Error!*SetupJob {
    const job = std.heap.page_allocator.create(SetupJob) catch return error.NOMEM;
    job.* = .{
        .fd = fd,
        .setup = setup,
        .ring_bytes = ring_bytes,
        .done = .init(0),
        .result = 0,
        .geometry = std.mem.zeroes(abi.RingGeometry),
    };
    const thread = std.Thread.spawn(.{ .stack_size = thread_stack_bytes }, SetupJob.run, .{job}) catch {
        std.heap.page_allocator.destroy(job);
        return error.AGAIN;
    };
    thread.detach();
    return job;
}

/// Done: writes the geometry, frees the job and returns its result (0 or -errno). Not done: 1.
pub fn pollSetup(job: *SetupJob, out: *abi.RingGeometry) i32 {
    if (job.done.load(.acquire) == 0) return 1;
    const result = job.result;
    out.* = job.geometry;
    std.heap.page_allocator.destroy(job);
    return result;
}

/// Making a packet socket blank again (ring.reset) waits for the network stack twice (unbind,
/// ring freed): tens of ms, off the event loop like a close.
pub const ResetJob = struct {
    /// A second descriptor of the socket, owned by the job: the caller may close its own
    /// meanwhile (a worker replaced), and its number may then name another socket.
    fd: i32,
    done: std.atomic.Value(u32),
    result: i32,

    fn run(job: *ResetJob) void {
        job.result = if (ring.reset(job.fd)) |_| 0 else |err| -sys.toErrno(err);
        sys.close(job.fd);
        job.done.store(1, .release);
    }
};

pub fn startReset(fd: i32) sys.Error!*ResetJob {
    const own: i32 = @intCast(try sys.call("fcntl", std.os.linux.fcntl(fd, std.os.linux.F.DUPFD_CLOEXEC, 0)));
    const job = std.heap.page_allocator.create(ResetJob) catch {
        sys.close(own);
        return error.NOMEM;
    };
    job.* = .{ .fd = own, .done = .init(0), .result = 0 };
    const thread = std.Thread.spawn(.{ .stack_size = thread_stack_bytes }, ResetJob.run, .{job}) catch {
        sys.close(own);
        std.heap.page_allocator.destroy(job);
        return error.AGAIN;
    };
    thread.detach();
    return job;
}

/// Done: frees the job and returns its result (0 or -errno). Not done: 1.
pub fn pollReset(job: *ResetJob) i32 {
    if (job.done.load(.acquire) == 0) return 1;
    const result = job.result;
    std.heap.page_allocator.destroy(job);
    return result;
}

fn closeFd(fd: i32) void {
    sys.close(fd);
}

/// Closes a descriptor on a native thread (a packet socket's close can take tens of ms).
pub fn closeLater(fd: i32) void {
    const thread = std.Thread.spawn(.{ .stack_size = thread_stack_bytes }, closeFd, .{fd}) catch {
        sys.close(fd);
        return;
    };
    thread.detach();
}

test "a socket set up on another thread reports its geometry" {
    if (std.os.linux.geteuid() != 0) return error.SkipZigTest;
    const linux = std.os.linux;
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0)));
    const job = try startSetup(fd, .{ .ifindex = 1, .mtu = 1500, .ring_bytes = 0, .fanout_id = 0 }, 1 << 20);
    var geo: abi.RingGeometry = undefined;
    var rc: i32 = 1;
    var tries: u32 = 0;
    while (rc == 1 and tries < 1000) : (tries += 1) {
        rc = pollSetup(job, &geo);
        if (rc == 1) {
            var ts = std.os.linux.timespec{ .sec = 0, .nsec = 1_000_000 };
            _ = std.os.linux.nanosleep(&ts, null);
        }
    }
    try std.testing.expectEqual(@as(i32, 0), rc);
    try std.testing.expect(geo.block_count > 0);
    closeLater(fd);
}

test "a reset socket is blank again: refused while its ring is mapped, then set up anew (locked filter kept)" {
    if (std.os.linux.geteuid() != 0) return error.SkipZigTest;
    const linux = std.os.linux;
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(fd);
    const geo = try ring.setup(fd, 1, 1500, 1 << 20, 0);
    var mapped = try ring.Ring.attach(fd, geo);
    // Frames the removed plane's ring saw are not counted for the next interface.
    try @import("dataplane/loop.zig").testInject(5000, 3);
    try std.testing.expectError(error.BUSY, ring.reset(fd));
    mapped.deinit();
    const job = try startReset(fd);
    var rc: i32 = 1;
    var tries: u32 = 0;
    while (rc == 1 and tries < 5000) : (tries += 1) {
        rc = pollReset(job);
        if (rc == 1) {
            var ts = std.os.linux.timespec{ .sec = 0, .nsec = 1_000_000 };
            _ = std.os.linux.nanosleep(&ts, null);
        }
    }
    try std.testing.expectEqual(@as(i32, 0), rc);
    // Parked: on lo with a protocol lo never carries (not on every interface with ETH_P_ALL).
    try std.testing.expectEqual(@as(u16, ring.parked_protocol), boundProtocol(fd));
    try std.testing.expectEqual([3]u32{ 0, 0, 0 }, try ring.statisticsOf(fd));
    // Set up again for an interface: the filter is locked and is not attached twice.
    const again = try ring.setup(fd, 1, 1500, 1 << 20, 0);
    try std.testing.expectEqual(geo.block_count, again.block_count);
    try std.testing.expectEqual(@as(u16, std.os.linux.ETH.P.ALL), boundProtocol(fd));
}

fn boundProtocol(fd: i32) u16 {
    var sll = std.mem.zeroes(std.os.linux.sockaddr.ll);
    var len: std.os.linux.socklen_t = @sizeOf(std.os.linux.sockaddr.ll);
    _ = sys.call("getsockname", std.os.linux.getsockname(fd, @ptrCast(&sll), &len)) catch unreachable;
    std.debug.assert(sll.ifindex == 1);
    return std.mem.bigToNative(u16, sll.protocol);
}
