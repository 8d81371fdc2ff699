// `mcrelay version`.
import { defineCommand } from "citty";
import { VERSION, PROTOCOL_VERSION } from "../version.ts";
import { abiVersion } from "../native/lib.ts";
import { isCompiled } from "../self-command.ts";
import { checkFlags, jsonArg } from "./args.ts";
import { printJson, printLine } from "./output.ts";
import { socketArg } from "./daemon-client.ts";
import { ControlClient, NotRunningError, socketPath } from "../control/client.ts";

const args = { ...socketArg, ...jsonArg } as const;

export default defineCommand({
  meta: { name: "version", description: "Print the version" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    let daemon: { version: string | null; protocol: number | null; mode?: string; error?: string } = { version: null, protocol: null };
    try {
      const c = await ControlClient.connect(socketPath(a.socket), 1000);
      const r = await c.request("version");
      c.close();
      daemon = { version: r.daemon, protocol: r.protocol, mode: r.mode };
    } catch (err) {
      daemon.error = err instanceof NotRunningError ? "not running" : (err as Error).message;
    }
    const info = {
      version: VERSION,
      protocol: PROTOCOL_VERSION,
      native_abi: abiVersion(),
      bun: Bun.version,
      compiled: isCompiled(),
      arch: process.arch,
      daemon,
    };
    if (a.json) printJson(info);
    else {
      printLine(`mcrelay ${info.version} (protocol ${info.protocol}, native ABI ${info.native_abi}, bun ${info.bun}, ${info.arch})`);
      printLine(daemon.version ? `daemon ${daemon.version} (protocol ${daemon.protocol}, ${daemon.mode})` : `daemon: ${daemon.error}`);
    }
  },
});
