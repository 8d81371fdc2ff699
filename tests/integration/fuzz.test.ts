// Hostile clients against a live daemon while a 10,000 pps stream flows through one of its
// rules: more than 10,000 malformed or hostile messages (random bytes, truncated JSON, wrong
// types, unknown commands, deep nesting, huge ids, adds with bad endpoints, other protocol
// versions, a 10 MB line) over concurrent connections, some silent, one slow, one with a
// half-written line left open. Every message gets exactly one error answer (or the documented
// disconnect), the rules do not change, the daemon keeps answering, and the stream loses nothing.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { PROTOCOL_VERSION as P } from "../../src/version.ts";
import { buildRelayTopology, note, type RelayTopology } from "../support/relay-harness.ts";
import {
  RawClient,
  TempDir,
  TestDaemon,
  helloClient,
  killBackground,
  percentile,
  sink,
  sinkReport,
  startStream,
  stopStream,
  waitFor,
  type ListedRule,
  type RawResponse,
  type StatsResult,
  type WorkerRow,
} from "../support/daemon-harness.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 120_000;

/** Malformed messages sent over the pipelined connections (the other kinds come on top). */
const PIPELINED_MESSAGES = 10_200;
const PIPELINED_CONNECTIONS = 6;
const BATCH = 150;
const MISMATCH_CONNECTIONS = 100;

// ---------------------------------------------------------------------------------------
// Deterministic randomness: the seed is printed whenever the test fails (and with
// MCR_TEST_METRICS=1), and MCR_FUZZ_SEED=<seed> replays that run's messages.

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SEED = Number(process.env.MCR_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const rand = mulberry32(SEED);
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

/** Runs a test body; on any failure, says which seed to replay before passing the failure on. */
function withSeed(body: () => Promise<void>): () => Promise<void> {
  return async () => {
    try {
      await body();
    } catch (err) {
      process.stderr.write(`fuzz seed ${SEED}: replay with MCR_FUZZ_SEED=${SEED} bun test tests/integration/fuzz.test.ts\n`);
      throw err;
    }
  };
}

// ---------------------------------------------------------------------------------------
// The messages. Each yields exactly one answer line on a connection that stays open; `codes`
// are the answers it may get, `id` the id the answer must carry (null when none is readable).

interface Hostile {
  kind: string;
  line: string;
  codes: string[];
  id: string | number | null;
}

const PROTECTED = new Set(["cfg", "keep", "1", "2"]);
let serial = 0;

function randomBytesLine(): Hostile {
  const n = 1 + int(300);
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let b = int(256);
    if (b === 0x0a) b = 0x0b;
    bytes[i] = b;
  }
  // At least one visible character, so the line is never blank (blank lines get no answer).
  bytes[int(n)] = 0x41 + int(26);
  return { kind: "random-bytes", line: Buffer.from(bytes).toString("latin1"), codes: ["bad_json", "bad_request", "unknown_command", "hello_required"], id: null };
}

function validishRequest(): Record<string, unknown> {
  const id = ++serial;
  return pick([
    { v: P, id, cmd: "ping" },
    { v: P, id, cmd: "list" },
    { v: P, id, cmd: "stats", args: { rule: "keep" } },
    { v: P, id, cmd: "add", args: { rule: { name: `fz${id}`, from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] } } },
    { v: P, id, cmd: "hello", args: { client: "fuzz" } },
  ]);
}

function truncatedJson(): Hostile {
  const full = JSON.stringify(validishRequest());
  const cut = 1 + int(full.length - 1);
  return { kind: "truncated", line: full.slice(0, cut), codes: ["bad_json"], id: null };
}

function wrongTypes(greeted: boolean): Hostile {
  const id = ++serial;
  const variants: [Record<string, unknown>, string[], string | number | null][] = [
    [{ v: "1", id, cmd: "ping" }, ["bad_request"], null],
    [{ v: P, id: { nested: true }, cmd: "ping" }, ["bad_request"], null],
    [{ v: P, id: [id], cmd: "ping" }, ["bad_request"], null],
    [{ v: P, id: true, cmd: "ping" }, ["bad_request"], null],
    [{ v: P, id: 1.5, cmd: "ping" }, ["bad_request"], null],
    [{ v: P, id, cmd: 42 }, ["bad_request"], null],
    [{ v: P, id, cmd: null }, ["bad_request"], null],
    [{ v: P, id, cmd: "add", args: [] }, ["bad_request"], id],
    [{ v: P, id, cmd: "add", args: { rule: 12 } }, ["bad_request"], id],
    [{ v: P, id, cmd: "add", args: { rule: { name: "keep", from: 5, to: ["239.2.2.2:6000@r1"] }, replace: true } }, ["bad_request"], id],
    [{ v: P, id, cmd: "add", args: { rule: { name: "keep", from: "239.1.1.1:5000@r0", to: "239.2.2.2:6000@r1" }, replace: 1 } }, ["bad_request"], id],
    [{ v: P, id, cmd: "remove", args: { rule: 2 } }, ["bad_request"], id],
    [{ v: P, id, cmd: "remove", args: { rule: "" } }, ["bad_request"], id],
    [{ v: P, id, cmd: "remove", args: {} }, ["bad_request"], id],
    [{ v: P, id, cmd: "stats", args: { rule: ["keep"] } }, ["bad_request"], id],
    [{ v: P, id, cmd: "log-level", args: { level: pick(["loud", "", "DEBUG", 3]) } }, ["bad_request"], id],
    [{ v: P, id, cmd: "hello", args: { client: { x: 1 } } }, ["bad_request"], id],
    [{ v: P, id, cmd: "ping", args: { extra: 1 } }, ["bad_request"], id],
    [{ v: P, id, cmd: "list", unexpected: "key" }, ["bad_request"], id],
    [{ v: P, id, cmd: "reload", args: null }, ["bad_request"], id],
  ];
  const [msg, codes, answerId] = pick(variants);
  return { kind: "wrong-types", line: JSON.stringify(msg), codes: greeted ? codes : [...codes, "hello_required"], id: answerId };
}

function unknownCommand(): Hostile {
  const id = ++serial;
  const cmd = pick(["shutdown", "exec", "PING", "ping ", "__proto__", "constructor", "toString", "", "add\u0000", "x".repeat(5000), "reload-all", "rm -rf /"]);
  return { kind: "unknown-command", line: JSON.stringify({ v: P, id, cmd }), codes: ["unknown_command"], id };
}

function deepNesting(greeted: boolean): Hostile {
  // Lines stay under the 64 KiB limit (LINE_BYTES_MAX): up to 32,000 levels of [] (2 bytes
  // each), 10,000 of {"a":} (6 bytes).
  const id = ++serial;
  if (rand() < 0.5) {
    const depth = pick([100, 1000, 10_000, 32_000]);
    return { kind: "deep-array", line: "[".repeat(depth) + "]".repeat(depth), codes: ["bad_request", "bad_json"], id: null };
  }
  const depth = pick([100, 1000, 5_000, 10_000]);
  const nested = '{"a":'.repeat(depth) + "1" + "}".repeat(depth);
  const line = `{"v":${P},"id":${id},"cmd":"add","args":{"rule":{"name":"deep","from":${nested},"to":["239.2.2.2:6000@r1"]}}}`;
  // Before hello the envelope is enough to refuse it: its arguments are not read.
  return { kind: "deep-object", line, codes: greeted ? ["bad_request", "bad_json"] : ["hello_required", "bad_json"], id: null };
}

function hugeId(): Hostile {
  const variant = int(4);
  if (variant === 0) return { kind: "huge-id", line: `{"v":${P},"id":"${"9".repeat(60_000)}","cmd":"ping"}`, codes: ["bad_request"], id: null };
  if (variant === 1) return { kind: "huge-id", line: `{"v":${P},"id":${"9".repeat(400)},"cmd":"nosuch"}`, codes: ["bad_request", "unknown_command"], id: null };
  if (variant === 2) return { kind: "huge-id", line: `{"v":${P},"id":1e999,"cmd":"nosuch"}`, codes: ["bad_request", "unknown_command"], id: null };
  return { kind: "huge-id", line: JSON.stringify({ v: P, id: -(2 ** 60), cmd: "nosuch" }), codes: ["unknown_command"], id: -(2 ** 60) };
}

const BAD_ENDPOINTS = [
  "239.1.1.1:0@r0",
  "239.1.1.1:65536@r0",
  "239.1.1.1@r0",
  "239.1.1.300:5000@r0",
  "239.1.1.1:5000",
  "[ff3e::1]:5000",
  "[ff3e::zz]:5000@r0",
  "[ff3e::1:5000@r0",
  "239.1.1.1:5000@averyveryverylongname",
  "239.1.1.1:5000@bad name",
  "0.0.0.0:5000@r0",
  "not-an-endpoint",
  "",
  "239.1.1.1:5000@r0\u0000",
  "239.1.1.1:-1@r0",
];

function badAdd(greeted: boolean): Hostile {
  const id = ++serial;
  const replace = rand() < 0.3;
  // Replacing the protected rule with a bad endpoint must change nothing.
  const name = replace && rand() < 0.5 ? "keep" : `fz-${id}`;
  const badFrom = rand() < 0.5;
  const from = badFrom ? pick(BAD_ENDPOINTS) : "239.1.1.77:5000@r0";
  const to = badFrom ? ["239.2.2.77:6000@r1"] : [pick([...BAD_ENDPOINTS, "239.2.2.77:6000@r0", "239.2.2.77:6000"])];
  const rule = { name, from, to };
  const msg = replace ? { v: P, id, cmd: "add", args: { rule, replace: true } } : { v: P, id, cmd: "add", args: { rule } };
  return { kind: "bad-add", line: JSON.stringify(msg), codes: greeted ? ["bad_request", "not_found"] : ["hello_required", "bad_request"], id };
}

function missingTarget(greeted: boolean): Hostile {
  const id = ++serial;
  const target = `nx-${id}`;
  const msg = rand() < 0.5 ? { v: P, id, cmd: "remove", args: { rule: target } } : { v: P, id, cmd: "stats", args: { rule: String(1_000_000 + id) } };
  return { kind: "missing-target", line: JSON.stringify(msg), codes: greeted ? ["not_found"] : ["hello_required"], id };
}

function hostile(greeted: boolean): Hostile {
  const r = rand();
  if (r < 0.2) return randomBytesLine();
  if (r < 0.38) return truncatedJson();
  if (r < 0.58) return wrongTypes(greeted);
  if (r < 0.7) return unknownCommand();
  if (r < 0.73) return deepNesting(greeted);
  if (r < 0.78) return hugeId();
  if (r < 0.93) return badAdd(greeted);
  return missingTarget(greeted);
}

// ---------------------------------------------------------------------------------------

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir | undefined;
let daemon: TestDaemon | undefined;
const clients: RawClient[] = [];

async function connect(): Promise<RawClient> {
  const c = await RawClient.connect(daemon!.socket);
  clients.push(c);
  return c;
}

interface Tally {
  sent: number;
  byKind: Record<string, number>;
  problems: string[];
}

/** One pipelined hostile connection: batches of messages, then exactly one answer each. */
async function pipelined(count: number, greeted: boolean, tally: Tally): Promise<void> {
  const c = await connect();
  if (greeted) await c.hello("fuzz");
  for (let done = 0; done < count; ) {
    const batch: Hostile[] = [];
    for (let i = 0; i < BATCH && done + i < count; i++) batch.push(hostile(greeted));
    await c.write(batch.map((h) => `${h.line}\n`).join(""));
    for (const h of batch) {
      tally.sent += 1;
      tally.byKind[h.kind] = (tally.byKind[h.kind] ?? 0) + 1;
      const line = await c.nextLine(30_000);
      if (line === null) {
        tally.problems.push(`connection closed while waiting for the answer to ${h.kind}: ${h.line.slice(0, 200)}`);
        return;
      }
      let r: RawResponse;
      try {
        r = JSON.parse(line) as RawResponse;
      } catch {
        tally.problems.push(`answer is not JSON: ${line.slice(0, 200)}`);
        continue;
      }
      const fine = r.v === P && r.ok === false && !!r.error && h.codes.includes(r.error.code) && typeof r.error.message === "string" && (h.id === null || r.id === h.id);
      if (!fine && tally.problems.length < 20) tally.problems.push(`${h.kind} ${h.line.slice(0, 160)} -> ${line.slice(0, 300)} (wanted ${h.codes.join("|")}, id ${JSON.stringify(h.id)})`);
    }
    done += batch.length;
  }
  // The connection is still usable afterwards.
  if (!greeted) await c.hello("fuzz-late");
  const pong = await c.request("ping");
  if (!pong.ok) tally.problems.push(`ping after the fuzz refused: ${JSON.stringify(pong)}`);
  c.close();
}

/** Connections that each send one message of another protocol version: answered, then closed. */
async function mismatches(n: number, tally: Tally): Promise<void> {
  for (let i = 0; i < n; i++) {
    const c = await connect();
    const v = pick([0, P + 1, P + 2, -1, 1000, 2 ** 31]);
    await c.send({ v, id: i, cmd: pick(["hello", "ping", "add"]), args: { client: "old" } });
    tally.sent += 1;
    tally.byKind["protocol-mismatch"] = (tally.byKind["protocol-mismatch"] ?? 0) + 1;
    const r = await c.next(10_000).catch((err) => ({ error: { code: `none: ${(err as Error).message}` } }) as RawResponse);
    if (r.error?.code !== "protocol_mismatch" || !r.error.message.includes(`protocol ${v}`)) tally.problems.push(`mismatch v=${v}: ${JSON.stringify(r)}`);
    if (!(await c.waitClosed(5_000))) tally.problems.push(`mismatch v=${v}: connection left open`);
  }
}

/** A line far beyond the limit: too_large, then the connection is closed. */
async function oversized(bytes: number, tally: Tally): Promise<void> {
  const c = await connect();
  const chunk = new Uint8Array(1024 * 1024).fill(0x7b); // "{{{{..."
  for (let sent = 0; sent < bytes && !c.writeFailed; sent += chunk.length) await c.write(chunk);
  tally.sent += 1;
  tally.byKind["oversized"] = (tally.byKind["oversized"] ?? 0) + 1;
  const line = await c.nextLine(10_000).catch(() => null);
  if (line === null || !line.includes('"too_large"')) tally.problems.push(`oversized line of ${bytes} bytes: answer ${line}`);
  if (!(await c.waitClosed(5_000))) tally.problems.push(`oversized line of ${bytes} bytes: connection left open`);
}

/** A valid hello and list, written one byte every 10 ms. */
async function slowloris(tally: Tally): Promise<void> {
  const c = await connect();
  const text = `${JSON.stringify({ v: P, id: "slow-1", cmd: "hello", args: { client: "slow" } })}\n${JSON.stringify({ v: P, id: "slow-2", cmd: "list" })}\n`;
  for (const ch of text) {
    await c.write(ch);
    await Bun.sleep(10);
  }
  const a = await c.next(10_000);
  const b = await c.next(10_000);
  if (a.id !== "slow-1" || !a.ok || b.id !== "slow-2" || !b.ok) tally.problems.push(`slow client: ${JSON.stringify([a, b])}`);
  c.close();
}

describe_netns("fuzzing the control socket under traffic (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("fuzz");
    rt = await buildRelayTopology(topo, { label: "fuzz", sinks: 1 });
    dir = new TempDir();
    const configPath = dir.file("mcrelay.json5", `{ rules: [ { name: "cfg", from: "239.1.1.9:5000@r0", to: ["239.2.2.9:6009@r1"] } ] }`);
    daemon = await TestDaemon.start(rt, dir, { configPath });
  }, T);

  afterAll(async () => {
    for (const c of clients.splice(0)) c.close();
    await killBackground();
    if (daemon?.running) await daemon.stop().catch(() => daemon?.kill9());
    await topo?.destroy();
    dir?.remove();
  }, T);

  test(
    "over 10,000 malformed and hostile messages on concurrent connections leave the rules, the answers and a 10k pps stream intact",
    withSeed(async () => {
      const d = daemon!;
      await d.json(["add", "--name", "keep", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.1:6001@r1"]);
      const rulesBefore = (await d.json<{ rules: ListedRule[] }>(["list"])).rules;
      const workersBefore = (await d.json<{ workers: WorkerRow[] }>(["workers"])).workers;

      const s = await sink(rt, rt.sinks[0]!.ns, "239.2.2.1:6001@s0");
      const gen = startStream(rt, { to: "239.1.1.1:5000@g0", ratePps: 10_000, size: 200 });
      await waitFor("the stream to flow", async () => (await d.json<StatsResult>(["stats", "keep"])).rules[0]!.packets > 5000, 20_000, 200);

      // Silent connections and one half-written line, held open through the whole run.
      const silent = await Promise.all(Array.from({ length: 5 }, () => connect()));
      const half = await connect();
      await half.write(`{"v":${P},"id":"half","cmd":"list"`);

      // A well-behaved client pinging throughout.
      const monitor = await helloClient(d.socket);
      clients.push(monitor);
      let fuzzing = true;
      const rtts: number[] = [];
      const monitorDone = (async () => {
        while (fuzzing) {
          const t = performance.now();
          const r = await monitor.request("ping", undefined, 10_000);
          if (!r.ok) throw new Error(`monitor ping refused: ${JSON.stringify(r)}`);
          rtts.push(performance.now() - t);
          await Bun.sleep(20);
        }
      })();

      const tally: Tally = { sent: 0, byKind: {}, problems: [] };
      const started = performance.now();
      const per = Math.ceil(PIPELINED_MESSAGES / PIPELINED_CONNECTIONS);
      await Promise.all([
        ...Array.from({ length: PIPELINED_CONNECTIONS }, (_, i) => pipelined(per, i % 2 === 0, tally)),
        mismatches(MISMATCH_CONNECTIONS, tally),
        oversized(10 * 1024 * 1024, tally),
        oversized(2 * 1024 * 1024 + 17, tally),
        slowloris(tally),
      ]);
      const fuzzMs = performance.now() - started;
      fuzzing = false;
      await monitorDone;

      // The held connections are still there and still served.
      expect(half.closed).toBe(false);
      await expect(half.nextLine(200)).rejects.toThrow("no line");
      for (const c of silent) {
        expect(c.closed).toBe(false);
        expect((await c.hello("was-silent")).protocol).toBe(P);
      }

      await Bun.sleep(500);
      const sent = (await stopStream(gen)).sent;
      const got = await sinkReport(s);
      note("fuzz", { seed: SEED, messages: tally.sent, by_kind: tally.byKind, fuzz_ms: Math.round(fuzzMs), pings: rtts.length, ping_p99_ms: percentile(rtts, 99), ping_max_ms: Math.max(...rtts), stream_sent: sent, sink: got.totals });

      expect(tally.problems).toEqual([]);
      expect(tally.sent).toBeGreaterThanOrEqual(10_000);
      expect(rtts.length).toBeGreaterThan(10);

      // Afterwards: every well-formed request is answered, and nothing changed.
      const after = await helloClient(d.socket);
      clients.push(after);
      expect((await after.call("ping")).pong).toBe(true);
      expect((await after.call("version")).protocol).toBe(P);
      expect((await after.call("list")).rules).toEqual(rulesBefore);
      expect((await d.json<{ rules: ListedRule[] }>(["list"])).rules).toEqual(rulesBefore);
      const workersAfter = (await d.json<{ workers: WorkerRow[] }>(["workers"])).workers;
      expect(workersAfter.map((w) => [w.interface, w.pid, w.restarts, w.table_hash])).toEqual(workersBefore.map((w) => [w.interface, w.pid, w.restarts, w.table_hash]));
      const state = JSON.parse(await Bun.file(`${d.stateDir}/rules.json`).text());
      expect(state.rules.map((r: { spec: { name: string } }) => r.spec.name)).toEqual(["keep"]);

      // The stream through the rule lost nothing.
      expect(got.totals).toMatchObject({ received: sent, lost: 0, duplicates: 0, pattern_errors: 0 });
      expect(d.running).toBe(true);
      half.close();
      for (const c of silent) c.close();
      expect(await d.stop()).toBe(0);
    }),
    T,
  );
});
