// `mcrelay _worker` (hidden): started by the supervisor only.
import { defineCommand } from "citty";
import { runWorker } from "../worker/main.ts";
import { setLogIdentity } from "../log.ts";

export default defineCommand({
  meta: { name: "_worker", description: "(internal) dataplane worker started by the supervisor", hidden: true },
  args: { iface: { type: "string", required: true }, slot: { type: "string" } },
  async run({ args }) {
    setLogIdentity(args.slot && args.slot !== "0" ? `worker:${args.iface}/${args.slot}` : `worker:${args.iface}`);
    process.exitCode = await runWorker();
  },
});
