// `run --watch-config`: an edited config file applies without a signal (written in place,
// replaced by rename as editors do, and swapped by a ConfigMap-style `..data` symlink); a
// broken file is refused and the old rules keep forwarding. Every change is in the audit log
// with who asked.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, renameSync, symlinkSync, writeFileSync } from "node:fs";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, type RelayTopology } from "../support/relay-harness.ts";
import { TempDir, TestDaemon, burst, killBackground, waitFor, type ListedRule } from "../support/daemon-harness.ts";
import type { Status } from "../../src/control/responses.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 180_000;

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir | undefined;
let daemon: TestDaemon | undefined;

function rule(name: string, n: number, out: string) {
  return { name, from: `239.1.1.${n}:5000@r0`, to: [`239.2.2.${n}:600${n}@${out}`] };
}

async function names(d: TestDaemon): Promise<string[]> {
  return (await d.json<{ rules: ListedRule[] }>(["list"])).rules.map((r) => r.name).sort();
}

describe_netns("watch-config (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("watchcfg");
    rt = await buildRelayTopology(topo, { label: "watchcfg", sinks: 1 });
  }, T);

  afterEach(async () => {
    await killBackground();
    if (daemon?.running) expect(await daemon.stop()).toBe(0);
    daemon = undefined;
    dir?.remove();
    dir = undefined;
  }, T);

  afterAll(async () => {
    await topo?.destroy();
  }, T);

  test(
    "an edited file applies without a signal, a broken one is refused keeping the old rules forwarding, and each is audited",
    async () => {
      const s = rt.sinks[0]!;
      dir = new TempDir();
      const path = dir.file("mcrelay.json5", JSON.stringify({ rules: [rule("one", 1, s.relayIf)] }));
      daemon = await TestDaemon.start(rt, dir, { configPath: path, extraArgs: ["--watch-config"] });
      expect(await names(daemon)).toEqual(["one"]);

      // An editor's save: a new file renamed over the old one.
      const tmp = dir.join(".mcrelay.json5.swp");
      writeFileSync(tmp, JSON.stringify({ rules: [rule("one", 1, s.relayIf), rule("two", 2, s.relayIf)] }));
      renameSync(tmp, path);
      await waitFor("rule two applied", async () => (await names(daemon!)).includes("two") || undefined, 20_000, 200);
      const two = await burst(rt, { to: "239.1.1.2:5000@g0", sinkNs: s.ns, listen: `239.2.2.2:6002@${s.ifname}`, count: 500 });
      expect(two.sink.totals.received).toBe(500);
      await daemon.proc.waitForStderr(/\[audit\].*reload .* by a change of the config file: ok, added \[two\]/, 10_000);

      // A broken file (written in place): refused, nothing changes, the error is logged.
      writeFileSync(path, `{ rules: [ { name: "three", from: "239.1.1.3:5000@r0", to: ["not an endpoint"] } ] }`);
      await daemon.proc.waitForStderr(/\[audit\].*by a change of the config file: refused: reload refused, nothing changed/, 20_000);
      expect(await names(daemon)).toEqual(["one", "two"]);
      // And `status` says the rules running are not the file's, until a reload succeeds.
      const refused = await daemon.json<Status>(["status"]);
      expect(refused.config!.reload_error).toMatchObject({
        requested_by: "a change of the config file",
        message: expect.stringMatching(/^reload refused, nothing changed: /),
        problems: [expect.objectContaining({ file: path, path: "rules[0].to[0]" })],
      });
      const still = await burst(rt, { to: "239.1.1.1:5000@g0", sinkNs: s.ns, listen: `239.2.2.1:6001@${s.ifname}`, count: 500 });
      expect(still.sink.totals.received).toBe(500);

      // Fixed again (in place): applies; `two` is removed because the file no longer has it.
      writeFileSync(path, JSON.stringify({ rules: [rule("one", 1, s.relayIf), rule("three", 3, s.relayIf)] }));
      await waitFor("rule three applied", async () => {
        const n = await names(daemon!);
        return n.join(",") === "one,three" || undefined;
      }, 20_000, 200);
      const fixed = await daemon.json<Status>(["status"]);
      expect(fixed.config).toEqual({ file: path, loaded_at: expect.any(String), reload_error: null });
      expect(Date.parse(fixed.config!.loaded_at)).toBeGreaterThan(Date.parse(refused.config!.reload_error!.at));

      // add/remove through the socket are audited with who asked.
      await daemon.json(["add", "--name", "rt", "--from", "239.1.1.5:5000@r0", "--to", `239.2.2.5:6005@${s.relayIf}`]);
      await daemon.json(["remove", "rt"]);
      await daemon.proc.waitForStderr(/\[audit\].*add rule rt \(239\.1\.1\.5:5000@r0 -> 239\.2\.2\.5:6005@r1\) by uid 0 pid \d+: ok, id \d+, active/, 10_000);
      await daemon.proc.waitForStderr(/\[audit\].*remove rule rt by uid 0 pid \d+: ok, removed rt/, 10_000);
    },
    T,
  );

  test(
    "a ConfigMap-style update (the ..data symlink swapped to a new directory) applies",
    async () => {
      const s = rt.sinks[0]!;
      dir = new TempDir();
      // kubelet's layout: mcrelay.json5 -> ..data/mcrelay.json5, ..data -> ..2026_v1
      mkdirSync(dir.join("..v1"));
      writeFileSync(dir.join("..v1/mcrelay.json5"), JSON.stringify({ rules: [rule("one", 1, s.relayIf)] }));
      symlinkSync("..v1", dir.join("..data"));
      symlinkSync("..data/mcrelay.json5", dir.join("mcrelay.json5"));
      daemon = await TestDaemon.start(rt, dir, { configPath: dir.join("mcrelay.json5"), extraArgs: ["--watch-config"] });
      expect(await names(daemon)).toEqual(["one"]);

      mkdirSync(dir.join("..v2"));
      writeFileSync(dir.join("..v2/mcrelay.json5"), JSON.stringify({ rules: [rule("four", 4, s.relayIf)] }));
      symlinkSync("..v2", dir.join("..data_tmp"));
      renameSync(dir.join("..data_tmp"), dir.join("..data"));
      await waitFor("the new ConfigMap content applied", async () => (await names(daemon!)).join(",") === "four" || undefined, 20_000, 200);
      const four = await burst(rt, { to: "239.1.1.4:5000@g0", sinkNs: s.ns, listen: `239.2.2.4:6004@${s.ifname}`, count: 500 });
      expect(four.sink.totals.received).toBe(500);
    },
    T,
  );
});
