// Runtime rules survive restarts: written atomically (temporary file, fsync, rename, fsync of
// the directory) on every change, and read back at start, rule by rule. A bad entry, or a file
// that does not parse, is reported and set aside under another name, never silently dropped; a
// file of a newer version stops the start (a downgrade must not discard what the newer version
// saved). The directory must be the daemon's alone: root writes in it.
import { closeSync, constants, existsSync, fstatSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import * as v from "valibot";
import { dirLock } from "../native/lib.ts";
import { ConfigError, NativeError } from "../errors.ts";
import { ALL_DIGITS, RuleSpecSchema, formatIssues, savedNameSchema, type RuleSpec } from "../config/rule-spec.ts";
import { logger } from "../log.ts";

const log = logger("state");

export const STATE_FILE = "rules.json";
/** The version this daemon writes and reads. */
export const STATE_VERSION = 1;
/** Set-aside files (.corrupt-*, .rejected-*) kept of each kind; older ones are removed. */
export const SET_ASIDE_KEPT_MAX = 5;
/** New files in the state directory: created, never opened through a planted name or symlink. */
const CREATE_NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW; // libuv adds O_CLOEXEC

/** The envelope; each rule and config id is then checked on its own (one bad entry never costs the others). */
const StateSchema = v.looseObject({
  version: v.literal(1),
  next_id: v.optional(v.unknown()),
  rules: v.array(v.unknown()),
  /** Ids of config-file rules by name, so they keep their ids across restarts. */
  config_ids: v.optional(v.record(v.string(), v.unknown())),
});
const KNOWN_KEYS = new Set(["version", "next_id", "rules", "config_ids"]);

// A saved name may be all digits: such names were allowed before they were refused for new rules.
const RuleEntrySchema = v.strictObject({ id: v.pipe(v.string(), v.regex(/^\d{1,20}$/)), spec: v.strictObject({ ...RuleSpecSchema.entries, name: savedNameSchema }) });

/** Rule ids are u64 in the dataplane; 0 is never given out. */
export const RULE_ID_MAX = 2n ** 64n - 1n;

/** A decimal id string within 1..2^64-1, else why not. */
function parseId(raw: unknown): bigint | string {
  if (typeof raw !== "string" || !/^\d{1,20}$/.test(raw)) return `id ${JSON.stringify(raw)} is not a decimal string`;
  const id = BigInt(raw);
  if (id < 1n || id > RULE_ID_MAX) return `id ${raw} is out of range (1 to 2^64-1)`;
  return id;
}

/** A saved entry that was not loaded, with the reason. */
export interface RejectedEntry {
  entry: unknown;
  reason: string;
}

export interface SavedRule {
  id: bigint;
  spec: RuleSpec;
}

export interface State {
  nextId: bigint;
  rules: SavedRule[];
  configIds: Map<string, bigint>;
  /** Entries set aside at load (kept in a .rejected- file next to the state file). */
  rejected?: RejectedEntry[];
}

/** The state file set aside at load (it did not parse): status and /metrics show it. */
export interface SetAside {
  path: string;
  reason: string;
  /** ISO 8601. */
  at: string;
}

/** Another process holds the state directory's lock. */
export class StateDirLockedError extends Error {}

/**
 * Creates the state directory if needed and takes its lock (flock) for the life of the
 * process: two daemons on one directory would give one id to two rules and overwrite each
 * other's rules. Returns the descriptor that holds the lock.
 */
export function lockStateDir(dir: string): number {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o750 });
  } catch (err) {
    throw new Error(`state directory ${dir}: cannot create it: ${(err as Error).message}`);
  }
  let fd: number;
  try {
    fd = dirLock(dir);
  } catch (err) {
    if (err instanceof NativeError && err.errno === 11 /* EAGAIN: LOCK_NB and the lock is taken */) throw new StateDirLockedError(`state directory ${dir} is locked by another daemon`);
    throw err;
  }
  checkDirOwner(dir, fd);
  return fd;
}

/**
 * The directory as opened for the lock (fstat: no second lookup of the path) must be owned by
 * this process's effective user and writable by no one else: mkdir's mode applies only to a
 * directory it creates, and another user who may write here could replace rules.json (rules
 * injected) or plant names the daemon, as root, would write through.
 */
function checkDirOwner(dir: string, fd: number): void {
  const st = fstatSync(fd);
  const euid = process.geteuid?.() ?? st.uid;
  const mode = (st.mode & 0o7777).toString(8).padStart(4, "0");
  if (st.uid !== euid || (st.mode & 0o022) !== 0) {
    const wrong = st.uid !== euid ? `is owned by uid ${st.uid}, not by uid ${euid} that runs the daemon` : "is writable by its group or others";
    closeSync(fd);
    throw new ConfigError(`state directory ${dir} (owner uid ${st.uid}, mode ${mode}) ${wrong}: another user could change the runtime rules; run \`chown ${euid} ${dir} && chmod go-w ${dir}\`, or use another --state-dir`);
  }
}

export class StateFile {
  readonly dir: string;
  readonly path: string;
  /** The file set aside by the last load (it did not parse), else null. */
  setAside: SetAside | null = null;

  constructor(dir: string) {
    this.dir = dir;
    this.path = join(dir, STATE_FILE);
  }

  /**
   * Reads the state, rule by rule: a bad, duplicate or out-of-range entry is set aside (written
   * to rules.json.rejected-TIME with its reason, and logged) and the others load. A file that is
   * not a state file at all (not JSON, no rule list) is set aside whole (rules.json.corrupt-TIME,
   * recorded in `setAside`); if it cannot be moved (read-only directory) that is a ConfigError,
   * never a crash. A file of a newer version is a ConfigError: its rules are not ours to drop.
   */
  load(): State {
    this.setAside = null;
    this.#removeTemporaries();
    if (!existsSync(this.path)) return { nextId: 1n, rules: [], configIds: new Map() };
    let problem: string;
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (err) {
      throw new ConfigError(`state file ${this.path}: cannot read it: ${(err as Error).message}`);
    }
    try {
      const json: unknown = JSON.parse(text);
      this.#refuseNewer(json);
      const parsed = v.safeParse(StateSchema, json);
      if (parsed.success) return this.#entries(parsed.output);
      problem = formatIssues(parsed.issues).join("; ");
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      problem = (err as Error).message;
    }
    const at = new Date();
    const aside = `${this.path}.corrupt-${stamp(at)}`;
    try {
      renameSync(this.path, aside);
    } catch (err) {
      throw new ConfigError(
        `state file ${this.path} is corrupt (${problem}) and cannot be set aside (${(err as Error).message}); repair or remove it, or start with another --state-dir`,
      );
    }
    log.error(`state file ${this.path} is corrupt (${problem}); moved to ${aside}; starting without runtime rules`);
    this.setAside = { path: aside, reason: problem, at: at.toISOString() };
    this.#prune(".corrupt-");
    return { nextId: 1n, rules: [], configIds: new Map() };
  }

  /** A numeric version above ours: written by a newer mcrelay, whose rules this one cannot read. */
  #refuseNewer(json: unknown): void {
    if (typeof json !== "object" || json === null || !("version" in json)) return;
    const version = json.version;
    if (typeof version !== "number" || !(version > STATE_VERSION)) return;
    throw new ConfigError(
      `state file ${this.path} has version ${version}, written by a newer mcrelay (this one reads version ${STATE_VERSION}); run the newer mcrelay, or move the file away to start without its runtime rules`,
    );
  }

  /** We hold the directory's lock: a temporary left by a crashed save is no one's. */
  #removeTemporaries(): void {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return; // no directory yet: nothing to remove
    }
    for (const name of names) {
      if (!name.startsWith(`${STATE_FILE}.tmp-`)) continue;
      try {
        rmSync(join(this.dir, name), { force: true });
      } catch (err) {
        log.warn(`state directory ${this.dir}: cannot remove the stale temporary ${name}: ${(err as Error).message}`);
      }
    }
  }

  /** Keeps the newest SET_ASIDE_KEPT_MAX files of a kind (the stamps sort by time); best effort. */
  #prune(kind: ".corrupt-" | ".rejected-"): void {
    try {
      const prefix = `${STATE_FILE}${kind}`;
      const files = readdirSync(this.dir).filter((f) => f.startsWith(prefix)).sort();
      for (const f of files.slice(0, Math.max(0, files.length - SET_ASIDE_KEPT_MAX))) rmSync(join(this.dir, f), { force: true });
    } catch (err) {
      log.warn(`state directory ${this.dir}: cannot remove old ${kind}* files: ${(err as Error).message}`);
    }
  }

  #entries(raw: v.InferOutput<typeof StateSchema>): State {
    for (const key of Object.keys(raw)) if (!KNOWN_KEYS.has(key)) log.warn(`state file ${this.path}: unknown key '${key}' ignored`);
    const rejected: RejectedEntry[] = [];
    const rules: SavedRule[] = [];
    const ids = new Set<bigint>();
    const names = new Set<string>();
    raw.rules.forEach((entry, i) => {
      const parsed = v.safeParse(RuleEntrySchema, entry);
      if (!parsed.success) return rejected.push({ entry, reason: `rules[${i}]: ${formatIssues(parsed.issues).join("; ")}` });
      const id = parseId(parsed.output.id);
      if (typeof id === "string") return rejected.push({ entry, reason: `rules[${i}]: ${id}` });
      if (ids.has(id)) return rejected.push({ entry, reason: `rules[${i}]: id ${id} is already used by another saved rule` });
      if (names.has(parsed.output.spec.name)) return rejected.push({ entry, reason: `rules[${i}]: name '${parsed.output.spec.name}' is already used by another saved rule` });
      ids.add(id);
      names.add(parsed.output.spec.name);
      rules.push({ id, spec: parsed.output.spec });
      const name = parsed.output.spec.name;
      if (ALL_DIGITS.test(name)) {
        log.warn(
          `state file ${this.path}: rule '${name}' (id ${id}) is named with digits only, which new rules may not be: remove, stats and trace read '${name}' as the id ${name} first; to rename it, add it under another name and remove ${id}`,
        );
      }
    });
    const configIds = new Map<string, bigint>();
    for (const [name, rawId] of Object.entries(raw.config_ids ?? {})) {
      const id = parseId(rawId);
      // A config rule whose saved id is unusable just gets a new one: nothing is lost.
      if (typeof id === "string") log.warn(`state file ${this.path}: config rule ${name}: ${id}; it gets a new id`);
      else if (ids.has(id)) log.warn(`state file ${this.path}: config rule ${name}: id ${id} is already used; it gets a new id`);
      else {
        ids.add(id);
        configIds.set(name, id);
      }
    }
    const highest = [...ids].reduce((a, b) => (a > b ? a : b), 0n);
    const saved = typeof raw.next_id === "string" ? parseId(raw.next_id) : "missing";
    let nextId = typeof saved === "bigint" ? saved : highest + 1n;
    if (nextId <= highest) nextId = highest + 1n;
    if (typeof saved === "string") log.warn(`state file ${this.path}: next_id ${saved === "missing" ? "missing" : `invalid (${saved})`}; using ${nextId}`);
    if (rejected.length > 0) this.#setAside(rejected);
    return { nextId, rules, configIds, ...(rejected.length > 0 ? { rejected } : {}) };
  }

  /** Keeps rejected entries in a file of their own (best effort) and logs each. */
  #setAside(rejected: RejectedEntry[]): void {
    const file = `${this.path}.rejected-${stamp()}`;
    let where = `kept in ${file}`;
    try {
      writeNew(file, `${JSON.stringify(rejected, (_k, x) => (typeof x === "bigint" ? x.toString() : x), 2)}\n`);
      this.#prune(".rejected-");
    } catch (err) {
      where = `could not be kept in ${file} (${(err as Error).message}); the entry is in this log line`;
    }
    for (const r of rejected) log.warn(`saved rule not loaded: ${r.reason}; ${where}: ${JSON.stringify(r.entry)}`);
  }

  save(state: State): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o750 });
    const body = JSON.stringify(
      {
        version: STATE_VERSION,
        next_id: state.nextId.toString(),
        rules: state.rules.map((r) => ({ id: r.id.toString(), spec: r.spec })),
        config_ids: Object.fromEntries([...state.configIds].map(([name, id]) => [name, id.toString()])),
      },
      null,
      2,
    );
    const tmp = `${this.path}.tmp-${process.pid}`;
    try {
      writeNew(tmp, `${body}\n`);
      renameSync(tmp, this.path);
    } catch (err) {
      // A temporary that was not renamed is never a state file: remove it (a full disk would
      // otherwise keep the space it took). The save's own error is the one reported.
      try {
        rmSync(tmp, { force: true });
      } catch (cleanup) {
        log.warn(`cannot remove ${tmp}: ${(cleanup as Error).message}`);
      }
      throw err;
    }
    // The rename returned: the new file is the state file, the change is made. A failed fsync of
    // the directory only leaves the rename less durable across a power loss; reporting the change
    // as not made (and undoing it in memory) would make what runs differ from what is saved.
    try {
      const dirFd = openSync(this.dir, "r");
      try {
        fsyncSync(dirFd);
      } finally {
        closeSync(dirFd);
      }
    } catch (err) {
      log.warn(`state file ${this.path} saved, but the directory could not be synced (${(err as Error).message}): a power loss now may bring back the previous file`);
    }
  }
}

/**
 * Writes `text` to a new file, synced: a stale file of that name is removed first, and the open
 * (O_EXCL, O_NOFOLLOW) refuses a name planted in between instead of writing through it.
 */
function writeNew(path: string, text: string): void {
  rmSync(path, { force: true });
  const fd = openSync(path, CREATE_NEW, 0o640);
  try {
    writeAll(fd, Buffer.from(text));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes every byte of `buf`: write(2) on a full file system (ENOSPC, EDQUOT) may write part and
 * return a short count without an error, and a state file cut short would replace a good one.
 * The loop ends: each round writes at least one byte or throws (a count of 0 is refused).
 */
function writeAll(fd: number, buf: Uint8Array): void {
  let off = 0;
  while (off < buf.length) {
    const n = writeSync(fd, buf, off, buf.length - off);
    if (n <= 0) throw new Error(`write returned ${n} with ${buf.length - off} bytes left`);
    off += n;
  }
}

function stamp(at = new Date()): string {
  return at.toISOString().replace(/[:.]/g, "-");
}
