// A worker process (`mcrelay _worker`): receives its AF_PACKET sockets from the supervisor over
// the socketpair on fd 3 (one per position, set up for an input interface or blank until the
// supervisor sets it up for one), runs one Zig dataplane per ring from one thread in
// time-boxed slices (mcr_dp_run_many), and answers control messages between slices. It never
// opens privileged resources itself.
import * as v from "valibot";
import { logger, setLogLevel } from "../log.ts";
import { Dataplane, scmRecv, fdClose, fdPlace, privilegesDrop, confinementVerify, cpuPin } from "../native/lib.ts";
import { verifyDropped } from "./privileges.ts";
import { encodeWorkerTable, isTableBytes, tableBytesHash, tableRuleCount } from "../rules/wire.ts";
import { LAYOUT, LIMITS } from "../native/abi.ts";
import { FromWorkerSchema, RingSchema, ToWorkerSchema, WorkerSetupSchema, type FromWorker, type RingMessage, type ToWorker } from "./messages.ts";

/** The socketpair end the supervisor passes as the child's fd 3. */
export const CHANNEL_FD = 3;
/** Longest slice the dataplane runs before the worker's own event loop gets a turn. */
const RUN_BUDGET_MS = 50;

const log = logger("worker");

function send(msg: FromWorker): void {
  // Validated on the way out too: a malformed message is a bug here, not noise there.
  process.send!(v.parse(FromWorkerSchema, msg));
}

/** A ring this worker serves: the packet socket at a position, its dataplane and table. */
interface Ring {
  position: number;
  ifname: string;
  dp: Dataplane;
  /** What the dataplane holds now, reported on every ping so drift is seen. */
  applied: { generation: number; hash: string };
  /** Drained once its first table is applied (frames that waited are forwarded, not unmatched). */
  draining: boolean;
}

export async function runWorker(): Promise<number> {
  const testRulesMax = Number(process.env.MCRELAY_TEST_TABLE_RULES_MAX ?? "") || 0;
  if (!process.send) {
    log.error("_worker is started by the supervisor, not by hand");
    return 2;
  }
  const first = scmRecv(CHANNEL_FD, false);
  const parsedSetup = first ? v.safeParse(WorkerSetupSchema, parseJson(first.data)) : null;
  if (!first || !parsedSetup?.success || first.fds.length !== parsedSetup.output.positions) {
    log.error(`bad worker set-up message (${first?.fds.length ?? 0} descriptors)${parsedSetup && !parsedSetup.success ? `: ${v.summarize(parsedSetup.issues)}` : ""}`);
    first?.fds.forEach((fd) => fdClose(fd));
    return 1;
  }
  const { index, workers, positions, user, cpu } = parsedSetup.output;
  // The packet sockets at fixed numbers, before anything else: the seccomp filter covers the range.
  const fdFirst = LIMITS.packetFdFirst;
  try {
    fdPlace(first.fds, fdFirst);
  } catch (err) {
    log.error(`cannot place the packet sockets: ${(err as Error).message}`);
    return 1;
  }
  const initial: { ring: RingMessage; statsFd: number }[] = [];
  for (let i = 0; i < parsedSetup.output.rings; i++) {
    const m = scmRecv(CHANNEL_FD, false);
    const ring = m ? v.safeParse(RingSchema, parseJson(m.data)) : null;
    if (!m || !ring?.success || m.fds.length !== 1) {
      log.error("bad ring message at start-up");
      m?.fds.forEach((fd) => fdClose(fd));
      return 1;
    }
    initial.push({ ring: ring.output, statsFd: m.fds[0]! });
  }
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
    // Everything privileged (the AF_PACKET sockets) is in hand: give up the rest now.
    try {
      privilegesDrop(user.uid, user.gid, fdFirst, positions);
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
    // What a compromised worker would try must be refused, by seccomp and the socket lock, on
    // every packet socket that is set up (a blank one is checked when its ring is added).
    const t0 = performance.now();
    let probes = 0;
    for (const { ring } of initial) {
      const confined = confinementVerify(fdFirst + ring.position);
      if (confined.problem !== null) {
        log.error(`confinement not verified: ${confined.problem}: refusing to run`);
        send({ type: "fatal", message: `confinement not verified: ${confined.problem}` });
        return 1;
      }
      probes += confined.probes;
    }
    const probeMs = performance.now() - t0;
    confinement = probes > 0 ? { probes, ms: Number(probeMs.toFixed(3)) } : null;
    log.debug(`running as ${user.name} (uid ${user.uid}, gid ${user.gid}), no capabilities, no_new_privs; confinement verified: ${probes} probes refused in ${probeMs.toFixed(3)} ms`);
  }

  const rings = new Map<number, Ring>();
  /** Native handles of the rings being drained, rebuilt when that set changes. */
  let handles: BigUint64Array | null = null;
  const emptyHash = tableBytesHash(encodeWorkerTable([]));
  const openRing = (ring: RingMessage, statsFd: number): Ring => {
    if (rings.has(ring.position)) {
      fdClose(statsFd);
      throw new Error(`EEXIST: position ${ring.position} already serves ${rings.get(ring.position)!.ifname}`);
    }
    const dp = Dataplane.open({ packetFd: fdFirst + ring.position, statsFd, wakeFd: CHANNEL_FD, ifindex: ring.ifindex, geometry: ring.geometry }, ring.ifname);
    const g = dp.geometry();
    log.debug(`worker ${index + 1}/${workers}: ring ${ring.slot + 1}/${ring.members} of ${ring.ifname} at position ${ring.position}, ${g.blockCount} blocks of ${g.blockBytes} bytes`);
    const r: Ring = { position: ring.position, ifname: ring.ifname, dp, applied: { generation: 0, hash: emptyHash }, draining: false };
    rings.set(ring.position, r);
    return r;
  };
  for (const { ring, statsFd } of initial) openRing(ring, statsFd);

  let stopping = false;
  let ticking = false;
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => (resolveDone = r));
  const startTicking = () => {
    handles = null;
    if (!ticking) {
      ticking = true;
      setImmediate(tick);
    }
  };
  const ringAt = (position: number): Ring => {
    const r = rings.get(position);
    if (!r) throw new Error(`ENOENT: no ring at position ${position}`);
    return r;
  };

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
          const ring = ringAt(msg.position);
          // Test-only: refuse tables of more rules than this, as a worker whose limits are
          // smaller than the supervisor's checks would. Never set outside tests.
          // The bytes are applied as they came: the Zig table builder is the one validator.
          const bytes = takeTable(msg.bytes, msg.hash);
          if (testRulesMax > 0 && tableRuleCount(bytes) > testRulesMax) throw new Error(`ERANGE: ${tableRuleCount(bytes)} rules (test limit ${testRulesMax})`);
          const hash = msg.hash;
          ring.dp.apply(bytes);
          ring.applied = { generation: msg.generation, hash };
          // The ring is drained only once rules are in place: what arrived before (e.g. while
          // a replaced worker was restarting) is forwarded, not dropped as unmatched.
          if (!ring.draining) {
            ring.draining = true;
            startTicking();
          }
          send({ type: "applied", id: msg.id, generation: msg.generation, hash });
        } catch (err) {
          send({ type: "error", id: msg.id, message: (err as Error).message });
        }
        return;
      }
      case "ring-add": {
        try {
          const { ring, statsFd } = takeRing(msg.position);
          openRing(ring, statsFd);
          if (user) {
            // The supervisor set this socket up after the drop: its lock and our confinement on it.
            const confined = confinementVerify(fdFirst + ring.position);
            if (confined.problem !== null) {
              log.error(`confinement not verified on ${ring.ifname}: ${confined.problem}: refusing to run`);
              send({ type: "fatal", message: `confinement not verified: ${confined.problem}` });
              stopping = true;
              startTicking();
              return;
            }
          }
          send({ type: "ok", id: msg.id });
        } catch (err) {
          send({ type: "error", id: msg.id, message: (err as Error).message });
        }
        return;
      }
      case "ring-drop": {
        const r = rings.get(msg.position);
        if (r) {
          rings.delete(msg.position);
          handles = null;
          // Counters stay in the memory the supervisor shares. With `keep` only the ring is
          // unmapped: the supervisor makes the socket blank again and reuses the position;
          // otherwise our reference to the socket is closed too (the supervisor closes its own).
          r.dp.close(msg.keep === true);
        }
        send({ type: "ok", id: msg.id });
        return;
      }
      case "ping": {
        const r = rings.get(msg.position);
        if (!r) send({ type: "error", id: msg.id, message: `ENOENT: no ring at position ${msg.position}` });
        else send({ type: "pong", id: msg.id, ...r.applied });
        return;
      }
      case "log-level":
        setLogLevel(msg.level);
        send({ type: "ok", id: msg.id });
        return;
      case "stop":
        stopping = true;
        startTicking();
        // Counters are in memory the supervisor shares: nothing to report.
        send({ type: "ok", id: msg.id });
        return;
    }
  };
  process.on("message", handle);
  // The supervisor is gone: nothing may forward without it.
  process.on("disconnect", () => {
    stopping = true;
    startTicking();
  });

  const closeAll = () => {
    for (const r of rings.values()) r.dp.close();
    rings.clear();
    process.off("message", handle);
  };
  const tick = () => {
    if (stopping) {
      closeAll();
      // Closing the IPC channel (after queued messages are written) lets the process exit.
      process.disconnect?.();
      resolveDone(0);
      return;
    }
    if (handles === null) {
      const active = [...rings.values()].filter((r) => r.draining).map((r) => r.dp);
      if (active.length === 0) {
        // Nothing to drain: wait for a table (the IPC handler starts ticking again).
        ticking = false;
        return;
      }
      handles = Dataplane.handles(active);
    }
    try {
      if (Dataplane.runMany(handles, RUN_BUDGET_MS)) drainChannel();
    } catch (err) {
      log.error((err as Error).message);
      send({ type: "fatal", message: (err as Error).message });
      closeAll();
      process.disconnect?.();
      resolveDone(1);
      return;
    }
    // setImmediate lets IPC messages and signals in before the next slice.
    setImmediate(tick);
  };
  // Test-only: make this worker's tables diverge from the supervisor's once, so the drift
  // repair path runs for real. Never set outside tests.
  const divergeAfterMs = Number(process.env.MCRELAY_TEST_DIVERGE_AFTER_MS ?? "");
  if (Number.isFinite(divergeAfterMs) && divergeAfterMs > 0) {
    setTimeout(() => {
      log.warn("test hook: dropping this worker's rules to simulate drift");
      const empty = encodeWorkerTable([]);
      for (const r of rings.values()) {
        r.dp.apply(empty);
        r.applied = { generation: r.applied.generation, hash: tableBytesHash(empty) };
      }
    }, divergeAfterMs);
  }
  send({ type: "ready", pid: process.pid, confinement });
  return done;
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/** Largest table a dataplane takes: header, rules_max rules, outputs_max outputs. */
const TABLE_BYTES_MAX = LAYOUT.TableHeader.size + LIMITS.rulesMax * LAYOUT.RuleDesc.size + LIMITS.outputsMax * LAYOUT.OutputDesc.size;
/** Tables read off the channel (by drainChannel) before their request was handled. */
const tables: Uint8Array[] = [];
/** Ring messages (with their counter memfd) read off the channel before their request. */
const ringMessages: { ring: RingMessage; statsFd: number }[] = [];

/** The ring message for `position` the supervisor sent just before its ring-add request. */
function takeRing(position: number): { ring: RingMessage; statsFd: number } {
  drainChannel();
  const i = ringMessages.findIndex((m) => m.ring.position === position);
  if (i < 0) throw new Error(`no ring message for position ${position} on the channel`);
  return ringMessages.splice(i, 1)[0]!;
}

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
  if (m.fds.length === 1 && !isTableBytes(m.data)) {
    const ring = v.safeParse(RingSchema, parseJson(m.data));
    if (ring.success) {
      ringMessages.push({ ring: ring.output, statsFd: m.fds[0]! });
      return true;
    }
  }
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
