// The only module that imports bun:ffi. It loads libmcrelay (embedded in the compiled
// executable, from zig-out/ under `bun run`), checks the ABI, and offers typed methods; the
// rest of the code never sees a pointer.
import { closeSync, openSync, readFileSync, writeSync } from "node:fs";
import { dlopen, ptr, toArrayBuffer, type Pointer } from "bun:ffi";
import embeddedLibPath from "../../zig-out/lib/libmcrelay.so" with { type: "file" };
import embeddedWorkerPath from "../../zig-out/bin/mcrelay-worker" with { type: "file" };
import { NativeError, errnoName } from "../errors.ts";
import {
  ABI_VERSION,
  ABI_DESCRIPTION,
  describeDifferences,
  GEN_COUNTERS,
  LIMITS,
  SIZE,
  SINK_GLOBAL_COUNTERS,
  SINK_STREAM_COUNTERS,
  STATS_TOTAL_WORDS,
  decodeGeometry,
  decodeLinkInfo,
  decodeNlEvents,
  encodePacketSetup,
  encodeGenConfig,
  encodeSinkConfig,
  type GenConfig,
  type PacketSetup,
  type RingGeometry,
  type LinkInfo,
  type NlEvent,
  type SinkConfig,
} from "./abi.ts";

const symbols = {
  mcr_abi_version: { args: [], returns: "u32" },
  mcr_abi_describe: { args: ["ptr", "u32"], returns: "u32" },
  mcr_packet_open: { args: [], returns: "i32" },
  mcr_packet_setup_start: { args: ["i32", "ptr", "ptr"], returns: "i32" },
  mcr_packet_setup_poll: { args: ["ptr", "ptr"], returns: "i32" },
  mcr_fd_close_async: { args: ["i32"], returns: "void" },
  mcr_fanout_hash: { args: ["u32", "u16"], returns: "u32" },
  mcr_fd_close: { args: ["i32"], returns: "i32" },
  mcr_fd_inherit: { args: ["i32"], returns: "i32" },
  mcr_link_query: { args: ["ptr", "u32", "ptr"], returns: "i32" },
  mcr_scm_pair: { args: ["ptr"], returns: "i32" },
  mcr_scm_send: { args: ["i32", "ptr", "u32", "ptr", "u32", "u32"], returns: "i32" },
  mcr_scm_recv: { args: ["i32", "ptr", "u32", "ptr", "u32", "ptr", "u32"], returns: "i32" },
  mcr_shm_create: { args: [], returns: "i32" },
  mcr_shm_map: { args: ["i32", "ptr"], returns: "i32" },
  mcr_shm_unmap: { args: ["ptr"], returns: "void" },
  mcr_trace_layout: { args: ["ptr"], returns: "void" },
  mcr_nofile_raise: { args: ["ptr"], returns: "i32" },
  mcr_peer_cred: { args: ["i32", "ptr"], returns: "i32" },
  mcr_peer_groups: { args: ["i32", "ptr", "u32"], returns: "i32" },
  mcr_peer_pidfd: { args: ["i32"], returns: "i32" },
  mcr_pidfd_alive: { args: ["i32"], returns: "i32" },
  mcr_dir_lock: { args: ["ptr"], returns: "i32" },
  mcr_notify: { args: ["ptr", "u32", "ptr", "u32"], returns: "i32" },
  mcr_nl_open: { args: ["ptr"], returns: "i32" },
  mcr_nl_dump: { args: ["ptr", "u32"], returns: "i32" },
  mcr_nl_read: { args: ["ptr", "ptr", "u32"], returns: "i32" },
  mcr_nl_close: { args: ["ptr"], returns: "void" },
  mcr_packet_reset_start: { args: ["i32", "ptr"], returns: "i32" },
  mcr_packet_reset_poll: { args: ["ptr"], returns: "i32" },
  mcr_gen_open: { args: ["ptr", "ptr"], returns: "i32" },
  mcr_gen_run: { args: ["ptr", "u32"], returns: "i32" },
  mcr_gen_counters: { args: ["ptr"], returns: "ptr" },
  mcr_gen_close: { args: ["ptr"], returns: "void" },
  mcr_sink_open: { args: ["ptr", "ptr"], returns: "i32" },
  mcr_sink_run: { args: ["ptr", "u32"], returns: "i32" },
  mcr_sink_summarize: { args: ["ptr"], returns: "void" },
  mcr_sink_counters: { args: ["ptr"], returns: "ptr" },
  mcr_sink_close: { args: ["ptr"], returns: "void" },
} as const;

type Symbols = ReturnType<typeof dlopen<typeof symbols>>["symbols"];

let loaded: Symbols | null = null;

/** The library, loaded and checked on first use. */
function lib(): Symbols {
  if (loaded) return loaded;
  const override = process.env.MCRELAY_LIB;
  const handle = override ? dlopen(override, symbols) : openEmbedded();
  checkAbi(handle.symbols);
  loaded = handle.symbols;
  return loaded;
}

/** Where `bun build --compile` puts embedded files: a virtual path inside the executable. */
const EMBEDDED_PREFIX = "/$bunfs/";
const MFD_CLOEXEC = 0x1;
/** Linux 6.3+: ask for an executable memfd explicitly (vm.memfd_noexec=1 defaults to noexec). */
const MFD_EXEC = 0x10;
const EINVAL = 22;

/**
 * Opens the library without writing it to a file system. Bun's own dlopen of an embedded file
 * extracts it into $TMPDIR (so a noexec /tmp breaks every command, and a copy is left behind);
 * instead the bytes go into an anonymous memory file (memfd_create) that is dlopen'ed through
 * /proc/self/fd/N. Under `bun run` the path is a real file and is opened directly.
 */
function openEmbedded(): ReturnType<typeof dlopen<typeof symbols>> {
  if (!embeddedLibPath.startsWith(EMBEDDED_PREFIX)) return dlopen(embeddedLibPath, symbols);
  const bytes = readFileSync(embeddedLibPath);
  const fd = memfdCreate("libmcrelay.so");
  try {
    for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
    return dlopen(`/proc/self/fd/${fd}`, symbols);
  } finally {
    // The loaded mapping keeps the memory file alive; the descriptor is not needed after dlopen.
    closeSync(fd);
  }
}

let workerPath: string | null = null;

/**
 * The worker executable to start (zig/worker.zig, static, no libc). Like the library it is
 * never written to a file system: in the compiled executable its bytes go into an anonymous
 * memory file, executed through /proc/self/fd/N (a noexec /tmp does not matter). The memory
 * file is made once and kept open read-only (exec refuses a file open for writing) for the
 * supervisor's lifetime. Under `bun run` it is zig-out/bin/mcrelay-worker.
 */
export function workerExecutable(): string {
  if (workerPath !== null) return workerPath;
  if (!embeddedWorkerPath.startsWith(EMBEDDED_PREFIX)) return (workerPath = embeddedWorkerPath);
  const bytes = readFileSync(embeddedWorkerPath);
  const fd = memfdCreate("mcrelay-worker");
  let readOnly: number;
  try {
    for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
    readOnly = openSync(`/proc/self/fd/${fd}`, "r");
  } finally {
    closeSync(fd);
  }
  // The child inherits the descriptor until its exec (close-on-exec applies after the program is
  // opened); its own /proc/self needs no access check, also when the supervisor is not dumpable.
  return (workerPath = `/proc/self/fd/${readOnly}`);
}

/**
 * memfd_create(2) through the C library the runtime already uses. "libc.so.6" names glibc, and
 * musl's loader resolves every "libc.*" name to itself, so the same name works on both.
 */
function memfdCreate(name: string): number {
  const libc = dlopen("libc.so.6", {
    memfd_create: { args: ["ptr", "u32"], returns: "i32" },
    __errno_location: { args: [], returns: "ptr" },
  });
  try {
    const cname = new TextEncoder().encode(`${name}\0`);
    const errno = (): number => new Int32Array(toArrayBuffer(libc.symbols.__errno_location()!, 0, 4))[0]!;
    let fd = libc.symbols.memfd_create(ptr(cname), MFD_CLOEXEC | MFD_EXEC);
    // Kernels before 6.3 refuse the unknown MFD_EXEC flag; their memfds are executable anyway.
    if (fd < 0 && errno() === EINVAL) fd = libc.symbols.memfd_create(ptr(cname), MFD_CLOEXEC);
    if (fd < 0) {
      const code = errno();
      throw new NativeError("memfd_create for the native library", code,
        `${errnoName(code)}; ` +
        "set MCRELAY_LIB to a copy of libmcrelay.so on an exec-allowed file system");
    }
    return fd;
  } finally {
    libc.close();
  }
}

function checkAbi(s: Symbols): void {
  const version = s.mcr_abi_version();
  if (version !== ABI_VERSION) {
    throw new NativeError("abi check", 0, `native library ABI ${version}, this build expects ${ABI_VERSION}`);
  }
  // Names and offsets, not only sizes: every struct field, counter name and limit the
  // library was built with must be the one the generated mirror says.
  const differences = describeDifferences(describeNative(s));
  if (differences.length > 0) {
    const more = differences.length > 5 ? ` (and ${differences.length - 5} more)` : "";
    throw new NativeError("abi check", 0, `library and TypeScript mirror differ: ${differences.slice(0, 5).join("; ")}${more}`);
  }
}

function describeNative(s: Symbols): string {
  const cap = ABI_DESCRIPTION.length * 2 + 4096;
  const buf = new Uint8Array(cap);
  const n = s.mcr_abi_describe(ptr(buf), cap);
  if (n > cap) throw new NativeError("abi check", 0, `native ABI description is ${n} bytes, more than the ${cap} expected`);
  return new TextDecoder().decode(buf.subarray(0, n));
}

function check(op: string, rc: number): number {
  if (rc < 0) throw NativeError.fromErrno(op, -rc);
  return rc;
}

function handleFrom(out: BigUint64Array): Pointer {
  const value = out[0]!;
  if (value === 0n) throw new NativeError("open", 0, "native open returned no handle");
  return Number(value) as Pointer;
}

/** Loads the library and runs the ABI check (called at start-up to fail early). */
export function loadNative(): void {
  lib();
}

export function abiVersion(): number {
  return lib().mcr_abi_version();
}

/** The loaded library's description of its ABI (what the load-time check compares). */
export function abiDescription(): string {
  return describeNative(lib());
}

/** Opens an AF_PACKET socket (needs CAP_NET_RAW); queues nothing until bound by a worker. */
export function packetOpen(): number {
  return check("open AF_PACKET socket", lib().mcr_packet_open());
}

/**
 * Ring, filter, bind and fanout on a packet socket (by the supervisor, before passing it), on a
 * native thread: allocating and clearing a ring takes milliseconds that the
 * supervisor's event loop (and its control socket) must not wait for.
 */
export async function packetSetupAsync(fd: number, setup: PacketSetup, what: string): Promise<RingGeometry> {
  const out = new BigUint64Array(1);
  check(`ring setup ${what}`, lib().mcr_packet_setup_start(fd, ptr(encodePacketSetup(setup)), ptr(out)));
  const job = handleFrom(out);
  const geo = new Uint32Array(4);
  for (;;) {
    const rc = lib().mcr_packet_setup_poll(job, ptr(geo));
    if (rc !== 1) {
      check(`ring setup ${what}`, rc);
      return decodeGeometry(geo);
    }
    await Bun.sleep(1);
  }
}

/**
 * Makes a set-up packet socket blank again (receiving nothing, its ring freed) so its worker
 * position can take another interface. Throws (EBUSY) while a worker still maps the ring.
 */
export async function packetResetAsync(fd: number): Promise<void> {
  const out = new BigUint64Array(1);
  check("reset packet socket", lib().mcr_packet_reset_start(fd, ptr(out)));
  const job = handleFrom(out);
  for (;;) {
    const rc = lib().mcr_packet_reset_poll(job);
    if (rc !== 1) return void check("reset packet socket", rc);
    await Bun.sleep(1);
  }
}

/** Closes a descriptor on a native thread (a packet socket's close can take tens of ms). */
export function fdCloseAsync(fd: number): void {
  lib().mcr_fd_close_async(fd);
}

/** The fanout program's hash, computed natively (to test the TypeScript twin against). */
export function fanoutHashNative(dst: number, port: number): number {
  return lib().mcr_fanout_hash(dst >>> 0, port);
}

export function fdClose(fd: number): void {
  check(`close fd ${fd}`, lib().mcr_fd_close(fd));
}

export function fdInherit(fd: number): void {
  check(`clear close-on-exec on fd ${fd}`, lib().mcr_fd_inherit(fd));
}

export function linkQuery(name: string): LinkInfo {
  const nameBytes = new TextEncoder().encode(name);
  const out = new Uint8Array(SIZE.linkInfo);
  check(`interface ${name}`, lib().mcr_link_query(ptr(nameBytes.length ? nameBytes : new Uint8Array(1)), nameBytes.length, ptr(out)));
  return decodeLinkInfo(out);
}

export function scmPair(): [number, number] {
  const out = new Int32Array(2);
  check("socketpair", lib().mcr_scm_pair(ptr(out)));
  return [out[0]!, out[1]!];
}

export function scmSend(fd: number, data: Uint8Array, fds: readonly number[] = [], dontWait = false): void {
  const fdArray = new Int32Array(Math.max(1, fds.length));
  fdArray.set(fds);
  check("send message with descriptors", lib().mcr_scm_send(fd, ptr(data), data.length, ptr(fdArray), fds.length, dontWait ? 1 : 0));
}

/** Raises the soft descriptor limit to the hard one; returns both. */
export function nofileRaise(): { soft: number; hard: number } {
  const out = new BigUint64Array(2);
  check("raise RLIMIT_NOFILE", lib().mcr_nofile_raise(ptr(out)));
  const clamp = (x: bigint) => (x > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(x));
  return { soft: clamp(out[0]!), hard: clamp(out[1]!) };
}

/** Who is at the other end of a connected Unix socket, as the kernel recorded it at connect(2). */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
  /** Supplementary groups (SO_PEERGROUPS). */
  groups: number[];
}

const PEER_GROUPS_MAX = 1024;

export function peerCred(fd: number): PeerCred {
  const out = new Uint32Array(3);
  check(`SO_PEERCRED of fd ${fd}`, lib().mcr_peer_cred(fd, ptr(out)));
  const groups = new Uint32Array(PEER_GROUPS_MAX);
  const n = check(`SO_PEERGROUPS of fd ${fd}`, lib().mcr_peer_groups(fd, ptr(groups), groups.length));
  return { pid: out[0]! | 0, uid: out[1]!, gid: out[2]!, groups: [...groups.subarray(0, n)] };
}

/**
 * Runs `look` (which reads /proc/<pid>) while the peer's pidfd pins the process, and returns
 * its result only if the process still runs afterwards, so a recycled pid cannot answer for
 * it. null when the process ended or the kernel has no SO_PEERPIDFD.
 */
export function withPeerPinned<T>(fd: number, look: () => T): T | null {
  const pidfd = lib().mcr_peer_pidfd(fd);
  if (pidfd < 0) return null;
  try {
    const result = look();
    return lib().mcr_pidfd_alive(pidfd) === 1 ? result : null;
  } finally {
    lib().mcr_fd_close(pidfd);
  }
}

/** Locks a directory for this process's life (flock LOCK_EX|LOCK_NB); throws EAGAIN when taken. */
export function dirLock(path: string): number {
  const p = new TextEncoder().encode(`${path}\0`);
  return check(`lock ${path}`, lib().mcr_dir_lock(ptr(p)));
}

export interface ScmMessage {
  data: Uint8Array;
  fds: number[];
}

/** One message from the socketpair, or null when none is waiting (dontWait). */
export function scmRecv(fd: number, dontWait: boolean, capacity = 64 * 1024): ScmMessage | null {
  const buf = new Uint8Array(capacity);
  const fds = new Int32Array(LIMITS.scmFdsMax);
  const count = new Uint32Array(1);
  const rc = lib().mcr_scm_recv(fd, ptr(buf), buf.length, ptr(fds), fds.length, ptr(count), dontWait ? 1 : 0);
  if (rc === -11 && dontWait) return null; // EAGAIN
  check("receive message with descriptors", rc);
  return { data: buf.slice(0, rc), fds: Array.from(fds.subarray(0, count[0]!)) };
}

/** Where the trace ring lies in the shared region (zig/dataplane/trace.zig). */
export interface TraceLayout {
  offset: number;
  bytes: number;
  recordBytes: number;
  recordsMax: number;
}

let traceLayoutCache: TraceLayout | null = null;
export function traceLayout(): TraceLayout {
  if (!traceLayoutCache) {
    const out = new Uint32Array(4);
    lib().mcr_trace_layout(ptr(out));
    traceLayoutCache = { offset: out[0]!, bytes: out[1]!, recordBytes: out[2]!, recordsMax: out[3]! };
  }
  return traceLayoutCache;
}

/**
 * A dataplane's counters and trace ring in shared memory: created and read by the supervisor,
 * written by the worker. The views are invalid after release(): check `released` first.
 */
export class SharedStats {
  readonly fd: number;
  readonly #ptr: Pointer;
  readonly words: BigUint64Array;
  /** The trace ring (header page, then records). */
  readonly trace: Uint8Array;
  #released = false;

  private constructor(fd: number, p: Pointer) {
    this.fd = fd;
    this.#ptr = p;
    this.words = new BigUint64Array(toArrayBuffer(p, 0, STATS_TOTAL_WORDS * 8));
    const t = traceLayout();
    this.trace = new Uint8Array(toArrayBuffer(p, t.offset, t.bytes));
  }

  get released(): boolean {
    return this.#released;
  }

  static create(): SharedStats {
    const fd = check("create counter memory", lib().mcr_shm_create());
    const out = new BigUint64Array(1);
    const rc = lib().mcr_shm_map(fd, ptr(out));
    if (rc < 0) {
      lib().mcr_fd_close(fd);
      check("map counter memory", rc);
    }
    return new SharedStats(fd, handleFrom(out));
  }

  /** Closes the descriptor (after it was passed on); the mapping stays. */
  closeFd(): void {
    lib().mcr_fd_close(this.fd);
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    lib().mcr_shm_unmap(this.#ptr);
  }
}

/** A worker's dataplane. Owns the packet socket from open on (closes it on close). */
export type { RingGeometry };

/** sd_notify(3): tells a Type=notify service manager about readiness, reload and stop. */
export function sdNotify(message: string): void {
  const path = process.env.NOTIFY_SOCKET;
  if (!path) return;
  const p = new TextEncoder().encode(path);
  const m = new TextEncoder().encode(message);
  check(`notify ${path}`, lib().mcr_notify(ptr(p), p.length, ptr(m), m.length));
}

const NL_BATCH = 256;

/** An rtnetlink socket subscribed to link and address changes (see zig/netlink.zig). */
export class NetlinkSocket {
  readonly #handle: Pointer;
  readonly #buf = new Uint8Array(NL_BATCH * SIZE.nlEvent);
  #closed = false;

  private constructor(handle: Pointer) {
    this.#handle = handle;
  }

  static open(): NetlinkSocket {
    const out = new BigUint64Array(1);
    check("netlink open", lib().mcr_nl_open(ptr(out)));
    return new NetlinkSocket(handleFrom(out));
  }

  /** Requests every link or every address; returns the dump's sequence number. */
  dump(what: "links" | "addresses"): number {
    return check(`netlink dump ${what}`, lib().mcr_nl_dump(this.#handle, what === "links" ? 1 : 2));
  }

  /** Every change waiting now (never blocks). */
  read(): NlEvent[] {
    const events: NlEvent[] = [];
    for (;;) {
      const n = check("netlink read", lib().mcr_nl_read(this.#handle, ptr(this.#buf), NL_BATCH));
      events.push(...decodeNlEvents(this.#buf, n, addrText));
      if (n < NL_BATCH) return events;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    lib().mcr_nl_close(this.#handle);
  }
}

function addrText(bytes: Uint8Array): string {
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) return `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return groups.join(":");
}

export type GenCounters = Record<(typeof GEN_COUNTERS)[number], bigint>;

export class Generator {
  readonly #handle: Pointer;
  readonly #counters: BigUint64Array;
  #closed = false;

  private constructor(handle: Pointer) {
    this.#handle = handle;
    const p = lib().mcr_gen_counters(handle);
    if (p === null) throw new NativeError("generator counters", 0, "no counters");
    this.#counters = new BigUint64Array(toArrayBuffer(p, 0, GEN_COUNTERS.length * 8));
  }

  static open(config: GenConfig): Generator {
    const out = new BigUint64Array(1);
    check("generator open", lib().mcr_gen_open(ptr(encodeGenConfig(config)), ptr(out)));
    return new Generator(handleFrom(out));
  }

  /** Sends for up to budgetMs; true when the count or duration is reached. */
  run(budgetMs: number): boolean {
    return check("generator send", lib().mcr_gen_run(this.#handle, budgetMs)) === 1;
  }

  counters(): GenCounters {
    return Object.fromEntries(GEN_COUNTERS.map((name, i) => [name, this.#counters[i]!])) as GenCounters;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    lib().mcr_gen_close(this.#handle);
  }
}

export type SinkGlobals = Record<(typeof SINK_GLOBAL_COUNTERS)[number], bigint>;
export type SinkStream = Record<(typeof SINK_STREAM_COUNTERS)[number], bigint>;

export class Sink {
  readonly #handle: Pointer;
  readonly #counters: BigUint64Array;
  #closed = false;

  private constructor(handle: Pointer) {
    this.#handle = handle;
    const p = lib().mcr_sink_counters(handle);
    if (p === null) throw new NativeError("sink counters", 0, "no counters");
    const words = SINK_GLOBAL_COUNTERS.length + LIMITS.sinkStreamsMax * SINK_STREAM_COUNTERS.length;
    this.#counters = new BigUint64Array(toArrayBuffer(p, 0, words * 8));
  }

  static open(config: SinkConfig): Sink {
    const out = new BigUint64Array(1);
    check("sink open", lib().mcr_sink_open(ptr(encodeSinkConfig(config)), ptr(out)));
    return new Sink(handleFrom(out));
  }

  /** Receives for up to budgetMs; returns datagrams received in this call. */
  run(budgetMs: number): number {
    return check("sink receive", lib().mcr_sink_run(this.#handle, budgetMs));
  }

  globals(): SinkGlobals {
    return Object.fromEntries(SINK_GLOBAL_COUNTERS.map((name, i) => [name, this.#counters[i]!])) as SinkGlobals;
  }

  /** Per-stream counters with percentiles filled in (summarizes first). */
  streams(): SinkStream[] {
    lib().mcr_sink_summarize(this.#handle);
    const out: SinkStream[] = [];
    const base = SINK_GLOBAL_COUNTERS.length;
    const stride = SINK_STREAM_COUNTERS.length;
    const usedIndex = SINK_STREAM_COUNTERS.indexOf("used");
    for (let s = 0; s < LIMITS.sinkStreamsMax; s++) {
      const at = base + s * stride;
      if (this.#counters[at + usedIndex] === 0n) continue;
      out.push(Object.fromEntries(SINK_STREAM_COUNTERS.map((name, i) => [name, this.#counters[at + i]!])) as SinkStream);
    }
    return out;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    lib().mcr_sink_close(this.#handle);
  }
}
