// The config file: JSON5 validated completely before anything uses it. Errors name the key
// path, the value and the rule; the earlier Rust implementation's rule format is accepted.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { loadConfig, parseConfig } from "../../src/config/file.ts";
import { ruleFromSpec, specFromRule } from "../../src/config/rule-spec.ts";
import { ConfigError, EXIT } from "../../src/errors.ts";
import { configText } from "../../src/cli/config.ts";
import { TempDir } from "../support/daemon-harness.ts";

let dir: TempDir;
beforeAll(() => {
  dir = new TempDir("mcr-cfg-");
});
afterAll(() => dir.remove());

/** The ConfigError's message for `text`, failing the test when the text is accepted. */
function problems(text: string): string {
  try {
    parseConfig(text, "test.json5");
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).exitCode).toBe(EXIT.config);
    return (err as Error).message;
  }
  throw new Error(`accepted: ${text}`);
}

describe("config file", () => {
  test("a JSON5 file with comments, unquoted keys and trailing commas gives its rules in order", () => {
    const cfg = parseConfig(
      `// relays
      {
        rules: [
          { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1", "10.0.0.5:7000",], ttl: 4, },
          { name: "b", from: "239.1.1.2:5000@eth0", to: ["239.2.2.3:6000@eth1"], source: "10.1.1.1" }, /* fan-in */
        ],
      }`,
      "x.json5",
    );
    expect(cfg.path).toBe("x.json5");
    expect(cfg.specs).toEqual([
      { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1", "10.0.0.5:7000"], ttl: 4 },
      { name: "b", from: "239.1.1.2:5000@eth0", to: ["239.2.2.3:6000@eth1"], source: "10.1.1.1" },
    ]);
  });

  test("a rule named with digits only (allowed before such names were refused) loads with a warning at its name, in both formats", () => {
    const ours = parseConfig(`{ rules: [ { name: "101", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] } ] }`, "d.json5");
    expect(ours.specs.map((r) => r.name)).toEqual(["101"]);
    expect(ours.warnings.map((w) => [w.path, w.message])).toEqual([["rules[0].name", "rules[0].name: '101' is all digits: remove, stats and trace read '101' as a rule id first, and new rules may not be named so; rename it (a name needs a letter or one of _ . -)"]]);
    // Its other problems are still found, and named with its own name.
    expect(problems(`{ rules: [ { name: "101", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:70000@eth1"] } ] }`)).toContain("rules[0] (101)");
    // Two rules of the same digit name are still one name twice.
    expect(problems(`{ rules: [ { name: "7", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] }, { name: "7", from: "239.1.1.2:5000@eth0", to: ["239.2.2.2:6000@eth1"] } ] }`)).toContain("rules[1]");
    const mcr = parseConfig(`{ rules: [ { name: "42", input: { interface: "eth0", group: "239.1.1.1", port: 5000 }, outputs: [ { group: "239.2.2.2", port: 6000, interface: "eth1" } ] } ] }`, "m.json5");
    expect(mcr.specs.map((r) => r.name)).toEqual(["42"]);
    expect(mcr.warnings.map((w) => w.path)).toContain("rules[0].name");
  });

  test("an empty object and an empty rule list are valid and give no rules", () => {
    expect(parseConfig("{}", "e").specs).toEqual([]);
    expect(parseConfig("{ rules: [] }", "e").specs).toEqual([]);
  });

  test("an unknown key in a rule is named by its path", () => {
    const m = problems(`{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"], bogus: 1 } ] }`);
    expect(m).toContain("test.json5");
    expect(m).toContain("rules[0].bogus: unknown key");
  });

  test("an unknown top-level key is named", () => {
    expect(problems(`{ rules: [], rulez: [] }`)).toContain("rulez: unknown key");
  });

  test("a bad endpoint is refused naming the rule, the field, the value and the rule broken", () => {
    const m = problems(`{ rules: [ { name: "ok", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] },
                                   { name: "bad", from: "239.1.1.2:5000@eth0", to: ["239.2.2.2:70000@eth1"] } ] }`);
    expect(m).toContain("rules[1] (bad)");
    expect(m).toContain("to[0]");
    expect(m).toContain("239.2.2.2:70000@eth1");
    expect(m).toContain("out of range");
    expect(m).not.toContain("rules[0]");
  });

  test("a wrong type is refused naming the key path", () => {
    expect(problems(`{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: "239.2.2.2:6000@eth1" } ] }`)).toContain("rules[0].to");
    expect(problems(`{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"], ttl: 0 } ] }`)).toMatch(/rules\[0\]\.ttl: .*at least 1/);
    expect(problems(`{ rules: {} }`)).toContain("rules");
  });

  test("an input without an interface, or an output on the input's interface, is refused", () => {
    expect(problems(`{ rules: [ { name: "a", from: "239.1.1.1:5000", to: ["239.2.2.2:6000@eth1"] } ] }`)).toMatch(/rules\[0\] \(a\): from: .*needs its interface/);
    expect(problems(`{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth0"] } ] }`)).toMatch(/rules\[0\] \(a\): .*input interface eth0/);
  });

  test("two rules with one name are refused, naming both positions", () => {
    const m = problems(`{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] },
                                   { name: "a", from: "239.1.1.2:5000@eth0", to: ["239.2.2.3:6000@eth1"] } ] }`);
    expect(m).toContain("rules[1]: name 'a' is already used by rules[0]");
  });

  test("every problem of a file is listed at once, not only the first kind found", () => {
    // One schema problem (rules[0]) and one rule problem (rules[1]): a user fixing the file
    // should learn about both from one `config check`.
    const m = problems(`{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"], bogus: 1 },
                                   { name: "b", from: "239.1.1.2:5000@eth0", to: ["239.2.2.3:6000@eth0"] } ] }`);
    expect(m).toContain("rules[0].bogus: unknown key");
    expect(m).toContain("rules[1] (b)");
  });

  test("workers per interface are read; a count out of range is refused naming the interface", () => {
    const cfg = parseConfig(`{ workers: { eth0: 2, "eth1.5": 1 }, rules: [] }`, "w");
    expect(cfg.workers).toEqual(new Map([["eth0", 2], ["eth1.5", 1]]));
    expect(parseConfig("{}", "w").workers).toEqual(new Map());
    expect(problems(`{ workers: { eth0: 0 } }`)).toMatch(/workers\.eth0: at least 1 worker/);
    expect(problems(`{ workers: { eth0: 65 } }`)).toMatch(/workers\.eth0: at most 64 workers/);
  });

  test("a plain worker count sets the worker processes and every interface's default; a bad one is refused naming the key", () => {
    const cfg = parseConfig(`{ workers: 3, rules: [] }`, "w");
    expect(cfg.workersDefault).toBe(3);
    expect(cfg.workers).toEqual(new Map());
    expect(parseConfig(`{ workers: { eth0: 2 } }`, "w").workersDefault).toBeNull();
    expect(problems(`{ workers: 0 }`)).toMatch(/workers: at least 1 worker/);
    expect(problems(`{ workers: 65 }`)).toMatch(/workers: at most 64 workers/);
    expect(problems(`{ workers: "two" }`)).toMatch(/workers: workers is a number of worker processes/);
  });

  test("ring_mib per interface is read; a size out of range or not whole is refused naming the interface", () => {
    const cfg = parseConfig(`{ ring_mib: { eth0: 64, "eth1.5": 1 }, rules: [] }`, "r");
    expect(cfg.ringMib).toEqual(new Map([["eth0", 64], ["eth1.5", 1]]));
    expect(parseConfig("{}", "r").ringMib).toEqual(new Map());
    expect(problems(`{ ring_mib: { eth0: 0 } }`)).toMatch(/ring_mib\.eth0: at least 1 MiB/);
    expect(problems(`{ ring_mib: { eth0: 257 } }`)).toMatch(/ring_mib\.eth0: at most 256 MiB/);
    expect(problems(`{ ring_mib: { eth0: 1.5 } }`)).toMatch(/ring_mib\.eth0: a ring size is a whole number of MiB/);
    expect(problems(`{ ring_mib: { eth0: "8" } }`)).toMatch(/ring_mib\.eth0: a ring size is a number of MiB/);
  });

  test("text that is not JSON5 is refused with the file named", () => {
    expect(problems(`{ rules: [ `)).toMatch(/^test\.json5:1:10: not valid JSON5: a list is not closed/);
  });

  test("a missing file is a ConfigError naming the path and the errno", () => {
    const path = dir.join("absent.json5");
    expect(() => loadConfig(path)).toThrow(ConfigError);
    expect(() => loadConfig(path)).toThrow(`${path}: cannot read: ENOENT`);
  });

  test("loadConfig reads a file from disk", () => {
    const path = dir.file("good.json5", `{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] } ] }`);
    expect(loadConfig(path)).toEqual({
      path,
      format: "mcrelay",
      specs: [{ name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] }],
      workers: new Map(),
      workersDefault: null,
      pinning: new Map(),
      warnings: [],
      ringMib: new Map(),
      metrics: null,
    });
  });
});

describe("the earlier Rust implementation's format", () => {
  test("input/outputs rules become from/to rules; multicast_ttl is the default TTL; unnamed rules get rule-N", () => {
    const cfg = parseConfig(
      `{
        multicast_ttl: 4,
        rules: [
          { name: "old", input: { interface: "eth0", group: "239.1.1.1", port: 5000 },
            outputs: [ { group: "239.2.2.2", port: 6000, interface: "eth1" }, { group: "10.0.0.5", port: 6001 } ] },
          { input: { interface: "eth0", group: "239.1.1.9", port: 5009 },
            outputs: [ { group: "239.2.2.9", port: 6009, interface: "eth1", ttl: 2 } ] },
        ],
      }`,
      "legacy.json5",
    );
    expect(cfg.specs).toEqual([
      { name: "old", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1", "10.0.0.5:6001"], ttl: 4 },
      { name: "rule-2", from: "239.1.1.9:5009@eth0", to: ["239.2.2.9:6009@eth1"], ttl: 2 },
    ]);
  });

  test("without multicast_ttl or a per-output ttl an mcr-format rule gets mcr's default TTL, 1", () => {
    const cfg = parseConfig(`{ rules: [ { input: { interface: "eth0", group: "239.1.1.1", port: 5000 }, outputs: [ { group: "239.2.2.2", port: 6000, interface: "eth1" } ] } ] }`, "l");
    expect(cfg.specs).toEqual([{ name: "rule-1", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"], ttl: 1 }]);
    expect(cfg.format).toBe("mcr");
  });

  test("old and new rules can be mixed in one file", () => {
    const cfg = parseConfig(
      `{ rules: [ { name: "new", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] },
                  { name: "old", input: { interface: "eth0", group: "239.1.1.2", port: 5000 }, outputs: [ { group: "239.2.2.3", port: 6000, interface: "eth1" } ] } ] }`,
      "m",
    );
    expect(cfg.specs.map((s) => s.name)).toEqual(["new", "old"]);
  });

  test("an unknown key in an old-format rule is named by its path", () => {
    expect(problems(`{ rules: [ { input: { interface: "eth0", group: "239.1.1.1", port: 5000, foo: 1 }, outputs: [ { group: "239.2.2.2", port: 6000, interface: "eth1" } ] } ] }`)).toContain(
      "rules[0].input.foo: unknown key",
    );
  });

  test("different TTLs on the outputs of one old-format rule become per-output TTLs", () => {
    const cfg = parseConfig(
      `{ multicast_ttl: 5, rules: [ { input: { interface: "eth0", group: "239.1.1.1", port: 5000 },
      outputs: [ { group: "239.2.2.2", port: 6000, interface: "eth1", ttl: 2 }, { group: "239.2.2.3", port: 6000, interface: "eth1", ttl: 3 },
                 { group: "239.2.2.4", port: 6000, interface: "eth1" } ] } ] }`,
      "l",
    );
    expect(cfg.specs).toEqual([
      { name: "rule-1", from: "239.1.1.1:5000@eth0", to: [{ to: "239.2.2.2:6000@eth1", ttl: 2 }, { to: "239.2.2.3:6000@eth1", ttl: 3 }, "239.2.2.4:6000@eth1"], ttl: 5 },
    ]);
    const rule = ruleFromSpec(cfg.specs[0]!, 1n);
    expect(rule.ok && rule.rule.outputs.map((o) => o.ttl)).toEqual([2, 3, 5]);
  });

  test("an old-format port out of range is refused, naming its path", () => {
    expect(problems(`{ rules: [ { input: { interface: "eth0", group: "239.1.1.1", port: 0 }, outputs: [ { group: "239.2.2.2", port: 6000, interface: "eth1" } ] } ] }`)).toMatch(
      /rules\[0\]\.input\.port: a port is 1-65535/,
    );
  });
});

describe("config file: rules that would collide in a worker", () => {
  test("two rules relaying the same input (interface, group, port, any source) are refused, naming both", () => {
    const m = problems(`{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] },
                                   { name: "b", from: "239.1.1.1:5000@eth0", to: ["239.2.2.3:6000@eth1"] } ] }`);
    expect(m).toContain("rules[1] (b): relays the same input as rules[0]");
  });

  test("the same group and port on another interface, or with a source filter, is a different input", () => {
    const cfg = parseConfig(
      `{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] },
                  { name: "b", from: "239.1.1.1:5000@eth2", to: ["239.2.2.3:6000@eth1"] },
                  { name: "c", from: "239.1.1.1:5000@eth0", to: ["239.2.2.4:6000@eth1"], source: "10.0.0.9" } ] }`,
      "test.json5",
    );
    expect(cfg.specs.map((s) => s.name)).toEqual(["a", "b", "c"]);
  });
});

describe("config show's text", () => {
  test("object-form outputs and quoted keys are printed in JSON5 as the file writes them, and the text loads to the same rules", () => {
    const rules = [
      {
        name: "obj",
        from: "239.1.1.1:5000@eth0.100,vlan=7",
        to: [{ to: "239.2.2.2:6000@eth1", ttl: 4, dscp: "copy" as const, gso: false }, "239.2.2.3:6000@eth1,dscp=46", { to: "[ff15::1]:6000@eth2", dscp: 10 }],
        ttl: 9,
        source: "10.1.1.1",
        max_pps: 1000,
        loop_guard: false,
      },
      { name: "plain", from: "239.1.1.2:5000@eth0", to: ["10.0.0.5:7000"] },
    ];
    const text = configText(
      { config_file: "/etc/mcrelay/mcrelay.json5", state_dir: "/var/lib/mcrelay", workers: { "eth0.100": 2, eth0: 1 }, workers_default: null, rules: rules.map((r, i) => ({ ...r, origin: i ? "runtime" : "config", id: String(i + 1) })) },
      new Date("2026-12-02T00:00:00Z"),
    );
    // JSON5 as the rest of the file: bare keys at every depth, quoted only where they must be.
    expect(text).toContain('  workers: { "eth0.100": 2, eth0: 1 },');
    expect(text).toContain('to: [{ to: "239.2.2.2:6000@eth1", ttl: 4, dscp: "copy", gso: false }, "239.2.2.3:6000@eth1,dscp=46", { to: "[ff15::1]:6000@eth2", dscp: 10 }]');
    expect(text).not.toMatch(/"(to|ttl|dscp|gso)":/);
    // Round trip: saved as a config file, it gives the same rules and workers.
    const cfg = parseConfig(text, "shown.json5");
    expect(cfg.specs).toEqual(rules);
    expect(Object.fromEntries(cfg.workers)).toEqual({ "eth0.100": 2, eth0: 1 });
  });
});
