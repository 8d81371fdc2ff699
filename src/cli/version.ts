// `mcrelay version`.
import { defineCommand } from "citty";
import { VERSION, PROTOCOL_VERSION } from "../version.ts";
import { abiVersion } from "../native/lib.ts";
import { isCompiled } from "../self-command.ts";
import { checkFlags, jsonArg } from "./args.ts";
import { printJson, printLine } from "./output.ts";

const args = { ...jsonArg } as const;

export default defineCommand({
  meta: { name: "version", description: "Print the version" },
  args,
  run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    const info = {
      version: VERSION,
      protocol: PROTOCOL_VERSION,
      native_abi: abiVersion(),
      bun: Bun.version,
      compiled: isCompiled(),
      arch: process.arch,
    };
    if (a.json) printJson(info);
    else printLine(`mcrelay ${info.version} (protocol ${info.protocol}, native ABI ${info.native_abi}, bun ${info.bun}, ${info.arch})`);
  },
});
