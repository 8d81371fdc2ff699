// One place for error kinds and the exit codes they map to (documented in docs/reference.md).
import { constants } from "node:os";

export const EXIT = {
  ok: 0,
  /** Unexpected failure: a bug or an unhandled system error. */
  failure: 1,
  /** Wrong command-line usage: unknown flag, bad endpoint, value out of range. */
  usage: 2,
  /** A configuration file or rule that is invalid. */
  config: 3,
  /** The daemon is not running (no control socket). */
  notRunning: 4,
  /** Permission denied (no CAP_NET_RAW, control socket not accessible). */
  permission: 5,
  /** The daemon refused the request. */
  refused: 6,
  /** A system resource problem: interface missing, address in use. */
  system: 7,
  /** Another daemon runs on the same state directory or control socket. */
  running: 8,
  /** `sink --expect N` received fewer than N packets (loss, or a stream that never came). */
  shortfall: 9,
  /** `diagnose` found at least one problem (an error or a warning). */
  problems: 10,
} as const;

/** What each exit code means, for `mcrelay help` and docs/reference.md. */
export const EXIT_MEANINGS: readonly (readonly [number, string])[] = [
  [EXIT.ok, "success"],
  [EXIT.failure, "unexpected failure (a bug or an unhandled system error)"],
  [EXIT.usage, "wrong usage: unknown command or option, bad value"],
  [EXIT.config, "invalid config file or rule"],
  [EXIT.notRunning, "the daemon is not running (no control socket)"],
  [EXIT.permission, "permission denied (no CAP_NET_RAW, socket not accessible)"],
  [EXIT.refused, "the daemon refused the request"],
  [EXIT.system, "system resource problem (interface missing, address in use)"],
  [EXIT.running, "another daemon runs on the same state directory or control socket"],
  [EXIT.shortfall, "sink --expect N: fewer than N packets arrived in a stream"],
  [EXIT.problems, "diagnose found at least one problem (an error or a warning)"],
];

/** Something the user did wrong; the message names the argument and the problem. */
export class UsageError extends Error {
  override name = "UsageError";
  readonly exitCode: number = EXIT.usage;
}

/** `run`: another daemon holds the state directory or answers on the socket. */
export class AlreadyRunningError extends Error {
  override name = "AlreadyRunningError";
  readonly exitCode: number = EXIT.running;
}

export class ConfigError extends Error {
  override name = "ConfigError";
  readonly exitCode: number = EXIT.config;
}

export class PermissionError extends Error {
  override name = "PermissionError";
  readonly exitCode: number = EXIT.permission;
}

/** A system resource that cannot be had: an address in use, a missing interface. */
export class SystemError extends Error {
  override name = "SystemError";
  readonly exitCode: number = EXIT.system;
}

const errnoNames: Record<number, string> = Object.fromEntries(
  Object.entries(constants.errno).map(([name, value]) => [value as number, name]),
);

export function errnoName(errno: number): string {
  return errnoNames[errno] ?? `errno ${errno}`;
}

/** A native call that failed: the operation and the errno name ("ring setup eth0: EPERM"). */
export class NativeError extends Error {
  override name = "NativeError";
  readonly op: string;
  readonly errno: number;
  readonly code: string;

  constructor(op: string, errno: number, detail?: string) {
    super(detail ? `${op}: ${detail}` : `${op}: ${errnoName(errno)}`);
    this.op = op;
    this.errno = errno;
    this.code = errno ? errnoName(errno) : "EABI";
  }

  static fromErrno(op: string, errno: number): NativeError {
    return new NativeError(op, errno);
  }

  get exitCode(): number {
    if (this.code === "EPERM" || this.code === "EACCES") return EXIT.permission;
    return EXIT.system;
  }
}

/** The name of an exit code's kind ("usage", "not_running"), for JSON error documents. */
export function errorKind(exitCode: number): string {
  const names: Record<number, string> = { 1: "failure", 2: "usage", 3: "config", 4: "not_running", 5: "permission", 6: "refused", 7: "system", 8: "running", 9: "shortfall", 10: "problems" };
  return names[exitCode] ?? "failure";
}

export function exitCodeOf(err: unknown): number {
  if (err && typeof err === "object" && "exitCode" in err && typeof err.exitCode === "number") return err.exitCode;
  return EXIT.failure;
}
