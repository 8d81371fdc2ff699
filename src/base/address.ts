// IP addresses as the native side wants them: 16 bytes, IPv4 v4-mapped.

export type Family = 4 | 6;

export interface IpAddress {
  family: Family;
  /** Canonical text form (IPv6 compressed, lower case). */
  text: string;
  bytes: Uint8Array;
}

const V4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function parseV4(text: string): Uint8Array | null {
  const m = V4.exec(text);
  if (!m) return null;
  const octets = m.slice(1, 5).map((s) => (s.length > 1 && s.startsWith("0") ? NaN : Number(s)));
  if (octets.some((o) => !Number.isInteger(o) || o > 255)) return null;
  const bytes = new Uint8Array(16);
  bytes[10] = 0xff;
  bytes[11] = 0xff;
  bytes.set(octets, 12);
  return bytes;
}

function parseV6(text: string): Uint8Array | null {
  if (!/^[0-9a-fA-F:.]+$/.test(text) || text.length > 45) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (part: string): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    const pieces = part.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i]!;
      if (i === pieces.length - 1 && p.includes(".")) {
        const v4 = parseV4(p);
        if (!v4) return null;
        out.push((v4[12]! << 8) | v4[13]!, (v4[14]! << 8) | v4[15]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

function v6Text(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((bytes[2 * i]! << 8) | bytes[2 * i + 1]!);
  // Compress the longest run of zero groups (RFC 5952).
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

export function parseIp(text: string): IpAddress | null {
  const v4 = parseV4(text);
  if (v4) return { family: 4, text: `${v4[12]}.${v4[13]}.${v4[14]}.${v4[15]}`, bytes: v4 };
  const v6 = parseV6(text);
  if (v6) {
    const mapped = v6.subarray(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff;
    if (mapped) return { family: 4, text: `${v6[12]}.${v6[13]}.${v6[14]}.${v6[15]}`, bytes: v6 };
    return { family: 6, text: v6Text(v6), bytes: v6 };
  }
  return null;
}

export function isMulticast(a: IpAddress): boolean {
  return a.family === 4 ? (a.bytes[12]! & 0xf0) === 0xe0 : a.bytes[0] === 0xff;
}

export function isUnspecified(a: IpAddress): boolean {
  return a.family === 4 ? a.bytes.subarray(12).every((b) => b === 0) : a.bytes.every((b) => b === 0);
}
