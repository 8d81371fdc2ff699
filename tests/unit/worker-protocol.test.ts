// The worker's side of the protocol (zig/worker.zig), spoken to directly on its socketpair: a
// malformed message is answered (a request: an error reply with its id naming the field; the
// set-up message: a fatal reply naming the field, then exit 1), never silence the supervisor
// could only time out on, and the worker keeps serving afterwards. No privileges needed: the
// worker is started without a user (no drop) and with no rings (its one packet socket position
// holds the other end of a spare socketpair, never used as a packet socket).
import { afterEach, describe, expect, test } from "bun:test";
import { fdClose, fdInherit, scmPair, scmRecv, scmSend, workerExecutable } from "../../src/native/lib.ts";

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
function startWorker(): { proc: ReturnType<typeof Bun.spawn>; channel: number; blank: number } {
  const [channel, theirs] = scmPair();
  const [blank, blankPeer] = scmPair();
  fdClose(blankPeer);
  fdInherit(theirs);
  const proc = Bun.spawn([workerExecutable(), "_worker", "--index", "0"], {
    stdio: ["ignore", "ignore", "ignore", theirs],
    env: { ...process.env, MCRELAY_LOG_LEVEL: "silent" },
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
});
