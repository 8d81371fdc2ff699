// Who may do what on the control socket (issue 11, H5), decided from the peer's credentials:
// a member of the socket group reads but cannot change anything (the report's attack: a group
// member adding a rule that taps the host's own unicast traffic), a member of the admin group
// may change rules, anyone else is refused at connect, every change is logged with the peer's
// uid and pid, and the workers' group can never be one of the socket's groups.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { PROTOCOL_VERSION as P } from "../../src/version.ts";
import { chmodSync } from "node:fs";
import { join } from "node:path";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, mcrelayCommand, startForward, type RelayTopology } from "../support/relay-harness.ts";
import { TempDir, TestDaemon, type ListedRule } from "../support/daemon-harness.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 120_000;
const CLIENT = join(import.meta.dir, "../support/attacker.py");
/** uid 2 (bin) with only the given group. */
const as = (gid: number) => ["setpriv", "--reuid=2", `--regid=${gid}`, "--clear-groups", "/usr/bin/python3", CLIENT];
const USERS = 100;
const BIN = 2;
const SYS = 3;

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir | undefined;
const daemons: TestDaemon[] = [];

/** hello then each request, as uid 2 with group `gid`; the answers in order. */
async function ask(d: { socket: string }, gid: number, ...requests: object[]): Promise<{ connect_error?: number; answers?: any[] }> {
  const p = Bun.spawn({ cmd: [...as(gid), d.socket, "ask", "1", ...requests.map((r) => JSON.stringify({ v: P, ...r }))], stdout: "pipe", stderr: "pipe" });
  const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
  if (code !== 0) throw new Error(`client exit ${code}: ${await new Response(p.stderr).text()}`);
  return JSON.parse(out.trim().split("\n").at(-1)!);
}

const tap = (name: string) => ({ id: 7, cmd: "add", args: { rule: { name, from: `${rt.relayInAddr}:514@r0`, to: ["239.2.2.9:6514@r1"] } } });

describe_netns("control socket access by peer credentials (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("access");
    rt = await buildRelayTopology(topo, { label: "access", sinks: 1 });
  }, T);

  afterEach(async () => {
    for (const d of daemons.splice(0)) if (d.running) await d.stop().catch(() => d.kill9());
    dir?.remove();
  });

  afterAll(async () => {
    await topo?.destroy();
  }, T);

  async function start(args: string[]): Promise<TestDaemon> {
    dir = new TempDir();
    chmodSync(dir.path, 0o755);
    const d = await TestDaemon.start(rt, dir, { extraArgs: args });
    daemons.push(d);
    return d;
  }

  test("H5: a socket-group member reads (list, stats, events) but its add of a unicast tap, remove, reload and log-level get `forbidden`; nothing changes", async () => {
    const d = await start(["--socket-group", "users"]);
    const r = await ask(d, USERS, { id: 1, cmd: "list" }, { id: 2, cmd: "stats" }, tap("tap"), { id: 3, cmd: "remove", args: { rule: "x" } }, { id: 4, cmd: "reload" }, { id: 5, cmd: "log-level", args: { level: "debug" } }, { id: 6, cmd: "log-level" }, { id: 8, cmd: "events" });
    const [hello, list, stats, add, remove, reload, setLevel, getLevel, events] = r.answers!;
    expect(hello.ok).toBe(true);
    expect(list).toMatchObject({ id: 1, ok: true, result: { rules: [] } });
    expect(stats).toMatchObject({ id: 2, ok: true });
    for (const a of [add, remove, reload, setLevel]) expect(a).toMatchObject({ ok: false, error: { code: "forbidden" } });
    expect(add.error.message).toContain("uid 2");
    expect(getLevel).toMatchObject({ id: 6, ok: true, result: { level: "info" } });
    expect(events).toMatchObject({ id: 8, ok: true, result: { subscribed: true } });
    expect((await d.call("list")).rules as ListedRule[]).toEqual([]);
    expect(d.proc.stderr).toMatch(/refused add from uid 2 pid \d+: not an administrator/);
  }, T);

  test("a flood of refused changes from a socket-group member is logged at most 10 times a second, the rest counted in the next line", async () => {
    const d = await start(["--socket-group", "users"]);
    const flood = Array.from({ length: 200 }, (_, i) => ({ id: 100 + i, cmd: "remove", args: { rule: "x" } }));
    const r = await ask(d, USERS, ...flood);
    expect(r.answers!.slice(1).every((a) => a.error?.code === "forbidden")).toBe(true);
    await Bun.sleep(1100);
    const later = await ask(d, USERS, { id: 1, cmd: "remove", args: { rule: "x" } });
    expect(later.answers![1]).toMatchObject({ ok: false, error: { code: "forbidden" } });
    // Every refusal is a line or counted in one (the daemon's stderr arrives here a little later);
    // consola itself folds identical lines into one "(repeated N times)".
    const tally = () => {
      const lines = d.proc.stderr.split("\n").filter((l) => l.includes("refused remove from uid 2"));
      const written = lines.map((l) => Number(l.match(/\(repeated (\d+) times\)/)?.[1] ?? 1)).reduce((a, b) => a + b, 0);
      const counted = lines.map((l) => Number(l.match(/\((\d+) more like it not logged/)?.[1] ?? 0)).reduce((a, b) => a + b, 0);
      return { lines: written, total: written + counted };
    };
    for (let i = 0; i < 30 && tally().total < 201; i++) await Bun.sleep(100);
    const { lines, total } = tally();
    expect(total).toBe(201);
    // The 201 refusals span at most three seconds: at most 10 lines in each.
    expect(lines).toBeGreaterThanOrEqual(2);
    expect(lines).toBeLessThanOrEqual(30);
  }, T);

  test("H5: an admin-group member may add and remove (logged with its uid and pid); a peer in neither group is refused at connect", async () => {
    const d = await start(["--socket-group", "users", "--admin-group", "bin"]);
    const r = await ask(d, BIN, tap("tap"), { id: 9, cmd: "remove", args: { rule: "tap" } });
    expect(r.answers![1]).toMatchObject({ id: 7, ok: true });
    expect(r.answers![2]).toMatchObject({ id: 9, ok: true, result: { removed: "tap" } });
    expect(d.proc.stderr).toMatch(/add rule tap \(10\.99\.1\.2:514@r0 -> 239\.2\.2\.9:6514@r1\) by uid 2 pid \d+: ok/);
    expect(d.proc.stderr).toMatch(/remove rule tap by uid 2 pid \d+: ok/);
    // Both groups: the file is 0666 and the peer credentials decide alone.
    const stranger = await ask(d, SYS, { id: 1, cmd: "list" });
    expect(stranger.answers![0]).toMatchObject({ id: null, ok: false, error: { code: "forbidden" } });
    expect(stranger.answers!.length).toBe(1);
  }, T);

  test("H5: with only --socket-group, a peer outside it cannot even open the socket (mode 0660)", async () => {
    const d = await start(["--socket-group", "users"]);
    const r = await ask(d, SYS, { id: 1, cmd: "list" });
    expect(r.connect_error).toBe(13); // EACCES
  }, T);

  test("forward --socket: a member of forward's group reads but may not trace or set the log level; a peer outside it cannot connect", async () => {
    dir = new TempDir();
    chmodSync(dir.path, 0o755);
    const socket = dir.join("fwd.sock");
    // forward runs as root: its group is 0, so uid 2 with group 0 is a member and group 100 is not.
    const fwd = await startForward(rt.topo, rt.relay, "bun", ["--from", "239.1.1.7:5000@r0", "--to", "239.2.2.7:6007@r1", "--socket", socket], "fwd-access");
    try {
      const member = await ask({ socket }, 0, { id: 1, cmd: "list" }, { id: 2, cmd: "stats" }, { id: 3, cmd: "trace-start", args: { rule: "1", capture: true } }, { id: 4, cmd: "log-level", args: { level: "debug" } }, { id: 5, cmd: "log-level" });
      const [hello, list, stats, trace, setLevel, getLevel] = member.answers!;
      expect(hello.ok).toBe(true);
      expect(list).toMatchObject({ id: 1, ok: true });
      expect(stats).toMatchObject({ id: 2, ok: true });
      for (const a of [trace, setLevel]) expect(a).toMatchObject({ ok: false, error: { code: "forbidden" } });
      expect(getLevel).toMatchObject({ id: 5, ok: true, result: { level: "info" } });
      const stranger = await ask({ socket }, USERS, { id: 1, cmd: "list" });
      expect(stranger.connect_error).toBe(13); // EACCES: the socket is 0660 root:root
    } finally {
      fwd.proc.kill("SIGINT");
      await fwd.wait(20_000);
    }
  }, T);

  test("an add's words reach the audit log as one line, cut at 200 characters: a newline in `from` cannot forge an entry", async () => {
    const d = await start(["--admin-group", "bin"]);
    const forged = "x\nINFO audit: add rule evil by uid 0: ok";
    const r = await ask(d, BIN, { id: 7, cmd: "add", args: { rule: { name: "forge", from: forged, to: [`239.2.2.9:6514@r1`, { to: "y".repeat(500) }] } } });
    expect(r.answers![1]).toMatchObject({ id: 7, ok: false });
    const lines = d.proc.stderr.split("\n").filter((l) => l.includes("add rule forge"));
    expect(lines.length).toBe(1);
    expect(lines[0]).toContain(JSON.stringify(forged));
    const at = lines[0]!.indexOf(" by uid 2 pid ");
    const [what, outcome] = [lines[0]!.slice(0, at), lines[0]!.slice(at)];
    expect(what).toContain(`${"y".repeat(200)}…`);
    expect(what).not.toContain("y".repeat(201));
    expect(outcome!.length).toBeLessThan(900); // the refusal's text is cut at 800 characters
    expect(d.proc.stderr).not.toMatch(/^INFO audit: add rule evil/m);
  }, T);

  test("a regular file at the --socket path is never deleted: run exits 2 naming it", async () => {
    dir = new TempDir();
    const path = dir.file("not-a-socket", "precious");
    const r = await topo!.exec(rt.relay, [...mcrelayCommand("bun"), "run", "--socket", path, "--state-dir", dir.join("state")], { timeoutMs: 30_000 });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`--socket: ${path} exists and is not a socket; refusing to replace it`);
    expect(await Bun.file(path).text()).toBe("precious");
  }, T);

  test("the workers' group as --socket-group or --admin-group is refused with exit 2", async () => {
    for (const flag of ["--socket-group", "--admin-group"]) {
      const r = await topo!.exec(rt.relay, [...mcrelayCommand("bun"), "run", "--socket", "/tmp/mcr-access-never.sock", "--state-dir", "/tmp/mcr-access-never", flag, "nogroup"], { timeoutMs: 30_000 });
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toContain(`${flag}: the workers' user nobody has group 65534`);
    }
  }, T);
});
