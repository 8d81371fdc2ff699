// The state file keeps runtime rules across restarts: saved atomically, read back exactly, and
// a corrupt file is set aside under another name (kept for a human), never silently dropped.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, closeSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { ConfigError } from "../../src/errors.ts";
import { join } from "node:path";
import { STATE_FILE, StateFile, lockStateDir, type State } from "../../src/supervisor/state-file.ts";
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

  test("a bad entry is set aside alone (in a .rejected- file, with its reason); the other rules load", () => {
    const sd = dir.join("state");
    const sf = new StateFile(sd);
    mkdirSync(sd);
    const bad = { id: "1", spec: { name: "a", from: "x", to: [], extra: true } };
    const good = { id: "2", spec: { name: "b", from: "239.1.1.2:5000@eth0", to: ["239.2.2.3:6000@eth1"] } };
    writeFileSync(join(sd, STATE_FILE), JSON.stringify({ version: 1, next_id: "5", rules: [bad, good] }));
    const st = sf.load();
    expect(st.rules).toEqual([{ id: 2n, spec: good.spec }]);
    expect(st.nextId).toBe(5n);
    expect(st.rejected?.map((r) => r.reason)).toEqual([expect.stringContaining("rules[0]")]);
    const aside = readdirSync(sd).filter((f) => f.includes(".rejected-"));
    expect(aside).toHaveLength(1);
    expect(JSON.parse(readFileSync(join(sd, aside[0]!), "utf8"))[0].entry).toEqual(bad);
    expect(readdirSync(sd).filter((f) => f.includes(".corrupt-"))).toHaveLength(0);
  });

  test("M5: duplicate ids, an id of 2^64 and an id of 0 are set aside; next_id stays above every id", () => {
    const sd = dir.join("state");
    const sf = new StateFile(sd);
    mkdirSync(sd);
    const spec = (n: number) => ({ name: `r${n}`, from: `239.1.1.${n}:5000@eth0`, to: ["239.2.2.3:6000@eth1"] });
    const rules = [
      { id: "7", spec: spec(1) },
      { id: "7", spec: spec(2) },
      { id: "18446744073709551616", spec: spec(3) }, // 2^64 wraps to 0 in a u64
      { id: "0", spec: spec(4) },
      { id: "18446744073709551615", spec: spec(5) }, // 2^64-1: the largest id
    ];
    writeFileSync(join(sd, STATE_FILE), JSON.stringify({ version: 1, next_id: "3", rules, config_ids: { cfg: "7" } }));
    const st = sf.load();
    expect(st.rules.map((r) => [r.id, r.spec.name])).toEqual([
      [7n, "r1"],
      [18446744073709551615n, "r5"],
    ]);
    expect(st.rejected?.map((r) => r.reason)).toEqual([
      "rules[1]: id 7 is already used by another saved rule",
      "rules[2]: id 18446744073709551616 is out of range (1 to 2^64-1)",
      "rules[3]: id 0 is out of range (1 to 2^64-1)",
    ]);
    // The config rule whose saved id collides gets a new one instead.
    expect(st.configIds.size).toBe(0);
    expect(st.nextId).toBe(18446744073709551616n);
  });

  test("a rule saved with a name of digits only (allowed by earlier versions) loads, not set aside", () => {
    const spec = { name: "7", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] };
    writeFileSync(dir.join(STATE_FILE), JSON.stringify({ version: 1, next_id: "4", rules: [{ id: "3", spec }] }));
    const state = new StateFile(dir.path).load();
    expect(state.rules).toEqual([{ id: 3n, spec }]);
    expect(state.rejected).toBeUndefined();
  });

  test("an unknown top-level key is ignored, not a reason to set the file aside", () => {
    const sd = dir.join("state");
    const sf = new StateFile(sd);
    sf.save(sample);
    const withExtra = { ...JSON.parse(readFileSync(join(sd, STATE_FILE), "utf8")), comment: "hand-edited" };
    writeFileSync(join(sd, STATE_FILE), JSON.stringify(withExtra));
    expect(sf.load()).toEqual(sample);
  });

  test("a corrupt file in a read-only directory is a clear ConfigError naming the file, not a crash", () => {
    const sd = dir.join("state");
    const sf = new StateFile(sd);
    sf.save(sample);
    writeFileSync(join(sd, STATE_FILE), "{ not json");
    chmodSync(join(sd, STATE_FILE), 0o644);
    chmodSync(dir.path, 0o755);
    chmodSync(sd, 0o555);
    try {
      // Root ignores directory permissions: drop to another uid for the check when root.
      if (process.getuid?.() === 0) {
        const r = Bun.spawnSync({
          cmd: ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, "-e", `import("${join(import.meta.dir, "../../src/supervisor/state-file.ts")}").then(m => { try { new m.StateFile(${JSON.stringify(sd)}).load(); console.log("loaded"); } catch (e) { console.log(e.name + ": " + e.message); } })`],
        });
        const out = r.stdout.toString();
        expect(out).toContain("ConfigError");
        expect(out).toContain(`state file ${join(sd, STATE_FILE)} is corrupt`);
        expect(out).toContain("cannot be set aside");
      } else {
        expect(() => sf.load()).toThrow(ConfigError);
      }
    } finally {
      chmodSync(sd, 0o755);
    }
  });

  test("a file of a newer version stops the load (ConfigError naming the file, the version and what to do) and is left as it was", () => {
    const sd = dir.join("state");
    const sf = new StateFile(sd);
    sf.save(sample);
    const text = readFileSync(join(sd, STATE_FILE), "utf8").replace('"version": 1', '"version": 2');
    writeFileSync(join(sd, STATE_FILE), text);
    expect(() => sf.load()).toThrow(ConfigError);
    expect(() => sf.load()).toThrow(`state file ${join(sd, STATE_FILE)} has version 2, written by a newer mcrelay (this one reads version 1); run the newer mcrelay, or move the file away`);
    expect(readdirSync(sd)).toEqual([STATE_FILE]);
    expect(readFileSync(join(sd, STATE_FILE), "utf8")).toBe(text);
  });

  test("a version that is not a number of ours or above (a string, 0) is not ours: the file is set aside", () => {
    for (const version of ['"1"', "0"]) {
      const sd = dir.join(`state-${version.length}`);
      const sf = new StateFile(sd);
      sf.save(sample);
      writeFileSync(join(sd, STATE_FILE), readFileSync(join(sd, STATE_FILE), "utf8").replace('"version": 1', `"version": ${version}`));
      expect(sf.load().rules).toEqual([]);
      expect(sf.setAside?.reason).toContain("version");
    }
  });

  test("a set-aside file is recorded for status (path, reason, time); a load that succeeds clears it", () => {
    const sd = dir.join("state");
    const sf = new StateFile(sd);
    sf.save(sample);
    writeFileSync(join(sd, STATE_FILE), "{ not json");
    sf.load();
    const aside = readdirSync(sd).filter((f) => f.startsWith(`${STATE_FILE}.corrupt-`));
    expect(sf.setAside).toEqual({ path: join(sd, aside[0]!), reason: expect.stringContaining("JSON"), at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) });
    sf.save(sample);
    sf.load();
    expect(sf.setAside).toBeNull();
  });

  test("only the newest 5 set-aside files of each kind are kept", () => {
    const sd = dir.join("state");
    mkdirSync(sd);
    const old = (kind: string, i: number) => `${STATE_FILE}.${kind}-2020-01-0${i}T00-00-00-000Z`;
    for (let i = 1; i <= 7; i++) for (const kind of ["corrupt", "rejected"]) writeFileSync(join(sd, old(kind, i)), "old");
    const sf = new StateFile(sd);
    writeFileSync(join(sd, STATE_FILE), "{ not json");
    sf.load();
    writeFileSync(join(sd, STATE_FILE), JSON.stringify({ version: 1, rules: [{ id: "x" }] }));
    sf.load();
    const kept = readdirSync(sd).sort();
    const newest = (kind: string) => kept.filter((f) => f.includes(`.${kind}-`) && !f.includes("2020"));
    expect(newest("corrupt")).toHaveLength(1);
    expect(newest("rejected")).toHaveLength(1);
    for (const kind of ["corrupt", "rejected"]) {
      expect(kept.filter((f) => f.includes(`.${kind}-`))).toEqual([4, 5, 6, 7].map((i) => old(kind, i)).concat(newest(kind)));
    }
  });

  test("a temporary left by a crashed save is removed at the next load", () => {
    const sd = dir.join("state");
    const sf = new StateFile(sd);
    sf.save(sample);
    writeFileSync(join(sd, `${STATE_FILE}.tmp-99999`), '{"version": 1, "rul');
    expect(sf.load()).toEqual(sample);
    expect(readdirSync(sd)).toEqual([STATE_FILE]);
  });

  test("a save never writes through a symlink planted at the temporary's name", () => {
    const sd = dir.join("state");
    const sf = new StateFile(sd);
    sf.save(sample);
    const victim = dir.file("victim", "precious\n");
    symlinkSync(victim, join(sd, `${STATE_FILE}.tmp-${process.pid}`));
    sf.save({ nextId: 2n, rules: [], configIds: new Map() });
    expect(readFileSync(victim, "utf8")).toBe("precious\n");
    expect(lstatSync(join(sd, STATE_FILE)).isFile()).toBe(true);
    expect(sf.load()).toEqual({ nextId: 2n, rules: [], configIds: new Map() });
  });
});

describe("state directory", () => {
  test("a directory the daemon's user owns, writable by no one else, is locked", () => {
    const sd = dir.join("state");
    mkdirSync(sd, { mode: 0o750 });
    closeSync(lockStateDir(sd));
  });

  test("a directory writable by others, or owned by another user, is refused (ConfigError naming it, its owner and mode, and the fix); the lock is let go", () => {
    const sd = dir.join("state");
    mkdirSync(sd);
    chmodSync(sd, 0o777);
    const euid = process.geteuid!();
    expect(() => lockStateDir(sd)).toThrow(ConfigError);
    expect(() => lockStateDir(sd)).toThrow(`state directory ${sd} (owner uid ${euid}, mode 0777) is writable by its group or others: another user could change the runtime rules; run \`chown ${euid} ${sd} && chmod go-w ${sd}\``);
    chmodSync(sd, 0o750);
    if (euid === 0) {
      chownSync(sd, 65534, 65534);
      expect(() => lockStateDir(sd)).toThrow(`state directory ${sd} (owner uid 65534, mode 0750) is owned by uid 65534, not by uid 0 that runs the daemon`);
      chownSync(sd, 0, 0);
    }
    // Refused, not held: once put right the same process locks it.
    closeSync(lockStateDir(sd));
  });
});
