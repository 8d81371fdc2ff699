// `mcrelay stats [NAME] [--watch]`: per rule and per output counters, rates and drops.
import { defineCommand } from "citty";
import { checkFlags, jsonArg, secondsFlag, validate } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { inputText, printJson, printJsonLine, printLine, printTable, formatRate } from "./output.ts";
import { HOME_CLEAR, renderTop } from "./stats-top.ts";
import type { RuleReport, InterfaceReport } from "../supervisor/report.ts";
import type { WorkerInfo } from "../supervisor/worker-pool.ts";
import * as v from "valibot";

const args = {
  rule: { type: "positional", description: "Only this rule (name or id)", required: false },
  watch: { type: "boolean", description: "Print again every --interval seconds until interrupted" },
  interval: { type: "string", description: "Seconds between --watch updates (default 1)" },
  ...socketArg,
  ...jsonArg,
} as const;

interface StatsResult {
  rules: RuleReport[];
  interfaces: InterfaceReport[];
  workers: WorkerInfo[];
}

function printHuman(s: StatsResult): void {
  for (const r of s.rules) {
    const drops = Object.entries(r.drops ?? {}).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`);
    printLine(`${r.name} (${r.state}) ${inputText(r)}: ${r.packets.toLocaleString("en-US")} packets, ${formatRate(r.pps, "pps")}, ${formatRate(r.bps, "bit/s")}${drops.length ? `; drops: ${drops.join(", ")}` : ""}`);
    printTable(
      ["  output", "ttl", "dscp", "gso", "packets", "pps", "bit/s", "send errors"],
      r.outputs.map((o) => [`  ${o.to}`, o.ttl, o.dscp, o.gso ? "on" : "off", o.packets, formatRate(o.pps, ""), formatRate(o.bps, ""), Object.entries(o.send_errors).map(([k, n]) => `${k} ${n}`).join(", ") || "-"]),
    );
  }
  for (const i of s.interfaces) {
    const drops = Object.entries(i.parse_drops).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`);
    printLine(
      `interface ${i.interface}: rx ${i.counters.rx_frames.toLocaleString("en-US")} frames, no match ${i.counters.no_match}, ` +
        `ring drops ${i.counters.kernel_drops}, send errors ${i.counters.tx_errors}${drops.length ? `, parse drops: ${drops.join(", ")}` : ""}`,
    );
  }
}

export default defineCommand({
  meta: { name: "stats", description: "Counters per rule and output, rates, drops by reason" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args, 1);
    const interval = validate(v.object({ interval: v.optional(secondsFlag(3600)) }), { interval: a.interval }).interval ?? 1;
    await withClient(a.socket, async (c) => {
      const query = a.rule ? { rule: a.rule } : undefined;
      // --watch: a screen redrawn in place on a terminal, one JSON line per interval with
      // --json, plain blocks of lines otherwise (a pipe, a log file).
      const top = a.watch && !a.json && process.stdout.isTTY === true;
      do {
        const result = (await c.request("stats", query)) as StatsResult;
        if (a.json && a.watch) printJsonLine({ time: new Date().toISOString(), ...result });
        else if (a.json) printJson(result);
        else if (top) {
          const screen = renderTop(result, { time: new Date(), intervalS: interval, width: process.stdout.columns || Number(process.env.COLUMNS) || 80, height: process.stdout.rows || Number(process.env.LINES) || 24, title: "mcrelay stats" });
          process.stdout.write(`${HOME_CLEAR}${screen.join("\n")}\n`);
        } else {
          if (a.watch) printLine(`--- ${new Date().toISOString()}`);
          printHuman(result);
        }
        if (a.watch) await Bun.sleep(interval * 1000);
      } while (a.watch);
    });
  },
});
