/**
 * CPU time the hypervisor took from this VM ("steal" in /proc/stat) during a trial's measured
 * part, and when a lossy trial is suspect because of it.
 *
 * A trial during which a vCPU was descheduled can lose packets the relay would not have lost:
 * mcrelay's 8 MiB receive ring holds about 15 ms of 1316 B packets at 380k pps, so a stall of
 * the relay's CPU longer than that overflows it whatever the relay does. Such a trial is
 * suspect, not a failure: it is run again at the same rate, at most STEAL_REPEATS_MAX times.
 * A trial without loss is never repeated, and the last attempt's loss stands (with its steal).
 *
 * Threshold: steal on any CPU of at least STEAL_SUSPECT_RATIO of the measured wall time and at
 * least STEAL_SUSPECT_MIN_MS. 1 % of a 30 s trial is 300 ms, twenty times what the ring can
 * absorb; /proc/stat counts in 10 ms ticks, so the floor of two ticks keeps a single tick on a
 * 1 s coarse trial (1 %) from counting as steal. And the loss must be one the steal can
 * explain: no more output copies than were offered during the worst CPU's stolen time (a
 * trial far above the relay's capacity loses more than that, steal or not, and is not re-run).
 *
 * A latency trial (S5) with significant steal is repeated whether or not it lost anything: a
 * stolen vCPU holds every frame in flight for the whole stall, and those frames are the tail its
 * p99 measures (1 % of a 30 s trial at 1k pps is 300 frames, the whole 1 % tail, each late by up
 * to the stall). So is S1's CPU trial (150k and 300k pps): its p99 is evidence for the S1
 * latency target too (the 300k trial of run 2026-12-02T075909Z had p99 1.8 ms with 3.4 % steal
 * on the relay's CPU). The same bound of attempts; the last attempt's figure stands, with its steal.
 */

/** Trial purposes whose p99 a target reads: significant steal alone makes them suspect. */
export const STEAL_ALONE_PURPOSES: readonly string[] = ["latency", "cpu"];

/** Whether a trial of this purpose is repeated for steal even without loss (its p99 counts). */
export function latencyCounts(purpose: string | undefined): boolean {
  return purpose !== undefined && STEAL_ALONE_PURPOSES.includes(purpose);
}

export const STEAL_SUSPECT_RATIO = 0.01;
export const STEAL_SUSPECT_MIN_MS = 20;
export const STEAL_REPEATS_MAX = 2;
/** USER_HZ is 100 on Linux: /proc/stat counts 10 ms ticks. */
export const PROC_STAT_TICK_MS = 10;

export interface StealRecord {
  /** Steal of each CPU during the measured part, ms. */
  per_cpu_ms: number[];
  /** Wall time of the measured part, ms. */
  wall_ms: number;
}

/** Steal from two /proc/stat readings (ticks per CPU) around a measured part of `wallMs`. */
export function stealBetween(before: { steal: number }[], after: { steal: number }[], wallMs: number): StealRecord {
  return {
    per_cpu_ms: after.map((c, i) => Math.max(0, c.steal - (before[i]?.steal ?? c.steal)) * PROC_STAT_TICK_MS),
    wall_ms: Math.round(wallMs),
  };
}

/** The CPU with the most steal, its ms and share of the wall time; null without a record. */
export function worstSteal(s: StealRecord | undefined | null): { cpu: number; ms: number; ratio: number } | null {
  if (!s || s.per_cpu_ms.length === 0) return null;
  let cpu = 0;
  s.per_cpu_ms.forEach((ms, i) => {
    if (ms > s.per_cpu_ms[cpu]!) cpu = i;
  });
  const ms = s.per_cpu_ms[cpu]!;
  return { cpu, ms, ratio: s.wall_ms > 0 ? ms / s.wall_ms : 0 };
}

/** Steal above the threshold on some CPU (regardless of loss). */
export function significantSteal(s: StealRecord | undefined | null): boolean {
  const w = worstSteal(s);
  return w !== null && w.ms >= STEAL_SUSPECT_MIN_MS && w.ratio >= STEAL_SUSPECT_RATIO;
}

/** Output copies offered while the worst CPU was stolen: the most loss the steal can explain. */
export function stealExplains(steal: StealRecord | undefined | null, offeredPps: number, fanout: number): number {
  const w = worstSteal(steal);
  return w ? Math.ceil((offeredPps * fanout * w.ms) / 1000) : 0;
}

export interface StealTrial {
  /** "latency" (S5) and "cpu" (S1's CPU trials): their steal alone makes them suspect. */
  purpose?: string;
  /** Output copies lost. */
  lost: number;
  offered_pps: number;
  shape: { fanout: number };
  steal?: StealRecord;
}

/**
 * Whether the trial (attempt `attempt`, 1 for the first at this rate) is run again: it had
 * significant steal, fewer than STEAL_REPEATS_MAX repeats were done, and its p99 counts
 * (latencyCounts) or it lost packets, no more than its steal can explain.
 */
export function repeatForSteal(t: StealTrial, attempt: number): boolean {
  if (attempt > STEAL_REPEATS_MAX || !significantSteal(t.steal)) return false;
  if (latencyCounts(t.purpose)) return true;
  return t.lost > 0 && t.lost <= stealExplains(t.steal, t.offered_pps, t.shape.fanout);
}

/** "1200 / 40" (ms per CPU), "—" when not recorded. */
export function stealMsText(s: StealRecord | undefined | null): string {
  if (!s || s.per_cpu_ms.length === 0) return "—";
  return s.per_cpu_ms.map((ms) => String(Math.round(ms))).join(" / ");
}

/** "1200 / 40 ms (3.43 / 0.11 %)", "—" when not recorded. */
export function stealText(s: StealRecord | undefined | null): string {
  if (!s || s.per_cpu_ms.length === 0) return "—";
  const pcts = s.per_cpu_ms.map((ms) => (s.wall_ms > 0 ? ((100 * ms) / s.wall_ms).toFixed(2) : "?")).join(" / ");
  return `${stealMsText(s)} ms (${pcts} %)`;
}

/**
 * The note of a repeated trial: "trial at N pps lost X with Y ms steal: repeated", or for a
 * trial whose p99 counts (given its p99) "latency trial at N pps, p99 P µs, with Y ms steal: repeated".
 */
export function stealRepeatNote(offeredPps: number, lost: number, s: StealRecord | undefined | null, latencyP99Us?: number): string {
  const w = worstSteal(s);
  const steal = w ? `${Math.round(w.ms)} ms steal (CPU ${w.cpu}, ${(w.ratio * 100).toFixed(2)} %)` : "no recorded steal";
  if (latencyP99Us !== undefined) return `latency trial at ${Math.round(offeredPps)} pps, p99 ${Math.round(latencyP99Us)} µs, lost ${lost} with ${steal}: repeated`;
  return `trial at ${Math.round(offeredPps)} pps lost ${lost} with ${steal}: repeated`;
}

/** The note of the attempt that ended a rate's repeats (attempt > 1): what it lost, and that it stands. */
export function stealFinalNote(offeredPps: number, lost: number, s: StealRecord | undefined | null, attempt: number): string {
  const w = worstSteal(s);
  const steal = w ? `${Math.round(w.ms)} ms steal (CPU ${w.cpu})` : "no recorded steal";
  return lost > 0 ? `trial at ${Math.round(offeredPps)} pps lost ${lost} with ${steal} on attempt ${attempt}: the loss stands` : `trial at ${Math.round(offeredPps)} pps lost nothing on attempt ${attempt} (steal ${stealMsText(s)} ms)`;
}
