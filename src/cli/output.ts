import { writeLines } from "../log.ts";
import { writeOut } from "../terminal.ts";

// The only place that writes command output to stdout: JSON documents and plain tables.

export function printJson(value: unknown): void {
  writeOut(`${JSON.stringify(value, null, 2)}\n`);
}

/** One JSON document on one line (a stream of documents, one per line). */
export function printJsonLine(value: unknown): void {
  writeOut(`${JSON.stringify(value)}\n`);
}

/** A whole terminal screen drawn over the last one (cursor home, clear to end, then the lines). */
export function printScreen(lines: string[]): void {
  writeOut(`\u001b[H\u001b[J${lines.join("\n")}\n`);
}

export function printLine(text = ""): void {
  writeOut(`${text}\n`);
}

/** A diagnostic for the reader, not a log line: `config check`'s FILE:LINE:COLUMN problems on stderr, as a compiler prints them. */
export function printErr(text: string): void {
  // Through the log stream's writer: under journald each line carries the error priority.
  writeLines("error", `${text}\n`);
}

/** A left-aligned text table; numbers are right-aligned. */
export function printTable(header: string[], rows: (string | number)[][]): void {
  const cells = [header, ...rows.map((r) => r.map((c) => (typeof c === "number" ? c.toLocaleString("en-US") : c)))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => String(r[i] ?? "").length)));
  cells.forEach((row, ri) => {
    const line = row
      .map((c, i) => {
        const s = String(c ?? "");
        const numeric = ri > 0 && typeof rows[ri - 1]![i] === "number";
        return numeric ? s.padStart(widths[i]!) : s.padEnd(widths[i]!);
      })
      .join("  ");
    printLine(line.trimEnd());
  });
}

export function formatRate(perSecond: number, unit: string): string {
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(2)} M${unit}`;
  if (perSecond >= 1e3) return `${(perSecond / 1e3).toFixed(1)} k${unit}`;
  return `${perSecond.toFixed(0)} ${unit}`;
}

/** The input with what narrows or bounds it: "239.1.1.1:5000@eth0,vlan=100 from 10.0.0.1 max 5000 pps". */
export function inputText(r: { input: string; source: string | null; max_pps: number | null; loop_guard: boolean }): string {
  return `${r.input}${r.source ? ` from ${r.source}` : ""}${r.max_pps !== null ? ` max ${r.max_pps} pps` : ""}${r.loop_guard ? "" : " no loop guard"}`;
}
