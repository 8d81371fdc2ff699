// Endpoints are written ADDR:PORT@IFACE (IPv6: [ADDR]:PORT@IFACE). This module parses them
// and offers valibot schemas so the CLI, the config file and the control protocol share the
// same rules and the same error messages.
import * as v from "valibot";
import { isMulticast, isUnspecified, parseIp, type IpAddress } from "./address.ts";
import { PORT_MAX, PORT_MIN } from "../limits.ts";

export interface Endpoint {
  addr: IpAddress;
  port: number;
  /** Interface name; null when the kernel chooses by route (unicast outputs). */
  iface: string | null;
}

export const IFNAME = /^[A-Za-z0-9_.:@-]{1,15}$/;

export function formatEndpoint(e: Endpoint): string {
  const a = e.addr.family === 6 ? `[${e.addr.text}]` : e.addr.text;
  return `${a}:${e.port}${e.iface ? `@${e.iface}` : ""}`;
}

/** Parses an endpoint; returns the problem as text when it is not one. */
export function parseEndpoint(text: string): Endpoint | string {
  const at = text.lastIndexOf("@");
  const hostPort = at >= 0 ? text.slice(0, at) : text;
  const iface = at >= 0 ? text.slice(at + 1) : null;
  // Options are split off by the rule schemas before this; a comma left here is on gen or sink.
  const comma = text.indexOf(",");
  if (comma >= 0 && comma > at) {
    return `options after a comma ('${text.slice(comma)}') are taken by rule inputs and outputs only (add, forward, the config file)`;
  }
  if (iface !== null && !IFNAME.test(iface)) {
    return `interface name '${iface}' is not valid (1-15 characters: letters, digits, _ . : -)`;
  }
  let addrText: string;
  let portText: string;
  if (hostPort.startsWith("[")) {
    const close = hostPort.indexOf("]");
    if (close < 0 || hostPort[close + 1] !== ":") return "expected [IPV6]:PORT";
    addrText = hostPort.slice(1, close);
    portText = hostPort.slice(close + 2);
  } else {
    const colon = hostPort.lastIndexOf(":");
    if (colon < 0) return "expected ADDRESS:PORT (with @INTERFACE where needed)";
    addrText = hostPort.slice(0, colon);
    portText = hostPort.slice(colon + 1);
    if (addrText.includes(":")) return "IPv6 addresses are written in brackets: [ADDRESS]:PORT";
  }
  const addr = parseIp(addrText);
  if (!addr && addrText.includes("%")) return `'${addrText}': a zone id is not written in the address; the interface goes after @ ([ADDRESS]:PORT@INTERFACE)`;
  if (!addr) return `'${addrText}' is not an IPv4 or IPv6 address`;
  if (!/^\d{1,5}$/.test(portText)) return `port '${portText}' is not a number`;
  const port = Number(portText);
  if (port < PORT_MIN || port > PORT_MAX) return `port ${port} is out of range (${PORT_MIN}-${PORT_MAX})`;
  return { addr, port, iface };
}

/** fe80::/10: unicast link-local, meaningful only with an interface. */
function isLinkLocalV6(a: IpAddress): boolean {
  return a.family === 6 && a.bytes[0] === 0xfe && (a.bytes[1]! & 0xc0) === 0x80;
}

export type EndpointRole = "input" | "output" | "gen" | "sink";

/** Checks that depend on where the endpoint is used. */
export function roleProblem(e: Endpoint, role: EndpointRole): string | null {
  return addressRoleProblem(e.addr, role) ?? interfaceRoleProblem(e, role);
}

/** The checks of roleProblem on the address alone (mcr's format gives it as a key of its own). */
export function addressRoleProblem(a: IpAddress, role: EndpointRole): string | null {
  if (isUnspecified(a) && role !== "sink") return `address ${a.text} is unspecified`;
  // Sockets are opened without SO_BROADCAST: every datagram would fail.
  if ((role === "output" || role === "gen") && a.family === 4 && a.bytes.subarray(12).every((b) => b === 255)) {
    return "the broadcast address 255.255.255.255 is not a destination mcrelay sends to (no SO_BROADCAST)";
  }
  return null;
}

/** The checks of roleProblem on whether the endpoint needs its interface. */
export function interfaceRoleProblem(e: Endpoint, role: EndpointRole): string | null {
  if (e.iface) return null;
  switch (role) {
    case "input":
      return "an input needs its interface: ADDRESS:PORT@INTERFACE";
    case "output":
    case "gen":
      if (isMulticast(e.addr)) return "a multicast destination needs its interface: GROUP:PORT@INTERFACE";
      // Without a scope the kernel picks any link with an fe80::/64 route (the input's included).
      if (isLinkLocalV6(e.addr)) return "a link-local destination needs its interface: [ADDRESS]:PORT@INTERFACE";
      return null;
    case "sink":
      if (isMulticast(e.addr)) return "a multicast group is joined on an interface: GROUP:PORT@INTERFACE";
      return null;
  }
}

export function endpointSchema(role: EndpointRole) {
  return v.pipe(
    v.string(),
    v.rawTransform(({ dataset, addIssue, NEVER }) => {
      const parsed = parseEndpoint(dataset.value);
      if (typeof parsed === "string") {
        addIssue({ message: `'${dataset.value}': ${parsed}` });
        return NEVER;
      }
      const problem = roleProblem(parsed, role);
      if (problem) {
        addIssue({ message: `'${dataset.value}': ${problem}` });
        return NEVER;
      }
      return parsed;
    }),
  );
}
