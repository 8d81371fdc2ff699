/**
 * Delivered against offered rate, one panel per scenario variant, one series per contender,
 * every trial a point (searches' coarse and final trials alike), with the lossless diagonal.
 * Plain SVG, no dependencies.
 */
import { CONTENDER_LABEL, type ContenderId, type TrialRecord } from "./results.ts";

const COLORS: Record<ContenderId, string> = {
  mcrelay: "#d62728",
  kernel: "#1f77b4",
  socat: "#2ca02c",
  mcr: "#9467bd",
  calibration: "#7f7f7f",
};
const PANEL_W = 460;
const PANEL_H = 320;
const MARGIN = { left: 62, right: 16, top: 34, bottom: 46 };
const COLUMNS = 2;

function esc(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const exp = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * exp >= v) return m * exp;
  return 10 * exp;
}

function fmtK(v: number): string {
  return v >= 1000 ? `${+(v / 1000).toFixed(v >= 10_000 ? 0 : 1)}k` : String(Math.round(v));
}

function panel(title: string, trials: TrialRecord[], x0: number, y0: number): string {
  const w = PANEL_W - MARGIN.left - MARGIN.right;
  const h = PANEL_H - MARGIN.top - MARGIN.bottom;
  const max = niceMax(Math.max(...trials.map((t) => Math.max(t.offered_pps, t.delivered_pps)), 1));
  const sx = (v: number) => x0 + MARGIN.left + (v / max) * w;
  const sy = (v: number) => y0 + MARGIN.top + h - (v / max) * h;
  const out: string[] = [];
  out.push(`<text x="${x0 + PANEL_W / 2}" y="${y0 + 20}" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const v = (max * i) / 5;
    out.push(`<line x1="${sx(0)}" y1="${sy(v)}" x2="${sx(max)}" y2="${sy(v)}" stroke="#e5e5e5"/>`);
    out.push(`<line x1="${sx(v)}" y1="${sy(0)}" x2="${sx(v)}" y2="${sy(max)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${sx(0) - 6}" y="${sy(v) + 4}" text-anchor="end" font-size="11">${fmtK(v)}</text>`);
    out.push(`<text x="${sx(v)}" y="${sy(0) + 16}" text-anchor="middle" font-size="11">${fmtK(v)}</text>`);
  }
  out.push(`<line x1="${sx(0)}" y1="${sy(0)}" x2="${sx(max)}" y2="${sy(max)}" stroke="#999" stroke-dasharray="4 4"/>`);
  out.push(`<rect x="${sx(0)}" y="${sy(max)}" width="${w}" height="${h}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${x0 + MARGIN.left + w / 2}" y="${y0 + PANEL_H - 8}" text-anchor="middle" font-size="12">offered (pps)</text>`);
  out.push(`<text x="${x0 + 14}" y="${y0 + MARGIN.top + h / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 ${x0 + 14} ${y0 + MARGIN.top + h / 2})">delivered (pps)</text>`);
  const by = new Map<ContenderId, TrialRecord[]>();
  for (const t of trials) by.set(t.contender, [...(by.get(t.contender) ?? []), t]);
  for (const [c, list] of by) {
    const pts = [...list].sort((a, b) => a.offered_pps - b.offered_pps);
    const color = COLORS[c];
    if (pts.length > 1) {
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" stroke-opacity="0.7" points="${pts.map((p) => `${sx(p.offered_pps).toFixed(1)},${sy(p.delivered_pps).toFixed(1)}`).join(" ")}"/>`);
    }
    for (const p of pts) {
      const r = p.phase === "final" || p.phase === "fixed" ? 4 : 2.5;
      const fill = p.loss_ratio === 0 ? color : "white";
      out.push(`<circle cx="${sx(p.offered_pps).toFixed(1)}" cy="${sy(p.delivered_pps).toFixed(1)}" r="${r}" fill="${fill}" stroke="${color}" stroke-width="1.5"><title>${esc(`${CONTENDER_LABEL[c]} ${p.phase}: offered ${p.offered_pps}, delivered ${p.delivered_pps}, loss ${(p.loss_ratio * 100).toFixed(3)}%`)}</title></circle>`);
    }
  }
  let ly = y0 + MARGIN.top + 8;
  for (const c of by.keys()) {
    out.push(`<circle cx="${x0 + MARGIN.left + 12}" cy="${ly}" r="4" fill="${COLORS[c]}"/>`);
    out.push(`<text x="${x0 + MARGIN.left + 20}" y="${ly + 4}" font-size="11">${esc(CONTENDER_LABEL[c])}</text>`);
    ly += 15;
  }
  return out.join("\n");
}

/** One panel per searched variant (or per variant, without searches); filled points lost nothing, hollow ones lost packets. */
export function renderSvg(trials: TrialRecord[]): string {
  // Searches are what this plot is for; a run without any (smoke) shows its fixed trials.
  const searched = new Set(trials.filter((t) => t.phase === "coarse" || t.phase === "final").map((t) => t.variant));
  const variants = [...new Set(trials.map((t) => t.variant))].filter((v) => searched.size === 0 || searched.has(v));
  const panels = variants
    .map((v) => ({ v, list: trials.filter((t) => t.variant === v && t.phase !== "profile" && t.phase !== "overload") }))
    .filter((p) => p.list.length > 0);
  const rows = Math.max(1, Math.ceil(panels.length / COLUMNS));
  const width = PANEL_W * Math.min(COLUMNS, Math.max(1, panels.length));
  const height = PANEL_H * rows + 24;
  const body = panels.map((p, i) => panel(p.v, p.list, (i % COLUMNS) * PANEL_W, Math.floor(i / COLUMNS) * PANEL_H)).join("\n");
  const note = `<text x="8" y="${height - 8}" font-size="11" fill="#555">filled: no loss · hollow: loss · large: full-length trial · dashed: delivered = offered</text>`;
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
${body}
${note}
</svg>
`;
}
