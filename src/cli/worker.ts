// `mcrelay _worker` (hidden): started by the supervisor only.
import { defineCommand } from "citty";
import { runWorker } from "../worker/main.ts";
import { setLogIdentity } from "../log.ts";

export default defineCommand({
  meta: { name: "_worker", description: "(internal) dataplane worker started by the supervisor", hidden: true },
  args: { index: { type: "string", required: true } },
  async run({ args }) {
    setLogIdentity(`worker:${args.index}`);
    process.exitCode = await runWorker();
  },
});
