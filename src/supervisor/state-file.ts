// Runtime rules survive restarts: written atomically (temporary file, fsync, rename, fsync of
// the directory) on every change, and read back at start. A corrupt file is reported and set
// aside under another name, never silently dropped.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { join } from "node:path";
import * as v from "valibot";
import { dirLock } from "../native/lib.ts";
import { NativeError } from "../errors.ts";
import { RuleSpecSchema, formatIssues, type RuleSpec } from "../config/rule-spec.ts";
import { logger } from "../log.ts";

const log = logger("state");

export const STATE_FILE = "rules.json";

const StateSchema = v.strictObject({
  version: v.literal(1),
  next_id: v.pipe(v.string(), v.regex(/^\d+$/)),
  rules: v.array(v.strictObject({ id: v.pipe(v.string(), v.regex(/^\d+$/)), spec: RuleSpecSchema })),
  /** Ids of config-file rules by name, so they keep their ids across restarts. */
  config_ids: v.optional(v.record(v.string(), v.pipe(v.string(), v.regex(/^\d+$/)))),
});

export interface SavedRule {
  id: bigint;
  spec: RuleSpec;
}

export interface State {
  nextId: bigint;
  rules: SavedRule[];
  configIds: Map<string, bigint>;
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
  try {
    return dirLock(dir);
  } catch (err) {
    if (err instanceof NativeError && err.errno === 11 /* EAGAIN: LOCK_NB and the lock is taken */) throw new StateDirLockedError(`state directory ${dir} is locked by another daemon`);
    throw err;
  }
}

export class StateFile {
  readonly dir: string;
  readonly path: string;

  constructor(dir: string) {
    this.dir = dir;
    this.path = join(dir, STATE_FILE);
  }

  load(): State {
    if (!existsSync(this.path)) return { nextId: 1n, rules: [], configIds: new Map() };
    let problem: string;
    try {
      const parsed = v.safeParse(StateSchema, JSON.parse(readFileSync(this.path, "utf8")));
      if (parsed.success) {
        return {
          nextId: BigInt(parsed.output.next_id),
          rules: parsed.output.rules.map((r) => ({ id: BigInt(r.id), spec: r.spec })),
          configIds: new Map(Object.entries(parsed.output.config_ids ?? {}).map(([name, id]) => [name, BigInt(id)])),
        };
      }
      problem = formatIssues(parsed.issues).join("; ");
    } catch (err) {
      problem = (err as Error).message;
    }
    const aside = `${this.path}.corrupt-${new Date().toISOString().replace(/[:.]/g, "-")}`;
    renameSync(this.path, aside);
    log.error(`state file ${this.path} is corrupt (${problem}); moved to ${aside}; starting without runtime rules`);
    return { nextId: 1n, rules: [], configIds: new Map() };
  }

  save(state: State): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o750 });
    const body = JSON.stringify(
      {
        version: 1,
        next_id: state.nextId.toString(),
        rules: state.rules.map((r) => ({ id: r.id.toString(), spec: r.spec })),
        config_ids: Object.fromEntries([...state.configIds].map(([name, id]) => [name, id.toString()])),
      },
      null,
      2,
    );
    const tmp = `${this.path}.tmp-${process.pid}`;
    const fd = openSync(tmp, "w", 0o640);
    try {
      writeSync(fd, `${body}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    const dirFd = openSync(this.dir, "r");
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  }
}
