// mcr's own configuration files (tests/fixtures/mcr, copied from github.com/acooks/mcr) are
// read as mcr reads them: its rule form, `pinning` as worker counts, mcr's default TTL of 1,
// and the keys for features mcrelay does not have (PIM, IGMP querier, MSDP, a rule's
// protocol) ignored with a warning naming each one.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ConfigFileError, loadConfig, MCR_DEFAULT_TTL, parseConfig } from "../../src/config/file.ts";
import { ConfigCheckSchema } from "../../src/cli/output-schemas.ts";
import { schemaProblems } from "../../src/control/responses.ts";
import { EXIT } from "../../src/errors.ts";
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
