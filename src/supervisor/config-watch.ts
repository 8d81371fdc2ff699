// `run --watch-config`: reload when the config file's content changes. Watches the file's
// directory (and the directory of the file it links to), not the file: editors save by writing
// a new file and renaming it over the old one, and a Kubernetes ConfigMap volume swaps a
// `..data` symlink to a new directory, so the watched inode goes away. Events are debounced;
// what decides is the content (its hash): a change of bytes reloads, anything else is
// ignored. A slow poll backs up inotify (a watch lost with its directory, an event missed).
import { watch, readFileSync, realpathSync, type FSWatcher } from "node:fs";
import { dirname } from "node:path";
import { logger } from "../log.ts";

const log = logger("watch");

export const DEBOUNCE_MS = 300;
export const POLL_MS = 5000;

function contentHash(path: string): string | null {
  try {
    return Bun.hash(readFileSync(path)).toString(16);
  } catch {
    return null; // missing for a moment (between unlink and rename): wait for the next event
  }
}

export class ConfigWatcher {
  readonly #path: string;
  readonly #onChange: () => Promise<void>;
  #watchers = new Map<string, FSWatcher>();
  #lastHash: string | null;
  #debounce: ReturnType<typeof setTimeout> | null = null;
  readonly #poll: ReturnType<typeof setInterval>;
  #running = false;
  #again = false;
  #closed = false;

  /** `onChange` runs the reload; it is never run twice at once. */
  constructor(path: string, onChange: () => Promise<void>) {
    this.#path = path;
    this.#onChange = onChange;
    this.#lastHash = contentHash(path);
    this.#rewatch();
    this.#poll = setInterval(() => {
      this.#rewatch();
      this.#check();
    }, POLL_MS);
  }

  /** The directories to watch: the path's own, and that of the file it resolves to. */
  #dirs(): string[] {
    const dirs = new Set([dirname(this.#path)]);
    try {
      dirs.add(dirname(realpathSync(this.#path)));
    } catch {
      // not there right now
    }
    return [...dirs];
  }

  #rewatch(): void {
    if (this.#closed) return;
    const want = new Set(this.#dirs());
    for (const [dir, w] of this.#watchers) {
      if (!want.has(dir)) {
        w.close();
        this.#watchers.delete(dir);
      }
    }
    for (const dir of want) {
      if (this.#watchers.has(dir)) continue;
      try {
        const w = watch(dir, { persistent: false }, () => this.#schedule());
        w.on("error", () => {
          w.close();
          this.#watchers.delete(dir);
        });
        this.#watchers.set(dir, w);
      } catch (err) {
        log.warn(`cannot watch ${dir}: ${(err as Error).message}; checking every ${POLL_MS / 1000} s`);
      }
    }
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      this.#debounce = null;
      this.#rewatch();
      this.#check();
    }, DEBOUNCE_MS);
  }

  #check(): void {
    if (this.#closed) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    const hash = contentHash(this.#path);
    if (hash === null || hash === this.#lastHash) return;
    this.#lastHash = hash;
    log.info(`${this.#path} changed: reloading`);
    this.#running = true;
    this.#onChange()
      .catch((err) => log.error(`reload after a change of ${this.#path} failed: ${(err as Error).message}`))
      .finally(() => {
        this.#running = false;
        if (this.#again) {
          this.#again = false;
          this.#check();
        }
      });
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#poll);
    if (this.#debounce) clearTimeout(this.#debounce);
    for (const w of this.#watchers.values()) w.close();
    this.#watchers.clear();
  }
}
