// The daemon's HTTP listener (`run --metrics`): /metrics (Prometheus text format), /healthz (the
// supervisor's loop is alive) and /readyz (every rule active, every worker up).
//
// A small HTTP/1.1 server of our own on Bun.listen, on the supervisor's event loop: GET and HEAD
// of three paths, one request per connection (`Connection: close`). Not Bun.serve, because
// whoever reaches the port must not be able to take the supervisor's descriptors, which it
// needs for packet sockets, worker restarts, control clients and the state file: Bun.serve has
// no connection cap, and its idle timer restarts at every byte, so a peer trickling a header
// byte every few seconds held a descriptor for ever (2,000 held connections took all 1,024 of a
// supervisor's descriptors and `ping` went unanswered; tests/integration/metrics-abuse.test.ts).
// Here every connection is bounded: HTTP_CONNECTIONS_MAX at once (one more is answered 503 and
// closed at once), headers complete within HTTP_HEADERS_DEADLINE_MS and HTTP_HEADER_BYTES_MAX,
// the answer written within HTTP_WRITE_DEADLINE_MS; and /metrics is rendered at most once per
// METRICS_CACHE_MS, so a client scraping in a tight loop costs one rendering a second.
import type { Socket, TCPSocketListener } from "bun";
import { formatListen, type ListenAddress } from "../config/listen.ts";
import { SystemError } from "../errors.ts";
import { logger } from "../log.ts";

const log = logger("http");

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_CONTENT_TYPE = "text/plain; charset=utf-8";

/** Connections served at once; one more gets a 503 and is closed at once. */
export const HTTP_CONNECTIONS_MAX = 32;
/** From accept to the end of the request's headers; then the connection is closed unanswered. */
export const HTTP_HEADERS_DEADLINE_MS = 5_000;
/** From the answer to its last byte written (a peer that does not read); then closed. */
export const HTTP_WRITE_DEADLINE_MS = 5_000;
/** Request line and headers together; more is answered 431. */
export const HTTP_HEADER_BYTES_MAX = 8 * 1024;
/** A rendering of /metrics is reused for this long (Prometheus scrapes every 10-60 s). */
export const METRICS_CACHE_MS = 1_000;

export interface Readiness {
  ready: boolean;
  /** Why not ready (empty when ready). */
  reasons: string[];
}

export interface HttpSource {
  metrics(): string;
  alive(): { ok: boolean; reason: string };
  readiness(): Readiness;
}

interface Answer {
  status: number;
  body: string | Uint8Array;
  contentType?: string;
  headers?: Record<string, string>;
}

/** One connection: its request's bytes until the headers end, then its answer being written. */
interface Conn {
  head: string;
  /** The encoded answer and how much of it is written; null until the request is read. */
  out: Uint8Array | null;
  written: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

const encoder = new TextEncoder();

function encodeAnswer(a: Answer, head: boolean): Uint8Array {
  const body = typeof a.body === "string" ? encoder.encode(a.body) : a.body;
  let text = `HTTP/1.1 ${a.status} ${REASONS[a.status] ?? ""}\r\ncontent-type: ${a.contentType ?? TEXT_CONTENT_TYPE}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n`;
  for (const [k, v] of Object.entries(a.headers ?? {})) text += `${k}: ${v}\r\n`;
  const top = encoder.encode(`${text}\r\n`);
  if (head) return top;
  const out = new Uint8Array(top.length + body.length);
  out.set(top);
  out.set(body, top.length);
  return out;
}

/** Written at once to a connection beyond the cap, before it is closed. */
const BUSY = encodeAnswer({ status: 503, body: "too many connections\n" }, false);

/** The request line's method and path, or the answer to give instead. */
function parseRequestLine(head: string): { method: string; path: string } | Answer {
  const line = head.slice(0, head.indexOf("\n")).replace(/\r$/, "");
  const parts = line.split(" ");
  if (parts.length !== 3 || !parts[2]!.startsWith("HTTP/1.")) return { status: 400, body: "bad request\n" };
  const [method, target] = parts as [string, string];
  let path: string;
  if (target.startsWith("/")) {
    path = target.replace(/[?#].*$/, "");
  } else {
    // The absolute form (`GET http://host/metrics`), which a proxy sends.
    try {
      path = new URL(target).pathname;
    } catch {
      return { status: 400, body: "bad request\n" };
    }
  }
  return { method, path };
}

export class HttpEndpoint {
  readonly #listener: TCPSocketListener<Conn>;

  private constructor(listener: TCPSocketListener<Conn>) {
    this.#listener = listener;
  }

  /** Binds now (a bind failure throws, naming the address), then serves until stop(). */
  static start(at: ListenAddress, source: HttpSource): HttpEndpoint {
    const router = new Router(source);
    const open = new Set<Socket<Conn>>();
    const finish = (sock: Socket<Conn>) => {
      const c = sock.data;
      while (c.out && c.written < c.out.length) {
        const n = sock.write(c.out, c.written);
        if (n <= 0) {
          if (n < 0) sock.terminate();
          return; // the rest when the peer has read (drain), or the write deadline closes it
        }
        c.written += n;
      }
      sock.end();
    };
    let listener: TCPSocketListener<Conn>;
    try {
      listener = Bun.listen<Conn>({
        hostname: at.host,
        port: at.port,
        socket: {
          open(sock) {
            sock.data = { head: "", out: null, written: 0, timer: undefined };
            if (open.size >= HTTP_CONNECTIONS_MAX) {
              sock.end(BUSY); // end() closes at once, written or not (measured): no descriptor kept
              return;
            }
            open.add(sock);
            // unref: a connection's deadline never keeps a stopping daemon alive.
            sock.data.timer = setTimeout(() => sock.terminate(), HTTP_HEADERS_DEADLINE_MS).unref();
          },
          data(sock, chunk) {
            const c = sock.data;
            if (c.out || !open.has(sock)) return; // the body or a pipelined request: not read
            // Searched from the new bytes on (and the 3 before): a header sent a byte at a time
            // costs a linear scan, not a quadratic one.
            const from = Math.max(0, c.head.length - 3);
            c.head += chunk.toString("latin1");
            const rest = c.head.slice(from).search(/\r?\n\r?\n/);
            const end = rest < 0 ? -1 : from + rest;
            if (end < 0 && c.head.length <= HTTP_HEADER_BYTES_MAX) return;
            const over = (end < 0 ? c.head.length : end) > HTTP_HEADER_BYTES_MAX;
            const req = over ? { status: 431, body: "request headers too large\n" } : parseRequestLine(c.head);
            const answer = "method" in req ? router.answer(req.method, req.path) : req;
            const head = "method" in req && req.method === "HEAD";
            c.head = "";
            c.out = encodeAnswer(answer, head);
            clearTimeout(c.timer);
            c.timer = setTimeout(() => sock.terminate(), HTTP_WRITE_DEADLINE_MS).unref();
            finish(sock);
          },
          drain(sock) {
            if (sock.data.out) finish(sock);
          },
          close(sock) {
            clearTimeout(sock.data?.timer);
            open.delete(sock);
          },
          error(sock) {
            // A reset by the peer and the like: the connection closes, nothing to log (a peer
            // could fill the log with them).
            sock.terminate();
          },
        },
      });
    } catch (err) {
      throw new SystemError(`metrics listener ${formatListen(at)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    log.info(`metrics on http://${formatListen(at)}/metrics`);
    return new HttpEndpoint(listener);
  }

  get port(): number {
    return this.#listener.port;
  }

  stop(): void {
    this.#listener.stop(true);
  }
}

/** The three paths and their answers; /metrics from a rendering at most METRICS_CACHE_MS old. */
class Router {
  #page: Uint8Array | null = null;
  #renderedAt = 0;

  constructor(private readonly source: HttpSource) {}

  answer(method: string, path: string): Answer {
    if (method !== "GET" && method !== "HEAD") return { status: 405, body: "method not allowed\n", headers: { allow: "GET, HEAD" } };
    try {
      switch (path) {
        case "/metrics":
          return { status: 200, body: this.#metrics(), contentType: METRICS_CONTENT_TYPE };
        case "/healthz": {
          const a = this.source.alive();
          return { status: a.ok ? 200 : 503, body: `${a.ok ? "ok" : "not ok"}: ${a.reason}\n` };
        }
        case "/readyz": {
          const r = this.source.readiness();
          return { status: r.ready ? 200 : 503, body: r.ready ? "ready\n" : `not ready:\n${r.reasons.map((x) => `  ${x}\n`).join("")}` };
        }
        default:
          return { status: 404, body: "not found (try /metrics, /healthz, /readyz)\n" };
      }
    } catch (err) {
      log.error(`request for ${path} failed: ${(err as Error).message}`);
      return { status: 500, body: "internal error\n" };
    }
  }

  #metrics(): Uint8Array {
    const now = performance.now();
    if (this.#page === null || now - this.#renderedAt >= METRICS_CACHE_MS) {
      this.#page = encoder.encode(this.source.metrics());
      this.#renderedAt = now;
    }
    return this.#page;
  }
}
