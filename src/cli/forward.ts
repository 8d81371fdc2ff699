// `mcrelay forward`: a one-shot relay in the foreground, rules from flags, counters on exit.
import { defineCommand } from "citty";
import { EXIT, UsageError, PermissionError, NativeError } from "../errors.ts";
import { outputInterfaceProblems, resolveRule } from "../rules/rule.ts";
import { ipv4Networks } from "../rules/links.ts";
import { DEFAULT_TTL, RING_MIB_MAX, RING_MIB_MIN, WORKERS_PER_INTERFACE_MAX } from "../limits.ts";
import { Relay, lookupLink, type RelayReport } from "../supervisor/relay.ts";
import { checkFlags, intFlag, jsonArg, secondsFlag } from "./args.ts";
import { flagged, flagValue, ruleFromFlags } from "./rule-flags.ts";
import { printJson, printLine, printTable } from "./output.ts";
import { watchStop } from "./stop-signal.ts";
import { workerUser } from "../supervisor/user.ts";
import { fdClose, packetOpen } from "../native/lib.ts";
import { logger } from "../log.ts";

const log = logger("forward");

const args = {
  from: { type: "string", alias: "f", valueHint: "GROUP:PORT@IFACE[,vlan=ID]", description: "Input GROUP:PORT@IFACE[,vlan=ID] (or a local ADDRESS:PORT@IFACE)", required: true },
  to: { type: "string", alias: "t", repeatable: true, valueHint: "ADDR:PORT[@IFACE][,OPTS]", description: "Output ADDR:PORT[@IFACE][,ttl=N][,dscp=N|copy][,gso=off]; repeat for fan-out", required: true },
  ttl: { type: "string", valueHint: "1-255", description: `TTL of relayed packets, for outputs without their own ttl= (default ${DEFAULT_TTL})` },
  source: { type: "string", valueHint: "ADDR", description: "Relay only packets from this source address" },
  "max-pps": { type: "string", description: "Relay at most this many datagrams per second (storm cap; default none)" },
  "loop-guard": { type: "boolean", default: true, description: "Drop datagrams that loop back through relays (--no-loop-guard turns it off)" },
  name: { type: "string", alias: "n", description: "Rule name in the report (default: forward)" },
  duration: { type: "string", alias: "d", valueHint: "SECONDS", description: "Stop after this many seconds (default: until SIGINT/SIGTERM/SIGHUP)" },
  user: { type: "string", alias: "u", description: "User the workers run as (default as root: mcrelay-worker if it exists, else nobody; otherwise your own user)" },
  workers: { type: "string", valueHint: "N", description: "Workers on the input interface (default 1)" },
  "ring-mib": { type: "string", description: `Ring of each packet socket in MiB (${RING_MIB_MIN}-${RING_MIB_MAX}; default 8: 64 ms at 1 Gbit/s)` },
  socket: { type: "string", alias: "s", valueHint: "PATH", description: "Also answer read-only control requests (stats, list, workers, ...) on this socket" },
  ...jsonArg,
} as const;

export default defineCommand({
  meta: { name: "forward", description: "Relay in the foreground until SIGINT/SIGTERM/SIGHUP or --duration, then print counters" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args);
    // Every problem at once, each naming its flag, as `add` reports them (the same checks):
    // the rule's, then the other flags'. An output to its interface's subnet broadcast address
    // could never send (no SO_BROADCAST): checked for each valid output, whatever else is wrong.
    const checked = ruleFromFlags(rawArgs, args, { ...a, name: a.name ?? "forward" });
    const problems = [...checked.problems];
    const duration = flagValue("duration", secondsFlag(), a.duration, problems);
    const workers = flagValue("workers", intFlag(1, WORKERS_PER_INTERFACE_MAX), a.workers, problems);
    const ringMib = flagValue("ring-mib", intFlag(RING_MIB_MIN, RING_MIB_MAX), a["ring-mib"], problems);
    const withNetworks = (iface: string) => {
      const link = lookupLink(iface);
      return link && { ...link, net4: ipv4Networks(link.ifindex) };
    };
    problems.push(...outputInterfaceProblems(checked.fields, withNetworks).map(flagged));
    if (problems.length || !checked.rule) throw new UsageError(problems.join("\n"));
    const rule = checked.rule;
    const resolved = resolveRule(rule, lookupLink);
    if (resolved.pending.length) throw new UsageError(resolved.pending.join("\n"));
    // An output that cannot send now is reported; the others forward.
    for (const why of resolved.pendingOutputs.values()) log.warn(`${why}: that output is pending`);

    // Fail fast and clearly without CAP_NET_RAW (the workers would only time out later).
    try {
      fdClose(packetOpen());
    } catch (err) {
      if (err instanceof NativeError && err.exitCode === 5) throw new PermissionError(`${err.message}: forwarding needs root or CAP_NET_RAW`);
      throw err;
    }
    const relay = new Relay({ user: workerUser(a.user), workers, ringMib });
    // The signals are watched from here: a ^C during start-up (which waits up to 10 s for the
    // workers) stops at once instead of being swallowed.
    const stop = watchStop(duration);
    try {
      if (a.socket) await relay.serve(a.socket);
      const started = relay.start([rule]);
      // start() goes on after a stop won the race: its end (or failure) no longer matters.
      started.catch(() => {});
      await Promise.race([started, stop.done]);
    } catch (err) {
      stop.dispose();
      await relay.stop();
      if (err instanceof NativeError && err.exitCode === 5) {
        throw new PermissionError(`${err.message}: forwarding needs root or CAP_NET_RAW`);
      }
      throw err;
    }
    // duration_s counts from here (every worker forwarding) to the stop request: not start-up,
    // not the stop itself. 0 when stopped during start-up.
    const readyAt = stop.stopped ? null : performance.now();
    const why = await stop.done;
    const seconds = readyAt === null ? 0 : (performance.now() - readyAt) / 1000;
    stop.dispose();
    log.debug(`stopping (${why})`);
    // Read before stop: a worker in backoff at the end, an input interface that went away.
    const troubles = readyAt === null ? [] : relay.troubles();
    const report = await relay.stop();
    if (a.json) printJson({ duration_s: Number(seconds.toFixed(3)), stopped_by: why, problems: troubles, ...report });
    else printHuman(report, seconds, troubles);
    if (troubles.length) {
      for (const p of troubles) log.error(p);
      process.exitCode = EXIT.system;
    }
  },
});

function printHuman(report: RelayReport, seconds: number, problems: string[]): void {
  printLine(`forwarded for ${seconds.toFixed(1)} s`);
  for (const p of problems) printLine(`problem: ${p}`);
  for (const rule of report.rules) {
    printLine();
    const drops = Object.entries(rule.drops).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`);
    printLine(`rule ${rule.name}: ${rule.input}  ${rule.packets.toLocaleString("en-US")} packets in, ${rule.bytes.toLocaleString("en-US")} bytes${drops.length ? `; drops: ${drops.join(", ")}` : ""}`);
    printTable(
      ["output", "ttl", "dscp", "gso", "packets", "bytes", "send errors"],
      rule.outputs.map((o) => [o.to, o.ttl, o.dscp, o.gso ? "on" : "off", o.packets, o.bytes, errorsText(o.send_errors)]),
    );
  }
  for (const w of report.workers) {
    printLine();
    const drops = Object.entries(w.parse_drops).filter(([, n]) => n > 0);
    printLine(
      `worker ${w.interface}: ${w.counters.rx_frames.toLocaleString("en-US")} frames, ` +
        `${w.counters.matched.toLocaleString("en-US")} matched, ${w.counters.no_match.toLocaleString("en-US")} no match, ` +
        `${w.counters.kernel_drops.toLocaleString("en-US")} ring drops` +
        (drops.length ? `, dropped: ${drops.map(([k, n]) => `${k} ${n}`).join(", ")}` : ""),
    );
  }
}

function errorsText(errors: Record<string, number>): string {
  const entries = Object.entries(errors);
  return entries.length ? entries.map(([k, n]) => `${k} ${n}`).join(", ") : "-";
}

