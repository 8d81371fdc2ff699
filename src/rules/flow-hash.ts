// Which worker of an interface holds a rule: the same hash as the kernel's fanout program
// (zig/fanout.zig), modulo the number of workers. Both must agree bit for bit; a test checks
// this against the native function.
import { parseIp } from "../base/address.ts";

export function flowHash(dst: number, port: number): number {
  let a = Math.imul(dst >>> 0, 0x9e3779b1) >>> 0;
  a = (a ^ port) >>> 0;
  a = (a ^ (a >>> 16)) >>> 0;
  a = Math.imul(a, 0x85ebca6b) >>> 0;
  a = (a ^ (a >>> 13)) >>> 0;
  return a;
}

/**
 * The IPv6 hash: the destination's four 32-bit words XORed, then flowHash with port 0. The
 * fanout program cannot reach the port behind IPv6 extension headers, so the port is left out.
 */
export function flowHash6(bytes: Uint8Array): number {
  let fold = 0;
  for (let i = 0; i < 16; i += 4) fold ^= (bytes[i]! << 24) | (bytes[i + 1]! << 16) | (bytes[i + 2]! << 8) | bytes[i + 3]!;
  return flowHash(fold >>> 0, 0);
}

/** The worker index (0..members-1) for a rule's input group and port (IPv6: group only). */
export function workerSlot(group: string, port: number, members: number): number {
  if (members <= 1) return 0;
  const a = parseIp(group);
  if (!a) return 0;
  if (a.family === 6) return flowHash6(a.bytes) % members;
  const dst = ((a.bytes[12]! << 24) | (a.bytes[13]! << 16) | (a.bytes[14]! << 8) | a.bytes[15]!) >>> 0;
  return flowHash(dst, port) % members;
}
