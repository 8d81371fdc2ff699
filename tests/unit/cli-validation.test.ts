// Command-line validation of forward / gen / sink / trace / capture: a wrong argument ends
// with exit code 2 and one message naming the argument, before anything is opened, and never
// with a stack trace.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { mcrelayCommand } from "../support/relay-harness.ts";
import { flagged, ruleFromFlags } from "../../src/cli/rule-flags.ts";
import { checkRule } from "../../src/config/rule-spec.ts";
import { outputInterfaceProblems, type LinkFacts, type RuleProblem } from "../../src/rules/rule.ts";

const mcrelay = mcrelayCommand("bun");
/** A JS stack frame as bun prints it ("    at run (/path/file.ts:12:3)"). */
const STACK_FRAME = /^\s+at .*(\.[jt]s:\d+|<anonymous>|native)/m;

interface Outcome {
  exitCode: number;
  stdout: string;
  stderr: string;
}

function runHost(args: string[]): Outcome {
  const r = Bun.spawnSync({ cmd: [...mcrelay, ...args], stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

function expectUsageError(r: Outcome, ...mentions: string[]): void {
  const context = `stderr: ${JSON.stringify(r.stderr)}`;
  expect({ exitCode: r.exitCode, context }).toEqual({ exitCode: 2, context });
  for (const m of mentions) expect(r.stderr).toContain(m);
  expect(r.stderr).not.toMatch(STACK_FRAME);
  expect(r.stdout).toBe("");
}

describe("CLI validation (no namespace: rejected while parsing)", () => {
  test("an endpoint without a port is refused, naming --from and the value", () => {
    expectUsageError(runHost(["forward", "--from", "239.1.1.1@r0", "--to", "239.2.2.2:6000@r1"]), "--from", "239.1.1.1@r0");
  });

  test("an address that is not an IP address is refused, naming --to", () => {
    expectUsageError(runHost(["forward", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.300:6000@r1"]), "--to", "239.2.2.300");
  });

  test("port 0 is refused, naming the flag and the range", () => {
    expectUsageError(runHost(["forward", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:0@r1"]), "--to", "port 0", "1-65535");
    expectUsageError(runHost(["sink", "--listen", "239.2.2.2:0@s0"]), "--listen", "port 0");
  });

  test("gen --mode raw without an IPv4 group and interface, or an unknown mode, is refused naming --mode", () => {
    expectUsageError(runHost(["gen", "--mode", "raw", "--to", "127.0.0.1:5000", "--count", "1"]), "--mode raw", "127.0.0.1:5000");
    expectUsageError(runHost(["gen", "--mode", "fast", "--to", "239.1.1.1:5000@g0"]), "--mode", "fast");
  });

  test("a gen payload size out of range is refused, naming --size and the range", () => {
    expectUsageError(runHost(["gen", "--to", "239.1.1.1:5000@g0", "--size", "70000"]), "--size", "70000", "out of range");
    expectUsageError(runHost(["gen", "--to", "239.1.1.1:5000@g0", "--size", "3"]), "--size", "3", "out of range");
  });

  test("an unknown flag is refused, naming it", () => {
    expectUsageError(runHost(["forward", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--bogus"]), "--bogus");
    expectUsageError(runHost(["gen", "--to", "239.1.1.1:5000@g0", "--rat", "10"]), "--rat");
  });

  test("a multicast group without an interface is refused where one is needed", () => {
    expectUsageError(runHost(["sink", "--listen", "239.1.1.1:5000"]), "--listen", "interface");
    expectUsageError(runHost(["forward", "--from", "239.1.1.1:5000", "--to", "239.2.2.2:6000@r1"]), "--from", "interface");
  });

  test("endpoint options on gen --to or sink --listen are refused as options, not as a bad interface name", () => {
    expectUsageError(runHost(["gen", "--to", "239.1.1.1:5000@g0,ttl=3", "--count", "1"]), "--to", "',ttl=3'", "rule inputs and outputs only");
    expectUsageError(runHost(["sink", "--listen", "239.2.2.2:6000@s0,vlan=3", "--duration", "0.1"]), "--listen", "',vlan=3'", "rule inputs and outputs only");
  });

  test("add with more outputs than a rule holds is refused before connecting, naming --to (it reached the daemon: exit 6, 'args.rule.to')", () => {
    const tos = Array.from({ length: 257 }, (_, i) => ["--to", `10.200.2.1:${7001 + i}`]).flat();
    expectUsageError(runHost(["add", "--socket", "/nonexistent/mcrelay.sock", "--name", "many", "--from", "239.1.1.6:5000@r0", ...tos]), "--to", "at most 256 outputs");
  });

  test("add reports every problem of the rule at once, each naming its flag (a bad --ttl hid the rest, a bad --to hid the checks across flags)", () => {
    const r = runHost(["add", "--socket", "/nonexistent/mcrelay.sock", "--name", "x y", "--from", "239.1.1.999:5000@r0", "--to", "239.2.2.2:70000@r1", "--ttl", "300", "--max-pps", "0"]);
    expectUsageError(r);
    expect(r.stderr).toContain("--name: a name is 1-64 letters");
    expect(r.stderr).toContain("--from: '239.1.1.999:5000@r0': '239.1.1.999' is not an IPv4 or IPv6 address");
    expect(r.stderr).toContain("--to[0]: '239.2.2.2:70000@r1': port 70000 is out of range (1-65535)");
    expect(r.stderr).toContain("--ttl: 300 is out of range (1-255)");
    expect(r.stderr).toContain("--max-pps: 0 is out of range");
    const cross = runHost(["add", "--socket", "/nonexistent/mcrelay.sock", "--name", "x", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:70000@r1", "--to", "239.2.2.3:6000@r0", "--source", "::1"]);
    expectUsageError(cross, "--to[0]: '239.2.2.2:70000@r1'", "--to: output 239.2.2.3:6000@r0 uses the input interface r0", "--source: source ::1 is an IPv6 address");
  });

  test("an empty option value is refused naming the option (run --config= started with no rules, --state-dir= used /var/lib/mcrelay)", () => {
    // --workers 0 is a second usage error: should the empty value pass, no daemon starts here.
    expectUsageError(runHost(["run", "--config=", "--socket", "/nonexistent/s.sock", "--workers", "0"]), "--config", "empty value");
    expectUsageError(runHost(["run", "--state-dir", "", "--socket", "/nonexistent/s.sock", "--workers", "0"]), "--state-dir", "empty value");
    expectUsageError(runHost(["list", "-s", ""]), "-s (--socket)", "empty value");
  });

  test("words after -- are refused by a verb that takes none, naming each (they were ignored); a verb that takes one gets it even when it starts with '-'", () => {
    expectUsageError(runHost(["forward", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--", "--ttl", "5"]), "unexpected arguments after '--': '--ttl', '5'", "takes no arguments");
    expectUsageError(runHost(["gen", "--to", "239.1.1.1:5000@g0", "--", "extra"]), "unexpected argument after '--': 'extra'");
    expectUsageError(runHost(["sink", "--listen", "239.2.2.2:6000@s0", "--", "-x"]), "unexpected argument after '--': '-x'");
    // log-level takes LEVEL: '-x' after -- is that level (refused as one), not an option.
    expectUsageError(runHost(["log-level", "-s", "/nonexistent/mcrelay.sock", "--", "-x"]), "--level", "must be one of");
  });

  test("a value-taking letter in a group takes the rest of the group as getopt does (-c0 is --count 0), and the value is validated", () => {
    expectUsageError(runHost(["gen", "--to", "239.1.1.1:5000@g0", "-c0"]), "--count: 0 is out of range");
    expectUsageError(runHost(["trace", "cam", "-c0", "-s", "/nonexistent/mcrelay.sock"]), "--count: 0 is out of range");
    expectUsageError(runHost(["gen", "--to", "239.1.1.1:5000@g0", "-cx5"]), "--count: 'x5' is not a whole number");
    expectUsageError(runHost(["gen", "--to", "239.1.1.1:5000@g0", "-qc5"]), "unknown option '-q' in '-qc5'");
  });

  test("stats --interval without --watch is refused (it was ignored: one print, no repeat)", () => {
    expectUsageError(runHost(["stats", "-n", "5", "--socket", "/nonexistent/s.sock"]), "--interval", "--watch");
  });

  test("a source of the other family is refused naming --source, not --to", () => {
    const r = runHost(["forward", "--from", "[ff3e::1]:5000@r0", "--to", "239.2.2.2:6000@r1", "--source", "10.200.1.1"]);
    expectUsageError(r, "--source", "10.200.1.1", "IPv6");
    expect(r.stderr).not.toContain("--to");
  });

  test("a multicast or unspecified source is refused naming --source (no datagram comes from one)", () => {
    expectUsageError(runHost(["forward", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--source", "239.1.1.9"]), "--source", "239.1.1.9", "multicast");
    expectUsageError(runHost(["forward", "--from", "239.1.1.1:5000@r0", "--to", "239.2.2.2:6000@r1", "--source", "0.0.0.0"]), "--source", "0.0.0.0", "unspecified");
    expectUsageError(runHost(["forward", "--from", "[ff3e::1]:5000@r0", "--to", "239.2.2.2:6000@r1", "--source", "ff02::1"]), "--source", "ff02::1", "multicast");
  });

  test("trace and capture -c/--count take a whole number from 1 to 1,000,000,000, else exit 2 naming --count, before connecting or opening the -w file", () => {
    const socket = ["--socket", "/nonexistent/s.sock"];
    expectUsageError(runHost(["trace", "cam", "-c", "0", ...socket]), "--count: 0 is out of range (1-1000000000)");
    expectUsageError(runHost(["trace", "cam", "--count", "1000000001", ...socket]), "--count: 1000000001 is out of range (1-1000000000)");
    expectUsageError(runHost(["trace", "cam", "-c", "ten", ...socket]), "--count: 'ten' is not a whole number");
    const dir = mkdtempSync(join(tmpdir(), "mcr-capture-"));
    const file = join(dir, "never.pcap");
    expectUsageError(runHost(["capture", "cam", "-w", file, "-c", "2.5", ...socket]), "--count: '2.5' is not a whole number");
    expectUsageError(runHost(["capture", "cam", "-c", "-3", "-w", file, ...socket]), "--count: -3 is out of range (1-1000000000)");
    expect(existsSync(file)).toBe(false);
    rmSync(dir, { recursive: true });
    // A valid count passes validation: what fails then is the missing daemon (exit 4), not the option.
    expect(runHost(["trace", "cam", "-c", "5", ...socket]).exitCode).toBe(4);
  });

  test("forward reports every problem at once, each naming its flag, in the words of add (it stopped at the first bad flag)", () => {
    const ruleFlags = ["--name", "x y", "--from", "239.1.1.999:5000@r0", "--to", "239.2.2.2:70000@r1", "--ttl", "300", "--max-pps", "0"];
    const r = runHost(["forward", ...ruleFlags, "--duration", "x", "--workers", "0", "--ring-mib", "9999"]);
    expectUsageError(r);
    const lines = r.stderr.replace(/^\[error\] \[mcrelay\] /, "").trimEnd().split("\n");
    expect(lines).toEqual([
      "--name: a name is 1-64 letters, digits, _ . -",
      "--from: '239.1.1.999:5000@r0': '239.1.1.999' is not an IPv4 or IPv6 address",
      "--to[0]: '239.2.2.2:70000@r1': port 70000 is out of range (1-65535)",
      "--ttl: 300 is out of range (1-255)",
      "--max-pps: 0 is out of range (1-100000000)",
      "--duration: 'x' is not a number of seconds",
      "--workers: 0 is out of range (1-64)",
      "--ring-mib: 9999 is out of range (1-256)",
    ]);
    // The rule's problems are add's, word for word (one checker for both verbs).
    const add = runHost(["add", "--socket", "/nonexistent/mcrelay.sock", ...ruleFlags]);
    expectUsageError(add);
    expect(r.stderr.startsWith(add.stderr.trimEnd())).toBe(true);
    // The checks across flags run on the valid flags while another flag is wrong.
    const cross = runHost(["forward", "--from", "239.1.1.1:5000@lo", "--to", "239.2.2.2:70000@r1", "--to", "239.2.2.3:6000@lo", "--source", "::1", "--ttl", "999"]);
    expectUsageError(cross, "--to[0]: '239.2.2.2:70000@r1'", "--to: output 239.2.2.3:6000@lo uses the input interface lo", "--source: source ::1 is an IPv6 address", "--ttl: 999 is out of range (1-255)");
  });

  test("the same interface for input and output is refused, naming --to and the interface", () => {
    expectUsageError(runHost(["forward", "--from", "239.1.1.1:5000@lo", "--to", "239.2.2.2:6000@lo"]), "--to", "lo");
  });
});

// These resolve interface names: they run in a namespace of their own, so that a validation
// that failed to reject could not start relaying on this machine's interfaces.
describe.skipIf(!netnsAvailable())("CLI validation (against a namespace's interfaces)", () => {
  let topo: Topology;
  let ns: string;

  beforeAll(async () => {
    topo = await Topology.create("cli");
    ns = await topo.ns("a");
    await topo.link({ ns, ifname: "v0", addr: "10.98.0.1/24" }, { ns, ifname: "v1", addr: "10.98.1.1/24" });
  });

  afterAll(async () => {
    await topo?.destroy();
  });

  async function runNs(args: string[]): Promise<Outcome> {
    return topo.exec(ns, [...mcrelay, ...args], { env: { NO_COLOR: "1" }, timeoutMs: 30_000 });
  }

  test("an unknown input interface is refused, naming it", async () => {
    expectUsageError(await runNs(["forward", "--from", "239.1.1.1:5000@nosuch0", "--to", "239.2.2.2:6000@v1"]), "nosuch0", "input");
  });

  test("an unknown output interface is refused, naming it", async () => {
    expectUsageError(await runNs(["forward", "--from", "239.1.1.1:5000@v0", "--to", "239.2.2.2:6000@nosuch1"]), "nosuch1", "output");
  });

  test("an unknown interface for gen and sink is refused, naming the flag and the interface", async () => {
    expectUsageError(await runNs(["gen", "--to", "239.1.1.1:5000@nosuch2", "--count", "1"]), "--to", "nosuch2");
    expectUsageError(await runNs(["sink", "--listen", "239.1.1.1:5000@nosuch3", "--duration", "1"]), "--listen", "nosuch3");
  });

  test("forward refuses an output to its interface's subnet broadcast address together with the rule's other problems", async () => {
    const r = await runNs(["forward", "--from", "239.1.1.1:5000@v0", "--to", "10.98.1.255:6000@v1", "--to", "239.2.2.2:70000@v1", "--ttl", "999"]);
    expectUsageError(r, "--to[1]: '239.2.2.2:70000@v1': port 70000", "--ttl: 999 is out of range", "--to: output 10.98.1.255:6000@v1 is the broadcast address of v1's subnet 10.98.1.0/24");
  });

  test("a unicast input address that is not the interface's own is refused, naming the address", async () => {
    expectUsageError(await runNs(["forward", "--from", "10.98.0.77:5000@v0", "--to", "239.2.2.2:6000@v1"]), "10.98.0.77", "v0");
  });
});

// A problem's flag comes from the field it is about, not from its words: the flag of a check
// across fields was found by the message's first word ("output ..." → --to), so rewording a
// message in rules/rule.ts would have dropped its flag without a test failing.
describe("rule problems name their flag from their field", () => {
  const toFlag = { to: { type: "string", alias: "t" } } as const;
  /** Every kind of problem across fields, one of each, as checkRule finds them. */
  function crossFieldProblems(): RuleProblem[] {
    const checked = checkRule({ name: "x", from: "239.1.1.1:5000@r0,vlan=5", to: ["239.2.2.2:6000@r1", "239.2.2.3:6000@r0", "239.2.2.2:6000@r1"], source: "::1", vlan: 6 }, 1n);
    if (checked.ok) throw new Error("accepted");
    return checked.problems;
  }
  /** r1 has 10.98.1.1/24: 10.98.1.255 is its subnet's broadcast address. */
  const r1: LinkFacts = { ifindex: 7, flags: 1, mtu: 1500, addr4: "10.98.1.1", net4: [{ addr: "10.98.1.1", prefixlen: 24 }] };

  test("each check across fields gives the field it is about: the output's index, source, vlan", () => {
    expect(crossFieldProblems().map((p) => [p.path, p.message.split(" ").slice(0, 2).join(" ")])).toEqual([
      [["vlan"], "6 differs"],
      [["to", 1], "output 239.2.2.3:6000@r0"],
      [["source"], "source ::1"],
      [["to", 2], "output 239.2.2.2:6000@r1"],
    ]);
    const broadcast = outputInterfaceProblems({ outputs: [undefined, checkRuleOutput("10.98.1.255:6000@r1")] }, (name) => (name === "r1" ? r1 : null));
    expect(broadcast.map((p) => p.path)).toEqual([["to", 1]]);
  });

  test("a reworded message keeps its flag (the flag is read from the field)", () => {
    const reworded = crossFieldProblems().map((p) => flagged({ ...p, message: "reworded" }));
    expect(reworded).toEqual(["--from: reworded", "--to: reworded", "--source: reworded", "--to: reworded"]);
    expect(flagged({ path: ["to", 3], message: "reworded", named: false })).toBe("--to[3]: reworded");
    expect(flagged({ path: ["max_pps"], message: "reworded", named: false })).toBe("--max-pps: reworded");
  });

  test("add's and forward's checker names the flag of every problem across flags", () => {
    const rawArgs = ["--to", "239.2.2.2:6000@r1", "--to", "239.2.2.3:6000@r0", "--to", "239.2.2.2:6000@r1"];
    const { problems } = ruleFromFlags(rawArgs, toFlag, { name: "x", from: "239.1.1.1:5000@r0", source: "::1" });
    expect(problems.map((p) => p.split(": ")[0])).toEqual(["--to", "--source", "--to"]);
  });
});

/** One valid output, as a rule holds it. */
function checkRuleOutput(to: string) {
  const checked = checkRule({ name: "x", from: "239.1.1.1:5000@r0", to: [to] }, 1n);
  if (!checked.ok) throw new Error(checked.problems.map((p) => p.message).join("; "));
  return checked.rule.outputs[0]!;
}
