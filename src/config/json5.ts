// A JSON5 reader that knows where everything is: a syntax error carries its line and column
// (from 1; a column counts Unicode code points, as an editor shows them, not UTF-16 units),
// and every value and key of the document is mapped from its path (`rules[1].to[0]`) to the
// line and column where it starts, so a config problem can be reported as FILE:LINE:COLUMN.
// Covers JSON5 as https://spec.json5.org defines it: comments, trailing commas, unquoted
// identifier keys, single-quoted strings, line continuations, hex numbers, leading or trailing
// decimal points, an explicit +, Infinity and NaN.

export interface Position {
  line: number;
  column: number;
}

export class Json5SyntaxError extends Error {
  override name = "Json5SyntaxError";
  constructor(
    message: string,
    readonly line: number,
    readonly column: number,
  ) {
    super(message);
  }
}

export interface Json5Document {
  value: unknown;
  /** Path → where its value starts. The root is "". */
  values: Map<string, Position>;
  /** Path → where its key starts (object members only). */
  keys: Map<string, Position>;
  /** Keys given twice in one object (JSON5 keeps the last): each repeat, with where the first was. */
  duplicates: { path: string; at: Position; first: Position }[];
}

const DEPTH_MAX = 64;

export function parseJson5(text: string): Json5Document {
  let i = 0;
  let line = 1;
  let lineStart = 0;
  const values = new Map<string, Position>();
  const keys = new Map<string, Position>();
  const duplicates: Json5Document["duplicates"] = [];

  // Columns count Unicode code points, as an editor shows them: the second half of each
  // surrogate pair (an emoji) on the current line is not counted.
  let lineSurrogates = 0;
  const here = (): Position => ({ line, column: i - lineStart - lineSurrogates + 1 });
  const fail = (message: string, at: Position = here()): never => {
    throw new Json5SyntaxError(message, at.line, at.column);
  };
  const describe = (): string => (i >= text.length ? "the end of the file" : `'${String.fromCodePoint(text.codePointAt(i)!)}'`);
  const advance = (): string => {
    const c = text[i++]!;
    if (c === "\n" || (c === "\r" && text[i] !== "\n") || c === "\u2028" || c === "\u2029") {
      line += 1;
      lineStart = i;
      lineSurrogates = 0;
    } else if (c >= "\uDC00" && c <= "\uDFFF" && i >= 2 && text[i - 2]! >= "\uD800" && text[i - 2]! <= "\uDBFF") {
      lineSurrogates += 1;
    }
    return c;
  };

  const skipSpace = (): void => {
    while (i < text.length) {
      const c = text[i]!;
      if (/[\s\uFEFF]/.test(c)) advance();
      else if (c === "/" && text[i + 1] === "/") {
        while (i < text.length && text[i] !== "\n" && text[i] !== "\r") advance();
      } else if (c === "/" && text[i + 1] === "*") {
        const start = here();
        advance();
        advance();
        while (i < text.length && !(text[i] === "*" && text[i + 1] === "/")) advance();
        if (i >= text.length) fail("a /* comment is not closed", start);
        advance();
        advance();
      } else return;
    }
  };

  const parseString = (): string => {
    const quote = advance();
    let out = "";
    for (;;) {
      if (i >= text.length) fail(`a string is not closed (missing ${quote})`);
      const c = advance();
      if (c === quote) return out;
      if (c === "\n" || c === "\r") fail("a line break inside a string (end the line with \\ to continue it)", { line: line - 1, column: 1 });
      if (c !== "\\") {
        out += c;
        continue;
      }
      const e = advance();
      const simple: Record<string, string> = { b: "\b", f: "\f", n: "\n", r: "\r", t: "\t", v: "\v", 0: "\0", "'": "'", '"': '"', "\\": "\\", "/": "/" };
      if (e in simple && !(e === "0" && /\d/.test(text[i] ?? ""))) out += simple[e];
      else if (e === "\n" || e === "\u2028" || e === "\u2029") continue;
      else if (e === "\r") {
        if (text[i] === "\n") advance();
      } else if (e === "x" || e === "u") {
        const n = e === "x" ? 2 : 4;
        const hex = text.slice(i, i + n);
        if (!new RegExp(`^[0-9A-Fa-f]{${n}}$`).test(hex)) fail(`\\${e} needs ${n} hex digits`);
        for (let k = 0; k < n; k++) advance();
        out += String.fromCharCode(parseInt(hex, 16));
      } else if (/\d/.test(e)) fail(`\\${e} is not a valid escape`);
      else out += e;
    }
  };

  const identifier = (): string => {
    const m = /^[A-Za-z_$\u0080-\uFFFF][A-Za-z0-9_$\u0080-\uFFFF]*/.exec(text.slice(i, i + 256));
    if (!m) fail(`expected a key, found ${describe()}`);
    for (let k = 0; k < m![0].length; k++) advance();
    return m![0];
  };

  const parseNumber = (): number => {
    const m = /^[+-]?(Infinity|NaN|0[xX][0-9A-Fa-f]+|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)/.exec(text.slice(i, i + 512));
    if (!m) fail(`expected a value, found ${describe()}`);
    const raw = m![0];
    for (let k = 0; k < raw.length; k++) advance();
    const sign = raw.startsWith("-") ? -1 : 1;
    const body = raw.replace(/^[+-]/, "");
    if (body === "Infinity") return sign * Infinity;
    if (body === "NaN") return NaN;
    if (/^0[xX]/.test(body)) return sign * parseInt(body, 16);
    if (/^0\d/.test(body)) fail(`a number cannot start with 0 ('${raw}')`, { line, column: here().column - raw.length });
    return sign * Number(body);
  };

  const parseValue = (path: string, depth: number): unknown => {
    skipSpace();
    if (depth > DEPTH_MAX) fail(`nested deeper than ${DEPTH_MAX} levels`);
    values.set(path, here());
    const c = text[i];
    if (c === "{") return parseObject(path, depth);
    if (c === "[") return parseArray(path, depth);
    if (c === '"' || c === "'") return parseString();
    for (const [word, value] of [["true", true], ["false", false], ["null", null]] as const) {
      if (text.startsWith(word, i) && !/[A-Za-z0-9_$]/.test(text[i + word.length] ?? "")) {
        for (let k = 0; k < word.length; k++) advance();
        return value;
      }
    }
    return parseNumber();
  };

  const parseObject = (path: string, depth: number): Record<string, unknown> => {
    const open = here();
    advance();
    const out: Record<string, unknown> = {};
    for (;;) {
      skipSpace();
      if (i >= text.length) fail("an object is not closed (missing })", open);
      if (text[i] === "}") {
        advance();
        return out;
      }
      const keyAt = here();
      const key = text[i] === '"' || text[i] === "'" ? parseString() : identifier();
      const child = path ? `${path}.${key}` : key;
      const first = Object.hasOwn(out, key) ? keys.get(child) : undefined;
      if (first) duplicates.push({ path: child, at: keyAt, first });
      keys.set(child, keyAt);
      skipSpace();
      if (text[i] !== ":") fail(`expected ':' after the key '${key}', found ${describe()}`);
      advance();
      Object.defineProperty(out, key, { value: parseValue(child, depth + 1), enumerable: true, writable: true, configurable: true });
      skipSpace();
      if (text[i] === ",") advance();
      else if (text[i] !== "}") fail(i >= text.length ? "an object is not closed (missing })" : `expected ',' or '}', found ${describe()}`);
    }
  };

  const parseArray = (path: string, depth: number): unknown[] => {
    const open = here();
    advance();
    const out: unknown[] = [];
    for (;;) {
      skipSpace();
      if (i >= text.length) fail("a list is not closed (missing ])", open);
      if (text[i] === "]") {
        advance();
        return out;
      }
      out.push(parseValue(`${path}[${out.length}]`, depth + 1));
      skipSpace();
      if (text[i] === ",") advance();
      else if (text[i] !== "]") fail(i >= text.length ? "a list is not closed (missing ])" : `expected ',' or ']', found ${describe()}`);
    }
  };

  const value = parseValue("", 0);
  skipSpace();
  if (i < text.length) fail(`unexpected ${describe()} after the end of the document`);
  return { value, values, keys, duplicates };
}

/** Where `path` is: its key for an unknown or misplaced key, else its value, else its nearest parent. */
export function positionOf(doc: Json5Document, path: string, preferKey = false): Position | null {
  for (let p = path; ; ) {
    const at = preferKey ? (doc.keys.get(p) ?? doc.values.get(p)) : (doc.values.get(p) ?? doc.keys.get(p));
    if (at) return at;
    if (p === "") return null;
    const cut = Math.max(p.lastIndexOf("."), p.lastIndexOf("["));
    p = cut < 0 ? "" : p.slice(0, cut);
  }
}
