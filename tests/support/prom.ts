/**
 * Reading the Prometheus text exposition in tests, two independent ways:
 * - `parseExposition`: a strict TypeScript reader of format 0.0.4 (every line is a HELP, a
 *   TYPE or a sample; names and labels match the grammar; a family's HELP and TYPE come before
 *   its samples; no family appears twice) that throws naming the line;
 * - `parseWithPython`: the reference parser, `prometheus_client.parser` (pinned in
 *   scripts/bootstrap.sh, installed into .toolchain/python), run inside a namespace where it
 *   fetches the URL itself.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Topology } from "../../scripts/lib/netns.ts";
import { REPO_ROOT } from "./relay-harness.ts";

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function parseLabels(text: string, line: number): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf("=", i);
    if (eq < 0) throw new Error(`line ${line}: label without '='`);
    const name = text.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`line ${line}: bad label name '${name}'`);
    if (text[eq + 1] !== '"') throw new Error(`line ${line}: label ${name} value not quoted`);
    let j = eq + 2;
    let value = "";
    for (;;) {
      if (j >= text.length) throw new Error(`line ${line}: unterminated label value`);
      const c = text[j]!;
      if (c === "\\") {
        const n = text[j + 1];
        if (n === "n") value += "\n";
        else if (n === "\\" || n === '"') value += n;
        else throw new Error(`line ${line}: bad escape \\${n}`);
        j += 2;
      } else if (c === '"') {
        j += 1;
        break;
      } else {
        value += c;
        j += 1;
      }
    }
    if (name in labels) throw new Error(`line ${line}: label ${name} twice`);
    labels[name] = value;
    if (text[j] === ",") j += 1;
    else if (j < text.length) throw new Error(`line ${line}: expected ',' after label ${name}`);
    i = j;
  }
  return labels;
}

/** Parses an exposition strictly; returns the families by name. */
export function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  let current: Family | null = null;
  const lines = text.split("\n");
  if (lines[lines.length - 1] !== "") throw new Error("the exposition does not end with a newline");
  lines.pop();
  lines.forEach((raw, idx) => {
    const line = idx + 1;
    if (raw.startsWith("# HELP ")) {
      const [name, ...rest] = raw.slice(7).split(" ");
      if (!NAME.test(name!)) throw new Error(`line ${line}: bad metric name '${name}'`);
      if (families.has(name!)) throw new Error(`line ${line}: family ${name} appears twice`);
      current = { name: name!, type: "untyped", help: rest.join(" "), samples: [] };
      families.set(name!, current);
      return;
    }
    if (raw.startsWith("# TYPE ")) {
      const [name, type] = raw.slice(7).split(" ");
      if (!current || current.name !== name) throw new Error(`line ${line}: TYPE ${name} without its HELP just before`);
      if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(type!)) throw new Error(`line ${line}: bad type '${type}'`);
      if (current.samples.length) throw new Error(`line ${line}: TYPE after samples`);
      current.type = type!;
      return;
    }
    if (raw.startsWith("#") || raw === "") throw new Error(`line ${line}: unexpected line '${raw}'`);
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(raw);
    if (!m) throw new Error(`line ${line}: not a sample: '${raw}'`);
    const [, name, , labelText, valueText] = m;
    const fam = current as Family | null;
    if (!fam || fam.name !== name) throw new Error(`line ${line}: sample ${name} outside its family (${fam?.name ?? "none"})`);
    const value = Number(valueText);
    if (!Number.isFinite(value) && !["+Inf", "-Inf", "NaN"].includes(valueText!)) throw new Error(`line ${line}: bad value '${valueText}'`);
    fam.samples.push({ name: name!, labels: labelText ? parseLabels(labelText, line) : {}, value });
  });
  return families;
}

/** The sample of `family` whose labels include every given one (throws when none or several). */
export function sampleOf(families: Map<string, Family>, family: string, labels: Record<string, string> = {}): number {
  const f = families.get(family);
  if (!f) throw new Error(`no family ${family}`);
  const hits = f.samples.filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (hits.length !== 1) throw new Error(`${family}${JSON.stringify(labels)}: ${hits.length} samples`);
  return hits[0]!.value;
}

export const PYTHON_PATH = process.env.MCRELAY_TEST_PYTHONPATH ?? join(REPO_ROOT, ".toolchain/python");

const PY = `
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
out = []
for f in text_string_to_metric_families(text):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]})
print(json.dumps(out))
`;

/** Fetches `url` from inside `ns` and parses it with prometheus_client; returns its families. */
export async function parseWithPython(topo: Topology, ns: string, url: string): Promise<Family[]> {
  if (!existsSync(join(PYTHON_PATH, "prometheus_client"))) {
    throw new Error(`prometheus_client is not in ${PYTHON_PATH}: run scripts/bootstrap.sh (or set MCRELAY_TEST_PYTHONPATH)`);
  }
  const r = await topo.exec(ns, ["python3", "-c", PY, url], { timeoutMs: 30_000, env: { PYTHONPATH: PYTHON_PATH } });
  if (r.exitCode !== 0) throw new Error(`prometheus_client parser: exit code ${r.exitCode}\n${r.stderr}`);
  return JSON.parse(r.stdout) as Family[];
}

/** GET `url` from inside `ns` with curl: status and body. */
export async function httpGet(topo: Topology, ns: string, url: string): Promise<{ status: number; body: string }> {
  const r = await topo.exec(ns, ["curl", "-s", "-S", "-m", "10", "-w", "\n%{http_code}", url], { timeoutMs: 20_000 });
  if (r.exitCode !== 0) throw new Error(`curl ${url}: exit code ${r.exitCode}: ${r.stderr}`);
  const cut = r.stdout.lastIndexOf("\n");
  return { status: Number(r.stdout.slice(cut + 1)), body: r.stdout.slice(0, cut) };
}
