// The folder structure of src/ as a rule: folders import each other without loops (a base
// value type lives below every module that uses it), a client verb never pulls in supervisor
// code, and the benchmark does not depend on the test suite. Imports are read from the source
// text (static, re-exports, dynamic `import()`), type-only imports included.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const root = resolve(import.meta.dir, "../..");
const src = join(root, "src");

interface Import {
  from: string;
  to: string;
  typeOnly: boolean;
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return tsFiles(path);
    return name.endsWith(".ts") && !name.endsWith(".d.ts") ? [path] : [];
  });
}

const IMPORT = /(?:^|\n)\s*(import|export)(\s+type)?\b[^;]*?\bfrom\s+["']([^"']+)["']|\bimport\(\s*["']([^"']+)["']\s*\)|(?:^|\n)\s*import\s+["']([^"']+)["']/g;

/** Relative imports of a file, resolved to absolute paths. */
export function importsOf(file: string, text = readFileSync(file, "utf8")): Import[] {
  const out: Import[] = [];
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[3] ?? m[4] ?? m[5];
    if (!spec || !spec.startsWith(".")) continue;
    out.push({ from: file, to: resolve(dirname(file), spec), typeOnly: !!m[2] });
  }
  return out;
}

/** The unit of layering: a folder directly under src/, or a file directly in src/. */
function unitOf(path: string): string | null {
  const rel = relative(src, path);
  if (rel.startsWith("..")) return null;
  const parts = rel.split("/");
  return parts.length > 1 ? `${parts[0]}/` : parts[0]!;
}

/** Every cycle of the unit graph, as a path of units (Tarjan's strongly connected components). */
export function unitCycles(edges: Map<string, Set<string>>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  let next = 0;
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next);
    next += 1;
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1) out.push(scc.sort());
    }
  };
  for (const v of [...edges.keys()].sort()) if (!index.has(v)) visit(v);
  return out;
}

function unitGraph(imports: Import[]): { edges: Map<string, Set<string>>; why: Map<string, string> } {
  const edges = new Map<string, Set<string>>();
  const why = new Map<string, string>();
  for (const i of imports) {
    const a = unitOf(i.from);
    const b = unitOf(i.to);
    if (!a || !b || a === b) continue;
    if (!edges.has(a)) edges.set(a, new Set());
    edges.get(a)!.add(b);
    if (!why.has(`${a}>${b}`)) why.set(`${a}>${b}`, `${relative(root, i.from)} imports ${relative(root, i.to)}`);
  }
  return { edges, why };
}

const allImports = tsFiles(src).flatMap((f) => importsOf(f));

describe("layering of src/", () => {
  test("the import reader sees static, type-only, re-exported and dynamic imports", () => {
    const text = [
      'import { a } from "./a.ts";',
      'import type { B } from "../b/b.ts";',
      'export { c } from "./c.ts";',
      'const d = () => import("./d.ts");',
      'import "./e.ts";',
      'import * as v from "valibot";',
    ].join("\n");
    const found = importsOf(join(src, "x/file.ts"), text).map((i) => [relative(src, i.to), i.typeOnly]);
    expect(found).toEqual([
      ["x/a.ts", false],
      ["b/b.ts", true],
      ["x/c.ts", false],
      ["x/d.ts", false],
      ["x/e.ts", false],
    ]);
  });

  test("the cycle finder reports a two-folder loop and nothing for a chain", () => {
    const loop = new Map([
      ["config/", new Set(["rules/"])],
      ["rules/", new Set(["config/", "native/"])],
    ]);
    expect(unitCycles(loop)).toEqual([["config/", "rules/"]]);
    const chain = new Map([
      ["config/", new Set(["rules/"])],
      ["rules/", new Set(["base/"])],
    ]);
    expect(unitCycles(chain)).toEqual([]);
  });

  test("no two folders of src/ import each other, directly or through others", () => {
    const { edges, why } = unitGraph(allImports);
    const explained = unitCycles(edges).map((cycle) =>
      cycle.flatMap((a) => cycle.filter((b) => edges.get(a)?.has(b)).map((b) => why.get(`${a}>${b}`)!)).join("; "),
    );
    expect(explained).toEqual([]);
  });

  test("a client verb (one that talks to the daemon) imports no supervisor code at run time", () => {
    // `run` (the daemon) and `forward` (a relay) are the supervisor; the others are clients.
    const clients = tsFiles(join(src, "cli")).filter((f) => /\bwithClient\(|\bnew ControlClient\(|\bControlClient\.connect\(/.test(readFileSync(f, "utf8")));
    expect(clients.length).toBeGreaterThan(5);
    const offending = clients.flatMap((f) =>
      importsOf(f)
        .filter((i) => !i.typeOnly && i.to.startsWith(join(src, "supervisor") + "/"))
        .map((i) => `${relative(root, f)} imports ${relative(root, i.to)}`),
    );
    expect(offending).toEqual([]);
  });

  test("no CLI verb but the supervisor's own (run, forward) imports supervisor code, not even a type", () => {
    const offending = tsFiles(join(src, "cli"))
      .filter((f) => !f.endsWith("/cli/run.ts") && !f.endsWith("/cli/forward.ts"))
      .flatMap((f) => importsOf(f).filter((i) => i.to.startsWith(join(src, "supervisor") + "/")).map((i) => `${relative(root, f)} imports ${relative(root, i.to)}`));
    expect(offending).toEqual([]);
  });

  test("base value types import nothing but each other and the limits", () => {
    const offending = tsFiles(join(src, "base"))
      .flatMap((f) => importsOf(f))
      .filter((i) => !i.to.startsWith(join(src, "base") + "/") && i.to !== join(src, "limits.ts"))
      .map((i) => `${relative(root, i.from)} imports ${relative(root, i.to)}`);
    expect(offending).toEqual([]);
  });

  test("no limit is defined twice: TS ranges come from src/limits.ts, Zig bounds from zig/constants.zig", () => {
    // A validation with a literal TTL, port, DSCP or VLAN bound, or a worker cap, outside src/limits.ts.
    const tsRange = /(minValue|maxValue|intFlag|wholeNumber)\([^)]*\b(255|65535|4094|63|64)\b/;
    const ts = tsFiles(src)
      .filter((f) => !f.endsWith("/limits.ts") && !f.endsWith(".generated.ts"))
      .flatMap((f) =>
        readFileSync(f, "utf8")
          .split("\n")
          .map((line, i) => [line, i] as const)
          .filter(([line]) => tsRange.test(line))
          .map(([, i]) => `${relative(root, f)}:${i + 1}`),
      );
    expect(ts).toEqual([]);
    // A `*_max` bound given as a number anywhere in zig/ but constants.zig.
    const zigFiles = (dir: string): string[] =>
      readdirSync(dir).flatMap((name) => {
        const path = join(dir, name);
        return statSync(path).isDirectory() ? zigFiles(path) : name.endsWith(".zig") ? [path] : [];
      });
    const zigLimit = /^(pub )?const (\w+_max)\b[^=]*=\s*[0-9(]/;
    // Facts of a protocol or computed from code, not choices: they live where they are derived.
    const facts = new Set([
      "ipv4_header_bytes_max", // IHL is 4 bits: 15 * 4 bytes
      "extension_bytes_max", // RFC 8200: (255 + 1) * 8 bytes
      "l2_header_bytes_max", // Ethernet header + one 802.1Q tag
      "insns_max", // computed from the seccomp program's own lists
    ]);
    const zig = zigFiles(join(root, "zig"))
      .filter((f) => !f.endsWith("/constants.zig"))
      .flatMap((f) =>
        readFileSync(f, "utf8")
          .split("\n")
          .map((line, i) => [line.trim(), i] as const)
          .filter(([line]) => zigLimit.test(line) && !facts.has(line.match(zigLimit)![2]!))
          .map(([line, i]) => `${relative(root, f)}:${i + 1}: ${line}`),
      );
    expect(zig).toEqual([]);
  });

  test("scripts (the benchmark among them) do not import the test suite", () => {
    const offending = tsFiles(join(root, "scripts"))
      .flatMap((f) => importsOf(f))
      .filter((i) => i.to.startsWith(join(root, "tests") + "/"))
      .map((i) => `${relative(root, i.from)} imports ${relative(root, i.to)}`);
    expect(offending).toEqual([]);
  });
});
