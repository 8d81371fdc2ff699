// Trace sessions (control requests trace-start, trace-read, trace-stop), shared by the daemon
// and `forward --socket`. One session at a time: it arms the trace ring of every worker of the
// rule's input interface (re-arming a worker that was restarted), collects what they publish,
// and disarms them when it stops. A session whose client stops reading (it died, or lost its
// connection) ends by itself after LEASE_MS: tracing is never left on without a reader.
import { randomUUID } from "node:crypto";
import { parseIp } from "../base/address.ts";
import { formatEndpoint } from "../base/endpoint.ts";
import { ControlError } from "../control/server.ts";
import { logger } from "../log.ts";
import type { Rule } from "../rules/rule.ts";
import { arm, armedFor, armedGroup, disarm, drain, overflow, ready, type RawRecord } from "./trace-ring.ts";
import type { TraceRecordJson } from "../control/responses.ts";

export type { TraceRecordJson };

const log = logger("trace");

/** A session not read for this long is stopped. */
export const LEASE_MS = 5000;
/** Records one trace-read returns at most (captures carry up to 1920 frame bytes each). */
export const READ_RECORDS_MAX = 1024;
export const READ_CAPTURE_RECORDS_MAX = 256;

export interface TraceSource {
  /** The rule by name or id, or undefined. */
  find(nameOrId: string): Rule | undefined;
  /** The trace memory of every live worker of an interface (use synchronously). */
  memories(iface: string): Uint8Array[];
}

interface Session {
  id: string;
  rule: Rule;
  capture: boolean;
  allUnmatched: boolean;
  startedAt: number;
  lastReadAt: number;
  /** Overflow counts of the regions when they were armed (per region), to report the difference. */
  overflowBase: Map<Uint8Array, number>;
  overflow: number;
  records: number;
  /** Records dropped because a worker's ring made no sense (trace-ring.ts drain). */
  corrupt: number;
}


/** A record's address: dotted IPv4 when v4-mapped, else IPv6 in canonical (compressed) form. */
function v4(bytes: Uint8Array): string {
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) return `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return parseIp(groups.join(":"))?.text ?? groups.join(":");
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export class Tracer {
  readonly #source: TraceSource;
  #session: Session | null = null;
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(source: TraceSource) {
    this.#source = source;
    this.#timer = setInterval(() => this.#expire(), 1000);
    this.#timer.unref?.();
  }

  get active(): { session: string; rule: string } | null {
    return this.#session ? { session: this.#session.id, rule: this.#session.rule.name } : null;
  }

  start(nameOrId: string, capture: boolean, allUnmatched = false) {
    const rule = this.#source.find(nameOrId);
    if (!rule) throw new ControlError("not_found", `no rule named or numbered '${nameOrId}'`);
    const s = this.#session;
    if (s) {
      throw new ControlError("busy", `a ${s.capture ? "capture" : "trace"} of rule ${s.rule.name} is running (one at a time; it ends when its client stops, or ${LEASE_MS / 1000} s after it stops reading)`);
    }
    const now = Date.now();
    this.#session = { id: randomUUID(), rule, capture, allUnmatched, startedAt: now, lastReadAt: now, overflowBase: new Map(), overflow: 0, records: 0, corrupt: 0 };
    this.#armAll(this.#session);
    log.info(`${capture ? "capture" : "trace"} of rule ${rule.name} started`);
    return {
      session: this.#session.id,
      rule: rule.name,
      id: rule.id.toString(),
      interface: rule.input.iface,
      input: formatEndpoint(rule.input),
      outputs: rule.outputs.map((o) => formatEndpoint(o.to)),
      capture,
      workers: this.#source.memories(rule.input.iface).length,
    };
  }

  read(sessionId: string) {
    const s = this.#get(sessionId);
    s.lastReadAt = Date.now();
    const before = this.#follow(s);
    this.#armAll(s);
    return { records: [...before, ...this.#collect(s)], overflow: s.overflow, active: true };
  }

  stop(sessionId: string) {
    const s = this.#get(sessionId);
    const records = this.#collect(s);
    this.#end(s, "stopped by its client");
    return { records, overflow: s.overflow, total: s.records };
  }

  /** Disarms everything (daemon stop). */
  close(): void {
    clearInterval(this.#timer);
    if (this.#session) this.#end(this.#session, "daemon stopping");
  }

  #get(id: string): Session {
    const s = this.#session;
    if (!s || s.id !== id) throw new ControlError("not_found", `no trace session '${id}' (it ended: stopped, or not read for ${LEASE_MS / 1000} s)`);
    return s;
  }

  /**
   * The session follows its rule (by id: `add --replace` keeps it) when it was replaced: what the
   * workers published under the old input is collected first, then the old interface's workers
   * are disarmed, so #armAll arms the new group (and interface). Returns those last records.
   */
  #follow(s: Session): TraceRecordJson[] {
    const current = this.#source.find(s.rule.id.toString());
    if (!current || current.id !== s.rule.id || current === s.rule) return [];
    const sameInput = current.input.iface === s.rule.input.iface && sameBytes(current.input.addr.bytes, s.rule.input.addr.bytes);
    if (sameInput) {
      s.rule = current;
      return [];
    }
    const last = this.#collect(s);
    for (const mem of this.#source.memories(s.rule.input.iface)) if (armedFor(mem) === s.rule.id) disarm(mem);
    log.info(`rule ${s.rule.name} was replaced (input ${formatEndpoint(s.rule.input)} -> ${formatEndpoint(current.input)}): the ${s.capture ? "capture" : "trace"} follows it`);
    s.rule = current;
    return last;
  }

  /** Arms every worker of the interface that is not armed for this rule and group (new or restarted). */
  #armAll(s: Session): void {
    const group = s.rule.input.addr.bytes;
    for (const mem of this.#source.memories(s.rule.input.iface)) {
      if (!ready(mem) || (armedFor(mem) === s.rule.id && sameBytes(armedGroup(mem), group))) continue;
      arm(mem, { ruleId: s.rule.id, group, capture: s.capture, allUnmatched: s.allUnmatched });
      s.overflowBase.set(mem, overflow(mem));
    }
  }

  /**
   * Takes what the workers published, the read budget shared between them: each gets an equal
   * part of what is left, then what they left unused goes to those with more (a busy first
   * worker must not starve the others into overflowing).
   */
  #collect(s: Session): TraceRecordJson[] {
    const max = s.capture ? READ_CAPTURE_RECORDS_MAX : READ_RECORDS_MAX;
    const mems = this.#source.memories(s.rule.input.iface).filter(ready);
    const raw: RawRecord[] = [];
    const take = (mem: Uint8Array, budget: number): number => {
      const got = drain(mem, budget);
      if (got.corrupt) {
        // Warned once a session (it is read every 100 ms); counted in the line that ends it.
        if (s.corrupt === 0) log.warn(`a worker's trace ring of ${s.rule.input.iface} is corrupt (${got.corrupt}): its unread records are dropped`);
        s.corrupt += 1;
      }
      raw.push(...got.records);
      return got.records.length;
    };
    const full: Uint8Array[] = [];
    mems.forEach((mem, i) => {
      const share = Math.floor((max - raw.length) / (mems.length - i));
      if (take(mem, share) === share && share > 0) full.push(mem);
    });
    for (const mem of full) if (raw.length < max) take(mem, max - raw.length);
    let over = 0;
    for (const mem of mems) over += overflow(mem) - (s.overflowBase.get(mem) ?? 0);
    s.overflow = Math.max(s.overflow, over);
    raw.sort((a, b) => (a.timeNs < b.timeNs ? -1 : a.timeNs > b.timeNs ? 1 : 0));
    s.records += raw.length;
    return raw.map((r) => this.#json(s, r));
  }

  #json(s: Session, r: RawRecord): TraceRecordJson {
    const ms = Number(r.timeNs / 1_000_000n);
    const ours = r.ruleId !== 0n && r.ruleId === s.rule.id;
    const rec: TraceRecordJson = {
      time: new Date(ms).toISOString(),
      time_ns: r.timeNs.toString(),
      interface: s.rule.input.iface,
      vlan: r.vlan,
      src: v4(r.src),
      dst: v4(r.dst),
      src_port: r.srcPort,
      dst_port: r.dstPort,
      length: r.payloadLen,
      wire_length: r.wireLen,
      ttl: r.ttl,
      dscp: r.tos >> 2,
      ecn: r.tos & 3,
      verdict: r.verdict,
      reason: r.reason,
      // A record names the session's rule only when it is that rule's (a matched record).
      rule: ours ? s.rule.name : null,
      outputs: r.outputs.map((o) => ({ to: ours && s.rule.outputs[o.index] ? formatEndpoint(s.rule.outputs[o.index]!.to) : `output ${o.index}`, result: o.result })),
      outputs_total: r.outputsTotal,
    };
    if (r.frame) {
      rec.frame = Buffer.from(r.frame).toString("base64");
      if (r.tag) rec.frame_tag = r.tag;
    }
    return rec;
  }

  #end(s: Session, why: string): void {
    for (const mem of this.#source.memories(s.rule.input.iface)) if (armedFor(mem) === s.rule.id) disarm(mem);
    this.#session = null;
    log.info(`${s.capture ? "capture" : "trace"} of rule ${s.rule.name} ended (${why}): ${s.records} records, ${s.overflow} lost to overflow${s.corrupt ? `, ${s.corrupt} corrupt ring read(s) dropped` : ""}`);
  }

  #expire(): void {
    const s = this.#session;
    if (s && Date.now() - s.lastReadAt > LEASE_MS) this.#end(s, `not read for ${LEASE_MS / 1000} s: its client is gone`);
  }
}
