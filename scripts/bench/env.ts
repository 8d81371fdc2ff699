/**
 * The environment a run's numbers belong to, recorded with every trial: kernel, CPU, the cost
 * of a syscall, the sysctls that shape packet paths, tool versions and the git revision.
 * Per-trial facts (ring geometry, load average) are in the trial record itself.
 */
import { existsSync, readFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import type { Tools } from "./contenders.ts";

function read(path: string): string | null {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return null;
  }
}

function run(cmd: string[], cwd?: string): string {
  try {
    const r = Bun.spawnSync({ cmd, cwd, stdout: "pipe", stderr: "pipe" });
    return (r.stdout.toString() + r.stderr.toString()).trim();
  } catch {
    return "";
  }
}

/** Host-wide sysctls (the per-namespace ones the harness sets are listed by the topology). */
const SYSCTLS = [
  "net/core/netdev_max_backlog",
  "net/core/netdev_budget",
  "net/core/netdev_budget_usecs",
  "net/core/dev_weight",
  "net/core/rmem_default",
  "net/core/wmem_default",
  "net/core/rmem_max",
  "net/core/wmem_max",
  "net/core/optmem_max",
  "net/core/rps_sock_flow_entries",
  "net/core/busy_poll",
  "net/core/busy_read",
  "net/ipv4/igmp_max_memberships",
  "net/ipv4/udp_mem",
  "kernel/sched_autogroup_enabled",
  "kernel/perf_event_paranoid",
];

/** getppid() round trip from `perf bench syscall basic`, in ns; null when perf cannot run it. */
function syscallCostNs(): number | null {
  const out = run(["perf", "bench", "syscall", "basic", "--loop", "2000000"]);
  const m = /([\d.]+)\s+usecs\/op/.exec(out);
  return m ? Math.round(Number(m[1]) * 1000) : null;
}

export function captureEnv(root: string, tools: Tools): Record<string, unknown> {
  const cpuinfo = read("/proc/cpuinfo") ?? "";
  const flags = /^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.split(" ") ?? [];
  const sysctls: Record<string, string> = {};
  for (const key of SYSCTLS) {
    const v = read(`/proc/sys/${key}`);
    if (v !== null) sysctls[key.replaceAll("/", ".")] = v.replace(/\s+/g, " ");
  }
  const dirty = run(["git", "status", "--porcelain", "--untracked-files=no"], root);
  return {
    kernel: run(["uname", "-r"]),
    kernel_build: run(["uname", "-v"]),
    cpu_model: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "unknown",
    cpus: cpus().length,
    cpu_mhz: Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1] ?? 0),
    hypervisor: flags.includes("hypervisor"),
    memory_mib: Math.round(totalmem() / 1024 / 1024),
    clocksource: read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
    syscall_getppid_ns: syscallCostNs(),
    sysctls,
    git_revision: run(["git", "rev-parse", "HEAD"], root),
    git_dirty: dirty.length > 0,
    versions: {
      mcrelay: run([tools.mcrelay, "--version"]),
      bun: Bun.version,
      smcroute: existsSync(tools.smcrouted) ? run([tools.smcrouted, "-v"]).split("\n")[0] : null,
      socat: existsSync(tools.socat) ? (/socat version (\S+)/.exec(run([tools.socat, "-V"]))?.[1] ?? null) : null,
      perf: run(["perf", "--version"]),
    },
  };
}
