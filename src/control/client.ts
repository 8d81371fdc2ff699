// The client side of the control socket, used by every CLI verb that talks to the daemon.
import type { Socket } from "bun";
import * as v from "valibot";
import { EXIT, PermissionError } from "../errors.ts";
import { VERSION } from "../version.ts";
import { EventSchema, PROTOCOL_VERSION, ResponseSchema, mismatchMessage, type Command } from "./protocol.ts";
import { RESULT_SCHEMAS, schemaProblems, type ResultOf } from "./responses.ts";

export const DEFAULT_SOCKET = "/run/mcrelay/mcrelay.sock";

export function socketPath(flag?: string): string {
  return flag || process.env.MCRELAY_SOCKET || DEFAULT_SOCKET;
}

export class NotRunningError extends Error {
  override name = "NotRunningError";
  readonly exitCode = EXIT.notRunning;
}

/** The daemon answered with an error. */
export class RefusedError extends Error {
  override name = "RefusedError";
  readonly exitCode: number = EXIT.refused;
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

type Waiter = { resolve: (r: unknown) => void; reject: (e: Error) => void };

export class ControlClient {
  readonly #socket: Socket<undefined>;
  readonly #waiting = new Map<number, Waiter>();
  #nextId = 1;
  #buf = "";
  #closedError: Error | null = null;
  #onEvent: ((e: Record<string, unknown>) => void) | null = null;
  #closeWaiters: ((e: Error) => void)[] = [];
  daemonVersion = "";

  private constructor(socket: Socket<undefined>) {
    this.#socket = socket;
  }

  static async connect(path: string, timeoutMs = 3000): Promise<ControlClient> {
    let client!: ControlClient;
    let socket: Socket<undefined>;
    try {
      socket = await withTimeout(
        Bun.connect({
          unix: path,
          socket: {
            data(_s, chunk) {
              client.#onData(chunk);
            },
            close() {
              if (client) client.#onClose(new NotRunningError("the daemon closed the connection"));
            },
            error(_s, err) {
              if (client) client.#onClose(err);
            },
          },
        }),
        timeoutMs,
        `no answer from ${path} within ${timeoutMs} ms`,
      );
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === "EACCES" || code === "EPERM") throw new PermissionError(`cannot connect to ${path}: permission denied (are you in the socket's group?)`);
      if (code === "ENOENT" || code === "ECONNREFUSED" || code === "ENOTDIR") {
        throw new NotRunningError(`the daemon is not running (no control socket at ${path}; start it with 'mcrelay run')`);
      }
      throw new NotRunningError(`cannot connect to ${path}: ${(err as Error).message}`);
    }
    client = new ControlClient(socket);
    const hello = await client.request("hello", { client: `mcrelay ${VERSION}` });
    client.daemonVersion = hello.daemon;
    return client;
  }

  #onData(chunk: Uint8Array): void {
    this.#buf += new TextDecoder().decode(chunk);
    let nl: number;
    while ((nl = this.#buf.indexOf("\n")) >= 0) {
      const line = this.#buf.slice(0, nl);
      this.#buf = this.#buf.slice(nl + 1);
      this.#onLine(line);
    }
  }

  #onLine(line: string): void {
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch {
      return this.#onClose(new Error("the daemon sent something that is not JSON"));
    }
    if (raw && typeof raw === "object" && "event" in raw) {
      const ev = v.safeParse(EventSchema, raw);
      if (ev.success) this.#onEvent?.(ev.output.event);
      return;
    }
    const parsed = v.safeParse(ResponseSchema, raw);
    if (!parsed.success) return this.#onClose(new Error("the daemon sent a malformed response"));
    const res = parsed.output;
    if (res.v !== PROTOCOL_VERSION) {
      return this.#onClose(new RefusedError("protocol_mismatch", mismatchMessage(res.v, PROTOCOL_VERSION, "client")));
    }
    const waiter = typeof res.id === "number" ? this.#waiting.get(res.id) : undefined;
    if (!waiter) {
      // An error without an id is about the connection (e.g. a protocol mismatch).
      if (!res.ok) this.#onClose(new RefusedError(res.error.code, res.error.message));
      return;
    }
    this.#waiting.delete(res.id as number);
    if (res.ok) waiter.resolve(res.result);
    else waiter.reject(new RefusedError(res.error.code, res.error.message));
  }

  #onClose(err: Error): void {
    if (this.#closedError) return;
    this.#closedError = err;
    for (const w of this.#waiting.values()) w.reject(err);
    this.#waiting.clear();
    for (const w of this.#closeWaiters) w(err);
  }

  /** Subscribes to daemon events; resolves when the connection ends. */
  async events(onEvent: (e: Record<string, unknown>) => void): Promise<Error> {
    this.#onEvent = onEvent;
    const ended = new Promise<Error>((r) => this.#closeWaiters.push(r));
    await this.request("events");
    return ended;
  }

  /** Sends a request; resolves with the result, checked against the command's schema. */
  async request<C extends Command>(cmd: C, args?: unknown, timeoutMs = 10_000): Promise<ResultOf<C>> {
    const result = await this.#call(cmd, args, timeoutMs);
    const problems = schemaProblems(RESULT_SCHEMAS[cmd], result);
    if (problems.length) throw this.#unfitting(cmd, result, problems);
    return result as ResultOf<C>;
  }

  /**
   * An answer that does not fit: after an upgrade, a daemon still running the old version (the
   * protocol number did not change, a result's shape did). The versions come first, with what
   * to do; the schema's problems after them.
   */
  #unfitting(cmd: Command, result: unknown, problems: string[]): RefusedError {
    // hello itself may be what does not fit: its `daemon` field, if there is one, still says.
    const told = cmd === "hello" && result && typeof result === "object" ? (result as { daemon?: unknown }).daemon : undefined;
    const daemon = this.daemonVersion || (typeof told === "string" ? told : "");
    const misfit = `its answer to '${cmd}' does not fit this client's schema (${problems.join("; ")})`;
    if (daemon && daemon !== VERSION) {
      return new RefusedError("version_mismatch", `daemon is mcrelay ${daemon}, this client is ${VERSION}: restart the daemon (systemctl restart mcrelay); ${misfit}`);
    }
    const which = daemon ? `the daemon (mcrelay ${daemon}, as this client)` : `the daemon (version unknown; this client is ${VERSION})`;
    return new RefusedError("version_mismatch", `${which}: ${misfit}`);
  }

  #call(cmd: Command, args: unknown, timeoutMs: number): Promise<unknown> {
    if (this.#closedError) return Promise.reject(this.#closedError);
    const id = this.#nextId++;
    const msg = args === undefined ? { v: PROTOCOL_VERSION, id, cmd } : { v: PROTOCOL_VERSION, id, cmd, args };
    return withTimeout(
      new Promise((resolve, reject) => {
        this.#waiting.set(id, { resolve, reject });
        this.#socket.write(`${JSON.stringify(msg)}\n`);
      }),
      timeoutMs,
      `the daemon did not answer '${cmd}' within ${timeoutMs} ms`,
    );
  }

  close(): void {
    this.#onClose(new Error("closed"));
    this.#socket.end();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new NotRunningError(message)), ms);
    }),
  ]);
}
