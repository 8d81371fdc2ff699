// The control socket server against a temporary path with a fake handler: many clients at
// once, none able to block or break another (slow requests, slow writers, clients that never
// read), oversized lines refused, a stale socket replaced and a live one respected.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { PROTOCOL_VERSION as P } from "../../src/version.ts";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { ControlError, ControlServer, DaemonRunningError, SocketPathError, type RequestContext, type ServerOptions } from "../../src/control/server.ts";
import { EVENTS_BACKLOG_BYTES_MAX, LINE_BYTES_MAX, type Command, type Request } from "../../src/control/protocol.ts";
import type { ResultOf } from "../../src/control/responses.ts";
import { helloClient, percentile, RawClient, TempDir } from "../support/daemon-harness.ts";
import { mcrelayCommand } from "../support/relay-harness.ts";

let dir: TempDir;
let server: ControlServer | null = null;
let path: string;
const clients: RawClient[] = [];
const children: { kill(): void }[] = [];

const EMPTY_STATS = { rules: [], interfaces: [], workers: [] };

/**
 * The fake daemon: `stats {rule: "slow"}` takes 1.5 s, `stats {rule: "boom"}` throws,
 * `stats {rule: "offschema"}` answers with a key its schema lacks, `list` answers with 4 KiB.
 */
async function handler(req: Request, ctx?: RequestContext): Promise<ResultOf<Command>> {
  switch (req.cmd) {
    case "events":
      ctx?.subscribe();
      return { subscribed: true, seq: 0 };
    case "hello":
      return { daemon: "test", protocol: 1, mode: "daemon" };
    case "ping":
      return { pong: true, rules: 0, workers: 0 };
    case "list":
      return { rules: [{ name: "x".repeat(4096), id: "1", origin: "runtime", input: "239.1.1.1:5000@r0", source: null, vlan: null, max_pps: null, loop_guard: true, outputs: [], state: "active", reasons: [] }] };
    case "stats":
      if (req.args?.rule === "slow") {
        await Bun.sleep(1500);
        return EMPTY_STATS;
      }
      if (req.args?.rule === "boom") throw new Error("boom");
      if (req.args?.rule === "missing") throw new ControlError("not_found", "no rule named 'missing'");
      if (req.args?.rule === "offschema") return { ...EMPTY_STATS, bogus: 1 } as ResultOf<"stats">;
      return EMPTY_STATS;
    default:
      throw new ControlError("bad_request", `the fake daemon does not answer ${req.cmd}`);
  }
}

beforeEach(async () => {
  dir = new TempDir("mcr-srv-");
  path = dir.join("s.sock");
  server = await ControlServer.start(path, handler);
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  for (const p of children.splice(0)) p.kill();
  server?.stop();
  server = null;
  dir.remove();
});

async function connect(): Promise<RawClient> {
  const c = await RawClient.connect(path);
  clients.push(c);
  return c;
}

async function hello(): Promise<RawClient> {
  const c = await helloClient(path);
  clients.push(c);
  return c;
}

/** Explicit: bun test's default is 5 s, and a busy 2-core machine is slow. */
const T = 30_000;

describe("control server", () => {
  test("the socket is created with mode 0660 and removed by stop()", () => {
    expect(statSync(path).mode & 0o777).toBe(0o660);
    server!.stop();
    server = null;
    expect(existsSync(path)).toBe(false);
  }, T);

  test("50 clients with 20 pipelined requests each all get their answers, in order, with their ids", async () => {
    const conns = await Promise.all(Array.from({ length: 50 }, () => connect()));
    expect(server!.clients).toBe(50);
    await Promise.all(
      conns.map(async (c, ci) => {
        const lines = [{ v: P, id: `c${ci}-hello`, cmd: "hello", args: { client: `t${ci}` } }, ...Array.from({ length: 20 }, (_, i) => ({ v: P, id: ci * 1000 + i, cmd: "ping" }))];
        await c.write(lines.map((l) => `${JSON.stringify(l)}\n`).join(""));
        for (const sent of lines) {
          const r = await c.next();
          expect(r).toMatchObject({ v: P, id: sent.id, ok: true });
        }
      }),
    );
  }, T);

  test("a slow request on one connection does not delay another connection", async () => {
    const slow = await hello();
    const fast = await hello();
    const slowAnswer = slow.request("stats", { rule: "slow" });
    await Bun.sleep(50);
    const rtts: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t = performance.now();
      await fast.call("ping");
      rtts.push(performance.now() - t);
    }
    // All ten pings answered while the slow request (1.5 s) is still running.
    expect(rtts.reduce((a, b) => a + b, 0)).toBeLessThan(1000);
    expect((await slowAnswer).result).toEqual(EMPTY_STATS);
  }, T);

  test("requests on one connection are answered one at a time, in the order sent", async () => {
    const c = await hello();
    await c.write(`${JSON.stringify({ v: P, id: 1, cmd: "stats", args: { rule: "slow" } })}\n${JSON.stringify({ v: P, id: 2, cmd: "ping" })}\n`);
    expect((await c.next(5000)).id).toBe(1);
    expect((await c.next(5000)).id).toBe(2);
  }, T);

  test("a client writing one byte at a time is answered, and others are served meanwhile", async () => {
    const trickle = await connect();
    const other = await hello();
    const line = `${JSON.stringify({ v: P, id: 7, cmd: "hello", args: { client: "slowpoke" } })}\n`;
    const writing = (async () => {
      for (const ch of line) {
        await trickle.write(ch);
        await Bun.sleep(5);
      }
    })();
    for (let i = 0; i < 5; i++) expect((await other.call("ping")).pong).toBe(true);
    await writing;
    expect(await trickle.next()).toMatchObject({ id: 7, ok: true });
  }, T);

  test("a half-written line left open neither blocks others nor gets an answer", async () => {
    const half = await connect();
    await half.write(`{"v":${P},"id":1,"cmd":"pi`);
    const other = await hello();
    expect((await other.call("ping")).pong).toBe(true);
    await expect(half.nextLine(300)).rejects.toThrow("no line");
    // Finishing the line later completes it.
    await half.write('ng"}\n');
    expect(await half.next()).toMatchObject({ id: 1, ok: false, error: { code: "hello_required" } });
  }, T);

  test("an `add` of 32,700 invalid outputs before hello is answered hello_required in a short line, its arguments unread", async () => {
    const c = await connect();
    const line = JSON.stringify({ v: P, id: 1, cmd: "add", args: { rule: { name: "a", from: "x", to: Array.from({ length: 32_700 }, () => 0) } } });
    expect(line.length).toBeLessThan(LINE_BYTES_MAX);
    await c.write(`${line}\n`);
    const answer = await c.nextLine();
    expect(answer!.length).toBeLessThan(256);
    expect(JSON.parse(answer!)).toMatchObject({ id: 1, ok: false, error: { code: "hello_required" } });
  }, T);

  test("an `add` with far too many outputs is refused on their count alone; one with 256 invalid outputs names 10 and counts the rest", async () => {
    const c = await hello();
    const far = await c.request("add", { rule: { name: "a", from: "x", to: Array.from({ length: 32_700 }, () => 0) } });
    expect(far.error).toEqual({ code: "bad_request", message: "args.rule.to: at most 256 outputs" });
    const wide = await c.request("add", { rule: { name: "a", from: "x", to: Array.from({ length: 256 }, () => 0) } });
    expect(wide.error?.code).toBe("bad_request");
    const parts = wide.error!.message.split("; ");
    expect(parts).toHaveLength(11);
    expect(parts[0]).toStartWith("args.rule.to[0]: ");
    expect(parts[10]).toBe("... and 246 more");
  }, T);

  test("a line of exactly LINE_BYTES_MAX bytes is accepted", async () => {
    const c = await connect();
    const base = JSON.stringify({ v: P, id: 1, cmd: "hello", args: { client: "x" } });
    const padded = base + " ".repeat(LINE_BYTES_MAX - base.length);
    expect(padded.length).toBe(LINE_BYTES_MAX);
    await c.write(`${padded}\n`);
    expect(await c.next()).toMatchObject({ id: 1, ok: true });
  }, T);

  test("a line one byte over LINE_BYTES_MAX gets too_large and the connection is closed", async () => {
    const c = await connect();
    const base = JSON.stringify({ v: P, id: 1, cmd: "hello", args: { client: "x" } });
    await c.write(`${base}${" ".repeat(LINE_BYTES_MAX + 1 - base.length)}\n`);
    expect(await c.next()).toMatchObject({ v: P, id: null, ok: false, error: { code: "too_large" } });
    expect(await c.waitClosed()).toBe(true);
  }, T);

  test("a 10 MB line without a newline gets too_large, is cut off, and others are unaffected", async () => {
    const big = await connect();
    const other = await hello();
    const chunk = new Uint8Array(1024 * 1024).fill(0x61);
    const writing = (async () => {
      for (let i = 0; i < 10 && !big.writeFailed; i++) await big.write(chunk);
    })();
    const first = await big.nextLine(10_000);
    expect(first).not.toBeNull();
    expect(JSON.parse(first!)).toMatchObject({ ok: false, error: { code: "too_large" } });
    expect(await big.waitClosed()).toBe(true);
    await writing;
    expect((await other.call("ping")).pong).toBe(true);
  }, T);

  test("a client that never reads its answers holds one answer, is disconnected after 10 s without reading, and others are served", async () => {
    // A separate process writes 3,000 `list` requests (about 12 MiB of answers) and never reads;
    // then it probes with empty lines (which get no answer) until a write fails.
    const script = `
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b'{"v":${P},"id":0,"cmd":"hello","args":{"client":"mute"}}\\n' + b'{"v":${P},"id":1,"cmd":"list"}\\n' * 3000)
print("sent", flush=True)
for _ in range(400):
    try:
        s.send(b"\\n")
    except OSError as e:
        print("disconnected", e.errno, flush=True)
        sys.exit(0)
    time.sleep(0.05)
print("still connected", flush=True)
`;
    const proc = Bun.spawn({ cmd: ["python3", "-c", script, path], stdout: "pipe", stderr: "inherit" });
    children.push(proc);
    const other = await hello();
    const rtts: number[] = [];
    while (proc.exitCode === null) {
      const t = performance.now();
      await other.call("ping");
      rtts.push(performance.now() - t);
      await Bun.sleep(5);
    }
    const out = await new Response(proc.stdout).text();
    expect(out).toContain("sent");
    expect(out).toContain("disconnected");
    expect(rtts.length).toBeGreaterThan(0);
    expect(percentile(rtts, 99)).toBeLessThan(100);
    expect(server!.clients).toBe(1);
    expect((await other.call("ping")).pong).toBe(true);
  }, T);

  test("a handler failure is an `internal` error and a ControlError keeps its code; the connection stays usable", async () => {
    const c = await hello();
    expect(await c.request("stats", { rule: "boom" })).toMatchObject({ ok: false, error: { code: "internal", message: "boom" } });
    expect(await c.request("stats", { rule: "missing" })).toMatchObject({ ok: false, error: { code: "not_found", message: "no rule named 'missing'" } });
    expect((await c.call("ping")).pong).toBe(true);
  }, T);

  test("an answer that does not fit its command's schema is an `internal` error naming the key", async () => {
    const c = await hello();
    const r = await c.request("stats", { rule: "offschema" });
    expect(r).toMatchObject({ ok: false, error: { code: "internal" } });
    expect((r as { error: { message: string } }).error.message).toContain("bogus");
    expect((await c.call("ping")).pong).toBe(true);
  }, T);

  test("a client that disconnects with a request in flight does not disturb the server", async () => {
    const c = await hello();
    await c.send({ v: P, id: 1, cmd: "stats", args: { rule: "slow" } });
    c.close();
    await Bun.sleep(1700);
    const other = await hello();
    expect((await other.call("ping")).pong).toBe(true);
  }, T);

  test("a stale socket file (nobody listening) is replaced", async () => {
    server!.stop();
    server = null;
    // A leftover of a crashed daemon: a socket file nobody listens on (bound, never unlinked).
    Bun.spawnSync({ cmd: ["python3", "-c", "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", path] });
    expect(statSync(path).isSocket()).toBe(true);
    server = await ControlServer.start(path, handler);
    const c = await hello();
    expect((await c.call("ping")).pong).toBe(true);
  }, T);

  test("a regular file at the socket path is refused (SocketPathError) and left as it was", async () => {
    server!.stop();
    server = null;
    writeFileSync(path, "precious");
    await expect(ControlServer.start(path, handler)).rejects.toBeInstanceOf(SocketPathError);
    expect(readFileSync(path, "utf8")).toBe("precious");
  }, T);

  test("the socket is bound with its final mode: the umask is set around bind, whatever the process umask", async () => {
    server!.stop();
    const old = process.umask(0);
    try {
      server = await ControlServer.start(path, handler, { mode: 0o600 });
    } finally {
      process.umask(old);
    }
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(process.umask()).toBe(old);
  }, T);

  test("a second server on a path where one answers is refused (DaemonRunningError), and the first keeps serving", async () => {
    await expect(ControlServer.start(path, handler)).rejects.toBeInstanceOf(DaemonRunningError);
    const c = await hello();
    expect((await c.call("ping")).pong).toBe(true);
  }, T);
});

describe("control server bounds", () => {
  async function restart(opts: ServerOptions): Promise<void> {
    server?.stop();
    server = await ControlServer.start(path, handler, opts);
  }

  test("connections over the cap get one `busy` line and are closed; the clients inside are served", async () => {
    await restart({ clientsMax: 3 });
    const inside = [await hello(), await hello(), await hello()];
    const extra = await connect();
    const line = await extra.nextLine(5_000);
    expect(JSON.parse(line!)).toMatchObject({ id: null, ok: false, error: { code: "busy" } });
    expect(await extra.waitClosed()).toBe(true);
    for (const c of inside) expect((await c.call("ping")).pong).toBe(true);
    expect(server!.stats()).toMatchObject({ clients: 3, refused: 1 });
    // A slot freed is a slot available again.
    inside[0]!.close();
    await Bun.sleep(100);
    const again = await hello();
    expect((await again.call("ping")).pong).toBe(true);
  }, T);

  test("an incomplete line is answered `timeout` and closed after the partial-line timeout; others are not", async () => {
    await restart({ timeouts: { partialLineMs: 300, sweepMs: 50 } });
    const slow = await hello();
    const ok = await hello();
    await slow.write(`{"v":${P},"id":9,"cmd":"pi`);
    const line = await slow.nextLine(5_000);
    expect(JSON.parse(line!)).toMatchObject({ id: null, ok: false, error: { code: "timeout" } });
    expect(await slow.waitClosed()).toBe(true);
    expect((await ok.call("ping")).pong).toBe(true);
    expect(server!.stats().timeouts).toBe(1);
  }, T);

  test("a connection that never says hello is closed with `timeout` after the hello timeout", async () => {
    await restart({ timeouts: { helloMs: 300, sweepMs: 50 } });
    const silent = await connect();
    const line = await silent.nextLine(5_000);
    expect(JSON.parse(line!)).toMatchObject({ id: null, ok: false, error: { code: "timeout" } });
    expect(await silent.waitClosed()).toBe(true);
  }, T);

  test("a subscriber that does not read loses the events past the backlog bound, counted, and is told how many when it reads again", async () => {
    // A separate process subscribes, then reads nothing for 2 s while 4,000 events of 1 KiB
    // (about 4 MiB) are published; then it reads everything and reports the events-dropped notice.
    const script = `
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b'{"v":${P},"id":0,"cmd":"hello","args":{"client":"lazy"}}\\n{"v":${P},"id":"ev","cmd":"events"}\\n')
print("subscribed", flush=True)
time.sleep(2)
s.settimeout(1)
buf = b""
try:
    while True:
        data = s.recv(1 << 20)
        if not data:
            break
        buf += data
except OSError:
    pass
lines = [json.loads(l) for l in buf.split(b"\\n") if l]
events = [l["event"] for l in lines if "event" in l]
dropped = [e for e in events if e.get("kind") == "events-dropped"]
tests = [e for e in events if e.get("kind") == "test"]
print(json.dumps({"events": len(tests), "dropped": sum(e["dropped"] for e in dropped)}), flush=True)
`;
    const proc = Bun.spawn({ cmd: ["python3", "-c", script, path], stdout: "pipe", stderr: "inherit" });
    children.push(proc);
    await waitForSubscriber();
    const other = await hello();
    const payload = "x".repeat(1000);
    for (let i = 0; i < 4000; i++) server!.publish({ kind: "test", i, payload });
    // The server holds at most the bound (plus what the kernel buffers), not 4 MiB.
    const dropped = server!.stats().events_dropped;
    expect(dropped).toBeGreaterThan(3000 - 1000);
    expect((await other.call("ping")).pong).toBe(true);
    const out = (await new Response(proc.stdout).text()).trim().split("\n");
    const report = JSON.parse(out.at(-1)!);
    expect(report.dropped).toBe(dropped);
    expect(report.events + report.dropped).toBe(4000);
    expect(report.events).toBeLessThan(4000);
    expect(report.events * 1050).toBeGreaterThan(EVENTS_BACKLOG_BYTES_MAX);
  }, T);
});

/** Waits until the server has one subscribed connection (the lazy subscriber). */
async function waitForSubscriber(): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    server!.publish({ kind: "probe" });
    if (server!.clients >= 1) {
      await Bun.sleep(300);
      return;
    }
    await Bun.sleep(20);
  }
  throw new Error("no subscriber");
}

describe("events client", () => {
  test("mcrelay events ends with exit 4 and says so when the daemon goes away (it ended with 0, like an interrupt)", async () => {
    const proc = Bun.spawn({ cmd: [...mcrelayCommand("bun"), "events", "--socket", path], stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
    children.push(proc);
    const deadline = performance.now() + 10_000;
    while (server!.clients === 0 && performance.now() < deadline) await Bun.sleep(20);
    await Bun.sleep(500); // subscribed
    server!.stop();
    server = null;
    const code = await Promise.race([proc.exited, Bun.sleep(10_000).then(() => "hung")]);
    expect({ code, stderr: await new Response(proc.stderr).text() }).toMatchObject({ code: 4, stderr: expect.stringContaining("closed the connection") });
  }, 20_000);
});
