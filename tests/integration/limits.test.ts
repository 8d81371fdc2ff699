// No request can make an already forwarding rule stop (issue 11, H1 and H4).
// H1: what a worker cannot hold (1,024 rules, 2,048 outputs per table) is refused at every
// edge, naming the limit and the interface, before anything changes: `config check`, `add`,
// `reload`, state restore. If a worker refuses a table anyway, it keeps the last table it
// accepted (its rules go on forwarding) and only the new rule is `error`.
// H4: a change is saved and applied together or not at all: when the state file cannot be
// written, `remove`, `add` and `reload` change nothing, say so, and the rules stay listed,
// saved and forwarding.
// Throughout, a stream flows through a rule on the same interface and must lose nothing.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, note, type LoggedProcess, type RelayTopology } from "../support/relay-harness.ts";
import {
  TempDir,
  TestDaemon,
  helloClient,
  killBackground,
  runMcrelay,
  sink,
  sinkReport,
  startStream,
  stopStream,
  type ListedRule,
  type WorkerRow,
} from "../support/daemon-harness.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 240_000;
const RULES_MAX = 1024;

let topo: Topology | undefined;
let rt: RelayTopology;
const dirs: TempDir[] = [];
const daemons: TestDaemon[] = [];

/** Rule i relays 239.10.x.y:5000@r0 to 239.20.x.y:6000@r1; rule 0 is the steady stream's. */
function ruleText(i: number): { name: string; from: string; to: string[] } {
  const g = `${(i >> 8) & 255}.${i & 255}`;
  return { name: `n${i}`, from: `239.10.${g}:5000@r0`, to: [`239.20.${g}:6000@r1`] };
}

function config(count: number): string {
  return JSON.stringify({ rules: Array.from({ length: count }, (_, i) => ruleText(i)) });
}

async function start(dir: TempDir, o: { configPath?: string; prefix?: string[]; extraArgs?: string[] } = {}): Promise<TestDaemon> {
  const d = await TestDaemon.start(rt, dir, o);
  daemons.push(d);
  return d;
}

function tempDir(): TempDir {
  const d = new TempDir();
  dirs.push(d);
  return d;
}

/** A stream through rule n0 (239.10.0.0:5000@r0 -> 239.20.0.0:6000@r1) and its sink. */
async function steadyStream(): Promise<{ finish: () => Promise<{ sent: number; received: number; lost: number; duplicates: number }> }> {
  const s = await sink(rt, rt.sinks[0]!.ns, "239.20.0.0:6000@s0");
  const gen: LoggedProcess = startStream(rt, { to: "239.10.0.0:5000@g0", ratePps: 1000, size: 200 });
  await Bun.sleep(300);
  return {
    finish: async () => {
      const sent = (await stopStream(gen)).sent;
      const got = await sinkReport(s);
      return { sent, received: got.totals.received, lost: got.totals.lost, duplicates: got.totals.duplicates };
    },
  };
}

async function workerRows(d: TestDaemon): Promise<WorkerRow[]> {
  return (await d.call("workers")).workers as WorkerRow[];
}

describe_netns("limits at every edge and transactional state (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("limits");
    rt = await buildRelayTopology(topo, { label: "limits", sinks: 1 });
  }, T);

  afterEach(async () => {
    await killBackground();
    for (const d of daemons.splice(0)) if (d.running) await d.stop().catch(() => d.kill9());
    for (const d of dirs.splice(0)) d.remove();
  });

  afterAll(async () => {
    await topo?.destroy();
  }, T);

  test("H1: config check refuses 1,025 rules on one interface and 2,304 outputs, naming the interface and the limit (exit 3)", async () => {
    const dir = tempDir();
    const ok = await runMcrelay(["config", "check", dir.file("ok.json5", config(RULES_MAX))]);
    expect(ok.exitCode).toBe(0);
    const tooMany = await runMcrelay(["config", "check", dir.file("many.json5", config(RULES_MAX + 1))]);
    expect(tooMany.exitCode).toBe(3);
    expect(tooMany.stderr).toContain("interface r0: 1025 rules, but a worker holds at most 1024 (rules_max)");
    const wide = { rules: Array.from({ length: 9 }, (_, i) => ({ name: `w${i}`, from: `239.11.0.${i}:5000@r0`, to: Array.from({ length: 256 }, (_, k) => `239.12.${i}.${k}:6000@r1`) })) };
    const tooWide = await runMcrelay(["config", "check", dir.file("wide.json5", JSON.stringify(wide))]);
    expect(tooWide.exitCode).toBe(3);
    expect(tooWide.stderr).toContain("interface r0: 2304 outputs, but a worker holds at most 2048 (outputs_max)");
  }, T);

  test("H1: with 1,024 rules on r0, add, reload and state restore of a 1,025th are refused before anything changes; the stream loses nothing and the worker never restarts", async () => {
    const dir = tempDir();
    const configPath = dir.file("mcrelay.json5", config(RULES_MAX));
    const d = await start(dir, { configPath });
    const stream = await steadyStream();
    const admin = await helloClient(d.socket);
    try {
      // add: refused with `limit`, naming the interface and rules_max; nothing saved or applied.
      const add = await admin.request("add", { rule: { name: "extra", from: "239.99.0.1:5000@r0", to: ["239.98.0.1:6000@r1"] } }, 30_000);
      expect(add).toMatchObject({ ok: false, error: { code: "limit" } });
      expect(add.error!.message).toContain("interface r0: 1025 rules, but a worker holds at most 1024 (rules_max)");
      expect(add.error!.message).toContain("nothing changed");
      // The CLI says the same and exits 6.
      const cli = await d.cli(["add", "--name", "extra2", "--from", "239.99.0.2:5000@r0", "--to", "239.98.0.2:6000@r1"]);
      expect(cli.exitCode).toBe(6);
      expect(cli.stderr).toContain("rules_max");
      // reload of a file with 1,025 rules: refused, nothing changed.
      writeFileSync(configPath, config(RULES_MAX + 1));
      const reload = await admin.request("reload", undefined, 30_000);
      expect(reload).toMatchObject({ ok: false, error: { code: "config_invalid" } });
      expect(reload.error!.message).toContain("1025 rules, but a worker holds at most 1024 (rules_max)");
      const rules = (await admin.call("list", undefined, 30_000)).rules as ListedRule[];
      expect(rules.length).toBe(RULES_MAX);
      expect(rules.every((r) => r.state === "active")).toBe(true);
      const state = JSON.parse(readFileSync(`${d.stateDir}/rules.json`, "utf8"));
      expect(state.rules).toEqual([]);
      const workers = await workerRows(d);
      expect(workers.map((w) => [w.state, w.restarts, w.rules])).toEqual([["running", 0, RULES_MAX]]);
      const got = await stream.finish();
      note("limits add/reload", got);
      expect(got.sent).toBeGreaterThan(200);
      expect(got).toMatchObject({ received: got.sent, lost: 0, duplicates: 0 });
    } finally {
      admin.close();
    }
    // State restore: a saved runtime rule that would be the 1,025th stays in the file, unloaded.
    writeFileSync(configPath, config(RULES_MAX));
    expect(await d.stop()).toBe(0);
    const saved = JSON.parse(readFileSync(`${d.stateDir}/rules.json`, "utf8"));
    saved.rules.push({ id: "5000", spec: { name: "saved-extra", from: "239.99.0.3:5000@r0", to: ["239.98.0.3:6000@r1"] } });
    writeFileSync(`${d.stateDir}/rules.json`, JSON.stringify(saved));
    const d2 = await start(dir, { configPath });
    expect(d2.proc.stderr).toMatch(/saved rule saved-extra is not loaded \(interface r0: 1025 rules, but a worker holds at most 1024 \(rules_max\)\); it stays in the state file/);
    expect(((await d2.call("list")).rules as ListedRule[]).length).toBe(RULES_MAX);
    expect((await workerRows(d2)).map((w) => [w.state, w.restarts])).toEqual([["running", 0]]);
    const kept = JSON.parse(readFileSync(`${d2.stateDir}/rules.json`, "utf8"));
    expect(kept.rules.map((r: { spec: { name: string } }) => r.spec.name)).toEqual(["saved-extra"]);
  }, T);

  test("H1 defense in depth: a worker that refuses a table keeps the last one it accepted; its rules forward on, only the new rule is `error`, nothing restarts", async () => {
    const dir = tempDir();
    const configPath = dir.file("mcrelay.json5", config(2));
    // The worker refuses tables of more than 2 rules (test hook), as one with smaller limits would.
    const d = await start(dir, { configPath, extraArgs: ["--test-hook", "MCRELAY_TEST_TABLE_RULES_MAX=2"] });
    const stream = await steadyStream();
    const r = await d.json<{ rule: ListedRule }>(["add", "--name", "third", "--from", "239.99.0.9:5000@r0", "--to", "239.98.0.9:6000@r1"]);
    expect(r.rule.state).toBe("error");
    expect(r.rule.reasons.join(" ")).toContain("refused its table");
    expect(r.rule.reasons.join(" ")).toContain("test limit 2");
    const rules = (await d.call("list")).rules as ListedRule[];
    expect(rules.map((x) => [x.name, x.state])).toEqual([
      ["n0", "active"],
      ["n1", "active"],
      ["third", "error"],
    ]);
    await Bun.sleep(2_500); // a few health checks: no kill, no restart loop
    const workers = await workerRows(d);
    expect(workers.map((w) => [w.state, w.restarts, (w as WorkerRow & { consecutive_failures: number }).consecutive_failures])).toEqual([["running", 0, 0]]);
    expect(workers[0]!.applied_hash).not.toBe(workers[0]!.table_hash);
    // Removing the refused rule brings the table back to one the worker takes.
    await d.json(["remove", "third"]);
    const after = await workerRows(d);
    expect(after[0]!.applied_hash).toBe(after[0]!.table_hash);
    const got = await stream.finish();
    note("limits refusal", got);
    expect(got.sent).toBeGreaterThan(1000);
    expect(got).toMatchObject({ received: got.sent, lost: 0, duplicates: 0 });
  }, T);

  test("H4: when the state file cannot be written, remove, add and reload change nothing and say so; the rule stays listed, saved and forwarding, and is removable later", async () => {
    const dir = tempDir();
    const configPath = dir.file("mcrelay.json5", JSON.stringify({ rules: [] }));
    const d = await start(dir, { configPath });
    await d.json(["add", "--name", "n0", "--from", "239.10.0.0:5000@r0", "--to", "239.20.0.0:6000@r1"]);
    const stream = await steadyStream();
    // The daemon writes rules.json.tmp-PID then renames it: a directory of that name makes every write fail.
    const blocker = `${d.stateDir}/rules.json.tmp-${d.pid}`;
    mkdirSync(blocker);
    const saved = readFileSync(`${d.stateDir}/rules.json`, "utf8");
    const remove = await d.cli(["remove", "n0"]);
    expect(remove.exitCode).toBe(6);
    expect(remove.stderr).toContain("cannot save state, nothing changed (rule n0 is still there and forwarding)");
    const add = await d.cli(["add", "--name", "n1", "--from", "239.10.0.1:5000@r0", "--to", "239.20.0.1:6000@r1"]);
    expect(add.exitCode).toBe(6);
    expect(add.stderr).toContain("cannot save state, nothing changed");
    writeFileSync(configPath, JSON.stringify({ rules: [{ name: "c1", from: "239.10.0.2:5000@r0", to: ["239.20.0.2:6000@r1"] }] }));
    const reload = await d.cli(["reload"]);
    expect(reload.exitCode).toBe(6);
    expect(reload.stderr).toContain("reload refused, nothing changed: cannot save state");
    expect((await d.json<{ rules: ListedRule[] }>(["list"])).rules.map((r) => [r.name, r.state])).toEqual([["n0", "active"]]);
    expect(readFileSync(`${d.stateDir}/rules.json`, "utf8")).toBe(saved);
    const got = await stream.finish();
    note("transactional state", got);
    expect(got.sent).toBeGreaterThan(200);
    expect(got).toMatchObject({ received: got.sent, lost: 0, duplicates: 0 });
    // Once the state can be written again, the same rule is removed (no ghost `not_found`).
    rmdirSync(blocker);
    expect((await d.json<{ removed: string }>(["remove", "n0"])).removed).toBe("n0");
    expect((await d.json<{ rules: ListedRule[] }>(["list"])).rules).toEqual([]);
    expect(JSON.parse(readFileSync(`${d.stateDir}/rules.json`, "utf8")).rules).toEqual([]);
  }, T);
});
