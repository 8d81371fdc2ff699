// `stats --watch` on a terminal: a screen redrawn in place, like top. Rules sorted by packet
// rate (highest first), with their rates, totals and drops; the interfaces' drop reasons below.
// Pure: it returns the screen as lines; output.ts printScreen draws them over the last screen.
import type { InterfaceReport, RuleReport } from "../control/responses.ts";
import { formatRate } from "./output.ts";

export interface TopInput {
  rules: RuleReport[];
  interfaces: InterfaceReport[];
}

/**
 * Worker counters that count work, not loss. Every other worker counter (no_match,
 * source_mismatch, kernel_drops, tx_errors, ...) and every parse drop is a reason a packet was
 * not relayed, printed when it is not zero; a counter added later is printed by default.
 */
const ACTIVITY = new Set([
  "rx_frames", "rx_bytes", "rx_blocks", "matched", "kernel_packets", "kernel_freezes", "tx_packets", "tx_bytes",
  "tx_gso_sends", "tx_send_calls", "rx_gso_frames", "rx_gso_datagrams", "polls", "coalesced", "wakeups", "run_calls",
]);

/** "no_match 3, ipv4_fragment 2" (every non-zero drop reason of the interface), or "none". */
export function dropsText(i: InterfaceReport): string {
  const drops = [...Object.entries(i.counters).filter(([k]) => !ACTIVITY.has(k)), ...Object.entries(i.parse_drops)].filter(([, n]) => n > 0);
  return drops.length ? drops.map(([k, n]) => `${k} ${n.toLocaleString("en-US")}`).join(", ") : "none";
}

function cut(text: string, width: number): string {
  return text.length > width ? `${text.slice(0, Math.max(0, width - 1))}~` : text;
}

function sendErrors(r: RuleReport): number {
  return r.outputs.reduce((n, o) => n + Object.values(o.send_errors).reduce((a, b) => a + b, 0), 0);
}

export function renderTop(s: TopInput, o: { time: Date; intervalS: number; width: number; height: number; title: string }): string[] {
  const rules = [...s.rules].sort((a, b) => b.pps - a.pps || b.packets - a.packets || a.name.localeCompare(b.name));
  const totalPps = rules.reduce((n, r) => n + r.pps, 0);
  const totalBps = rules.reduce((n, r) => n + r.bps, 0);
  const lines: string[] = [
    `${o.title} - ${o.time.toISOString().slice(11, 19)} UTC, every ${o.intervalS} s - ${rules.length} rules, ${formatRate(totalPps, "pps")}, ${formatRate(totalBps, "bit/s")}`,
    "",
  ];
  const header = ["RULE", "STATE", "PPS", "BIT/S", "PACKETS", "OUTPUTS", "SEND ERR", "INPUT"];
  const rows = rules.map((r) => [
    r.name,
    r.state,
    formatRate(r.pps, "").trim(),
    formatRate(r.bps, "").trim(),
    r.packets.toLocaleString("en-US"),
    `${r.outputs.filter((x) => x.state === "active").length}/${r.outputs.length}`,
    sendErrors(r).toLocaleString("en-US"),
    r.input,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const right = new Set([2, 3, 4, 5, 6]);
  const fmt = (row: string[]) => row.map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
  lines.push(fmt(header));
  // Room for the interface lines: the rule rows that do not fit are counted, not drawn.
  const room = Math.max(1, o.height - lines.length - s.interfaces.length - 3);
  for (const row of rows.slice(0, room)) lines.push(fmt(row));
  if (rows.length > room) lines.push(`... ${rows.length - room} more rules (slower)`);
  lines.push("");
  for (const i of s.interfaces) {
    lines.push(`${i.interface}: rx ${i.counters.rx_frames.toLocaleString("en-US")} frames; drops: ${dropsText(i)}`);
  }
  return lines.map((l) => cut(l, o.width));
}
