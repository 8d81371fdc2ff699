// Turns a dataplane's counter region into a plain snapshot (numbers, not bigints), used by the
// worker to report and by the supervisor to total. Counters stay below 2^53 in practice
// (9 peta-packets); values are converted with Number().
import {
  OUTPUT_COUNTERS,
  PARSE_DROPS,
  RULE_COUNTERS,
  RULE_DROPS,
  type RuleDrop,
  SEND_ERROR_NAMES,
  STATS_HEADER,
  STATS_HEADER_WORDS,
  WORKER_COUNTERS,
  LIMITS,
  type ParseDrop,
  type WorkerCounter,
} from "../native/abi.ts";

export interface RuleCounters {
  id: string;
  packets: number;
  bytes: number;
  drops: Record<RuleDrop, number>;
  /** 0, or the errno of the rule's failed input join / port hold (a state, not a counter). */
  inputErrno: number;
}

export interface OutputCounters {
  id: string;
  packets: number;
  bytes: number;
  /** Send errors by errno name; only non-zero entries. */
  sendErrors: Record<string, number>;
}

export interface DataplaneSnapshot {
  generation: number;
  worker: Record<WorkerCounter, number>;
  parseDrops: Record<ParseDrop, number>;
  rules: RuleCounters[];
  outputs: OutputCounters[];
}

export function decodeStats(words: BigUint64Array): DataplaneSnapshot {
  const header = (name: (typeof STATS_HEADER)[number]) => Number(words[STATS_HEADER.indexOf(name)]!);
  const ruleCount = Math.min(header("rule_count"), LIMITS.rulesMax);
  const outputCount = Math.min(header("output_count"), LIMITS.outputsMax);
  const workerBase = STATS_HEADER_WORDS;
  const worker = Object.fromEntries(WORKER_COUNTERS.map((n, i) => [n, Number(words[workerBase + i]!)])) as Record<WorkerCounter, number>;
  const dropBase = workerBase + WORKER_COUNTERS.length;
  const parseDrops = Object.fromEntries(PARSE_DROPS.map((n, i) => [n, Number(words[dropBase + i]!)])) as Record<ParseDrop, number>;
  const ruleBase = dropBase + PARSE_DROPS.length;
  const ruleWord = (name: (typeof RULE_COUNTERS)[number]) => RULE_COUNTERS.indexOf(name);
  const outputWord = (name: (typeof OUTPUT_COUNTERS)[number]) => OUTPUT_COUNTERS.indexOf(name);
  const rules: RuleCounters[] = [];
  for (let r = 0; r < ruleCount; r++) {
    const at = ruleBase + r * RULE_COUNTERS.length;
    const drops = Object.fromEntries(RULE_DROPS.map((n) => [n, Number(words[at + ruleWord(n)]!)])) as Record<RuleDrop, number>;
    rules.push({
      id: words[at + ruleWord("id")]!.toString(),
      packets: Number(words[at + ruleWord("packets")]!),
      bytes: Number(words[at + ruleWord("bytes")]!),
      drops,
      inputErrno: Number(words[at + ruleWord("input_errno")]!),
    });
  }
  const outputBase = ruleBase + LIMITS.rulesMax * RULE_COUNTERS.length;
  const outputs: OutputCounters[] = [];
  for (let o = 0; o < outputCount; o++) {
    const at = outputBase + o * OUTPUT_COUNTERS.length;
    const sendErrors: Record<string, number> = {};
    OUTPUT_COUNTERS.forEach((name, i) => {
      const label = SEND_ERROR_NAMES[name];
      const value = Number(words[at + i]!);
      if (label && value > 0) sendErrors[label] = value;
    });
    outputs.push({
      id: words[at + outputWord("id")]!.toString(),
      packets: Number(words[at + outputWord("packets")]!),
      bytes: Number(words[at + outputWord("bytes")]!),
      sendErrors,
    });
  }
  return { generation: header("generation"), worker, parseDrops, rules, outputs };
}
