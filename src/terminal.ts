// Standard output and the terminal, without Node's stream objects where they are not needed:
// the first touch of process.stdout or process.stderr loads Bun's Node stream machinery, about
// 15 ms of a command's start (Bun 1.4.5: `process.stdout.isTTY` alone took a compiled
// hello-world from 5 to 22 ms), which `mcrelay version` and every short command would pay.
import { readlinkSync, writeSync } from "node:fs";

/**
 * Is the descriptor a terminal (a tty, pty or the console)? Read from /proc, as isatty(3)
 * without loading node:tty; false when /proc cannot say (no colours, no screen drawing).
 */
export function isTerminal(fd: 1 | 2): boolean {
  try {
    return /^\/dev\/(pts\/\d+|tty[\w.]*|console)$/.test(readlinkSync(`/proc/self/fd/${fd}`));
  } catch {
    return false;
  }
}

/** Set once stdout would block: the rest goes through process.stdout, which queues in order. */
let streamed = false;

/** What writeOut throws, instead of exiting, when a command asked for it (onOutputClosed). */
export class OutputClosed extends Error {
  constructor() {
    super("standard output was closed by its reader");
  }
}

let closedHandler: (() => void) | null = null;
let closed = false;

/**
 * For a command that holds something in the daemon while it prints (`mcrelay trace | head`
 * holds a trace session, and every other trace gets `busy` until it is given back): when the
 * reader goes away, writeOut throws OutputClosed (and keeps throwing), and an EPIPE that
 * arrives later for queued output calls `handler`, instead of exiting at once. The command
 * unwinds, gives back what it holds, and ends.
 */
export function onOutputClosed(handler: () => void): void {
  closedHandler = handler;
}

/** The reader went away: exit quietly, or tell the command that asked to be told. */
function outputClosed(thrown: boolean): void {
  if (!closedHandler) process.exit(process.exitCode ?? 0);
  const first = !closed;
  closed = true;
  if (first) closedHandler();
  if (thrown) throw new OutputClosed();
}

/** The stream, with `mcrelay stats | head` handled: a closed pipe ends the output quietly. */
function stdoutStream(): NodeJS.WriteStream {
  if (!streamed) {
    streamed = true;
    process.stdout.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE" || err.code === "EIO") return outputClosed(false);
      throw err;
    });
  }
  return process.stdout;
}

/** Writes command output to stdout, whole and in order. */
export function writeOut(text: string): void {
  if (closed) throw new OutputClosed();
  if (streamed) {
    stdoutStream().write(text);
    return;
  }
  let bytes = Buffer.from(text);
  while (bytes.length > 0) {
    let n: number;
    try {
      n = writeSync(1, bytes);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A non-blocking pipe that is full: the stream queues the rest (and what follows).
      if (code === "EAGAIN") return void stdoutStream().write(bytes);
      // The reader went away (`mcrelay stats | head`): nothing more to say to it. EIO: the
      // same for a terminal that was hung up (closed window, ended ssh session).
      if (code === "EPIPE" || code === "EIO") return outputClosed(true);
      throw err;
    }
    bytes = bytes.subarray(n);
  }
}
