/**
 * Deletes this project's network namespaces (names starting with "mcr-"), killing any process
 * still inside them.
 *
 *   bun scripts/netns-clean.ts            every namespace with the prefix
 *   bun scripts/netns-clean.ts --stale    only those whose creating process is dead
 *   bun scripts/netns-clean.ts --prefix mcr-1234-   a narrower prefix (must start with "mcr-")
 *
 * Prints the deleted names on stdout, one per line. Exits 1 if some could not be deleted,
 * 2 on a usage error.
 */
import { parseArgs } from "node:util";
import { createConsola } from "consola";
import { NETNS_PREFIX, listNamespaces, sweepAll, sweepStale } from "./lib/netns.ts";

const log = createConsola({ stdout: process.stderr, stderr: process.stderr }).withTag("netns-clean");

const usage = "usage: bun scripts/netns-clean.ts [--stale] [--prefix mcr-...]";

function main(): number {
  let values: { stale?: boolean; prefix?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      options: {
        stale: { type: "boolean" },
        prefix: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    log.error(`${(err as Error).message}\n${usage}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  const prefix = values.prefix ?? NETNS_PREFIX;
  if (!prefix.startsWith(NETNS_PREFIX)) {
    log.error(`--prefix ${JSON.stringify(prefix)}: must start with ${JSON.stringify(NETNS_PREFIX)}`);
    return 2;
  }
  const deleted = values.stale ? sweepStale(prefix) : sweepAll(prefix);
  for (const name of deleted) process.stdout.write(`${name}\n`);
  const left = listNamespaces().filter((n) => n.startsWith(prefix) && !deleted.includes(n));
  const kind = values.stale ? "stale namespace(s)" : "namespace(s)";
  log.info(`deleted ${deleted.length} ${kind} with prefix ${prefix}` + (left.length ? `; ${left.length} left` : ""));
  // With --stale, namespaces of live processes are meant to stay; without it, any left is a failure.
  return !values.stale && left.length > 0 ? 1 : 0;
}

process.exit(main());
