// The rule store (src/supervisor/rule-store.ts) and the table planner (planner.ts) that the
// daemon and `forward` share: identity and persistence of rules, all-or-nothing changes, and
// tables planned from the rules and the links as they are. No kernel needed: links are a map.
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RuleSpec } from "../../src/config/rule-spec.ts";
import { ControlError } from "../../src/control/server.ts";
import type { LinkInfo } from "../../src/native/abi.ts";
import type { LinkFacts } from "../../src/rules/rule.ts";
import { planTables, type PlanOptions } from "../../src/supervisor/planner.ts";
import { RuleStore } from "../../src/supervisor/rule-store.ts";
import { StateFile } from "../../src/supervisor/state-file.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function stateDir(): string {
  const d = mkdtempSync(join(tmpdir(), "mcr-store-"));
  dirs.push(d);
  return d;
}

const spec = (name: string, port: number, extra: Partial<RuleSpec> = {}): RuleSpec => ({
  name,
  from: `239.1.1.1:${port}@eth0`,
  to: ["239.2.2.2:6000@eth1"],
  ...extra,
});

function store(dir: string | null, capacity: (n: number) => string[] = () => []): RuleStore {
  return new RuleStore({ state: dir ? new StateFile(dir) : null, capacity: (rules) => capacity(rules.length) });
}

function saved(dir: string): { rules: { id: string; spec: RuleSpec }[]; config_ids?: Record<string, string> } {
  return JSON.parse(readFileSync(join(dir, "rules.json"), "utf8"));
}

describe("rule store", () => {
  test("saved rules that do not load are listed with id and reason, kept through saves, and removed by name or id", () => {
    const dir = stateDir();
    const a = store(dir);
    a.load([]);
    a.add(spec("a", 5000), false);
    a.add(spec("b", 5001), false);
    a.add(spec("c", 5002), false);
    // Only one rule fits now: b and c stay in the state file, not loaded.
    const b = store(dir, (n) => (n > 1 ? [`${n} rules, at most 1`] : []));
    b.load([]);
    expect(b.all().map((s) => s.rule.name)).toEqual(["a"]);
    expect(b.unloaded()).toEqual([
      { name: "b", id: "2", reason: "2 rules, at most 1" },
      { name: "c", id: "3", reason: "2 rules, at most 1" },
    ]);
    b.remove("a");
    expect(saved(dir).rules.map((r) => r.spec.name)).toEqual(["b", "c"]);
    expect(b.removeUnloaded("2")).toEqual({ name: "b", id: "2", reason: "2 rules, at most 1" });
    expect(b.removeUnloaded("c")?.id).toBe("3");
    expect(b.removeUnloaded("c")).toBeUndefined();
    expect(b.unloaded()).toEqual([]);
    expect(saved(dir).rules).toEqual([]);
    const c = store(dir);
    c.load([]);
    expect(c.all()).toEqual([]);
  });

  test("runtime rules get increasing ids, are saved, and come back with the same ids after a restart", () => {
    const dir = stateDir();
    const a = store(dir);
    a.load([]);
    expect(a.add(spec("a", 5000), false).stored.rule.id).toBe(1n);
    expect(a.add(spec("b", 5001), false).stored.rule.id).toBe(2n);
    expect(saved(dir).rules.map((r) => r.spec.name)).toEqual(["a", "b"]);
    const b = store(dir);
    b.load([]);
    expect(b.all().map((s) => [s.rule.name, s.rule.id, s.origin])).toEqual([
      ["a", 1n, "runtime"],
      ["b", 2n, "runtime"],
    ]);
    expect(b.add(spec("c", 5002), false).stored.rule.id).toBe(3n);
  });

  test("config rules keep their ids by name across restarts and are not saved as runtime rules", () => {
    const dir = stateDir();
    const a = store(dir);
    a.load([spec("x", 5000), spec("y", 5001)], "test.json5");
    const ids = a.all().map((s) => s.rule.id);
    const b = store(dir);
    b.load([spec("y", 5001), spec("x", 5000)], "test.json5");
    expect(b.find("x")!.rule.id).toBe(ids[0]!);
    expect(b.find("y")!.rule.id).toBe(ids[1]!);
    expect(saved(dir).rules).toEqual([]);
  });

  test("a name or an input relayed twice is refused naming the other rule; replace keeps the id", () => {
    const s = store(null);
    s.load([]);
    const first = s.add(spec("a", 5000), false).stored;
    expect(() => s.add(spec("a", 5001), false)).toThrow("a rule named 'a' exists");
    expect(() => s.add(spec("b", 5000), false)).toThrow("rule a already relays 239.1.1.1:5000@eth0");
    expect(() => s.add(spec("z", 5009), true)).toThrow("no rule named 'z' to replace");
    const replaced = s.add(spec("a", 5005, { ttl: 4 }), true);
    expect(replaced.replaced).toBe(true);
    expect(replaced.stored.rule.id).toBe(first.rule.id);
    expect(s.find(first.rule.id.toString())!.rule.input.port).toBe(5005);
  });

  test("an add the workers could not hold changes nothing and is refused as a limit", () => {
    const dir = stateDir();
    const s = store(dir, (n) => (n > 1 ? [`eth0: ${n} rules, at most 1`] : []));
    s.load([]);
    s.add(spec("a", 5000), false);
    let error: unknown;
    try {
      s.add(spec("b", 5001), false);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ControlError);
    expect((error as ControlError).code).toBe("limit");
    expect(s.all().map((x) => x.rule.name)).toEqual(["a"]);
    expect(saved(dir).rules.map((r) => r.spec.name)).toEqual(["a"]);
  });

  test("an add with several problems is refused naming each of them (the control path), not only the first", () => {
    const s = store(null);
    s.load([]);
    expect(() => s.add({ name: "bad", from: "239.1.1.999:5000@eth0", to: ["239.2.2.2:70000@eth1", "239.2.2.3:6000@eth0"], source: "::1" }, false)).toThrow(
      "from: '239.1.1.999:5000@eth0': '239.1.1.999' is not an IPv4 or IPv6 address; to[0]: '239.2.2.2:70000@eth1': port 70000 is out of range (1-65535)",
    );
    expect(() => s.add({ name: "bad", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:70000@eth1", "239.2.2.3:6000@eth0"], source: "::1" }, false)).toThrow(
      /^to\[0\]: .*out of range \(1-65535\); output 239\.2\.2\.3:6000@eth0 uses the input interface eth0: .*; source ::1 is an IPv6 address/,
    );
    expect(s.size).toBe(0);
  });

  test("remove takes a name or an id; an unknown one is not_found", () => {
    const s = store(null);
    s.load([]);
    const a = s.add(spec("a", 5000), false).stored;
    s.add(spec("b", 5001), false);
    expect(s.remove(a.rule.id.toString()).rule.name).toBe("a");
    expect(s.remove("b").rule.name).toBe("b");
    expect(() => s.remove("a")).toThrow("no rule named or numbered 'a'");
    expect(s.size).toBe(0);
  });

  test("applyConfig adds, removes and changes config rules, keeps runtime ones, and is all or nothing", () => {
    const s = store(null);
    s.load([spec("keep", 5000), spec("drop", 5001), spec("edit", 5002)], "c.json5");
    s.add(spec("mine", 5003), false);
    const editId = s.find("edit")!.rule.id;
    const change = s.applyConfig([spec("keep", 5000), spec("edit", 5002, { ttl: 3 }), spec("new", 5004), spec("mine", 5010)]);
    expect(change).toEqual({ added: ["new"], removed: ["drop"], changed: ["edit"], conflicts: ["mine"], unchanged: 1 });
    expect(s.find("edit")!.rule.id).toBe(editId);
    expect(s.find("mine")!.origin).toBe("runtime");
    const before = s.all().map((x) => [x.rule.name, x.rule.id]);
    // A second rule relaying the same input as "keep": refused, nothing changed.
    expect(() => s.applyConfig([spec("keep", 5000), spec("twin", 5000)])).toThrow("already relays");
    expect(s.all().map((x) => [x.rule.name, x.rule.id])).toEqual(before);
  });

  test("a reload where rules swap or shift inputs is applied (the new set is checked whole), keeping each rule's id", () => {
    const s = store(null);
    s.load([spec("r1", 5000), spec("r2", 5001), spec("r3", 5002)], "c.json5");
    const ids = s.all().map((x) => x.rule.id);
    // r1 takes r2's input while r2 moves on to a new one (a shift), then r2 and r3 swap.
    expect(s.applyConfig([spec("r1", 5001), spec("r2", 5009), spec("r3", 5002)])).toMatchObject({ changed: ["r1", "r2"], unchanged: 1 });
    expect(s.applyConfig([spec("r1", 5001), spec("r2", 5002), spec("r3", 5009)])).toMatchObject({ changed: ["r2", "r3"], unchanged: 1 });
    expect(s.all().map((x) => [x.rule.name, x.rule.input.port])).toEqual([
      ["r1", 5001],
      ["r2", 5002],
      ["r3", 5009],
    ]);
    expect(s.all().map((x) => x.rule.id)).toEqual(ids);
    // Two rules of the final set on one input are still refused, naming both; nothing changed.
    expect(() => s.applyConfig([spec("r1", 5002), spec("r2", 5002), spec("r3", 5009)])).toThrow("rule r2: rule r1 already relays 239.1.1.1:5002@eth0 from any source");
    expect(s.all().map((x) => x.rule.input.port)).toEqual([5001, 5002, 5009]);
    // A config rule on a runtime rule's input is refused too.
    s.add(spec("mine", 5020), false);
    expect(() => s.applyConfig([spec("r1", 5001), spec("r2", 5020), spec("r3", 5009)])).toThrow("rule r2: rule mine already relays 239.1.1.1:5020@eth0");
    expect(s.find("r2")!.rule.input.port).toBe(5002);
  });

  test("a name of digits only is refused for new rules, naming the field; a saved one still loads, and a word of digits is an id first", () => {
    const s = store(null);
    s.load([]);
    expect(() => s.add(spec("5", 5000), false)).toThrow("name: '5' is all digits, which reads as a rule id");
    expect(s.size).toBe(0);
    // A config file may still name rules so (loaded with a warning by config/file.ts): an
    // upgrade must not stop a daemon whose rules are named by channel number.
    expect(s.applyConfig([spec("7", 5000)]).added).toEqual(["7"]);
    expect(s.find("7")!.rule.name).toBe("7");
    s.applyConfig([]);
    expect(s.size).toBe(0);
    // A state file of an earlier version: rule "2" has id 1, rule "b" has id 2.
    const dir = stateDir();
    new StateFile(dir).save({ nextId: 3n, rules: [{ id: 1n, spec: spec("2", 5000) }, { id: 2n, spec: spec("b", 5001) }], configIds: new Map() });
    const t = store(dir);
    t.load([]);
    expect(t.all().map((x) => [x.rule.name, x.rule.id.toString()])).toEqual([
      ["2", "1"],
      ["b", "2"],
    ]);
    expect(t.find("1")!.rule.name).toBe("2");
    // "2" is the id 2 (rule b), not the rule named "2".
    expect(t.remove("2").rule.name).toBe("b");
    // No rule has the id 2 now: the saved name finds its rule, which stays saved under its name.
    expect(t.find("2")!.rule.id).toBe(1n);
    expect(saved(dir).rules.map((r) => r.spec.name)).toEqual(["2"]);
  });

  test("resolve reports whether a rule's state changed", () => {
    const s = store(null);
    s.load([]);
    const a = s.add(spec("a", 5000), false).stored;
    expect(s.resolve(a, { pending: ["input interface eth0 is down"], pendingOutputs: new Map() })).toBe(true);
    expect(s.resolve(a, { pending: ["input interface eth0 is down"], pendingOutputs: new Map() })).toBe(false);
    expect(s.resolve(a, { pending: [], pendingOutputs: new Map() })).toBe(true);
  });
});

/**
 * A tmpfs of 64 KiB mounted on a new temporary directory, for saves on a full file system.
 * `run` gets its path; it is unmounted and removed afterwards, also when `run` throws.
 */
function withSmallTmpfs(run: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "mcr-full-"));
  try {
    const m = Bun.spawnSync({ cmd: ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "mcr-full", dir] });
    if (m.exitCode !== 0) throw new Error(`mount tmpfs on ${dir}: ${m.stderr.toString()}`);
    try {
      run(dir);
    } finally {
      const u = Bun.spawnSync({ cmd: ["umount", dir] });
      if (u.exitCode !== 0) Bun.spawnSync({ cmd: ["umount", "-l", dir] });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Fills the file system of `dir` to the last byte, then frees `freeBytes` of it. */
function fillBut(dir: string, freeBytes: number): void {
  const fd = openSync(join(dir, "filler"), "w");
  const page = Buffer.alloc(4096, 0x78);
  try {
    for (let i = 0; i < 1024; i++) writeSync(fd, page); // more than 64 KiB: ends in ENOSPC
    throw new Error("the file system did not fill up");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    closeSync(fd);
  }
  truncateSync(join(dir, "filler"), statSync(join(dir, "filler")).size - freeBytes);
}

describe("rule store on a full file system", () => {
  test.skipIf(process.getuid?.() !== 0)("an add the full disk cannot save (short write) is refused, nothing changed; the saved file stays whole and loads", () => {
    withSmallTmpfs((dir) => {
      const a = store(dir);
      a.load([]);
      a.add(spec("first", 4999), false);
      // One page free: the temporary file holds one page besides the old file, so adds succeed
      // until the file grows past a page; then write(2) writes one page and returns a short count.
      fillBut(dir, 4096);
      const added = ["first"];
      let refusal: unknown = null;
      for (let i = 0; i < 100 && !refusal; i++) {
        try {
          a.add(spec(`rule-${i}`, 5000 + i), false);
          added.push(`rule-${i}`);
        } catch (err) {
          refusal = err;
        }
      }
      expect(refusal).toBeInstanceOf(ControlError);
      expect((refusal as ControlError).message).toContain("cannot save state, nothing changed");
      expect(a.all().map((s) => s.rule.name)).toEqual(added);
      // The saved file is the last one saved, whole; no temporary is left taking space.
      expect(saved(dir).rules.map((r) => r.spec.name)).toEqual(added);
      expect(readdirSync(dir).sort()).toEqual(["filler", "rules.json"]);
      const b = store(dir);
      b.load([]);
      expect(b.all().map((s) => s.rule.name)).toEqual(added);
    });
  });
});

describe("rule store, saved but the directory not synced", () => {
  // A real failure, no seam: a directory of mode 0300 (write and search, no read) lets its owner
  // create and rename files in it, but not open the directory itself to fsync it. Root ignores
  // modes, so the store runs as nobody.
  test.skipIf(process.getuid?.() !== 0)("a change whose rename succeeded stands (kept in memory, reported done) when the directory cannot be synced", () => {
    const top = stateDir();
    chmodSync(top, 0o755);
    const dir = join(top, "state");
    mkdirSync(dir, { mode: 0o300 });
    chownSync(dir, 65534, 65534);
    const src = (f: string) => JSON.stringify(join(import.meta.dir, "../../src/supervisor", f));
    const script = `
      const { RuleStore } = await import(${src("rule-store.ts")});
      const { StateFile } = await import(${src("state-file.ts")});
      const s = new RuleStore({ state: new StateFile(${JSON.stringify(dir)}), capacity: () => [] });
      s.load([]);
      try {
        s.add(${JSON.stringify(spec("a", 5000))}, false);
        console.log("added; held: " + s.all().map((x) => x.rule.name).join(","));
      } catch (e) {
        console.log("refused: " + e.message + "; held: " + s.all().map((x) => x.rule.name).join(","));
      }`;
    const r = Bun.spawnSync({ cmd: ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, "-e", script] });
    expect(r.stdout.toString().trim()).toBe("added; held: a");
    expect(r.stderr.toString()).toContain("saved, but the directory could not be synced");
    expect(saved(dir).rules.map((x) => x.spec.name)).toEqual(["a"]);
  });
});

describe("table planner", () => {
  const links = new Map<string, LinkInfo>([
    ["eth0", { ifindex: 2, mtu: 1500, flags: 1, addr4: "10.0.0.1" }],
    ["eth1", { ifindex: 3, mtu: 1500, flags: 1, addr4: "10.0.1.1" }],
    ["eth2", { ifindex: 4, mtu: 1500, flags: 0, addr4: "10.0.2.1" }],
  ]);
  const options: PlanOptions = {
    lookup: (name) => links.get(name) ?? null,
    workersFor: (iface) => (iface === "eth0" ? 2 : 1),
    ringMibFor: (iface) => (iface === "eth0" ? 16 : undefined),
  };

  test("usable rules go into their input interface's table; a rule on a down interface is pending and in no table", () => {
    const s = store(null);
    s.load([]);
    const a = s.add(spec("a", 5000), false).stored;
    const b = s.add({ name: "b", from: "239.1.1.2:5000@eth2", to: ["239.2.2.2:6001@eth1"] }, false).stored;
    const plan = planTables(s.rules(), options);
    expect([...plan.tables.keys()]).toEqual(["eth0"]);
    const eth0 = plan.tables.get("eth0")!;
    expect([eth0.workers, eth0.ringMib]).toEqual([2, 16]);
    expect(eth0.rules.map((r) => r.id)).toEqual([a.rule.id.toString()]);
    expect(eth0.rules[0]!.outputs[0]!.ifindex).toBe(3);
    expect(eth0.rules[0]!.outputs[0]!.source).toBe("10.0.1.1");
    expect(plan.resolutions.get(a.rule.id)!.pending).toEqual([]);
    expect(plan.resolutions.get(b.rule.id)!.pending).toEqual(["input interface eth2 is down"]);
  });
});

describe("outputs to a subnet's broadcast address", () => {
  // eth1 is 10.1.2.1/24 (broadcast 10.1.2.255) and 10.9.0.1/31 (no broadcast address).
  const links = new Map<string, LinkFacts>([
    ["eth0", { ifindex: 2, mtu: 1500, flags: 1, addr4: "10.0.0.1", net4: [{ addr: "10.0.0.1", prefixlen: 24 }] }],
    ["eth1", { ifindex: 3, mtu: 1500, flags: 1, addr4: "10.1.2.1", net4: [{ addr: "10.1.2.1", prefixlen: 24 }, { addr: "10.9.0.1", prefixlen: 31 }] }],
  ]);
  const lookup = (name: string) => links.get(name) ?? null;
  const checked = (dir: string | null) => new RuleStore({ state: dir ? new StateFile(dir) : null, capacity: () => [], lookup });
  const why = "output 10.1.2.255:6000@eth1 is the broadcast address of eth1's subnet 10.1.2.0/24: mcrelay sends without SO_BROADCAST, so the kernel would refuse every datagram (EACCES); send to a host or a multicast group";

  test("add refuses an output to its interface's subnet broadcast address, naming the output and why; nothing changes", () => {
    const dir = stateDir();
    const s = checked(dir);
    s.load([]);
    let err: unknown;
    try {
      s.add(spec("bc", 5000, { to: ["239.2.2.2:6000@eth1", "10.1.2.255:6000@eth1"] }), false);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ControlError);
    expect((err as ControlError).code).toBe("bad_request");
    expect((err as ControlError).message).toBe(`rule bc refused, nothing changed: ${why}`);
    expect(s.size).toBe(0);
    // A host of the subnet, and the last address of a /31, are destinations.
    expect(s.add(spec("ok", 5001, { to: ["10.1.2.254:6000@eth1", "10.9.0.0:6000@eth1"] }), false).stored.rule.name).toBe("ok");
  });

  test("a reload that adds such an output is refused; rules loaded at start keep it, pending with the reason", () => {
    const s = checked(null);
    s.load([spec("bc", 5000, { to: ["239.2.2.2:6000@eth1", "10.1.2.255:6000@eth1"] })]);
    expect(s.size).toBe(1);
    const plan = planTables(s.rules(), { lookup, workersFor: () => 1, ringMibFor: () => undefined });
    const r = s.find("bc")!.rule;
    expect([...plan.resolutions.get(r.id)!.pendingOutputs.values()]).toEqual([why]);
    expect(plan.tables.get("eth0")!.rules[0]!.outputs.map((o) => o.addr)).toEqual(["239.2.2.2"]);
    expect(() => s.applyConfig([spec("bc", 5000), spec("new", 5001, { to: ["10.1.2.255:6000@eth1"] })])).toThrow(`rule new: ${why}`);
    expect(s.all().map((x) => x.spec)).toEqual([spec("bc", 5000, { to: ["239.2.2.2:6000@eth1", "10.1.2.255:6000@eth1"] })]);
  });
});
