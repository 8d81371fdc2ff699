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

/** The worker index (0..members-1) for a rule's input group and port. */
export function workerSlot(group: string, port: number, members: number): number {
  if (members <= 1) return 0;
  const a = parseIp(group);
  if (!a || a.family !== 4) return 0;
  const dst = ((a.bytes[12]! << 24) | (a.bytes[13]! << 16) | (a.bytes[14]! << 8) | a.bytes[15]!) >>> 0;
  return flowHash(dst, port) % members;
}
