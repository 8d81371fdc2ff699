//! The worker executable (`mcrelay _worker`), a static Zig program without libc that the
//! supervisor starts from an anonymous memory file. It receives its AF_PACKET sockets and
//! counter memory over the socketpair on fd 3 (one socket per position, set up for an input
//! interface or blank until the supervisor sets it up), places them at fds 512.., pins its CPU,
//! drops its privileges and checks the drop, then runs one dataplane per ring from its one
//! thread (loop.runMany) and answers control messages between runs. It never opens privileged
//! resources itself.
//!
//! Everything travels on fd 3, a SOCK_SEQPACKET socket: one datagram per message, in order.
//! Supervisor to worker: the set-up message (JSON, with the packet sockets), ring messages
//! (JSON, with the counter memfd), rule tables (the binary table the dataplane reads, each just
//! before the request naming it) and requests (JSON, `type` and `id`). Worker to supervisor:
//! one JSON object per datagram, ended by a newline (the supervisor reads the socket as a
//! stream). A readable fd 3 also ends a dataplane run early (its wake descriptor), and the
//! supervisor's end closing (hang-up) ends the worker: nothing may forward without it.
//! Every message is checked here before use; a malformed one is logged and ignored.
const std = @import("std");
const builtin = @import("builtin");
const linux = std.os.linux;
const sys = @import("sys.zig");
const scm = @import("scm.zig");
const abi = @import("abi.zig");
const constants = @import("constants.zig");
const privileges = @import("privileges.zig");
const confinement = @import("confinement.zig");
const link = @import("link.zig");
const loop = @import("dataplane/loop.zig");
const Dataplane = loop.Dataplane;

/// The socketpair end the supervisor passes as fd 3.
pub const channel_fd: i32 = 3;
/// The exit status of a worker that failed (every path that sends `fatal`, before or after
/// `ready`, and a channel that cannot be read): never 0, which only a `stop` or the
/// supervisor's hang-up gives. 2: started by hand (no channel on fd 3).
pub const exit_fatal: u8 = 1;
pub const exit_usage: u8 = 2;
const positions_max: u32 = constants.rings_per_worker_max;
const fd_first: i32 = @intCast(constants.packet_fd_first);
/// Longest dataplane run between two looks at the clock (the test hook's timer); control
/// messages end a run at once through the wake descriptor.
const run_budget_ms: u32 = 1000;
const drain_max: u32 = constants.worker_drain_messages_max;
/// Interface names are at most IFNAMSIZ - 1 bytes.
const ifname_len_limit: usize = link.IFNAMSIZ - 1;
const hash_hex_len: usize = 16;
const json_bytes_max: usize = constants.worker_json_bytes_max;

// ---------------------------------------------------------------------------------------
// Log lines: the format and levels of src/log.ts (consola's plain lines, or one JSON object
// per line), `<N>` syslog priority prefixes when stderr is the journal's stream.

pub const Level = enum(u8) {
    silent = 0,
    @"error" = 1,
    warn = 2,
    info = 3,
    debug = 4,
    trace = 5,

    pub fn parse(name: []const u8) ?Level {
        const info = @typeInfo(Level).@"enum";
        inline for (info.field_names, info.field_values) |n, v| {
            if (std.mem.eql(u8, name, n)) return @enumFromInt(v);
        }
        return null;
    }

    fn priority(l: Level) u8 {
        return switch (l) {
            .@"error" => 3,
            .warn => 4,
            .info => 6,
            else => 7,
        };
    }
};

pub const Log = struct {
    level: Level = .info,
    json: bool = false,
    journal: bool = false,
    /// MCRELAY_LOG_IDENTITY ("worker:N"), tagging every line; null: plain "worker".
    identity: ?[]const u8 = null,

    pub fn print(self: *const Log, comptime l: Level, comptime fmt: []const u8, args: anytype) void {
        if (@intFromEnum(l) > @intFromEnum(self.level)) return;
        var msg_buf: [2048]u8 = undefined;
        const msg = std.fmt.bufPrint(&msg_buf, fmt, args) catch @as([]u8, &msg_buf);
        var line_buf: [4096]u8 = undefined;
        var out = Out.init(&line_buf);
        self.format(&out, l, msg, sys.realtimeNs());
        const text = out.slice();
        // A failed write (EPIPE, EAGAIN, a full disk) loses the line, nothing else.
        _ = linux.write(2, text.ptr, text.len);
    }

    /// One record as src/log.ts writes it, ending in a newline.
    pub fn format(self: *const Log, out: *Out, l: Level, msg: []const u8, now_ns: u64) void {
        if (self.journal) out.print("<{d}>", .{l.priority()});
        if (self.json) {
            out.add("{\"time\":\"");
            isoTime(out, now_ns);
            out.print("\",\"level\":\"{s}\",\"tag\":\"", .{@tagName(l)});
            if (self.identity) |id| {
                out.escaped(id);
                out.add(":worker\",\"worker\":\"");
                out.escaped(id);
            } else out.add("worker");
            out.add("\",\"msg\":\"");
            out.escaped(msg);
            out.add("\"}\n");
            return;
        }
        out.print("[{s}] [", .{@tagName(l)});
        if (self.identity) |id| {
            out.add(id);
            out.add(":");
        }
        out.add("worker] ");
        // Each line of a record carries the priority prefix under the journal.
        var lines = std.mem.splitScalar(u8, msg, '\n');
        var first = true;
        while (lines.next()) |part| {
            if (!first) {
                out.add("\n");
                if (self.journal) out.print("<{d}>", .{l.priority()});
            }
            first = false;
            out.add(part);
        }
        out.add("\n");
    }
};

var log: Log = .{};

/// A fixed buffer written front to back; what does not fit is cut off (`overflow`).
pub const Out = struct {
    buf: []u8,
    len: usize = 0,
    overflow: bool = false,

    pub fn init(buf: []u8) Out {
        return .{ .buf = buf };
    }

    pub fn slice(self: *const Out) []const u8 {
        return self.buf[0..self.len];
    }

    pub fn add(self: *Out, s: []const u8) void {
        const n = @min(s.len, self.buf.len - self.len);
        @memcpy(self.buf[self.len..][0..n], s[0..n]);
        self.len += n;
        if (n < s.len) self.overflow = true;
    }

    pub fn print(self: *Out, comptime fmt: []const u8, args: anytype) void {
        const written = std.fmt.bufPrint(self.buf[self.len..], fmt, args) catch {
            self.overflow = true;
            return;
        };
        self.len += written.len;
    }

    /// `s` as the inside of a JSON string.
    pub fn escaped(self: *Out, s: []const u8) void {
        for (s) |c| switch (c) {
            '"' => self.add("\\\""),
            '\\' => self.add("\\\\"),
            '\n' => self.add("\\n"),
            '\r' => self.add("\\r"),
            '\t' => self.add("\\t"),
            0...8, 11, 12, 14...0x1f, 0x7f => self.print("\\u{x:0>4}", .{c}),
            else => self.add(&.{c}),
        };
    }
};

/// UTC time as JavaScript's toISOString gives it: 2026-12-01T21:49:09.123Z.
pub fn isoTime(out: *Out, now_ns: u64) void {
    const ms_total = now_ns / std.time.ns_per_ms;
    const secs = ms_total / 1000;
    const days: i64 = @intCast(secs / 86400);
    const sod = secs % 86400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    const z = days + 719468;
    const era = @divFloor(z, 146097);
    const doe = z - era * 146097;
    const yoe = @divFloor(doe - @divFloor(doe, 1460) + @divFloor(doe, 36524) - @divFloor(doe, 146096), 365);
    const doy = doe - (365 * yoe + @divFloor(yoe, 4) - @divFloor(yoe, 100));
    const mp = @divFloor(5 * doy + 2, 153);
    const d = doy - @divFloor(153 * mp + 2, 5) + 1;
    const m = if (mp < 10) mp + 3 else mp - 9;
    const y = yoe + era * 400 + @as(i64, if (m <= 2) 1 else 0);
    out.print("{d:0>4}-{d:0>2}-{d:0>2}T{d:0>2}:{d:0>2}:{d:0>2}.{d:0>3}Z", .{
        @as(u64, @intCast(y)), @as(u64, @intCast(m)), @as(u64, @intCast(d)),
        sod / 3600,            (sod % 3600) / 60,      sod % 60,
        ms_total % 1000,
    });
}

/// True when stderr is the stream systemd connected to the journal (JOURNAL_STREAM holds its
/// "device:inode", in the st_dev encoding of the C library).
fn stderrIsJournal(want: ?[]const u8) bool {
    const w = want orelse return false;
    var st: linux.Statx = undefined;
    if (linux.errno(linux.statx(2, "", linux.AT.EMPTY_PATH, .{ .INO = true }, &st)) != .SUCCESS) return false;
    const major: u64 = st.dev_major;
    const minor: u64 = st.dev_minor;
    const dev = ((major & 0xfff) << 8) | ((major & ~@as(u64, 0xfff)) << 32) | (minor & 0xff) | ((minor & ~@as(u64, 0xff)) << 12);
    var buf: [48]u8 = undefined;
    const have = std.fmt.bufPrint(&buf, "{d}:{d}", .{ dev, st.ino }) catch return false;
    return std.mem.eql(u8, have, w);
}

// ---------------------------------------------------------------------------------------
// Messages from the supervisor (validated here: shape by std.json, values by hand).

pub const User = struct { name: []const u8, uid: u32, gid: u32 };
pub const Setup = struct { index: u32, workers: u32, positions: u32, rings: u32, cpu: ?u32, user: ?User };

pub const RingMsg = struct {
    position: u32,
    ifname_buf: [ifname_len_limit]u8,
    ifname_len: u8,
    ifindex: u32,
    slot: u32,
    members: u32,
    geometry: abi.RingGeometry,

    pub fn ifname(self: *const RingMsg) []const u8 {
        return self.ifname_buf[0..self.ifname_len];
    }
};

pub const Request = union(enum) {
    table: struct { id: u64, position: u32, generation: u64, hash: [hash_hex_len]u8, bytes: u32 },
    ring_add: struct { id: u64, position: u32 },
    ring_drop: struct { id: u64, position: u32, keep: bool },
    ping: struct { id: u64, position: u32 },
    log_level: struct { id: u64, level: Level },
    stop: struct { id: u64 },
};

pub const Message = union(enum) { setup: Setup, ring: RingMsg, request: Request };

/// Every field any JSON message may carry; which ones a message must and may have is checked
/// per kind below (unknown names, duplicates and wrong types are refused by parseIncoming).
const Incoming = struct {
    kind: ?[]const u8 = null,
    type: ?[]const u8 = null,
    id: ?u64 = null,
    index: ?u32 = null,
    workers: ?u32 = null,
    positions: ?u32 = null,
    rings: ?u32 = null,
    cpu: ?u32 = null,
    user: ?User = null,
    position: ?u32 = null,
    ifname: ?[]const u8 = null,
    ifindex: ?u32 = null,
    slot: ?u32 = null,
    members: ?u32 = null,
    geometry: ?struct { blockBytes: u32, blockCount: u32, frameBytes: u32, frameCount: u32 } = null,
    generation: ?u64 = null,
    hash: ?[]const u8 = null,
    bytes: ?u32 = null,
    keep: ?bool = null,
    level: ?[]const u8 = null,
};

/// What was wrong with a message, for the log line.
pub const Problem = struct {
    buf: [160]u8 = undefined,
    len: usize = 0,
    /// The `id` of the request this was (when it has a `type` and an unsigned `id`): the
    /// supervisor is waiting for an answer to it, so it gets an error reply naming the problem.
    request_id: ?u64 = null,

    pub fn text(self: *const Problem) []const u8 {
        return self.buf[0..self.len];
    }

    fn set(self: *Problem, comptime fmt: []const u8, args: anytype) void {
        var out = Out.init(&self.buf);
        out.print(fmt, args);
        self.len = out.len;
    }
};

/// Fields a message of this kind may carry besides kind/type.
fn allowed(comptime names: []const []const u8, in: *const Incoming, what: []const u8, problem: *Problem) bool {
    inline for (@typeInfo(Incoming).@"struct".field_names) |name| {
        if (comptime std.mem.eql(u8, name, "kind") or std.mem.eql(u8, name, "type")) continue;
        const listed = comptime blk: {
            for (names) |n| if (std.mem.eql(u8, n, name)) break :blk true;
            break :blk false;
        };
        // `cpu` and `user` are nullable in the set-up message; null is what absent looks like.
        if (!listed and @field(in, name) != null) {
            problem.set("{s}: a {s} message has no such field", .{ name, what });
            return false;
        }
    }
    return true;
}

fn required(comptime T: type, value: ?T, comptime name: []const u8, problem: *Problem) ?T {
    if (value == null) problem.set("{s}: missing", .{name});
    return value;
}

fn position(value: ?u32, problem: *Problem) ?u32 {
    const p = required(u32, value, "position", problem) orelse return null;
    if (p >= positions_max) {
        problem.set("position: {d} is past the last position ({d})", .{ p, positions_max - 1 });
        return null;
    }
    return p;
}

fn atLeast(value: ?u32, comptime name: []const u8, min: u32, problem: *Problem) ?u32 {
    const v = required(u32, value, name, problem) orelse return null;
    if (v < min) {
        problem.set(name ++ ": {d} is less than {d}", .{ v, min });
        return null;
    }
    return v;
}

/// Parses and checks one JSON message; null (with `problem` set) when it is malformed.
/// Strings in the result point into `arena`'s memory.
pub fn parseMessage(arena: std.mem.Allocator, text: []const u8, problem: *Problem) ?Message {
    const msg = parseChecked(arena, text, problem);
    if (msg == null) problem.request_id = requestId(text);
    return msg;
}

/// At most this much of a string from a message is quoted in a problem.
fn shown(s: []const u8) []const u8 {
    return s[0..@min(s.len, 24)];
}

/// The id of the request in `text`, if it is one (a `type` and an unsigned `id`), whatever else
/// is wrong with it. No allocation beyond a small bounded buffer.
fn requestId(text: []const u8) ?u64 {
    var buf: [2048]u8 = undefined;
    var fba = std.heap.FixedBufferAllocator.init(&buf);
    const Head = struct { type: ?[]const u8 = null, id: ?u64 = null };
    const head = std.json.parseFromSliceLeaky(Head, fba.allocator(), text, .{ .ignore_unknown_fields = true, .allocate = .alloc_if_needed, .duplicate_field_behavior = .use_first }) catch return null;
    if (head.type == null) return null;
    return head.id;
}

/// What a field's value must be, for a problem naming it.
fn expected(comptime T: type) []const u8 {
    return switch (@typeInfo(T)) {
        .optional => |o| expected(o.child),
        .int => std.fmt.comptimePrint("an integer from 0 to {d}", .{std.math.maxInt(T)}),
        .bool => "true or false",
        .pointer => "a string",
        .@"struct" => |st| blk: {
            var names: []const u8 = "";
            for (st.field_names, 0..) |n, i| names = names ++ (if (i == 0) "" else ", ") ++ n;
            break :blk "an object of " ++ names;
        },
        else => @compileError("no description for " ++ @typeName(T)),
    };
}

/// The JSON object of a message as an Incoming: every name must be one of its fields, at most
/// once, with a value of the field's type. The problem names the field.
fn parseIncoming(arena: std.mem.Allocator, text: []const u8, problem: *Problem) ?Incoming {
    const info = @typeInfo(Incoming).@"struct";
    var in: Incoming = .{};
    comptime std.debug.assert(info.field_names.len <= 32);
    var seen: u32 = 0;
    var scanner = std.json.Scanner.initCompleteInput(arena, text);
    const opts: std.json.ParseOptions = .{ .allocate = .alloc_always, .max_value_len = text.len };
    const begin = scanner.next() catch |err| return notJson(err, problem);
    if (begin != .object_begin) {
        problem.set("not a message: expected a JSON object", .{});
        return null;
    }
    while (true) {
        const key: []const u8 = switch (scanner.nextAlloc(arena, .alloc_if_needed) catch |err| return notJson(err, problem)) {
            .object_end => break,
            .string => |k| k,
            .allocated_string => |k| k,
            else => {
                problem.set("not a message: expected a field name", .{});
                return null;
            },
        };
        var known = false;
        inline for (info.field_names, info.field_types, 0..) |name, T, i| {
            if (std.mem.eql(u8, key, name)) {
                known = true;
                const bit = @as(u32, 1) << i;
                if (seen & bit != 0) {
                    problem.set(name ++ ": given twice", .{});
                    return null;
                }
                seen |= bit;
                // std.json would take "7" for 7: a number must be a JSON number.
                const number = comptime @typeInfo(@typeInfo(T).optional.child) == .int;
                const next = scanner.peekNextTokenType() catch |err| return notJson(err, problem);
                if (number and next != .number and next != .null) {
                    problem.set(name ++ ": expected " ++ comptime expected(T), .{});
                    return null;
                }
                @field(in, name) = std.json.innerParse(T, arena, &scanner, opts) catch |err| {
                    switch (err) {
                        error.OutOfMemory => problem.set(name ++ ": too long", .{}),
                        error.SyntaxError, error.UnexpectedEndOfInput => problem.set(name ++ ": not JSON", .{}),
                        else => problem.set(name ++ ": expected " ++ comptime expected(T), .{}),
                    }
                    return null;
                };
            }
        }
        if (!known) {
            problem.set("{s}: no such field", .{shown(key)});
            return null;
        }
    }
    const end = scanner.next() catch |err| return notJson(err, problem);
    if (end != .end_of_document) {
        problem.set("not a message: text after the object", .{});
        return null;
    }
    return in;
}

fn notJson(err: anyerror, problem: *Problem) ?Incoming {
    problem.set("not a message: {s}", .{switch (err) {
        error.OutOfMemory => "too deeply nested",
        error.UnexpectedEndOfInput => "JSON cut short",
        else => "not JSON",
    }});
    return null;
}

/// A ring's geometry as zig/ring.zig `geometry` makes it: blocks and slots of a power of two,
/// slots no larger than a block (so slot i is at i x frame bytes), within the limits, and the
/// slot count that gives. The worker cannot ask the kernel what the socket's ring is: a shape
/// the supervisor never sends is refused here, before anything is mapped or indexed with it.
fn ringGeometry(block_bytes: u32, block_count: u32, frame_bytes: u32, frame_count: u32, problem: *Problem) ?abi.RingGeometry {
    const block_min = constants.ring_block_bytes_min;
    const block_max = constants.ring_block_bytes_max;
    if (!std.math.isPowerOfTwo(block_bytes) or block_bytes < block_min or block_bytes > block_max) {
        problem.set("geometry: blockBytes {d} is not a power of two from {d} to {d}", .{ block_bytes, block_min, block_max });
        return null;
    }
    if (block_count < 1 or block_count > constants.ring_blocks_max) {
        problem.set("geometry: blockCount {d} is not from 1 to {d}", .{ block_count, constants.ring_blocks_max });
        return null;
    }
    if (!std.math.isPowerOfTwo(frame_bytes) or frame_bytes < constants.ring_frame_bytes_min or frame_bytes > block_bytes) {
        problem.set("geometry: frameBytes {d} is not a power of two from {d} to blockBytes ({d})", .{ frame_bytes, constants.ring_frame_bytes_min, block_bytes });
        return null;
    }
    // Cannot overflow: constants.zig asserts (block_max / frame_min) x blocks_max fits a u32.
    const slots = (block_bytes / frame_bytes) * block_count;
    if (frame_count != slots) {
        problem.set("geometry: frameCount {d}, expected {d} (blockBytes / frameBytes x blockCount)", .{ frame_count, slots });
        return null;
    }
    return .{ .block_bytes = block_bytes, .block_count = block_count, .frame_bytes = frame_bytes, .frame_count = frame_count };
}

fn parseChecked(arena: std.mem.Allocator, text: []const u8, problem: *Problem) ?Message {
    if (text.len > json_bytes_max) {
        problem.set("message: {d} bytes, more than the limit of {d}", .{ text.len, json_bytes_max });
        return null;
    }
    const in = parseIncoming(arena, text, problem) orelse return null;
    if (in.kind) |kind| {
        if (in.type != null) {
            problem.set("type: a {s} message has no such field", .{shown(kind)});
            return null;
        }
        if (std.mem.eql(u8, kind, "worker")) {
            if (!allowed(&.{ "index", "workers", "positions", "rings", "cpu", "user" }, &in, "set-up", problem)) return null;
            const positions = atLeast(in.positions, "positions", 1, problem) orelse return null;
            if (positions > positions_max) {
                problem.set("positions: {d} is more than {d}", .{ positions, positions_max });
                return null;
            }
            if (in.rings) |rings| if (rings > positions) {
                problem.set("rings: {d} is more than the {d} positions", .{ rings, positions });
                return null;
            };
            if (in.index) |index| if (in.workers) |workers| if (index >= workers) {
                problem.set("index: {d} is not below workers ({d})", .{ index, workers });
                return null;
            };
            if (in.user) |u| if (u.uid == 0) {
                problem.set("user: uid 0 is no unprivileged user", .{});
                return null;
            };
            // Group 0 owns files root's processes make (as src/supervisor/user.ts refuses it).
            if (in.user) |u| if (u.gid == 0) {
                problem.set("user: gid 0 is no unprivileged group", .{});
                return null;
            };
            return .{ .setup = .{
                .index = required(u32, in.index, "index", problem) orelse return null,
                .workers = atLeast(in.workers, "workers", 1, problem) orelse return null,
                .positions = positions,
                .rings = required(u32, in.rings, "rings", problem) orelse return null,
                .cpu = in.cpu,
                .user = in.user,
            } };
        }
        if (std.mem.eql(u8, kind, "ring")) {
            if (!allowed(&.{ "position", "ifname", "ifindex", "slot", "members", "geometry" }, &in, "ring", problem)) return null;
            const name = required([]const u8, in.ifname, "ifname", problem) orelse return null;
            if (name.len == 0 or name.len > ifname_len_limit) {
                problem.set("ifname: {d} bytes, expected 1 to {d}", .{ name.len, ifname_len_limit });
                return null;
            }
            const g = in.geometry orelse {
                problem.set("geometry: missing", .{});
                return null;
            };
            const geometry = ringGeometry(g.blockBytes, g.blockCount, g.frameBytes, g.frameCount, problem) orelse return null;
            var r: RingMsg = .{
                .position = position(in.position, problem) orelse return null,
                .ifname_buf = undefined,
                .ifname_len = @intCast(name.len),
                .ifindex = atLeast(in.ifindex, "ifindex", 1, problem) orelse return null,
                .slot = required(u32, in.slot, "slot", problem) orelse return null,
                .members = atLeast(in.members, "members", 1, problem) orelse return null,
                .geometry = geometry,
            };
            // Told as slot+1 of members in logs: a slot past the members is no fanout member.
            if (r.slot >= r.members) {
                problem.set("slot: {d} is not below members ({d})", .{ r.slot, r.members });
                return null;
            }
            @memcpy(r.ifname_buf[0..name.len], name);
            return .{ .ring = r };
        }
        problem.set("kind: '{s}' is not worker or ring", .{shown(kind)});
        return null;
    }
    const t = in.type orelse {
        problem.set("type: missing", .{});
        return null;
    };
    const id = required(u64, in.id, "id", problem) orelse return null;
    if (std.mem.eql(u8, t, "table")) {
        if (!allowed(&.{ "id", "position", "generation", "hash", "bytes" }, &in, "table", problem)) return null;
        const h = required([]const u8, in.hash, "hash", problem) orelse return null;
        if (h.len != hash_hex_len) {
            problem.set("hash: {d} characters, expected {d}", .{ h.len, hash_hex_len });
            return null;
        }
        // Echoed in replies, so never anything that would need escaping there.
        if (std.mem.indexOfNone(u8, h, "0123456789abcdef") != null) {
            problem.set("hash: expected {d} lowercase hex digits", .{hash_hex_len});
            return null;
        }
        return .{ .request = .{ .table = .{
            .id = id,
            .position = position(in.position, problem) orelse return null,
            .generation = required(u64, in.generation, "generation", problem) orelse return null,
            .hash = h[0..hash_hex_len].*,
            .bytes = required(u32, in.bytes, "bytes", problem) orelse return null,
        } } };
    }
    if (std.mem.eql(u8, t, "ring-add")) {
        if (!allowed(&.{ "id", "position" }, &in, "ring-add", problem)) return null;
        return .{ .request = .{ .ring_add = .{ .id = id, .position = position(in.position, problem) orelse return null } } };
    }
    if (std.mem.eql(u8, t, "ring-drop")) {
        if (!allowed(&.{ "id", "position", "keep" }, &in, "ring-drop", problem)) return null;
        return .{ .request = .{ .ring_drop = .{ .id = id, .position = position(in.position, problem) orelse return null, .keep = in.keep orelse false } } };
    }
    if (std.mem.eql(u8, t, "ping")) {
        if (!allowed(&.{ "id", "position" }, &in, "ping", problem)) return null;
        return .{ .request = .{ .ping = .{ .id = id, .position = position(in.position, problem) orelse return null } } };
    }
    if (std.mem.eql(u8, t, "log-level")) {
        if (!allowed(&.{ "id", "level" }, &in, "log-level", problem)) return null;
        const name = required([]const u8, in.level, "level", problem) orelse return null;
        const level = Level.parse(name) orelse {
            problem.set("level: '{s}' is not silent, error, warn, info, debug or trace", .{shown(name)});
            return null;
        };
        return .{ .request = .{ .log_level = .{ .id = id, .level = level } } };
    }
    if (std.mem.eql(u8, t, "stop")) {
        if (!allowed(&.{"id"}, &in, "stop", problem)) return null;
        return .{ .request = .{ .stop = .{ .id = id } } };
    }
    problem.set("type: '{s}' is no request", .{shown(t)});
    return null;
}

/// True when these bytes start like a rule table (src/rules/wire.ts isTableBytes).
pub fn isTable(bytes: []const u8) bool {
    return bytes.len >= @sizeOf(abi.TableHeader) and std.mem.readInt(u32, bytes[0..4], .little) == abi.table_magic;
}

/// Content hash of table bytes, as src/rules/wire.ts tableBytesHash: the first 16 hex digits
/// of SHA-256 over the bytes with the generation zeroed.
pub fn tableHash(bytes: []const u8) [hash_hex_len]u8 {
    const gen_off = @offsetOf(abi.TableHeader, "generation");
    var h = std.crypto.hash.sha2.Sha256.init(.{});
    h.update(bytes[0..gen_off]);
    h.update(&[4]u8{ 0, 0, 0, 0 });
    h.update(bytes[gen_off + 4 ..]);
    var digest: [32]u8 = undefined;
    h.final(&digest);
    return std.fmt.bytesToHex(digest[0 .. hash_hex_len / 2], .lower);
}

/// The table of no rules (what a ring holds before its first table).
const empty_table: [@sizeOf(abi.TableHeader)]u8 = std.mem.toBytes(abi.TableHeader{ .magic = abi.table_magic, .rule_count = 0, .output_count = 0, .generation = 0 });

// ---------------------------------------------------------------------------------------
// Replies to the supervisor.

fn sendLine(out: *const Out) void {
    if (out.overflow) {
        log.print(.@"error", "a reply did not fit its buffer: not sent", .{});
        return;
    }
    _ = scm.send(channel_fd, out.slice(), &.{}, true) catch |err| {
        log.print(.warn, "cannot answer the supervisor: E{s}", .{errName(err)});
    };
}

fn replyOk(id: u64) void {
    var buf: [64]u8 = undefined;
    var out = Out.init(&buf);
    out.print("{{\"type\":\"ok\",\"id\":{d}}}\n", .{id});
    sendLine(&out);
}

fn replyError(id: u64, msg: []const u8) void {
    // Room for the message (at most 900 bytes) even if every byte needs a \u00XX escape.
    var buf: [64 + 900 * 6]u8 = undefined;
    var out = Out.init(&buf);
    out.print("{{\"type\":\"error\",\"id\":{d},\"message\":\"", .{id});
    out.escaped(msg[0..@min(msg.len, 900)]);
    out.add("\"}\n");
    sendLine(&out);
}

fn replyTable(kind: []const u8, id: u64, generation: u64, hash: []const u8) void {
    var buf: [160]u8 = undefined;
    var out = Out.init(&buf);
    out.print("{{\"type\":\"{s}\",\"id\":{d},\"generation\":{d},\"hash\":\"{s}\"}}\n", .{ kind, id, generation, hash });
    sendLine(&out);
}

fn sendFatal(msg: []const u8) void {
    sendFatalAt(msg, null);
}

/// A `fatal` reply; with `position` when the failure is that packet socket's (as the supervisor
/// set it up, e.g. its filter not locked), so the supervisor rebuilds that socket rather than
/// hand it to the next worker. The supervisor logs the message (it knows the consequence): where
/// it surely reaches it, the worker's own line about it is debug.
fn sendFatalAt(msg: []const u8, at: ?usize) void {
    var buf: [96 + 900 * 6]u8 = undefined;
    var out = Out.init(&buf);
    out.add("{\"type\":\"fatal\",\"message\":\"");
    out.escaped(msg[0..@min(msg.len, 900)]);
    if (at) |p| out.print("\",\"position\":{d}}}\n", .{p}) else out.add("\"}\n");
    sendLine(&out);
}

fn errName(err: sys.Error) []const u8 {
    return if (err == error.Unexpected) "PROTO" else @errorName(err);
}

// ---------------------------------------------------------------------------------------
// Privileges: what src/supervisor/worker-user.ts asked for, then read back from /proc.

/// After the drop, reads back what every thread holds: ids, no supplementary groups, no
/// capabilities, no_new_privs and the seccomp filter. Writes the problems ("; "-separated) to
/// `out` and the first one to `first`; returns how many there are. What cannot be read is a
/// problem too: a drop that was not read back is not verified.
pub fn verifyDropped(uid: u32, gid: u32, out: *Out, first: *Out) u32 {
    return verifyDroppedIn("/proc/self/task", uid, gid, out, first);
}

fn note(out: *Out, first: *Out, problems: *u32, comptime fmt: []const u8, args: anytype) void {
    if (problems.* > 0) out.add("; ");
    out.print(fmt, args);
    if (problems.* == 0) first.print(fmt, args);
    problems.* += 1;
}

/// verifyDropped over the threads listed in `task_dir` (tests use a directory that is not there).
fn verifyDroppedIn(task_dir: []const u8, uid: u32, gid: u32, out: *Out, first: *Out) u32 {
    var problems: u32 = 0;
    const main_tid: u32 = @intCast(linux.getpid());
    var main_seen = false;
    var dir_buf: [64]u8 = undefined;
    const dir_path = std.fmt.bufPrintSentinel(&dir_buf, "{s}", .{task_dir}, 0) catch unreachable;
    const dir_rc = linux.openat(linux.AT.FDCWD, dir_path, .{ .DIRECTORY = true, .CLOEXEC = true }, 0);
    if (linux.errno(dir_rc) != .SUCCESS) {
        note(out, first, &problems, "cannot read {s}: E{s}", .{ task_dir, errName(sys.fromErrno(linux.errno(dir_rc))) });
        return problems;
    }
    const dir: i32 = @intCast(dir_rc);
    defer sys.close(dir);
    var dents: [4096]u8 align(8) = undefined;
    while (true) {
        const n_rc = linux.getdents64(dir, &dents, dents.len);
        if (linux.errno(n_rc) != .SUCCESS) {
            note(out, first, &problems, "cannot list {s}: E{s}", .{ task_dir, errName(sys.fromErrno(linux.errno(n_rc))) });
            return problems;
        }
        if (n_rc == 0) break;
        var off: usize = 0;
        while (off < n_rc) {
            const d: *align(1) const linux.dirent64 = @ptrCast(&dents[off]);
            off += d.reclen;
            const name = std.mem.sliceTo(@as([*:0]const u8, @ptrCast(&d.name)), 0);
            const tid = std.fmt.parseInt(u32, name, 10) catch continue;
            if (tid == main_tid) main_seen = true;
            var path_buf: [96]u8 = undefined;
            const path = std.fmt.bufPrintSentinel(&path_buf, "{s}/{d}/status", .{ task_dir, tid }, 0) catch unreachable;
            checkThread(path, tid, main_tid, uid, gid, out, first, &problems);
        }
    }
    if (!main_seen) note(out, first, &problems, "thread {d} (this one) is not in {s}", .{ main_tid, task_dir });
    return problems;
}

fn checkThread(path: [:0]const u8, tid: u32, main_tid: u32, uid: u32, gid: u32, out: *Out, first: *Out, problems: *u32) void {
    var buf: [4096]u8 = undefined;
    const fd_rc = linux.openat(linux.AT.FDCWD, path, .{ .CLOEXEC = true }, 0);
    switch (linux.errno(fd_rc)) {
        .SUCCESS => {},
        // Another thread that ended meanwhile (this one cannot have).
        .NOENT, .SRCH => if (tid != main_tid) return,
        else => {},
    }
    if (linux.errno(fd_rc) != .SUCCESS) {
        note(out, first, problems, "thread {d}: cannot read {s}: E{s}", .{ tid, path, errName(sys.fromErrno(linux.errno(fd_rc))) });
        return;
    }
    const fd: i32 = @intCast(fd_rc);
    defer sys.close(fd);
    var len: usize = 0;
    while (len < buf.len) {
        const n = linux.read(fd, buf[len..].ptr, buf.len - len);
        if (linux.errno(n) != .SUCCESS) {
            note(out, first, problems, "thread {d}: cannot read {s}: E{s}", .{ tid, path, errName(sys.fromErrno(linux.errno(n))) });
            return;
        }
        if (n == 0) break;
        len += n;
    }
    problems.* += checkStatus(buf[0..len], tid, tid == main_tid, uid, gid, out, first, problems.*);
}

fn field(status: []const u8, name: []const u8) []const u8 {
    var lines = std.mem.splitScalar(u8, status, '\n');
    while (lines.next()) |line| {
        if (line.len > name.len and std.mem.startsWith(u8, line, name) and line[name.len] == ':') {
            return std.mem.trim(u8, line[name.len + 1 ..], " \t");
        }
    }
    return "";
}

fn allIds(value: []const u8, want: u32) bool {
    var it = std.mem.tokenizeAny(u8, value, " \t");
    var any = false;
    while (it.next()) |t| {
        any = true;
        const n = std.fmt.parseInt(u32, t, 10) catch return false;
        if (n != want) return false;
    }
    return any;
}

/// The checks of one thread's status text (tested with text below).
/// Returns how many problems it found; `before` is how many were noted already.
pub fn checkStatus(status: []const u8, tid: u32, is_main: bool, uid: u32, gid: u32, out: *Out, first: *Out, before: u32) u32 {
    var problems: u32 = before;
    const Note = struct {
        fn add(o: *Out, f: *Out, n: *u32, comptime fmt: []const u8, args: anytype) void {
            note(o, f, n, fmt, args);
        }
    };
    if (!allIds(field(status, "Uid"), uid)) Note.add(out, first, &problems, "thread {d}: Uid is '{s}', expected {d}", .{ tid, field(status, "Uid"), uid });
    if (!allIds(field(status, "Gid"), gid)) Note.add(out, first, &problems, "thread {d}: Gid is '{s}', expected {d}", .{ tid, field(status, "Gid"), gid });
    if (field(status, "Groups").len != 0) Note.add(out, first, &problems, "thread {d}: supplementary groups '{s}' remain", .{ tid, field(status, "Groups") });
    inline for (.{ "CapInh", "CapPrm", "CapEff", "CapAmb" }) |cap| {
        // Only the main thread must have cleared its inheritable set (src/worker history: other
        // threads of a runtime never ran our code); this program has one thread anyway.
        const skip = comptime std.mem.eql(u8, cap, "CapInh");
        if (!(skip and !is_main)) {
            const v = field(status, cap);
            if (v.len == 0 or std.mem.indexOfNone(u8, v, "0") != null) Note.add(out, first, &problems, "thread {d}: " ++ cap ++ " is {s}, expected 0", .{ tid, v });
        }
    }
    if (!std.mem.eql(u8, field(status, "NoNewPrivs"), "1")) Note.add(out, first, &problems, "thread {d}: NoNewPrivs is '{s}', expected 1", .{ tid, field(status, "NoNewPrivs") });
    if (!std.mem.eql(u8, field(status, "Seccomp"), "2")) Note.add(out, first, &problems, "thread {d}: Seccomp is '{s}', expected 2 (the worker's filter)", .{ tid, field(status, "Seccomp") });
    return problems - before;
}

/// Pins this (the only) thread to one CPU, for mcr's `pinning`. EINVAL: no such CPU online.
fn cpuPin(cpu: u32) sys.Error!void {
    if (cpu >= linux.CPU_SETSIZE * 8) return error.INVAL;
    var set = std.mem.zeroes(linux.cpu_set_t);
    const word_bits = @bitSizeOf(usize);
    set[cpu / word_bits] |= @as(usize, 1) << @intCast(cpu % word_bits);
    _ = try sys.call("sched_setaffinity", linux.syscall3(.sched_setaffinity, 0, @sizeOf(linux.cpu_set_t), @intFromPtr(&set)));
}

// ---------------------------------------------------------------------------------------
// The worker.

const Ring = struct {
    dp: *Dataplane,
    msg: RingMsg,
    /// What the dataplane holds now, reported on every ping so drift is seen.
    generation: u64,
    hash: [hash_hex_len]u8,
    /// Drained once its first table is applied (frames that waited are forwarded, not unmatched).
    draining: bool,
};

/// A ring message (with its counter memfd) waiting for its ring-add request.
const PendingRing = struct { msg: RingMsg, stats_fd: i32 };

const Worker = struct {
    setup: Setup,
    user_name_buf: [64]u8 = undefined,
    rings: [positions_max]?Ring = @splat(null),
    pending_rings: [positions_max]?PendingRing = @splat(null),
    /// The table received last, waiting for its request (one of the two buffers).
    pending_table: ?[]const u8 = null,
    active: [positions_max]*Dataplane = undefined,
    active_count: usize = 0,
    active_dirty: bool = true,
    stopping: bool = false,
    /// Stopping because of a failure after `ready` (told with `fatal`): the exit is exit_fatal.
    failed: bool = false,
    /// Why the last message that was no request was refused (a ring message has no id to
    /// answer): told with the ring-add that then finds no ring message. Empty: none refused.
    refused: Problem = .{},
    test_rules_max: u32 = 0,
    diverge_at_ns: ?u64 = null,
    /// /dev/null, opened at start-up: put at the number of a packet socket whose ring was
    /// dropped without `keep` (reserveFd).
    placeholder_fd: i32 = -1,

    /// A position must be one of this worker's packet sockets (0 .. positions-1), not only
    /// below the protocol's limit: past them there is no socket (or another descriptor).
    fn checkPosition(self: *const Worker, p: u32, problem: *Problem) bool {
        if (p < self.setup.positions) return true;
        problem.set("position: {d} is past this worker's last position ({d})", .{ p, self.setup.positions - 1 });
        return false;
    }

    fn openRing(self: *Worker, m: RingMsg, stats_fd: i32) sys.Error!void {
        if (self.rings[m.position]) |r| {
            sys.close(stats_fd);
            log.print(.debug, "position {d} already serves {s}", .{ m.position, r.msg.ifname() });
            return error.EXIST;
        }
        const cfg: abi.DpConfig = .{ .packet_fd = fd_first + @as(i32, @intCast(m.position)), .wake_fd = channel_fd, .ifindex = m.ifindex, .stats_fd = stats_fd, .geometry = m.geometry };
        const dp = Dataplane.create(&cfg) catch |err| {
            sys.close(stats_fd);
            return err;
        };
        const g = dp.ring.geo;
        log.print(.debug, "worker {d}/{d}: ring {d}/{d} of {s} at position {d}, {d} blocks of {d} bytes", .{ self.setup.index + 1, self.setup.workers, m.slot + 1, m.members, m.ifname(), m.position, g.block_count, g.block_bytes });
        self.rings[m.position] = .{ .dp = dp, .msg = m, .generation = 0, .hash = tableHash(&empty_table), .draining = false };
    }

    fn closeAll(self: *Worker) void {
        for (&self.rings) |*slot| if (slot.*) |r| {
            r.dp.destroy();
            slot.* = null;
        };
        for (&self.pending_rings) |*slot| if (slot.*) |p| {
            sys.close(p.stats_fd);
            slot.* = null;
        };
        self.active_count = 0;
    }

    /// A failure after `ready` that ends the worker: the supervisor hears why (`fatal`, which
    /// its worker record shows as the last error), then the rings are closed and the worker
    /// exits with exit_fatal, never 0 (which would read as a clean stop).
    fn fail(self: *Worker, what: []const u8) void {
        self.failAt(what, null);
    }

    /// fail() for a failure of the packet socket at `position` (sendFatalAt).
    fn failAt(self: *Worker, what: []const u8, at: ?usize) void {
        sendFatalAt(what, at);
        self.failed = true;
        self.stopping = true;
    }

    fn refreshActive(self: *Worker) void {
        if (!self.active_dirty) return;
        self.active_count = 0;
        for (self.rings) |slot| if (slot) |r| if (r.draining) {
            self.active[self.active_count] = r.dp;
            self.active_count += 1;
        };
        self.active_dirty = false;
    }

    /// Handles one message read off the channel (with its descriptors, which it owns).
    fn onMessage(self: *Worker, data: []const u8, fds: []const i32, spare: *[]u8) void {
        if (isTable(data)) {
            for (fds) |fd| sys.close(fd);
            if (fds.len > 0) log.print(.warn, "unexpected descriptors on the channel ({d}), closed", .{fds.len});
            if (self.pending_table) |old| log.print(.warn, "dropped a table of {d} bytes from the channel: not the one requested", .{old.len});
            // The received bytes become the pending table; the next receive uses the other buffer.
            self.pending_table = data;
            spare.* = otherBuffer(data);
            return;
        }
        var arena_buf: [json_bytes_max * 2]u8 = undefined;
        var fba = std.heap.FixedBufferAllocator.init(&arena_buf);
        var problem: Problem = .{};
        const msg = parseMessage(fba.allocator(), data, &problem) orelse {
            for (fds) |fd| sys.close(fd);
            log.print(.warn, "ignored malformed control message: {s}", .{problem.text()});
            if (problem.request_id == null) self.refused = problem;
            // A request, even malformed, uses up the table sent before it (a table request's,
            // whatever field was wrong): the next request must not take that table.
            if (problem.request_id != null) self.pending_table = null;
            // A request is answered (the supervisor waits for it), naming what is wrong.
            if (problem.request_id) |id| {
                var msg_buf: [200]u8 = undefined;
                replyError(id, std.fmt.bufPrint(&msg_buf, "malformed request: {s}", .{problem.text()}) catch problem.text());
            }
            return;
        };
        switch (msg) {
            .ring => |r| {
                if (fds.len != 1 or !self.checkPosition(r.position, &problem)) {
                    for (fds) |fd| sys.close(fd);
                    if (fds.len != 1) problem.set("{d} descriptors came with it, expected 1 (its counter memory)", .{fds.len});
                    log.print(.warn, "ignored a ring message: {s}", .{problem.text()});
                    self.refused = problem;
                    return;
                }
                self.refused = .{};
                if (self.pending_rings[r.position]) |old| sys.close(old.stats_fd);
                self.pending_rings[r.position] = .{ .msg = r, .stats_fd = fds[0] };
            },
            .setup => {
                for (fds) |fd| sys.close(fd);
                log.print(.warn, "ignored a second set-up message", .{});
            },
            .request => |req| {
                if (fds.len > 0) {
                    for (fds) |fd| sys.close(fd);
                    log.print(.warn, "unexpected descriptors on the channel ({d}), closed", .{fds.len});
                }
                self.onRequest(req);
            },
        }
    }

    fn onRequest(self: *Worker, req: Request) void {
        var msg_buf: [256]u8 = undefined;
        const at: ?struct { id: u64, position: u32 } = switch (req) {
            .table => |t| .{ .id = t.id, .position = t.position },
            .ring_add => |a| .{ .id = a.id, .position = a.position },
            .ring_drop => |d| .{ .id = d.id, .position = d.position },
            .ping => |p| .{ .id = p.id, .position = p.position },
            .log_level, .stop => null,
        };
        if (at) |r| {
            var problem: Problem = .{};
            if (!self.checkPosition(r.position, &problem)) {
                // A table sent for it is used up: the next request must not take it.
                if (req == .table) self.pending_table = null;
                return replyError(r.id, problem.text());
            }
        }
        switch (req) {
            .table => |t| {
                // The table sent for this request is used up whatever the answer, so that the
                // next request cannot take it (nor warn about it as a stray).
                const pending = self.pending_table;
                self.pending_table = null;
                const ring = &(self.rings[t.position] orelse return replyError(t.id, std.fmt.bufPrint(&msg_buf, "ENOENT: no ring at position {d}", .{t.position}) catch "ENOENT"));
                const bytes = pending orelse return replyError(t.id, std.fmt.bufPrint(&msg_buf, "no table of {d} bytes with hash {s} on the channel", .{ t.bytes, t.hash }) catch "no table");
                const hash = tableHash(bytes);
                if (bytes.len != t.bytes or !std.mem.eql(u8, &hash, &t.hash)) {
                    log.print(.warn, "dropped a table of {d} bytes from the channel: not the one requested", .{bytes.len});
                    return replyError(t.id, std.fmt.bufPrint(&msg_buf, "no table of {d} bytes with hash {s} on the channel", .{ t.bytes, t.hash }) catch "no table");
                }
                // Test-only: refuse tables of more rules than this, as a worker whose limits are
                // smaller than the supervisor's checks would. Never set outside tests.
                const header: *align(1) const abi.TableHeader = @ptrCast(bytes.ptr);
                if (self.test_rules_max > 0 and header.rule_count > self.test_rules_max) {
                    return replyError(t.id, std.fmt.bufPrint(&msg_buf, "ERANGE: {d} rules (test limit {d})", .{ header.rule_count, self.test_rules_max }) catch "ERANGE");
                }
                // The bytes are applied as they came: the table builder is the one validator.
                ring.dp.apply(bytes) catch |err| return replyError(t.id, std.fmt.bufPrint(&msg_buf, "apply rule table: E{s}", .{errName(err)}) catch "apply rule table");
                ring.generation = t.generation;
                ring.hash = t.hash;
                // Drained only once rules are in place: what arrived before (e.g. while a
                // replaced worker was restarting) is forwarded, not dropped as unmatched.
                if (!ring.draining) {
                    ring.draining = true;
                    self.active_dirty = true;
                }
                replyTable("applied", t.id, t.generation, &t.hash);
            },
            .ring_add => |a| {
                const p = self.pending_rings[a.position] orelse {
                    const why = self.refused.text();
                    defer self.refused = .{};
                    return replyError(a.id, std.fmt.bufPrint(&msg_buf, "no ring message for position {d} on the channel{s}{s}", .{ a.position, if (why.len > 0) "; the last one refused: " else "", why }) catch "no ring message");
                };
                self.pending_rings[a.position] = null;
                if (self.rings[a.position]) |r| {
                    sys.close(p.stats_fd);
                    return replyError(a.id, std.fmt.bufPrint(&msg_buf, "EEXIST: position {d} already serves {s}", .{ a.position, r.msg.ifname() }) catch "EEXIST");
                }
                self.openRing(p.msg, p.stats_fd) catch |err| return replyError(a.id, std.fmt.bufPrint(&msg_buf, "ring setup {s}: E{s}", .{ p.msg.ifname(), errName(err) }) catch "ring setup");
                if (self.setup.user != null) {
                    // The supervisor set this socket up after the drop: its lock and our confinement on it.
                    if (confinement.verify(fd_first + @as(i32, @intCast(a.position)))) |f| {
                        var d: [160]u8 = undefined;
                        const why = confinement.describe(f, &d);
                        log.print(.debug, "confinement not verified on {s}: {s}: refusing to run", .{ p.msg.ifname(), why });
                        self.failAt(std.fmt.bufPrint(&msg_buf, "confinement not verified: {s}", .{why}) catch "confinement not verified", if (f.of_socket) a.position else null);
                        return;
                    }
                }
                replyOk(a.id);
            },
            .ring_drop => |d| {
                if (self.rings[d.position]) |r| {
                    self.rings[d.position] = null;
                    self.active_dirty = true;
                    // Counters stay in the memory the supervisor shares. With `keep` only the
                    // ring is unmapped: the supervisor makes the socket blank again and reuses
                    // the position; otherwise our reference to the socket is closed too.
                    r.dp.destroyKeeping(d.keep);
                    if (!d.keep) {
                        const fd = fd_first + @as(i32, @intCast(d.position));
                        reserveFd(self.placeholder_fd, fd) catch |err| {
                            log.print(.@"error", "cannot keep descriptor {d} taken after its ring was dropped: E{s}", .{ fd, errName(err) });
                            return self.fail(std.fmt.bufPrint(&msg_buf, "cannot keep descriptor {d} taken: E{s}", .{ fd, errName(err) }) catch "cannot keep a packet descriptor taken");
                        };
                    }
                }
                replyOk(d.id);
            },
            .ping => |p| {
                const r = self.rings[p.position] orelse return replyError(p.id, std.fmt.bufPrint(&msg_buf, "ENOENT: no ring at position {d}", .{p.position}) catch "ENOENT");
                replyTable("pong", p.id, r.generation, &r.hash);
            },
            .log_level => |l| {
                log.level = l.level;
                replyOk(l.id);
            },
            .stop => |s| {
                self.stopping = true;
                // Counters are in memory the supervisor shares: nothing to report.
                replyOk(s.id);
            },
        }
    }

    /// Test-only: make this worker's tables diverge from the supervisor's once, so the drift
    /// repair path runs for real. Never set outside tests.
    fn divergeIfDue(self: *Worker) void {
        const at = self.diverge_at_ns orelse return;
        if (sys.monotonicNs() < at) return;
        self.diverge_at_ns = null;
        log.print(.warn, "test hook: dropping this worker's rules to simulate drift", .{});
        for (&self.rings) |*slot| if (slot.*) |*r| {
            r.dp.apply(&empty_table) catch |err| log.print(.warn, "test hook: E{s}", .{errName(err)});
            r.hash = tableHash(&empty_table);
        };
    }
};

/// Keeps descriptor `fd` taken by a copy of `placeholder`. The seccomp filter refuses sends,
/// connects and dups on the whole packet-socket range (fds 512..543) whoever holds the number:
/// once a packet socket is closed, the lowest free number would sooner or later be one of
/// them (a worker holding ~509 descriptors), and an egress or join socket given it could not
/// send. dup3 from a descriptor outside the range is allowed by the filter.
fn reserveFd(placeholder: i32, fd: i32) sys.Error!void {
    std.debug.assert(placeholder >= 0 and placeholder != fd);
    _ = try sys.call("dup3", linux.dup3(placeholder, fd, @as(u32, @bitCast(linux.O{ .CLOEXEC = true }))));
}

/// Opens the placeholder for reserveFd (before the privilege drop: nothing after needs a path).
fn openPlaceholder() sys.Error!i32 {
    return @intCast(try sys.call("openat", linux.openat(linux.AT.FDCWD, "/dev/null", .{ .ACCMODE = .RDONLY, .CLOEXEC = true }, 0)));
}

// Two receive buffers, each large enough for a full table: the pending table stays in one
// while the next message is read into the other.
var recv_bufs: [2][scm.table_bytes_max + 1]u8 = undefined;

fn otherBuffer(data: []const u8) []u8 {
    return if (data.ptr == &recv_bufs[0]) &recv_bufs[1] else &recv_bufs[0];
}

/// Reads one message at start-up (blocking, at most worker_startup_wait_ms: the channel's
/// SO_RCVTIMEO); null with everything logged when there is none.
fn recvStartup(buf: []u8, fds: []i32) ?scm.Received {
    return scm.recv(channel_fd, buf, fds, false) catch |err| {
        var msg_buf: [96]u8 = undefined;
        const what = if (err == error.AGAIN)
            std.fmt.bufPrint(&msg_buf, "no message from the supervisor within {d} ms at start-up", .{constants.worker_startup_wait_ms}) catch "no message from the supervisor at start-up"
        else
            std.fmt.bufPrint(&msg_buf, "reading the supervisor's channel at start-up: E{s}", .{errName(err)}) catch "reading the supervisor's channel at start-up";
        log.print(.@"error", "{s}", .{what});
        sendFatal(what);
        return null;
    };
}

/// A blocking read of the channel gives up after `ms` (EAGAIN); 0: waits for ever.
fn setReceiveTimeout(ms: u32) sys.Error!void {
    const tv: linux.timeval = .{ .sec = @intCast(ms / 1000), .usec = @intCast((ms % 1000) * 1000) };
    try sys.setsockopt(channel_fd, linux.SOL.SOCKET, linux.SO.RCVTIMEO, &tv);
}

/// One of the ring messages that follow the set-up message, checked: null (problem set) unless
/// it is a ring message with its one descriptor, at a position of this worker not given before.
fn initialRing(w: *const Worker, parsed: ?Message, fds: []const i32, before: []const PendingRing, problem: *Problem) ?PendingRing {
    const msg = parsed orelse return null;
    if (msg != .ring) {
        problem.set("kind: expected a ring message ({d} of {d})", .{ before.len + 1, w.setup.rings });
        return null;
    }
    if (fds.len != 1) {
        problem.set("{d} descriptors came with it, expected 1 (its counter memory)", .{fds.len});
        return null;
    }
    if (!w.checkPosition(msg.ring.position, problem)) return null;
    for (before) |p| if (p.msg.position == msg.ring.position) {
        problem.set("position: {d} is given twice", .{msg.ring.position});
        return null;
    };
    return .{ .msg = msg.ring, .stats_fd = fds[0] };
}

fn envU32(environ: std.process.Environ, name: []const u8) u32 {
    const text = environ.getPosix(name) orelse return 0;
    return std.fmt.parseInt(u32, text, 10) catch 0;
}

/// The thread (and so process) name `ps -o comm`, top and perf show: started from
/// /proc/self/fd/N, the worker would otherwise be called "N" (the memfd's number).
pub const process_name = "mcrelay-worker";

/// Sets this thread's name (PR_SET_NAME, at most 15 bytes); before the privilege drop.
fn setProcessName() sys.Error!void {
    comptime std.debug.assert(process_name.len <= 15);
    var name: [16]u8 = @splat(0);
    @memcpy(name[0..process_name.len], process_name);
    _ = try sys.call("prctl", linux.prctl(@intFromEnum(linux.PR.SET_NAME), @intFromPtr(&name), 0, 0, 0));
}

/// SIGPIPE ignored: a log line written to a stderr whose reader is gone (a closed pipe, a
/// restarted journal) fails with EPIPE, which Log.print ignores, instead of killing the worker
/// and its forwarding. (Bun's spawn leaves SIGPIPE at its default; the channel's sends use
/// MSG_NOSIGNAL anyway.)
fn ignoreSigpipe() void {
    const act: linux.Sigaction = .{ .handler = .{ .handler = linux.SIG.IGN }, .mask = linux.sigemptyset(), .flags = 0 };
    _ = linux.sigaction(.PIPE, &act, null);
}

pub fn main(init: std.process.Init.Minimal) u8 {
    const env = init.environ;
    ignoreSigpipe();
    // First, so that even a worker that refuses to start is listed under its name.
    setProcessName() catch {};
    if (env.getPosix("MCRELAY_LOG_LEVEL")) |l| log.level = Level.parse(l) orelse .info;
    log.json = if (env.getPosix("MCRELAY_LOG_FORMAT")) |f| std.mem.eql(u8, f, "json") else false;
    log.journal = stderrIsJournal(env.getPosix("JOURNAL_STREAM"));
    log.identity = env.getPosix("MCRELAY_LOG_IDENTITY");
    return run(env);
}

fn run(env: std.process.Environ) u8 {
    var sock_type: c_int = 0;
    var sock_len: linux.socklen_t = @sizeOf(c_int);
    if (linux.errno(linux.getsockopt(channel_fd, linux.SOL.SOCKET, linux.SO.TYPE, std.mem.asBytes(&sock_type), &sock_len)) != .SUCCESS or sock_type != linux.SOCK.SEQPACKET) {
        log.print(.@"error", "_worker is started by the supervisor, not by hand", .{});
        return exit_usage;
    }
    var fds_buf: [positions_max]i32 = undefined;
    var arena_buf: [json_bytes_max * 2]u8 = undefined;
    var fba = std.heap.FixedBufferAllocator.init(&arena_buf);
    var problem: Problem = .{};

    // A supervisor that fails between the spawn and its start-up messages (and neither kills
    // us nor closes its end) must not leave us holding packet sockets for ever.
    setReceiveTimeout(constants.worker_startup_wait_ms) catch |err| {
        log.print(.@"error", "cannot bound the start-up reads: E{s}", .{errName(err)});
        return exit_fatal;
    };
    // The set-up message, with one packet socket per position.
    const first = recvStartup(&recv_bufs[0], &fds_buf) orelse return exit_fatal;
    const setup_fds = fds_buf[0..first.fd_count];
    const setup = blk: {
        const parsed = parseMessage(fba.allocator(), recv_bufs[0][0..first.bytes], &problem);
        if (parsed) |m| switch (m) {
            .setup => |s| if (s.positions == setup_fds.len) break :blk s else problem.set("positions: {d}, but {d} packet sockets came with the message", .{ s.positions, setup_fds.len }),
            else => problem.set("kind: expected the set-up message (worker) first", .{}),
        };
        log.print(.debug, "bad worker set-up message ({d} descriptors): {s}", .{ setup_fds.len, problem.text() });
        var fatal_buf: [200]u8 = undefined;
        sendFatal(std.fmt.bufPrint(&fatal_buf, "bad set-up message: {s}", .{problem.text()}) catch problem.text());
        for (setup_fds) |fd| sys.close(fd);
        return exit_fatal;
    };
    var w: Worker = .{ .setup = setup };
    if (setup.user) |u| {
        const n = @min(u.name.len, w.user_name_buf.len);
        @memcpy(w.user_name_buf[0..n], u.name[0..n]);
        w.setup.user.?.name = w.user_name_buf[0..n];
    }
    // The packet sockets at fixed numbers, before anything else: the seccomp filter covers the range.
    scm.place(setup_fds, fd_first) catch |err| {
        var msg_buf: [64]u8 = undefined;
        const what = std.fmt.bufPrint(&msg_buf, "cannot place the packet sockets: E{s}", .{errName(err)}) catch "cannot place the packet sockets";
        log.print(.debug, "{s}", .{what});
        sendFatal(what);
        for (setup_fds) |fd| sys.close(fd);
        return exit_fatal;
    };
    w.placeholder_fd = openPlaceholder() catch |err| {
        var msg_buf: [64]u8 = undefined;
        const what = std.fmt.bufPrint(&msg_buf, "cannot open /dev/null: E{s}", .{errName(err)}) catch "cannot open /dev/null";
        log.print(.debug, "{s}", .{what});
        sendFatal(what);
        return exit_fatal;
    };
    var initial: [positions_max]PendingRing = undefined;
    var initial_count: usize = 0;
    for (0..setup.rings) |_| {
        const m = recvStartup(&recv_bufs[1], &fds_buf) orelse return exit_fatal;
        const ring_fds = fds_buf[0..m.fd_count];
        fba.reset();
        const parsed = parseMessage(fba.allocator(), recv_bufs[1][0..m.bytes], &problem);
        if (initialRing(&w, parsed, ring_fds, initial[0..initial_count], &problem)) |r| {
            initial[initial_count] = r;
            initial_count += 1;
            continue;
        }
        log.print(.debug, "bad ring message at start-up: {s}", .{problem.text()});
        var fatal_buf: [200]u8 = undefined;
        sendFatal(std.fmt.bufPrint(&fatal_buf, "bad ring message: {s}", .{problem.text()}) catch problem.text());
        for (ring_fds) |fd| sys.close(fd);
        for (initial[0..initial_count]) |p| sys.close(p.stats_fd);
        return exit_fatal;
    }
    // From here on the channel is read without blocking (serve polls it).
    setReceiveTimeout(0) catch |err| {
        log.print(.@"error", "cannot clear the start-up read bound: E{s}", .{errName(err)});
        sendFatal("cannot clear the start-up read bound");
        for (initial[0..initial_count]) |p| sys.close(p.stats_fd);
        return exit_fatal;
    };
    if (setup.cpu) |cpu| {
        // mcr's `pinning`: before the privilege drop, whose seccomp filter refuses affinity calls.
        // A CPU that is not there is reported and the worker runs unpinned.
        if (cpuPin(cpu)) {
            log.print(.debug, "dataplane thread pinned to CPU {d}", .{cpu});
        } else |err| {
            log.print(.warn, "pinning: cannot pin to CPU {d} (pin to CPU {d}: E{s}); running unpinned", .{ cpu, cpu, errName(err) });
        }
    }
    var probes_total: u32 = 0;
    var probe_ms: f64 = 0;
    if (w.setup.user) |u| {
        // Everything privileged (the AF_PACKET sockets) is in hand: give up the rest now.
        var msg_buf: [256]u8 = undefined;
        privileges.drop(u.uid, u.gid, fd_first, setup.positions) catch |err| {
            const what = std.fmt.bufPrint(&msg_buf, "drop privileges to uid {d} gid {d}: E{s}", .{ u.uid, u.gid, errName(err) }) catch "drop privileges";
            log.print(.debug, "{s}: refusing to run privileged", .{what});
            var fatal_buf: [300]u8 = undefined;
            sendFatal(std.fmt.bufPrint(&fatal_buf, "privilege drop failed: {s}", .{what}) catch "privilege drop failed");
            return exit_fatal;
        };
        var all_buf: [1024]u8 = undefined;
        var first_buf: [256]u8 = undefined;
        var all = Out.init(&all_buf);
        var first_problem = Out.init(&first_buf);
        if (verifyDropped(u.uid, u.gid, &all, &first_problem) > 0) {
            // Every problem in the reply (the supervisor's log line), not only the first.
            log.print(.debug, "privileges not dropped: {s}", .{all.slice()});
            var fatal_buf: [1100]u8 = undefined;
            sendFatal(std.fmt.bufPrint(&fatal_buf, "privileges not dropped: {s}", .{all.slice()}) catch "privileges not dropped");
            return exit_fatal;
        }
        // What a compromised worker would try must be refused, by seccomp and the socket lock, on
        // every packet socket that is set up (a blank one is checked when its ring is added).
        const t0 = sys.monotonicNs();
        for (initial[0..initial_count]) |p| {
            if (confinement.verify(fd_first + @as(i32, @intCast(p.msg.position)))) |f| {
                var d: [160]u8 = undefined;
                const why = confinement.describe(f, &d);
                log.print(.debug, "confinement not verified on {s}: {s}: refusing to run", .{ p.msg.ifname(), why });
                sendFatalAt(std.fmt.bufPrint(&msg_buf, "confinement not verified: {s}", .{why}) catch "confinement not verified", if (f.of_socket) p.msg.position else null);
                return exit_fatal;
            }
            probes_total += @intCast(confinement.probes.len);
        }
        probe_ms = @as(f64, @floatFromInt(sys.monotonicNs() - t0)) / std.time.ns_per_ms;
        log.print(.debug, "running as {s} (uid {d}, gid {d}), no capabilities, no_new_privs; confinement verified: {d} probes refused in {d:.3} ms", .{ u.name, u.uid, u.gid, probes_total, probe_ms });
    }
    for (initial[0..initial_count], 0..) |p, i| {
        w.openRing(p.msg, p.stats_fd) catch |err| {
            var msg_buf: [128]u8 = undefined;
            const what = std.fmt.bufPrint(&msg_buf, "ring setup {s}: E{s}", .{ p.msg.ifname(), errName(err) }) catch "ring setup";
            log.print(.debug, "{s}", .{what});
            sendFatalAt(what, p.msg.position);
            for (initial[i + 1 .. initial_count]) |rest| sys.close(rest.stats_fd);
            w.closeAll();
            return exit_fatal;
        };
    }
    w.test_rules_max = envU32(env, "MCRELAY_TEST_TABLE_RULES_MAX");
    const diverge_ms = envU32(env, "MCRELAY_TEST_DIVERGE_AFTER_MS");
    if (diverge_ms > 0) w.diverge_at_ns = sys.monotonicNs() + @as(u64, diverge_ms) * std.time.ns_per_ms;

    {
        var buf: [160]u8 = undefined;
        var out = Out.init(&buf);
        out.print("{{\"type\":\"ready\",\"pid\":{d},\"confinement\":", .{linux.getpid()});
        // An object whenever the worker dropped (probes 0: no packet socket was set up at
        // start-up; each is probed when its ring is added); null only without a drop.
        if (w.setup.user != null) out.print("{{\"probes\":{d},\"ms\":{d:.3}}}}}\n", .{ probes_total, probe_ms }) else out.add("null}\n");
        sendLine(&out);
    }
    return serve(&w);
}

fn serve(w: *Worker) u8 {
    var spare: []u8 = &recv_bufs[0];
    var fds_buf: [positions_max]i32 = undefined;
    while (true) {
        w.refreshActive();
        var budget_ms: u32 = run_budget_ms;
        if (w.diverge_at_ns) |at| {
            const now = sys.monotonicNs();
            budget_ms = if (at <= now) 0 else @intCast(@min(run_budget_ms, (at - now) / std.time.ns_per_ms + 1));
        }
        if (w.active_count > 0) {
            _ = loop.runMany(w.active[0..w.active_count], budget_ms) catch |err| {
                var msg_buf: [64]u8 = undefined;
                const what = std.fmt.bufPrint(&msg_buf, "dataplane run: E{s}", .{errName(err)}) catch "dataplane run";
                log.print(.@"error", "{s}", .{what});
                sendFatal(what);
                w.closeAll();
                return exit_fatal;
            };
        } else {
            // Nothing to drain: wait for a message (a table starts the rings).
            var pfd = [_]linux.pollfd{.{ .fd = channel_fd, .events = linux.POLL.IN, .revents = 0 }};
            const timeout: i32 = if (w.diverge_at_ns != null) @intCast(budget_ms) else -1;
            _ = linux.poll(&pfd, 1, timeout);
        }
        var n: u32 = 0;
        while (n < drain_max) : (n += 1) {
            const got = scm.recv(channel_fd, spare, &fds_buf, true) catch |err| switch (err) {
                error.AGAIN => break,
                error.INTR => continue,
                error.MSGSIZE => {
                    log.print(.warn, "ignored a message too large for the channel", .{});
                    w.refused.set("message: larger than {d} bytes or with more than {d} descriptors", .{ scm.table_bytes_max, scm.fds_max });
                    continue;
                },
                error.CONNRESET => {
                    // The supervisor is gone: nothing may forward without it.
                    w.stopping = true;
                    break;
                },
                else => {
                    var msg_buf: [64]u8 = undefined;
                    const what = std.fmt.bufPrint(&msg_buf, "reading the supervisor's channel: E{s}", .{errName(err)}) catch "reading the supervisor's channel";
                    log.print(.@"error", "{s}", .{what});
                    sendFatal(what);
                    w.closeAll();
                    return exit_fatal;
                },
            };
            w.onMessage(spare[0..got.bytes], fds_buf[0..got.fd_count], &spare);
            if (w.stopping) break;
        }
        w.divergeIfDue();
        if (w.stopping) {
            w.closeAll();
            return if (w.failed) exit_fatal else 0;
        }
    }
}

test "set-up, ring and request messages parse; wrong or extra fields are refused with the field named" {
    var buf: [8192]u8 = undefined;
    var fba = std.heap.FixedBufferAllocator.init(&buf);
    const a = fba.allocator();
    var p: Problem = .{};
    const setup = parseMessage(a, "{\"kind\":\"worker\",\"index\":1,\"workers\":2,\"positions\":3,\"rings\":1,\"cpu\":null,\"user\":{\"name\":\"nobody\",\"uid\":65534,\"gid\":65534}}", &p).?;
    try std.testing.expectEqual(@as(u32, 3), setup.setup.positions);
    try std.testing.expectEqual(@as(u32, 65534), setup.setup.user.?.uid);
    const ring = parseMessage(a, "{\"kind\":\"ring\",\"position\":2,\"ifname\":\"r0\",\"ifindex\":7,\"slot\":0,\"members\":1,\"geometry\":{\"blockBytes\":65536,\"blockCount\":128,\"frameBytes\":2048,\"frameCount\":4096}}", &p).?;
    try std.testing.expectEqualStrings("r0", ring.ring.ifname());
    try std.testing.expectEqual(@as(u32, 128), ring.ring.geometry.block_count);
    const table = parseMessage(a, "{\"type\":\"table\",\"id\":5,\"position\":0,\"generation\":9,\"hash\":\"0123456789abcdef\",\"bytes\":16}", &p).?;
    try std.testing.expectEqual(@as(u64, 9), table.request.table.generation);
    try std.testing.expect(parseMessage(a, "{\"type\":\"ring-drop\",\"id\":1,\"position\":0,\"keep\":true}", &p).?.request.ring_drop.keep);
    try std.testing.expectEqual(Level.debug, parseMessage(a, "{\"type\":\"log-level\",\"id\":1,\"level\":\"debug\"}", &p).?.request.log_level.level);

    const bad = [_]struct { []const u8, []const u8 }{
        .{ "{\"type\":\"ping\",\"id\":1,\"position\":32}", "position: 32 is past the last position (31)" },
        .{ "{\"type\":\"ping\",\"id\":1}", "position: missing" },
        .{ "{\"type\":\"stop\",\"id\":1,\"position\":0}", "position: a stop message has no such field" },
        .{ "{\"type\":\"log-level\",\"id\":1,\"level\":\"loud\"}", "level: 'loud' is not silent, error, warn, info, debug or trace" },
        .{ "{\"type\":\"ping\",\"id\":1,\"position\":0,\"extra\":1}", "extra: no such field" },
        .{ "{\"type\":\"ping\",\"id\":-1,\"position\":0}", "id: expected an integer from 0 to 18446744073709551615" },
        .{ "{\"type\":\"ping\",\"id\":1,\"position\":\"0\"}", "position: expected an integer from 0 to 4294967295" },
        .{ "{\"type\":\"ping\",\"id\":1,\"position\":0,\"position\":1}", "position: given twice" },
        .{ "{\"type\":\"ring-drop\",\"id\":1,\"position\":0,\"keep\":1}", "keep: expected true or false" },
        .{ "{\"kind\":\"worker\",\"index\":0,\"workers\":1,\"positions\":1,\"rings\":0,\"user\":{\"name\":\"x\",\"uid\":1}}", "user: expected an object of name, uid, gid" },
        .{ "{\"type\":\"ping\",\"id\":1,\"position\":0} {}", "not a message: not JSON" },
        .{ "{\"type\":\"ping\",\"id\":1,", "not a message: JSON cut short" },
        .{ "[1]", "not a message: expected a JSON object" },
        .{ "{\"kind\":\"worker\",\"index\":0,\"workers\":1,\"positions\":33,\"rings\":0}", "positions: 33 is more than 32" },
        .{ "{\"kind\":\"worker\",\"index\":0,\"workers\":1,\"positions\":1,\"rings\":0,\"user\":{\"name\":\"x\",\"uid\":0,\"gid\":65534}}", "user: uid 0 is no unprivileged user" },
        .{ "{\"kind\":\"worker\",\"index\":0,\"workers\":1,\"positions\":1,\"rings\":0,\"user\":{\"name\":\"x\",\"uid\":65534,\"gid\":0}}", "user: gid 0 is no unprivileged group" },
        .{ "{\"kind\":\"ring\",\"position\":0,\"ifname\":\"a-name-longer-than-15\",\"ifindex\":1,\"slot\":0,\"members\":1,\"geometry\":{\"blockBytes\":65536,\"blockCount\":1,\"frameBytes\":2048,\"frameCount\":32}}", "ifname: 21 bytes, expected 1 to 15" },
        .{ "{\"kind\":\"ring\",\"position\":0,\"ifname\":\"r0\",\"ifindex\":0,\"slot\":0,\"members\":1,\"geometry\":{\"blockBytes\":65536,\"blockCount\":1,\"frameBytes\":2048,\"frameCount\":32}}", "ifindex: 0 is less than 1" },
        .{ "{\"kind\":\"ring\",\"position\":0,\"ifname\":\"r0\",\"ifindex\":1,\"slot\":4294967295,\"members\":1,\"geometry\":{\"blockBytes\":65536,\"blockCount\":1,\"frameBytes\":2048,\"frameCount\":32}}", "slot: 4294967295 is not below members (1)" },
        .{ "{\"kind\":\"ring\",\"position\":0,\"ifname\":\"r0\",\"ifindex\":1,\"slot\":2,\"members\":2,\"geometry\":{\"blockBytes\":65536,\"blockCount\":1,\"frameBytes\":2048,\"frameCount\":32}}", "slot: 2 is not below members (2)" },
        .{ "{\"kind\":\"ring\",\"position\":0,\"ifname\":\"r0\",\"ifindex\":1,\"slot\":0,\"members\":1,\"geometry\":{\"blockBytes\":2147483648,\"blockCount\":4096,\"frameBytes\":64,\"frameCount\":1}}", "geometry: blockBytes 2147483648 is not a power of two from 65536 to 131072" },
        .{ "{\"kind\":\"ring\",\"position\":0,\"ifname\":\"r0\",\"ifindex\":1,\"slot\":0,\"members\":1,\"geometry\":{\"blockBytes\":98304,\"blockCount\":1,\"frameBytes\":2048,\"frameCount\":48}}", "geometry: blockBytes 98304 is not a power of two from 65536 to 131072" },
        .{ "{\"kind\":\"ring\",\"position\":0,\"ifname\":\"r0\",\"ifindex\":1,\"slot\":0,\"members\":1,\"geometry\":{\"blockBytes\":4096,\"blockCount\":1,\"frameBytes\":2048,\"frameCount\":2}}", "geometry: blockBytes 4096 is not a power of two from 65536 to 131072" },
        .{ "{\"kind\":\"ring\",\"position\":0,\"ifname\":\"r0\",\"ifindex\":1,\"slot\":0,\"members\":1,\"geometry\":{\"blockBytes\":65536,\"blockCount\":0,\"frameBytes\":2048,\"frameCount\":0}}", "geometry: blockCount 0 is not from 1 to 4096" },
        .{ "{\"kind\":\"ring\",\"position\":0,\"ifname\":\"r0\",\"ifindex\":1,\"slot\":0,\"members\":1,\"geometry\":{\"blockBytes\":65536,\"blockCount\":4097,\"frameBytes\":2048,\"frameCount\":131104}}", "geometry: blockCount 4097 is not from 1 to 4096" },
        .{ "{\"kind\":\"ring\",\"position\":0,\"ifname\":\"r0\",\"ifindex\":1,\"slot\":0,\"members\":1,\"geometry\":{\"blockBytes\":65536,\"blockCount\":2,\"frameBytes\":3072,\"frameCount\":42}}", "geometry: frameBytes 3072 is not a power of two from 2048 to blockBytes (65536)" },
        .{ "{\"kind\":\"ring\",\"position\":0,\"ifname\":\"r0\",\"ifindex\":1,\"slot\":0,\"members\":1,\"geometry\":{\"blockBytes\":65536,\"blockCount\":2,\"frameBytes\":1024,\"frameCount\":128}}", "geometry: frameBytes 1024 is not a power of two from 2048 to blockBytes (65536)" },
        .{ "{\"kind\":\"ring\",\"position\":0,\"ifname\":\"r0\",\"ifindex\":1,\"slot\":0,\"members\":1,\"geometry\":{\"blockBytes\":65536,\"blockCount\":1,\"frameBytes\":131072,\"frameCount\":0}}", "geometry: frameBytes 131072 is not a power of two from 2048 to blockBytes (65536)" },
        .{ "{\"kind\":\"ring\",\"position\":0,\"ifname\":\"r0\",\"ifindex\":1,\"slot\":0,\"members\":1,\"geometry\":{\"blockBytes\":65536,\"blockCount\":2,\"frameBytes\":4096,\"frameCount\":64}}", "geometry: frameCount 64, expected 32 (blockBytes / frameBytes x blockCount)" },
        .{ "{\"type\":\"table\",\"id\":5,\"position\":0,\"generation\":9,\"hash\":\"short\",\"bytes\":16}", "hash: 5 characters, expected 16" },
        .{ "{\"type\":\"launch\",\"id\":1}", "type: 'launch' is no request" },
        .{ "{\"kind\":\"worker\",\"index\":0,\"workers\":1,\"positions\":2,\"rings\":3}", "rings: 3 is more than the 2 positions" },
        .{ "{\"kind\":\"worker\",\"index\":1,\"workers\":1,\"positions\":2,\"rings\":0}", "index: 1 is not below workers (1)" },
        .{ "{\"type\":\"table\",\"id\":5,\"position\":0,\"generation\":9,\"hash\":\"0123456789abcdeF\",\"bytes\":16}", "hash: expected 16 lowercase hex digits" },
        .{ "not json", "not a message: not JSON" },
        .{ "{\"kind\":\"a-kind-that-is-very-long-indeed-and-more\"}", "kind: 'a-kind-that-is-very-long' is not worker or ring" },
    };
    for (bad) |case| {
        fba.reset();
        p = .{};
        if (parseMessage(a, case[0], &p) != null) {
            std.debug.print("parsed: {s}\n", .{case[0]});
            return error.TestUnexpectedResult;
        }
        std.testing.expectEqualStrings(case[1], p.text()) catch |err| {
            std.debug.print("for {s}\n", .{case[0]});
            return err;
        };
    }
}

test "a dropped packet socket's number stays taken by the placeholder, not left for the next socket" {
    const placeholder = try openPlaceholder();
    defer sys.close(placeholder);
    // A number in the packet range as the worker places it, held by something to close first.
    const fd = fd_first + 7;
    if (linux.errno(linux.fcntl(fd, linux.F.GETFD, 0)) != .BADF) return error.SkipZigTest;
    _ = try sys.call("dup3", linux.dup3(placeholder, fd, 0));
    sys.close(fd);
    try reserveFd(placeholder, fd);
    defer sys.close(fd);
    // Taken, close-on-exec, and /dev/null (the same file as the placeholder).
    const flags = linux.fcntl(fd, linux.F.GETFD, 0);
    try std.testing.expectEqual(linux.E.SUCCESS, linux.errno(flags));
    try std.testing.expect(flags & linux.FD_CLOEXEC != 0);
    var a: linux.Statx = undefined;
    var b: linux.Statx = undefined;
    _ = try sys.call("statx", linux.statx(fd, "", linux.AT.EMPTY_PATH, .{ .INO = true }, &a));
    _ = try sys.call("statx", linux.statx(placeholder, "", linux.AT.EMPTY_PATH, .{ .INO = true }, &b));
    try std.testing.expectEqual(b.ino, a.ino);
}

test "every ring geometry the supervisor makes (zig/ring.zig geometry) passes the ring message check" {
    const ring_geometry = @import("ring.zig").geometry;
    for ([_]u32{ 68, 1500, 9000, 16000, constants.mtu_max }) |mtu| {
        for ([_]u32{ 0, 1 << 20, constants.ring_bytes_default, 1 << 30, std.math.maxInt(u32) }) |ring_bytes| {
            const g = ring_geometry(mtu, ring_bytes);
            var p: Problem = .{};
            const got = ringGeometry(g.block_bytes, g.block_count, g.frame_bytes, g.frame_count, &p) orelse {
                std.debug.print("mtu {d}, {d} bytes: {s}\n", .{ mtu, ring_bytes, p.text() });
                return error.TestUnexpectedResult;
            };
            try std.testing.expectEqual(g, got);
        }
    }
}

test "a malformed request keeps its id for the error reply; other messages and id-less text have none" {
    var buf: [8192]u8 = undefined;
    var fba = std.heap.FixedBufferAllocator.init(&buf);
    const a = fba.allocator();
    var p: Problem = .{};
    // JSON.stringify puts the id last: it is found even after the field that is wrong.
    try std.testing.expect(parseMessage(a, "{\"type\":\"ping\",\"position\":99,\"id\":41}", &p) == null);
    try std.testing.expectEqual(@as(?u64, 41), p.request_id);
    try std.testing.expectEqualStrings("position: 99 is past the last position (31)", p.text());
    p = .{};
    try std.testing.expect(parseMessage(a, "{\"type\":\"ping\",\"position\":\"x\",\"extra\":[1,{}],\"id\":42}", &p) == null);
    try std.testing.expectEqual(@as(?u64, 42), p.request_id);
    try std.testing.expectEqualStrings("position: expected an integer from 0 to 4294967295", p.text());
    p = .{};
    try std.testing.expect(parseMessage(a, "{\"kind\":\"ring\",\"id\":3}", &p) == null);
    try std.testing.expectEqual(@as(?u64, null), p.request_id);
    p = .{};
    try std.testing.expect(parseMessage(a, "{\"type\":\"ping\",\"id\":\"x\"}", &p) == null);
    try std.testing.expectEqual(@as(?u64, null), p.request_id);
    // Longer than a message may be: refused as such, not cut and then misread; the id still found.
    var long: [json_bytes_max + 64]u8 = undefined;
    const head = "{\"type\":\"stop\",\"id\":7,\"level\":\"";
    @memcpy(long[0..head.len], head);
    @memset(long[head.len .. long.len - 2], 'a');
    @memcpy(long[long.len - 2 ..], "\"}");
    p = .{};
    try std.testing.expect(parseMessage(a, &long, &p) == null);
    try std.testing.expectEqualStrings("message: 4160 bytes, more than the limit of 4096", p.text());
    try std.testing.expectEqual(@as(?u64, 7), p.request_id);
}

test "table hash is wire.ts tableBytesHash: SHA-256 of the bytes with the generation zeroed, 16 hex digits" {
    var t = empty_table;
    // The empty table's hash as src/rules/wire.ts computes it.
    const want = tableHash(&t);
    std.mem.writeInt(u32, t[12..16], 77, .little);
    try std.testing.expectEqualStrings(&want, &tableHash(&t));
    var digest: [32]u8 = undefined;
    std.crypto.hash.sha2.Sha256.hash(&empty_table, &digest, .{});
    try std.testing.expectEqualStrings(&std.fmt.bytesToHex(digest[0..8], .lower), &want);
    try std.testing.expect(isTable(&empty_table));
    try std.testing.expect(!isTable("{\"type\":\"stop\",\"id\":1}"));
}

test "log lines: plain with tag, JSON with the fields of src/log.ts, journald priority on every line" {
    var buf: [512]u8 = undefined;
    var out = Out.init(&buf);
    var l: Log = .{ .identity = "worker:0" };
    l.format(&out, .debug, "ring 1/1 of r0", 0);
    try std.testing.expectEqualStrings("[debug] [worker:0:worker] ring 1/1 of r0\n", out.slice());
    out = Out.init(&buf);
    l.journal = true;
    l.format(&out, .warn, "a\nb", 0);
    try std.testing.expectEqualStrings("<4>[warn] [worker:0:worker] a\n<4>b\n", out.slice());
    out = Out.init(&buf);
    l = .{ .identity = "worker:2", .json = true };
    // 2026-12-01T21:49:09.123Z
    l.format(&out, .@"error", "say \"no\"\n", 1796161749123 * std.time.ns_per_ms);
    try std.testing.expectEqualStrings("{\"time\":\"2026-12-01T21:49:09.123Z\",\"level\":\"error\",\"tag\":\"worker:2:worker\",\"worker\":\"worker:2\",\"msg\":\"say \\\"no\\\"\\n\"}\n", out.slice());
    out = Out.init(&buf);
    isoTime(&out, 951782400 * std.time.ns_per_s); // a leap day
    try std.testing.expectEqualStrings("2000-02-29T00:00:00.000Z", out.slice());
}

test "the process name is mcrelay-worker: prctl(PR_SET_NAME) sets what /proc/self/comm shows" {
    var saved: [16]u8 = undefined;
    _ = linux.prctl(@intFromEnum(linux.PR.GET_NAME), @intFromPtr(&saved), 0, 0, 0);
    defer _ = linux.prctl(@intFromEnum(linux.PR.SET_NAME), @intFromPtr(&saved), 0, 0, 0);
    try setProcessName();
    const fd_rc = linux.openat(linux.AT.FDCWD, "/proc/thread-self/comm", .{ .CLOEXEC = true }, 0);
    try std.testing.expectEqual(linux.E.SUCCESS, linux.errno(fd_rc));
    defer sys.close(@intCast(fd_rc));
    var buf: [32]u8 = undefined;
    const n = linux.read(@intCast(fd_rc), &buf, buf.len);
    try std.testing.expectEqualStrings("mcrelay-worker\n", buf[0..n]);
}

test "privilege read-back: every field checked, problems named by thread, CapInh only on the main thread" {
    const good = "Name:\tmcrelay\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nGroups:\t\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n";
    var a: [1024]u8 = undefined;
    var f: [256]u8 = undefined;
    var all = Out.init(&a);
    var first = Out.init(&f);
    try std.testing.expectEqual(@as(u32, 0), checkStatus(good, 7, true, 65534, 65534, &all, &first, 0));
    const bad = "Uid:\t0\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nGroups:\t0 \nCapInh:\t0000000000000400\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n";
    try std.testing.expectEqual(@as(u32, 5), checkStatus(bad, 7, true, 65534, 65534, &all, &first, 0));
    try std.testing.expectEqualStrings("thread 7: Uid is '0\t65534\t65534\t65534', expected 65534", first.slice());
    try std.testing.expect(std.mem.indexOf(u8, all.slice(), "; thread 7: CapInh is 0000000000000400, expected 0") != null);
    all = Out.init(&a);
    first = Out.init(&f);
    // Another thread's inheritable set may stay (it can only be cleared by that thread).
    try std.testing.expectEqual(@as(u32, 4), checkStatus(bad, 8, false, 65534, 65534, &all, &first, 0));
}

test "privilege read-back: what cannot be read is a problem, never a pass" {
    var a: [1024]u8 = undefined;
    var f: [256]u8 = undefined;
    var all = Out.init(&a);
    var first = Out.init(&f);
    // No task directory (no /proc): before, nothing was read and the drop counted as verified.
    try std.testing.expectEqual(@as(u32, 1), verifyDroppedIn("/nonexistent/task", 65534, 65534, &all, &first));
    try std.testing.expectEqualStrings("cannot read /nonexistent/task: ENOENT", first.slice());
    // A task directory without this thread in it (one with no thread ids): not verified either.
    all = Out.init(&a);
    first = Out.init(&f);
    try std.testing.expectEqual(@as(u32, 1), verifyDroppedIn("/proc/sys", 65534, 65534, &all, &first));
    try std.testing.expect(std.mem.startsWith(u8, first.slice(), "thread "));
    try std.testing.expect(std.mem.endsWith(u8, first.slice(), " (this one) is not in /proc/sys"));
    // The real directory is read: this test process has not dropped anything.
    all = Out.init(&a);
    first = Out.init(&f);
    try std.testing.expect(verifyDroppedIn("/proc/self/task", 65534, 65534, &all, &first) >= 4);
}
