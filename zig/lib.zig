//! The C ABI of libmcrelay: the only file with `export fn`. Every export is a thin shim over
//! a module that knows nothing of the ABI. Fallible exports return i32: >= 0 is success,
//! < 0 is -errno. Handles cross as pointers written to an out-parameter and 64-bit values
//! through memory; the only pointers returned as values are the counter words of an open
//! object (mcr_gen_counters, mcr_sink_counters), valid until it is closed.
const std = @import("std");
const abi = @import("abi.zig");
const abi_mirror = @import("abi_mirror.zig");
const constants = @import("constants.zig");
const sys = @import("sys.zig");
const link = @import("link.zig");
const scm = @import("scm.zig");
const loop = @import("dataplane/loop.zig");
const trace = @import("dataplane/trace.zig");
const shm = @import("shm.zig");
const ring = @import("ring.zig");
const netlink = @import("netlink.zig");
const notify = @import("notify.zig");
const rlimit = @import("rlimit.zig");
const peer = @import("peer.zig");
const lock = @import("lock.zig");
const background = @import("background.zig");
const fanout = @import("fanout.zig");
const Gen = @import("tools/gen.zig").Gen;
const gen_mod = @import("tools/gen.zig");
const Sink = @import("tools/sink.zig").Sink;
const sink_mod = @import("tools/sink.zig");
const linux = std.os.linux;

fn rc(err: sys.Error) i32 {
    return -sys.toErrno(err);
}

// ABI identity and description, checked by TypeScript right after loading.

export fn mcr_abi_version() u32 {
    return abi.version;
}

/// The ABI as these sources build it, one fact per line (struct sizes and field offsets,
/// counter names by index, limits; see abi_mirror.zig). Copies up to `cap` bytes into `out`
/// and returns the full length; TypeScript compares it with its generated mirror.
export fn mcr_abi_describe(out: [*]u8, cap: u32) u32 {
    const text = abi_mirror.description;
    const n = @min(cap, text.len);
    @memcpy(out[0..n], text[0..n]);
    return @intCast(text.len);
}

// Sockets and descriptors.

/// An AF_PACKET socket that queues nothing until the worker binds it (protocol 0). Needs
/// CAP_NET_RAW: the supervisor calls this and passes the descriptor on.
export fn mcr_packet_open() i32 {
    const fd = sys.call("socket", linux.socket(linux.AF.PACKET, linux.SOCK.RAW | linux.SOCK.CLOEXEC, 0)) catch |err| return rc(err);
    return @intCast(fd);
}

/// Sets up a packet socket for an interface (ring, filter, bind, fanout) on a native thread;
/// mcr_packet_setup_poll gives the ring geometry the worker maps.
export fn mcr_packet_setup_start(fd: i32, cfg: *const abi.PacketSetup, out: *?*background.SetupJob) i32 {
    if (cfg.mtu == 0 or cfg.mtu > constants.mtu_max or cfg.ifindex == 0) return -sys.toErrno(error.INVAL);
    const ring_bytes = if (cfg.ring_bytes == 0) constants.ring_bytes_default else cfg.ring_bytes;
    out.* = background.startSetup(fd, cfg.*, ring_bytes) catch |err| return rc(err);
    return 0;
}

/// 1 while running; when done: 0 (geometry written) or -errno, and the job is freed.
export fn mcr_packet_setup_poll(job: *background.SetupJob, out: *abi.RingGeometry) i32 {
    return background.pollSetup(job, out);
}

/// Makes a set-up packet socket blank again (not receiving, ring freed) for reuse, on a native
/// thread; mcr_packet_reset_poll gives the result (-EBUSY while a worker still maps its ring).
export fn mcr_packet_reset_start(fd: i32, out: *?*background.ResetJob) i32 {
    out.* = background.startReset(fd) catch |err| return rc(err);
    return 0;
}

/// 1 while running; when done: 0 or -errno, and the job is freed.
export fn mcr_packet_reset_poll(job: *background.ResetJob) i32 {
    return background.pollReset(job);
}

/// Closes a descriptor on a native thread, without waiting.
export fn mcr_fd_close_async(fd: i32) void {
    background.closeLater(fd);
}

/// flowHash(dst, port) of the fanout program, for tests of the TypeScript twin.
export fn mcr_fanout_hash(dst: u32, port: u16) u32 {
    return fanout.flowHash(dst, port);
}

export fn mcr_fd_close(fd: i32) i32 {
    _ = sys.call("close", linux.close(fd)) catch |err| return rc(err);
    return 0;
}

/// Clears close-on-exec so a child process inherits the descriptor.
export fn mcr_fd_inherit(fd: i32) i32 {
    _ = sys.call("fcntl", linux.fcntl(fd, linux.F.SETFD, 0)) catch |err| return rc(err);
    return 0;
}

export fn mcr_link_query(name: [*]const u8, name_len: u32, out: *abi.LinkInfo) i32 {
    out.* = link.query(name[0..name_len]) catch |err| return rc(err);
    return 0;
}

export fn mcr_scm_pair(out: *[2]i32) i32 {
    out.* = scm.pair() catch |err| return rc(err);
    return 0;
}

export fn mcr_scm_send(fd: i32, data: [*]const u8, len: u32, fds: [*]const i32, fd_count: u32, dont_wait: u32) i32 {
    const n = scm.send(fd, data[0..len], fds[0..fd_count], dont_wait != 0) catch |err| return rc(err);
    return @intCast(n);
}

/// Receives one message; returns its length and writes the descriptor count to `fd_count`.
export fn mcr_scm_recv(fd: i32, buf: [*]u8, cap: u32, fds: [*]i32, fds_cap: u32, fd_count: *u32, dont_wait: u32) i32 {
    const r = scm.recv(fd, buf[0..cap], fds[0..fds_cap], dont_wait != 0) catch |err| return rc(err);
    fd_count.* = r.fd_count;
    return @intCast(r.bytes);
}

// Process limits, peers of the control socket, the state directory's lock.

/// Raises the soft RLIMIT_NOFILE to the hard limit; writes [soft, hard] to `out`.
export fn mcr_nofile_raise(out: *[2]u64) i32 {
    const n = rlimit.raiseNofile() catch |err| return rc(err);
    out.* = .{ n.soft, n.hard };
    return 0;
}

/// SO_PEERCRED of a connected Unix socket: writes [pid, uid, gid] to `out`.
export fn mcr_peer_cred(fd: i32, out: *[3]u32) i32 {
    const c = peer.cred(fd) catch |err| return rc(err);
    out.* = .{ @bitCast(c.pid), c.uid, c.gid };
    return 0;
}

/// SO_PEERGROUPS: writes up to `cap` group ids to `out`; returns how many (ERANGE: more).
export fn mcr_peer_groups(fd: i32, out: [*]u32, cap: u32) i32 {
    const n = peer.groups(fd, out[0..cap]) catch |err| return rc(err);
    return @intCast(n);
}

/// SO_PEERPIDFD: a pidfd of the peer (the caller closes it).
export fn mcr_peer_pidfd(fd: i32) i32 {
    return peer.pidfd(fd) catch |err| return rc(err);
}

/// 1 when the process behind the pidfd still runs, 0 when it ended.
export fn mcr_pidfd_alive(pid_fd: i32) i32 {
    const yes = peer.alive(pid_fd) catch |err| return rc(err);
    return @intFromBool(yes);
}

/// Opens and flock()s a directory (LOCK_EX|LOCK_NB); returns the descriptor holding the lock.
export fn mcr_dir_lock(path: [*:0]const u8) i32 {
    return lock.lockDir(std.mem.span(path)) catch |err| return rc(err);
}

// Shared counter memory.

/// A memfd sized for one dataplane's counters and trace ring; returns the descriptor.
export fn mcr_shm_create() i32 {
    const fd = shm.create(loop.shared_bytes) catch |err| return rc(err);
    return fd;
}

/// Maps a counter memfd; writes the address to `out`.
export fn mcr_shm_map(fd: i32, out: *?[*]u64) i32 {
    const region = shm.map(fd, loop.shared_bytes) catch |err| return rc(err);
    out.* = @ptrCast(@alignCast(region.ptr));
    return 0;
}

/// Where the trace ring starts in the shared region, and its size in bytes (dataplane/trace.zig).
export fn mcr_trace_layout(out: *[4]u32) void {
    out.* = .{ @intCast(loop.trace_offset), trace.region_bytes, trace.record_bytes, trace.records_max };
}

export fn mcr_shm_unmap(words: [*]u64) void {
    const len = std.mem.alignForward(usize, loop.shared_bytes, 4096);
    shm.unmap(@as([*]align(4096) u8, @ptrCast(@alignCast(words)))[0..len]);
}

/// sd_notify: sends `message` to the datagram socket `path` ($NOTIFY_SOCKET).
export fn mcr_notify(path: [*]const u8, path_len: u32, message: [*]const u8, message_len: u32) i32 {
    notify.send(path[0..path_len], message[0..message_len]) catch |err| return rc(err);
    return 0;
}

// Netlink (links and addresses).

export fn mcr_nl_open(out: *?*netlink.Netlink) i32 {
    out.* = netlink.Netlink.create() catch |err| return rc(err);
    return 0;
}

/// Requests a dump (1 links, 2 addresses); returns its sequence number.
export fn mcr_nl_dump(nl: *netlink.Netlink, what: u32) i32 {
    if (what != 1 and what != 2) return -sys.toErrno(error.INVAL);
    const seq = nl.requestDump(@enumFromInt(what)) catch |err| return rc(err);
    return @intCast(seq & 0x7fffffff);
}

/// Reads waiting changes into `out` (up to `cap` records); returns how many.
export fn mcr_nl_read(nl: *netlink.Netlink, out: [*]abi.NlEvent, cap: u32) i32 {
    const n = nl.read(out[0..cap]) catch |err| return rc(err);
    return @intCast(n);
}

export fn mcr_nl_close(nl: *netlink.Netlink) void {
    nl.destroy();
}

// Traffic generator.

export fn mcr_gen_open(cfg: *const abi.GenConfig, out: *?*Gen) i32 {
    out.* = Gen.create(cfg) catch |err| return rc(err);
    return 0;
}

/// Returns 1 when done (count or duration reached), 0 when the budget ran out.
export fn mcr_gen_run(gen: *Gen, budget_ms: u32) i32 {
    const done = gen.run(budget_ms) catch |err| return rc(err);
    return @intFromBool(done);
}

export fn mcr_gen_counters(gen: *Gen) [*]u64 {
    return gen.counters();
}

export fn mcr_gen_close(gen: *Gen) void {
    gen.destroy();
}

// Measuring receiver.

export fn mcr_sink_open(cfg: *const abi.SinkConfig, out: *?*Sink) i32 {
    out.* = Sink.create(cfg) catch |err| return rc(err);
    return 0;
}

/// Returns how many datagrams arrived during this call (capped at i32 max).
export fn mcr_sink_run(sink: *Sink, budget_ms: u32) i32 {
    const n = sink.run(budget_ms) catch |err| return rc(err);
    return @intCast(@min(n, std.math.maxInt(i32)));
}

export fn mcr_sink_summarize(sink: *Sink) void {
    sink.summarize();
}

export fn mcr_sink_counters(sink: *Sink) [*]u64 {
    return sink.counters().ptr;
}

export fn mcr_sink_close(sink: *Sink) void {
    sink.destroy();
}
