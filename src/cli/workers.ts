// `mcrelay workers`: one line per ring (an interface's socket in a worker process): the worker,
// its pid, state, uptime, restarts, recycled, backoff.
import { defineCommand } from "citty";
import { checkFlags, jsonArg } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { printJson, printLine, printTable } from "./output.ts";

const args = { ...socketArg, ...jsonArg } as const;

export default defineCommand({
  meta: { name: "workers", description: "List the dataplane workers" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    const result = await withClient(a.socket, (c) => c.request("workers"));
    if (a.json) return printJson(result);
    if (result.workers.length === 0) return printLine("no workers");
    printTable(
      ["worker", "interface", "pid", "state", "uptime s", "restarts", "recycled", "backoff ms", "drift repairs", "rules", "last error"],
      [...result.workers].sort((a, b) => a.worker - b.worker).map((w) => [w.worker, w.workers_on_interface > 1 ? `${w.interface}/${w.slot}` : w.interface, w.pid ?? "-", w.state, w.uptime_s, w.restarts, w.recycled, w.backoff_ms, w.drift_repairs, w.rules, w.last_error ?? "-"]),
    );
  },
});
