/**
 * Benchmark harness: mcrelay side by side with the kernel's multicast forwarding (smcroute),
 * socat, and the calibration (generator straight to sink), on fresh namespace topologies.
 *
 *   bun run bench [--quick] [--scenario S1,S2,...]    run (root), write bench-results/<ts>.jsonl,
 *                                                     regenerate docs/benchmarks.md and .svg
 *   bun scripts/bench.ts --report FILE[,FILE2]        regenerate the report from a results file (several:
 *                                                     runs of one binary merged, e.g. a scenario the
 *                                                     first run's time budget skipped)
 *   bun scripts/bench.ts --plan [--quick]             print the plan and its time estimate
 *   bun run bench --scenario S2 --variant S2-1:50     only the plan's items of these variants (a
 *                                                     variant a run's time budget skipped, merged
 *                                                     with --report afterwards)
 *
 * Options: --pin gen=0,relay=1,sink=1 (CPUs), --rps off|relay (where the relay input's receive
 * softirq runs), --gen-mode raw|udp (how the generator sends: raw Ethernet frames on a packet
 * socket past the qdisc, the default, so the generator is not the ceiling; or a UDP socket, as
 * an application sends; every trial records it), --allow-foreign (record, rather than refuse, forwarders found running on the
 * machine), --contenders a,b (a subset, for development), --out FILE (results file).
 * Hidden: --smoke (2 s trials at one rate, to show every contender forwards and every
 * measurement works; writes its report next to the results, never to docs/), and
 * --smoke-search (adds a short NDR/PDR search of mcrelay to the smoke run).
 *
 * Peers: smcroute and socat (installed from Debian when missing); acooks/mcr when MCR_BIN names
 * a directory holding its `mcrd` and `mcrctl` (e.g. a cargo target/release), else skipped with a
 * note in the report. Built for a smoke run on 2026-12-01 from github.com/acooks/mcr at fced3ed:
 * `RUSTUP_TOOLCHAIN=stable cargo build --release --bins` (its rust-toolchain.toml pins 1.93.0;
 * crates from crates.io, about 6 min on the shared 2-core machine).
 *
 * Every namespace is named mcr-<pid>-..., and is deleted with everything in it at the end, on
 * SIGINT/SIGTERM, and by a reaper process if this one dies.
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { logger } from "./bench/log.ts";
import { NETNS_PREFIX, listNamespaces, netnsAvailable, sweepAll } from "./lib/netns.ts";
import type { GenMode, Tools } from "./bench/contenders.ts";
import { captureEnv } from "./bench/env.ts";
import { PEERS, ensurePeers, which } from "./bench/peers.ts";
import { MODES, buildPlan, planEstimateS, type Mode } from "./bench/plan.ts";
import { findForwarders, killHostProcesses } from "./bench/proc.ts";
import { renderReport } from "./bench/report.ts";
import { SINK_GRO } from "./bench/sink-mode.ts";
import { CONTENDER_IDS, ResultsFile, SCHEMA_VERSION, readResults, type ContenderId } from "./bench/results.ts";
import { elapsedS, runItem, type RunState } from "./bench/run.ts";
import type { Placement, RpsMode } from "./bench/topology.ts";

const log = logger("bench");
const root = resolve(import.meta.dir, "..");
const SCENARIOS = ["S1", "S2", "S3", "S4", "S5"];

const usage = `usage: bun scripts/bench.ts [--quick] [--scenario S1,S2,S3,S4,S5] [--variant V,...] [--pin gen=0,relay=1,sink=1] [--rps off|relay]
                           [--gen-mode raw|udp] [--allow-foreign] [--contenders mcrelay,kernel,socat,calibration] [--out FILE] [--plan]
       bun scripts/bench.ts --report FILE [--docs DIR]`;

interface Options {
  mode: Mode;
  scenarios: Set<string>;
  /** Only the plan items of these variants (e.g. S2-1:50); null: every item of the scenarios. */
  variants: Set<string> | null;
  placement: Placement;
  genMode: GenMode;
  allowForeign: boolean;
  only: Set<ContenderId> | null;
  out: string | null;
  report: string | null;
  docs: string;
  planOnly: boolean;
}

function parsePin(text: string, cpus: number): Omit<Placement, "rps"> {
  const out = { gen: 0, relay: 1, sink: 1 };
  for (const part of text.split(",")) {
    const [k, v] = part.split("=");
    const n = Number(v);
    if (!(k === "gen" || k === "relay" || k === "sink") || !Number.isInteger(n) || n < 0 || n >= cpus) {
      throw new Error(`--pin: '${part}' must be gen|relay|sink=CPU with CPU in 0..${cpus - 1}`);
    }
    out[k] = n;
  }
  return out;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean" },
      smoke: { type: "boolean" },
      "smoke-search": { type: "boolean" },
      scenario: { type: "string", multiple: true },
      variant: { type: "string", multiple: true },
      pin: { type: "string" },
      rps: { type: "string" },
      "gen-mode": { type: "string" },
      "allow-foreign": { type: "boolean" },
      contenders: { type: "string" },
      out: { type: "string" },
      report: { type: "string" },
      docs: { type: "string" },
      plan: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  const cpus = navigator.hardwareConcurrency;
  const scenarios = new Set((values.scenario ?? []).flatMap((s) => s.split(",")).map((s) => s.trim().toUpperCase()).filter(Boolean));
  for (const s of scenarios) if (!SCENARIOS.includes(s)) throw new Error(`--scenario: '${s}' is not one of ${SCENARIOS.join(", ")}`);
  const mode: Mode = values.smoke ? "smoke" : values.quick ? "quick" : "full";
  if (scenarios.size === 0) for (const s of mode === "smoke" ? ["S1"] : SCENARIOS) scenarios.add(s);
  // Hidden: a short NDR/PDR search of mcrelay in the smoke run, to exercise the bisection.
  if (mode === "smoke" && values["smoke-search"]) scenarios.add("search");
  const rps = (values.rps ?? "off") as RpsMode;
  if (rps !== "off" && rps !== "relay") throw new Error(`--rps: '${values.rps}' is not one of off, relay`);
  const genMode = (values["gen-mode"] ?? "raw") as GenMode;
  if (genMode !== "raw" && genMode !== "udp") throw new Error(`--gen-mode: '${values["gen-mode"]}' is not one of raw, udp`);
  let only: Set<ContenderId> | null = null;
  if (values.contenders) {
    only = new Set(values.contenders.split(",").map((c) => c.trim()) as ContenderId[]);
    for (const c of only) if (!CONTENDER_IDS.includes(c)) throw new Error(`--contenders: '${c}' is not one of ${CONTENDER_IDS.join(", ")}`);
  }
  const variantList = (values.variant ?? []).flatMap((v) => v.split(",")).map((v) => v.trim()).filter(Boolean);
  return {
    mode,
    scenarios,
    variants: variantList.length > 0 ? new Set(variantList) : null,
    placement: { ...parsePin(values.pin ?? "gen=0,relay=1,sink=1", cpus), rps },
    genMode,
    allowForeign: values["allow-foreign"] ?? false,
    only,
    out: values.out ?? null,
    report: values.report ?? null,
    docs: values.docs ?? join(root, "docs"),
    planOnly: values.plan ?? false,
  };
}

/** `resultsPath`: one results file, or several joined by commas (runs of one binary, merged). */
function writeReport(resultsPath: string, docsDir: string, baseName: string): void {
  const paths = resultsPath.split(",").map((p) => resolve(p));
  const records = paths.flatMap((p) => readResults(p));
  const { markdown, svg } = renderReport(records, { svgFile: `${baseName}.svg`, resultsFile: paths.map((p) => p.replace(`${root}/`, "")).join("`, `") });
  mkdirSync(docsDir, { recursive: true });
  writeFileSync(join(docsDir, `${baseName}.md`), markdown);
  writeFileSync(join(docsDir, `${baseName}.svg`), svg);
  log.info(`report: ${join(docsDir, `${baseName}.md`)} and ${baseName}.svg`);
}

function timestamp(): string {
  return new Date().toISOString().replace(/[:]/g, "").replace(/\..*$/, "Z");
}

async function main(): Promise<number> {
  let opts: Options;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    log.error(`${(err as Error).message}\n${usage}`);
    return 2;
  }
  if (opts.report) {
    writeReport(opts.report, opts.docs, "benchmarks");
    return 0;
  }
  const params = MODES[opts.mode];
  const planned = buildPlan(params, opts.scenarios);
  const plan = opts.variants === null ? planned : planned.filter((i) => opts.variants!.has(i.variant));
  if (opts.variants !== null) {
    const known = new Set(planned.map((i) => i.variant));
    const unknown = [...opts.variants].filter((v) => !known.has(v));
    if (unknown.length > 0) {
      log.error(`--variant: ${unknown.map((v) => `'${v}'`).join(", ")} is not in the plan of scenarios ${[...opts.scenarios].join(", ")} (variants: ${[...known].join(", ")})`);
      return 2;
    }
  }
  const estimate = planEstimateS(plan);
  if (opts.planOnly) {
    for (const i of plan) process.stdout.write(`${String(Math.round(i.estimateS)).padStart(5)} s  ${i.title} [${i.contenders.join(", ")}]\n`);
    process.stdout.write(`${String(Math.round(estimate)).padStart(5)} s  total (budget ${params.budgetS} s; items past it are skipped and reported)\n`);
    return 0;
  }
  if (!netnsAvailable()) {
    log.error("the benchmark builds network namespaces: run it as root with iproute2 installed");
    return 2;
  }
  const mcrelay = join(root, "dist/mcrelay");
  if (!existsSync(mcrelay)) {
    log.info("dist/mcrelay is missing: building it");
    const b = Bun.spawnSync({ cmd: [process.execPath, join(root, "scripts/build.ts")], cwd: root, stdout: "inherit", stderr: "inherit" });
    if (b.exitCode !== 0) return 1;
  }
  const needPeers = [];
  const wanted = (c: ContenderId) => opts.only === null || opts.only.has(c);
  if (wanted("kernel")) needPeers.push(PEERS.smcrouted);
  if (wanted("socat")) needPeers.push(PEERS.socat);
  const before = new Set(findForwarders().map((f) => f.pid));
  const peers = ensurePeers(needPeers);
  stopServiceStartedByInstall(before);
  if (!which("taskset") || !which("perf")) log.warn("taskset or perf is missing: pinning or profiles will fail");

  const runId = timestamp();
  removeStaleTmpDirs();
  const tmpDir = join("/tmp", `mcr-bench-${process.pid}`);
  mkdirSync(tmpDir, { recursive: true });
  // The run measures one binary: a rebuild of dist/ while it runs does not change it.
  const mcrelayCopy = join(tmpDir, "mcrelay");
  copyFileSync(mcrelay, mcrelayCopy);
  chmodSync(mcrelayCopy, 0o755);
  const tools: Tools = { mcrelay: mcrelayCopy, smcrouted: peers.smcrouted ?? "smcrouted", socat: peers.socat ?? "socat", tmpDir };
  const resultsPath = resolve(opts.out ?? join(root, "bench-results", `${runId}${opts.mode === "full" ? "" : `-${opts.mode}`}.jsonl`));
  const results = new ResultsFile(resultsPath);
  log.info(`run ${runId} (${opts.mode}): ${plan.length} items, about ${Math.round(estimate / 60)} min (budget ${Math.round(params.budgetS / 60)} min); results in ${resultsPath}`);
  const env = { ...captureEnv(root, tools), gen_mode: opts.genMode, sink_gro: SINK_GRO, mcrelay_sha256: new Bun.CryptoHasher("sha256").update(await Bun.file(mcrelayCopy).arrayBuffer()).digest("hex") };
  const state: RunState = {
    runId,
    params,
    placement: opts.placement,
    genMode: opts.genMode,
    tools,
    env,
    results,
    allowForeign: opts.allowForeign,
    startedAt: performance.now(),
    ndrs: new Map(),
    interrupted: false,
    only: opts.only,
  };
  results.write({
    type: "run",
    schema: SCHEMA_VERSION,
    run_id: runId,
    ts: new Date().toISOString(),
    mode: opts.mode,
    argv: process.argv.slice(2),
    options: { scenarios: [...opts.scenarios], variants: opts.variants ? [...opts.variants] : "all", placement: opts.placement, genMode: opts.genMode, allowForeign: opts.allowForeign, contenders: opts.only ? [...opts.only] : "all", params },
    plan: plan.map((i) => ({ scenario: i.scenario, variant: i.variant, what: i.title, estimate_s: Math.round(i.estimateS) })),
    estimate_s: Math.round(estimate),
    env,
  });

  let finished = false;
  const finish = (outcome: "complete" | "interrupted" | "failed", message: string): void => {
    if (finished) return;
    finished = true;
    results.write({ type: "end", schema: SCHEMA_VERSION, run_id: runId, ts: new Date().toISOString(), elapsed_s: Math.round(elapsedS(state)), outcome, message });
    killHostProcesses();
    rmSync(tmpDir, { recursive: true, force: true });
    // Kills whatever is still inside our namespaces (relays, peers, generators, sinks) and deletes them.
    const left = sweepAll(`${NETNS_PREFIX}${process.pid}-`);
    if (left.length) log.info(`removed ${left.length} namespace(s) with everything in them`);
  };
  // Synchronous, and first: the netns module's own handler may exit the process right after.
  const onSignal = (signal: NodeJS.Signals) => {
    state.interrupted = true;
    log.warn(`${signal}: stopping; removing namespaces and every process in them`);
    finish("interrupted", signal);
    log.info(`partial results in ${resultsPath}; \`bun scripts/bench.ts --report ${resultsPath}\` makes a report of them`);
    process.exit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  let code = 0;
  try {
    for (const [i, item] of plan.entries()) {
      if (state.interrupted) break;
      await runItem(state, item, i);
    }
    finish("complete", "");
  } catch (err) {
    log.error((err as Error).message);
    finish("failed", (err as Error).message);
    code = 1;
  }
  const ours = listNamespaces().filter((n) => n.startsWith(`${NETNS_PREFIX}${process.pid}-`));
  if (ours.length) log.warn(`namespaces still present: ${ours.join(", ")}`);
  log.info(`done in ${Math.round(elapsedS(state))} s`);
  // Only a complete quick or full run replaces docs/benchmarks.md; anything else reports next to its results.
  if (opts.mode === "smoke" || code !== 0) writeReport(resultsPath, dirname(resultsPath), basename(resultsPath, ".jsonl"));
  else writeReport(resultsPath, opts.docs, "benchmarks");
  return code;
}

/** Temporary directories of earlier runs that died without cleaning up (SIGKILL). */
function removeStaleTmpDirs(): void {
  for (const name of readdirSync("/tmp")) {
    const pid = Number(/^mcr-bench-(\d+)$/.exec(name)?.[1] ?? NaN);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      process.kill(pid, 0);
    } catch {
      rmSync(join("/tmp", name), { recursive: true, force: true });
    }
  }
}

/** apt-get may start smcroute's own service on a host with an init system: stop what it started. */
function stopServiceStartedByInstall(before: Set<number>): void {
  const started = findForwarders().filter((f) => !before.has(f.pid) && /smcrouted/.test(f.what));
  if (started.length === 0) return;
  if (which("systemctl")) Bun.spawnSync({ cmd: ["systemctl", "stop", "smcroute"], stdout: "ignore", stderr: "ignore" });
  for (const f of findForwarders().filter((x) => started.some((s) => s.pid === x.pid))) {
    log.warn(`stopping smcrouted (pid ${f.pid}) that installing smcroute started`);
    try {
      process.kill(f.pid, "SIGTERM");
    } catch {
      // Gone already.
    }
  }
}

process.exit(await main());
