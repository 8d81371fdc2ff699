// scripts/install.sh into a temporary prefix, as a packager would, and the installed files:
// a working, unstripped executable, a unit pointing at it, man page and completions generated
// from the command definitions.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { commandTree } from "../../scripts/gen-cli-docs.ts";
import { COMPILED_PATH, REPO_ROOT } from "../support/relay-harness.ts";

let prefix = "";

function sh(cmd: string[], env: Record<string, string> = {}): { exitCode: number; stdout: string; stderr: string } {
  const r = Bun.spawnSync({ cmd, cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1", ...env } });
  return { exitCode: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

beforeAll(() => {
  // zsh, fish, groff and man, used below (installed with apt when missing).
  const deps = sh(["bash", join(REPO_ROOT, "scripts/shell-deps.sh")]);
  if (deps.exitCode !== 0) throw new Error(`scripts/shell-deps.sh failed:\n${deps.stderr}`);
  if (!existsSync(COMPILED_PATH)) throw new Error(`${COMPILED_PATH} does not exist: run \`bun run build\` first`);
  prefix = join(mkdtempSync(join(tmpdir(), "mcr-install-")), "usr");
  const r = sh(["bash", join(REPO_ROOT, "scripts/install.sh"), prefix]);
  if (r.exitCode !== 0) throw new Error(`scripts/install.sh ${prefix} failed (${r.exitCode}):\n${r.stderr}`);
}, 600_000);

afterAll(() => {
  if (prefix) rmSync(join(prefix, ".."), { recursive: true, force: true });
});

describe("scripts/install.sh PREFIX", () => {
  test("installs the executable byte for byte (not stripped), and it runs `version` and `config check`", () => {
    const bin = join(prefix, "bin/mcrelay");
    expect(statSync(bin).mode & 0o777).toBe(0o755);
    expect(Bun.hash(readFileSync(bin))).toBe(Bun.hash(readFileSync(COMPILED_PATH)));
    const v = sh([bin, "version", "--json"]);
    expect(v.exitCode).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ compiled: true });
    const c = sh([bin, "config", "check", join(prefix, "share/doc/mcrelay/examples/mcrelay.json5"), "--json"]);
    expect(c.exitCode).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ ok: true, rules: [] });
  });

  test("installs the unit with ExecStart/ExecReload on the installed binary, and systemd accepts it", () => {
    const unit = join(prefix, "lib/systemd/system/mcrelay.service");
    const text = readFileSync(unit, "utf8");
    expect(text).toContain(`ExecStart=${prefix}/bin/mcrelay run --config /etc/mcrelay/mcrelay.json5 --user mcrelay-worker --admin-group mcrelay-admin`);
    expect(text).toContain(`ExecReload=${prefix}/bin/mcrelay reload\n`);
    expect(text).toMatch(/^Type=notify$/m);
    expect(text).not.toContain("@BINDIR@");
    expect(text).not.toMatch(/^MemoryDenyWriteExecute=/m);
    if (Bun.which("systemd-analyze")) {
      // verify: syntax and that the commands exist and are executable (man: pages are not in
      // the system's MANPATH here, so only that check is allowed to complain).
      const r = sh(["systemd-analyze", "verify", unit]);
      const problems = r.stderr.split("\n").filter((l) => l.trim() && !l.includes("man mcrelay(1)"));
      expect(problems).toEqual([]);
    }
    for (const f of ["lib/sysusers.d/mcrelay.conf", "lib/tmpfiles.d/mcrelay.conf", "share/doc/mcrelay/LICENSE", "share/doc/mcrelay/LICENSE-MIT", "share/doc/mcrelay/LICENSE-APACHE"]) {
      expect(existsSync(join(prefix, f))).toBe(true);
    }
    const sysusers = readFileSync(join(prefix, "lib/sysusers.d/mcrelay.conf"), "utf8");
    expect(sysusers).toMatch(/^u mcrelay /m);
    expect(sysusers).toMatch(/^u mcrelay-worker /m);
    expect(sysusers).toMatch(/^g mcrelay-admin /m);
  });

  test("the man page documents every visible command and option, and renders without warnings", async () => {
    const page = join(prefix, "share/man/man1/mcrelay.1");
    const r = sh(["groff", "-man", "-Tutf8", "-ww", "-z", page]);
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: "" });
    const text = sh(["man", "-l", page], { MANWIDTH: "200", MAN_KEEP_FORMATTING: "" }).stdout.replace(/.\x08/g, "");
    const tree = await commandTree();
    const walk = (c: typeof tree): void => {
      if (c.path.length > 0 && c.subcommands.length === 0) expect(text).toContain(`mcrelay ${c.path.join(" ")}`);
      for (const o of c.options) expect(text).toContain(`--${o.name}`);
      c.subcommands.forEach(walk);
    };
    walk(tree);
    expect(text).not.toContain("_worker");
    expect(text).toMatch(/EXIT STATUS[\s\S]*\b4\b[\s\S]*not running/);
  });

  test("bash completion offers verbs, sub-verbs, a verb's options and enum values", () => {
    const script = `source "$1"
t() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _mcrelay; echo "\${COMPREPLY[*]}"; }
t mcrelay fo; t mcrelay config ""; t mcrelay forward --t; t mcrelay --log-level d; t mcrelay sink --listen x --ex`;
    const r = sh(["bash", "-c", script, "bash", join(prefix, "share/bash-completion/completions/mcrelay")]);
    expect(r.stdout.split("\n")).toEqual(["forward", "check show", "--to --ttl", "debug", "--expect", ""]);
  });

  test("fish completion offers the same", () => {
    const file = join(prefix, "share/fish/vendor_completions.d/mcrelay.fish");
    const r = sh(["fish", "-c", `source ${file}; complete -C "mcrelay fo"; complete -C "mcrelay config "; complete -C "mcrelay forward --t"`]);
    expect(r.stdout.split("\n").map((l) => l.split("\t")[0])).toEqual(["forward", "check", "show", "--to", "--ttl", ""]);
  });

  test("zsh completion is valid zsh", () => {
    const r = sh(["zsh", "-n", join(prefix, "share/zsh/site-functions/_mcrelay")]);
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: "" });
  });

  test("a usage error names the problem and installs nothing", () => {
    const r = sh(["bash", join(REPO_ROOT, "scripts/install.sh"), "relative/prefix"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("PREFIX must be an absolute path");
    expect(existsSync(join(REPO_ROOT, "relative"))).toBe(false);
  });
});
