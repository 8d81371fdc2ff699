// Tests of the namespace helper itself. They need root (CI has it) and iproute2.
import { afterEach, describe, expect, test } from "bun:test";
import {
  NETNS_PREFIX,
  NetnsError,
  Topology,
  checkTestAddress,
  creatorPid,
  listNamespaces,
  namespaceExists,
  netnsAvailable,
  sweepStale,
  withTopology,
} from "../../scripts/lib/netns.ts";

// Namespaces need root and iproute2 (CI has both); elsewhere these tests are skipped.
const describe_netns = describe.skipIf(!netnsAvailable());
const netns_path = new URL("../../scripts/lib/netns.ts", import.meta.url).pathname;
const bun = process.execPath;

/** Reads a child's output line by line; keeps what it has read so later waits see it too. */
class LineReader {
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  private buffer = "";
  private done = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.reader = stream.getReader();
  }

  /** Resolves with the first line matching `want`, or fails after `timeout_ms`. */
  async waitFor(want: RegExp, timeout_ms: number): Promise<string> {
    const deadline = Date.now() + timeout_ms;
    for (;;) {
      const line = this.buffer.split("\n").find((l) => want.test(l));
      if (line !== undefined) return line;
      if (this.done) throw new Error(`output ended before a line matching ${want}: ${JSON.stringify(this.buffer)}`);
      const remaining_ms = deadline - Date.now();
      if (remaining_ms <= 0) {
        throw new Error(`no line matching ${want} within ${timeout_ms} ms: ${JSON.stringify(this.buffer)}`);
      }
      const chunk = await Promise.race([this.reader.read(), Bun.sleep(remaining_ms).then(() => null)]);
      if (chunk === null) continue;
      if (chunk.done) this.done = true;
      else this.buffer += this.decoder.decode(chunk.value, { stream: true });
    }
  }
}

/** A UDP receiver (node:dgram under bun) that prints "ready", then the first datagram, then exits. */
function receiverScript(port: number, group?: string, local?: string): string {
  return `
    const s = require("node:dgram").createSocket({ type: "udp4", reuseAddr: true });
    s.on("message", (m, r) => { console.log("got " + m.toString() + " from " + r.address); process.exit(0); });
    s.bind(${port}, () => {
      ${group ? `s.addMembership(${JSON.stringify(group)}, ${JSON.stringify(local)});` : ""}
      console.log("ready");
    });
    setTimeout(() => process.exit(3), 10000);
  `;
}

/** Sends `count` datagrams 50 ms apart (the first may wait for ARP). */
function senderScript(dest: string, port: number, text: string, count = 5): string {
  return `
    const s = require("node:dgram").createSocket("udp4");
    let n = 0;
    const tick = () => s.send(${JSON.stringify(text)}, ${port}, ${JSON.stringify(dest)}, (err) => {
      if (err) { console.error(err.message); process.exit(2); }
      if (++n >= ${count}) { s.close(); return; }
      setTimeout(tick, 50);
    });
    tick();
  `;
}

describe_netns("Topology", () => {
  test("two namespaces joined by a veth have their addresses, carry UDP and vanish on destroy", async () => {
    const topo = await Topology.create("pair");
    let names: string[] = [];
    try {
      const a = await topo.ns("a");
      const b = await topo.ns("b");
      names = [a, b];
      expect(a.startsWith(`${NETNS_PREFIX}${process.pid}-`)).toBe(true);
      expect(creatorPid(a)).toBe(process.pid);
      await topo.link({ ns: a, ifname: "va", addr: "10.201.0.1/24", mtu: 9000 }, { ns: b, ifname: "vb", addr: "10.201.0.2/24" });

      const addr_a = (await topo.exec(a, ["ip", "-o", "addr", "show", "dev", "va"], { check: true })).stdout;
      expect(addr_a).toContain("inet 10.201.0.1/24");
      const link_a = (await topo.exec(a, ["ip", "-o", "link", "show", "va"], { check: true })).stdout;
      expect(link_a).toContain("mtu 9000");
      expect(link_a).toContain("state UP");
      const addr_b = (await topo.exec(b, ["ip", "-o", "addr", "show", "dev", "vb"], { check: true })).stdout;
      expect(addr_b).toContain("inet 10.201.0.2/24");

      const receiver = topo.spawn(b, [bun, "-e", receiverScript(40001)], { stdout: "pipe" });
      const out = new LineReader(receiver.stdout);
      await out.waitFor(/^ready$/, 10_000);
      const sent = await topo.exec(a, [bun, "-e", senderScript("10.201.0.2", 40001, "hello")], { check: true });
      expect(sent.exitCode).toBe(0);
      expect(await out.waitFor(/^got /, 10_000)).toBe("got hello from 10.201.0.1");
      expect(await receiver.exited).toBe(0);
    } finally {
      await topo.destroy();
    }
    for (const name of names) expect(namespaceExists(name)).toBe(false);
  });

  test("a sender with addMulticastRoute reaches a receiver that joined the group", async () => {
    await withTopology("mcast", async (topo) => {
      const a = await topo.ns("a");
      const b = await topo.ns("b");
      await topo.link({ ns: a, ifname: "va", addr: "10.202.0.1/24" }, { ns: b, ifname: "vb", addr: "10.202.0.2/24" });
      await topo.addMulticastRoute(a, "va");
      expect((await topo.exec(a, ["ip", "route", "show", "224.0.0.0/4"], { check: true })).stdout).toContain("dev va");
      await topo.disableRpFilter(b);
      expect(await topo.sysctlGet(b, "net.ipv4.conf.all.rp_filter")).toBe("0");
      expect(await topo.sysctlGet(b, "net.ipv4.conf.vb.rp_filter")).toBe("0");

      const receiver = topo.spawn(b, [bun, "-e", receiverScript(40002, "239.1.2.3", "10.202.0.2")], { stdout: "pipe" });
      const out = new LineReader(receiver.stdout);
      await out.waitFor(/^ready$/, 10_000);
      await topo.exec(a, [bun, "-e", senderScript("239.1.2.3", 40002, "group")], { check: true });
      expect(await out.waitFor(/^got /, 10_000)).toBe("got group from 10.202.0.1");
      expect(await receiver.exited).toBe(0);
    });
  });

  test("destroy stops spawned processes, SIGKILLing one that ignores SIGTERM, and is idempotent", async () => {
    const topo = await Topology.create("procs");
    const a = await topo.ns("a");
    const polite = topo.spawn(a, ["sleep", "60"]);
    const stubborn = topo.spawn(a, ["sh", "-c", "trap '' TERM; echo armed; while :; do sleep 1; done"], {
      stdout: "pipe",
      killGraceMs: 200,
    });
    await new LineReader(stubborn.stdout).waitFor(/^armed$/, 5_000);
    await topo.destroy();
    await topo.destroy();
    expect(polite.signalCode).toBe("SIGTERM");
    expect(stubborn.signalCode).toBe("SIGKILL");
    expect(namespaceExists(a)).toBe(false);
    await expect(topo.ns("b")).rejects.toThrow(NetnsError);
  });

  test("withTopology deletes the namespaces when the body throws", async () => {
    let created = "";
    const body = withTopology("throws", async (topo) => {
      created = await topo.ns("a");
      throw new Error("boom");
    });
    await expect(body).rejects.toThrow("boom");
    expect(created).not.toBe("");
    expect(namespaceExists(created)).toBe(false);
  });

  test("addresses outside 10.0.0.0/8 and fd00::/8 and overlong interface names are refused", async () => {
    expect(() => checkTestAddress("10.1.2.3/24")).not.toThrow();
    expect(() => checkTestAddress("fd00:1::1/64")).not.toThrow();
    for (const bad of ["192.168.1.1/24", "8.8.8.8/32", "10.1.2.3", "10.1.2.300/24", "2001:db8::1/64"]) {
      expect(() => checkTestAddress(bad)).toThrow(NetnsError);
    }
    await withTopology("refuse", async (topo) => {
      const a = await topo.ns("a");
      const b = await topo.ns("b");
      await expect(topo.link({ ns: a, ifname: "x".repeat(16) }, { ns: b, ifname: "vb" })).rejects.toThrow(NetnsError);
      await expect(topo.link({ ns: a, ifname: "va", addr: "192.168.0.1/24" }, { ns: b, ifname: "vb" })).rejects.toThrow(
        NetnsError,
      );
      expect(() => topo.spawn("mcr-not-ours", ["true"])).toThrow(NetnsError);
    });
  });
});

describe_netns("cleanup from afterEach", () => {
  let topo: Topology | undefined;
  let leftover: string[] = [];
  afterEach(async () => {
    await topo?.destroy();
    topo = undefined;
  });

  test("a test that throws after creating namespaces", async () => {
    topo = await Topology.create("aftereach");
    leftover = [await topo.ns("a"), await topo.ns("b")];
    expect(() => {
      throw new Error("simulated failure inside the test");
    }).toThrow("simulated failure");
  });

  test("finds them deleted by the afterEach hook", () => {
    expect(leftover.length).toBe(2);
    for (const name of leftover) expect(namespaceExists(name)).toBe(false);
  });
});

describe_netns("safety nets", () => {
  /** Runs a child bun that creates one namespace, prints its name, then does `ending`. */
  async function childLeaves(ending: string): Promise<{ name: string; exitCode: number | null }> {
    const script = `
      import { Topology } from ${JSON.stringify(netns_path)};
      const topo = await Topology.create("child");
      console.log(await topo.ns("a"));
      ${ending}
    `;
    const child = Bun.spawn({ cmd: [bun, "-e", script], stdout: "pipe", stderr: "ignore" });
    const line = await new LineReader(child.stdout).waitFor(/^mcr-/, 10_000);
    await child.exited;
    return { name: line.trim(), exitCode: child.exitCode };
  }

  async function gone(name: string, timeout_ms = 5_000): Promise<boolean> {
    const deadline = Date.now() + timeout_ms;
    while (Date.now() < deadline) {
      if (!namespaceExists(name)) return true;
      await Bun.sleep(50);
    }
    return false;
  }

  test("a process that dies of an uncaught error leaves no namespace", async () => {
    const { name, exitCode } = await childLeaves(`setTimeout(() => { throw new Error("crash"); }, 10);`);
    expect(exitCode).not.toBe(0);
    expect(await gone(name)).toBe(true);
  });

  test("a process killed by SIGTERM leaves no namespace", async () => {
    const { name } = await childLeaves(`setTimeout(() => process.kill(process.pid, "SIGTERM"), 10); await Bun.sleep(5000);`);
    expect(await gone(name)).toBe(true);
  });

  test("a process killed by SIGKILL leaves no namespace (the reaper deletes it)", async () => {
    const { name, exitCode } = await childLeaves(`process.kill(process.pid, "SIGKILL");`);
    expect(exitCode).toBeNull();
    expect(await gone(name)).toBe(true);
  });

  test("sweepStale removes a namespace of a dead pid and keeps one of a live pid", async () => {
    const dead = Bun.spawn({ cmd: ["true"] });
    await dead.exited;
    const stale = `${NETNS_PREFIX}${dead.pid}-dead-stale`;
    expect(Bun.spawnSync(["ip", "netns", "add", stale]).exitCode).toBe(0);
    try {
      await withTopology("live", async (topo) => {
        const kept = await topo.ns("a");
        // A parallel run's sweep may get to `stale` first: assert the outcome, not who won.
        const deleted = sweepStale();
        expect(deleted).not.toContain(kept);
        expect(listNamespaces()).not.toContain(stale);
        expect(namespaceExists(kept)).toBe(true);
      });
    } finally {
      Bun.spawnSync(["ip", "netns", "del", stale], { stderr: "ignore" });
    }
  });
});
