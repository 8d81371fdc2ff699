/** The harness's loggers: consola, one tag per module, everything to stderr. */
import { createConsola, type ConsolaInstance } from "consola";

const root = createConsola({ stdout: process.stderr, stderr: process.stderr });

export function logger(tag: string): ConsolaInstance {
  return root.withTag(tag);
}
