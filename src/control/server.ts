// The daemon's control socket: many clients at once, one request at a time per client, and no
// client able to block or break another. A malformed line gets an error response; a line over
// LINE_BYTES_MAX or a client that stops reading its responses is disconnected.
import { chmodSync, chownSync, existsSync, mkdirSync, unlinkSync } from "node:fs";
import { dirname } from "node:path";
import type { Socket, UnixSocketListener } from "bun";
import * as v from "valibot";
import { logger } from "../log.ts";
import { formatIssues } from "../config/rule-spec.ts";
import {
  CLIENT_BACKLOG_BYTES_MAX,
  COMMANDS,
  EnvelopeSchema,
  LINE_BYTES_MAX,
  PROTOCOL_VERSION,
  RequestSchema,
  mismatchMessage,
  type ErrorCode,
  type Request,
  type Response,
} from "./protocol.ts";

const log = logger("control");

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
}

export type Handler = (req: Request, ctx: RequestContext) => Promise<unknown>;

interface Conn {
  buf: Uint8Array[];
  bufBytes: number;
  hello: boolean;
  chain: Promise<void>;
  backlog: Uint8Array[];
  backlogBytes: number;
  closed: boolean;
  /** The id of the `events` request when subscribed. */
  subscription: string | number | null;
  /** Requests read and not yet answered; past REQUESTS_QUEUED_MAX the client is dropped. */
  queued: number;
}

/** A client pipelining more requests than this without reading answers is disconnected. */
export const REQUESTS_QUEUED_MAX = 1024;

export class DaemonRunningError extends Error {}

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

export class ControlServer {
  readonly path: string;
  readonly #listener: UnixSocketListener<Conn>;
  readonly #conns = new Set<Socket<Conn>>();

  private constructor(path: string, listener: UnixSocketListener<Conn>) {
    this.path = path;
    this.#listener = listener;
  }

  /** Throws DaemonRunningError when another daemon answers on `path`. */
  static async ensureFree(path: string): Promise<void> {
    if (existsSync(path) && (await alive(path))) throw new DaemonRunningError(`another daemon answers on ${path}`);
  }

  static async start(path: string, handler: Handler, opts: { mode?: number; gid?: number } = {}): Promise<ControlServer> {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    if (existsSync(path)) {
      if (await alive(path)) throw new DaemonRunningError(`another daemon answers on ${path}`);
      log.info(`replacing stale socket ${path}`);
      unlinkSync(path);
    }
    let server: ControlServer;
    const listener = Bun.listen<Conn>({
      unix: path,
      socket: {
        open(socket) {
          socket.data = { buf: [], bufBytes: 0, hello: false, chain: Promise.resolve(), backlog: [], backlogBytes: 0, closed: false, subscription: null, queued: 0 };
          server.#conns.add(socket);
        },
        data(socket, chunk) {
          server.#onData(socket, chunk, handler);
        },
        drain(socket) {
          server.#flush(socket);
        },
        close(socket) {
          socket.data.closed = true;
          server.#conns.delete(socket);
        },
        error(socket, err) {
          log.debug(`client error: ${err.message}`);
        },
      },
    });
    server = new ControlServer(path, listener);
    chmodSync(path, opts.mode ?? 0o660);
    if (opts.gid !== undefined) chownSync(path, process.getuid?.() ?? 0, opts.gid);
    return server;
  }

  get clients(): number {
    return this.#conns.size;
  }

  /** Sends an event to every subscribed client (a client that does not read is dropped). */
  publish(event: Record<string, unknown>): void {
    for (const socket of this.#conns) {
      const id = socket.data.subscription;
      if (id === null || socket.data.closed) continue;
      this.#write(socket, `${JSON.stringify({ v: PROTOCOL_VERSION, id, event })}\n`);
    }
  }

  stop(): void {
    for (const s of this.#conns) s.end();
    this.#listener.stop(true);
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }

  #onData(socket: Socket<Conn>, chunk: Uint8Array, handler: Handler): void {
    const c = socket.data;
    if (c.closed) return;
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      if (chunk[i] !== 0x0a) continue;
      const piece = chunk.subarray(start, i);
      start = i + 1;
      const line = c.bufBytes ? concat([...c.buf, piece]) : piece;
      c.buf = [];
      c.bufBytes = 0;
      if (line.length > LINE_BYTES_MAX) return this.#refuseLarge(socket);
      if (c.closed) return;
      const text = new TextDecoder().decode(line);
      if (++c.queued > REQUESTS_QUEUED_MAX) {
        log.warn(`client has ${REQUESTS_QUEUED_MAX} requests waiting; disconnecting it`);
        c.closed = true;
        socket.end();
        return;
      }
      // One request at a time per client, in order; other clients are not affected.
      c.chain = c.chain.then(() => this.#handleLine(socket, text, handler)).finally(() => {
        c.queued -= 1;
      });
    }
    if (start < chunk.length) {
      const rest = chunk.slice(start);
      c.buf.push(rest);
      c.bufBytes += rest.length;
      if (c.bufBytes > LINE_BYTES_MAX) this.#refuseLarge(socket);
    }
  }

  #refuseLarge(socket: Socket<Conn>): void {
    this.#send(socket, { v: PROTOCOL_VERSION, id: null, ok: false, error: { code: "too_large", message: `line longer than ${LINE_BYTES_MAX} bytes; disconnecting` } });
    socket.data.buf = [];
    socket.data.bufBytes = 0;
    socket.data.closed = true; // ignore whatever else is already on its way
    socket.end();
  }

  async #handleLine(socket: Socket<Conn>, text: string, handler: Handler): Promise<void> {
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
    const parsed = v.safeParse(RequestSchema, raw);
    if (!parsed.success) return this.#error(socket, id, "bad_request", formatIssues(parsed.issues).join("; "));
    const req = parsed.output;
    if (!socket.data.hello && req.cmd !== "hello") return this.#error(socket, req.id, "hello_required", "the first request of a connection is 'hello'");
    if (req.cmd === "hello") socket.data.hello = true;
    const ctx: RequestContext = {
      subscribe: () => {
        socket.data.subscription = req.id;
      },
    };
    try {
      const result = await handler(req, ctx);
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
    const bytes = new TextEncoder().encode(line);
    if (c.backlogBytes > 0) {
      c.backlog.push(bytes);
      c.backlogBytes += bytes.length;
    } else {
      const written = socket.write(bytes);
      if (written < bytes.length) {
        const rest = bytes.subarray(Math.max(0, written));
        c.backlog.push(rest);
        c.backlogBytes += rest.length;
      }
    }
    if (c.backlogBytes > CLIENT_BACKLOG_BYTES_MAX) {
      log.warn("client does not read its responses; disconnecting it");
      c.backlog = [];
      c.backlogBytes = 0;
      c.closed = true; // its queued requests are not run
      socket.end();
    }
  }

  #flush(socket: Socket<Conn>): void {
    const c = socket.data;
    while (c.backlog.length > 0) {
      const head = c.backlog[0]!;
      const written = socket.write(head);
      if (written < head.length) {
        c.backlog[0] = head.subarray(Math.max(0, written));
        c.backlogBytes -= Math.max(0, written);
        return;
      }
      c.backlog.shift();
      c.backlogBytes -= head.length;
    }
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
