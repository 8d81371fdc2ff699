// The HTTP listener (`run --metrics`) under a hostile client that reaches its port: 2,000
// connections opened and held, 50 that trickle a header byte every 2 s, 8 that scrape /metrics
// in a tight loop, all at once for ATTACK_S against a daemon whose descriptor limit is 1,024.
// Measured: the supervisor's open descriptors (/proc/PID/fd, sampled every 100 ms), the round
// trip of `ping`, `list` and `add` on fresh control connections, and whether a legitimate scrape
// gets its page. Held to: descriptors <= the count before + the listener's cap + a small
// constant, every control request within 1 s, a legitimate scrape answered during the attack.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { netnsAvailable, Topology } from "../../scripts/lib/netns.ts";
import { buildRelayTopology, mcrelayCommand, note, type RelayTopology } from "../support/relay-harness.ts";
import { TempDir, TestDaemon, helloClient } from "../support/daemon-harness.ts";
import { httpGet } from "../support/prom.ts";
import { HTTP_CONNECTIONS_MAX } from "../../src/supervisor/http.ts";

const describe_netns = describe.skipIf(!netnsAvailable());
const T = 90_000;
const FD_LIMIT = 1024;
const HOST = "127.0.0.1";
const PORT = 9466;
const ATTACK_S = 14;
/** Descriptors beyond the listener's cap: connections accepted and not yet closed, a CLI's. */
const FD_SLACK = 16;
const CONTROL_MAX_MS = 1_000;
const ATTACKER = ["/usr/bin/python3", join(import.meta.dir, "../support/http-attacker.py"), HOST, String(PORT)];

let topo: Topology | undefined;
let rt: RelayTopology;
let dir: TempDir | undefined;
let daemon: TestDaemon | undefined;

function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

/** One request on a fresh control connection (connect, hello, request): its round trip, or Infinity when it fails or takes over 5 s. */
async function timedCall(socket: string, cmd: string, args?: unknown): Promise<{ ms: number; error?: string }> {
  const t0 = performance.now();
  const attempt = (async () => {
    const c = await helloClient(socket);
    try {
      await c.call(cmd, args);
    } finally {
      c.close();
    }
  })();
  try {
    await Promise.race([attempt, Bun.sleep(5_000).then(() => Promise.reject(new Error("no answer within 5 s")))]);
    return { ms: performance.now() - t0 };
  } catch (err) {
    return { ms: Infinity, error: `${cmd}: ${(err as Error).message}` };
  }
}

describe_netns("metrics listener abuse (kernel, under bun)", () => {
  beforeAll(async () => {
    topo = await Topology.create("mhttp");
    rt = await buildRelayTopology(topo, { label: "mhttp", sinks: 1 });
    dir = new TempDir();
    // A rule, so its worker and sockets are counted before the attack (the `add` during it goes
    // to the same worker).
    const s = rt.sinks[0]!;
    const configPath = dir.file("mcrelay.json5", JSON.stringify({ rules: [{ name: "steady", from: "239.1.1.1:5000@r0", to: [`239.2.2.1:6001@${s.relayIf}`] }] }));
    daemon = await TestDaemon.start(rt, dir, {
      configPath,
      prefix: ["prlimit", `--nofile=${FD_LIMIT}:${FD_LIMIT}`, "--"],
      extraArgs: ["--metrics", `${HOST}:${PORT}`],
    });
  }, T);

  afterAll(async () => {
    if (daemon?.running) await daemon.stop().catch(() => daemon?.kill9());
    await topo?.destroy();
    dir?.remove();
  }, T);

  test(
    "2,000 held, 50 trickling and 8 tight-loop scraping connections: descriptors stay under the cap, control requests answer within 1 s, a scrape gets its page",
    async () => {
      const d = daemon!;
      const s = rt.sinks[0]!;
      const fdBefore = fdCount(d.pid);
      const attack = (mode: string, conns: number) =>
        rt.topo.exec(rt.relay, [...ATTACKER, mode, String(conns), String(ATTACK_S)], { timeoutMs: (ATTACK_S + 15) * 1000 });
      // The trickling connections first, so they hold connections when the others arrive.
      const trickle = attack("trickle", 50);
      await Bun.sleep(300);
      const attackers = Promise.all([trickle, attack("hold", 2000), attack("scrape", 8)]);
      const end = Date.now() + ATTACK_S * 1000;

      let fdMax = fdBefore;
      const sampler = setInterval(() => (fdMax = Math.max(fdMax, fdCount(d.pid))), 100);
      const control: { cmd: string; ms: number; error?: string }[] = [];
      let scrape: { status: number; body: string; atS: number; attempts: number } | undefined;
      let attempts = 0;
      let added = false;
      const t0 = Date.now();
      await Bun.sleep(2_000); // the held connections are in place
      try {
        // Bounded by the attack's end: control requests every 500 ms, an `add` once, and a
        // legitimate scrape (curl) tried until it gets a 200.
        while (Date.now() < end - 500) {
          for (const cmd of ["ping", "list"]) control.push({ cmd, ...(await timedCall(d.socket, cmd)) });
          if (!added) {
            added = true;
            const rule = { name: "during.attack", from: "239.1.1.9:5000@r0", to: [`239.2.2.9:6009@${s.relayIf}`] };
            control.push({ cmd: "add", ...(await timedCall(d.socket, "add", { rule })) });
          }
          if (!scrape && attempts < 20) {
            attempts++;
            const r = await httpGet(rt.topo, rt.relay, `http://${HOST}:${PORT}/metrics`);
            if (r.status === 200) scrape = { ...r, atS: (Date.now() - t0) / 1000, attempts };
          }
          await Bun.sleep(500);
        }
      } finally {
        clearInterval(sampler);
      }
      const results = (await attackers).map((r) => {
        try {
          return JSON.parse(r.stdout) as Record<string, unknown>;
        } catch {
          return { exit: r.exitCode, stderr: r.stderr.slice(-500) };
        }
      });
      const slowest = Math.max(...control.map((c) => c.ms));
      const fdAfter = fdCount(d.pid);
      note("metrics-abuse", {
        fdBefore,
        fdMax,
        fdAfter,
        control: { requests: control.length, slowestMs: Math.round(slowest), errors: control.filter((c) => c.error).map((c) => c.error) },
        scrape: scrape ? { status: scrape.status, atS: scrape.atS, attempts: scrape.attempts } : { attempts },
        attackers: results,
      });

      expect(fdMax).toBeLessThanOrEqual(Math.max(fdBefore, fdAfter) + HTTP_CONNECTIONS_MAX + FD_SLACK);
      expect(control.filter((c) => c.error)).toEqual([]);
      expect(slowest).toBeLessThan(CONTROL_MAX_MS);
      expect(scrape?.status).toBe(200);
      expect(scrape!.body).toContain("mcrelay_rule_state");
      // The rule added during the attack was saved and is there.
      expect((await d.call("list")).rules.some((r: { name: string }) => r.name === "during.attack")).toBe(true);
      // Every held and trickling connection was ended by the daemon, none lived past the deadline.
      for (const r of results.slice(0, 2)) {
        expect(r.still_open).toBe(0);
        expect(r.lifetime_max_s as number).toBeLessThan(8);
      }
      // After the attack the listener serves as before.
      expect((await httpGet(rt.topo, rt.relay, `http://${HOST}:${PORT}/healthz`)).status).toBe(200);
    },
    T,
  );

  test(
    "the listener's HTTP: HEAD has the headers only, POST is 405 with Allow, a query string is ignored, headers over 8 KiB are 431, a request line that is not HTTP is 400, a second daemon on the port stops with EADDRINUSE",
    async () => {
      const url = `http://${HOST}:${PORT}`;
      // Header names lower-cased: HTTP does not care, so neither does the test.
      const curl = async (args: string[]) => {
        const out = (await rt.topo.exec(rt.relay, ["curl", "-s", "-S", "-m", "10", "-i", ...args], { timeoutMs: 20_000 })).stdout;
        const split = out.indexOf("\r\n\r\n");
        const names = (head: string) => head.split("\r\n").map((l) => l.replace(/^[^:]+:/, (n) => n.toLowerCase())).join("\r\n");
        return split < 0 ? names(out) : names(out.slice(0, split)) + out.slice(split);
      };
      const head = await curl(["-I", `${url}/metrics`]);
      expect(head).toMatch(/^HTTP\/1.1 200 /);
      expect(head).toContain("content-type: text/plain; version=0.0.4; charset=utf-8");
      expect(Number(/content-length: (\d+)/.exec(head)?.[1])).toBeGreaterThan(1000);
      expect(head).not.toContain("# HELP");
      const post = await curl(["-X", "POST", "-d", "x=1", `${url}/metrics`]);
      expect(post).toMatch(/^HTTP\/1.1 405 /);
      expect(post).toContain("allow: GET, HEAD");
      expect(await curl([`${url}/healthz?verbose=1`])).toMatch(/^HTTP\/1.1 200 [^]*\r\n\r\nok: /);
      expect(await curl(["-H", `X-Big: ${"a".repeat(9000)}`, `${url}/healthz`])).toMatch(/^HTTP\/1.1 431 /);
      const raw = `import socket; s = socket.create_connection(("${HOST}", ${PORT})); s.sendall(b"HELLO\\r\\n\\r\\n"); print(s.recv(100).decode().split("\\r\\n")[0])`;
      expect((await rt.topo.exec(rt.relay, ["/usr/bin/python3", "-c", raw], { timeoutMs: 10_000 })).stdout.trim()).toBe("HTTP/1.1 400 Bad Request");

      const second = await rt.topo.exec(rt.relay, [...mcrelayCommand("bun"), "run", "--metrics", `${HOST}:${PORT}`, "--socket", dir!.join("second.sock"), "--state-dir", dir!.join("second")], { timeoutMs: 30_000 });
      expect(second.exitCode).toBe(7);
      expect(second.stderr).toContain(`metrics listener ${HOST}:${PORT}: EADDRINUSE`);
    },
    T,
  );
});
