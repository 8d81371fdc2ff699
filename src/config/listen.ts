// A TCP listen address `ADDR:PORT` (IPv6 `[ADDR]:PORT`), for `run --metrics` and the config
// key `metrics`: one parser and one valibot schema, so both say the same thing about bad input.
import * as v from "valibot";
import { parseIp } from "../base/address.ts";
import { PORT_MAX, PORT_MIN } from "../limits.ts";

export interface ListenAddress {
  host: string;
  port: number;
}

/** Parses `ADDR:PORT` (IPv6: `[ADDR]:PORT`); returns the problem as text when it is not one. */
export function parseListen(text: string): ListenAddress | string {
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") return `'${text}' is not [IPV6]:PORT`;
    host = text.slice(1, close);
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon < 0) return `'${text}' is not ADDRESS:PORT (e.g. 127.0.0.1:9464)`;
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
  }
  const ip = parseIp(host);
  if (!ip || (text.startsWith("[") ? ip.family !== 6 : ip.family !== 4)) return `'${host}' is not an IP address`;
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < PORT_MIN || Number(portText) > PORT_MAX) return `port '${portText}' is not ${PORT_MIN}-${PORT_MAX}`;
  return { host, port: Number(portText) };
}

/** valibot schema of a listen address, shared by `--metrics` and the config key `metrics`. */
export const ListenSchema = v.pipe(
  v.string("a listen address is a string ADDRESS:PORT"),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const r = parseListen(dataset.value);
    if (typeof r === "string") {
      addIssue({ message: r });
      return NEVER;
    }
    return r;
  }),
);

export function formatListen(a: ListenAddress): string {
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
