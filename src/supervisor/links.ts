// Interface facts for this network namespace, by name.
import { NativeError } from "../errors.ts";
import { linkQuery } from "../native/lib.ts";
import type { LinkInfo } from "../native/abi.ts";

/** The interface, or null when it does not exist. */
export function lookupLink(ifname: string): LinkInfo | null {
  try {
    return linkQuery(ifname);
  } catch (err) {
    if (err instanceof NativeError && (err.code === "ENODEV" || err.code === "ENXIO")) return null;
    throw err;
  }
}
