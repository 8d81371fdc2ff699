// Waiting for the end of a foreground command: SIGINT, SIGTERM, SIGHUP or a duration. SIGHUP
// (the terminal was closed) stops it as SIGTERM does, so it still cleans up (its socket file,
// its workers) instead of dying at the default action.

export interface StopWatch {
  readonly stopped: boolean;
  readonly reason: string | null;
  /** Resolves when a signal arrives or the duration elapses. */
  readonly done: Promise<string>;
  dispose(): void;
}

export function watchStop(durationS?: number): StopWatch {
  let resolve!: (why: string) => void;
  const done = new Promise<string>((r) => (resolve = r));
  const state = { stopped: false, reason: null as string | null };
  const stop = (why: string) => {
    if (state.stopped) return;
    state.stopped = true;
    state.reason = why;
    resolve(why);
  };
  const onInt = () => stop("SIGINT");
  const onTerm = () => stop("SIGTERM");
  const onHup = () => stop("SIGHUP");
  process.on("SIGINT", onInt);
  process.on("SIGTERM", onTerm);
  process.on("SIGHUP", onHup);
  const timer = durationS !== undefined ? setTimeout(() => stop("duration"), durationS * 1000) : null;
  return {
    get stopped() {
      return state.stopped;
    },
    get reason() {
      return state.reason;
    },
    done,
    dispose() {
      process.off("SIGINT", onInt);
      process.off("SIGTERM", onTerm);
      process.off("SIGHUP", onHup);
      if (timer) clearTimeout(timer);
    },
  };
}
