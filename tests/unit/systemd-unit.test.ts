// The packaged unit's system call filter against the system calls our native code makes: a
// call the filter refuses fails with EPERM under systemd (SystemCallErrorNumber=EPERM), so a
// worker that cannot install its own seccomp filter, for one, never starts. The groups are
// expanded by systemd itself (`systemd-analyze syscall-filter`), the calls are read from the Zig
// sources (outside their tests and the gen/sink tools, which do not run under the unit).
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "../..");
const UNIT = join(ROOT, "packaging/systemd/mcrelay.service");

/**
 * Calls made only to check that they are refused (zig/confinement.zig's probes, the worker's
 * self-check after its drop; privileges.zig's test helper): systemd refusing them too (`@debug`
 * is denied) is what they expect.
 */
const PROBES_EXPECTING_REFUSAL = new Set(["bpf", "ptrace"]);

const groups = new Map<string, Set<string>>();

/** Every system call of a systemd group (nested groups expanded), or one call's own name. */
function expand(name: string): Set<string> {
  if (!name.startsWith("@")) return new Set([name]);
  const known = groups.get(name);
  if (known) return known;
  const r = Bun.spawnSync(["systemd-analyze", "syscall-filter", name], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`systemd-analyze syscall-filter ${name}: ${r.stderr.toString()}`);
  const out = new Set<string>();
  for (const line of r.stdout.toString().split("\n").slice(1)) {
    const word = line.trim();
    if (!word || word.startsWith("#")) continue;
    for (const call of expand(word)) out.add(call);
  }
  groups.set(name, out);
  return out;
}

/** The Zig files of the library and the worker (not the gen/sink tools). */
function zigSources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === "tools" ? [] : zigSources(path);
    return name.endsWith(".zig") ? [path] : [];
  });
}

/** The source without its top-level test blocks (`test "..." {` to the `}` that closes it at column 0). */
function withoutTests(src: string): string {
  const kept: string[] = [];
  let inTest = false;
  for (const line of src.split("\n")) {
    if (!inTest && /^test "/.test(line)) inTest = !line.trimEnd().endsWith("}");
    else if (inTest) inTest = line !== "}";
    else kept.push(line);
  }
  return kept.join("\n");
}

/** Names called as `linux.NAME(` or `linux.syscallN(.NAME` that systemd knows as system calls. */
function callsOf(src: string, known: Set<string>): Set<string> {
  const names = new Set<string>();
  for (const m of src.matchAll(/\blinux\.([a-z_0-9]+)\(/g)) names.add(m[1]!);
  for (const m of src.matchAll(/\.syscall\d\(\s*\.([a-z_0-9]+)/g)) names.add(m[1]!);
  return new Set([...names].filter((n) => known.has(n)));
}

describe("the packaged systemd unit", () => {
  test.skipIf(!Bun.which("systemd-analyze"))("allows every system call the native code makes (seccomp among them)", () => {
    const unit = readFileSync(UNIT, "utf8");
    const lines = [...unit.matchAll(/^SystemCallFilter=(.*)$/gm)].map((m) => m[1]!.trim());
    expect(lines.length).toBeGreaterThan(0);
    const allowed = new Set<string>();
    const denied = new Set<string>();
    for (const line of lines) {
      const deny = line.startsWith("~");
      for (const word of line.replace(/^~/, "").split(/\s+/).filter(Boolean)) {
        for (const call of expand(word)) (deny ? denied : allowed).add(call);
      }
    }
    const known = expand("@known");
    const used = new Map<string, string[]>();
    for (const file of zigSources(join(ROOT, "zig"))) {
      for (const call of callsOf(withoutTests(readFileSync(file, "utf8")), known)) {
        used.set(call, [...(used.get(call) ?? []), file.slice(ROOT.length + 1)]);
      }
    }
    // The reading of the sources must find the calls that matter here.
    for (const call of ["seccomp", "prctl", "setresuid", "socket", "sendmmsg", "mmap"]) expect(used.has(call)).toBe(true);
    const refused = [...used]
      .filter(([call]) => !PROBES_EXPECTING_REFUSAL.has(call) && (!allowed.has(call) || denied.has(call)))
      .map(([call, files]) => `${call} (${files.join(", ")})`);
    expect(refused).toEqual([]);
  });
});
