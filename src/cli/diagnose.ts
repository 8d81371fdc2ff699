// `mcrelay diagnose [RULE]`: runs the checks of src/diagnose/checks.ts over what the daemon and
// this host say now and over a short window of traffic, and prints what is wrong and what to
// do, most likely cause first. Exit 0 when nothing is wrong, 10 when something is.
import { defineCommand } from "citty";
import * as v from "valibot";
import { ControlClient, socketPath } from "../control/client.ts";
import { EXIT, PermissionError } from "../errors.ts";
import { diagnose, type Finding } from "../diagnose/checks.ts";
import { gather } from "../diagnose/gather.ts";
import { checkFlags, jsonArg, secondsFlag, validate } from "./args.ts";
import { socketArg } from "./daemon-client.ts";
import { printJson, printLine } from "./output.ts";

const args = {
  rule: { type: "positional", description: "Only this rule (name or id)", required: false },
  window: { type: "string", description: "Seconds of traffic to watch (default 2)" },
  ...socketArg,
  ...jsonArg,
} as const;

function print(findings: Finding[], windowS: number, rules: number): void {
  if (findings.every((f) => f.severity === "info")) printLine(`no problem found (${rules} rules, ${windowS} s of traffic watched)`);
  for (const f of findings) {
    printLine(`${f.severity.toUpperCase()} ${f.check}${f.rule ? ` (rule ${f.rule})` : ""}: ${f.what}`);
    printLine(`  -> ${f.fix}`);
  }
}

export default defineCommand({
  meta: { name: "diagnose", description: "Find out why a stream is not relayed: checks, most likely cause first (exit 10 when something is wrong)" },
  args,
  async run({ rawArgs, args: a }) {
    checkFlags(rawArgs, args, 1);
    const windowS = validate(v.object({ window: v.optional(secondsFlag(60)) }), { window: a.window }).window ?? 2;
    let findings: Finding[];
    let rules = 0;
    let client: ControlClient | null = null;
    try {
      client = await ControlClient.connect(socketPath(a.socket));
    } catch (err) {
      if (!(err instanceof PermissionError)) throw err;
      findings = [{ check: "socket-permission", severity: "error", rule: null, what: (err as Error).message, fix: "run as root, or as a member of the socket's group (run --socket-group) or its admin group" }];
    }
    if (client) {
      try {
        const input = await gather(client, { rule: a.rule, windowS });
        rules = input.rules.length;
        findings = diagnose(input);
      } finally {
        client.close();
      }
    }
    const problems = findings!.filter((f) => f.severity !== "info").length;
    if (a.json) printJson({ ok: problems === 0, window_s: windowS, rules, findings: findings! });
    else print(findings!, windowS, rules);
    process.exitCode = problems ? EXIT.problems : EXIT.ok;
  },
});
