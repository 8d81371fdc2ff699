// `mcrelay ping`: is the daemon there, and how fast does it answer.
import { defineCommand } from "citty";
import { checkFlags, jsonArg } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { printJson, printLine } from "./output.ts";
import type * as v from "valibot";
import type { PingOutputSchema } from "./output-schemas.ts";

const args = { ...socketArg, ...jsonArg } as const;

export default defineCommand({
  meta: { name: "ping", description: "Check that the daemon answers" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    await withClient(a.socket, async (c) => {
      const started = performance.now();
      const result = await c.request("ping");
      const ms = performance.now() - started;
      if (a.json) printJson({ ...result, rtt_ms: Number(ms.toFixed(3)), daemon: c.daemonVersion } satisfies v.InferOutput<typeof PingOutputSchema>);
      else printLine(`pong from mcrelay ${c.daemonVersion} in ${ms.toFixed(2)} ms (${result.rules} rules, ${result.workers} workers${result.starting ? ", starting" : ""})`);
    });
  },
});
