// A worker process (`mcrelay _worker`): receives its AF_PACKET socket from the supervisor over
// the socketpair on fd 3, runs the Zig dataplane in time-boxed slices, and answers control
// messages between slices. It never opens privileged resources itself.
import * as v from "valibot";
import { logger, setLogLevel } from "../log.ts";
import { Dataplane, scmRecv, fdClose, privilegesDrop, confinementVerify, cpuPin } from "../native/lib.ts";
import { verifyDropped } from "./privileges.ts";
import { encodeWorkerTable, isTableBytes, tableBytesHash, tableRuleCount } from "../rules/wire.ts";
import { LAYOUT, LIMITS } from "../native/abi.ts";
import { FromWorkerSchema, PacketSocketSchema, ToWorkerSchema, type FromWorker, type ToWorker } from "./messages.ts";

/** The socketpair end the supervisor passes as the child's fd 3. */
export const CHANNEL_FD = 3;
/** Longest slice the dataplane runs before the worker's own event loop gets a turn. */
const RUN_BUDGET_MS = 50;

const log = logger("worker");

function send(msg: FromWorker): void {
  // Validated on the way out too: a malformed message is a bug here, not noise there.
  process.send!(v.parse(FromWorkerSchema, msg));
}

export async function runWorker(): Promise<number> {
  const testRulesMax = Number(process.env.MCRELAY_TEST_TABLE_RULES_MAX ?? "") || 0;
  if (!process.send) {
    log.error("_worker is started by the supervisor, not by hand");
    return 2;
  }
  const first = scmRecv(CHANNEL_FD, false);
  if (!first || first.fds.length !== 2) {
    log.error("expected a packet socket and counter memory on the channel, got descriptors:", first?.fds.length ?? 0);
    first?.fds.forEach((fd) => fdClose(fd));
    return 1;
  }
  const setup = v.safeParse(PacketSocketSchema, JSON.parse(new TextDecoder().decode(first.data)));
  if (!setup.success) {
    log.error("bad packet-socket message:", v.summarize(setup.issues));
    return 1;
  }
  const { ifname, ifindex, geometry, slot, members, user, cpu } = setup.output;
  if (cpu !== null) {
    // mcr's `pinning`: before the privilege drop, whose seccomp filter refuses affinity calls.
    // A CPU that is not there is reported and the worker runs unpinned (as the kernel places it).
    try {
      cpuPin(cpu);
      log.debug(`dataplane thread pinned to CPU ${cpu}`);
    } catch (err) {
      log.warn(`pinning: cannot pin to CPU ${cpu} (${(err as Error).message}); running unpinned`);
    }
  }
  /** Probes of the confinement that were refused, and their cost (null: no privilege drop). */
  let confinement: { probes: number; ms: number } | null = null;
  if (user) {
    // Everything privileged (the AF_PACKET socket) is in hand: give up the rest now.
    try {
      privilegesDrop(user.uid, user.gid, first.fds[0]!);
    } catch (err) {
      log.error(`${(err as Error).message}: refusing to run privileged`);
      send({ type: "fatal", message: `privilege drop failed: ${(err as Error).message}` });
      return 1;
    }
    const problems = verifyDropped(user);
    if (problems.length) {
      log.error(`privileges not dropped: ${problems.join("; ")}`);
      send({ type: "fatal", message: `privileges not dropped: ${problems[0]}` });
      return 1;
    }
    // What a compromised worker would try must be refused, by seccomp and the socket lock.
    const t0 = performance.now();
    const confined = confinementVerify(first.fds[0]!);
    const probeMs = performance.now() - t0;
    if (confined.problem !== null) {
      log.error(`confinement not verified: ${confined.problem}: refusing to run`);
      send({ type: "fatal", message: `confinement not verified: ${confined.problem}` });
      return 1;
    }
    confinement = { probes: confined.probes, ms: Number(probeMs.toFixed(3)) };
    log.debug(`running as ${user.name} (uid ${user.uid}, gid ${user.gid}), no capabilities, no_new_privs; confinement verified: ${confined.probes} probes refused in ${probeMs.toFixed(3)} ms`);
  }
  const dp = Dataplane.open({ packetFd: first.fds[0]!, statsFd: first.fds[1]!, wakeFd: CHANNEL_FD, ifindex, geometry }, ifname);
  const ring = dp.geometry();
  log.debug(`worker ${slot + 1}/${members} on ${ifname}: ring of ${ring.blockCount} blocks of ${ring.blockBytes} bytes`);

  let stopping = false;
  let ticking = false;
  // What the dataplane holds now, reported on every ping so drift is seen.
  let applied = { generation: 0, hash: tableBytesHash(encodeWorkerTable([])) };
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => (resolveDone = r));

  const handle = (raw: unknown) => {
    const parsed = v.safeParse(ToWorkerSchema, raw);
    if (!parsed.success) {
      log.warn("ignored malformed control message:", v.summarize(parsed.issues));
      return;
    }
    const msg: ToWorker = parsed.output;
    switch (msg.type) {
      case "table": {
        try {
          // Test-only: refuse tables of more rules than this, as a worker whose limits are
          // smaller than the supervisor's checks would. Never set outside tests.
          // The bytes are applied as they came: the Zig table builder is the one validator.
          const bytes = takeTable(msg.bytes, msg.hash);
          if (testRulesMax > 0 && tableRuleCount(bytes) > testRulesMax) throw new Error(`ERANGE: ${tableRuleCount(bytes)} rules (test limit ${testRulesMax})`);
          const hash = msg.hash;
          dp.apply(bytes);
          applied = { generation: msg.generation, hash };
          // The ring is drained only once rules are in place: what arrived before (e.g. while
          // a replaced worker was restarting) is forwarded, not dropped as unmatched.
          if (!ticking) {
            ticking = true;
            setImmediate(tick);
          }
          send({ type: "applied", id: msg.id, generation: msg.generation, hash });
        } catch (err) {
          send({ type: "error", id: msg.id, message: (err as Error).message });
        }
        return;
      }
      case "ping":
        send({ type: "pong", id: msg.id, ...applied });
        return;
      case "log-level":
        setLogLevel(msg.level);
        send({ type: "ok", id: msg.id });
        return;
      case "stop":
        stopping = true;
        if (!ticking) {
          ticking = true;
          setImmediate(tick);
        }
        // Counters are in memory the supervisor shares: nothing to report.
        send({ type: "ok", id: msg.id });
        return;
    }
  };
  process.on("message", handle);
  // The supervisor is gone: nothing may forward without it.
  process.on("disconnect", () => {
    stopping = true;
  });

  const tick = () => {
    if (stopping) {
      dp.close();
      process.off("message", handle);
      // Closing the IPC channel (after queued messages are written) lets the process exit.
      process.disconnect?.();
      resolveDone(0);
      return;
    }
    try {
      if (dp.run(RUN_BUDGET_MS)) drainChannel();
    } catch (err) {
      log.error((err as Error).message);
      send({ type: "fatal", message: (err as Error).message });
      dp.close();
      process.off("message", handle);
      process.disconnect?.();
      resolveDone(1);
      return;
    }
    // setImmediate lets IPC messages and signals in before the next slice.
    setImmediate(tick);
  };
  // Test-only: make this worker's table diverge from the supervisor's once, so the drift
  // repair path runs for real. Never set outside tests.
  const divergeAfterMs = Number(process.env.MCRELAY_TEST_DIVERGE_AFTER_MS ?? "");
  if (Number.isFinite(divergeAfterMs) && divergeAfterMs > 0) {
    setTimeout(() => {
      log.warn("test hook: dropping this worker's rules to simulate drift");
      const empty = encodeWorkerTable([]);
      dp.apply(empty);
      applied = { generation: applied.generation, hash: tableBytesHash(empty) };
    }, divergeAfterMs);
  }
  send({ type: "ready", pid: process.pid, confinement });
  return done;
}

/** Largest table a dataplane takes: header, rules_max rules, outputs_max outputs. */
const TABLE_BYTES_MAX = LAYOUT.TableHeader.size + LIMITS.rulesMax * LAYOUT.RuleDesc.size + LIMITS.outputsMax * LAYOUT.OutputDesc.size;
/** Tables read off the channel (by drainChannel) before their request was handled. */
const tables: Uint8Array[] = [];

/**
 * The table the supervisor sent just before its request (`length` bytes, content `hash`): from
 * the queue, else off the channel. Older tables (whose request never came) are dropped.
 */
function takeTable(length: number, hash: string): Uint8Array {
  drainChannel();
  while (tables.length > 0) {
    const bytes = tables.shift()!;
    if (bytes.length === length && tableBytesHash(bytes) === hash) return bytes;
    log.warn(`dropped a table of ${bytes.length} bytes from the channel: not the one requested`);
  }
  throw new Error(`no table of ${length} bytes with hash ${hash} on the channel`);
}

/** Reads one message off the channel: a table is queued, a wake-up dropped. False when empty. */
function readChannel(): boolean {
  const m = scmRecv(CHANNEL_FD, true, TABLE_BYTES_MAX + 1);
  if (!m) return false;
  if (m.fds.length > 0) {
    log.warn(`unexpected descriptors on the channel (${m.fds.length}), closed`);
    m.fds.forEach((fd) => fdClose(fd));
  }
  if (isTableBytes(m.data)) tables.push(m.data);
  return true;
}

/** Reads wake-ups off the channel, keeping any table for its request. */
function drainChannel(): void {
  for (let i = 0; i < 1024; i++) if (!readChannel()) return;
}
