// `mcrelay events`: interface and rule state changes as they happen, until interrupted.
import { defineCommand } from "citty";
import { checkFlags, jsonArg } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { printLine } from "./output.ts";
import { describe, type LinkEvent } from "../control/events.ts";

const args = { ...socketArg, ...jsonArg } as const;

function human(e: Record<string, unknown>): string {
  const time = String(e.time ?? "");
  if (e.kind === "link") return `${time} ${describe(e as unknown as LinkEvent)}`;
  if (e.kind === "rule") {
    const reasons = (e.reasons as string[] | undefined)?.join("; ");
    return `${time} rule ${String(e.rule)} is ${String(e.state)}${reasons ? ` (${reasons})` : ""}`;
  }
  return `${time} ${JSON.stringify(e)}`;
}

export default defineCommand({
  meta: { name: "events", description: "Stream interface and rule state changes (one JSON object per line with --json)" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    await withClient(a.socket, async (c) => {
      const stop = new Promise<null>((r) => {
        process.once("SIGINT", () => r(null));
        process.once("SIGTERM", () => r(null));
      });
      const ended = c.events((e) => printLine(a.json ? JSON.stringify(e) : human(e)));
      // The daemon going away ends the stream with its error (exit 4), as stats --watch and
      // trace do: a script watching events can tell it from an interrupt (exit 0).
      const closed = await Promise.race([stop, ended]);
      if (closed) throw closed;
    });
  },
});
