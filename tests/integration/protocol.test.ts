// The control protocol as a raw client sees it, against a real daemon in a namespace: version
// mismatch, hello first, unknown commands and malformed fields each get their documented error
// code with a message that names what is wrong; only a version mismatch ends the connection.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { PROTOCOL_VERSION as P } from "../../src/version.ts";
import { buildRelayTopology, mcrelayCommand } from "../support/relay-harness.ts";
import { RawClient, TempDir, TestDaemon, helloClient, type RawResponse } from "../support/daemon-harness.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 60_000;

let topo: Topology | undefined;
let dir: TempDir | undefined;
let daemon: TestDaemon;
const open: RawClient[] = [];

async function raw(): Promise<RawClient> {
  const c = await RawClient.connect(daemon.socket);
  open.push(c);
  return c;
}

async function greeted(): Promise<RawClient> {
  const c = await helloClient(daemon.socket);
  open.push(c);
  return c;
}

/** Sends one message (object or raw text) and returns the one response. */
async function exchange(c: RawClient, message: unknown): Promise<RawResponse> {
  if (typeof message === "string") await c.write(`${message}\n`);
  else await c.send(message);
  return c.next();
}

describe_netns("control protocol (real daemon, raw client)", () => {
  beforeAll(async () => {
    topo = await Topology.create("protocol");
    dir = new TempDir();
    const rt = await buildRelayTopology(topo, { label: "protocol" });
    daemon = await TestDaemon.start(rt, dir);
  }, T);

  afterAll(async () => {
    for (const c of open.splice(0)) c.close();
    await daemon?.stop().catch(() => undefined);
    await topo?.destroy();
    dir?.remove();
  }, T);

  test("a hello of the next protocol version gets protocol_mismatch naming both versions, then the connection is closed", async () => {
    const c = await raw();
    const r = await exchange(c, { v: P + 1, id: 1, cmd: "hello", args: { client: "from-the-future" } });
    expect(r).toMatchObject({ v: P, id: 1, ok: false, error: { code: "protocol_mismatch" } });
    expect(r.error!.message).toBe(`protocol mismatch: client speaks protocol ${P + 1}, daemon speaks protocol ${P}`);
    expect(await c.waitClosed()).toBe(true);
  }, T);

  test("a message of another version after a good hello is a mismatch too, and closes the connection", async () => {
    const c = await greeted();
    const r = await exchange(c, { v: 0, id: "x", cmd: "ping" });
    expect(r).toMatchObject({ id: "x", ok: false, error: { code: "protocol_mismatch" } });
    expect(r.error!.message).toContain(`client speaks protocol 0, daemon speaks protocol ${P}`);
    expect(await c.waitClosed()).toBe(true);
  }, T);

  test("any request before hello gets hello_required and the connection stays usable", async () => {
    const c = await raw();
    for (const [i, cmd] of ["ping", "list", "version", "workers", "config-show", "reload"].entries()) {
      expect(await exchange(c, { v: P, id: i, cmd })).toMatchObject({ v: P, id: i, ok: false, error: { code: "hello_required" } });
    }
    const add = await exchange(c, { v: P, id: "a", cmd: "add", args: { rule: { name: "x", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] } } });
    expect(add).toMatchObject({ id: "a", ok: false, error: { code: "hello_required" } });
    expect(await exchange(c, { v: P, id: 100, cmd: "hello", args: { client: "late" } })).toMatchObject({ id: 100, ok: true, result: { protocol: P } });
    expect(await exchange(c, { v: P, id: 101, cmd: "ping" })).toMatchObject({ id: 101, ok: true, result: { pong: true } });
    // The refused add changed nothing.
    expect((await exchange(c, { v: P, id: 102, cmd: "list" })).result).toEqual({ rules: [] });
  }, T);

  test("an unknown command gets unknown_command naming it and listing the known ones", async () => {
    const c = await greeted();
    const r = await exchange(c, { v: P, id: 5, cmd: "frobnicate" });
    expect(r).toMatchObject({ id: 5, ok: false, error: { code: "unknown_command" } });
    expect(r.error!.message).toContain("'frobnicate'");
    expect(r.error!.message).toContain("ping");
    // Also before hello: an unknown command is unknown whoever asks.
    const fresh = await raw();
    expect(await exchange(fresh, { v: P, id: 6, cmd: "shutdown-now" })).toMatchObject({ id: 6, error: { code: "unknown_command" } });
  }, T);

  test("a field of the wrong type gets bad_request naming the field's path", async () => {
    const c = await greeted();
    const cases: [unknown, string][] = [
      [{ v: P, id: 1, cmd: "add", args: { rule: { name: "x", from: 5, to: ["239.2.2.2:6000@r1"] } } }, "args.rule.from"],
      [{ v: P, id: 2, cmd: "add", args: { rule: { name: "x", from: "239.1.1.1:5000@r0", to: "239.2.2.2:6000@r1" } } }, "args.rule.to"],
      [{ v: P, id: 3, cmd: "add", args: { rule: { name: "x", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] }, replace: "yes" } }, "args.replace"],
      [{ v: P, id: 4, cmd: "remove", args: { rule: 17 } }, "args.rule"],
      [{ v: P, id: 5, cmd: "hello", args: { client: ["x"] } }, "args.client"],
      [{ v: P, id: 6, cmd: "stats", args: { rule: false } }, "args.rule"],
      [{ v: P, id: 7, cmd: "log-level", args: { level: "loud" } }, "args.level"],
      [{ v: P, id: 8, cmd: "add", args: { rule: { name: "bad name!", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] } } }, "args.rule.name"],
      [{ v: P, id: 9, cmd: "ping", args: {} }, "args"],
      [{ v: P, id: 10, cmd: "ping", verbose: true }, "verbose"],
    ];
    for (const [message, field] of cases) {
      const r = await exchange(c, message);
      const id = (message as { id: number }).id;
      expect({ id: r.id, ok: r.ok, code: r.error?.code }).toEqual({ id, ok: false, code: "bad_request" });
      expect(r.error!.message).toContain(`${field}:`);
    }
    expect((await c.call("list")).rules).toEqual([]);
  }, T);

  test("an add with a well-typed but invalid endpoint gets bad_request naming the output, the value and the rule", async () => {
    const c = await greeted();
    const r = await exchange(c, { v: P, id: 1, cmd: "add", args: { rule: { name: "x", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:0@r1"] } } });
    expect(r).toMatchObject({ ok: false, error: { code: "bad_request" } });
    expect(r.error!.message).toContain("to[0]");
    expect(r.error!.message).toContain("239.2.2.2:0@r1");
    expect(r.error!.message).toContain("1-65535");
    const same = await exchange(c, { v: P, id: 2, cmd: "add", args: { rule: { name: "x", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r0"] } } });
    expect(same).toMatchObject({ ok: false, error: { code: "bad_request" } });
    expect(same.error!.message).toContain("input interface r0");
    expect((await c.call("list")).rules).toEqual([]);
  }, T);

  test("a line that is not JSON gets bad_json; a message without v or id gets bad_request; the connection stays usable", async () => {
    const c = await greeted();
    expect(await exchange(c, "this is not json")).toMatchObject({ v: P, id: null, ok: false, error: { code: "bad_json" } });
    expect(await exchange(c, '{"v":1,"id":1,"cmd":"ping"')).toMatchObject({ id: null, error: { code: "bad_json" } });
    expect(await exchange(c, { id: 1, cmd: "ping" })).toMatchObject({ id: null, error: { code: "bad_request" } });
    expect(await exchange(c, { v: "1", id: 1, cmd: "ping" })).toMatchObject({ error: { code: "bad_request" } });
    expect(await exchange(c, "[1,2,3]")).toMatchObject({ error: { code: "bad_request" } });
    const missingId = await exchange(c, { v: P, cmd: "ping" });
    expect(missingId).toMatchObject({ error: { code: "bad_request" } });
    expect(missingId.error!.message).toContain("id");
    expect(await exchange(c, { v: P, id: 99, cmd: "ping" })).toMatchObject({ id: 99, ok: true });
  }, T);

  test("string and number ids are echoed; pipelined requests are answered in order", async () => {
    const c = await greeted();
    const ids = ["a", 1, "b-2", 3, 2 ** 40, "z".repeat(64)];
    await c.write(ids.map((id) => `${JSON.stringify({ v: P, id, cmd: "ping" })}\n`).join(""));
    for (const id of ids) expect(await c.next()).toMatchObject({ v: P, id, ok: true, result: { pong: true } });
    // An id longer than 64 characters is refused (and cannot be echoed).
    expect(await exchange(c, { v: P, id: "z".repeat(65), cmd: "ping" })).toMatchObject({ id: null, ok: false, error: { code: "bad_request" } });
  }, T);

  test("empty and blank lines get no answer", async () => {
    const c = await greeted();
    await c.write("\n   \n\t\n");
    expect(await exchange(c, { v: P, id: "after-blank", cmd: "ping" })).toMatchObject({ id: "after-blank", ok: true });
  }, T);

  test("the CLI meeting a daemon of another protocol version says so, naming both versions, and exits 6", async () => {
    // A fake daemon that answers everything as the next protocol version.
    const sock = dir!.join("v2.sock");
    const fake = Bun.listen({
      unix: sock,
      socket: {
        data(s) {
          s.write(`${JSON.stringify({ v: P + 1, id: null, ok: false, error: { code: "protocol_mismatch", message: `protocol mismatch: client speaks protocol ${P}, daemon speaks protocol ${P + 1}` } })}\n`);
          s.end();
        },
      },
    });
    try {
      const p = Bun.spawn({ cmd: [...mcrelayCommand("bun"), "ping", "--socket", sock], stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
      const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      expect({ code, stdout }).toEqual({ code: 6, stdout: "" });
      expect(stderr).toContain("protocol mismatch");
      expect(stderr).toContain(`protocol ${P + 1}`);
      expect(stderr).toContain(`protocol ${P}`);
    } finally {
      fake.stop(true);
    }
  }, T);
});
