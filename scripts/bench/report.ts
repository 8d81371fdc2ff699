/**
 * docs/benchmarks.md from a results file: the targets of the issue with their status, the
 * environment and method, one section per scenario with medians, spreads and ratios to each
 * peer, where packets were dropped, the perf profile, and for each missed target the data that
 * explains it. Everything here is computed from the JSON lines; nothing is typed in by hand.
 */
import { CAL_RPS_VARIANT } from "./plan.ts";
import { renderSvg } from "./svg.ts";
import { sinkModeMethod, sinkModeOf, sinkModeText, type SinkMode } from "./sink-mode.ts";
import { latencyCounts, STEAL_REPEATS_MAX, STEAL_SUSPECT_MIN_MS, STEAL_SUSPECT_RATIO, stealMsText, stealText, worstSteal } from "./steal.ts";
import {
  CONTENDER_IDS,
  CONTENDER_LABEL,
  type BenchRecord,
  type ContenderId,
  type EndRecord,
  type OverloadRecord,
  type ProfileRecord,
  type RunRecord,
  type SearchRecord,
  type SkipRecord,
  type TrialRecord,
} from "./results.ts";

interface Data {
  run: RunRecord | null;
  end: EndRecord | null;
  /** Runs after the first (a results file per run, `--report A,B`): their run and end records. */
  more: { run: RunRecord; end: EndRecord | null }[];
  /** Trials that count: every trial but the ones repeated because they lost packets during steal. */
  trials: TrialRecord[];
  /** Trials that lost packets with significant steal and were run again (shown in the appendix and beside their repeat). */
  repeated: TrialRecord[];
  /** Fixed-rate trials a later merged run measured again (same variant, contender, purpose, rate). */
  superseded: TrialRecord[];
  searches: SearchRecord[];
  overloads: OverloadRecord[];
  skips: SkipRecord[];
  profiles: ProfileRecord[];
}

function split(records: BenchRecord[]): Data {
  const d: Data = { run: null, end: null, more: [], trials: [], repeated: [], superseded: [], searches: [], overloads: [], skips: [], profiles: [] };
  for (const r of records) {
    switch (r.type) {
      case "run":
        if (d.run === null) d.run = r;
        else d.more.push({ run: r, end: null });
        break;
      case "end":
        if (d.run?.run_id === r.run_id) d.end = r;
        else {
          const m = d.more.find((x) => x.run.run_id === r.run_id);
          if (m) m.end = r;
        }
        break;
      case "trial":
        if (r.repeated) d.repeated.push(r);
        else d.trials.push(r);
        break;
      case "search":
        d.searches.push(r);
        break;
      case "overload":
        d.overloads.push(r);
        break;
      case "skip":
        d.skips.push(r);
        break;
      case "profile":
        d.profiles.push(r);
        break;
    }
  }
  // A variant skipped for time in one run and measured by a later run (`--report A,B`) is not
  // "not run": its results are in the report.
  const measured = new Set([...d.searches, ...d.trials, ...d.overloads].map((x) => `${x.variant}|${x.contender}`));
  d.skips = d.skips.filter((x) => !(x.kind === "time-budget" && measured.has(`${x.variant}|${x.contender}`)));
  // A fixed-rate trial measured again by a later merged run (same variant, contender, purpose,
  // rate and repeat) is superseded: the later run's figure counts, the earlier one stays in the
  // list of every trial, labelled.
  const fixedKey = (t: TrialRecord) => `${t.variant}|${t.contender}|${t.purpose}|${t.target_pps}|${t.repeat}`;
  const latestRun = new Map<string, string>();
  for (const t of d.trials) {
    if (t.phase !== "fixed") continue;
    const seen = latestRun.get(fixedKey(t));
    if (seen === undefined || seen < t.run_id) latestRun.set(fixedKey(t), t.run_id);
  }
  d.superseded = d.trials.filter((t) => t.phase === "fixed" && latestRun.get(fixedKey(t)) !== t.run_id);
  d.trials = d.trials.filter((t) => !(t.phase === "fixed" && latestRun.get(fixedKey(t)) !== t.run_id));
  return d;
}

// ---------------------------------------------------------------------------------------
// Formatting

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function pps(v: number | null | undefined): string {
  if (v === null || v === undefined) return "—";
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)} M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v >= 1e5 ? 0 : 1)} k`;
  return String(Math.round(v));
}

function pct(v: number | null | undefined, digits = 3): string {
  return v === null || v === undefined ? "—" : `${(v * 100).toFixed(digits)} %`;
}

function us(v: number | null | undefined): string {
  if (v === null || v === undefined) return "—";
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

function cpuUs(ns: number | null | undefined): string {
  return ns === null || ns === undefined ? "n/a" : (ns / 1000).toFixed(2);
}

function ratio(a: number | null, b: number | null): string {
  return a === null || b === null || b === 0 ? "—" : `${(a / b).toFixed(2)}×`;
}

function table(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.map((c) => String(c).replace(/\|/g, "\\|")).join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

function spread(xs: number[]): string {
  if (xs.length < 2) return "—";
  const m = median(xs)!;
  const lo = Math.min(...xs);
  const hi = Math.max(...xs);
  return `${pps(lo)}–${pps(hi)} (±${((100 * (hi - lo)) / 2 / m).toFixed(1)} %)`;
}

function label(c: ContenderId): string {
  return CONTENDER_LABEL[c];
}

/** The label of the calibration with RPS on the sink's veth (the sink's CPU from the trials' placement). */
function calRpsLabel(d: Data): string {
  const t = d.trials.find((x) => x.variant === CAL_RPS_VARIANT);
  const sink = (t?.env as { placement?: { sink: number } } | undefined)?.placement?.sink;
  return `calibration, sink receive on CPU ${sink ?? "of the sink"} (RPS)`;
}

/** A trial's target: "max (rate 0)" for the generator's ceiling. */
function targetText(t: TrialRecord): string {
  return t.target_pps === 0 ? "max (rate 0)" : pps(t.target_pps);
}

/** The generator's own ceiling: the trials at `gen --rate 0` (no loss criterion). */
function genCeilingTrials(d: Data): TrialRecord[] {
  return d.trials.filter((t) => t.purpose === "gen-ceiling");
}

/** "458 k pps achieved (the sink received 90.1 %)". */
export function genCeilingText(t: Pick<TrialRecord, "offered_pps" | "received" | "expected" | "duration_s">): string {
  const got = t.expected > 0 ? ` (the sink received ${((100 * t.received) / t.expected).toFixed(1)} %)` : "";
  return `${pps(t.offered_pps)} pps achieved over ${t.duration_s.toFixed(1)} s${got}`;
}

// ---------------------------------------------------------------------------------------
// Derived values

interface SearchSummary {
  contender: ContenderId;
  ndrs: number[];
  pdrs: number[];
  ndr: number | null;
  pdr: number | null;
  ceiling: boolean;
  notes: string[];
}

function searchSummaries(d: Data, variant: string): SearchSummary[] {
  const out: SearchSummary[] = [];
  for (const c of CONTENDER_IDS) {
    const list = d.searches.filter((s) => s.variant === variant && s.contender === c);
    if (list.length === 0) continue;
    const ndrs = list.flatMap((s) => (s.ndr ? [s.ndr.pps] : []));
    const pdrs = list.flatMap((s) => (s.pdr ? [s.pdr.pps] : []));
    out.push({ contender: c, ndrs, pdrs, ndr: median(ndrs), pdr: median(pdrs), ceiling: list.some((s) => s.at_generator_ceiling), notes: [...new Set(list.flatMap((s) => s.notes))] });
  }
  return out;
}

/** The full-length trial that confirmed the (last) NDR of a contender on a variant. */
function ndrTrial(d: Data, variant: string, c: ContenderId): TrialRecord | null {
  const finals = d.trials.filter((t) => t.variant === variant && t.contender === c && t.phase === "final" && t.purpose === "ndr" && t.loss_ratio === 0);
  return finals[finals.length - 1] ?? null;
}

/** Where a trial's lost packets went, largest first: "ring_drops 1234 (80 %)". */
function dropSites(t: TrialRecord): { site: string; n: number }[] {
  const sites: { site: string; n: number }[] = [];
  for (const [k, v] of Object.entries(t.relay_drops)) if (v > 0) sites.push({ site: `${t.contender}: ${k}`, n: v });
  for (const [k, v] of Object.entries(t.kernel_counters.veth)) {
    if (v.rx_dropped) sites.push({ site: `veth ${k} rx_dropped`, n: v.rx_dropped });
    if (v.tx_dropped) sites.push({ site: `veth ${k} tx_dropped`, n: v.tx_dropped });
  }
  for (const [ns, s] of Object.entries(t.kernel_counters.snmp)) {
    for (const key of ["Udp.RcvbufErrors", "Udp.SndbufErrors", "Ip.InDiscards", "Ip.OutDiscards"]) {
      if (s[key]) sites.push({ site: `${ns} ${key}`, n: s[key]! });
    }
  }
  if (t.kernel_counters.softnet.dropped) sites.push({ site: "softnet_stat dropped (also in veth drops)", n: t.kernel_counters.softnet.dropped });
  return sites.sort((a, b) => b.n - a.n);
}

function dropText(t: TrialRecord): string {
  const sites = dropSites(t);
  if (t.accounting.lost_all === 0 && sites.length === 0) return "none";
  const total = Math.max(1, t.accounting.lost_all);
  const parts = sites.slice(0, 4).map((s) => `${s.site} ${s.n} (${Math.round((100 * s.n) / total)} %)`);
  if (t.accounting.unaccounted > 0) parts.push(`**unaccounted ${t.accounting.unaccounted}**`);
  const steal = lossSteal(t);
  if (steal) parts.push(steal);
  return parts.join("; ") || "—";
}

/** For a trial that lost packets while the hypervisor stole CPU time: how much, per CPU. */
export function lossSteal(t: Pick<TrialRecord, "lost" | "steal">): string {
  const w = worstSteal(t.steal);
  if (t.lost === 0 || !w || w.ms === 0) return "";
  return `lost during steal of CPU ${t.steal!.per_cpu_ms.map((_, i) => i).join(" / ")}: ${stealText(t.steal)}`;
}

/** The earlier attempts at the same rate that were repeated because of steal, oldest first. */
function earlierAttempts(d: Data, t: TrialRecord): TrialRecord[] {
  if (!t.attempt || t.attempt <= 1) return [];
  return d.repeated
    .filter((x) => x.run_id === t.run_id && x.variant === t.variant && x.contender === t.contender && x.phase === t.phase && x.purpose === t.purpose && x.target_pps === t.target_pps && x.repeat === t.repeat && x.ts < t.ts)
    .slice(-(t.attempt - 1));
}

/**
 * The steal cell of a trial row: its own steal per CPU in ms, and for a repeat what the
 * attempts before it lost: "0 / 10 (attempt 2; attempt 1 lost 11782 with 1200 / 40 ms steal)".
 */
export function stealCell(t: Pick<TrialRecord, "steal" | "attempt">, earlier: (Pick<TrialRecord, "lost" | "steal" | "attempt"> & { purpose?: string; latency_us?: { p99: number } })[]): string {
  const own = stealMsText(t.steal);
  if (!t.attempt || t.attempt <= 1) return own;
  const p99 = (x: (typeof earlier)[number]) => (latencyCounts(x.purpose) && x.latency_us ? `, p99 ${Math.round(x.latency_us.p99)} µs,` : "");
  const before = earlier.map((x, i) => `attempt ${x.attempt ?? i + 1}${p99(x)} lost ${x.lost} with ${stealMsText(x.steal)} ms steal`).join("; ");
  return `${own} (figure from attempt ${t.attempt}${before ? `; ${before}` : ""})`;
}

function ringText(d: Data): string {
  const t = d.trials.find((x) => x.contender === "mcrelay" && x.ring);
  if (!t?.ring) return "not recorded";
  return Object.entries(t.ring)
    .map(([k, v]) => `${k} ${v}`)
    .join(", ");
}

// ---------------------------------------------------------------------------------------
// Targets

type Status = "PASS" | "MISS" | "reported" | "not measured";

interface Target {
  id: string;
  text: string;
  measured: string;
  status: Status;
  /** Trials and contenders that explain a miss. */
  evidence: TrialRecord[];
}

function targets(d: Data): Target[] {
  const out: Target[] = [];
  const s1 = searchSummaries(d, "S1-1316");
  const get = (list: SearchSummary[], c: ContenderId) => list.find((s) => s.contender === c) ?? null;
  const m1 = get(s1, "mcrelay");
  const k1 = get(s1, "kernel");
  const x1 = get(s1, "socat");
  const failingAbove = (variant: string, c: ContenderId, ndr: number | null) =>
    d.trials.filter((t) => t.variant === variant && t.contender === c && t.loss_ratio > 0 && (ndr === null || t.offered_pps > ndr)).sort((a, b) => a.offered_pps - b.offered_pps).slice(0, 1);
  const cmp = (id: string, text: string, a: SearchSummary | null, b: SearchSummary | null, want: number, variant: string): Target => {
    if (!a?.ndr || !b?.ndr) return { id, text, measured: "—", status: "not measured", evidence: [] };
    const r = a.ndr / b.ndr;
    return {
      id,
      text,
      measured: `${pps(a.ndr)} / ${pps(b.ndr)} pps = ${r.toFixed(2)}×`,
      status: r >= want ? "PASS" : "MISS",
      evidence: r >= want ? [] : failingAbove(variant, "mcrelay", a.ndr),
    };
  };
  out.push(cmp("S1-kernel", "S1 1316 B: mcrelay NDR ≥ 1.3× kernel multicast forwarding", m1, k1, 1.3, "S1-1316"));
  out.push(cmp("S1-socat", "S1 1316 B: mcrelay NDR ≥ 10× socat", m1, x1, 10, "S1-1316"));
  const s2 = searchSummaries(d, "S2-1:4");
  out.push(cmp("S2-kernel", "S2 1:4: mcrelay input NDR ≥ the kernel's", get(s2, "mcrelay"), get(s2, "kernel"), 1.0, "S2-1:4"));
  const f50 = d.trials.filter((t) => t.variant === "S2-1:50" && t.contender === "mcrelay" && t.phase === "fixed");
  out.push(
    f50.length === 0
      ? { id: "S2-50", text: "S2 1:50: zero loss at 5k pps input", measured: "—", status: "not measured", evidence: [] }
      : {
          id: "S2-50",
          text: "S2 1:50: zero loss at 5k pps input",
          measured: f50.map((t) => `${pps(t.offered_pps)} pps in, ${t.lost} of ${t.expected} copies lost`).join("; "),
          status: f50.every((t) => t.lost === 0 && !t.gen_limited) ? "PASS" : "MISS",
          evidence: f50.filter((t) => t.lost > 0),
        },
  );
  const o = d.overloads.filter((x) => x.contender === "mcrelay");
  const oTrials = d.trials.filter((t) => t.contender === "mcrelay" && t.phase === "overload");
  out.push(
    o.length === 0
      ? { id: "S4-delivered", text: "S4: at 2× NDR offered, delivered ≥ 95 % of NDR", measured: "—", status: "not measured", evidence: [] }
      : {
          id: "S4-delivered",
          text: "S4: at 2× NDR offered, delivered ≥ 95 % of NDR",
          measured: o.map((x) => `${pps(x.delivered_pps)} of NDR ${pps(x.ndr_pps)} = ${(x.delivered_ratio_of_ndr * 100).toFixed(1)} %`).join("; "),
          status: o.every((x) => x.delivered_ratio_of_ndr >= 0.95) ? "PASS" : "MISS",
          evidence: oTrials,
        },
  );
  out.push(
    o.length === 0
      ? { id: "S4-counted", text: "S4: every dropped packet appears in a counter", measured: "—", status: "not measured", evidence: [] }
      : {
          id: "S4-counted",
          text: "S4: every dropped packet appears in a counter",
          measured: o.map((x) => `lost ${x.accounting.lost_all}, counted ${x.accounting.counted}, unaccounted ${Math.max(0, x.accounting.unaccounted)}`).join("; "),
          status: o.every((x) => x.accounting.unaccounted <= 0) ? "PASS" : "MISS",
          evidence: oTrials.filter((t) => t.accounting.unaccounted > 0),
        },
  );
  const lat = d.trials.filter((t) => t.variant === "S5-1316" && t.contender === "mcrelay" && t.phase === "fixed");
  out.push(
    lat.length === 0
      ? { id: "S5", text: "S5: p99 one-way latency ≤ 1 ms at 1k, 10k and 100k pps", measured: "—", status: "not measured", evidence: [] }
      : {
          id: "S5",
          text: "S5: p99 one-way latency ≤ 1 ms at 1k, 10k and 100k pps",
          measured: lat.map((t) => `${pps(t.target_pps)}: ${us(t.latency_us.p99)} µs`).join("; "),
          status: lat.every((t) => t.latency_us.p99 <= 1000 && t.received > 0) ? "PASS" : "MISS",
          evidence: lat.filter((t) => t.latency_us.p99 > 1000),
        },
  );
  const cpu = d.trials.filter((t) => t.contender === "mcrelay" && t.purpose === "cpu" && t.phase === "fixed");
  out.push(
    cpu.length === 0
      ? { id: "CPU", text: "S1 relay CPU ≤ 1.0 µs per packet at 150k and at 300k pps", measured: "—", status: "not measured", evidence: [] }
      : {
          id: "CPU",
          text: "S1 relay CPU ≤ 1.0 µs per packet at 150k and at 300k pps",
          measured: cpu.map((t) => `${cpuUs(t.cpu.per_input_pkt_ns)} µs/packet at ${pps(t.offered_pps)} pps offered (loss ${pct(t.loss_ratio)})`).join("; "),
          status: cpu.every((t) => t.cpu.per_input_pkt_ns !== null && t.cpu.per_input_pkt_ns <= 1000 && t.offered_pps >= 0.97 * t.target_pps) ? "PASS" : "MISS",
          evidence: cpu,
        },
  );
  out.push(...issue13Targets(d, m1));
  return out;
}

/** The targets of issue 13 (performance round 2) beyond the ones above. */
function issue13Targets(d: Data, m1: SearchSummary | null): Target[] {
  const out: Target[] = [];
  const none = (id: string, text: string): Target => ({ id, text, measured: "—", status: "not measured", evidence: [] });
  // 1:50 at 5k pps: CPU per copy and p99.
  const f50 = d.trials.filter((t) => t.variant === "S2-1:50" && t.contender === "mcrelay" && t.phase === "fixed");
  const perCopy = (t: TrialRecord) => (t.cpu.per_input_pkt_ns === null ? null : t.cpu.per_input_pkt_ns / t.shape.fanout);
  out.push(
    f50.length === 0
      ? none("S2-50-cpu", "S2 1:50 at 5k pps input: relay CPU ≤ 0.5 µs per copy, p99 ≤ 2 ms")
      : {
          id: "S2-50-cpu",
          text: "S2 1:50 at 5k pps input: relay CPU ≤ 0.5 µs per copy, p99 ≤ 2 ms",
          measured: f50.map((t) => `${cpuUs(perCopy(t))} µs/copy, p99 ${us(t.latency_us.p99)} µs`).join("; "),
          status: f50.every((t) => (perCopy(t) ?? Infinity) <= 500 && t.latency_us.p99 <= 2000) ? "PASS" : "MISS",
          evidence: f50,
        },
  );
  // Fan-out input NDR against the kernel's: 1:4 is the target, 1:8 and 1:16 reported.
  for (const fanout of [4, 8, 16]) {
    const variant = `S2-1:${fanout}`;
    const sums = searchSummaries(d, variant);
    const m = sums.find((x) => x.contender === "mcrelay") ?? null;
    const k = sums.find((x) => x.contender === "kernel") ?? null;
    const text = fanout === 4 ? "S2 1:4: mcrelay input NDR ≥ 1.5× the kernel's" : `S2 1:${fanout}: mcrelay input NDR against the kernel's (reported)`;
    if (!m?.ndr || !k?.ndr) {
      out.push(none(`S2-${fanout}-ratio`, text));
      continue;
    }
    const r = m.ndr / k.ndr;
    out.push({
      id: `S2-${fanout}-ratio`,
      text,
      measured: `${pps(m.ndr)} / ${pps(k.ndr)} pps = ${r.toFixed(2)}×`,
      status: fanout === 4 ? (r >= 1.5 ? "PASS" : "MISS") : "reported",
      evidence: [],
    });
  }
  // S1 latency: p99 ≤ 1 ms at NDR and at every lower rate measured, and in S5.
  const s1 = d.trials.filter((t) => t.variant === "S1-1316" && t.contender === "mcrelay" && t.loss_ratio === 0 && t.phase !== "profile" && t.phase !== "coarse");
  const lat = d.trials.filter((t) => t.variant === "S5-1316" && t.contender === "mcrelay" && t.phase === "fixed");
  const latAll = [...s1, ...lat].filter((t) => m1?.ndr === null || m1?.ndr === undefined || t.offered_pps <= m1.ndr * 1.001);
  out.push(
    latAll.length === 0
      ? none("S1-p99", "S1 p99 one-way latency ≤ 1 ms at every lossless rate up to NDR, and at 1k, 10k, 100k pps")
      : {
          id: "S1-p99",
          text: "S1 p99 one-way latency ≤ 1 ms at every lossless rate up to NDR, and at 1k, 10k, 100k pps",
          measured: [...latAll].sort((a, b) => a.offered_pps - b.offered_pps).map((t) => `${pps(t.offered_pps)}: ${us(t.latency_us.p99)} µs`).join("; "),
          status: latAll.every((t) => t.latency_us.p99 <= 1000) ? "PASS" : "MISS",
          evidence: latAll.filter((t) => t.latency_us.p99 > 1000),
        },
  );
  // The generator is not the limit: calibration NDR ≥ 2× the best relay's.
  const sums1 = searchSummaries(d, "S1-1316");
  const cal = sums1.find((x) => x.contender === "calibration")?.ndr ?? null;
  const best = Math.max(0, ...sums1.filter((x) => x.contender !== "calibration" && x.ndr !== null).map((x) => x.ndr!));
  // For information beside it (the status stays the plain calibration's): the calibration with
  // the sink's receive on its own CPU, and the generator's own ceiling.
  const calRps = searchSummaries(d, CAL_RPS_VARIANT).find((x) => x.contender === "calibration")?.ndr ?? null;
  const ceiling = median(genCeilingTrials(d).map((t) => t.offered_pps));
  const vsBest = (v: number) => (best > 0 ? ` = ${(v / best).toFixed(2)}×` : "");
  const extra = [
    calRps !== null ? `${calRpsLabel(d)}: NDR ${pps(calRps)} pps${vsBest(calRps)} (bounded by the sink's CPU)` : null,
    ceiling !== null ? `generator's own ceiling (gen --rate 0, no loss criterion): ${pps(ceiling)} pps${vsBest(ceiling)}` : null,
  ].filter((x): x is string => x !== null);
  const calText = "Calibration (gen→sink) NDR ≥ 2× the best relay's S1 NDR";
  out.push(
    cal === null || best === 0
      ? { ...none("calibration", calText), measured: extra.length ? `—; ${extra.join("; ")}` : "—" }
      : {
          id: "calibration",
          text: calText,
          measured: [`${pps(cal)} / ${pps(best)} pps = ${(cal / best).toFixed(2)}×`, ...extra].join("; "),
          status: cal >= 2 * best ? "PASS" : "MISS",
          evidence: [],
        },
  );
  // S1 with RPS moving the relay's input softirq onto its CPU: reported, labelled.
  const rps = searchSummaries(d, "S1-1316-rps");
  const mr = rps.find((x) => x.contender === "mcrelay");
  const kr = rps.find((x) => x.contender === "kernel");
  out.push(
    !mr?.ndr
      ? none("S1-rps", "S1 with RPS (relay input softirq on the relay's CPU): NDR reported")
      : {
          id: "S1-rps",
          text: "S1 with RPS (relay input softirq on the relay's CPU): NDR reported",
          measured: `mcrelay ${pps(mr.ndr)}${kr?.ndr ? `, kernel ${pps(kr.ndr)} pps (${(mr.ndr / kr.ndr).toFixed(2)}×)` : " pps"}`,
          status: "reported",
          evidence: [],
        },
  );
  return out;
}

/** Hints from the data about what limits a contender; labelled as automatic in the report. */
function diagnose(d: Data, t: TrialRecord): string[] {
  const hints: string[] = [];
  const sites = dropSites(t);
  const top = sites[0]?.site ?? "";
  const syscall = (d.run?.env as { syscall_getppid_ns?: number } | undefined)?.syscall_getppid_ns;
  if (t.gen_limited) hints.push(`The generator offered less than asked (${pps(t.offered_pps)} of ${pps(t.target_pps)} pps): the box, not the relay, set this limit.`);
  if (/ring_drops/.test(top)) {
    hints.push(
      "Most loss is in mcrelay's receive ring (PACKET_STATISTICS drops): the worker does not drain the ring as fast as the kernel fills it. " +
        "Lower per-packet work in the worker (see the profile: syscalls per batch, copies, parsing), larger batches per sendmmsg, " +
        "or keeping the receive softirq off the relay's CPU (--rps) would close it.",
    );
  }
  if (/Udp\.RcvbufErrors/.test(top) && /sink/.test(top)) hints.push("Most loss is at the sink's socket: the measuring side saturates before the relay does; compare with the calibration's ceiling.");
  if (/send_errors|Sndbuf/.test(top)) hints.push("Loss is on the output side (send errors / full send buffers): the egress path (veth queue, socket buffer) is the limit.");
  if (/veth .* tx_dropped|softnet/.test(top)) hints.push("Loss is at the veth backlog (netdev_max_backlog): the receiving CPU's softirq does not keep up.");
  if (t.variant.startsWith("S5") && t.contender === "mcrelay") {
    const cal = d.trials.find((x) => x.variant === t.variant && x.contender === "calibration" && x.target_pps === t.target_pps);
    if (cal) {
      hints.push(
        `Against the calibration at the same rate, mcrelay adds ${us(t.latency_us.p50 - cal.latency_us.p50)} µs at p50 and ${us(t.latency_us.p99 - cal.latency_us.p99)} µs at p99.` +
          (t.target_pps <= 10_000
            ? " At low rates a frame is handed to the worker as soon as it is in the ring (TPACKET_V2); what it waits is the wake-up, then at most the loop's 250 µs coalescing window while frames keep coming."
            : ""),
      );
    }
  }
  if (t.cpu.per_input_pkt_ns !== null && syscall) {
    hints.push(`Relay CPU: ${cpuUs(t.cpu.per_input_pkt_ns)} µs per packet; one getppid() costs ${(syscall / 1000).toFixed(2)} µs on this machine.`);
  }
  return hints;
}

// ---------------------------------------------------------------------------------------
// Sections

function envSection(d: Data): string {
  const env = (d.run?.env ?? d.trials[0]?.env ?? {}) as Record<string, unknown>;
  const t0 = d.trials[0];
  const placement = (t0?.env as { placement?: { gen: number; relay: number; sink: number; rps: string } } | undefined)?.placement;
  const applied = (t0?.env as { applied?: Record<string, string> } | undefined)?.applied ?? {};
  const versions = (env.versions ?? {}) as Record<string, string | null>;
  const sysctls = (env.sysctls ?? {}) as Record<string, string>;
  const params = (d.run?.options as { params?: Record<string, unknown> } | undefined)?.params as
    | { search: { precision: number; coarseS: number; coarseWarmupS: number; finalS: number; finalWarmupS: number; coarseTrialsMax: number; finalRetries: number; rateMax: number }; repeatsTarget: number; repeatsOther: number; fixed: { warmupS: number; durationS: number } }
    | undefined;
  const lines: string[] = [];
  lines.push("## Environment");
  lines.push("");
  lines.push(
    table(
      ["what", "value"],
      [
        ["kernel", `${env.kernel ?? "?"} (${env.kernel_build ?? ""})`],
        ["CPU", `${env.cpu_model ?? "?"}, ${env.cpus ?? "?"} CPUs${env.hypervisor ? ", virtual machine" : ""}, ${env.cpu_mhz ?? "?"} MHz`],
        ["memory", `${env.memory_mib ?? "?"} MiB`],
        ["clocksource", String(env.clocksource ?? "?")],
        ["syscall cost", env.syscall_getppid_ns ? `${env.syscall_getppid_ns} ns per getppid() (perf bench syscall basic)` : "not measured"],
        ["git revision", `${env.git_revision ?? "?"}${env.git_dirty ? " (working tree modified)" : ""}`],
        ["dist/mcrelay", env.mcrelay_sha256 ? `sha256 ${String(env.mcrelay_sha256).slice(0, 16)}… (copied at the start: a rebuild during the run does not change what is measured)` : "?"],
        ["versions", Object.entries(versions).map(([k, v]) => `${k} ${v ?? "—"}`).join("; ")],
        ["mcrelay ring", ringText(d)],
      ],
    ),
  );
  lines.push("");
  lines.push("Host sysctls (unchanged by the harness): " + Object.entries(sysctls).map(([k, v]) => `\`${k}=${v}\``).join(", ") + ".");
  lines.push("");
  lines.push("## Method");
  lines.push("");
  lines.push("Same for every contender, in the same run:");
  lines.push("");
  if (placement) {
    lines.push(
      `- **Pinning:** generator on CPU ${placement.gen}, relay processes (mcrelay supervisor and worker, socat, smcrouted) on CPU ${placement.relay}, sinks on CPU ${placement.sink} (\`taskset\`); ` +
        `with more than 8 outputs (1:50, mcrelay only) the 50 sink processes run on CPU ${placement.gen} instead, so that the measuring side does not share the relay's CPU.`,
    );
    lines.push(
      placement.rps === "off"
        ? `- **Softirq placement:** RPS off on every veth. A veth frame is received in the softirq of the CPU that sent it: the relay's input is processed on the generator's CPU (${placement.gen}) — for the kernel contender that is the whole forwarding path — and the relay's outputs on the relay's CPU (${placement.relay}).`
        : `- **Softirq placement:** RPS on the relay's input interface steers its receive processing to the relay's CPU (${placement.relay}).`,
    );
  }
  lines.push(`- **Sysctls set in every namespace:** ${Object.entries(applied).map(([k, v]) => `\`${k}\` = ${v}`).join("; ")}.`);
  lines.push(
    "- **Topology:** generator, relay and each sink in their own network namespace, joined by veth pairs; a fresh topology per contender and scenario. " +
      "Before every trial the harness checks that no forwarder (smcrouted, socat, mcrelay forward, mrouted, ...) runs anywhere on the machine and that no multicast routing is active in the relay namespace; each contender is started for the trial and stopped after it.",
  );
  lines.push(
    "- **Contenders:** mcrelay (`mcrelay forward`, rewriting 239.1.1.1:5000 to 239.2.2.2:6000); the kernel's multicast forwarding programmed by smcrouted with an (S,G) route (it cannot rewrite, so its sinks listen to 239.1.1.1:5000); " +
      "socat (`UDP4-RECV` with `ip-add-membership` to `UDP4-SENDTO`, one process per output since socat is 1:1, socket buffers at `net.core.rmem_max`/`wmem_max`); the calibration (generator linked straight to the sink: the ceiling of generator plus sink on this box; run a second time with RPS on the sink's veth, its receive softirq on the sink's CPU, and once at `gen --rate 0` for the generator's own ceiling). Generator TTL 8 for all.",
  );
  lines.push(
    "- **Loss** is counted end to end: packets the generators sent (times the fan-out) minus unique packets the sinks received, by sequence number per stream. " +
      "Every trial also records where packets were dropped: mcrelay's ring drops (PACKET_STATISTICS), parse and no-match drops and per-output send errors; every veth's rx/tx drops; each namespace's UDP receive/send buffer errors and IP discards; `/proc/net/softnet_stat`. " +
      "`unaccounted` is the loss no counter explains.",
  );
  lines.push(
    "- **CPU** is the relay processes' run time from `/proc/<pid>/task/*/schedstat` (every thread of the supervisor and the worker; of every socat), read just before and after the measured part, divided by the packets forwarded. " +
      "It includes the kernel work done in the relay's own system calls: its transmit path and, on veth, the receiving namespace's softirq for each copy (up to the sink's socket), which a physical NIC would not charge to the relay. " +
      "The kernel forwards in softirq context, on no task's account: its CPU per packet is not attributable (n/a); `/proc/stat` CPU time is unreliable in this VM and only recorded (its steal column is used, below). " +
      "**RSS** is the relay processes' VmRSS, sampled every 250 ms (maximum), and VmHWM; for the kernel contender it is smcrouted's, the kernel's own memory not being attributable.",
  );
  if (params) {
    const s = params.search;
    lines.push(
      `- **Search (NDR: zero loss; PDR: ≤ 0.1 % loss):** MLRsearch-style: coarse trials of ${s.coarseS} s after ${s.coarseWarmupS} s warm-up narrow both brackets at once (start at ${pps(s.rateMax)} pps, then the delivered rate, then bisection) to ${(s.precision * 100).toFixed(0)} % (at most ${s.coarseTrialsMax} coarse trials); ` +
        `then full trials of ${s.finalS} s after ${s.finalWarmupS} s warm-up confirm NDR and PDR, stepping down on loss (at most ${s.finalRetries} retries). Rates are the generator's achieved rates. ` +
        `Repeats: ${params.repeatsTarget} for the target variants (S1 1316 B, S2 1:4) of mcrelay and the kernel, ${params.repeatsOther} otherwise; medians reported with the spread (min–max). ` +
        `Contenders alternate trial by trial, in an order rotated per scenario and repeat. Fixed-rate trials: ${params.fixed.durationS} s after ${params.fixed.warmupS} s warm-up.`,
    );
  }
  lines.push(
    "- **Steal:** this is a virtual machine; the hypervisor sometimes takes a vCPU away (`steal` in `/proc/stat`, 10 ms ticks). Every trial records each CPU's steal during its measured part (ms, and % of the trial's wall time). " +
      `A trial that lost packets while some CPU had steal of at least ${(STEAL_SUSPECT_RATIO * 100).toFixed(0)} % of the trial's wall time (and at least ${STEAL_SUSPECT_MIN_MS} ms, two ticks), and lost no more copies than were offered during that CPU's stolen time, is suspect rather than failed: ` +
      "mcrelay's 8 MiB receive ring holds about 15 ms of 1316 B packets at 380k pps, so a stall of the relay's CPU longer than that loses packets whatever the relay does, and 1 % of a 30 s trial is 300 ms, twenty times that; " +
      "a trial far above the relay's capacity loses more than the stolen time explains and is not repeated. " +
      `Such a trial is run again at the same rate, at most ${STEAL_REPEATS_MAX} times (search trials and fixed-rate trials alike); a trial without loss is not repeated, except one whose p99 a target reads (S5's latency trials and S1's CPU trials at 150k and 300k pps): one with such steal is repeated whether or not it lost packets, since a stalled vCPU holds every frame in flight for the whole stall and those frames are the tail its p99 measures. ` +
      "Every attempt is in the results and in the list of every trial below; a search's notes say which rates were repeated, a fixed-rate row says when its figure is from a repeat and what the attempts before it lost. " +
      "If every attempt loses, the loss stands, with its steal shown.",
  );
  lines.push(sinkModeMethod(d.trials.map(sinkModeOfTrial)));
  lines.push("- **Latency** is one-way, CLOCK_REALTIME at the sink minus the generator's stamp in the payload (same host); for several streams or outputs, p50 is the median of the per-stream p50s and p99/p99.9/max the worst stream's.");
  return lines.join("\n");
}

function searchSection(d: Data, variant: string, heading: string, rowLabel: (c: ContenderId) => string = label): string {
  const sums = searchSummaries(d, variant);
  if (sums.length === 0) return "";
  const lines = [`### ${heading}`, ""];
  lines.push(
    table(
      ["contender", "NDR (median)", "NDR spread", "PDR (median)", "PDR spread", "repeats", "p99 at NDR (µs)", "CPU at NDR (µs/pkt)", "RSS (MiB)", "notes"],
      sums.map((s) => {
        const t = ndrTrial(d, variant, s.contender);
        return [
          rowLabel(s.contender),
          `${pps(s.ndr)}${s.ceiling ? " (generator ceiling)" : ""}`,
          spread(s.ndrs),
          pps(s.pdr),
          spread(s.pdrs),
          Math.max(s.ndrs.length, s.pdrs.length),
          us(t?.latency_us.p99),
          cpuUs(t?.cpu.per_input_pkt_ns),
          t && t.rss_kib.relay_max ? (t.rss_kib.relay_max / 1024).toFixed(0) : "—",
          s.notes.join("; ") || "",
        ];
      }),
    ),
  );
  lines.push("");
  const present = sums.filter((s) => s.ndr !== null);
  if (present.length > 1) {
    lines.push("Ratios of NDR (row ÷ column), PDR in parentheses:");
    lines.push("");
    lines.push(
      table(
        ["", ...present.map((s) => label(s.contender))],
        present.map((a) => [label(a.contender), ...present.map((b) => (a === b ? "—" : `${ratio(a.ndr, b.ndr)} (${ratio(a.pdr, b.pdr)})`))]),
      ),
    );
    lines.push("");
  }
  const above = sums
    .map((s) => {
      const t = d.trials
        .filter((x) => x.variant === variant && x.contender === s.contender && x.loss_ratio > 0 && x.phase !== "profile" && x.purpose !== "gen-ceiling")
        .sort((a, b) => a.offered_pps - b.offered_pps)[0];
      return t ? [rowLabel(s.contender), pps(t.offered_pps), pct(t.loss_ratio), dropText(t)] : null;
    })
    .filter((r): r is string[] => r !== null);
  if (above.length) {
    lines.push("Where packets were lost in the lowest-rate trial with loss:");
    lines.push("");
    lines.push(table(["contender", "offered (pps)", "loss", "dropped at"], above));
    lines.push("");
  }
  return lines.join("\n");
}

/** S1's calibration with RPS on the sink's veth, and the generator's own ceiling. */
function calRpsSection(d: Data): string {
  const rowLabel = (c: ContenderId) => (c === "calibration" ? calRpsLabel(d) : label(c));
  const search = searchSection(d, CAL_RPS_VARIANT, `Calibration with the sink's receive on its own CPU (RPS)`, rowLabel);
  const ceiling = genCeilingTrials(d);
  const fixed = d.trials.filter((t) => t.variant === CAL_RPS_VARIANT && t.phase === "fixed" && t.purpose !== "gen-ceiling");
  if (!search && ceiling.length === 0 && fixed.length === 0) return skipsFor(d, CAL_RPS_VARIANT);
  const lines: string[] = [];
  lines.push(search || `### Calibration with the sink's receive on its own CPU (RPS)\n`);
  lines.push(
    "In the plain calibration the sink's veth receives in the softirq of the CPU that sent the frame, the generator's: that CPU runs the generator and the sink's whole receive path, so the calibration is bounded by the two together. " +
      "Here `rps_cpus` on the sink's veth moves that receive path to the sink's CPU, so the generator's CPU runs the generator alone; the NDR is then bounded by the sink's CPU (receive plus the sink process). " +
      "It is information beside the calibration target above, whose status is the plain calibration's.",
  );
  lines.push("");
  if (fixed.length) lines.push(fixedTable(d, fixed, rowLabel), "");
  for (const t of ceiling) {
    lines.push(`**Generator's own ceiling** (\`mcrelay gen --mode ${genModeOf(t)} --rate 0\`, sink's receive on its own CPU, no loss criterion): ${genCeilingText(t)}.`);
    lines.push("");
  }
  lines.push(skipsFor(d, CAL_RPS_VARIANT));
  return lines.join("\n");
}

function fixedTable(d: Data, trials: TrialRecord[], rowLabel: (c: ContenderId) => string = label): string {
  return table(
    ["contender", "target (pps)", "offered", "delivered", "loss", "dup", "reord", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "CPU µs/pkt", "RSS MiB", "relay's own count", "steal ms (per CPU)", "dropped at"],
    trials.map((t) => [
      rowLabel(t.contender),
      targetText(t),
      pps(t.offered_pps),
      pps(t.delivered_pps),
      pct(t.loss_ratio),
      t.duplicates,
      t.reordered,
      us(t.latency_us.p50),
      us(t.latency_us.p99),
      us(t.latency_us.p999),
      us(t.latency_us.max),
      cpuUs(t.cpu.per_input_pkt_ns),
      t.rss_kib.relay_max ? (t.rss_kib.relay_max / 1024).toFixed(0) : "—",
      t.relay_forwarded === null ? "—" : `${t.relay_forwarded} of ${t.accounting.sent_all}`,
      stealCell(t, earlierAttempts(d, t)),
      dropText(t),
    ]),
  );
}

function skipsFor(d: Data, variant: string): string {
  const s = d.skips.filter((x) => x.variant === variant);
  if (s.length === 0) return "";
  return s.map((x) => `- ${label(x.contender)}: ${x.kind === "not-possible" ? `**${x.reason}**` : /^not (run|applicable)/.test(x.reason) ? x.reason : `${x.kind}: ${x.reason}`}`).join("\n") + "\n";
}

function overloadSection(d: Data): string {
  if (d.overloads.length === 0) return "";
  const lines = ["## S4: overload at 2× NDR, then recovery", ""];
  lines.push(
    table(
      ["contender", "NDR used", "offered", "delivered", "% of NDR", "overload (s)", "back to zero loss", "lost", "counted", "unaccounted", "dropped at"],
      d.overloads.map((o) => {
        const t = d.trials.find((x) => x.run_id === o.run_id && x.contender === o.contender && x.phase === "overload" && x.ts === o.ts);
        return [
          label(o.contender),
          pps(o.ndr_pps),
          pps(o.offered_pps),
          pps(o.delivered_pps),
          `${(o.delivered_ratio_of_ndr * 100).toFixed(1)} %`,
          o.overload_s.toFixed(1),
          o.recovery_s === null ? "not within the window" : o.recovery_s === 0 ? `≤ ${(o.probes[0]?.end_s ?? 0).toFixed(2)} s (first probe clean)` : `${o.recovery_s.toFixed(2)} s`,
          o.accounting.lost_all,
          o.accounting.counted,
          Math.max(0, o.accounting.unaccounted),
          t ? dropText(t) : "—",
        ];
      }),
    ),
  );
  lines.push("");
  lines.push(
    "Recovery is measured with back-to-back probe streams at half the NDR, each 0.2 s long in a 0.25 s window, started as the overload ends; " +
      "the time back to zero loss is the end of the last probe window that lost packets, from the end of the overload.",
  );
  lines.push("");
  lines.push(skipsFor(d, "S4-1316"));
  return lines.join("\n");
}

function profileSection(d: Data): string {
  if (d.profiles.length === 0) return "";
  const lines = ["## Profiles", ""];
  for (const p of d.profiles) {
    lines.push(`${label(p.contender)} at ${pps(p.rate_pps)} pps for ${p.seconds} s (CPU ${cpuUs(p.cpu_per_input_pkt_ns)} µs/packet during the profile, perf's own cost included): \`${p.command.replace(/-o \S+ /, "")}\``);
    lines.push("");
    lines.push("```");
    lines.push("overhead  command  object  symbol");
    lines.push(...p.top.slice(0, 25));
    lines.push("```");
    lines.push("");
  }
  return lines.join("\n");
}

function missedSection(d: Data, ts: Target[]): string {
  const missed = ts.filter((t) => t.status === "MISS");
  if (missed.length === 0) return "";
  const lines = ["## Missed targets", ""];
  for (const m of missed) {
    lines.push(`### ${m.text}`);
    lines.push("");
    lines.push(`Measured: ${m.measured}.`);
    lines.push("");
    for (const t of m.evidence.slice(0, 3)) {
      lines.push(`At ${pps(t.offered_pps)} pps offered (${t.variant}, ${t.phase}): loss ${pct(t.loss_ratio)}, dropped at: ${dropText(t)}.`);
      for (const h of diagnose(d, t)) lines.push(`- ${h}`);
      lines.push("");
    }
    const prof = d.profiles.filter((p) => p.contender === "mcrelay");
    if (prof.length) lines.push(`The perf profiles of mcrelay are in [Profiles](#profiles): the top symbols are where its CPU goes at those rates.`);
    lines.push("");
  }
  lines.push("_The hints above are derived automatically from the counters; read them with the profile._");
  lines.push("");
  return lines.join("\n");
}

/** The generator modes of a run's trials (older results files have none recorded: udp). */
function genModeOf(t: TrialRecord): string {
  return ((t.env as { gen_mode?: string }).gen_mode ?? "udp") as string;
}

function genModeText(d: Data): string {
  const modes = [...new Set(d.trials.map(genModeOf))];
  const what: Record<string, string> = {
    raw: "`mcrelay gen --mode raw`: prebuilt Ethernet/IPv4/UDP frames on an AF_PACKET socket with PACKET_QDISC_BYPASS, one sendmmsg per batch of up to 64",
    udp: "`mcrelay gen --mode udp`: a connected UDP socket, one sendmmsg per batch of up to 64 (the kernel's whole UDP send path per datagram)",
  };
  if (modes.length === 0) return "Generator mode: no trials.";
  if (modes.length === 1) return `**Generator mode of every figure below: ${modes[0]}** (${what[modes[0]!] ?? modes[0]}).`;
  return `**Generator modes differ between trials (${modes.join(", ")}): see the gen column of every trial.**`;
}

function sinkModeOfTrial(t: TrialRecord): SinkMode {
  return sinkModeOf(t.env);
}

function trialsAppendix(d: Data): string {
  const all = [...d.trials, ...d.repeated, ...d.superseded].sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0));
  const superseded = new Set(d.superseded);
  const rows = all.map((t) => [
    t.variant,
    label(t.contender),
    t.repeat + 1,
    t.phase,
    `${t.attempt ?? 1}${t.repeated ? " (repeated: steal)" : ""}${superseded.has(t) ? " (superseded by a later run)" : ""}`,
    targetText(t),
    pps(t.offered_pps),
    pps(t.delivered_pps),
    pct(t.loss_ratio, 4),
    us(t.latency_us.p99),
    cpuUs(t.cpu.per_input_pkt_ns),
    t.accounting.unaccounted > 0 ? t.accounting.unaccounted : 0,
    stealText(t.steal),
    genModeOf(t),
    sinkModeOfTrial(t),
    t.problems.join("; "),
  ]);
  return [
    "<details><summary>Every trial</summary>",
    "",
    table(["variant", "contender", "repeat", "phase", "attempt", "target", "offered", "delivered", "loss", "p99 µs", "CPU µs/pkt", "unaccounted", "steal ms (per CPU, % of trial)", "gen", "sink", "problems"], rows),
    "",
    "</details>",
  ].join("\n");
}

export function renderReport(records: BenchRecord[], opts: { svgFile: string; resultsFile: string }): { markdown: string; svg: string } {
  const d = split(records);
  const ts = targets(d);
  const mode = d.run?.mode ?? "?";
  const out: string[] = [];
  out.push("# Benchmarks");
  out.push("");
  out.push(
    `Generated by \`bun run bench${mode === "quick" ? " --quick" : ""}\` (run ${d.run?.run_id ?? "?"}, ${mode}${d.end ? `, ${Math.round(d.end.elapsed_s / 60)} min, ${d.end.outcome}` : ", unfinished"}) from \`${opts.resultsFile}\`. ` +
      "Do not edit: regenerate with `bun scripts/bench.ts --report FILE`.",
  );
  for (const m of d.more) {
    const scen = (m.run.options as { scenarios?: string[] } | undefined)?.scenarios;
    const variants = (m.run.options as { variants?: string[] | "all" } | undefined)?.variants;
    const sha = (x: RunRecord) => String((x.env as { mcrelay_sha256?: string }).mcrelay_sha256 ?? "?").slice(0, 16);
    const same = d.run && sha(d.run) === sha(m.run) ? "the same dist/mcrelay" : `dist/mcrelay sha256 ${sha(m.run)}…, not the first run's`;
    out.push(
      "",
      `Merged with run ${m.run.run_id} (${m.run.mode}${scen ? `, scenarios ${scen.join(", ")}` : ""}${Array.isArray(variants) ? `, variants ${variants.join(", ")}` : ""}${m.end ? `, ${Math.round(m.end.elapsed_s / 60)} min, ${m.end.outcome}` : ", unfinished"}; ${same}), run separately; a fixed-rate trial both runs measured counts from the later run, the earlier one is listed as superseded.`,
    );
  }
  if (mode === "smoke") out.push("", "**Smoke run: 2 s trials at one rate on a shared machine. These numbers show that the pipeline works; they are not results.**");
  if (mode === "quick") out.push("", "Quick run: single repeats and 10 s trials; figures are indicative (about ±20 % on this machine class).");
  out.push("", genModeText(d));
  out.push("", sinkModeText(d.trials.map(sinkModeOfTrial)));
  const foreign = d.trials.filter((t) => t.foreign_forwarders.length > 0).length;
  if (foreign) out.push("", `**${foreign} trial(s) ran while other forwarders were active on the machine (--allow-foreign): not publishable.**`);
  out.push("");
  out.push("## Targets");
  out.push("");
  out.push(table(["target", "measured", "status"], ts.map((t) => [t.text, t.measured, t.status === "MISS" ? "**MISS**" : t.status])));
  out.push("");
  out.push(`![delivered vs offered](${opts.svgFile})`);
  out.push("");
  out.push(envSection(d));
  out.push("");
  out.push("## S1: one stream, 1:1");
  out.push("");
  for (const v of [...new Set(d.searches.map((s) => s.variant))].filter((v) => v.startsWith("S1-") && v !== CAL_RPS_VARIANT).sort()) {
    const heading = v.endsWith("-rps")
      ? `${v.replace("S1-", "").replace("-rps", "")} B payload, RPS: the relay's input softirq on the relay's CPU (a separate placement: compare within this table only)`
      : `${v.replace("S1-", "")} B payload`;
    out.push(searchSection(d, v, heading));
    out.push(skipsFor(d, v));
  }
  out.push(calRpsSection(d));
  const cpu = d.trials.filter((t) => t.purpose === "cpu");
  if (cpu.length) {
    out.push(`### Relay CPU at ${[...new Set(cpu.map((t) => pps(t.target_pps)))].join(" and ")} pps`);
    out.push("");
    out.push(fixedTable(d, cpu));
    out.push("");
  }
  const s2 = searchSection(d, "S2-1:4", "S2: fan-out 1:4 (input NDR: zero loss on every output)");
  const f50 = d.trials.filter((t) => t.variant === "S2-1:50");
  if (s2 || f50.length || d.skips.some((s) => s.variant.startsWith("S2"))) {
    out.push("## S2: fan-out");
    out.push("");
    if (s2) out.push(s2);
    out.push(skipsFor(d, "S2-1:4"));
    for (const fanout of [8, 16]) {
      const more = searchSection(d, `S2-1:${fanout}`, `S2: fan-out 1:${fanout} (input NDR: zero loss on every output)`);
      if (more) out.push(more);
      out.push(skipsFor(d, `S2-1:${fanout}`));
    }
    const f4 = d.trials.filter((t) => t.variant === "S2-1:4" && t.phase === "fixed");
    if (f4.length) out.push("### 1:4 at a fixed rate", "", fixedTable(d, f4), "");
    if (f50.length || d.skips.some((s) => s.variant === "S2-1:50")) {
      out.push("### 1:50 (beyond the kernel's 32 VIFs)");
      out.push("");
      if (f50.length) out.push(fixedTable(d, f50), "");
      out.push(skipsFor(d, "S2-1:50"));
    }
  }
  const s3s = searchSection(d, "S3-100", "S3: 100 streams at equal rate");
  const s3f = d.trials.filter((t) => t.variant === "S3-100" && t.phase === "fixed");
  if (s3s || s3f.length) {
    out.push("## S3: 100 streams");
    out.push("");
    out.push(
      "Each stream is its own `mcrelay gen` process (distinct stream id and source port) sending to the same group at 1/100 of the rate; the relay has one rule, the sink tells the streams apart by the id in the payload. " +
        "The generators start within a second or two of each other, so the 100 streams overlap for most but not all of a trial; loss counts every packet of every stream.",
    );
    out.push("");
    if (s3s) out.push(s3s);
    if (s3f.length) out.push(fixedTable(d, s3f), "");
    out.push(skipsFor(d, "S3-100"));
  }
  out.push(overloadSection(d));
  const lat = d.trials.filter((t) => t.variant === "S5-1316" && t.phase === "fixed");
  if (lat.length) {
    out.push("## S5: one-way latency");
    out.push("");
    out.push(fixedTable(d, [...lat].sort((a, b) => a.target_pps - b.target_pps || CONTENDER_IDS.indexOf(a.contender) - CONTENDER_IDS.indexOf(b.contender))));
    out.push("");
  }
  const smoke = d.trials.filter((t) => t.purpose === "smoke" && t.scenario === "S1" && t.variant !== CAL_RPS_VARIANT);
  if (smoke.length) {
    out.push("## Smoke trials");
    out.push("");
    out.push(fixedTable(d, smoke));
    out.push("");
  }
  out.push(missedSection(d, ts));
  out.push(profileSection(d));
  const otherSkips = d.skips.filter((s) => s.kind === "time-budget" || s.kind === "failed");
  if (otherSkips.length) {
    out.push("## Not run");
    out.push("");
    out.push(otherSkips.map((s) => `- ${s.variant} ${label(s.contender)}: ${s.kind}: ${s.reason}`).join("\n"));
    out.push("");
  }
  out.push(trialsAppendix(d));
  out.push("");
  return { markdown: out.join("\n").replace(/\n{3,}/g, "\n\n"), svg: renderSvg([...d.trials, ...d.repeated]) };
}
