import pkg from "../package.json" with { type: "json" };

export const VERSION: string = pkg.version;
/** Version of the client <-> daemon control protocol. */
export const PROTOCOL_VERSION = 1;
