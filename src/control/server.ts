// The daemon's control socket: many clients at once, none able to block another, exhaust the
// supervisor's memory or descriptors, or change anything it has no right to.
//
// Bounds (constants in protocol.ts, documented in docs/operations.md):
// - at most `clientsMax` connections; the last ADMIN_SLOTS_RESERVED of them only for peers with
//   the admin right; a refused connection gets one `busy` line and is closed;
// - per connection, one input buffer of at most INPUT_BYTES_MAX (then reading pauses: the
//   kernel's socket buffer holds the rest and the client blocks), a line over LINE_BYTES_MAX is
//   `too_large`, an incomplete line older than PARTIAL_LINE_TIMEOUT_MS and a connection without
//   `hello` after HELLO_TIMEOUT_MS are closed with `timeout`;
// - one request in flight per connection, and none started while its answers are unread: a
//   client that does not read holds at most one answer, and is closed when it has not taken a
//   byte for WRITE_STALL_MS; events for a subscriber that lags EVENTS_BACKLOG_BYTES_MAX behind
//   are dropped and counted, and it is told how many when it catches up;
// - requests of all connections are taken round-robin, one per connection per round, and the
//   event loop gets a turn every PUMP_SLICE_MS, so a flood on one connection cannot delay a
//   `ping` on another by more than a round.
// Every connection's peer is identified with SO_PEERCRED at accept (access.ts); requests that
// change something need the admin right (a refusal is logged here; the daemon's audit log
// records each change with the peer's uid and pid).
import { chownSync, lstatSync, mkdirSync, unlinkSync } from "node:fs";
import { dirname } from "node:path";
import type { Socket, UnixSocketListener } from "bun";
import * as v from "valibot";
import { LogBudget, logger } from "../log.ts";
import { formatIssues } from "../config/rule-spec.ts";
import { peerRights, type AccessPolicy, type Peer } from "./access.ts";
import { RESULT_SCHEMAS, schemaProblems, type ResultOf } from "./responses.ts";
import {
  ADMIN_SLOTS_RESERVED,
  CLIENTS_MAX_DEFAULT,
  COMMANDS,
  EVENTS_BACKLOG_BYTES_MAX,
  EnvelopeSchema,
  HELLO_TIMEOUT_MS,
  INPUT_BYTES_MAX,
  LINE_BYTES_MAX,
  PARTIAL_LINE_TIMEOUT_MS,
  PROTOCOL_VERSION,
  PUMP_SLICE_MS,
  RequestSchema,
  WRITE_STALL_MS,
  isChange,
  mismatchMessage,
  type Command,
  type ErrorCode,
  type Request,
  type Response,
} from "./protocol.ts";

const log = logger("control");
/** Log lines a second that clients can cause at will (refused changes, stalled readers); see LogBudget. */
const CLIENT_LOG_LINES_PER_S = 10;

export class ControlError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export interface RequestContext {
  /** Keeps the connection subscribed to events, sent with this request's id. */
  subscribe(): void;
  /** Who sent the request (null for a server started without an access policy). */
  peer: Peer | null;
}

/** Answers a request with the result its command's schema describes (control/responses.ts). */
export type Handler = (req: Request, ctx: RequestContext) => Promise<ResultOf<Command>>;

interface Conn {
  /** Bytes read and not yet taken as lines: inbuf[inStart, inEnd). */
  inbuf: Uint8Array;
  inStart: number;
  inEnd: number;
  /** Position of the first newline at or after inStart, -1 when none; searched from `scanned`. */
  newline: number;
  scanned: number;
  /** When the incomplete line at the end of the buffer began (0: there is none). */
  partialSince: number;
  paused: boolean;
  hello: boolean;
  openedAt: number;
  /** A request of this connection is being handled. */
  busy: boolean;
  /** In the server's ready queue. */
  queued: boolean;
  backlog: Uint8Array[];
  backlogBytes: number;
  /** Last time the client took bytes (or the backlog became non-empty). */
  lastProgress: number;
  closed: boolean;
  /** The id of the `events` request when subscribed. */
  subscription: string | number | null;
  eventsDropped: number;
  peer: Peer | null;
}

export class DaemonRunningError extends Error {}
/** The socket path is taken by something that is not a socket; it is never deleted. */
export class SocketPathError extends Error {}

/** Is something answering on this socket path? */
async function alive(path: string): Promise<boolean> {
  try {
    const s = await Bun.connect({ unix: path, socket: { data() {}, error() {} } });
    s.end();
    return true;
  } catch {
    return false;
  }
}

/** What is at `path`: nothing, a socket, or something else (never replaced). */
function pathKind(path: string): "none" | "socket" | "other" {
  try {
    const st = lstatSync(path);
    return st.isSocket() ? "socket" : "other";
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "none";
    throw err;
  }
}

export interface ServerOptions {
  /** File mode of the socket (default 0660), applied atomically through the umask at bind. */
  mode?: number;
  /** Group of the socket file. */
  gid?: number;
  /** Connections at once (default CLIENTS_MAX_DEFAULT). */
  clientsMax?: number;
  /** Who may connect and who may change things; without it every peer has every right. */
  access?: AccessPolicy;
  /** Shorter timeouts for tests (default: the protocol's constants). */
  timeouts?: { partialLineMs?: number; helloMs?: number; writeStallMs?: number; sweepMs?: number };
}

export interface ServerStats {
  clients: number;
  refused: number;
  timeouts: number;
  stalled: number;
  events_dropped: number;
}

export class ControlServer {
  readonly path: string;
  readonly clientsMax: number;
  #listener!: UnixSocketListener<Conn>;
  readonly #conns = new Set<Socket<Conn>>();
  readonly #handler: Handler;
  readonly #access: AccessPolicy | undefined;
  /** Lines a client causes at will (refusals, stalls): CLIENT_LOG_LINES_PER_S a second at most. */
  readonly #clientLogBudget = new LogBudget(CLIENT_LOG_LINES_PER_S);
  /** Connections with a complete line waiting, in the order they became ready. */
  #ready: Socket<Conn>[] = [];
  #pumpScheduled = false;
  readonly #sweep: ReturnType<typeof setInterval>;
  readonly #stats = { refused: 0, timeouts: 0, stalled: 0, events_dropped: 0 };
  readonly #partialLineMs: number;
  readonly #helloMs: number;
  readonly #writeStallMs: number;

  private constructor(path: string, handler: Handler, opts: ServerOptions) {
    this.path = path;
    this.#handler = handler;
    this.#access = opts.access;
    this.clientsMax = Math.max(1, opts.clientsMax ?? CLIENTS_MAX_DEFAULT);
    this.#partialLineMs = opts.timeouts?.partialLineMs ?? PARTIAL_LINE_TIMEOUT_MS;
    this.#helloMs = opts.timeouts?.helloMs ?? HELLO_TIMEOUT_MS;
    this.#writeStallMs = opts.timeouts?.writeStallMs ?? WRITE_STALL_MS;
    // Created once: timeouts of half-written lines, missing hellos and unread answers.
    this.#sweep = setInterval(() => this.#sweepIdle(), opts.timeouts?.sweepMs ?? 1000);
    this.#sweep.unref?.();
  }

  /** Throws DaemonRunningError when another daemon answers on `path`, SocketPathError when a non-socket file is there. */
  static async ensureFree(path: string): Promise<void> {
    const kind = pathKind(path);
    if (kind === "other") throw new SocketPathError(`${path} exists and is not a socket; refusing to replace it (remove it or choose another --socket)`);
    if (kind === "socket" && (await alive(path))) throw new DaemonRunningError(`another daemon answers on ${path}`);
  }

  static async start(path: string, handler: Handler, opts: ServerOptions = {}): Promise<ControlServer> {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    await ControlServer.ensureFree(path);
    if (pathKind(path) === "socket") {
      log.info(`replacing stale socket ${path}`);
      unlinkSync(path);
    }
    const server = new ControlServer(path, handler, opts);
    const mode = opts.mode ?? 0o660;
    // The socket file is created by bind(2) with 0777 & ~umask: set the umask around it, so
    // there is no moment at which the socket has a wider mode than asked.
    const oldMask = process.umask(0o777 & ~mode);
    try {
      server.#listener = Bun.listen<Conn>({
        unix: path,
        socket: {
          open: (socket) => server.#onOpen(socket),
          data: (socket, chunk) => server.#onData(socket, chunk),
          drain: (socket) => server.#flush(socket),
          close: (socket) => server.#onClose(socket),
          error: (_socket, err) => log.debug(`client error: ${err.message}`),
        },
      });
    } catch (err) {
      clearInterval(server.#sweep);
      throw err;
    } finally {
      process.umask(oldMask);
    }
    // chown after bind: until then the group is the daemon's own, which is narrower.
    if (opts.gid !== undefined) chownSync(path, process.getuid?.() ?? 0, opts.gid);
    return server;
  }

  get clients(): number {
    return this.#conns.size;
  }

  stats(): ServerStats {
    return { clients: this.#conns.size, ...this.#stats };
  }

  /** Sends an event to every subscribed client; a client lagging too far behind loses events (counted). */
  publish(event: Record<string, unknown>): void {
    for (const socket of this.#conns) {
      const c = socket.data;
      if (c.subscription === null || c.closed) continue;
      if (c.backlogBytes > EVENTS_BACKLOG_BYTES_MAX) {
        c.eventsDropped += 1;
        this.#stats.events_dropped += 1;
        continue;
      }
      this.#write(socket, `${JSON.stringify({ v: PROTOCOL_VERSION, id: c.subscription, event })}\n`);
    }
  }

  stop(): void {
    clearInterval(this.#sweep);
    for (const s of this.#conns) s.end();
    this.#listener.stop(true);
    try {
      if (pathKind(this.path) === "socket") unlinkSync(this.path);
    } catch {
      // already gone
    }
  }

  #onOpen(socket: Socket<Conn>): void {
    const now = Date.now();
    socket.data = {
      inbuf: EMPTY,
      inStart: 0,
      inEnd: 0,
      newline: -1,
      scanned: 0,
      partialSince: 0,
      paused: false,
      hello: false,
      openedAt: now,
      busy: false,
      queued: false,
      backlog: [],
      backlogBytes: 0,
      lastProgress: now,
      closed: false,
      subscription: null,
      eventsDropped: 0,
      peer: null,
    };
    let peer: Peer | null = null;
    if (this.#access) {
      try {
        peer = peerRights(socketFd(socket), this.#access);
      } catch (err) {
        return this.#refuse(socket, "forbidden", `cannot identify the connecting process: ${(err as Error).message}`);
      }
      if (peer.rights === "none") return this.#refuse(socket, "forbidden", `uid ${peer.uid} may not use this socket`);
    }
    socket.data.peer = peer;
    const admin = !peer || peer.rights === "admin";
    const limit = admin ? this.clientsMax : Math.max(1, this.clientsMax - ADMIN_SLOTS_RESERVED);
    if (this.#conns.size >= limit) {
      this.#stats.refused += 1;
      if (this.#stats.refused === 1 || this.#stats.refused % 1000 === 0) log.warn(`too many clients (${this.#conns.size}); refusing connections (${this.#stats.refused} so far)`);
      return this.#refuse(socket, "busy", `too many clients (${this.#conns.size} of ${this.clientsMax}); try again later`);
    }
    this.#conns.add(socket);
  }

  /** One error line, then the connection is closed; nothing it sends is read. */
  #refuse(socket: Socket<Conn>, code: ErrorCode, message: string): void {
    socket.data.closed = true;
    socket.write(`${JSON.stringify({ v: PROTOCOL_VERSION, id: null, ok: false, error: { code, message } })}\n`);
    socket.end();
  }

  #onClose(socket: Socket<Conn>): void {
    const c = socket.data;
    c.closed = true;
    c.inbuf = EMPTY;
    c.backlog = [];
    c.backlogBytes = 0;
    this.#conns.delete(socket);
  }

  #onData(socket: Socket<Conn>, chunk: Uint8Array): void {
    const c = socket.data;
    if (c.closed) return;
    this.#append(c, chunk);
    // No complete line: the incomplete one may not exceed the line limit.
    if (c.newline < 0 && c.inEnd - c.inStart > LINE_BYTES_MAX) return this.#refuseLarge(socket);
    // The incomplete line at the end began in this chunk when it holds a newline, else earlier.
    const last = chunk.lastIndexOf(0x0a);
    if (last >= 0) c.partialSince = last === chunk.length - 1 ? 0 : Date.now();
    else if (c.partialSince === 0) c.partialSince = Date.now();
    if (c.newline >= 0 && c.inEnd - c.inStart >= INPUT_BYTES_MAX && !c.paused) {
      // Back-pressure: stop reading until the complete lines waiting are handled. (An
      // incomplete line alone never pauses: it is cut off past LINE_BYTES_MAX instead.)
      c.paused = true;
      socket.pause();
    }
    this.#schedule(socket);
  }

  /** Appends to the input buffer, compacting or growing it (never past what was read). */
  #append(c: Conn, chunk: Uint8Array): void {
    const used = c.inEnd - c.inStart;
    if (c.inEnd + chunk.length > c.inbuf.length) {
      const need = used + chunk.length;
      if (need <= c.inbuf.length && c.inStart > 0) {
        c.inbuf.copyWithin(0, c.inStart, c.inEnd);
      } else {
        const grown = new Uint8Array(Math.max(need, Math.min(INPUT_BYTES_MAX, Math.max(256, c.inbuf.length * 2))));
        grown.set(c.inbuf.subarray(c.inStart, c.inEnd));
        c.inbuf = grown;
      }
      if (c.newline >= 0) c.newline -= c.inStart;
      c.scanned = Math.max(0, c.scanned - c.inStart);
      c.inStart = 0;
      c.inEnd = used;
    }
    c.inbuf.set(chunk, c.inEnd);
    c.inEnd += chunk.length;
    this.#findNewline(c);
  }

  #findNewline(c: Conn): void {
    if (c.newline >= 0) return;
    const from = Math.max(c.scanned, c.inStart);
    const at = c.inbuf.subarray(from, c.inEnd).indexOf(0x0a);
    c.newline = at < 0 ? -1 : from + at;
    c.scanned = at < 0 ? c.inEnd : from + at;
  }

  /** The next complete line, taken out of the buffer; null when there is none or it is too long. */
  #takeLine(socket: Socket<Conn>): string | null {
    const c = socket.data;
    if (c.closed || c.newline < 0) return null;
    const line = c.inbuf.subarray(c.inStart, c.newline);
    if (line.length > LINE_BYTES_MAX) {
      this.#refuseLarge(socket);
      return null;
    }
    const text = DECODER.decode(line);
    c.inStart = c.newline + 1;
    c.newline = -1;
    if (c.inStart === c.inEnd) {
      c.inStart = c.inEnd = c.scanned = 0;
      // Give a large buffer back once it is empty; small ones are kept for the next line.
      if (c.inbuf.length > 4096) c.inbuf = EMPTY;
    }
    this.#findNewline(c);
    if (c.paused && (c.newline < 0 || c.inEnd - c.inStart < INPUT_BYTES_MAX / 2)) {
      c.paused = false;
      socket.resume();
    }
    return text;
  }

  /** Queues a connection for the next round if it has a line, nothing in flight and nothing unread. */
  #schedule(socket: Socket<Conn>): void {
    const c = socket.data;
    if (c.closed || c.busy || c.queued || c.backlogBytes > 0 || c.newline < 0) return;
    c.queued = true;
    this.#ready.push(socket);
    if (!this.#pumpScheduled) {
      this.#pumpScheduled = true;
      setImmediate(() => this.#pump());
    }
  }

  /** One round: a request from each ready connection, until the slice is used up; then I/O gets a turn. */
  #pump(): void {
    this.#pumpScheduled = false;
    const round = this.#ready;
    this.#ready = [];
    const start = performance.now();
    let i = 0;
    while (i < round.length) {
      const socket = round[i++]!;
      socket.data.queued = false;
      const line = this.#takeLine(socket);
      if (line !== null) void this.#run(socket, line);
      if (performance.now() - start > PUMP_SLICE_MS) break;
    }
    // Those not reached go first next time; connections that became ready meanwhile follow.
    if (i < round.length) this.#ready = [...round.slice(i), ...this.#ready];
    if (this.#ready.length > 0 && !this.#pumpScheduled) {
      this.#pumpScheduled = true;
      setImmediate(() => this.#pump());
    }
  }

  async #run(socket: Socket<Conn>, text: string): Promise<void> {
    const c = socket.data;
    c.busy = true;
    try {
      await this.#handleLine(socket, text);
    } catch (err) {
      log.error("control request failed unexpectedly:", err);
    } finally {
      c.busy = false;
      this.#schedule(socket);
    }
  }

  #refuseLarge(socket: Socket<Conn>): void {
    this.#send(socket, { v: PROTOCOL_VERSION, id: null, ok: false, error: { code: "too_large", message: `line longer than ${LINE_BYTES_MAX} bytes; disconnecting` } });
    this.#drop(socket);
  }

  /** Closes a connection and forgets what it sent and what it was sent. */
  #drop(socket: Socket<Conn>): void {
    const c = socket.data;
    c.inbuf = EMPTY;
    c.inStart = c.inEnd = c.scanned = 0;
    c.newline = -1;
    c.closed = true; // ignore whatever else is already on its way
    socket.end();
  }

  #sweepIdle(): void {
    const now = Date.now();
    for (const socket of this.#conns) {
      const c = socket.data;
      if (c.closed) continue;
      if (c.partialSince !== 0 && now - c.partialSince > this.#partialLineMs) {
        this.#stats.timeouts += 1;
        this.#error(socket, null, "timeout", `incomplete request for ${this.#partialLineMs / 1000} s; disconnecting`);
        this.#drop(socket);
      } else if (!c.hello && !c.busy && c.newline < 0 && now - c.openedAt > this.#helloMs) {
        this.#stats.timeouts += 1;
        this.#error(socket, null, "timeout", `no hello within ${this.#helloMs / 1000} s; disconnecting`);
        this.#drop(socket);
      } else if (c.backlogBytes > 0 && now - c.lastProgress > this.#writeStallMs) {
        this.#stats.stalled += 1;
        this.#clientLogBudget.spend((more) => log.warn(`client (uid ${c.peer?.uid ?? "?"}, pid ${c.peer?.pid ?? "?"}) has not read its answers for ${this.#writeStallMs / 1000} s; disconnecting it${more}`));
        c.backlog = [];
        c.backlogBytes = 0;
        this.#drop(socket);
      }
    }
  }

  async #handleLine(socket: Socket<Conn>, text: string): Promise<void> {
    if (socket.data.closed || text.trim() === "") return;
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      return this.#error(socket, null, "bad_json", "not a JSON document");
    }
    const env = v.safeParse(EnvelopeSchema, raw);
    const id = env.success && env.output.id !== undefined ? env.output.id : null;
    if (!env.success) return this.#error(socket, id, "bad_request", `every message needs a numeric protocol version 'v' (${PROTOCOL_VERSION}) and an 'id'`);
    if (env.output.v !== PROTOCOL_VERSION) {
      this.#error(socket, id, "protocol_mismatch", mismatchMessage(env.output.v, PROTOCOL_VERSION, "daemon"));
      socket.end();
      return;
    }
    const cmd = env.output.cmd;
    if (typeof cmd !== "string" || !(COMMANDS as readonly string[]).includes(cmd)) {
      return this.#error(socket, id, "unknown_command", `unknown command '${String(cmd)}' (known: ${COMMANDS.join(", ")})`);
    }
    // Hello and the right to change things come from the envelope, before the arguments are
    // checked: checking them costs time and memory that a peer who may not send them must not get.
    if (!socket.data.hello && cmd !== "hello") return this.#error(socket, id, "hello_required", "the first request of a connection is 'hello'");
    const peer = socket.data.peer;
    if (isChange(env.output)) {
      if (peer && peer.rights !== "admin") {
        this.#clientLogBudget.spend((more) => log.warn(`refused ${cmd} from uid ${peer.uid} pid ${peer.pid}: not an administrator${more}`));
        return this.#error(socket, id, "forbidden", `'${cmd}' changes the daemon: it needs root, CAP_NET_ADMIN or membership of the admin group (uid ${peer.uid} has none)`);
      }
    }
    const parsed = v.safeParse(RequestSchema, raw);
    if (!parsed.success) return this.#error(socket, id, "bad_request", formatIssues(parsed.issues).join("; "));
    const req = parsed.output;
    if (req.cmd === "hello") socket.data.hello = true;
    const ctx: RequestContext = {
      subscribe: () => {
        socket.data.subscription = req.id;
      },
      peer,
    };
    try {
      const result = await this.#handler(req, ctx);
      // The answer is checked against its command's schema: a field the schema does not
      // describe (or a wrong type) is a bug, reported as one instead of confusing the client.
      const problems = schemaProblems(RESULT_SCHEMAS[req.cmd], result);
      if (problems.length) {
        log.error(`answer to ${req.cmd} does not fit its schema: ${problems.join("; ")}`);
        return this.#error(socket, req.id, "internal", `the answer to '${req.cmd}' does not fit its schema: ${problems[0]}`);
      }
      this.#send(socket, { v: PROTOCOL_VERSION, id: req.id, ok: true, result });
    } catch (err) {
      if (err instanceof ControlError) return this.#error(socket, req.id, err.code, err.message);
      log.error(`request ${req.cmd} failed:`, err);
      this.#error(socket, req.id, "internal", (err as Error).message);
    }
  }

  #error(socket: Socket<Conn>, id: string | number | null, code: ErrorCode, message: string): void {
    this.#send(socket, { v: PROTOCOL_VERSION, id, ok: false, error: { code, message } });
  }

  #send(socket: Socket<Conn>, response: Response): void {
    this.#write(socket, `${JSON.stringify(response)}\n`);
  }

  #write(socket: Socket<Conn>, line: string): void {
    const c = socket.data;
    if (c.closed) return;
    const bytes = ENCODER.encode(line);
    if (c.backlogBytes > 0) {
      c.backlog.push(bytes);
      c.backlogBytes += bytes.length;
      return;
    }
    const written = socket.write(bytes);
    if (written < bytes.length) {
      const rest = bytes.subarray(Math.max(0, written));
      c.backlog.push(rest);
      c.backlogBytes += rest.length;
      c.lastProgress = Date.now();
    }
  }

  #flush(socket: Socket<Conn>): void {
    const c = socket.data;
    if (c.closed) return;
    while (c.backlog.length > 0) {
      const head = c.backlog[0]!;
      const written = socket.write(head);
      if (written > 0) c.lastProgress = Date.now();
      if (written < head.length) {
        c.backlog[0] = head.subarray(Math.max(0, written));
        c.backlogBytes -= Math.max(0, written);
        return;
      }
      c.backlog.shift();
      c.backlogBytes -= head.length;
    }
    if (c.eventsDropped > 0 && c.subscription !== null) {
      const dropped = c.eventsDropped;
      c.eventsDropped = 0;
      this.#write(socket, `${JSON.stringify({ v: PROTOCOL_VERSION, id: c.subscription, event: { kind: "events-dropped", dropped, time: new Date().toISOString() } })}\n`);
    }
    this.#schedule(socket);
  }
}

/**
 * The descriptor of an accepted connection. Bun's Socket has an `fd` getter that its type
 * declarations do not list (Bun 1.4.5); a missing one is an error, never a guess.
 */
function socketFd(socket: Socket<Conn>): number {
  const fd = (socket as unknown as { fd?: unknown }).fd;
  if (typeof fd !== "number" || fd < 0) throw new Error("this Bun does not expose the connection's descriptor");
  return fd;
}

const EMPTY = new Uint8Array(0);
const DECODER = new TextDecoder();
const ENCODER = new TextEncoder();
