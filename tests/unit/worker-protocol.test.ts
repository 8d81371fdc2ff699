// The worker's side of the protocol (zig/worker.zig), spoken to directly on its socketpair: a
// malformed message is answered (a request: an error reply with its id naming the field; the
// set-up message: a fatal reply naming the field, then exit 1), never silence the supervisor
// could only time out on, and the worker keeps serving afterwards. No privileges needed: the
// worker is started without a user (no drop) and with no rings (its one packet socket position
// holds the other end of a spare socketpair, never used as a packet socket).
// As root, a worker that drops to `nobody` is given a packet socket with a ring whose filter is
// not locked (made by python, as the supervisor never would): the ring added after `ready` fails
// the confinement check, which is a `fatal` reply and a non-zero exit, and the supervisor's
// handle (src/supervisor/worker-handle.ts) tells that message as the reason of the exit.
// A worker that refuses to start: its start fails with its reason even when its exit reaches the
// supervisor together with that reason (the event loop held until the worker exited).
import { afterEach, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { fdClose, fdInherit, scmPair, scmRecv, scmSend, SharedStats, workerExecutable } from "../../src/native/lib.ts";
import { LIMITS } from "../../src/native/abi.ts";
import { WorkerError, WorkerHandle } from "../../src/supervisor/worker-handle.ts";
import { RingSchema } from "../../src/worker/messages.ts";
import * as v from "valibot";
import { encodeWorkerTable, tableBytesHash, withGeneration } from "../../src/rules/wire.ts";

const DEADLINE_MS = 3000;
const started: { proc: ReturnType<typeof Bun.spawn>; fds: number[] }[] = [];

afterEach(async () => {
  for (const w of started.splice(0)) {
    w.proc.kill("SIGKILL");
    await w.proc.exited;
    for (const fd of w.fds) fdClose(fd);
  }
});

/** Starts the worker executable with fd 3 its end of a new socketpair; returns ours. */
function startWorker(opts: { stderr?: "pipe"; level?: string } = {}): { proc: ReturnType<typeof Bun.spawn>; channel: number; blank: number } {
  const [channel, theirs] = scmPair();
  const [blank, blankPeer] = scmPair();
  fdClose(blankPeer);
  fdInherit(theirs);
  const proc = Bun.spawn([workerExecutable(), "_worker", "--index", "0"], {
    stdio: ["ignore", "ignore", opts.stderr ?? "ignore", theirs],
    env: { ...process.env, MCRELAY_LOG_LEVEL: opts.level ?? "silent" },
  });
  fdClose(theirs);
  started.push({ proc, fds: [channel, blank] });
  return { proc, channel, blank };
}

const encode = (m: unknown) => new TextEncoder().encode(typeof m === "string" ? m : JSON.stringify(m));

/** The worker's next reply line (one JSON object per datagram), within the deadline. */
async function reply(channel: number): Promise<Record<string, unknown>> {
  const until = performance.now() + DEADLINE_MS;
  for (;;) {
    const m = scmRecv(channel, true);
    if (m !== null) {
      for (const fd of m.fds) fdClose(fd);
      const text = new TextDecoder().decode(m.data);
      expect(text.endsWith("\n")).toBe(true);
      return JSON.parse(text) as Record<string, unknown>;
    }
    if (performance.now() > until) throw new Error(`no reply from the worker within ${DEADLINE_MS} ms`);
    await Bun.sleep(5);
  }
}

const setup = { kind: "worker", index: 0, workers: 1, positions: 1, rings: 0, cpu: null, user: null };
const ring = { kind: "ring", position: 0, ifname: "r0", ifindex: 1, slot: 0, members: 1, geometry: { blockBytes: 65536, blockCount: 1, frameBytes: 2048, frameCount: 32 } };

const root = process.getuid?.() === 0;
const nobody = { name: "nobody", uid: 65534, gid: 65534 };
/** What the worker says about a packet socket whose filter is not locked (the first probe). */
const UNLOCKED = "confinement not verified: getsockopt(SO_LOCK_FILTER) of the packet socket is 1: got 0, expected 1";

/**
 * A packet socket with a TPACKET_V3 ring of `ring`'s geometry (one 64 KiB block), unbound (it
 * receives nothing) and with no locked filter: what the supervisor's set-up (zig/ring.zig setup)
 * never hands over, so the worker's confinement check on it fails. Made by python (root) and
 * passed back over a socketpair.
 */
async function unlockedRingSocket(): Promise<number> {
  const script = [
    "import socket, struct",
    "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)",
    "s.setsockopt(263, 10, 2)  # SOL_PACKET, PACKET_VERSION, TPACKET_V3",
    "s.setsockopt(263, 5, struct.pack('7I', 65536, 1, 2048, 32, 0, 0, 0))  # PACKET_RX_RING",
    "socket.send_fds(socket.socket(fileno=3), [b'ring'], [s.fileno()])",
  ].join("\n");
  const [ours, theirs] = scmPair();
  fdInherit(theirs);
  const py = Bun.spawn(["python3", "-c", script], { stdio: ["ignore", "ignore", "pipe", theirs] });
  fdClose(theirs);
  const code = await py.exited;
  const m = scmRecv(ours, true);
  fdClose(ours);
  if (code !== 0 || m === null || m.fds.length !== 1) throw new Error(`python did not pass a packet socket (exit ${code}): ${await new Response(py.stderr).text()}`);
  return m.fds[0]!;
}

/** This process's children, live or exited and not yet reaped (a zombie has no cmdline left to tell it by). */
function children(): Set<number> {
  const out = new Set<number>();
  for (const tid of readdirSync("/proc/self/task")) {
    try {
      for (const word of readFileSync(`/proc/self/task/${tid}/children`, "utf8").split(/\s+/)) if (/^\d+$/.test(word)) out.add(Number(word));
    } catch {
      // thread gone meanwhile
    }
  }
  return out;
}

/** The process has exited: a zombie nobody reaped yet, or gone. */
function hasExited(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] === "Z";
  } catch {
    return true;
  }
}

/**
 * Holds this thread (and so the event loop) until the process has exited, or the deadline:
 * whatever it wrote before its exit and the exit itself then reach the event loop together,
 * as they do on a loaded machine where the loop was busy when the process ended.
 */
function blockUntilExited(pid: number, timeoutMs: number): void {
  const until = performance.now() + timeoutMs;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  while (!hasExited(pid)) {
    if (performance.now() > until) throw new Error(`process ${pid} did not exit within ${timeoutMs} ms`);
    Atomics.wait(nap, 0, 0, 1);
  }
}

describe("worker protocol (zig/worker.zig on its socketpair)", () => {
  test("a malformed request gets an error reply with its id naming the field (a malformed ring message: the ring-add after it), and the worker keeps serving", async () => {
    const w = startWorker();
    scmSend(w.channel, encode(setup), [w.blank]);
    expect(await reply(w.channel)).toMatchObject({ type: "ready", confinement: null });
    const long = `{"type":"stop","pad":"${"a".repeat(5000)}","id":11}`;
    const cases: [string, string][] = [
      ['{"type":"ping","position":"0","id":5}', "position: expected an integer from 0 to 4294967295"],
      ['{"type":"ping","position":0,"extra":true,"id":7}', "extra: no such field"],
      ['{"type":"ping","position":0,"position":0,"id":8}', "position: given twice"],
      ['{"type":"log-level","level":"loud","id":9}', "level: 'loud' is not silent, error, warn, info, debug or trace"],
      ['{"type":"table","position":0,"generation":1,"hash":"XYZ","bytes":16,"id":10}', "hash: 3 characters, expected 16"],
      [long, `message: ${long.length} bytes, more than the limit of 4096`],
    ];
    for (const [text, problem] of cases) {
      scmSend(w.channel, encode(text), [], true);
      const id = Number(/"id":(\d+)/.exec(text)![1]);
      expect(await reply(w.channel)).toEqual({ type: "error", id, message: `malformed request: ${problem}` });
    }
    // A request naming a position past this worker's sockets is refused, not tried on fd 513.
    for (const [id, type] of [[6, "ping"], [12, "ring-drop"]] as const) {
      scmSend(w.channel, encode({ type, id, position: 1 }), [], true);
      expect(await reply(w.channel)).toEqual({ type: "error", id, message: "position: 1 is past this worker's last position (0)" });
    }
    // A ring message has no id to answer: the ring-add that follows says why it was refused.
    const [counters, countersPeer] = scmPair();
    fdClose(countersPeer);
    scmSend(w.channel, encode({ ...ring, ifname: "a-name-longer-than-15" }), [counters], true);
    fdClose(counters);
    scmSend(w.channel, encode({ type: "ring-add", id: 15, position: 0 }), [], true);
    expect(await reply(w.channel)).toEqual({ type: "error", id: 15, message: "no ring message for position 0 on the channel; the last one refused: ifname: 21 bytes, expected 1 to 15" });
    // Still serving: a good request after all of them is answered, and stop ends it cleanly.
    scmSend(w.channel, encode({ type: "log-level", id: 13, level: "warn" }), [], true);
    expect(await reply(w.channel)).toEqual({ type: "ok", id: 13 });
    scmSend(w.channel, encode({ type: "stop", id: 14 }), [], true);
    expect(await reply(w.channel)).toEqual({ type: "ok", id: 14 });
    expect(await w.proc.exited).toBe(0);
  });

  test("a ring message whose slot is not below its members is refused, by the worker and by the supervisor's schema", async () => {
    const w = startWorker();
    scmSend(w.channel, encode(setup), [w.blank]);
    expect(await reply(w.channel)).toMatchObject({ type: "ready" });
    for (const [id, slot, members] of [[31, 4294967295, 1], [32, 2, 2]] as const) {
      const [counters, countersPeer] = scmPair();
      fdClose(countersPeer);
      scmSend(w.channel, encode({ ...ring, slot, members }), [counters], true);
      fdClose(counters);
      scmSend(w.channel, encode({ type: "ring-add", id, position: 0 }), [], true);
      expect(await reply(w.channel)).toEqual({ type: "error", id, message: `no ring message for position 0 on the channel; the last one refused: slot: ${slot} is not below members (${members})` });
      const checked = v.safeParse(RingSchema, { ...ring, slot, members });
      expect(checked.success).toBe(false);
      expect(checked.issues?.[0]?.message).toBe(`slot: ${slot} is not below members (${members})`);
    }
    expect(v.safeParse(RingSchema, { ...ring, slot: 1, members: 2 }).success).toBe(true);
  });

  test("a ring geometry zig/ring.zig would never make is refused, by the worker and by the supervisor's schema", async () => {
    const w = startWorker();
    scmSend(w.channel, encode(setup), [w.blank]);
    expect(await reply(w.channel)).toMatchObject({ type: "ready" });
    const cases: [number, Record<string, number>, string][] = [
      // The slot count overflowed a u32 in the worker (a panic); the others map a ring read in the wrong places.
      [41, { blockBytes: 2 ** 31, blockCount: 4096, frameBytes: 64, frameCount: 1 }, "blockBytes 2147483648 is not a power of two from 65536 to 131072"],
      [42, { blockBytes: 65536, blockCount: 4097, frameBytes: 2048, frameCount: 131104 }, "blockCount 4097 is not from 1 to 4096"],
      [43, { blockBytes: 65536, blockCount: 2, frameBytes: 3072, frameCount: 42 }, "frameBytes 3072 is not a power of two from 2048 to blockBytes (65536)"],
      [44, { blockBytes: 65536, blockCount: 1, frameBytes: 131072, frameCount: 0 }, "frameBytes 131072 is not a power of two from 2048 to blockBytes (65536)"],
      [45, { blockBytes: 65536, blockCount: 2, frameBytes: 4096, frameCount: 64 }, "frameCount 64, expected 32 (blockBytes / frameBytes x blockCount)"],
    ];
    for (const [id, geometry, problem] of cases) {
      const [counters, countersPeer] = scmPair();
      fdClose(countersPeer);
      scmSend(w.channel, encode({ ...ring, geometry }), [counters], true);
      fdClose(counters);
      scmSend(w.channel, encode({ type: "ring-add", id, position: 0 }), [], true);
      expect(await reply(w.channel)).toEqual({ type: "error", id, message: `no ring message for position 0 on the channel; the last one refused: geometry: ${problem}` });
      expect(v.safeParse(RingSchema, { ...ring, geometry }).success).toBe(false);
    }
    expect(v.safeParse(RingSchema, ring).success).toBe(true);
    expect(v.safeParse(RingSchema, { ...ring, geometry: { blockBytes: 131072, blockCount: 4096, frameBytes: 131072, frameCount: 4096 } }).success).toBe(true);
  });

  test("a malformed set-up message gets a fatal reply naming the field, and the worker exits 1", async () => {
    const w = startWorker();
    scmSend(w.channel, encode({ ...setup, rings: 2 }), [w.blank]);
    expect(await reply(w.channel)).toEqual({ type: "fatal", message: "bad set-up message: rings: 2 is more than the 1 positions" });
    expect(await w.proc.exited).toBe(1);
  });

  test("a ring message at start-up for a position the worker has no socket at gets a fatal reply naming it", async () => {
    const w = startWorker();
    scmSend(w.channel, encode({ ...setup, rings: 1 }), [w.blank]);
    const [counters, countersPeer] = scmPair();
    fdClose(countersPeer);
    scmSend(w.channel, encode({ ...ring, position: 3 }), [counters]);
    fdClose(counters);
    expect(await reply(w.channel)).toEqual({ type: "fatal", message: "bad ring message: position: 3 is past this worker's last position (0)" });
    expect(await w.proc.exited).toBe(1);
  });

  test.skipIf(!root)("a ring added after ready whose confinement is not verified gets a fatal reply, and the worker exits 1, not 0 (a clean stop)", async () => {
    const packet = await unlockedRingSocket();
    const w = startWorker();
    started[started.length - 1]!.fds.push(packet);
    scmSend(w.channel, encode({ ...setup, user: nobody }), [packet]);
    // Dropped, with no ring set up at start-up to probe yet: an object, not null (which says "did not drop").
    expect(await reply(w.channel)).toMatchObject({ type: "ready", confinement: { probes: 0 } });
    const counters = SharedStats.create();
    try {
      scmSend(w.channel, encode(ring), [counters.fd], true);
      counters.closeFd();
      scmSend(w.channel, encode({ type: "ring-add", id: 21, position: 0 }), [], true);
      // With the socket's position: the failure is that socket's (the supervisor rebuilds it).
      expect(await reply(w.channel)).toEqual({ type: "fatal", message: UNLOCKED, position: 0 });
      expect(await w.proc.exited).toBe(1);
    } finally {
      counters.release();
    }
  });

  test("a worker whose stderr reader is gone keeps serving: the lost log lines do not kill it (SIGPIPE)", async () => {
    const w = startWorker({ stderr: "pipe", level: "warn" });
    scmSend(w.channel, encode(setup), [w.blank]);
    expect(await reply(w.channel)).toMatchObject({ type: "ready" });
    // Our end of its stderr pipe closed: each warning below is written to a pipe without reader.
    await (w.proc.stderr as ReadableStream).cancel();
    for (const id of [61, 62, 63]) {
      scmSend(w.channel, encode(`{"type":"ping","position":"0","id":${id}}`), [], true);
      expect(await reply(w.channel)).toMatchObject({ type: "error", id });
    }
    scmSend(w.channel, encode({ type: "stop", id: 64 }), [], true);
    expect(await reply(w.channel)).toEqual({ type: "ok", id: 64 });
    expect(await w.proc.exited).toBe(0);
    expect(w.proc.signalCode).toBeNull();
  });

  test(`a worker that gets no set-up message, or not all its ring messages, gives up after ${LIMITS.workerStartupWaitMs} ms: a fatal reply naming the wait, exit 1`, async () => {
    // Its supervisor failed between the spawn and the messages (and kept the channel open):
    // before, the worker waited for ever holding whatever packet sockets it had been given.
    const none = startWorker();
    const partial = startWorker();
    scmSend(partial.channel, encode({ ...setup, rings: 1 }), [partial.blank]);
    const t0 = performance.now();
    const fatal = { type: "fatal", message: `no message from the supervisor within ${LIMITS.workerStartupWaitMs} ms at start-up` };
    const deadline = LIMITS.workerStartupWaitMs + DEADLINE_MS;
    const replyWithin = async (channel: number) => {
      for (;;) {
        const m = scmRecv(channel, true);
        if (m !== null) return JSON.parse(new TextDecoder().decode(m.data)) as unknown;
        if (performance.now() - t0 > deadline) throw new Error(`no reply within ${deadline} ms`);
        await Bun.sleep(20);
      }
    };
    expect(await replyWithin(none.channel)).toEqual(fatal);
    expect(await replyWithin(partial.channel)).toEqual(fatal);
    expect(await none.proc.exited).toBe(1);
    expect(await partial.proc.exited).toBe(1);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(LIMITS.workerStartupWaitMs - 100);
  }, LIMITS.workerStartupWaitMs + 2 * DEADLINE_MS);

  /** A ready worker with one unlocked packet socket added as the ring at position 0 (request id 51). */
  async function workerWithRing() {
    const packet = await unlockedRingSocket();
    const w = startWorker();
    started[started.length - 1]!.fds.push(packet);
    scmSend(w.channel, encode(setup), [packet]);
    expect(await reply(w.channel)).toMatchObject({ type: "ready" });
    const counters = SharedStats.create();
    scmSend(w.channel, encode(ring), [counters.fd], true);
    counters.closeFd();
    scmSend(w.channel, encode({ type: "ring-add", id: 51, position: 0 }), [], true);
    expect(await reply(w.channel)).toEqual({ type: "ok", id: 51 });
    return { w, counters };
  }

  test.skipIf(!root)("a ring dropped without keep leaves its packet descriptor's number taken (by /dev/null), never free for an egress socket the seccomp filter would refuse", async () => {
    const { w, counters } = await workerWithRing();
    try {
      expect(readlinkSync(`/proc/${w.proc.pid}/fd/512`)).toStartWith("socket:");
      scmSend(w.channel, encode({ type: "ring-drop", id: 52, position: 0 }), [], true);
      expect(await reply(w.channel)).toEqual({ type: "ok", id: 52 });
      expect(readlinkSync(`/proc/${w.proc.pid}/fd/512`)).toBe("/dev/null");
      scmSend(w.channel, encode({ type: "stop", id: 53 }), [], true);
      expect(await reply(w.channel)).toEqual({ type: "ok", id: 53 });
      expect(await w.proc.exited).toBe(0);
    } finally {
      counters.release();
    }
  });
  test.skipIf(!root)("a malformed table request uses up the table sent for it: the next request naming that table finds none", async () => {
    const { w, counters } = await workerWithRing();
    try {
      // Before, the request after the malformed one took the stale table and applied it.
      const table = withGeneration(encodeWorkerTable([]), 7);
      const hash = tableBytesHash(table);
      scmSend(w.channel, table, [], true);
      scmSend(w.channel, encode(`{"type":"table","position":0,"generation":7,"hash":"XYZ","bytes":${table.length},"id":54}`), [], true);
      expect(await reply(w.channel)).toEqual({ type: "error", id: 54, message: "malformed request: hash: 3 characters, expected 16" });
      scmSend(w.channel, encode({ type: "table", id: 55, position: 0, generation: 7, hash, bytes: table.length }), [], true);
      expect(await reply(w.channel)).toEqual({ type: "error", id: 55, message: `no table of ${table.length} bytes with hash ${hash} on the channel` });
      scmSend(w.channel, table, [], true);
      scmSend(w.channel, encode({ type: "table", id: 56, position: 0, generation: 7, hash, bytes: table.length }), [], true);
      expect(await reply(w.channel)).toEqual({ type: "applied", id: 56, generation: 7, hash });
    } finally {
      counters.release();
    }
  });
});

describe("the supervisor's worker handle (src/supervisor/worker-handle.ts)", () => {
  test("a worker that refuses to start says why, and its start fails with that reason, also when its exit reaches the event loop together with the reason", async () => {
    // The race of a worker that refuses to run: it writes its `fatal` reply, then exits, and
    // the supervisor may see the exit first. The event loop is held until the worker has
    // exited, so the reply and the exit reach it together, every time; the start must fail
    // with the worker's reason, never 'exited during start-up (code 1)' (what the rule would
    // then show). Which of the two Bun hands to JS first is its own business, hence the
    // repetitions (with the exit rejecting at once, as before the fix, 6 runs of 8 failed with
    // 20 repetitions, 11 of 12 with 50): not proof, a real-worker check of the guarantee;
    // tests/unit/worker-start-race.test.ts makes the exit come first every time, with a
    // stand-in worker. A ring message for a position past the
    // worker's one socket is what the real worker refuses here (no privileges needed).
    const repetitions = 20;
    for (let i = 0; i < repetitions; i++) {
      const [blank, blankPeer] = scmPair();
      fdClose(blankPeer);
      try {
        const before = children();
        const starting = WorkerHandle.start({ index: 0, workers: 1, sockets: [blank], rings: [{ position: 1, ifname: ring.ifname, ifindex: ring.ifindex, slot: 0, members: 1, geometry: ring.geometry }], cpu: null, user: null });
        const failure = starting.then(
          () => null,
          (err: unknown) => err,
        );
        // Spawned and given its messages before start() first yields: the worker is there now.
        const pids = [...children()].filter((pid) => !before.has(pid));
        expect(pids).toHaveLength(1);
        blockUntilExited(pids[0]!, DEADLINE_MS);
        const err = await failure;
        expect({ repetition: i, error: err instanceof WorkerError ? err.message : err }).toEqual({ repetition: i, error: "bad ring message: position: 1 is past this worker's last position (0)" });
      } finally {
        fdClose(blank);
      }
    }
  });

  test.skipIf(!root)("a worker that reports fatal after ready and exits: the pending request and the exit reason carry its message and exit code 1", async () => {
    const packet = await unlockedRingSocket();
    const exits: [number | null, string | null][] = [];
    const handle = await WorkerHandle.start({ index: 0, workers: 1, sockets: [packet], rings: [], cpu: null, user: nobody, onExit: (code, signal) => exits.push([code, signal]) });
    try {
      // It dropped (with nothing to probe yet): what `workers` shows as its confinement.
      expect(handle.confinement).toMatchObject({ probes: 0 });
      const added = handle.addRing({ position: 0, ifname: ring.ifname, ifindex: ring.ifindex, slot: 0, members: 1, geometry: ring.geometry });
      await expect(added).rejects.toThrow(`worker 0 (pid ${handle.pid}): ${UNLOCKED} (exited, code 1)`);
      expect(await handle.exited).toBe(1);
      await Bun.sleep(0);
      expect(handle.fatal).toBe(UNLOCKED);
      expect(handle.fatalPosition).toBe(0);
      // What the pool records as the worker's last error (`mcrelay workers`: last_error).
      expect(handle.exitReason).toBe(`${UNLOCKED} (exited, code 1)`);
      expect(exits).toEqual([[1, null]]);
    } finally {
      handle.kill();
      await handle.exited;
      handle.release();
      fdClose(packet);
    }
  });

  test("a start that fails after the spawn (a ring message its schema refuses) kills the worker at once: none is left waiting for its set-up", async () => {
    const [blank, blankPeer] = scmPair();
    fdClose(blankPeer);
    try {
      const before = children();
      const badRing = { position: 0, ifname: ring.ifname, ifindex: ring.ifindex, slot: 0, members: 1, geometry: { ...ring.geometry, frameCount: 33 } };
      const starting = WorkerHandle.start({ index: 0, workers: 1, sockets: [blank], rings: [badRing], cpu: null, user: null });
      // Spawned before the ring message was refused: the worker is there now.
      const pids = [...children()].filter((pid) => !before.has(pid));
      expect(pids).toHaveLength(1);
      await expect(starting).rejects.toThrow("geometry: frameCount is not blockBytes / frameBytes x blockCount");
      // Killed, not left to its own start-up bound (before: blocked on its channel for ever).
      blockUntilExited(pids[0]!, 1000);
    } finally {
      fdClose(blank);
    }
  });

  test("the worker's environment is what it reads, not the supervisor's whole environment", async () => {
    const [blank, blankPeer] = scmPair();
    fdClose(blankPeer);
    process.env.MCRELAY_TEST_STRAY = "1";
    let handle: WorkerHandle | null = null;
    try {
      handle = await WorkerHandle.start({ index: 3, workers: 4, sockets: [blank], rings: [], cpu: null, user: null });
      const names = readFileSync(`/proc/${handle.pid}/environ`, "utf8").split("\0").filter((e) => e !== "").map((e) => e.slice(0, e.indexOf("=")));
      const allowed = ["MCRELAY_LOG_IDENTITY", "MCRELAY_LOG_LEVEL", "MCRELAY_LOG_FORMAT", "JOURNAL_STREAM", "PATH"];
      expect(names.filter((n) => !allowed.includes(n))).toEqual([]);
      expect(names).toContain("MCRELAY_LOG_IDENTITY");
      expect(readFileSync(`/proc/${handle.pid}/environ`, "utf8")).toContain("MCRELAY_LOG_IDENTITY=worker:3\0");
    } finally {
      delete process.env.MCRELAY_TEST_STRAY;
      if (handle) {
        handle.kill();
        await handle.exited;
        handle.release();
      }
      fdClose(blank);
    }
  });

  test("a test hook in the supervisor's environment does not reach the worker; one given as the handle's option does", async () => {
    const [blank, blankPeer] = scmPair();
    fdClose(blankPeer);
    // Before: MCRELAY_TEST_* names were passed on from the supervisor's environment (with a warning).
    process.env.MCRELAY_TEST_TABLE_RULES_MAX = "2";
    process.env.MCRELAY_TEST_DIVERGE_AFTER_MS = "1";
    const handles: WorkerHandle[] = [];
    try {
      const environ = (h: WorkerHandle) => readFileSync(`/proc/${h.pid}/environ`, "utf8").split("\0").filter((e) => e !== "");
      handles.push(await WorkerHandle.start({ index: 0, workers: 1, sockets: [blank], rings: [], cpu: null, user: null }));
      expect(environ(handles[0]!).filter((e) => e.startsWith("MCRELAY_TEST_"))).toEqual([]);
      handles.push(await WorkerHandle.start({ index: 0, workers: 1, sockets: [blank], rings: [], cpu: null, user: null, testHooks: { MCRELAY_TEST_TABLE_RULES_MAX: "5" } }));
      expect(environ(handles[1]!).filter((e) => e.startsWith("MCRELAY_TEST_"))).toEqual(["MCRELAY_TEST_TABLE_RULES_MAX=5"]);
    } finally {
      delete process.env.MCRELAY_TEST_TABLE_RULES_MAX;
      delete process.env.MCRELAY_TEST_DIVERGE_AFTER_MS;
      for (const h of handles) {
        h.kill();
        await h.exited;
        h.release();
      }
      fdClose(blank);
    }
  });
});
