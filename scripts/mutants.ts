/**
 * Mutation check: does the suite notice when a behaviour breaks? Each mutant below is one small
 * deliberate breakage (an exact search/replace on one source file, rarely two when a behaviour
 * is guarded twice) with the tests that must catch it. For each mutant this script applies the
 * breakage in a temporary git worktree (never in your checkout), rebuilds the native library
 * when a .zig file changed (and dist/mcrelay when a named test is under tests/compiled/), runs
 * the named tests and expects each of them to fail; then it restores the file.
 *
 *   bun scripts/mutants.ts --list          the mutants, their files and their tests
 *   bun scripts/mutants.ts --check         every search text occurs exactly once, every named
 *                                          test exists (no build, no run; seconds)
 *   bun scripts/mutants.ts --only NAME     one mutant (repeatable)
 *   bun scripts/mutants.ts --all           every mutant (about 45 min for 41 on a busy 2-core VM)
 *   bun scripts/mutants.ts --ci            a small subset that rotates by date (what CI runs)
 *   add --baseline to run each mutant's tests without the breakage first (they must pass, or
 *   the mutant is invalid: a failure would prove nothing); --json for a machine-readable result
 *
 * The worktree is made from HEAD plus your uncommitted changes (tracked diff and untracked
 * files), so it tests what you have. It lives under the system temp dir and is removed on exit,
 * on SIGINT/SIGTERM, and, if this process was SIGKILLed, by the next run (its name carries the
 * pid). Needs root for the kernel tests, like the suite itself.
 *
 * A mutant is "caught" when every one of its tests fails with the breakage in place; "survived"
 * when one of them passes (the test does not check that behaviour); "invalid" when the breakage
 * could not be applied (search text not found once), did not build, or a named test matched no
 * test. Exit code 0 only when every mutant run was caught.
 */
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";

const root = resolve(import.meta.dir, "..");
const bun = process.execPath;

// ---------------------------------------------------------------------------------------
// The mutants

export interface TestTarget {
  /** Test file, relative to the repository root. */
  file: string;
  /** A `bun test -t` pattern (regex over "describe > test" names) selecting the tests that must fail. */
  filter?: string;
}

export interface Edit {
  file: string;
  search: string;
  replace: string;
}

/** Every edit of a mutant, the main one first. */
export function editsOf(m: Mutant): Edit[] {
  return [{ file: m.file, search: m.search, replace: m.replace }, ...(m.also ?? [])];
}

export interface Mutant {
  name: string;
  /** The behaviour that breaks, in a few words. */
  breaks: string;
  /** Source file, relative to the repository root. */
  file: string;
  /** Exact text that must occur exactly once in `file`, and what replaces it. */
  search: string;
  replace: string;
  /** More edits of the same breakage, when one behaviour is guarded in two places. */
  also?: Edit[];
  /** Every one of these must fail with the mutant in place. */
  tests: TestTarget[];
}

export const MUTANTS: Mutant[] = [
  // --- Behaviours that no test noticed before issue 17 -------------------------------------
  {
    name: "source-filter-dropped",
    breaks: "a rule's --source filter never reaches the worker",
    file: "src/rules/rule.ts",
    search: "source: rule.source?.text ?? null,",
    replace: "source: null,",
    tests: [{ file: "tests/integration/ingress.test.ts", filter: "relays every packet from that source" }],
  },
  {
    name: "no-igmp-join",
    breaks: "the input group is never joined on the input interface",
    file: "zig/dataplane/loop.zig",
    search: "self.join_failures = self.joins.reconcile(self.wanted_inputs[0..n], self.input_errnos[0..n]);",
    replace: "self.join_failures = 0;\n        @memset(self.input_errnos[0..n], 0);",
    tests: [{ file: "tests/integration/ingress.test.ts", filter: "IGMP membership" }],
  },
  {
    name: "gso-superframe-not-split",
    breaks: "a UDP GSO super-frame is relayed as one giant datagram instead of its datagrams",
    file: "zig/dataplane/loop.zig",
    search: "const segment_bytes: u32 = if (frame.gso_size != 0 and payload.len > frame.gso_size) frame.gso_size else @intCast(@max(payload.len, 1));",
    replace: "const segment_bytes: u32 = @intCast(@max(payload.len, 1));",
    tests: [{ file: "tests/integration/fidelity.test.ts", filter: "UDP_SEGMENT" }],
  },
  {
    name: "dscp-not-copied",
    breaks: "outputs send with DSCP 0 instead of the input datagram's",
    file: "zig/dataplane/egress.zig",
    search: "if (dscp == abi.dscp_copy) return input_tos;",
    replace: "if (dscp == abi.dscp_copy) return 0;",
    tests: [{ file: "tests/integration/fidelity.test.ts", filter: "two outputs of one rule" }],
  },
  {
    name: "vlan-ignored",
    breaks: "rules match frames of every VLAN (tagged traffic merges into untagged rules)",
    file: "zig/dataplane/loop.zig",
    search: "const vlan_id: u16 = if (frame.vlan_tci) |tci| tci & 0x0fff else packet.vlan_id;",
    replace: "const vlan_id: u16 = 0;",
    tests: [{ file: "tests/integration/fidelity.test.ts", filter: "two VLANs with the same group" }],
  },
  {
    name: "loop-guard-never-drops",
    breaks: "a loop between relays is never cut",
    file: "zig/dataplane/loop_guard.zig",
    search: "return if (entry.returns >= returns_max) .loop else .relay;",
    replace: "return .relay;",
    tests: [{ file: "tests/integration/fidelity.test.ts", filter: "two relays whose outputs" }],
  },
  {
    name: "ssm-joins-any-source",
    breaks: "a rule with a source joins any-source (IGMPv3 EXCLUDE), so SSM networks never deliver",
    file: "zig/dataplane/join.zig",
    search: "key.kind = .source_specific;",
    replace: "key.kind = .any_source;",
    tests: [{ file: "tests/integration/fidelity.test.ts", filter: "joins source-specifically" }],
  },
  {
    name: "restart-skips-backlog",
    breaks: "a replacement worker throws away the ring's backlog instead of relaying it",
    file: "zig/ring.zig",
    search: "        ring.resumeSlot();\n",
    replace: "        ring.resumeSlot();\n        while (ring.peekRun()) |r| ring.release(r);\n",
    tests: [{ file: "tests/integration/workers.test.ts", filter: "SIGKILLed under 10,000 pps" }],
  },
  {
    name: "worker-drains-one-ring",
    breaks: "a worker serving several input interfaces drains only the first one's ring",
    file: "zig/worker.zig",
    search: "            self.active_count += 1;",
    replace: "            self.active_count = 1;",
    tests: [{ file: "tests/integration/workers-shared.test.ts", filter: "3 inputs and 1 worker" }],
  },
  {
    name: "worker-silent-on-malformed-request",
    breaks: "a malformed request is only logged, not answered: the supervisor waits out its 2 s deadline instead of hearing which field is wrong",
    file: "zig/worker.zig",
    search: "            if (problem.request_id) |id| {",
    replace: "            if (@as(?u64, null)) |id| {",
    tests: [{ file: "tests/unit/worker-protocol.test.ts", filter: "malformed request gets an error reply" }],
  },
  {
    name: "worker-fatal-exits-0",
    breaks: "a worker that fails after ready (a ring added at run time whose confinement is not verified) exits 0, which reads as a clean stop",
    file: "zig/worker.zig",
    search: "            return if (w.failed) exit_fatal else 0;",
    replace: "            return 0;",
    tests: [{ file: "tests/unit/worker-protocol.test.ts", filter: "confinement is not verified gets a fatal reply" }],
  },
  {
    name: "handle-forgets-fatal",
    breaks: "the supervisor forgets the fatal message a worker sent after ready: its last_error says only how it exited",
    file: "src/supervisor/worker-handle.ts",
    search: "          handle.#fatal = msg.message;",
    replace: "",
    tests: [{ file: "tests/unit/worker-protocol.test.ts", filter: "reports fatal after ready" }],
  },
  {
    name: "trace-count-no-short-option",
    breaks: "trace and capture do not take -c N (tcpdump's habit): a usage error instead of a count",
    file: "src/cli/trace.ts",
    search: 'count: { type: "string", alias: "c", valueHint: "N",',
    replace: 'count: { type: "string", valueHint: "N",',
    also: [{ file: "src/cli/capture.ts", search: 'count: { type: "string", alias: "c", valueHint: "N",', replace: 'count: { type: "string", valueHint: "N",' }],
    tests: [
      { file: "tests/unit/cli-validation.test.ts", filter: "trace and capture -c/--count" },
      { file: "tests/integration/trace.test.ts", filter: "trace -c 25 and capture -c 25" },
    ],
  },
  {
    name: "trace-count-overshoots",
    breaks: "trace/capture -c N outputs every record of the read that reached N, not exactly N",
    file: "src/cli/trace-session.ts",
    search: "      if (o.count !== undefined && records >= o.count) break;\n",
    replace: "",
    tests: [{ file: "tests/integration/trace.test.ts", filter: "trace -c 25 and capture -c 25" }],
  },
  {
    name: "worker-unnamed",
    breaks: "the worker keeps the name exec gave it (the memfd's descriptor number) in ps -o comm, top and perf",
    file: "zig/worker.zig",
    search: "    setProcessName() catch {};",
    replace: "",
    // Under bun the worker runs as zig-out/bin/mcrelay-worker, named so by exec anyway: only the
    // compiled executable (started from a memfd) shows the difference.
    tests: [{ file: "tests/compiled/binary.test.ts", filter: "named mcrelay-worker" }],
  },
  {
    name: "worker-pong-stale-hash",
    breaks: "the worker answers a ping with the hash of the table it was last given, not of the one it holds, so drift is never seen",
    file: "zig/worker.zig",
    search: "            r.hash = tableHash(&empty_table);",
    replace: "",
    tests: [{ file: "tests/integration/workers.test.ts", filter: "whose table diverges" }],
  },
  {
    name: "no-recycle-for-positions",
    breaks: "a worker with no blank position left is not replaced, so an input recreated 33 times is no longer relayed",
    file: "src/supervisor/worker-pool.ts",
    search: "if (p.live && (p.recycling !== null || p.handle) && p.sockets.includes(null)) {",
    replace: "if (false && p.live && (p.recycling !== null || p.handle) && p.sockets.includes(null)) {",
    tests: [{ file: "tests/integration/workers-shared.test.ts", filter: "recreated 34 times with 2 workers" }],
  },
  {
    name: "no-position-reuse",
    breaks: "a removed interface's socket is closed instead of made blank again, so every 32 removals the worker is replaced and its other interfaces pause",
    file: "src/supervisor/worker-pool.ts",
    search: "    const keep =\n      facts !== undefined &&",
    replace: "    const keep =\n      false &&",
    tests: [{ file: "tests/integration/workers-shared.test.ts", filter: "one worker: the position is reused" }],
  },
  {
    name: "killed-worker-counts-dropped",
    breaks: "a worker that died loses its rule counts instead of adding them to the totals",
    file: "src/supervisor/worker-pool.ts",
    search: "      const final = h.snapshot(e.position);\n      if (final) this.counters.retire(ringKey(e, h), e.ifname, final);",
    replace: "      const final = h.snapshot(e.position);\n      if (final) this.counters.retire(ringKey(e, h), e.ifname, { ...final, rules: [] });",
    tests: [{ file: "tests/integration/workers.test.ts", filter: "SIGKILLed under 10,000 pps" }],
  },
  {
    name: "remove-not-persisted",
    breaks: "`remove` changes the running rules but not the state file",
    file: "src/supervisor/rule-store.ts",
    search: "    try {\n      this.#persist(after);\n    } catch (err) {",
    replace: "    try {\n      void after;\n    } catch (err) {",
    tests: [{ file: "tests/integration/persistence.test.ts", filter: "removed runtime rule stays removed" }],
  },
  {
    name: "config-ids-not-kept",
    breaks: "config-file rules get fresh ids at every start",
    file: "src/supervisor/rule-store.ts",
    search: 'this.#put(spec, "config", saved.configIds.get(spec.name) ?? this.#takeId());',
    replace: 'this.#put(spec, "config", this.#takeId());',
    tests: [
      { file: "tests/integration/persistence.test.ts", filter: "config-file rules keep their ids" },
      { file: "tests/integration/restart.test.ts", filter: "after kill -9 of the supervisor" },
    ],
  },
  {
    name: "unloadable-rule-dropped",
    breaks: "a saved rule that cannot be loaded is dropped from the state file",
    file: "src/supervisor/rule-store.ts",
    search: "this.#unloadable.push({ saved: r, reason: (err as Error).message });",
    replace: "",
    tests: [{ file: "tests/integration/persistence.test.ts", filter: "cannot be loaded" }],
  },
  {
    name: "setgroups-removed",
    breaks: "workers keep the supervisor's supplementary groups",
    file: "zig/privileges.zig",
    search: "        try ids.noGroups();",
    replace: "",
    tests: [{ file: "tests/integration/workers.test.ts", filter: "member of supplementary groups" }],
  },
  {
    name: "forward-ttl-ignored",
    breaks: "forward --ttl (and add --ttl) is ignored (the default TTL is sent)",
    file: "src/cli/rule-flags.ts",
    search: "if (ttl !== undefined) spec.ttl = ttl;",
    replace: "",
    tests: [{ file: "tests/integration/egress.test.ts", filter: "forward --ttl 5" }],
  },
  {
    name: "unicast-if-unset",
    breaks: "a unicast output bound to an interface follows the routing table instead (no IP_UNICAST_IF)",
    file: "zig/net.zig",
    search: "if (ifindex != 0) try sys.setsockoptInt(fd, linux.IPPROTO.IP, linux.IP.UNICAST_IF, @bitCast(std.mem.nativeToBig(u32, ifindex)));",
    replace: "",
    tests: [{ file: "tests/integration/egress.test.ts", filter: "IP_UNICAST_IF" }],
  },
  {
    name: "ipv6-multicast-if-dropped",
    breaks: "an IPv6 multicast output leaves by the route, not its interface (no IPV6_MULTICAST_IF)",
    file: "zig/net.zig",
    search: "if (ifindex != 0) try sys.setsockoptInt(fd, linux.IPPROTO.IPV6, linux.IPV6.MULTICAST_IF, index);",
    replace: "",
    tests: [{ file: "tests/integration/egress.test.ts", filter: "IPV6_MULTICAST_IF" }],
  },
  {
    name: "sd-notify-silent",
    breaks: "READY=1 / RELOADING=1 / STOPPING=1 are never sent to NOTIFY_SOCKET",
    file: "src/supervisor/daemon.ts",
    search: "    sdNotify(message);\n",
    replace: "    void message;\n",
    tests: [{ file: "tests/integration/service.test.ts", filter: "NOTIFY_SOCKET set" }],
  },
  {
    name: "final-log-zero",
    breaks: "the final log line says 0 packets for every rule",
    file: "src/supervisor/daemon.ts",
    search: "${t?.packets ?? 0} packets",
    replace: "0 packets",
    tests: [{ file: "tests/integration/service.test.ts", filter: "final log line" }],
  },
  {
    name: "every-datagram-twice",
    breaks: "every relayed datagram is sent twice",
    file: "zig/dataplane/egress.zig",
    search: "if (self.pending[index] > 0 and self.family[index] == family) self.append(stats, index);",
    replace: "if (self.pending[index] > 0 and self.family[index] == family) {\n                    self.append(stats, index);\n                    self.append(stats, index);\n                }",
    tests: [
      { file: "tests/integration/netlink.test.ts", filter: "missing input interface is pending" },
      { file: "tests/integration/reload.test.ts", filter: "SIGHUP reloads the file" },
      { file: "tests/integration/egress.test.ts", filter: "forward --ttl 5" },
    ],
  },
  {
    name: "fanout-send-per-output",
    breaks: "the egress makes one sendmmsg per output instead of one for all outputs of a flush",
    file: "zig/dataplane/egress.zig",
    search: "if (self.pending[index] > 0 and self.family[index] == family) self.append(stats, index);",
    replace: "if (self.pending[index] > 0 and self.family[index] == family) {\n                    self.append(stats, index);\n                    self.sendAll(stats, family);\n                }",
    tests: [{ file: "tests/integration/forward.test.ts", filter: "1:16 fan-out" }],
  },
  {
    name: "lone-output-no-own-socket",
    breaks: "a rule's only output never gets its own connected socket (1:1 sends on the family socket, ICMP errors unseen)",
    file: "zig/dataplane/egress.zig",
    search: "} else if (self.sole.isSet(i) and self.own_fds[i] == no_fd and own_count < own_sockets_max) {",
    replace: "} else if (false and self.sole.isSet(i) and self.own_fds[i] == no_fd and own_count < own_sockets_max) {",
    tests: [{ file: "tests/integration/egress.test.ts", filter: "ICMP port unreachable" }],
  },
  {
    name: "ingress-filter-missing",
    breaks: "no BPF filter on the packet socket: every frame reaches the ring",
    file: "zig/ring.zig",
    search: "try filter.attach(fd, filter.ingress());",
    replace: "",
    tests: [{ file: "tests/integration/ingress.test.ts", filter: "never reach the ring" }],
  },
  // --- Issue 11: hardening -----------------------------------------------------------------
  {
    name: "control-no-client-cap",
    breaks: "the control server accepts any number of connections",
    file: "src/control/server.ts",
    search: "    if (this.#conns.size >= limit) {",
    replace: "    if (false) {",
    tests: [{ file: "tests/unit/control-server.test.ts", filter: "over the cap get one `busy` line" }],
  },
  {
    name: "change-without-admin-right",
    breaks: "a member of the socket group may add, remove and reload",
    file: "src/control/server.ts",
    search: "      if (peer && peer.rights !== \"admin\") {",
    replace: "      if (false) {",
    tests: [{ file: "tests/integration/access.test.ts", filter: "socket-group member reads" }],
  },
  {
    name: "add-over-capacity",
    breaks: "`add` accepts a rule its worker's table cannot hold",
    file: "src/supervisor/rule-store.ts",
    search: "    if (over.length) {\n      undo();",
    replace: "    if (false) {\n      undo();",
    tests: [{ file: "tests/integration/limits.test.ts", filter: "1,024 rules on r0" }],
  },
  {
    name: "refused-table-kills-worker",
    breaks: "a worker that refuses a table is killed (every rule of the interface stops)",
    file: "src/supervisor/worker-pool.ts",
    search: "      if (!(err instanceof WorkerRefusedError)) throw err;",
    replace: "      throw err;",
    tests: [{ file: "tests/integration/limits.test.ts", filter: "defense in depth" }],
  },
  {
    name: "startup-waits-for-failing-workers",
    breaks: "start-up (READY=1) waits 10 s for a worker that cannot start instead of ending at its first failure",
    file: "src/supervisor/daemon.ts",
    search: "{ failedIsSettled: true }",
    replace: "{ failedIsSettled: false }",
    tests: [{ file: "tests/integration/service.test.ts", filter: "M5: a daemon whose worker cannot start" }],
  },
  {
    name: "worker-seccomp-allows-execve",
    breaks: "one seccomp rule dropped (execve allowed): the worker's confinement probe sees ENOENT, not EPERM, and the worker refuses to run",
    file: "zig/seccomp.zig",
    search: '    "execve",          "execveat",',
    replace: '    "execveat",',
    tests: [{ file: "tests/integration/workers.test.ts", filter: "every thread runs as nobody" }],
  },
  {
    name: "worker-seccomp-missing",
    breaks: "workers run without their seccomp filter",
    file: "zig/privileges.zig",
    search: "    try seccomp.install(fd_first, fd_count);",
    replace: "    _ = .{ fd_first, fd_count };",
    tests: [{ file: "tests/integration/workers.test.ts", filter: "every thread runs as nobody" }],
  },
  // --- Behaviours the suite already caught --------------------------------------------------
  {
    name: "loop-guard-missing",
    breaks: "the host's own transmissions reach the ring (no PACKET_IGNORE_OUTGOING, no pkttype check in the filter)",
    file: "zig/filter.zig",
    search: "jump(BPF_JMP | BPF_JGE | BPF_K, packet_outgoing, at_outgoing, at_reject, at_ethertype),",
    replace: "jump(BPF_JMP | BPF_JGE | BPF_K, packet_outgoing, at_outgoing, at_ethertype, at_ethertype),",
    also: [{ file: "zig/ring.zig", search: "sys.setsockoptInt(fd, linux.SOL.PACKET, linux.PACKET.IGNORE_OUTGOING, 1) catch", replace: "sys.setsockoptInt(fd, linux.SOL.PACKET, linux.PACKET.IGNORE_OUTGOING, 0) catch" }],
    tests: [{ file: "tests/integration/forward.test.ts", filter: "opposite directions between the same interfaces do not loop" }],
  },
  {
    name: "group-not-rewritten",
    breaks: "outputs are sent to the input group instead of the rule's output group",
    file: "src/rules/rule.ts",
    search: "addr: out.to.addr.text, port: out.to.port,",
    replace: "addr: rule.input.addr.text, port: out.to.port,",
    tests: [{ file: "tests/integration/forward.test.ts", filter: "group and port rewritten" }],
  },
  {
    name: "port-not-rewritten",
    breaks: "outputs are sent to the input port instead of the rule's output port",
    file: "src/rules/rule.ts",
    search: "port: out.to.port, ttl: out.ttl,",
    replace: "port: rule.input.port, ttl: out.ttl,",
    tests: [{ file: "tests/integration/forward.test.ts", filter: "group and port rewritten" }],
  },
  {
    name: "default-ttl-changed",
    breaks: "the default TTL of relayed packets is not the documented 8",
    file: "src/limits.ts",
    search: "export const DEFAULT_TTL = 8;",
    replace: "export const DEFAULT_TTL = 16;",
    tests: [{ file: "tests/integration/egress.test.ts", filter: "forward --ttl 5" }],
  },
  {
    name: "fanout-missing",
    breaks: "several workers on one interface do not share a fanout group (each gets every packet)",
    file: "zig/ring.zig",
    search: "if (fanout_id != 0) try fanout.join(fd, fanout_id);",
    replace: "_ = fanout_id;",
    tests: [{ file: "tests/integration/workers.test.ts", filter: "2 workers carry 20 streams" }],
  },
  {
    name: "worker-restart-unscheduled",
    breaks: "a worker that exits is not scheduled for restart by its exit (the control tick still restarts it, without its backoff and failure count)",
    file: "src/supervisor/worker-pool.ts",
    search: "else log.warn(line);\n    this.#scheduleRestart(p);",
    replace: "else log.warn(line);",
    tests: [{ file: "tests/integration/workers.test.ts", filter: "SIGKILLed under 10,000 pps" }],
  },
  {
    name: "pool-drops-worker-reason",
    breaks: "a ready worker that reports fatal and exits is logged and recorded as a bare exit (`exited (code 1)`), its own reason lost",
    file: "src/supervisor/worker-pool.ts",
    search: "const own = handle.fatal === null ? null : handle.exitReason;",
    replace: "const own = null;",
    tests: [{ file: "tests/integration/worker-fatal.test.ts", filter: "fails its confinement check" }],
  },
  {
    name: "backoff-flat",
    breaks: "restart backoff does not escalate for a crash-looping worker",
    file: "src/supervisor/worker-pool.ts",
    search: "p.backoffMs = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (p.failures - 1));",
    replace: "p.backoffMs = BACKOFF_MIN_MS;",
    tests: [{ file: "tests/integration/workers.test.ts", filter: "crash-looping worker is restarted" }],
  },
  {
    name: "drift-not-repaired",
    breaks: "a worker holding the wrong table is not resynced",
    file: "src/supervisor/worker-pool.ts",
    search: "if (e.appliedHash !== null && pong.hash !== e.appliedHash) {",
    replace: "if (false) {",
    tests: [{ file: "tests/integration/workers.test.ts", filter: "table diverges" }],
  },
  {
    name: "same-interface-accepted",
    breaks: "a rule whose output uses its input interface is accepted",
    file: "src/rules/rule.ts",
    search: "if (rule.input && out.to.iface && out.to.iface === rule.input.iface) {",
    replace: "if (false) {",
    tests: [{ file: "tests/unit/cli-validation.test.ts", filter: "same interface for input and output" }],
  },
  {
    name: "bad-checksum-relayed",
    breaks: "IPv4 frames with a wrong header checksum are relayed instead of counted",
    file: "zig/dataplane/parse.zig",
    search: "if (ipv4Checksum(ip[0..header_bytes]) != 0) return .{ .drop = .ipv4_bad_checksum };",
    replace: "",
    tests: [{ file: "tests/integration/forward.test.ts", filter: "fragments and malformed frames" }],
  },
  {
    name: "missing-input-not-pending",
    breaks: "a rule whose input interface does not exist is not reported pending",
    file: "src/rules/rule.ts",
    search: "if (!input) pending.push(`input interface ${rule.input.iface} does not exist`);\n  else if",
    replace: "if (!input) {\n  } else if",
    tests: [{ file: "tests/integration/netlink.test.ts", filter: "missing input interface is pending" }],
  },
  {
    name: "state-file-in-place",
    breaks: "the state file is written in place instead of through a temporary file and rename",
    file: "src/supervisor/state-file.ts",
    search: "const tmp = `${this.path}.tmp-${process.pid}`;",
    replace: "const tmp = this.path;",
    tests: [{ file: "tests/unit/state-file.test.ts", filter: "replaces the file as a whole" }],
  },
  // --- Observability (issue 14) ------------------------------------------------------------
  {
    name: "trace-unmatched-not-recorded",
    breaks: "frames for the traced group that match no rule (a wrong port) are not traced",
    file: "zig/dataplane/loop.zig",
    search: "if (traced) self.trace.?.unmatched(frame.data, frame.wire_len, frame.vlan_tci, &packet, .no_match);",
    replace: "{}",
    tests: [{ file: "tests/integration/trace.test.ts", filter: "wrong-port packets with their verdict" }],
  },
  {
    name: "metrics-output-packets-wrong",
    breaks: "/metrics reports an output's bytes as its packets",
    file: "src/supervisor/metrics.ts",
    search: 'w.sample("mcrelay_output_packets_total", { rule: r.name, output: o.to }, o.packets)',
    replace: 'w.sample("mcrelay_output_packets_total", { rule: r.name, output: o.to }, o.bytes)',
    tests: [{ file: "tests/integration/metrics.test.ts", filter: "counters equal stats --json" }],
  },
  // --- Deployment (issue 12) ---------------------------------------------------------------
  {
    name: "journald-priority-missing",
    breaks: "under systemd (JOURNAL_STREAM naming stderr) log lines lose their <N> priority prefix",
    file: "src/log.ts",
    search: "return want === `${st.dev}:${st.ino}`;",
    replace: "return false;",
    tests: [{ file: "tests/integration/journald.test.ts", filter: "gets <3> on each line" }],
  },
  {
    name: "ring-mib-ignored",
    breaks: "an interface's ring_mib is ignored: every packet socket gets the 8 MiB default",
    file: "src/supervisor/worker-pool.ts",
    search: "ringBytes: (ringMib ?? 0) * MIB,",
    replace: "ringBytes: 0,",
    tests: [{ file: "tests/integration/workers.test.ts", filter: "SIGKILLed under 10,000 pps" }],
  },
  {
    name: "musl-target-glibc-runtime",
    breaks: "--target linux-x64-musl embeds Bun's glibc runtime: an executable a musl system cannot start",
    file: "scripts/build.ts",
    search: `"linux-x64-musl": { zig: "x86_64-linux-musl", bun: "bun-linux-x64-musl" },`,
    replace: `"linux-x64-musl": { zig: "x86_64-linux-musl", bun: "bun-linux-x64" },`,
    tests: [{ file: "tests/compiled/musl.test.ts", filter: "whose interpreter is|the sink maps musl" }],
  },
  // --- Architecture (issue 9) --------------------------------------------------------------
  {
    name: "table-too-big-for-channel",
    breaks: "a worker's socketpair keeps the default send buffer: a full rule table no longer fits one message",
    file: "zig/scm.zig",
    search: "    for (fds) |fd| try sys.setsockoptInt(fd, linux.SOL.SOCKET, linux.SO.SNDBUF, @intCast(constants.scm_sndbuf_bytes));\n",
    replace: "",
    tests: [{ file: "tests/unit/wire.test.ts", filter: "at the dataplane's limits crosses the socketpair" }],
  },
  {
    name: "abi-check-ignores-moved-fields",
    breaks: "the load-time ABI check accepts a library whose fields or counters moved (compares only presence)",
    file: "src/native/abi.ts",
    search: "else if (got !== want) out.push(`${key}: library ${got}; mirror ${want}`);",
    replace: "else if (got === undefined && want === undefined) out.push(key);",
    tests: [
      { file: "tests/unit/abi-mirror.test.ts", filter: "swapped in the library are both named" },
      { file: "tests/unit/abi-mirror.test.ts", filter: "the load check refuses the old mirror" },
    ],
  },
  // --- IPv6 input (issue 16) ---------------------------------------------------------------
  {
    name: "ipv6-extension-headers-not-walked",
    breaks: "an IPv6 packet with hop-by-hop or destination options before UDP is dropped instead of relayed",
    file: "zig/dataplane/parse_ipv6.zig",
    search: "next_hop_by_hop, next_destination_options, next_routing => {},",
    replace: "next_hop_by_hop, next_destination_options, next_routing => return .{ .drop = .ipv6_bad_extension },",
    tests: [{ file: "tests/integration/ipv6.test.ts", filter: "hop-by-hop \\+ destination options before UDP are relayed" }],
  },
  {
    name: "ipv6-fragment-not-dropped",
    breaks: "an IPv6 fragment header is walked like any extension header (the first fragment is relayed)",
    file: "zig/dataplane/parse_ipv6.zig",
    search: "next_fragment => return .{ .drop = .ipv6_fragment },",
    replace: "next_fragment => {},",
    tests: [{ file: "tests/integration/ipv6.test.ts", filter: "fragments, jumbograms and malformed chains are counted" }],
  },
  {
    name: "mld-join-any-source-only",
    breaks: "a rule with an IPv6 source joins any-source (MLDv2 EXCLUDE {}) instead of INCLUDE {source}",
    file: "zig/dataplane/join6.zig",
    search: "return if (rule.flags & abi.rule_flag_source_filter != 0) rule.source else null;",
    replace: "_ = rule;\n    return null;",
    tests: [{ file: "tests/integration/ipv6.test.ts", filter: "MLDv2 reports on the input link" }],
  },
  {
    name: "ipv6-worker-split-differs-from-fanout",
    breaks: "the supervisor assigns IPv6 rules to workers with another hash than the kernel's fanout program",
    file: "src/rules/flow-hash.ts",
    search: "return flowHash(fold >>> 0, 0);",
    replace: "return flowHash(fold >>> 0, 1);",
    tests: [{ file: "tests/integration/ipv6.test.ts", filter: "2 workers on the input interface carry 8 IPv6 groups" }],
  },
  // --- Issue 15: command line, config and output -------------------------------------------
  {
    name: "control-answer-schema-unchecked",
    breaks: "the control server sends an answer its command's schema does not describe",
    file: "src/control/server.ts",
    search: "const problems = schemaProblems(RESULT_SCHEMAS[req.cmd], result);",
    replace: "const problems: string[] = [];",
    tests: [{ file: "tests/unit/control-server.test.ts", filter: "does not fit its command's schema" }],
  },
  {
    name: "config-problem-without-place",
    breaks: "config problems lose their line and column",
    file: "src/config/file.ts",
    search: "const at = positionOf(this.doc, path, o.key);",
    replace: "const at = null as { line: number; column: number } | null;",
    tests: [{ file: "tests/unit/config-positions.test.ts", filter: "each at its own line and column" }],
  },
  {
    name: "verb-prefix-not-accepted",
    breaks: "an unambiguous prefix of a verb (li = list) is refused",
    file: "src/cli/verbs.ts",
    search: "if (word.length > 0 && matches.size === 1) return [...matches.values()][0]!.entry;",
    replace: "if (word.length > 0 && matches.size === 1 && word.length < 0) return [...matches.values()][0]!.entry;",
    tests: [{ file: "tests/unit/cli-habits.test.ts", filter: "an unambiguous prefix names its verb" }],
  },
  {
    name: "sink-expect-shortfall-exits-0",
    breaks: "sink --expect N exits 0 when fewer than N packets arrived",
    file: "src/cli/sink.ts",
    search: "process.exitCode = EXIT.shortfall;",
    replace: "process.exitCode = EXIT.ok;",
    tests: [{ file: "tests/integration/cli-output.test.ts", filter: "sink --expect N exits 9" }],
  },
  {
    name: "config-duplicate-key-accepted",
    breaks: "a key given twice in a config object is kept silently (JSON5 keeps the last: a second 'rules: []' drops every rule)",
    file: "src/config/json5.ts",
    search: "if (first) duplicates.push({ path: child, at: keyAt, first });",
    replace: "if (first && false) duplicates.push({ path: child, at: keyAt, first });",
    tests: [{ file: "tests/unit/config-positions.test.ts", filter: "a key given twice in one object" }],
  },
  {
    name: "empty-option-value-accepted",
    breaks: "an empty option value (run --config=) falls back to the default instead of being refused",
    file: "src/cli/args.ts",
    search: "} else if (takesValue(d) && inline === \"\") throw emptyValue(`--${name}`);",
    replace: "}",
    tests: [{ file: "tests/unit/cli-validation.test.ts", filter: "an empty option value is refused" }],
  },
  {
    name: "bench-steal-repeat-lossless",
    breaks: "the benchmark repeats a trial for steal even when it lost nothing (a clean trial would be re-run until it loses)",
    file: "scripts/bench/steal.ts",
    search: "return t.lost > 0 && t.lost <= stealExplains",
    replace: "return t.lost >= 0 && t.lost <= stealExplains",
    tests: [{ file: "tests/unit/bench-steal.test.ts", filter: "a trial without loss is never repeated" }],
  },
  {
    name: "bench-latency-steal-kept",
    breaks: "a latency trial under steal that lost nothing is kept: its p99 is the hypervisor's stall, not the relay's",
    file: "scripts/bench/steal.ts",
    search: "if (latencyCounts(t.purpose)) return true;",
    replace: "if (latencyCounts(t.purpose)) return t.lost > 0;",
    tests: [{ file: "tests/unit/bench-steal.test.ts", filter: "a latency trial" }],
  },
  {
    name: "bench-fixed-step-down",
    breaks: "the NDR search steps down 3 % from a lossy full-length trial whatever it delivered (long trials far above the capacity use up every retry)",
    file: "scripts/bench/bisect.ts",
    search: "return Math.min(rate, o.deliveredPps) * (1 - Math.max(this.p.precision, 0.03));",
    replace: "return rate * (1 - Math.max(this.p.precision, 0.03));",
    tests: [{ file: "tests/unit/bench-bisect.test.ts", filter: "a contender whose long trials carry 25 % less than its short ones still gets a confirmed NDR" }],
  },
  {
    name: "sink-gro-buffer-one-datagram",
    breaks: "`mcrelay sink --gro` counts a GRO buffer of several datagrams as one datagram instead of splitting it at its gso_size",
    file: "zig/tools/sink.zig",
    search: "const gso_size = if (self.gro) control.gso_size else 0;",
    replace: "const gso_size: u32 = 0;",
    tests: [{ file: "tests/integration/sink-gro.test.ts", filter: "the --gro sink receives them as GRO buffers" }],
  },
  {
    name: "sink-socket-drops-unseen",
    breaks: "`mcrelay sink` never reports the datagrams its own socket dropped, so its own loss reads as the relay's",
    file: "zig/tools/sink.zig",
    search: "total.* = @max(total.*, drops);",
    replace: "total.* = @max(total.*, 0 * drops);",
    tests: [{ file: "tests/integration/sink-accounting.test.ts", filter: "reports the loss as socket_drops" }],
  },
  {
    name: "sink-restart-not-a-run",
    breaks: "`mcrelay sink` takes a restarted generator's datagrams (seq back to 0) as late ones of the old run",
    file: "zig/tools/sink.zig",
    search: "return seq < s[@intFromEnum(StreamCounter.max_seq)] and sent_ns > s[@intFromEnum(StreamCounter.max_sent_ns)];",
    replace: "return seq < s[@intFromEnum(StreamCounter.max_seq)] and sent_ns > s[@intFromEnum(StreamCounter.max_sent_ns)] and false;",
    tests: [{ file: "tests/integration/sink-accounting.test.ts", filter: "a restarted generator is a new run" }],
  },
  {
    name: "gen-stall-burst",
    breaks: "`mcrelay gen` continued after a stall sends the whole backlog back to back",
    file: "zig/tools/gen.zig",
    search: "if (now_ns <= due_ns or now_ns - due_ns <= slip_ns) return;",
    replace: "if (now_ns <= due_ns or now_ns - due_ns <= slip_ns or true) return;",
    tests: [{ file: "tests/integration/sink-accounting.test.ts", filter: "skips the backlog when continued" }],
  },
  {
    name: "ring-super-frame-cut",
    breaks: "a frame larger than a ring slot (a UDP GSO super-frame from another relay) is relayed from its cut slot instead of whole from the socket's queue (TP_STATUS_COPY ignored)",
    file: "zig/ring.zig",
    search: "const whole = if (hdr.status & TP_STATUS_COPY != 0) ring.wholeFrame(hdr.len) else null;",
    replace: "const whole = if (hdr.status & TP_STATUS_COPY > TP_STATUS_COPY) ring.wholeFrame(hdr.len) else null;",
    tests: [{ file: "tests/integration/fidelity.test.ts", filter: "a super-frame larger than a ring slot arrives whole" }],
  },
  {
    name: "bench-sinks-without-gro",
    breaks: "the benchmark's sinks run without --gro, so the receivers' segmentation of GSO batches is charged to the relay again",
    file: "scripts/bench/sink-mode.ts",
    search: "export const SINK_GRO = true;",
    replace: "export const SINK_GRO = false;",
    tests: [{ file: "tests/unit/bench-sink-mode.test.ts", filter: "the harness's sinks enable GRO" }],
  },
  {
    name: "cli-words-after-dashdash-dropped",
    breaks: "words after `--` are dropped unread, so `mcrelay status -- extra` runs as if they were not there",
    file: "src/cli/args.ts",
    search: "for (const value of rawArgs.slice(i + 1)) tokens.push({ kind: \"positional\", value, afterDashDash: true });",
    replace: "for (const value of rawArgs.slice(i + 1)) void value;",
    tests: [{ file: "tests/unit/cli-habits.test.ts", filter: "every verb refuses words after --" }],
  },
  {
    name: "cli-group-value-not-rest",
    breaks: "a value-taking letter inside a group no longer takes the rest of the group (-wjn1 is not -w -j -n 1)",
    file: "src/cli/args.ts",
    search: "if (next < letters.length) {",
    replace: "if (next < letters.length && false) {",
    tests: [{ file: "tests/unit/cli-habits.test.ts", filter: "a group is read as getopt reads it" }],
  },
  {
    name: "cli-citty-reads-raw-words",
    breaks: "citty reads the words as typed, not as checked: a value starting with --no- is dropped (run --config --no-watch-config runs with no config), --no-X wins whatever the order",
    file: "src/cli/args.ts",
    search: "  return argv;",
    replace: "  return [...rawArgs];",
    tests: [{ file: "tests/unit/cli-habits.test.ts", filter: "citty is handed the reading that was checked" }],
  },
];

// ---------------------------------------------------------------------------------------
// Static checks (cheap: run by the unit tests)

function occurrences(text: string, search: string): number {
  let n = 0;
  for (let i = text.indexOf(search); i >= 0; i = text.indexOf(search, i + 1)) n++;
  return n;
}

/** Problems with the list itself, against the tree at `dir`: every breakage applies, every named test exists. */
export function checkMutants(dir = root, mutants = MUTANTS): string[] {
  const problems: string[] = [];
  const names = new Set<string>();
  for (const m of mutants) {
    if (names.has(m.name)) problems.push(`${m.name}: the name is used twice`);
    names.add(m.name);
    if (!/^[a-z0-9-]+$/.test(m.name)) problems.push(`${m.name}: names are lower-case words joined by -`);
    for (const e of editsOf(m)) {
      const path = join(dir, e.file);
      if (!existsSync(path)) {
        problems.push(`${m.name}: ${e.file} does not exist (moved? update the mutant)`);
      } else {
        const n = occurrences(readFileSync(path, "utf8"), e.search);
        if (n !== 1) problems.push(`${m.name}: the search text occurs ${n} times in ${e.file}, expected once: ${JSON.stringify(e.search)}`);
      }
      if (e.search === e.replace) problems.push(`${m.name}: the replacement changes nothing`);
    }
    if (m.tests.length === 0) problems.push(`${m.name}: names no test`);
    for (const t of m.tests) {
      const tpath = join(dir, t.file);
      if (!existsSync(tpath)) {
        problems.push(`${m.name}: test file ${t.file} does not exist`);
        continue;
      }
      if (t.filter !== undefined && !testTitles(readFileSync(tpath, "utf8")).some((title) => new RegExp(t.filter!).test(title))) {
        problems.push(`${m.name}: no test in ${t.file} is named like /${t.filter}/`);
      }
    }
  }
  return problems;
}

/** The string literals that open a test(...) call (the test names), as written in the file. */
function testTitles(source: string): string[] {
  const titles: string[] = [];
  // test("..."), test.each(...)("..."), test.skipIf(cond)("...") and test.if(cond)("...").
  for (const m of source.matchAll(/\btest(?:\.(?:each|skipIf|if)\([^)]*\))?\(\s*(["'`])((?:\\.|(?!\1)[^\\])*)\1/g)) titles.push(m[2]!);
  return titles;
}

// ---------------------------------------------------------------------------------------
// Selection

/** The CI subset: `count` mutants, a different slice every day, cycling through the list. */
export function ciSelection(date = new Date(), count = 2, mutants = MUTANTS): Mutant[] {
  const day = Math.floor(date.getTime() / 86_400_000);
  const start = (day * count) % mutants.length;
  return Array.from({ length: Math.min(count, mutants.length) }, (_, i) => mutants[(start + i) % mutants.length]!);
}

// ---------------------------------------------------------------------------------------
// The scratch worktree

const WORKTREE_PREFIX = "mcr-mutants-";

function git(args: string[], cwd = root, input?: Uint8Array): { ok: boolean; stdout: Uint8Array; stderr: string } {
  const r = Bun.spawnSync({ cmd: ["git", ...args], cwd, stdin: input ?? "ignore", stdout: "pipe", stderr: "pipe" });
  return { ok: r.exitCode === 0, stdout: r.stdout, stderr: r.stderr.toString() };
}

function gitOk(args: string[], cwd = root, input?: Uint8Array): Uint8Array {
  const r = git(args, cwd, input);
  if (!r.ok) throw new Error(`git ${args.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes worktrees left by a run that was SIGKILLed (their creator pid is gone). */
function sweepStaleWorktrees(): void {
  for (const name of readdirSync(tmpdir())) {
    const m = new RegExp(`^${WORKTREE_PREFIX}(\\d+)-`).exec(name);
    if (!m || pidAlive(Number(m[1]))) continue;
    const path = join(tmpdir(), name);
    git(["worktree", "remove", "--force", path]);
    rmSync(path, { recursive: true, force: true });
  }
  git(["worktree", "prune"]);
}

class Scratch {
  readonly path: string;
  readonly #pristine = new Map<string, string>();
  #removed = false;

  private constructor(path: string) {
    this.path = path;
  }

  /** A detached worktree of HEAD with the uncommitted changes (tracked and untracked) copied in. */
  static create(): Scratch {
    installCleanup();
    sweepStaleWorktrees();
    const path = join(tmpdir(), `${WORKTREE_PREFIX}${process.pid}-${Date.now().toString(36)}`);
    const s = new Scratch(path);
    live = s;
    gitOk(["worktree", "add", "--detach", "--quiet", path, "HEAD"]);
    const diff = gitOk(["diff", "HEAD", "--binary"]);
    if (diff.length > 0) gitOk(["apply", "--whitespace=nowarn", "-"], path, diff);
    const linked = ["node_modules", ".toolchain"];
    const untracked = gitOk(["ls-files", "--others", "--exclude-standard", "-z"])
      .toString()
      .split("\0")
      .filter((f) => f.length > 0 && !linked.some((l) => f === l || f.startsWith(`${l}/`)));
    for (const f of untracked) {
      mkdirSync(dirname(join(path, f)), { recursive: true });
      cpSync(join(root, f), join(path, f));
    }
    for (const link of linked) {
      if (existsSync(join(root, link))) Bun.spawnSync({ cmd: ["ln", "-s", join(root, link), join(path, link)] });
    }
    return s;
  }

  apply(m: Mutant): void {
    for (const e of editsOf(m)) {
      const path = join(this.path, e.file);
      const text = readFileSync(path, "utf8");
      if (occurrences(text, e.search) !== 1) throw new Error(`the search text does not occur exactly once in ${e.file}`);
      if (!this.#pristine.has(e.file)) this.#pristine.set(e.file, text);
      writeFileSync(path, text.replace(e.search, () => e.replace));
    }
  }

  /** Keeps a copy of the freshly built, unmutated zig-out/ to put back after a .zig mutant. */
  saveLib(): void {
    rmSync(join(this.path, ".zig-out.pristine"), { recursive: true, force: true });
    cpSync(join(this.path, "zig-out"), join(this.path, ".zig-out.pristine"), { recursive: true });
  }

  restoreLib(): void {
    rmSync(join(this.path, "zig-out"), { recursive: true, force: true });
    cpSync(join(this.path, ".zig-out.pristine"), join(this.path, "zig-out"), { recursive: true });
  }

  restore(): void {
    for (const [file, text] of this.#pristine) writeFileSync(join(this.path, file), text);
    this.#pristine.clear();
  }

  remove(): void {
    if (this.#removed) return;
    this.#removed = true;
    git(["worktree", "remove", "--force", this.path]);
    rmSync(this.path, { recursive: true, force: true });
    git(["worktree", "prune"]);
    if (live === this) live = null;
  }
}

let live: Scratch | null = null;
let hooked = false;

/** Removes the worktree on exit, SIGINT and SIGTERM (installed when the first one is made). */
function installCleanup(): void {
  if (hooked) return;
  hooked = true;
  const cleanupAndExit = (code: number) => {
    live?.remove();
    process.exit(code);
  };
  process.on("SIGINT", () => cleanupAndExit(130));
  process.on("SIGTERM", () => cleanupAndExit(143));
  process.on("SIGHUP", () => cleanupAndExit(129));
  process.on("exit", () => live?.remove());
}

// ---------------------------------------------------------------------------------------
// Building and running

const ZIG_CACHE = join(tmpdir(), "mcr-mutants-zig-cache");

function zigBin(): string {
  const local = join(root, ".toolchain/bin/zig");
  return existsSync(local) ? local : (Bun.which("zig") ?? "zig");
}

/** Builds zig-out/lib in `dir` (the shipped optimisation, ReleaseSafe). Null when it built; else the compiler's complaint. */
async function buildLib(dir: string): Promise<string | null> {
  const p = Bun.spawn({ cmd: [zigBin(), "build", "-Doptimize=safe", "--cache-dir", ZIG_CACHE], cwd: dir, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return code === 0 ? null : `${out}${err}`.trim().split("\n").slice(-15).join("\n");
}

/** `bun scripts/build.ts` in `dir`: the native library and dist/mcrelay. Null when it built. */
async function buildAll(dir: string): Promise<string | null> {
  const p = Bun.spawn({ cmd: [bun, "scripts/build.ts"], cwd: dir, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return code === 0 ? null : `${out}${err}`.trim().split("\n").slice(-15).join("\n");
}

const ansi_re = /\x1b\[[0-9;?]*[A-Za-z]/g;

interface TargetResult {
  target: TestTarget;
  /** "failed": the breakage was caught; "passed": it was not; "none": no test matched; "error": no summary. */
  outcome: "failed" | "passed" | "none" | "error";
  passed: number;
  failed: number;
  /** Names of the failing tests. */
  failing: string[];
  /** The first assertion or error message, so a reader can tell it failed for the right reason. */
  why: string;
  seconds: number;
}

const TARGET_TIMEOUT_MS = 15 * 60_000;

async function runTarget(dir: string, t: TestTarget): Promise<TargetResult> {
  const started = performance.now();
  const cmd = [bun, "test", t.file, ...(t.filter === undefined ? [] : ["-t", t.filter])];
  const p = Bun.spawn({ cmd, cwd: dir, stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" }, timeout: TARGET_TIMEOUT_MS, killSignal: "SIGKILL" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const text = `${out}\n${err}`.replace(ansi_re, "");
  const count = (kind: string) => Number(new RegExp(`^\\s*(\\d+) ${kind}\\s*$`, "m").exec(text)?.[1] ?? 0);
  const passed = count("pass");
  const failed = Math.max(count("fail"), count("error"));
  const failing = [...text.matchAll(/^\(fail\) (.*?)(?: \[[\d.]+m?s\])?$/gm)].map((m) => m[1]!);
  const summarised = /^Ran \d+ tests? across/m.test(text);
  const lines = text.split("\n");
  const at = lines.findIndex((l) => /^error: /.test(l));
  // The error line, then what the assertion expected and got: "Expected"/"Received" lines, or a
  // diff's "-" lines with the "+" lines right after them (the others are only extra fields).
  const picked: string[] = [];
  let in_change = false;
  for (const l of at < 0 ? [] : lines.slice(at, at + 80)) {
    const keep = picked.length === 0 || /^(Expected|Received)\b/.test(l) || /^\s*- /.test(l) || (in_change && /^\s*\+ /.test(l));
    in_change = /^\s*[-] /.test(l) || (in_change && /^\s*\+ /.test(l));
    if (keep) picked.push(l.trim());
    if (/^\s+at /.test(l)) break;
  }
  const why = picked.slice(0, 8).join(" / ").slice(0, 500);
  let outcome: TargetResult["outcome"];
  if (failed > 0) outcome = "failed";
  else if (passed > 0) outcome = "passed";
  else if (summarised || /0 pass/.test(text)) outcome = "none";
  else outcome = "error";
  return { target: t, outcome, passed, failed, failing, why, seconds: (performance.now() - started) / 1000 };
}

export interface MutantResult {
  name: string;
  file: string;
  breaks: string;
  status: "caught" | "survived" | "invalid";
  detail: string;
  targets: TargetResult[];
  seconds: number;
}

function describeTarget(t: TestTarget): string {
  return t.filter === undefined ? t.file : `${t.file} -t /${t.filter}/`;
}

async function runMutant(s: Scratch, m: Mutant, log: (line: string) => void, baseline: boolean): Promise<MutantResult> {
  const started = performance.now();
  const base = { name: m.name, file: m.file, breaks: m.breaks };
  const zig = editsOf(m).some((e) => e.file.endsWith(".zig"));
  if (baseline) {
    // The same tests without the breakage must pass, or a failure would prove nothing.
    for (const t of m.tests) {
      log(`  ${m.name}: baseline: bun test ${describeTarget(t)}`);
      const r = await runTarget(s.path, t);
      if (r.outcome !== "passed") {
        return { ...base, status: "invalid", detail: `without the breakage ${describeTarget(t)} ${r.outcome === "failed" ? `fails already: ${r.why}` : `ran no test (${r.outcome})`}`, targets: [r], seconds: (performance.now() - started) / 1000 };
      }
    }
  }
  try {
    s.apply(m);
  } catch (err) {
    return { ...base, status: "invalid", detail: (err as Error).message, targets: [], seconds: 0 };
  }
  // Tests of the compiled executable need dist/mcrelay built from the mutated tree.
  const dist = m.tests.some((t) => t.file.startsWith("tests/compiled/"));
  try {
    if (zig || dist) {
      log(`  ${m.name}: rebuilding ${dist ? "the native library and dist/mcrelay" : "the native library"}`);
      const failed = dist ? await buildAll(s.path) : await buildLib(s.path);
      if (failed !== null) return { ...base, status: "invalid", detail: `the mutant does not build:\n${failed}`, targets: [], seconds: (performance.now() - started) / 1000 };
    }
    const targets: TargetResult[] = [];
    for (const t of m.tests) {
      log(`  ${m.name}: bun test ${describeTarget(t)}`);
      const r = await runTarget(s.path, t);
      log(`  ${m.name}: ${describeTarget(t)}: ${r.outcome === "failed" ? `caught (${r.failed} failed)` : r.outcome} in ${r.seconds.toFixed(0)} s`);
      targets.push(r);
    }
    const seconds = (performance.now() - started) / 1000;
    const none = targets.filter((r) => r.outcome === "none" || r.outcome === "error");
    if (none.length > 0) return { ...base, status: "invalid", detail: `no test ran: ${none.map((r) => `${describeTarget(r.target)} (${r.outcome})`).join(", ")}`, targets, seconds };
    const passing = targets.filter((r) => r.outcome === "passed");
    if (passing.length > 0) return { ...base, status: "survived", detail: `passed anyway: ${passing.map((r) => describeTarget(r.target)).join(", ")}`, targets, seconds };
    return { ...base, status: "caught", detail: targets.map((r) => `${r.target.file}: ${r.failing.join("; ") || `${r.failed} failed`}`).join(" | "), targets, seconds };
  } finally {
    s.restore();
    // The next mutant must run against the unmutated library (and no mutated executable).
    if (zig || dist) s.restoreLib();
    if (dist) rmSync(join(s.path, "dist"), { recursive: true, force: true });
  }
}

/** Applies, builds and tests each mutant in one scratch worktree; the worktree is removed at the end. */
export async function runMutants(mutants: Mutant[], log: (line: string) => void = (l) => process.stderr.write(`${l}\n`), baseline = false): Promise<MutantResult[]> {
  const s = Scratch.create();
  try {
    log(`mutants: scratch worktree ${s.path}; building the unmutated native library`);
    const failed = await buildLib(s.path);
    if (failed !== null) throw new Error(`the unmutated tree does not build:\n${failed}`);
    s.saveLib();
    const results: MutantResult[] = [];
    for (const [i, m] of mutants.entries()) {
      log(`mutant ${i + 1}/${mutants.length}: ${m.name} (${m.file}): ${m.breaks}`);
      const r = await runMutant(s, m, log, baseline);
      log(`mutant ${m.name}: ${r.status.toUpperCase()} in ${r.seconds.toFixed(0)} s${r.status === "caught" ? "" : `: ${r.detail}`}`);
      results.push(r);
    }
    return results;
  } finally {
    s.remove();
  }
}

// ---------------------------------------------------------------------------------------
// Command line

function usage(): never {
  process.stderr.write("usage: bun scripts/mutants.ts --list | --check | --all | --ci | --only NAME [--only NAME...] [--baseline] [--json]\n");
  process.exit(2);
}

function printList(): void {
  for (const m of MUTANTS) {
    process.stdout.write(`${m.name}\n  breaks: ${m.breaks}\n  files:  ${[...new Set(editsOf(m).map((e) => e.file))].join(", ")}\n  tests:  ${m.tests.map(describeTarget).join("\n          ")}\n`);
  }
}

function printResults(results: MutantResult[]): void {
  for (const r of results) {
    process.stdout.write(`${r.status.padEnd(8)} ${r.name.padEnd(28)} ${r.seconds.toFixed(0).padStart(4)} s  ${r.file}\n`);
    for (const t of r.targets) {
      const what = t.outcome === "failed" ? `failed: ${t.failing.join("; ") || `${t.failed} test(s)`}` : t.outcome;
      process.stdout.write(`         ${describeTarget(t.target)}: ${what}\n`);
      if (t.why) process.stdout.write(`           ${t.why}\n`);
    }
    if (r.status === "invalid") process.stdout.write(`         ${r.detail}\n`);
  }
  const n = (s: MutantResult["status"]) => results.filter((r) => r.status === s).length;
  process.stdout.write(`mutants: ${n("caught")} caught, ${n("survived")} survived, ${n("invalid")} invalid\n`);
}

async function main(argv: string[]): Promise<number> {
  const json = argv.includes("--json");
  const baseline = argv.includes("--baseline");
  const args = argv.filter((a) => a !== "--json" && a !== "--baseline");
  if (args.length === 0) usage();
  if (args[0] === "--list") {
    printList();
    return 0;
  }
  const problems = checkMutants();
  if (args[0] === "--check") {
    for (const p of problems) process.stderr.write(`mutants: ${p}\n`);
    process.stdout.write(`mutants: ${MUTANTS.length} mutants, ${problems.length} problem(s)\n`);
    return problems.length === 0 ? 0 : 1;
  }
  let selected: Mutant[];
  if (args[0] === "--all" && args.length === 1) selected = MUTANTS;
  else if (args[0] === "--ci" && args.length === 1) selected = ciSelection();
  else if (args[0] === "--only") {
    const names: string[] = [];
    for (let i = 0; i < args.length; i += 2) {
      if (args[i] !== "--only" || args[i + 1] === undefined) usage();
      names.push(args[i + 1]!);
    }
    selected = names.map((name) => {
      const m = MUTANTS.find((x) => x.name === name);
      if (!m) {
        process.stderr.write(`mutants: no mutant named ${name}; --list shows them\n`);
        process.exit(2);
      }
      return m;
    });
  } else usage();
  const relevant = problems.filter((p) => selected.some((m) => p.startsWith(`${m.name}:`)));
  if (relevant.length > 0) {
    for (const p of relevant) process.stderr.write(`mutants: ${p}\n`);
    return 1;
  }
  if (process.getuid?.() !== 0) process.stderr.write("mutants: not root: the kernel tests will skip, and a skipped test catches nothing\n");
  const results = await runMutants(selected, undefined, baseline);
  if (json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  else printResults(results);
  return results.every((r) => r.status === "caught") ? 0 : 1;
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
