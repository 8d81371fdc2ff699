// Config problems are reported as FILE:LINE:COLUMN, for syntax errors and for every invalid
// field (all of them, not the first per rule), and `config check --json` always prints a
// result document. Also the JSON5 reader itself: it reads what JSON5 allows.
import { describe, expect, test } from "bun:test";
import { ConfigFileError, parseConfig, type ConfigProblem } from "../../src/config/file.ts";
import { parseJson5, Json5SyntaxError } from "../../src/config/json5.ts";
import { ConfigCheckSchema } from "../../src/cli/output-schemas.ts";
import { schemaProblems } from "../../src/control/responses.ts";
import { EXIT } from "../../src/errors.ts";
import { problemsOf } from "../support/config-problems.ts";
import { TempDir } from "../support/daemon-harness.ts";
import { mcrelayCommand } from "../support/relay-harness.ts";


const where = (p: ConfigProblem) => `${p.line}:${p.column} ${p.path}`;

describe("JSON5 reader", () => {
  test("reads comments, unquoted and single-quoted keys, trailing commas, hex, +, leading dots, Infinity", () => {
    const doc = parseJson5(`// c\n{ a: 1, 'b': 'x\\'y', "c": [0x10, +1, .5, 5., -Infinity,], /* d */ d: null, e: true, }`);
    expect(doc.value).toEqual({ a: 1, b: "x'y", c: [16, 1, 0.5, 5, -Infinity], d: null, e: true });
  });

  test("agrees with Bun's JSON5 parser on mcr's example file", async () => {
    const text = await Bun.file(`${import.meta.dir}/../fixtures/mcr/reference-rules.json5`).text();
    expect(parseJson5(text).value).toEqual(Bun.JSON5.parse(text));
  });

  test("knows where each value and key starts", () => {
    const doc = parseJson5(`{\n  rules: [\n    { name: "a",\n      to: ["x", "y"] },\n  ],\n}`);
    expect(doc.values.get("rules[0].to[1]")).toEqual({ line: 4, column: 17 });
    expect(doc.keys.get("rules[0].name")).toEqual({ line: 3, column: 7 });
  });

  test("a syntax error carries its line and column", () => {
    const at = (text: string) => {
      try {
        parseJson5(text);
      } catch (err) {
        expect(err).toBeInstanceOf(Json5SyntaxError);
        return `${(err as Json5SyntaxError).line}:${(err as Json5SyntaxError).column} ${(err as Error).message}`;
      }
      return "accepted";
    };
    expect(at(`{\n  a: 1\n  b: 2\n}`)).toBe("3:3 expected ',' or '}', found 'b'");
    expect(at(`{ a: "x\n" }`)).toMatch(/^1:\d+ a line break inside a string/);
    expect(at(`{ a: 1 } x`)).toBe("1:10 unexpected 'x' after the end of the document");
    expect(at(`{ a: 01 }`)).toMatch(/^1:6 a number cannot start with 0/);
    expect(at(`/* open`)).toBe("1:1 a /* comment is not closed");
  });
});

describe("config problems with their place", () => {
  test("a syntax error is FILE:LINE:COLUMN: not valid JSON5", () => {
    try {
      parseConfig(`{\n  rules: [\n    { name: "a" }\n    { name: "b" },\n  ],\n}`, "x.json5");
      throw new Error("accepted");
    } catch (err) {
      expect((err as Error).message).toBe("x.json5:4:5: not valid JSON5: expected ',' or ']', found '{'");
      expect((err as ConfigFileError).exitCode).toBe(EXIT.config);
    }
  });

  test("every invalid field of one rule is reported, each at its own line and column", () => {
    const ps = problemsOf(`{
  rules: [
    { name: "bad name!",
      from: "239.1.1.1:5000@eth0",
      to: ["239.2.2.2:6000@eth1"],
      ttl: 0,
      bogus: 1 },
  ],
}`);
    expect(ps.map(where)).toEqual(["3:13 rules[0].name", "6:12 rules[0].ttl", "7:7 rules[0].bogus"]);
    expect(ps.map((p) => p.message)).toEqual([expect.stringContaining("rules[0].name: a name is 1-64"), "rules[0].ttl: a TTL is at least 1", "rules[0].bogus: unknown key"]);
  });

  test("a rule with a bad input group and a bad output port reports both, with a wrong TTL and an output on the input interface", () => {
    const ps = problemsOf(`{ rules: [
  { name: "a",
    from: "239.1.1.999:5000@eth0",
    to: ["239.2.2.2:6000@eth1", "239.2.2.3:70000@eth1"] },
  { name: "b",
    from: "239.1.1.2:5000@eth0",
    to: [{ to: "239.2.2.2:6000@eth1", ttl: 999 }, "239.3.3.3:x@eth2", "239.4.4.4:6000@eth0"],
    max_pps: -1, source: "::1" },
] }`);
    // In file order; the problems across fields are placed at the field they are about (they
    // were placed at their rule).
    expect(ps.map(where)).toEqual(["3:11 rules[0].from", "4:33 rules[0].to[1]", "7:44 rules[1].to[0].ttl", "7:51 rules[1].to[1]", "7:71 rules[1].to[2]", "8:14 rules[1].max_pps", "8:26 rules[1].source"]);
    expect(ps.map((p) => p.message)).toEqual([
      "rules[0] (a): from: '239.1.1.999:5000@eth0': '239.1.1.999' is not an IPv4 or IPv6 address",
      "rules[0] (a): to[1]: '239.2.2.3:70000@eth1': port 70000 is out of range (1-65535)",
      "rules[1].to[0].ttl: a TTL is at most 255",
      "rules[1] (b): to[1]: '239.3.3.3:x@eth2': port 'x' is not a number",
      "rules[1] (b): output 239.4.4.4:6000@eth0 uses the input interface eth0: a relay on one interface would see its own traffic; use another interface",
      "rules[1].max_pps: max_pps is at least 1",
      "rules[1] (b): source ::1 is an IPv6 address but the input 239.1.1.2:5000@eth0 is IPv4: no packet could match; give a source of the input's family",
    ]);
  });

  test("no problem is reported that is only a consequence of another", () => {
    // A bad input: no "same input" or "output on the input interface" about it. A list that is
    // not a list: nothing about its entries. An output with a wrong shape: once.
    const ps = problemsOf(`{ rules: [
  { name: "a", from: "nope", to: ["239.2.2.2:6000@eth0", "239.2.2.2:6000@eth0"] },
  { name: "b", from: "239.1.1.1:5000@eth0", to: "239.2.2.2:6000@eth1", ttl: 0 },
  { name: "c", from: "239.1.1.2:5000@eth0", to: [{ to: "239.2.2.2:6000@eth1", ttl: "x" }] },
] }`);
    expect(ps.map((p) => p.path)).toEqual(["rules[0].from", "rules[0].to[1]", "rules[1].to", "rules[1].ttl", "rules[2].to[0].ttl"]);
    expect(ps[1]!.message).toBe("rules[0] (a): output 239.2.2.2:6000@eth0 is listed twice");
  });

  test("a name used twice and the same input twice are reported for a rule whose shape or another field is wrong (were found only once it was fixed)", () => {
    const ps = problemsOf(`{ rules: [
  { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] },
  { name: "a", from: "239.1.1.1:5000@eth0", to: "239.2.2.2:6000@eth1" },
  { name: "b", from: "239.1.1.2:5000@eth0", to: ["239.2.2.2:6000@eth1"], ttl: "x" },
  { name: "c", from: "239.1.1.2:5000@eth0", to: ["239.2.2.2:70000@eth1"] },
  { name: "b", from: "239.1.1.3:5000@eth0", to: ["239.2.2.2:6000@eth1"], bogus: 1 },
] }`);
    expect(ps.map((p) => `${where(p)} ${p.message}`)).toEqual([
      "3:11 rules[1].name rules[1]: name 'a' is already used by rules[0]",
      "3:22 rules[1].from rules[1] (a): relays the same input as rules[0] (239.1.1.1:5000@eth0 from any source)",
      "3:49 rules[1].to rules[1].to: Invalid type: Expected Array but received \"239.2.2.2:6000@eth1\"",
      "4:79 rules[2].ttl rules[2].ttl: a TTL is a number",
      "5:22 rules[3].from rules[3] (c): relays the same input as rules[2] (239.1.1.2:5000@eth0 from any source)",
      "5:50 rules[3].to[0] rules[3] (c): to[0]: '239.2.2.2:70000@eth1': port 70000 is out of range (1-65535)",
      "6:11 rules[4].name rules[4]: name 'b' is already used by rules[2]",
      "6:74 rules[4].bogus rules[4].bogus: unknown key",
    ]);
  });

  test("a check across rules is skipped when a field it reads is wrong (no problem that is only a consequence)", () => {
    // Each rule after the first would collide with it if its wrong field were read as absent
    // (source: any; vlan: the input's), or names a rule that is itself wrong.
    const ps = problemsOf(`{ rules: [
  { name: "a", from: "239.1.1.1:5000@eth0,vlan=5", to: ["239.2.2.2:6000@eth1"] },
  { name: "a b", from: "239.1.1.1:5000@eth0,vlan=5", to: ["239.2.2.2:6000@eth1"], source: "nope" },
  { name: "a b", from: "239.1.1.1:5000@eth0,vlan=5", to: ["239.2.2.2:6000@eth1"], vlan: 6 },
  { name: "c", from: "239.1.1.1:5000@eth0,vlan=99999", to: ["239.2.2.2:6000@eth1"], vlan: 5 },
] }`);
    expect(ps.map((p) => p.path)).toEqual(["rules[1].name", "rules[1].source", "rules[2].name", "rules[2].vlan", "rules[3].from"]);
    expect(ps.map((p) => p.message).join("\n")).not.toMatch(/same input|already used/);
  });

  test("mcr's form: a rule whose shape is wrong is still compared by name and input", () => {
    const ps = problemsOf(`{ rules: [
  { name: "m", input: { interface: "eth0", group: "239.1.1.1", port: 5000 }, outputs: [{ group: "239.2.2.2", port: 6000, interface: "eth1" }] },
  { name: "m", input: { interface: "eth0", group: "239.1.1.1", port: 5000 }, outputs: [] },
  { input: { interface: "eth0", group: "239.1.1.1", port: 0 }, outputs: [] },
] }`);
    expect(ps.map((p) => `${where(p)} ${p.message}`)).toEqual([
      "3:11 rules[1].name rules[1]: name 'm' is already used by rules[0]",
      "3:23 rules[1].input rules[1] (m): relays the same input as rules[0] (239.1.1.1:5000@eth0 from any source)",
      "3:87 rules[1].outputs rules[1].outputs: at least one output is needed",
      "4:59 rules[2].input.port rules[2].input.port: a port is 1-65535",
      "4:73 rules[2].outputs rules[2].outputs: at least one output is needed",
    ]);
  });

  test("columns count code points, as an editor shows them: an emoji (2 UTF-16 units) and é (2 bytes) before the error count one each", () => {
    // Line 2: '  { name: "a", /* é 😀 */ from: "239.1.1.1:5000@eth0", to: [' is 59 code points (60
    // UTF-16 units, 63 bytes); the bad output starts at column 60. Line 3 has none: unchanged.
    const ps = problemsOf(`{ rules: [
  { name: "a", /* é 😀 */ from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:70000@eth1"] },
  { name: "b", from: "239.1.1.2:5000@eth0", to: ["239.2.2.2:70000@eth1"] },
] }`);
    expect(ps.map(where)).toEqual(["2:60 rules[0].to[0]", "3:50 rules[1].to[0]"]);
    // A syntax error after them: 'b' is the 11th character of '{ a: "é😀" b }' (the 12th UTF-16 unit).
    try {
      parseConfig(`{ a: "é😀" b }`, "x.json5");
      throw new Error("accepted");
    } catch (err) {
      expect((err as Error).message).toBe("x.json5:1:11: not valid JSON5: expected ',' or '}', found 'b'");
    }
    // What is found is named whole, not half an emoji.
    expect(() => parseJson5(`{ a: 1 😀 }`)).toThrow("expected ',' or '}', found '😀'");
  });

  test("semantic problems of endpoints are placed at the endpoint, across all rules", () => {
    const ps = problemsOf(`{ rules: [
  { name: "a", from: "239.1.1.1:5000", to: ["239.2.2.2:6000@eth1", "239.2.2.2:70000@eth1"] },
  { name: "b", from: "239.1.1.2:5000@eth0", to: ["239.2.2.3:6000@eth0"] },
] }`);
    expect(ps.map(where)).toEqual(["2:22 rules[0].from", "2:68 rules[0].to[1]", "3:50 rules[1].to[0]"]);
    expect(ps[0]!.message).toMatch(/^rules\[0\] \(a\): from: .*needs its interface/);
    expect(ps[1]!.message).toMatch(/^rules\[0\] \(a\): to\[1\]: .*out of range/);
    expect(ps[2]!.message).toMatch(/^rules\[1\] \(b\): .*input interface eth0/);
  });

  test("a file that is not one object is refused saying what it is (an empty list was 'ok, 0 rules')", () => {
    for (const [text, found] of [["[]", "a list"], ["[{ rules: [] }]", "a list"], ["null", "null"], ["42", "a number"], [`"x"`, "a string"]] as const) {
      const ps = problemsOf(`\n  ${text}`);
      expect(ps.map((p) => `${p.line}:${p.column} ${p.message}`)).toEqual([`2:3 the file is one object ({ rules: [...] }), not ${found}`]);
    }
  });

  test("a non-integer worker count and a rules key that is not a list get messages naming them, not valibot's", () => {
    expect(problemsOf(`{ workers: { eth0: 2.5 } }`).map((p) => p.message)).toEqual(["workers.eth0: a worker count is a whole number"]);
    expect(problemsOf(`{ rules: {} }`).map((p) => p.message)).toEqual(["rules: rules is a list of rules: [ { name, from, to }, ... ]"]);
  });

  test("a key given twice in one object is a problem at the second (a second 'rules: []' silently dropped every rule)", () => {
    const ps = problemsOf(`{\n  rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"], ttl: 2, "ttl": 3 } ],\n  rules: [],\n}`);
    expect(ps.map((p) => `${where(p)} ${p.message}`)).toEqual([
      "2:91 rules[0].ttl rules[0].ttl: given twice (first at line 2, column 83); one of them would be ignored",
      "3:3 rules rules: given twice (first at line 2, column 3); one of them would be ignored",
    ]);
  });

  test("a missing required key is named as missing, in our form and in mcr's (not valibot's 'Invalid key: Expected ...')", () => {
    expect(problemsOf(`{ rules: [ { name: "a" } ] }`).map((p) => `${where(p)} ${p.message}`)).toEqual([
      "1:12 rules[0].from rules[0].from: missing: this key is required",
      "1:12 rules[0].to rules[0].to: missing: this key is required",
    ]);
    expect(problemsOf(`{ rules: [ { input: { interface: "r0", group: "239.1.1.1" }, outputs: [{ group: "239.2.2.2", port: 6000, interface: "r1" }] } ] }`).map((p) => p.message)).toEqual([
      "rules[0].input.port: missing: this key is required",
    ]);
  });

  test("an unknown key is placed at the key; a duplicate name at the second name", () => {
    const ps = problemsOf(`{\n  rulez: [],\n  rules: [\n    { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] },\n    { name: "a", from: "239.1.1.2:5000@eth0", to: ["239.2.2.3:6000@eth1"] },\n  ],\n}`);
    expect(ps.map(where)).toEqual(["2:3 rulez", "5:13 rules[1].name"]);
    expect(ps[1]!.message).toBe("rules[1]: name 'a' is already used by rules[0]");
  });

  test("the ConfigError message is one FILE:LINE:COLUMN line per problem", () => {
    try {
      parseConfig(`{ rules: [ { name: "a", from: "x", to: [] } ] }`, "y.json5");
    } catch (err) {
      const lines = (err as Error).message.split("\n");
      expect(lines.every((l) => /^y\.json5:\d+:\d+: rules\[0\]/.test(l))).toBe(true);
      expect(lines.length).toBeGreaterThanOrEqual(1);
    }
  });
});

describe("config check --json", () => {
  const mcrelay = mcrelayCommand("bun");
  const check = (file: string) => {
    const r = Bun.spawnSync({ cmd: [...mcrelay, "config", "check", file, "--json"], stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
    return { exitCode: r.exitCode, doc: JSON.parse(r.stdout.toString()), stderr: r.stderr.toString() };
  };

  test("prints a result document for an invalid file too (exit 3), listing every problem with its place", () => {
    const dir = new TempDir("mcr-chk-");
    try {
      const bad = dir.file("bad.json5", `{ rules: [\n  { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"], ttl: 300 },\n  { name: "b", from: "nope", to: ["239.2.2.3:6000@eth1"] },\n] }`);
      const r = check(bad);
      expect(r.exitCode).toBe(EXIT.config);
      expect(schemaProblems(ConfigCheckSchema, r.doc)).toEqual([]);
      expect(r.doc).toMatchObject({ file: bad, ok: false, rules: [] });
      expect(r.doc.errors.map((e: ConfigProblem) => `${e.line}:${e.column} ${e.path}`)).toEqual(["2:79 rules[0].ttl", "3:22 rules[1].from"]);

      const syntax = check(dir.file("syntax.json5", "{ rules: [ }"));
      expect(syntax.exitCode).toBe(EXIT.config);
      expect(syntax.doc.errors).toEqual([{ file: expect.stringContaining("syntax.json5"), line: 1, column: 12, path: null, message: expect.stringContaining("not valid JSON5") }]);

      const missing = check(dir.join("absent.json5"));
      expect(missing.exitCode).toBe(EXIT.config);
      expect(missing.doc.errors).toEqual([expect.objectContaining({ line: null, message: "cannot read: ENOENT" })]);

      const good = check(dir.file("good.json5", `{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"] } ] }`));
      expect(good.exitCode).toBe(0);
      expect(schemaProblems(ConfigCheckSchema, good.doc)).toEqual([]);
      expect(good.doc).toMatchObject({ ok: true, format: "mcrelay", errors: [], warnings: [], rules: [{ name: "a" }] });
    } finally {
      dir.remove();
    }
  });

  test("without --json the problems go to stderr as FILE:LINE:COLUMN lines and stdout stays empty", () => {
    const dir = new TempDir("mcr-chk-");
    try {
      const bad = dir.file("bad.json5", `{ rules: [ { name: "a", from: "239.1.1.1:5000@eth0", to: ["239.2.2.2:6000@eth1"], ttl: 0 } ] }`);
      const r = Bun.spawnSync({ cmd: [...mcrelay, "config", "check", bad], stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
      expect(r.exitCode).toBe(EXIT.config);
      expect(r.stdout.toString()).toBe("");
      expect(r.stderr.toString()).toContain(`${bad}:1:88: rules[0].ttl: a TTL is at least 1`);
    } finally {
      dir.remove();
    }
  });
});
