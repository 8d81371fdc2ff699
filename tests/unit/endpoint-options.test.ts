// Endpoint options (",ttl=4,dscp=46,gso=off", ",vlan=100") and the object form of a config
// rule's outputs: parsing, errors that name the problem, and the round trip through a rule.
import { describe, expect, test } from "bun:test";
import * as v from "valibot";
import { parseInputOptions, parseOutputOptions, splitOptions } from "../../src/config/endpoint-options.ts";
import { formatIssues, ruleFromSpec, specFromRule, RuleSpecSchema } from "../../src/config/rule-spec.ts";
import { resolveRule } from "../../src/rules/rule.ts";

function rule(spec: object) {
  const r = ruleFromSpec(v.parse(RuleSpecSchema, { name: "r", from: "239.1.1.1:5000@eth0", ...spec }), 7n);
  if (!r.ok) throw new Error(r.problems.join("; "));
  return r.rule;
}

function problems(spec: object): string[] {
  const parsed = v.safeParse(RuleSpecSchema, { name: "r", from: "239.1.1.1:5000@eth0", ...spec });
  if (!parsed.success) return formatIssues(parsed.issues);
  const r = ruleFromSpec(parsed.output, 7n);
  return r.ok ? [] : r.problems;
}

describe("endpoint options", () => {
  test("split after the endpoint, as KEY=VALUE pairs", () => {
    expect(splitOptions("239.2.2.2:6000@eth1,ttl=4,dscp=46,gso=off")).toEqual({
      endpoint: "239.2.2.2:6000@eth1",
      options: [["ttl", "4"], ["dscp", "46"], ["gso", "off"]],
    });
    expect(splitOptions("[ff3e::1]:6000@eth1,ttl=2")).toEqual({ endpoint: "[ff3e::1]:6000@eth1", options: [["ttl", "2"]] });
    expect(splitOptions("239.2.2.2:6000@eth1,ttl")).toBe("option 'ttl' is not KEY=VALUE");
  });

  test("output options: ttl 1-255, dscp 0-63 or copy, gso on|off; bad ones are named", () => {
    expect(parseOutputOptions([["ttl", "4"], ["dscp", "46"], ["gso", "off"]])).toEqual({ ttl: 4, dscp: 46, gso: false });
    expect(parseOutputOptions([["dscp", "copy"]])).toEqual({ dscp: "copy" });
    expect(parseOutputOptions([["ttl", "0"]])).toBe("ttl 0 is out of range (1-255)");
    expect(parseOutputOptions([["dscp", "64"]])).toBe("dscp 64 is out of range (0-63) (or dscp=copy)");
    expect(parseOutputOptions([["gso", "no"]])).toBe("gso 'no' is not on or off");
    expect(parseOutputOptions([["ttl", "4"], ["ttl", "5"]])).toBe("option ttl is given twice");
    expect(parseOutputOptions([["vlan", "4"]])).toBe("unknown output option 'vlan' (ttl, dscp, gso)");
  });

  test("input options: vlan 1-4094", () => {
    expect(parseInputOptions([["vlan", "100"]])).toEqual({ vlan: 100 });
    expect(parseInputOptions([["vlan", "4095"]])).toBe("vlan 4095 is out of range (1-4094)");
    expect(parseInputOptions([["ttl", "1"]])).toBe("unknown input option 'ttl' (vlan)");
  });
});

describe("per-output TTL, DSCP and GSO in a rule", () => {
  test("outputs take the rule's TTL unless they have their own; DSCP copies and GSO is on by default", () => {
    const r = rule({ ttl: 3, to: ["239.2.2.2:6000@eth1,ttl=9,dscp=46,gso=off", "239.2.2.3:6000@eth2", { to: "239.2.2.4:6000@eth3", dscp: 10, gso: true }] });
    expect(r.outputs.map((o) => [o.ttl, o.dscp, o.gso])).toEqual([[9, 46, false], [3, null, true], [3, 10, true]]);
    // Distinct ids: counters and sockets follow each output's settings.
    expect(new Set(r.outputs.map((o) => o.id)).size).toBe(3);
  });

  test("a rule written back keeps every output's settings (string form, rule-wide TTL when shared)", () => {
    const r = rule({ ttl: 3, to: ["239.2.2.2:6000@eth1,ttl=9,dscp=46,gso=off", { to: "239.2.2.3:6000@eth2", dscp: "copy" }] });
    const spec = specFromRule(r);
    expect(spec.to).toEqual(["239.2.2.2:6000@eth1,ttl=9,dscp=46,gso=off", "239.2.2.3:6000@eth2,ttl=3"]);
    const again = rule(spec);
    expect(again.outputs.map((o) => [o.id, o.ttl, o.dscp, o.gso])).toEqual(r.outputs.map((o) => [o.id, o.ttl, o.dscp, o.gso]));
    const shared = specFromRule(rule({ ttl: 4, to: ["239.2.2.2:6000@eth1", "239.2.2.3:6000@eth2,dscp=1"] }));
    expect(shared).toMatchObject({ ttl: 4, to: ["239.2.2.2:6000@eth1", "239.2.2.3:6000@eth2,dscp=1"] });
  });

  test("an output without options keeps the id it had before options existed", () => {
    const a = rule({ ttl: 3, to: ["239.2.2.2:6000@eth1"] });
    const b = rule({ ttl: 3, to: ["239.2.2.2:6000@eth1,dscp=copy,gso=on"] });
    expect(a.outputs[0]!.id).toBe(b.outputs[0]!.id);
  });

  test("bad options and bad object forms are refused, naming the output", () => {
    expect(problems({ to: ["239.2.2.2:6000@eth1,dscp=99"] })).toEqual(["to[0]: '239.2.2.2:6000@eth1,dscp=99': dscp 99 is out of range (0-63) (or dscp=copy)"]);
    expect(problems({ to: [{ to: "239.2.2.2:6000@eth1", dscp: 64 }] }).join("\n")).toContain("to[0].dscp");
    expect(problems({ to: [{ to: "239.2.2.2:6000@eth1,ttl=3" }] }).join("\n")).toContain("options are keys");
    expect(problems({ to: [{ to: "239.2.2.2:6000@eth1", colour: 1 }] }).join("\n")).toContain("to[0].colour: unknown key");
  });

  test("the worker table carries each output's TTL, DSCP (null = copy) and GSO", () => {
    const r = rule({ to: ["239.2.2.2:6000@eth1,ttl=4,dscp=46,gso=off", "239.2.2.3:6000@eth2"] });
    const link = { ifindex: 3, mtu: 1500, flags: 1, addr4: "10.0.0.1" };
    const resolved = resolveRule(r, () => link);
    expect(resolved.wire!.outputs.map((o) => [o.ttl, o.dscp, o.gso])).toEqual([[4, 46, false], [8, null, true]]);
  });
});
