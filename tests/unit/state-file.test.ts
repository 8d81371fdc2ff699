// The state file keeps runtime rules across restarts: saved atomically, read back exactly, and
// a corrupt file is set aside under another name (kept for a human), never silently dropped.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { STATE_FILE, StateFile, type State } from "../../src/supervisor/state-file.ts";
import { TempDir } from "../support/daemon-harness.ts";

let dir: TempDir;
beforeEach(() => {
  dir = new TempDir("mcr-state-");
});
afterEach(() => dir.remove());

const sample: State = {
  nextId: 9_007_199_254_740_993n, // beyond 2^53: ids are bigints and must survive as such
  rules: [
    { id: 3n, spec: { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] } },
    { id: 9_007_199_254_740_992n, spec: { name: "b.x-1", from: "239.1.1.2:5000@eth0", to: ["239.2.2.3:6000@eth1", "10.0.0.5:7000"], ttl: 3, source: "10.9.9.9" } },
  ],
  configIds: new Map([["from-config", 7n]]),
};

describe("state file", () => {
  test("a missing file loads as no rules, next id 1, and creates nothing", () => {
    const sf = new StateFile(dir.join("nested/state"));
    expect(sf.load()).toEqual({ nextId: 1n, rules: [], configIds: new Map() });
    expect(existsSync(dir.join("nested"))).toBe(false);
  });

  test("what is saved loads back exactly, big ids included", () => {
    const sf = new StateFile(dir.join("state"));
    sf.save(sample);
    expect(new StateFile(dir.join("state")).load()).toEqual(sample);
  });

  test("save creates the directory, leaves only the state file (no temporary) and is not world-readable", () => {
    const sd = dir.join("a/b/state");
    new StateFile(sd).save(sample);
    expect(readdirSync(sd)).toEqual([STATE_FILE]);
    expect(statSync(join(sd, STATE_FILE)).mode & 0o007).toBe(0);
  });

  test("a save replaces the file as a whole (rename), never editing it in place", () => {
    const sd = dir.join("state");
    const sf = new StateFile(sd);
    sf.save(sample);
    const before = statSync(join(sd, STATE_FILE)).ino;
    sf.save({ nextId: 2n, rules: [], configIds: new Map() });
    // A new inode: the old file was replaced by rename, so a reader sees old or new, never half.
    expect(statSync(join(sd, STATE_FILE)).ino).not.toBe(before);
    expect(sf.load()).toEqual({ nextId: 2n, rules: [], configIds: new Map() });
    expect(readdirSync(sd)).toEqual([STATE_FILE]);
  });

  test("a truncated file is set aside under a .corrupt- name with its content kept, and loads as empty", () => {
    const sd = dir.join("state");
    const sf = new StateFile(sd);
    sf.save(sample);
    const full = readFileSync(join(sd, STATE_FILE), "utf8");
    const half = full.slice(0, Math.floor(full.length / 2));
    writeFileSync(join(sd, STATE_FILE), half);
    expect(sf.load()).toEqual({ nextId: 1n, rules: [], configIds: new Map() });
    const files = readdirSync(sd);
    expect(files).not.toContain(STATE_FILE);
    const aside = files.filter((f) => f.startsWith(`${STATE_FILE}.corrupt-`));
    expect(aside).toHaveLength(1);
    expect(readFileSync(join(sd, aside[0]!), "utf8")).toBe(half);
  });

  test("valid JSON of the wrong shape is corrupt too (set aside, not loaded)", () => {
    const sd = dir.join("state");
    const sf = new StateFile(sd);
    sf.save(sample);
    const bad = JSON.stringify({ version: 1, next_id: "5", rules: [{ id: "1", spec: { name: "a", from: "x", to: [], extra: true } }] });
    writeFileSync(join(sd, STATE_FILE), bad);
    expect(sf.load()).toEqual({ nextId: 1n, rules: [], configIds: new Map() });
    expect(readdirSync(sd).filter((f) => f.includes(".corrupt-"))).toHaveLength(1);
    // A later save works normally and loads back.
    sf.save(sample);
    expect(sf.load()).toEqual(sample);
  });

  test("a file of another version is not loaded as if it were ours", () => {
    const sd = dir.join("state");
    const sf = new StateFile(sd);
    sf.save(sample);
    const text = readFileSync(join(sd, STATE_FILE), "utf8").replace('"version": 1', '"version": 2');
    writeFileSync(join(sd, STATE_FILE), text);
    expect(sf.load().rules).toEqual([]);
    expect(readdirSync(sd).some((f) => f.includes(".corrupt-"))).toBe(true);
  });
});
