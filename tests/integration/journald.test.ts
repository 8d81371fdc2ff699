// Under systemd, stderr is a stream to the journal and JOURNAL_STREAM names it ("dev:inode").
// Then every stderr line starts with its syslog priority `<N>` (sd-daemon(3)), so
// `journalctl -p warning` filters; the workers' lines too. Here stderr is a pipe and
// JOURNAL_STREAM is set to that pipe's device and inode, as systemd does for its socket.
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, mcrelayCommand, startLogged } from "../support/relay-harness.ts";

const T = 120_000;

/** Runs argv with JOURNAL_STREAM set to its own stderr (a pipe), as systemd would. */
function underJournal(argv: string[]): string[] {
  return ["sh", "-c", 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$@"', "sh", ...argv];
}

function runSync(argv: string[], env: Record<string, string> = {}): { exitCode: number; stderr: string } {
  const r = Bun.spawnSync({ cmd: argv, stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1", ...env } });
  return { exitCode: r.exitCode, stderr: r.stderr.toString() };
}

const lines = (text: string): string[] => text.split("\n").filter((l) => l.length > 0);

let dir = "";
let topo: Topology | undefined;

afterEach(async () => {
  await topo?.destroy();
  topo = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = "";
});

describe("journald priorities", () => {
  test("an error spanning two lines gets <3> on each line; a JOURNAL_STREAM of another file gets no prefix", () => {
    dir = mkdtempSync(join(tmpdir(), "mcr-journal-"));
    const bad = join(dir, "bad.json5");
    writeFileSync(bad, "{ bogus: 1 }\n");
    const journal = runSync(underJournal([...mcrelayCommand("bun"), "config", "check", bad]));
    expect(journal.exitCode).toBe(3);
    expect(lines(journal.stderr)).toEqual([`<3>${bad}:1:3: bogus: unknown key`, `<3>${bad}: 1 problem`]);

    const other = runSync([...mcrelayCommand("bun"), "config", "check", bad], { JOURNAL_STREAM: "8:12345" });
    expect(lines(other.stderr)).toEqual([`${bad}:1:3: bogus: unknown key`, `${bad}: 1 problem`]);
  });

  describe.skipIf(!netnsAvailable())("daemon (kernel)", () => {
    test(
      "run: info <6>, a pending rule <4>, worker debug lines <7>; at info the interface list is one line",
      async () => {
        topo = await Topology.create("journal");
        const rt = await buildRelayTopology(topo, { label: "journal", sinks: 2 });
        dir = mkdtempSync(join(tmpdir(), "mcr-journal-"));
        const config = join(dir, "mcrelay.json5");
        writeFileSync(
          config,
          `{ rules: [ { name: "ok", from: "239.1.1.1:5000@r0", to: ["239.2.2.2:6000@r1"] },
                      { name: "later", from: "239.1.1.9:5000@nosuch0", to: ["239.2.2.2:6000@r2"] } ] }`,
        );
        const start = async (level: string) => {
          const argv = [...mcrelayCommand("bun"), "run", "--config", config, "--socket", join(dir, `${level}.sock`), "--state-dir", join(dir, level), "--log-level", level];
          const p = startLogged(topo!, rt.relay, underJournal(argv), `run ${level}`);
          await p.waitForStderr(/ready: 2 rules/, 30_000);
          p.proc.kill("SIGTERM");
          expect(await p.exited).toBe(0);
          return lines(p.stderr);
        };

        const debug = await start("debug");
        for (const l of debug) expect(l).toMatch(/^<[2-7]>/);
        expect(debug).toContainEqual(expect.stringMatching(/^<6>\[info\] \[daemon\] ready: 2 rules/));
        expect(debug).toContainEqual(expect.stringMatching(/^<4>\[warn\] \[daemon\] rule later is pending: .*nosuch0/));
        expect(debug).toContainEqual(expect.stringMatching(/^<7>\[debug\] \[worker:0:/));
        expect(debug).toContainEqual("<7>[debug] [netlink] interface r1 appeared (index 3, up, mtu 1500)");

        const info = await start("info");
        for (const l of info) expect(l).toMatch(/^<[2-6]>/);
        expect(info.filter((l) => l.includes("[netlink]"))).toEqual(["<6>[info] [netlink] 4 interfaces: lo, r0, r1, r2"]);
        expect(info.filter((l) => l.includes("appeared") || l.includes("gained address"))).toEqual([]);
      },
      T,
    );
  });
});
