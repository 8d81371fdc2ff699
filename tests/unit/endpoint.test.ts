// Endpoints ADDR:PORT@IFACE ([ADDR]:PORT@IFACE for IPv6): parsed the same way at every edge,
// with a message that says what is wrong; role checks depend on where the endpoint is used.
import { describe, expect, test } from "bun:test";
import * as v from "valibot";
import { endpointSchema, formatEndpoint, parseEndpoint, type Endpoint } from "../../src/base/endpoint.ts";

function ok(text: string): Endpoint {
  const e = parseEndpoint(text);
  if (typeof e === "string") throw new Error(`${text}: ${e}`);
  return e;
}

function problem(text: string): string {
  const e = parseEndpoint(text);
  if (typeof e !== "string") throw new Error(`${text} was accepted as ${formatEndpoint(e)}`);
  return e;
}

function roleIssue(role: "input" | "output" | "gen" | "sink", text: string): string | null {
  const r = v.safeParse(endpointSchema(role), text);
  return r.success ? null : r.issues.map((i) => i.message).join("; ");
}

describe("parseEndpoint", () => {
  test("IPv4 with port and interface", () => {
    const e = ok("239.1.1.1:5000@eth0");
    expect(e.addr.family).toBe(4);
    expect(e.addr.text).toBe("239.1.1.1");
    expect(e.port).toBe(5000);
    expect(e.iface).toBe("eth0");
  });

  test("the interface is optional (null when absent)", () => {
    expect(ok("10.0.0.5:7000").iface).toBeNull();
  });

  test("IPv6 in brackets, compressed to canonical lower case on output", () => {
    const e = ok("[FF3E:0:0:0:0:0:0:1]:5000@eth0");
    expect(e.addr.family).toBe(6);
    expect(formatEndpoint(e)).toBe("[ff3e::1]:5000@eth0");
  });

  test("interface names with dots, dashes and underscores (VLANs, bridges)", () => {
    expect(ok("239.1.1.1:5000@eth0.100").iface).toBe("eth0.100");
    expect(ok("239.1.1.1:5000@br-lan").iface).toBe("br-lan");
    expect(ok("239.1.1.1:5000@wg_0").iface).toBe("wg_0");
  });

  test("port limits: 1 and 65535 accepted, 0 and 65536 refused with the range", () => {
    expect(ok("239.1.1.1:1@e").port).toBe(1);
    expect(ok("239.1.1.1:65535@e").port).toBe(65535);
    expect(problem("239.1.1.1:0@e")).toBe("port 0 is out of range (1-65535)");
    expect(problem("239.1.1.1:65536@e")).toBe("port 65536 is out of range (1-65535)");
  });

  test("a missing or non-numeric port is named", () => {
    expect(problem("239.1.1.1@eth0")).toContain("ADDRESS:PORT");
    expect(problem("239.1.1.1:http@eth0")).toBe("port 'http' is not a number");
    expect(problem("239.1.1.1:-5@eth0")).toBe("port '-5' is not a number");
    expect(problem("239.1.1.1:@eth0")).toBe("port '' is not a number");
  });

  test("a bad address is named", () => {
    expect(problem("239.1.1.300:5000@eth0")).toBe("'239.1.1.300' is not an IPv4 or IPv6 address");
    expect(problem("239.01.1.1:5000@eth0")).toContain("not an IPv4 or IPv6 address");
    expect(problem("host.example:5000")).toContain("'host.example'");
  });

  test("IPv6 without brackets, or with an unclosed bracket, is refused with the expected form", () => {
    expect(problem("ff3e::1:5000@eth0")).toContain("[ADDRESS]:PORT");
    expect(problem("[ff3e::1:5000@eth0")).toBe("expected [IPV6]:PORT");
  });

  test("an interface name that is too long or has bad characters is refused", () => {
    expect(problem("239.1.1.1:5000@abcdefghijklmnop")).toContain("interface name 'abcdefghijklmnop' is not valid");
    expect(problem("239.1.1.1:5000@eth 0")).toContain("interface name");
    expect(problem("239.1.1.1:5000@")).toContain("interface name ''");
  });

  test("formatEndpoint inverts parseEndpoint", () => {
    for (const t of ["239.1.1.1:5000@eth0", "10.0.0.5:7000", "[ff3e::1]:5000@eth0", "[fd00::5]:1"]) expect(formatEndpoint(ok(t))).toBe(t);
  });
});

describe("endpoint roles", () => {
  test("an input needs an interface; IPv4 and IPv6 inputs are accepted", () => {
    expect(roleIssue("input", "239.1.1.1:5000@eth0")).toBeNull();
    expect(roleIssue("input", "239.1.1.1:5000")).toContain("an input needs its interface");
    expect(roleIssue("input", "[ff3e::1]:5000@eth0")).toBeNull();
    expect(roleIssue("input", "[ff02::fb]:5353@eth0")).toBeNull();
    expect(roleIssue("input", "[fd00::2]:5000@eth0")).toBeNull();
    expect(roleIssue("input", "[ff3e::1]:5000")).toContain("an input needs its interface");
    expect(roleIssue("input", "[::]:5000@eth0")).toContain("unspecified");
  });

  test("a multicast output needs an interface; a unicast output does not", () => {
    expect(roleIssue("output", "239.2.2.2:6000")).toContain("multicast destination needs its interface");
    expect(roleIssue("output", "10.0.0.5:6000")).toBeNull();
    expect(roleIssue("output", "[ff3e::2]:6000@eth1")).toBeNull();
  });

  test("the unspecified address is refused except where a sink listens on it", () => {
    expect(roleIssue("output", "0.0.0.0:6000")).toContain("unspecified");
    expect(roleIssue("input", "0.0.0.0:6000@eth0")).toContain("unspecified");
    expect(roleIssue("sink", "0.0.0.0:6000")).toBeNull();
  });

  test("a link-local IPv6 destination needs its interface; the limited broadcast address is refused", () => {
    expect(roleIssue("output", "[fe80::1]:6000")).toContain("link-local destination needs its interface");
    expect(roleIssue("gen", "[fe80::1]:6000")).toContain("link-local destination needs its interface");
    expect(roleIssue("output", "[fe80::1]:6000@eth1")).toBeNull();
    expect(roleIssue("output", "[2001:db8::1]:6000")).toBeNull();
    expect(roleIssue("output", "255.255.255.255:6000")).toContain("broadcast");
    expect(roleIssue("output", "255.255.255.255:6000@eth1")).toContain("broadcast");
  });

  test("a zone id in the address is refused saying the interface goes after @", () => {
    expect(roleIssue("input", "[fe80::1%eth0]:5000@eth0")).toContain("the interface goes after @");
  });

  test("the message quotes the endpoint as written", () => {
    expect(roleIssue("output", "239.2.2.2:99999@eth1")).toBe("'239.2.2.2:99999@eth1': port 99999 is out of range (1-65535)");
  });
});
