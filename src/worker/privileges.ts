// After the drop, the worker reads back what every one of its threads holds and refuses to
// run unless all of it holds: ids, no supplementary groups, no capabilities, no_new_privs.
import { readdirSync, readFileSync } from "node:fs";

export interface Expected {
  uid: number;
  gid: number;
}

/** Problems found, one line each; empty when every thread is as expected. */
export function verifyDropped(expected: Expected, procSelf = "/proc/self"): string[] {
  const mainTid = readFileSync(`${procSelf}/status`, "utf8").match(/^Pid:\s*(\d+)/m)?.[1];
  const problems: string[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`${procSelf}/task`);
  } catch {
    tasks = ["."];
  }
  for (const tid of tasks) {
    const path = tid === "." ? `${procSelf}/status` : `${procSelf}/task/${tid}/status`;
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch {
      continue; // the thread ended meanwhile
    }
    const field = (name: string) => text.match(new RegExp(`^${name}:[ \\t]*(.*)$`, "m"))?.[1]?.trim() ?? "";
    const ids = (name: string) => field(name).split(/\s+/).map(Number);
    const where = `thread ${tid}`;
    if (!ids("Uid").every((u) => u === expected.uid)) problems.push(`${where}: Uid is '${field("Uid")}', expected ${expected.uid}`);
    if (!ids("Gid").every((g) => g === expected.gid)) problems.push(`${where}: Gid is '${field("Gid")}', expected ${expected.gid}`);
    if (field("Groups") !== "") problems.push(`${where}: supplementary groups '${field("Groups")}' remain`);
    for (const cap of ["CapInh", "CapPrm", "CapEff", "CapAmb"]) {
      // The inheritable set can only be cleared by each thread for itself (capset(2)), and
      // Bun's own threads never run our code. With nothing permitted and no_new_privs set it
      // can never take effect, so other threads may keep it; the main thread may not.
      if (cap === "CapInh" && tid !== mainTid && tid !== ".") continue;
      if (!/^0+$/.test(field(cap))) problems.push(`${where}: ${cap} is ${field(cap)}, expected 0`);
    }
    if (field("NoNewPrivs") !== "1") problems.push(`${where}: NoNewPrivs is '${field("NoNewPrivs")}', expected 1`);
    if (field("Seccomp") !== "2") problems.push(`${where}: Seccomp is '${field("Seccomp")}', expected 2 (the worker's filter)`);
  }
  return problems;
}
