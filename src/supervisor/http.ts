// The daemon's HTTP listener (`run --metrics ADDR:PORT`): /metrics (Prometheus text format),
// /healthz (the supervisor's loop is alive) and /readyz (every rule active, every worker up).
// One Bun.serve on the event loop; each request reads what is already in memory (counters in
// shared memory, rule states) and never waits on a worker.
import type { Server } from "bun";
import { formatListen, type ListenAddress } from "../config/listen.ts";
import { SystemError } from "../errors.ts";
import { logger } from "../log.ts";

const log = logger("http");

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

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

export class HttpEndpoint {
  readonly #server: Server<undefined>;

  private constructor(server: Server<undefined>) {
    this.#server = server;
  }

  /** Binds now (a bind failure throws, naming the address), then serves until stop(). */
  static start(at: ListenAddress, source: HttpSource): HttpEndpoint {
    let server: Server<undefined>;
    try {
      server = Bun.serve({
        hostname: at.host,
        port: at.port,
        reusePort: false,
        idleTimeout: 10,
        fetch(req) {
          if (req.method !== "GET" && req.method !== "HEAD") return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
          const path = new URL(req.url).pathname;
          switch (path) {
            case "/metrics":
              return new Response(source.metrics(), { headers: { "content-type": METRICS_CONTENT_TYPE } });
            case "/healthz": {
              const a = source.alive();
              return new Response(`${a.ok ? "ok" : "not ok"}: ${a.reason}\n`, { status: a.ok ? 200 : 503 });
            }
            case "/readyz": {
              const r = source.readiness();
              const body = r.ready ? "ready\n" : `not ready:\n${r.reasons.map((x) => `  ${x}\n`).join("")}`;
              return new Response(body, { status: r.ready ? 200 : 503 });
            }
            default:
              return new Response("not found (try /metrics, /healthz, /readyz)\n", { status: 404 });
          }
        },
        error(err) {
          log.error(`request failed: ${err.message}`);
          return new Response("internal error\n", { status: 500 });
        },
      });
    } catch (err) {
      throw new SystemError(`metrics listener ${formatListen(at)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    log.info(`metrics on http://${formatListen(at)}/metrics`);
    return new HttpEndpoint(server);
  }

  get port(): number {
    return this.#server.port ?? 0;
  }

  stop(): void {
    void this.#server.stop(true);
  }
}
