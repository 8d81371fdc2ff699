import pkg from "../package.json" with { type: "json" };

export const VERSION: string = pkg.version;
/** Version of the client <-> daemon control protocol (2: trace-start, trace-read, trace-stop). */
export const PROTOCOL_VERSION = 2;
