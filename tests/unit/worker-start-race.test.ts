// The start-up failure ordering of src/supervisor/worker-handle.ts (commit 1b0b8a2): a worker
// that refuses to run writes its reason (`fatal`) and then exits, and the supervisor may see
// the exit before it has read the reason. It must wait for the worker's replies to be read to
// the end before it tells the exit: the start fails with the worker's reason, which is what the
// rule and `mcrelay workers` show, never "worker N exited during start-up (code 1)".
//
// The real worker's side of that race is left to chance (tests/unit/worker-protocol.test.ts
// holds it open as far as the real worker allows). Here it is made certain: the worker
// executable is replaced, for this test only, by tests/support/late-reason-worker.py, whose
// reason reaches the channel only after the supervisor reaped its exit.
import { afterAll, describe, expect, mock, test } from "bun:test";
import { join } from "node:path";
import { fdClose, scmPair } from "../../src/native/lib.ts";
import * as lib from "../../src/native/lib.ts";

const STAND_IN = join(import.meta.dir, "../support/late-reason-worker.py");
const realWorkerExecutable = lib.workerExecutable;
/** The stand-in is started only while this is set; every other start gets the real worker. */
let standIn = false;
mock.module("../../src/native/lib.ts", () => ({ ...lib, workerExecutable: () => (standIn ? STAND_IN : realWorkerExecutable()) }));
const { WorkerError, WorkerHandle } = await import("../../src/supervisor/worker-handle.ts");

afterAll(() => {
  standIn = false;
});

describe("worker start-up failure ordering (src/supervisor/worker-handle.ts)", () => {
  test("a worker whose reason arrives after its exit was seen: the start fails with the worker's reason, not with 'exited during start-up'", async () => {
    const reason = "privileges not dropped: CapEff is 0000000000002000 (stand-in)";
    const [blank, blankPeer] = scmPair();
    fdClose(blankPeer);
    standIn = true;
    try {
      const failure = await WorkerHandle.start({ index: 0, workers: 1, sockets: [blank], rings: [], cpu: null, user: null, testHooks: { MCRELAY_TEST_FATAL: reason } }).then(
        () => null,
        (err: unknown) => err,
      );
      expect(failure).toBeInstanceOf(WorkerError);
      expect((failure as Error).message).toBe(reason);
    } finally {
      standIn = false;
      fdClose(blank);
    }
  });
});
