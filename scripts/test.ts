/**
 * The single test entry (`bun run test [bun test args...]`):
 *   1. `zig build test --summary all`  -- native unit tests
 *   2. `bun run build`                 -- dist/ must exist before tests that run it
 *   3. `bun test ./tests/`             -- or the paths/flags given on the command line
 *   4. `bun scripts/mutants.ts --ci`   -- two deliberate breakages (rotating by date) that the
 *                                         tests must catch; each caught one counts as a passed
 *                                         test, each that survives as a failed one (only in a
 *                                         full run: not when test paths are given)
 * then deletes namespaces left by dead processes, and prints exactly one closing line
 * `tests: N passed, N failed, N skipped` summed over both runners. Exits non-zero when a test
 * failed or a step could not run; such a step counts as one failure in the closing line, so
 * the line never says "0 failed" for a failed run.
 *
 * Under CI=true skipped kernel tests are a failure: the integration files skip themselves when
 * the run is not root (no namespaces), and a CI run that skipped them has not tested the relay.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createConsola } from "consola";
import { netnsAvailable, sweepStale } from "./lib/netns.ts";
import { ciSelection, runMutants } from "./mutants.ts";

// Progress goes to stderr: stdout carries the runners' output and the closing line.
const log = createConsola({ stdout: process.stderr, stderr: process.stderr }).withTag("test");
const root = join(import.meta.dir, "..");
const bun = process.execPath;

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

interface StepOutcome {
  step: string;
  counts: Counts;
  /** Why the step failed beyond its counted tests (it did not run, crashed, or exited non-zero). */
  error?: string;
}

const ansi_re = /\x1b\[[0-9;?]*[A-Za-z]/g;

/** Runs a command with its output passed through live, and returns it (ANSI codes removed). */
async function runStreaming(cmd: string[]): Promise<{ exitCode: number; output: string }> {
  const proc = Bun.spawn({ cmd, cwd: root, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const pump = async (stream: ReadableStream<Uint8Array>, sink: NodeJS.WriteStream, parts: string[]) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      sink.write(chunk);
      parts.push(decoder.decode(chunk, { stream: true }));
    }
  };
  const out: string[] = [];
  const err: string[] = [];
  await Promise.all([pump(proc.stdout, process.stdout, out), pump(proc.stderr, process.stderr, err), proc.exited]);
  return { exitCode: proc.exitCode ?? 128, output: (out.join("") + err.join("")).replace(ansi_re, "") };
}

// ---------------------------------------------------------------------------------------
// zig build test

/**
 * Parses zig's closing line, e.g.
 *   Build Summary: 3/3 steps succeeded; 2/2 tests passed
 *   Build Summary: 1/3 steps succeeded (1 failed); 2/4 tests passed (1 skipped, 1 failed)
 * Crashed and timed-out tests count as failed. Null when the line has no test counts (a
 * compile error, or a run step answered from the cache).
 */
export function parseZigSummary(output: string): Counts | null {
  const line = output
    .split("\n")
    .reverse()
    .find((l) => l.startsWith("Build Summary:"));
  const m = line === undefined ? null : /; (\d+)\/(\d+) tests passed(?: \(([^)]*)\))?/.exec(line);
  if (m === null) return null;
  const counts: Counts = { passed: Number(m[1]), failed: 0, skipped: 0 };
  for (const part of (m[3] ?? "").split(",")) {
    const pm = /^\s*(\d+) (skipped|failed|crashed|timed out)\s*$/.exec(part);
    if (pm === null) continue;
    if (pm[2] === "skipped") counts.skipped += Number(pm[1]);
    else counts.failed += Number(pm[1]);
  }
  return counts;
}

async function zigTests(): Promise<StepOutcome> {
  const step = "zig build test";
  const zig = [join(root, ".toolchain/bin/zig"), Bun.which("zig")].find((p): p is string => !!p && existsSync(p));
  if (zig === undefined) return { step, counts: zero(), error: "no zig: run scripts/bootstrap.sh" };
  log.start(step);
  let r = await runStreaming([zig, "build", "test", "--summary", "all"]);
  let counts = parseZigSummary(r.output);
  if (counts === null && r.exitCode === 0) {
    // A cached test run prints no counts. Run once more against an empty cache so the totals
    // are real (build.zig can avoid this with `run_tests.has_side_effects = true`).
    log.info("zig test results came from the cache; rerunning with a fresh cache to count them");
    const cache_dir = mkdtempSync(join(tmpdir(), "mcr-zig-cache-"));
    try {
      r = await runStreaming([zig, "build", "test", "--summary", "all", "--cache-dir", cache_dir]);
      counts = parseZigSummary(r.output);
    } finally {
      rmSync(cache_dir, { recursive: true, force: true });
    }
  }
  return finish(step, counts, r.exitCode);
}

// ---------------------------------------------------------------------------------------
// bun run build

async function build(): Promise<StepOutcome | null> {
  const step = "bun run build";
  if (!existsSync(join(root, "scripts/build.ts"))) {
    log.warn("scripts/build.ts does not exist yet: skipping the build step");
    return null;
  }
  log.start(step);
  const r = await runStreaming([bun, "run", "build"]);
  return r.exitCode === 0 ? null : { step, counts: zero(), error: `exit code ${r.exitCode}` };
}

// ---------------------------------------------------------------------------------------
// bun test

/**
 * Parses bun test's closing block (" 2 pass", " 1 skip", " 1 todo", " 2 fail", " 1 error").
 * The text summary is used rather than --reporter=junit because the JUnit file leaves out a
 * test file that fails to load, while the text summary counts it as failed. "fail" already
 * includes unhandled errors; todo counts as skipped.
 */
export function parseBunSummary(output: string): Counts | null {
  const lines = output.split("\n");
  const ran = lines.findLastIndex((l) => /^Ran \d+ tests? across \d+ files?\./.test(l));
  const end = ran === -1 ? lines.length : ran;
  const found = new Map<string, number>();
  for (let i = end - 1; i >= 0 && i >= end - 12; i--) {
    const m = /^\s*(\d+) (pass|fail|skip|todo|error)\s*$/.exec(lines[i] ?? "");
    const [, count, kind] = m ?? [];
    if (count !== undefined && kind !== undefined && !found.has(kind)) found.set(kind, Number(count));
  }
  if (!found.has("pass") && !found.has("fail")) return null;
  const get = (k: string) => found.get(k) ?? 0;
  return { passed: get("pass"), failed: Math.max(get("fail"), get("error")), skipped: get("skip") + get("todo") };
}

// tsc --noEmit: counted as one test, so a type error fails the run.
async function typecheck(): Promise<StepOutcome> {
  const step = "typecheck (tsc --noEmit)";
  log.start(step);
  const r = await runStreaming([bun, "x", "tsc", "--noEmit", "-p", "."]);
  const counts = zero();
  if (r.exitCode === 0) counts.passed = 1;
  else counts.failed = 1;
  return { step, counts };
}

async function bunTests(args: string[]): Promise<StepOutcome> {
  const step = "bun test";
  // Paths given on the command line replace the default; flags alone keep it.
  const has_path = args.some((a) => !a.startsWith("-"));
  const cmd = [bun, "test", ...(has_path ? [] : ["./tests/"]), ...args];
  log.start(["bun", ...cmd.slice(1)].join(" "));
  const r = await runStreaming(cmd);
  const outcome = finish(step, parseBunSummary(r.output), r.exitCode);
  return outcome.error === undefined ? { ...outcome, error: ciSkipProblem(outcome.counts.skipped) } : outcome;
}

/**
 * Under CI=true: why the kernel tests' skipping makes the run fail (undefined when it does
 * not). They skip exactly when netnsAvailable() is false in the test process, which runs as
 * this one, so that is what is checked. Other skips (a test that needs fish or zsh installed)
 * stay skips.
 */
export function ciSkipProblem(skipped: number, env: Record<string, string | undefined> = process.env, kernel = netnsAvailable()): string | undefined {
  if (env.CI !== "true" || kernel) return undefined;
  return `CI=true but the kernel tests cannot run here (they need root and iproute2): ${skipped} test(s) were skipped`;
}

// ---------------------------------------------------------------------------------------
// bun scripts/mutants.ts --ci

async function mutationCheck(): Promise<StepOutcome> {
  const step = "mutation check (scripts/mutants.ts --ci)";
  const selected = ciSelection();
  if (!netnsAvailable()) {
    log.warn(`${step}: not root, so the kernel tests cannot catch anything: skipping ${selected.length} mutant(s)`);
    return { step, counts: { passed: 0, failed: 0, skipped: selected.length } };
  }
  log.start(`${step}: ${selected.map((m) => m.name).join(", ")}`);
  try {
    const results = await runMutants(selected, (line) => log.info(line));
    const counts = zero();
    for (const r of results) {
      if (r.status === "caught") counts.passed += 1;
      else {
        counts.failed += 1;
        log.error(`mutant ${r.name} ${r.status} (${r.file}: ${r.breaks}): ${r.detail}`);
      }
    }
    return { step, counts };
  } catch (err) {
    return { step, counts: zero(), error: (err as Error).message };
  }
}

// ---------------------------------------------------------------------------------------

function zero(): Counts {
  return { passed: 0, failed: 0, skipped: 0 };
}

function finish(step: string, counts: Counts | null, exit_code: number): StepOutcome {
  if (counts === null) {
    return { step, counts: zero(), error: `exit code ${exit_code} and no test summary in its output` };
  }
  if (exit_code !== 0 && counts.failed === 0) {
    return { step, counts, error: `exit code ${exit_code} although no test failed` };
  }
  return { step, counts };
}

function sweep(when: string): void {
  try {
    const deleted = sweepStale();
    if (deleted.length > 0) log.info(`${when}: deleted ${deleted.length} stale namespace(s): ${deleted.join(" ")}`);
  } catch (err) {
    log.warn(`${when}: could not sweep stale namespaces: ${(err as Error).message}`);
  }
}

async function main(): Promise<number> {
  sweep("before the tests");
  const outcomes: StepOutcome[] = [];
  outcomes.push(await zigTests());
  const built = await build();
  if (built !== null) outcomes.push(built);
  outcomes.push(await typecheck());
  const args = process.argv.slice(2);
  outcomes.push(await bunTests(args));
  if (!args.some((a) => !a.startsWith("-"))) outcomes.push(await mutationCheck());
  sweep("after the tests");

  const total = zero();
  for (const o of outcomes) {
    total.passed += o.counts.passed;
    total.failed += o.counts.failed + (o.error === undefined ? 0 : 1);
    total.skipped += o.counts.skipped;
    const c = o.counts;
    const detail = `${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped`;
    if (o.error === undefined) log.info(`${o.step}: ${detail}`);
    else log.error(`${o.step}: ${detail}; step failed: ${o.error}`);
  }
  process.stdout.write(`tests: ${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped\n`);
  return total.failed > 0 ? 1 : 0;
}

if (import.meta.main) process.exit(await main());
