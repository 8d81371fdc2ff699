// mcr's own configuration files (tests/fixtures/mcr, copied from github.com/acooks/mcr) are
// read as mcr reads them: its rule form, `pinning` as worker counts, mcr's default TTL of 1,
// and the keys for features mcrelay does not have (PIM, IGMP querier, MSDP, a rule's
// protocol) ignored with a warning naming each one.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ConfigFileError, loadConfig, MCR_DEFAULT_TTL, parseConfig, type ConfigProblem } from "../../src/config/file.ts";
import { ConfigCheckSchema } from "../../src/cli/output-schemas.ts";
import { schemaProblems } from "../../src/control/responses.ts";
import { EXIT } from "../../src/errors.ts";
import { problemsOf } from "../support/config-problems.ts";
import { mcrelayCommand } from "../support/relay-harness.ts";

const FIXTURES = join(import.meta.dir, "../fixtures/mcr");
const fixture = (name: string) => join(FIXTURES, name);

describe("mcr's example files", () => {
  test("examples/config.json5 (an empty pinning map, no active rules) is accepted as mcr's format", () => {
    const cfg = loadConfig(fixture("config.json5"));
    expect(cfg).toMatchObject({ format: "mcr", specs: [], warnings: [] });
    expect(cfg.workers).toEqual(new Map());
  });

  test("the reference example gives its four rules with mcr's TTL 1, and pinning gives workers per interface", () => {
    const cfg = loadConfig(fixture("reference-rules.json5"));
    expect(MCR_DEFAULT_TTL).toBe(1);
    expect(cfg.format).toBe("mcr");
    expect(cfg.specs).toEqual([
      { name: "video-feed", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"], ttl: 1 },
      { name: "audio-feed", from: "239.1.1.2:5001@eth0", to: ["239.2.2.3:6001@eth1", "239.2.2.4:6002@eth2"], ttl: 1 },
      { name: "legacy-unicast", from: "239.1.1.3:5002@eth0", to: ["10.0.0.100:6003@eth1"], ttl: 1 },
      { name: "tunnel-endpoint", from: "10.0.0.50:5002@eth1", to: ["239.1.1.3:5002@eth0"], ttl: 1 },
    ]);
    expect(cfg.workers).toEqual(new Map([["eth0", 4], ["eth1", 2]]));
    expect(cfg.pinning).toEqual(new Map([["eth0", [0, 1, 2, 3]], ["eth1", [4, 5]]]));
    expect(cfg.warnings).toEqual([]);
  });

  test("the PIM and IGMP example is accepted with one warning naming each ignored key, at its place", () => {
    const cfg = loadConfig(fixture("reference-protocols.json5"));
    expect(cfg.specs).toEqual([]);
    expect(cfg.warnings.map((w) => [w.path, w.line, w.message])).toEqual([
      ["pim", 5, "pim: ignored: mcrelay does not speak PIM; rules are static"],
      ["igmp", 19, "igmp: ignored: mcrelay is not an IGMP querier"],
    ]);
  });

  test("the MSDP example is accepted with a warning naming msdp", () => {
    const cfg = loadConfig(fixture("msdp.json5"));
    expect(cfg.warnings.map((w) => w.message)).toEqual(["msdp: ignored: mcrelay does not speak MSDP"]);
  });

  test("mcr's ESP rule is refused, saying mcrelay relays UDP only (with the port problem too)", () => {
    try {
      loadConfig(fixture("esp-rule.json5"));
      throw new Error("accepted");
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigFileError);
      const messages = (err as ConfigFileError).problems.map((p) => p.message);
      expect(messages).toContain("rules[0].input.protocol: 'esp': mcrelay relays UDP only, not ESP (IP protocol 50)");
      expect(messages.some((m) => m.startsWith("rules[0].input.port"))).toBe(true);
    }
  });

  test("`config check --json` of each example prints a document fitting its schema", () => {
    for (const name of ["config.json5", "reference-rules.json5", "reference-protocols.json5", "msdp.json5", "esp-rule.json5"]) {
      const r = Bun.spawnSync({ cmd: [...mcrelayCommand("bun"), "config", "check", fixture(name), "--json"], stdout: "pipe", stderr: "pipe" });
      expect({ name, code: r.exitCode }).toEqual({ name, code: name === "esp-rule.json5" ? EXIT.config : 0 });
      expect({ name, problems: schemaProblems(ConfigCheckSchema, JSON.parse(r.stdout.toString())) }).toEqual({ name, problems: [] });
    }
  });
});

describe("mcr's format, key by key", () => {
  const rule = (extra = "", output = "") =>
    `{ input: { interface: "eth0", group: "239.1.1.1", port: 5000${extra} }, outputs: [ { group: "239.2.2.2", port: 6000, interface: "eth1"${output} } ] }`;

  test("multicast_ttl sets the TTL of mcr rules; a per-output ttl overrides it", () => {
    expect(parseConfig(`{ multicast_ttl: 16, rules: [ ${rule()} ] }`, "t").specs[0]!.ttl).toBe(16);
    expect(parseConfig(`{ multicast_ttl: 16, rules: [ ${rule("", ", ttl: 3")} ] }`, "t").specs[0]!.ttl).toBe(3);
  });

  test("a rule in our format keeps our default TTL even in a file with mcr rules", () => {
    const cfg = parseConfig(`{ rules: [ ${rule()}, { name: "ours", from: "239.1.1.9:5000@eth0", to: ["239.2.2.9:6000@eth1"] } ] }`, "t");
    expect(cfg.specs.map((s) => s.ttl)).toEqual([1, undefined]);
  });

  test("a protocol other than esp is ignored with a warning (mcr relays UDP for it too)", () => {
    const cfg = parseConfig(`{ rules: [ ${rule(', protocol: "udp"')} ] }`, "t");
    expect(cfg.specs).toHaveLength(1);
    expect(cfg.warnings.map((w) => w.message)).toEqual([`rules[0].input.protocol: ignored ("udp"): mcr relays UDP for it, as mcrelay does`]);
  });

  test("pinning with an empty CPU list, or together with workers for one interface, is refused", () => {
    expect(() => parseConfig(`{ pinning: { eth0: [] } }`, "t")).toThrow("pinning.eth0: list at least one CPU");
    expect(() => parseConfig(`{ pinning: { eth0: [1] }, workers: { eth0: 2 } }`, "t")).toThrow("use one of workers and pinning");
  });

  test("control_plane is ignored with a warning", () => {
    expect(parseConfig(`{ control_plane: { rpf_provider: "static" } }`, "t").warnings.map((w) => w.path)).toEqual(["control_plane"]);
  });
});

// A rule in mcr's form gets the checks a rule in ours gets, on each of its keys, with problems
// at mcr's key paths: the group, port, interface and TTL of the input and of each output, the
// name, and the checks across fields. A value of mcr's that our format would refuse was
// accepted when the rule's shape was wrong elsewhere (a group was only checked as the text of
// `from`, and only in a rule of the right shape), and a problem named our `from`/`to`.
describe("mcr's format, each key checked as our format checks its value", () => {
  const said = (p: ConfigProblem) => `${p.line}:${p.column} ${p.path} | ${p.message}`;

  test("a bad group, a port out of range, a bad interface name and a TTL out of range are each named at their key and place, all at once", () => {
    const ps = problemsOf(`{ rules: [
  { input: { interface: "eth0", group: "239.1.1.999", port: 5000 },
    outputs: [ { group: "239.2.2.x", port: 6000, interface: "eth1" },
               { group: "239.2.2.3", port: 70000, interface: "eth1" },
               { group: "239.2.2.4", port: 6000, interface: "a-name-too-long-x" },
               { group: "239.2.2.5", port: 6000, interface: "eth1", ttl: 256 } ] },
] }`);
    expect(ps.map(said)).toEqual([
      "2:40 rules[0].input.group | rules[0].input.group: '239.1.1.999' is not an IPv4 or IPv6 address",
      "3:25 rules[0].outputs[0].group | rules[0].outputs[0].group: '239.2.2.x' is not an IPv4 or IPv6 address",
      "4:44 rules[0].outputs[1].port | rules[0].outputs[1].port: a port is 1-65535",
      "5:61 rules[0].outputs[2].interface | rules[0].outputs[2].interface: interface name 'a-name-too-long-x' is not valid (1-15 characters: letters, digits, _ . : -)",
      "6:74 rules[0].outputs[3].ttl | rules[0].outputs[3].ttl: a TTL is at most 255",
    ]);
  });

  test("addresses our format refuses are refused at the group: unspecified, 255.255.255.255, a multicast output without its interface", () => {
    const ps = problemsOf(`{ rules: [ { input: { interface: "eth0", group: "0.0.0.0", port: 5000 },
  outputs: [ { group: "255.255.255.255", port: 6000, interface: "eth1" }, { group: "ff0e::1", port: 6000 }, { group: "10.0.0.5", port: 6000 } ] } ] }`);
    expect(ps.map((p) => p.message)).toEqual([
      "rules[0].input.group: address 0.0.0.0 is unspecified",
      "rules[0].outputs[0].group: the broadcast address 255.255.255.255 is not a destination mcrelay sends to (no SO_BROADCAST)",
      "rules[0].outputs[1].interface: missing: an output to ff0e::1 needs its interface",
    ]);
  });

  test("the checks across fields name the output they are about, at its place; a bad name is named", () => {
    const ps = problemsOf(`{ rules: [
  { name: "v",
    input: { interface: "eth0", group: "239.1.1.1", port: 5000 },
    outputs: [ { group: "239.2.2.2", port: 6000, interface: "eth1" },
               { group: "239.2.2.3", port: 6000, interface: "eth0" },
               { group: "239.2.2.2", port: 6000, interface: "eth1" } ] },
  { name: "no spaces", input: { interface: "eth0", group: "239.1.1.2", port: 5000 }, outputs: [] },
] }`);
    expect(ps.map(said)).toEqual([
      "5:16 rules[0].outputs[1] | rules[0] (v): output 239.2.2.3:6000@eth0 uses the input interface eth0: a relay on one interface would see its own traffic; use another interface",
      "6:16 rules[0].outputs[2] | rules[0] (v): output 239.2.2.2:6000@eth1 is listed twice",
      "7:11 rules[1].name | rules[1].name: a name is 1-64 letters, digits, _ . -",
      "7:95 rules[1].outputs | rules[1].outputs: at least one output is needed",
    ]);
  });

  test("a rule of a wrong shape still has the meaning of its other keys checked (unknown keys hid a bad group and an output on the input interface)", () => {
    const ps = problemsOf(`{ rules: [ { input: { interface: "eth0", group: "239.1.1.1", port: 5000 },
  outputs: [ { group: "239.2.2.2", port: 6000, interface: "eth1", bogus: 1 }, { group: "239.2.2.x", port: 6000, interface: "eth1" }, { group: "239.2.2.3", port: 6000, interface: "eth0" } ],
  extra: true } ] }`);
    expect(ps.map((p) => `${p.path} | ${p.message}`)).toEqual([
      "rules[0].outputs[0].bogus | rules[0].outputs[0].bogus: unknown key",
      "rules[0].outputs[1].group | rules[0].outputs[1].group: '239.2.2.x' is not an IPv4 or IPv6 address",
      "rules[0].outputs[2] | rules[0] (rule-1): output 239.2.2.3:6000@eth0 uses the input interface eth0: a relay on one interface would see its own traffic; use another interface",
      "rules[0].extra | rules[0].extra: unknown key",
    ]);
  });

  test("any value in any key gives problems naming their key, never a crash", () => {
    const values = ["null", "5", '"x"', "[]", "{}", "[null]", "[5]", '["x"]', "[{}]", "true", "-1", "1e9", '"239.1.1.1"', '"::"'];
    for (const a of values) {
      for (const key of ["input", "outputs", "input.group", "input.port", "input.interface", "outputs[0].group", "outputs[0].port", "outputs[0].interface", "outputs[0].ttl", "name"]) {
        const rule: Record<string, unknown> = { input: { interface: "eth0", group: "239.1.1.1", port: 5000 }, outputs: [{ group: "239.2.2.2", port: 6000, interface: "eth1" }] };
        const [top, sub] = key.split(".");
        const value: unknown = JSON.parse(a);
        if (sub === undefined && top !== "outputs[0]") rule[top!] = value;
        else if (top === "input") (rule.input as Record<string, unknown>)[sub!] = value;
        else (rule.outputs as Record<string, unknown>[])[0]![sub!] = value;
        const text = JSON.stringify({ rules: [rule] });
        let ps: ConfigProblem[] = [];
        try {
          parseConfig(text, "f.json5");
          continue;
        } catch (err) {
          expect({ text, err }).toEqual({ text, err: expect.any(ConfigFileError) });
          ps = (err as ConfigFileError).problems;
        }
        for (const p of ps) expect({ text, p: p.path?.startsWith(`rules[0].${top!.replace(/\[0\]$/, "")}`) ?? false, line: p.line }).toEqual({ text, p: true, line: 1 });
      }
    }
  });
});
