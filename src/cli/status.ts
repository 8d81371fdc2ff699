// `mcrelay status`: the daemon at a glance (version, uptime, rules and workers by state, the
// interfaces its rules use), as `systemctl status` gives a service.
import { defineCommand } from "citty";
import { checkFlags, jsonArg } from "./args.ts";
import { socketArg, withClient } from "./daemon-client.ts";
import { printJson, printLine, printTable } from "./output.ts";
import { formatProblem } from "../config/file.ts";

const args = { ...socketArg, ...jsonArg } as const;

function duration(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return d ? `${d}d ${h}h ${m}m` : h ? `${h}h ${m}m ${sec}s` : m ? `${m}m ${sec}s` : `${sec}s`;
}

export default defineCommand({
  meta: { name: "status", description: "The daemon at a glance: version, uptime, rules and workers by state, interfaces" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    const s = await withClient(a.socket, (c) => c.request("status"));
    if (a.json) return printJson(s);
    printLine(`mcrelay ${s.version} (${s.mode}, pid ${s.pid}), up ${duration(s.uptime_s)} since ${s.started_at}`);
    printLine(`config: ${s.config_file ?? "none"}${s.config ? `, loaded ${s.config.loaded_at}` : ""}`);
    const refused = s.config?.reload_error;
    if (refused) {
      // The file on disk is not what runs: say so before anything else is read as the file's.
      printLine(`config: last reload FAILED at ${refused.at} (asked by ${refused.requested_by}); the rules loaded at ${s.config!.loaded_at} still run:`);
      for (const p of refused.problems) printLine(`  ${formatProblem(p)}`);
    }
    const aside = s.state?.set_aside;
    if (aside) {
      // The daemon started without the runtime rules it had saved: say where they are.
      printLine(`state: ${s.state!.file} did not load at ${aside.at} (${aside.reason}); set aside as ${aside.path}; started without runtime rules`);
    }
    // Saved rules kept in the state file but not running: each with what removes it.
    for (const u of s.state?.unloaded ?? []) printLine(`state: saved rule ${u.name} (id ${u.id}) is not loaded: ${u.reason}; \`mcrelay remove ${u.id}\` drops it`);
    printLine(`rules: ${s.rules.total} (${s.rules.active} active, ${s.rules.pending} pending, ${s.rules.error} error, ${s.rules.join_failed} join failed)`);
    printLine(`workers: ${s.workers.total} (${s.workers.running} running, ${s.workers.starting} starting, ${s.workers.backoff} in backoff, ${s.workers.stopping} stopping)`);
    if (s.interfaces.length) {
      printLine();
      printTable(["interface", "state", "inputs", "outputs", "workers"], s.interfaces.map((i) => [i.name, i.state, i.inputs, i.outputs, i.workers]));
    }
  },
});
