// `mcrelay stats [RULE] [--watch]`: per rule and per output counters, rates, and every drop
// reason that is not zero.
import { defineCommand } from "citty";
import { checkFlags, jsonArg, secondsFlag, validate } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { inputText, printJson, printJsonLine, printLine, printScreen, printTable, formatRate } from "./output.ts";
import { dropsText, renderTop } from "./stats-top.ts";
import type { Stats } from "../control/responses.ts";
import * as v from "valibot";
import { UsageError } from "../errors.ts";
import { isTerminal } from "../terminal.ts";

const args = {
  rule: { type: "positional", valueHint: "RULE", description: "Only this rule (name or id)", required: false },
  watch: { type: "boolean", alias: "w", description: "Print again every --interval seconds until interrupted" },
  interval: { type: "string", alias: "n", valueHint: "SECONDS", description: "Seconds between --watch updates (default 1)" },
  ...socketArg,
  ...jsonArg,
} as const;

function printHuman(s: Stats): void {
  for (const r of s.rules) {
    const drops = Object.entries(r.drops).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n.toLocaleString("en-US")}`);
    printLine(`${r.name} (${r.state}) ${inputText(r)}: ${r.packets.toLocaleString("en-US")} packets, ${formatRate(r.pps, "pps")}, ${formatRate(r.bps, "bit/s")}${drops.length ? `; drops: ${drops.join(", ")}` : ""}`);
    if (r.reasons.length) printLine(`  pending: ${r.reasons.join("; ")}`);
    printTable(
      ["  output", "ttl", "dscp", "gso", "packets", "pps", "bit/s", "send errors"],
      r.outputs.map((o) => [`  ${o.to}${o.state === "pending" ? " (pending)" : ""}`, o.ttl, o.dscp, o.gso ? "on" : "off", o.packets, formatRate(o.pps, ""), formatRate(o.bps, ""), Object.entries(o.send_errors).map(([k, n]) => `${k} ${n}`).join(", ") || "-"]),
    );
  }
  for (const i of s.interfaces) {
    printLine(`interface ${i.interface}: rx ${i.counters.rx_frames.toLocaleString("en-US")} frames, matched ${i.counters.matched.toLocaleString("en-US")}, sent ${i.counters.tx_packets.toLocaleString("en-US")}; drops: ${dropsText(i)}`);
  }
}

export default defineCommand({
  meta: { name: "stats", description: "Counters per rule and output, rates, and every non-zero drop reason" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args, 1);
    const interval = validate(v.object({ interval: v.optional(secondsFlag(3600)) }), { interval: a.interval }).interval ?? 1;
    if (a.interval !== undefined && !a.watch) throw new UsageError("--interval: needs --watch (stats without --watch prints once)");
    await withClient(a.socket, async (c) => {
      const query = a.rule !== undefined ? { rule: a.rule } : undefined;
      // --watch: a screen redrawn in place on a terminal, one JSON line per interval with
      // --json, plain blocks of lines otherwise (a pipe, a log file).
      const top = a.watch && !a.json && isTerminal(1);
      do {
        const result = await c.request("stats", query);
        if (a.json && a.watch) printJsonLine({ time: new Date().toISOString(), ...result });
        else if (a.json) printJson(result);
        else if (top) {
          const screen = renderTop(result, { time: new Date(), intervalS: interval, width: process.stdout.columns || Number(process.env.COLUMNS) || 80, height: process.stdout.rows || Number(process.env.LINES) || 24, title: "mcrelay stats" });
          printScreen(screen);
        } else {
          if (a.watch) printLine(`--- ${new Date().toISOString()}`);
          printHuman(result);
        }
        if (a.watch) await Bun.sleep(interval * 1000);
      } while (a.watch);
    });
  },
});
