// Endpoint options: a comma suffix after an endpoint, as socat writes them:
//   --from 239.1.1.1:5000@eth0,vlan=100
//   --to 239.2.2.2:6000@eth1,ttl=4,dscp=46,gso=off
// The same text is accepted by `add`, `forward` and the config file; an entry of a config rule's
// `to` may also be an object {to, ttl, dscp, gso}.
import * as v from "valibot";
import { parseEndpoint, roleProblem, type Endpoint } from "../base/endpoint.ts";
import { DSCP_MAX, TTL_MAX, TTL_MIN, VLAN_MAX, VLAN_MIN } from "../limits.ts";

/** Per-output settings; absent keys take the defaults (the rule's TTL, DSCP copied, GSO on). */
export interface OutputOptions {
  ttl?: number;
  /** 0..63, or "copy": the input packet's DSCP (and ECN) bits, as a router does. */
  dscp?: number | "copy";
  gso?: boolean;
}

export const dscpSchema = v.union(
  [
    v.pipe(v.number(), v.integer("a DSCP is a whole number"), v.minValue(0, `a DSCP is 0-${DSCP_MAX}`), v.maxValue(DSCP_MAX, `a DSCP is 0-${DSCP_MAX}`)),
    v.literal("copy"),
  ],
  `a DSCP is 0-${DSCP_MAX} or "copy"`,
);

/** Splits "ENDPOINT,key=value,..." at the first comma (addresses and interface names have none). */
export function splitOptions(text: string): { endpoint: string; options: [string, string][] } | string {
  const parts = text.split(",");
  const options: [string, string][] = [];
  for (const part of parts.slice(1)) {
    const eq = part.indexOf("=");
    if (eq <= 0) return `option '${part}' is not KEY=VALUE`;
    options.push([part.slice(0, eq), part.slice(eq + 1)]);
  }
  return { endpoint: parts[0]!, options };
}

function wholeNumber(text: string, min: number, max: number, what: string): number | string {
  if (!/^\d{1,5}$/.test(text)) return `${what} '${text}' is not a whole number`;
  const n = Number(text);
  if (n < min || n > max) return `${what} ${n} is out of range (${min}-${max})`;
  return n;
}

/** Parses the options of an output; returns the problem as text. */
export function parseOutputOptions(options: readonly [string, string][]): OutputOptions | string {
  const out: OutputOptions = {};
  for (const [key, value] of options) {
    if (key in out) return `option ${key} is given twice`;
    switch (key) {
      case "ttl": {
        const n = wholeNumber(value, TTL_MIN, TTL_MAX, "ttl");
        if (typeof n === "string") return n;
        out.ttl = n;
        break;
      }
      case "dscp": {
        if (value === "copy") {
          out.dscp = "copy";
          break;
        }
        const n = wholeNumber(value, 0, DSCP_MAX, "dscp");
        if (typeof n === "string") return `${n} (or dscp=copy)`;
        out.dscp = n;
        break;
      }
      case "gso":
        if (value !== "on" && value !== "off") return `gso '${value}' is not on or off`;
        out.gso = value === "on";
        break;
      default:
        return `unknown output option '${key}' (ttl, dscp, gso)`;
    }
  }
  return out;
}

/** Options of an input; returns the problem as text. */
export interface InputOptions {
  vlan?: number;
}

export function parseInputOptions(options: readonly [string, string][]): InputOptions | string {
  const out: InputOptions = {};
  for (const [key, value] of options) {
    if (key in out) return `option ${key} is given twice`;
    switch (key) {
      case "vlan": {
        const n = wholeNumber(value, VLAN_MIN, VLAN_MAX, "vlan");
        if (typeof n === "string") return n;
        out.vlan = n;
        break;
      }
      default:
        return `unknown input option '${key}' (vlan)`;
    }
  }
  return out;
}

/** "ADDR:PORT@IFACE,ttl=4,..." with only the settings that differ from the defaults given. */
export function formatOutputOptions(o: { ttl: number; dscp: number | null; gso: boolean }, defaultTtl: number): string {
  let text = "";
  if (o.ttl !== defaultTtl) text += `,ttl=${o.ttl}`;
  if (o.dscp !== null) text += `,dscp=${o.dscp}`;
  if (!o.gso) text += ",gso=off";
  return text;
}

/** An endpoint with options, parsed; the problem as text otherwise. */
export function parseEndpointWithOptions<T>(
  text: string,
  parseOptions: (options: readonly [string, string][]) => T | string,
): { endpoint: Endpoint; options: T } | string {
  const split = splitOptions(text);
  if (typeof split === "string") return split;
  const endpoint = parseEndpoint(split.endpoint);
  if (typeof endpoint === "string") return endpoint;
  const options = parseOptions(split.options);
  if (typeof options === "string") return options;
  return { endpoint, options };
}

/** An output as a rule holds it before ids and defaults: the endpoint and its own settings. */
export interface OutputEntry extends OutputOptions {
  to: Endpoint;
}

/** An output written as text with options: "239.2.2.2:6000@eth1,ttl=4,dscp=46,gso=off". */
export const outputTextSchema = v.pipe(
  v.string(),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const parsed = parseEndpointWithOptions(dataset.value, parseOutputOptions);
    const problem = typeof parsed === "string" ? parsed : roleProblem(parsed.endpoint, "output");
    if (problem !== null) {
      addIssue({ message: `'${dataset.value}': ${problem}` });
      return NEVER;
    }
    const p = parsed as { endpoint: Endpoint; options: OutputOptions };
    return { to: p.endpoint, ...p.options } as OutputEntry;
  }),
);

/** The object form of a config rule's output: {to: "239.2.2.2:6000@eth1", ttl: 4, dscp: 46, gso: false}. */
export const OutputObjectSchema = v.strictObject({
  to: v.string(),
  ttl: v.optional(v.pipe(v.number("a TTL is a number"), v.integer("a TTL is a whole number"), v.minValue(TTL_MIN, `a TTL is at least ${TTL_MIN}`), v.maxValue(TTL_MAX, `a TTL is at most ${TTL_MAX}`))),
  dscp: v.optional(dscpSchema),
  gso: v.optional(v.boolean("gso is true or false")),
});
export type OutputObject = v.InferOutput<typeof OutputObjectSchema>;

export const outputObjectParsedSchema = v.pipe(
  OutputObjectSchema,
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const o = dataset.value;
    if (o.to.includes(",")) {
      addIssue({ message: `'${o.to}': in the object form, options are keys (ttl, dscp, gso), not a comma suffix`, path: undefined });
      return NEVER;
    }
    const endpoint = parseEndpoint(o.to);
    const problem = typeof endpoint === "string" ? endpoint : roleProblem(endpoint, "output");
    if (problem !== null) {
      addIssue({ message: `to: '${o.to}': ${problem}` });
      return NEVER;
    }
    const entry: OutputEntry = { to: endpoint as Endpoint };
    if (o.ttl !== undefined) entry.ttl = o.ttl;
    if (o.dscp !== undefined) entry.dscp = o.dscp;
    if (o.gso !== undefined) entry.gso = o.gso;
    return entry;
  }),
);

/** An input written as text with options: "239.1.1.1:5000@eth0,vlan=100". */
export const inputTextSchema = v.pipe(
  v.string(),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const parsed = parseEndpointWithOptions(dataset.value, parseInputOptions);
    const problem = typeof parsed === "string" ? parsed : roleProblem(parsed.endpoint, "input");
    if (problem !== null) {
      addIssue({ message: `'${dataset.value}': ${problem}` });
      return NEVER;
    }
    return parsed as { endpoint: Endpoint; options: InputOptions };
  }),
);

/**
 * A string or an object, each checked by its own schema so the messages are the specific ones
 * (a valibot union would only say that neither matched).
 */
function stringOrObject<S extends v.GenericSchema, O extends v.GenericSchema>(stringSchema: S, objectSchema: O, what: string) {
  return v.pipe(
    v.unknown(),
    v.rawTransform(({ dataset, addIssue, NEVER }) => {
      const value = dataset.value;
      const isObject = value !== null && typeof value === "object" && !Array.isArray(value);
      if (typeof value !== "string" && !isObject) {
        addIssue({ message: what });
        return NEVER;
      }
      const r = v.safeParse(typeof value === "string" ? stringSchema : objectSchema, value);
      if (r.success) return r.output as v.InferOutput<S> | v.InferOutput<O>;
      for (const issue of r.issues) {
        const unknownKey = issue.kind === "schema" && issue.expected === "never";
        addIssue({ message: unknownKey ? "unknown key" : issue.message, path: issue.path });
      }
      return NEVER;
    }),
  );
}

const OUTPUT_FORMS = 'an output is "ADDR:PORT@IFACE[,ttl=N][,dscp=N|copy][,gso=off]" or {to, ttl, dscp, gso}';

/** An output as written (shape only): the text form or the object form. */
export const outputSpecSchema = stringOrObject(v.string(), OutputObjectSchema, OUTPUT_FORMS);

/** An output parsed into its endpoint and settings, from either form. */
export const outputEntrySchema = stringOrObject(outputTextSchema, outputObjectParsedSchema, OUTPUT_FORMS);
