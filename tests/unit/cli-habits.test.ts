// The command line as an operator who knows ip(8), systemctl and smcroutectl types it: short
// options, `help VERB`, suggestions for typos, unambiguous prefixes, help within 80 columns
// with the exit codes, errors as JSON with --json, and the version from -V / -v.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, test } from "bun:test";
import type { ArgsDef, CommandDef } from "citty";
import { checkFlags, cittyArgv, positionalCount, repeated, scanArgs, wantsHelp, wantsJson } from "../../src/cli/args.ts";
import { commandHelp, HELP_WIDTH, mainHelp } from "../../src/cli/help.ts";
import { editDistance, publicVerbs, resolveVerb, suggest } from "../../src/cli/verbs.ts";
import { EXIT, UsageError } from "../../src/errors.ts";
import { VERSION } from "../../src/version.ts";
import { mcrelayCommand } from "../support/relay-harness.ts";

const mcrelay = mcrelayCommand("bun");
const NO_SOCKET = "/nonexistent/mcrelay-test.sock";

function cli(args: string[]) {
  const r = Bun.spawnSync({ cmd: [...mcrelay, ...args], stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" }, timeout: 20_000 });
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** The UsageError message `fn` throws (fails when it does not throw one). */
function usageError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error("no usage error");
}

function expectWithin80(text: string, what: string): void {
  const wide = text.split("\n").filter((l) => l.length > HELP_WIDTH);
  expect({ what, wide }).toEqual({ what, wide: [] });
}

describe("short options", () => {
  const def = {
    to: { type: "string", alias: "t" },
    watch: { type: "boolean", alias: "w" },
    json: { type: "boolean", alias: "j" },
    socket: { type: "string", alias: "s" },
    interval: { type: "string", alias: "n" },
  } as const;
  const options = (args: string[]) => scanArgs(args, def).map((t) => (t.kind === "option" ? `${t.name}=${t.value}` : `${t.kind}:${t.kind === "problem" ? t.error.message : t.value}`));

  test("single letters and groups of boolean letters are accepted; a value-taking letter ends a group", () => {
    checkFlags(["-j", "-w", "-s", "/x.sock"], def);
    checkFlags(["-jw"], def);
    checkFlags(["-jws", "/x.sock"], def);
    checkFlags(["--json", "--no-watch", "--socket=/x"], def);
  });

  test("a group is read as getopt reads it: -wjn1 is -w -j -n 1, a value-taking letter takes the rest of the group", () => {
    expect(options(["-wjn1"])).toEqual(["watch=true", "json=true", "interval=1"]);
    expect(options(["-wjn", "1"])).toEqual(["watch=true", "json=true", "interval=1"]);
    expect(options(["-n1"])).toEqual(["interval=1"]);
    // The letters after a value-taking one are its value, not options (getopt, citty alike).
    expect(options(["-wnj", "1"])).toEqual(["watch=true", "interval=j", "positional:1"]);
    expect(options(["-js/x.sock"])).toEqual(["json=true", "socket=/x.sock"]);
    checkFlags(["-wjn1", "-js/x.sock"], def);
  });

  test("an unknown letter in a group is refused naming the letter and the group", () => {
    expect(usageError(() => checkFlags(["-x"], def))).toBe("unknown option '-x' (see --help)");
    expect(usageError(() => checkFlags(["-jx"], def))).toBe("unknown option '-x' in '-jx' (see --help)");
    expect(usageError(() => checkFlags(["-xwj"], def))).toBe("unknown option '-x' in '-xwj' (see --help)");
    expect(usageError(() => checkFlags(["-wjxn1"], def))).toBe("unknown option '-x' in '-wjxn1' (see --help)");
    expect(usageError(() => checkFlags(["-s"], def))).toContain("-s (--socket) needs a value");
    expect(usageError(() => checkFlags(["-wjn"], def))).toContain("-n (--interval) needs a value");
  });

  test("a long option after one dash (-json: -j -s on as a group) is refused naming the long option", () => {
    expect(usageError(() => checkFlags(["-json"], def))).toContain("unknown option '-json'; did you mean '--json'?");
    expect(usageError(() => checkFlags(["-socket", "/x"], def))).toContain("did you mean '--socket'?");
  });

  test("-- ends the options: what follows is positional, refused beyond what the verb takes, naming every stray word", () => {
    expect(options(["-j", "--", "-w", "--json"])).toEqual(["json=true", "positional:-w", "positional:--json"]);
    checkFlags(["--", "-old"], def, 1);
    expect(usageError(() => checkFlags(["--", "extra", "words"], def))).toBe("unexpected arguments after '--': 'extra', 'words' (this command takes no arguments; see --help)");
    expect(usageError(() => checkFlags(["-j", "--", "x"], def))).toBe("unexpected argument after '--': 'x' (this command takes no arguments; see --help)");
    expect(usageError(() => checkFlags(["a", "--", "b"], def, 1))).toBe("unexpected argument after '--': 'b' (this command takes at most 1 argument; see --help)");
    expect(usageError(() => checkFlags(["a", "b"], def, 1))).toContain("unexpected argument: 'b'");
    // A word that starts with '-' where an argument is taken: say how to pass it.
    expect(usageError(() => checkFlags(["-old"], def, 1))).toBe("unknown option '-o' in '-old'; to pass '-old' as an argument, put it after '--' (see --help)");
    expect(wantsJson(["--", "--json"], def)).toBe(false);
    expect(wantsHelp(["--", "-h"], def)).toBe(false);
  });

  test("--json and -h are found where getopt finds them (-wjn1 is JSON, -nj is --interval j)", () => {
    expect(wantsJson(["-wjn1"], def)).toBe(true);
    expect(wantsJson(["-nj"], def)).toBe(false);
    expect(wantsJson(["-x", "--json"], def)).toBe(true);
    expect(wantsHelp(["-jh"], def)).toBe(true);
    expect(wantsHelp(["-nh"], def)).toBe(false);
  });

  test("a repeated option is collected from long and short spellings in order", () => {
    expect(repeated(["-t", "a", "--to", "b", "--to=c", "-jt", "d", "-te", "-jtf"], def, "to")).toEqual(["a", "b", "c", "d", "e", "f"]);
  });

  test("citty is handed the reading that was checked: an option's value that starts with --no- stays the value, on/off options in their last state, positionals after --", () => {
    const run = { config: { type: "string", alias: "c" }, "watch-config": { type: "boolean" }, "loop-guard": { type: "boolean", default: true }, rule: { type: "positional", required: false } } as const;
    expect(cittyArgv(["--config", "--no-watch-config"], run)).toEqual(["--config=--no-watch-config", "--"]);
    expect(cittyArgv(["-c--no-x", "--no-loop-guard", "--loop-guard", "r1", "--watch-config", "--no-watch-config"], run)).toEqual(["--config=--no-x", "--loop-guard=true", "--watch-config=false", "--", "r1"]);
    expect(cittyArgv(["--", "--no-rule"], run)).toEqual(["--", "--no-rule"]);
  });

  test("-j and -s reach the verb: list -j -s PATH reports the missing daemon as JSON, exit 4", () => {
    const r = cli(["list", "-j", "-s", NO_SOCKET]);
    expect(r.exitCode).toBe(EXIT.notRunning);
    const doc = JSON.parse(r.stdout);
    expect(doc).toEqual({ ok: false, error: { kind: "not_running", message: expect.stringContaining(NO_SOCKET), exit_code: EXIT.notRunning } });
  });

  test("-V, -v and --version print the version alone", () => {
    for (const flag of ["-V", "-v", "--version"]) {
      const r = cli([flag]);
      expect({ flag, exitCode: r.exitCode, stdout: r.stdout }).toEqual({ flag, exitCode: 0, stdout: `${VERSION}\n` });
    }
  });
});

describe("values as given, never guessed", () => {
  const def = {
    to: { type: "string", alias: "t", repeatable: true },
    from: { type: "string", alias: "f" },
    watch: { type: "boolean", alias: "w" },
    json: { type: "boolean", alias: "j" },
    socket: { type: "string", alias: "s" },
    rule: { type: "positional", valueHint: "RULE", required: false },
  } as const;
  const options = (args: string[]) => scanArgs(args, def).map((t) => (t.kind === "option" ? `${t.name}=${t.value}` : `${t.kind}:${t.kind === "problem" ? t.error.message : t.value}`));

  test("an on/off option takes only true or false (any case) after '=': --replace=False replaced the rule, --json= was JSON", () => {
    expect(options(["--watch=False", "--json=TRUE"])).toEqual(["watch=false", "json=true"]);
    for (const word of ["--watch=no", "--watch=0", "--watch=off", "--watch=yes", "--watch="]) {
      expect(usageError(() => checkFlags([word], def))).toBe(`option --watch is on or off: after '=' it takes true or false, not '${word.slice(8)}' (see --help)`);
    }
    expect(usageError(() => checkFlags(["--no-watch=false"], def))).toBe("option --no-watch takes no value (see --help)");
    expect(wantsJson(["--json="], def)).toBe(false);
    const r = cli(["list", "--json=no", "-s", NO_SOCKET]);
    expect({ exitCode: r.exitCode, stdout: r.stdout }).toEqual({ exitCode: EXIT.usage, stdout: "" });
    expect(r.stderr).toContain("option --json is on or off");
  });

  test("a value-taking option given twice is refused naming both values unless it is repeatable (--from A --from B used B); an on/off option's last word wins", () => {
    expect(usageError(() => checkFlags(["--from", "A", "-f", "B"], def))).toBe("option --from is given 2 times ('A', 'B'); it takes one value (see --help)");
    expect(usageError(() => checkFlags(["-sX", "--socket=Y", "--to", "1"], def))).toContain("option --socket is given 2 times ('X', 'Y')");
    checkFlags(["--to", "a", "-tb", "--json", "--json", "--no-watch", "--watch"], def);
    expect(options(["--json", "--no-json", "-w", "--no-watch", "--watch"]).slice(-1)).toEqual(["watch=true"]);
    const r = cli(["add", "-s", NO_SOCKET, "--name", "r", "--from", "239.1.1.1:5000@a0", "--from", "239.1.1.2:5000@a0", "--to", "239.2.2.2:6000@b0", "--to", "239.2.2.3:6000@b0"]);
    expect(r.exitCode).toBe(EXIT.usage);
    expect(r.stderr).toContain("option --from is given 2 times ('239.1.1.1:5000@a0', '239.1.1.2:5000@a0')");
    const globals = cli(["run", "--socket", "/proc/mcrelay-test-never/s.sock", "--log-level", "warn", "--log-level", "info"]);
    expect(globals.exitCode).toBe(EXIT.usage);
    expect(globals.stderr).toContain("option --log-level is given more than once");
  });

  test("an empty argument is refused naming it (stats \"$RULE\" with RULE unset printed every rule)", () => {
    expect(usageError(() => checkFlags([""], def, 1))).toBe("argument RULE is empty (an unset shell variable?) (see --help)");
    expect(usageError(() => checkFlags(["--", ""], def, 1))).toContain("argument RULE is empty");
    for (const argv of [["stats", "", "-s", NO_SOCKET], ["diagnose", "-s", NO_SOCKET, "--", ""], ["remove", "", "-s", NO_SOCKET]]) {
      const r = cli(argv);
      expect({ argv, exitCode: r.exitCode, named: r.stderr.includes("argument RULE is empty") }).toEqual({ argv, exitCode: EXIT.usage, named: true });
    }
  });

  test("--help=false and --no-help are refused, never read as help; an option pasted with an em dash gets a hint; an unknown letter is named whole", () => {
    for (const word of ["--help=false", "--help=true", "--no-help"]) {
      const r = cli(["stats", "-s", NO_SOCKET, word]);
      expect({ word, exitCode: r.exitCode, stdout: r.stdout }).toEqual({ word, exitCode: EXIT.usage, stdout: "" });
      expect(r.stderr).toContain(`'${word}': --help takes no value and has no --no-help form`);
    }
    expect(usageError(() => checkFlags(["\u2014watch"], def))).toBe("'\u2014watch' starts with a typographic dash (U+2014), not '-'; did you mean '--watch'? (see --help)");
    expect(usageError(() => checkFlags(["\u2013w"], def, 1))).toContain("did you mean '-w'?; to pass '\u2013w' as an argument, put it after '--'");
    checkFlags(["--", "\u2014watch"], def, 1);
    expect(cli(["status", "-s", NO_SOCKET, "\u2014json"]).stderr).toContain("did you mean '--json'?");
    expect(usageError(() => checkFlags(["-\u{1F600}"], def))).toBe("unknown option '-\u{1F600}' (see --help)");
    expect(usageError(() => checkFlags(["-j\u{1F600}w"], def))).toBe("unknown option '-\u{1F600}' in '-j\u{1F600}w' (see --help)");
    expect(options(["-j\u{1F600}"])).toEqual(["json=true", "problem:unknown option '-\u{1F600}' in '-j\u{1F600}' (see --help)"]);
  });
});

/** Every verb as it is typed (`config check` in two words), with its options. */
async function everyVerb(): Promise<{ words: string[]; args: ArgsDef }[]> {
  const out: { words: string[]; args: ArgsDef }[] = [];
  for (const v of publicVerbs()) {
    const def: CommandDef = await v.load();
    const subs = Object.entries((def.subCommands ?? {}) as Record<string, CommandDef>);
    if (subs.length === 0) out.push({ words: [v.name], args: (def.args ?? {}) as ArgsDef });
    for (const [name, sub] of subs) out.push({ words: [v.name, name], args: (sub.args ?? {}) as ArgsDef });
  }
  return out;
}

/** A verb's one-letter options: [letter, option name, takes a value]. */
function shortOptions(args: ArgsDef): [string, string, boolean][] {
  return Object.entries(args).flatMap(([name, d]) => {
    const alias = (d as { alias?: string | string[] }).alias;
    const valued = d.type === "string" || d.type === "enum";
    return [alias ?? []].flat().filter((a) => a.length === 1).map((a): [string, string, boolean] => [a, name, valued]);
  });
}

/**
 * Should a check fail and a verb run, it finds no daemon, and `run` can create neither its
 * socket nor its state directory (nothing can be made under /proc): it stops at once.
 */
function harmless(args: ArgsDef): string[] {
  if ("state-dir" in args) return ["--socket", "/proc/mcrelay-test-never/s.sock", "--state-dir", "/proc/mcrelay-test-never/state"];
  return "socket" in args ? ["--socket", NO_SOCKET] : [];
}

describe("every verb reads its arguments the same way", () => {
  test("every verb refuses words after -- beyond the arguments it takes, naming them, exit 2 (they were ignored)", async () => {
    const verbs = await everyVerb();
    expect(verbs.length).toBeGreaterThanOrEqual(20);
    for (const { words, args } of verbs) {
      const takes = Array.from({ length: positionalCount(args) }, (_, i) => `arg${i}`);
      const argv = [...words, ...harmless(args), "--", ...takes, "stray-word"];
      const r = cli(argv);
      const named = r.stderr.includes("unexpected argument after '--': 'stray-word'");
      expect({ argv, exitCode: r.exitCode, named, stdout: r.stdout }).toEqual({ argv, exitCode: EXIT.usage, named: true, stdout: "" });
    }
  }, 60_000);

  test("every verb names an unknown letter with its group, and reads a value-taking letter's value from the rest of the group", async () => {
    for (const { words, args } of await everyVerb()) {
      const shorts = shortOptions(args);
      expect(shorts.map(([l]) => l)).not.toContain("Z");
      const flags = shorts.filter(([, , valued]) => !valued);
      const group = `-${flags.map(([l]) => l).join("")}ZY`;
      const r = cli([...words, ...harmless(args), group]);
      const named = r.stderr.includes(`unknown option '-Z' in '${group}'`);
      expect({ words, group, exitCode: r.exitCode, named }).toEqual({ words, group, exitCode: EXIT.usage, named: true });
      // The verb's own options, as its run and citty read them: -<flags><letter>VALUE.
      for (const [letter, name] of shorts.filter(([, , valued]) => valued)) {
        const tokens = scanArgs([`-${flags.map(([l]) => l).join("")}${letter}VALUE`], args);
        const options = tokens.map((t) => (t.kind === "option" ? `${t.name}=${t.value}` : t.kind));
        expect({ words, options }).toEqual({ words, options: [...flags.map(([, n]) => `${n}=true`), `${name}=VALUE`] });
      }
    }
  }, 60_000);

  test("-js PATH in one group reaches every verb that has both: no daemon at PATH, reported as JSON, exit 4", async () => {
    const ran: string[] = [];
    for (const { words, args } of await everyVerb()) {
      const letters = new Map(shortOptions(args).map(([l, name]) => [l, name]));
      const required = Object.values(args).some((d) => d.type !== "positional" && (d as { required?: boolean }).required);
      if (letters.get("j") !== "json" || letters.get("s") !== "socket" || required) continue;
      // A rule for the verbs that need one (remove, trace...); the optional ones are left out.
      const positionals = Object.values(args).filter((d) => d.type === "positional" && d.required !== false).map(() => "r1");
      const r = cli([...words, `-js${NO_SOCKET}`, ...positionals]);
      if (words[0] === "version") {
        // version answers without a daemon: its document says the daemon is not running.
        expect({ words, exitCode: r.exitCode }).toEqual({ words, exitCode: 0 });
        expect(JSON.parse(r.stdout).daemon.error).toBe("not running");
      } else {
        expect({ words, exitCode: r.exitCode }).toEqual({ words, exitCode: EXIT.notRunning });
        expect(JSON.parse(r.stdout).error.message).toContain(NO_SOCKET);
      }
      ran.push(words.join(" "));
    }
    expect(ran.length).toBeGreaterThanOrEqual(10);
  }, 60_000);
});

describe("suggestions", () => {
  test("edit distance counts a transposition as one edit", () => {
    expect(editDistance("lsit", "list")).toBe(1);
    expect(editDistance("stast", "stats")).toBe(1);
    expect(editDistance("", "abc")).toBe(3);
  });

  test("the closest name within two edits is suggested; a far word gets none", () => {
    expect(suggest("lsit", ["list", "stats"])).toBe("list");
    expect(suggest("relaod", ["reload", "remove"])).toBe("reload");
    expect(suggest("frobnicate", ["list", "stats"])).toBeNull();
  });

  test("an unknown verb exits 2 suggesting the verb meant", () => {
    const r = cli(["lsit"]);
    expect(r.exitCode).toBe(EXIT.usage);
    expect(r.stderr).toContain("unknown command 'lsit'; did you mean 'list'?");
  });

  test("an unknown option exits 2 suggesting the option meant", () => {
    const r = cli(["stats", "--jsno", "-s", NO_SOCKET]);
    expect(r.exitCode).toBe(EXIT.usage);
    expect(r.stderr).toContain("unknown option '--jsno'; did you mean '--json'?");
    expect(usageError(() => checkFlags(["--socet", "x"], { socket: { type: "string" } }))).toContain("did you mean '--socket'?");
  });

  test("an unknown config subcommand suggests the one meant", () => {
    const r = cli(["config", "chekc", "x.json5"]);
    expect(r.exitCode).toBe(EXIT.usage);
    expect(r.stderr).toContain("did you mean 'check'?");
  });

  test("an option before the config subcommand is named, not taken for the subcommand's value", () => {
    // `config -s PATH show` once took PATH for the subcommand ("unknown config command").
    const r = cli(["config", "-s", NO_SOCKET, "show"]);
    expect(r.exitCode).toBe(EXIT.usage);
    expect(r.stderr).toContain("'-s' before the subcommand: options come after it (mcrelay config SUBCOMMAND -s");
    expect(r.stderr).not.toContain("unknown config command");
    // After the subcommand the same option is the subcommand's.
    const ok = cli(["config", "show", "-s", NO_SOCKET]);
    expect(ok.exitCode).toBe(EXIT.notRunning);
    expect(cli(["config", "--help"]).exitCode).toBe(EXIT.ok);
  });
});

describe("verb prefixes and aliases", () => {
  test("an unambiguous prefix names its verb, as in ip(8)", () => {
    expect(resolveVerb("li").name).toBe("list");
    expect(resolveVerb("w").name).toBe("workers");
    expect(resolveVerb("conf").name).toBe("config");
    expect(resolveVerb("rel").name).toBe("reload");
    expect(resolveVerb("f").name).toBe("forward");
  });

  test("show and ls mean list; del and delete mean remove", () => {
    expect(resolveVerb("show").name).toBe("list");
    expect(resolveVerb("ls").name).toBe("list");
    expect(resolveVerb("del").name).toBe("remove");
    expect(resolveVerb("delete").name).toBe("remove");
  });

  test("an ambiguous prefix is refused, naming every candidate", () => {
    expect(usageError(() => resolveVerb("s"))).toBe("command 's' is ambiguous: show (list), sink, stats, status (see mcrelay help)");
    expect(usageError(() => resolveVerb("re"))).toContain("reload, remove");
  });

  test("the hidden worker verb is not reached by a prefix", () => {
    expect(usageError(() => resolveVerb("_w"))).toContain("unknown command '_w'");
  });

  test("a prefix runs the verb: `li -s PATH` is list (exit 4, the daemon is not running)", () => {
    const r = cli(["li", "-s", NO_SOCKET]);
    expect(r.exitCode).toBe(EXIT.notRunning);
    expect(r.stderr).toContain(NO_SOCKET);
  });
});

describe("help", () => {
  test("mcrelay help lists every verb and the exit codes within 80 columns", async () => {
    const text = await mainHelp();
    expectWithin80(text, "mcrelay help");
    for (const v of publicVerbs()) expect(text).toContain(`  ${v.name}`);
    for (const code of Object.values(EXIT)) expect(text).toMatch(new RegExp(`^  ${code} +\\S`, "m"));
  });

  test("every verb's and subcommand's help fits 80 columns and lists the exit codes", async () => {
    for (const v of publicVerbs()) {
      const def: CommandDef = await v.load();
      const text = commandHelp(def, [v.name], v.aliases);
      expectWithin80(text, v.name);
      expect(text).toContain("Exit codes:");
      for (const [sub, subDef] of Object.entries((def.subCommands ?? {}) as Record<string, CommandDef>)) {
        expectWithin80(commandHelp(subDef, [v.name, sub]), `${v.name} ${sub}`);
      }
    }
  });

  test("`help VERB` and `VERB --help` print the same text and exit 0", () => {
    const a = cli(["help", "stats"]);
    const b = cli(["stats", "--help"]);
    const c = cli(["stats", "-h"]);
    expect(a.exitCode).toBe(0);
    expect(a.stdout).toContain("Usage: mcrelay stats [RULE] [OPTIONS]");
    expect(a.stdout).toContain("-w, --watch");
    expect(b.stdout).toBe(a.stdout);
    expect(c.stdout).toBe(a.stdout);
  });

  test("`help trace` and `help capture` show -c, --count N, as docs/reference.md's short options do", () => {
    for (const verb of ["trace", "capture"]) {
      const r = cli(["help", verb]);
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toMatch(/^ {2}-c, --count N +Stop after N /m);
    }
    const reference = readFileSync(join(import.meta.dir, "../../docs/reference.md"), "utf8");
    expect(reference).toContain("| `-c` | `--count` | `gen`, `sink`, `trace`, `capture` |");
    expect(reference).toContain("mcrelay trace RULE [-c|--count N]");
    expect(reference).toContain("mcrelay capture RULE -w FILE|- [-c|--count N]");
  });

  test("`help config check` explains the subcommand; `help` takes prefixes too", () => {
    const r = cli(["help", "conf", "ch"]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain("Usage: mcrelay config check FILE");
  });

  test("`help` of an unknown verb exits 2 with a suggestion", () => {
    const r = cli(["help", "stast"]);
    expect(r.exitCode).toBe(EXIT.usage);
    expect(r.stderr).toContain("did you mean 'stats'?");
  });
});

describe("errors with --json", () => {
  test("a usage error is one JSON document on stdout with the exit code unchanged", () => {
    const r = cli(["stats", "--json", "--interval", "abc", "-s", NO_SOCKET]);
    expect(r.exitCode).toBe(EXIT.usage);
    expect(JSON.parse(r.stdout)).toEqual({ ok: false, error: { kind: "usage", message: expect.stringContaining("--interval"), exit_code: EXIT.usage } });
  });

  test("a bad global option with --json is a JSON document too (stdout was empty), read against the verb's options", () => {
    const r = cli(["list", "--json", "--log-level=verbose", "-s", NO_SOCKET]);
    expect(r.exitCode).toBe(EXIT.usage);
    expect(JSON.parse(r.stdout)).toEqual({ ok: false, error: { kind: "usage", message: "--log-level: 'verbose' is not one of silent, error, warn, info, debug, trace", exit_code: EXIT.usage } });
    expect(JSON.parse(cli(["--log-format", "xml", "config", "show", "-j"]).stdout).error.message).toContain("--log-format");
    // -nj is --interval j, not --json: no document.
    expect(cli(["stats", "-nj", "--log-level=verbose"]).stdout).toBe("");
  });

  test("without --json, stdout stays empty on an error", () => {
    const r = cli(["stats", "--interval", "abc"]);
    expect(r.exitCode).toBe(EXIT.usage);
    expect(r.stdout).toBe("");
  });
});

describe("run without privileges", () => {
  const STACK_FRAME = /^\s+at .*(\.[jt]s:\d+|<anonymous>|native|mcrelay:\d+)/m;
  const asNobody = (args: string[], caps: string[] = []) => {
    const r = Bun.spawnSync({
      cmd: ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ...caps, ...mcrelay, ...args],
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, NO_COLOR: "1" },
      timeout: 30_000,
    });
    return { exitCode: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
  };

  test("a run without CAP_NET_RAW exits 5 naming the capability, with no stack trace", () => {
    const r = asNobody(["run", "--socket", "/tmp/mcr-nobody-never.sock", "--state-dir", "/tmp/mcr-nobody-never"]);
    expect(r.exitCode).toBe(EXIT.permission);
    expect(r.stderr).toContain("open AF_PACKET socket: EPERM: mcrelay run needs CAP_NET_RAW");
    expect(r.stderr).not.toMatch(STACK_FRAME);
  });

  test("with CAP_NET_RAW but no writable state directory, run exits 5 naming the directory and the flags", () => {
    const r = asNobody(["run", "--socket", "/tmp/mcr-nobody-never.sock"], ["--inh-caps=+net_raw", "--ambient-caps=+net_raw"]);
    expect(r.exitCode).toBe(EXIT.permission);
    expect(r.stderr).toMatch(/state directory \/var\/lib\/mcrelay.*EACCES/);
    expect(r.stderr).toContain("--state-dir");
    expect(r.stderr).not.toMatch(STACK_FRAME);
  });
});
