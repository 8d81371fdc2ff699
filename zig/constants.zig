//! Every fixed limit of the native library, in one place. Memory is sized from these at
//! open time; nothing is allocated on the packet path.
const std = @import("std");

/// Rules one dataplane (one worker) can hold.
pub const rules_max: u32 = 1024;
/// Outputs across all rules of one dataplane.
pub const outputs_max: u32 = 2048;
/// Outputs of one rule (fan-out 1:50 and beyond the kernel's 32-VIF limit).
pub const outputs_per_rule_max: u32 = 256;
/// Hash table slots for (address, port) lookup; power of two, load factor <= 0.5.
pub const table_slots: u32 = 2 * rules_max;

/// Runs of ring slots (a block's worth each) the dataplane loop processes before it looks at
/// the clock and the wake fd again.
pub const runs_per_turn_max: u32 = 64;
/// Runs of ring slots whose frames are queued before one egress flush (bigger send batches;
/// the payloads stay in their slots until the flush).
pub const runs_per_flush_max: u32 = 8;
/// At most one wake-up per window while traffic flows (wake-up coalescing, decisions 007, 023
/// and 024): what a frame waits at most under load. The window grows with the outputs of the
/// active table, because every flush costs a send message per touched output however few
/// datagrams it carries: `coalesce_window_per_output_ns` per output, between
/// `coalesce_window_ns` (1:1 latency) and `coalesce_window_max_ns` (1:50 at 5k pps batches ~5
/// datagrams per output message, as the 1 ms TPACKET_V3 retire timer did).
pub const coalesce_window_ns: u64 = 250 * std.time.ns_per_us;
pub const coalesce_window_per_output_ns: u64 = 20 * std.time.ns_per_us;
pub const coalesce_window_max_ns: u64 = 1 * std.time.ns_per_ms;
/// Rings (input interfaces) one worker's dataplane thread serves in one run (loop.runMany):
/// one pollfd each, plus the wake descriptor. Also the packet sockets a worker holds, set up
/// or blank (a blank one is set up by the supervisor when an interface is added).
pub const rings_per_worker_max: u32 = 32;

/// Datagrams one output queues before a flush (one UDP GSO buffer holds up to ~48 of 1316 bytes).
pub const egress_batch_max: u32 = 48;
/// Messages in one egress sendmmsg (the kernel's UIO_MAXIOV caps a call there anyway): every
/// output of an address family shares the call, so a 1:50 fan-out is one syscall per flush.
pub const egress_mmsg_max: u32 = 1024;
/// An output's batch of at least this many equal-size datagrams travels as one UDP GSO message;
/// a smaller one as one message per datagram (decision 016).
pub const egress_gso_datagrams_min: u32 = 4;
/// Largest UDP GSO buffer egress sends: 64 KiB less the IPv4 and UDP headers, rounded down.
pub const egress_gso_bytes_max: u32 = 65_000;
/// Loop guard: payload traces one dataplane keeps (24 bytes each), and how long a trace lasts
/// after its datagram was last seen. A round trip through relays takes milliseconds.
pub const loop_guard_slots: u32 = 1 << 14;
pub const loop_guard_window_ms: u32 = 250;
/// Per-rule rate cap (max_pps): the burst it lets through after a quiet spell, as time.
pub const rate_cap_burst_ms: u32 = 50;
/// Egress socket send buffer. A small buffer collapsed throughput in the earlier relay.
pub const egress_sndbuf_bytes: u32 = 4 * 1024 * 1024;
/// Rules' only outputs that get a connected socket of their own (decision 016): each is a
/// descriptor; the outputs past this many use their family's socket only.
pub const egress_own_sockets_max: u32 = 64;
/// Send buffer of the egress socket all outputs of an address family share.
pub const egress_shared_sndbuf_bytes: u32 = 16 * 1024 * 1024;
/// Groups one UDP socket may join: the kernel's default igmp_max_memberships is 20.
pub const joins_per_socket_max: u32 = 20;
/// Sockets used for ingress joins.
pub const join_sockets_max: u32 = (rules_max + joins_per_socket_max - 1) / joins_per_socket_max;

/// RX ring (TPACKET_V2): one frame per slot, slots of a power of two (2 KiB at MTU 1500) in
/// blocks of a power-of-two number of pages (the kernel's allocation unit, and how many slots
/// the loop takes at a time). A frame larger than a slot (a UDP GSO super-frame) arrives whole
/// through the socket's receive queue (ring.zig).
pub const ring_block_bytes_min: u32 = 1 << 16;
/// Largest ring block: a slot (frame) holding the largest frame we size for (mtu_max, ring.zig
/// geometry) rounded up to a power of two. Bounds what a worker accepts in a ring message, so
/// the ring's slot count, (block / frame) x blocks, stays far inside a u32.
pub const ring_block_bytes_max: u32 = 1 << 17;
/// Smallest ring slot: a full-size frame at MTU 1500 with the slot's headers, a power of two.
pub const ring_frame_bytes_min: u32 = 2048;
/// Default ring per packet socket (`ring_mib` sets it per interface): 8 MiB, 4,096 slots at MTU
/// 1500, about 50 ms of a 1 Gbit/s stream of full-size frames, and 4,096 frames at any rate: a
/// worker restart under a steady stream loses what exceeds that unless the interface's ring is
/// made larger (docs/operations.md, ring sizing).
pub const ring_bytes_default: u32 = 8 * 1024 * 1024;
pub const ring_blocks_max: u32 = 4096;
/// Whole frames of cut ring slots (UDP GSO super-frames, up to 64 KiB each) whose payloads can
/// wait for one egress flush; with more in one group the loop flushes early (ring.zig).
pub const ring_copy_frames_max: u32 = 8;
/// At most this much of the next frame is prefetched while the current one is parsed (a
/// full-size 1500-byte frame and its headers; decision 022).
pub const ring_prefetch_bytes_max: u32 = 1664;
/// Largest link MTU we size for (jumbo frames plus headroom).
pub const mtu_max: u32 = 65535;

/// Largest UDP payload over IPv4.
pub const udp_payload_max: u32 = 65507;
/// Snap length of a frame the ingress filter accepts: more than any frame we size for, so
/// the whole frame.
pub const filter_accept_bytes: u32 = 0x40000;

/// Descriptors one SCM_RIGHTS message may carry: a worker's packet sockets in one message.
pub const scm_fds_max: u32 = rings_per_worker_max;
/// First descriptor number of a worker's packet sockets (rings_per_worker_max of them, placed
/// there before its privilege drop; the seccomp filter covers the range). Far above what the
/// worker opens otherwise, below the default soft RLIMIT_NOFILE of 1024.
pub const packet_fd_first: u32 = 512;
/// Send buffer asked for each end of a worker's socketpair: a whole rule table is one message
/// (the kernel caps it at net.core.wmem_max and doubles it).
pub const scm_sndbuf_bytes: u32 = 512 * 1024;
/// Messages the worker executable reads off its socketpair in one go before its dataplane runs
/// again (zig/worker.zig).
pub const worker_drain_messages_max: u32 = 1024;
/// How long the worker waits for each start-up message (the set-up message, then its ring
/// messages; SO_RCVTIMEO on its channel) before it exits 1: the supervisor sends them right
/// after the spawn, so a wait this long means it failed in between, and the worker must not
/// hold its packet sockets forever. As long as the supervisor waits for `ready`.
pub const worker_startup_wait_ms: u32 = 5000;
/// Largest JSON control message the worker reads (set-up, ring and request messages are a few
/// hundred bytes; only rule tables, which are binary, are larger).
pub const worker_json_bytes_max: u32 = 4096;
/// Receive buffer of the rtnetlink socket: an overflow (ENOBUFS) forces a full dump.
pub const netlink_rcvbuf_bytes: u32 = 4 * 1024 * 1024;
/// Stack of the short-lived native threads (packet socket setup, asynchronous close).
pub const background_stack_bytes: usize = 1024 * 1024;

/// VLAN tags the parser walks: QinQ, an S-tag and a C-tag. A third tag is not something we relay.
pub const vlan_tags_max: u32 = 2;

/// Failed joins and port holds are tried again this often (outside the packet path).
pub const join_retry_ns: u64 = std.time.ns_per_s;

/// IPv6 extension headers walked before UDP. RFC 8200 recommends each at most once
/// (destination options twice): 8 covers any sensible chain and bounds a hostile one.
pub const ipv6_extension_headers_max: u32 = 8;

/// Loop guard: returns (from a source other than the first) at which a datagram is declared
/// looping, and the bytes of payload its signature covers (with the length).
pub const loop_guard_returns_max: u16 = 2;
pub const loop_guard_signature_bytes_max: usize = 64;

/// Trace region: bytes per record, records in the ring, outputs whose result one record
/// carries (the rest are counted in outputs_total), and output results waiting for a flush in
/// one group of blocks (beyond it results stay unknown).
pub const trace_record_bytes: u32 = 2048;
pub const trace_records_max: u32 = 512;
pub const trace_record_outputs_max: u32 = 4;
pub const trace_pending_max: u32 = 256;

/// Traffic generator / sink limits.
pub const gen_batch_max: u32 = 64;
pub const sink_batch_max: u32 = 64;
pub const sink_streams_max: u32 = 1024;
/// Sink receive slot: larger than any UDP payload (65535 - 8 over IPv6), so no datagram is
/// ever truncated.
pub const sink_rx_slot_bytes: u32 = 1 << 16;
/// Generator pacing: at high rates wait until this much traffic is due before waking (one
/// sleep per batch, bursts this short); wait for POLLOUT at most this long per attempt; after
/// ENOBUFS (not signalled through poll) sleep this long.
pub const gen_pace_burst_ns: u64 = 50 * std.time.ns_per_us;
pub const gen_eagain_wait_ns: u64 = std.time.ns_per_ms;
pub const gen_enobufs_wait_ns: u64 = 100 * std.time.ns_per_us;
/// Sequence window (bits) per stream for duplicate detection.
pub const sink_seq_window: u32 = 1 << 17;
pub const sink_latency_buckets: u32 = 64 * 16;
/// Tests that fork wait at most this long for the child (privileges.zig).
pub const test_child_wait_ms_max: u32 = 30_000;

comptime {
    std.debug.assert(std.math.isPowerOfTwo(table_slots));
    std.debug.assert(table_slots >= 2 * rules_max);
    std.debug.assert(outputs_per_rule_max <= outputs_max);
    std.debug.assert(std.math.isPowerOfTwo(sink_seq_window));
    std.debug.assert(outputs_per_rule_max <= std.math.maxInt(u16));
    std.debug.assert(runs_per_flush_max <= runs_per_turn_max);
    std.debug.assert(egress_gso_bytes_max <= 65535 - 20 - 8);
    std.debug.assert(filter_accept_bytes > mtu_max + 14 + 8);
    std.debug.assert(std.math.isPowerOfTwo(ring_block_bytes_min) and std.math.isPowerOfTwo(ring_block_bytes_max));
    std.debug.assert(std.math.isPowerOfTwo(ring_frame_bytes_min) and ring_frame_bytes_min <= ring_block_bytes_min);
    std.debug.assert(ring_block_bytes_min <= ring_block_bytes_max);
    std.debug.assert(@as(u64, ring_block_bytes_max / ring_frame_bytes_min) * ring_blocks_max <= std.math.maxInt(u32));
}
