/**
 * The peers come from Debian's packages: smcroute (smcrouted, programming the kernel's
 * multicast forwarding) and socat. Installed with apt-get when missing; the package lists are
 * refreshed once if the first attempt fails.
 */
import { logger } from "./log.ts";

const log = logger("peers");

const SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin";

export interface PeerNeed {
  binary: string;
  pkg: string;
}

export const PEERS: Record<"smcrouted" | "socat", PeerNeed> = {
  smcrouted: { binary: "smcrouted", pkg: "smcroute" },
  socat: { binary: "socat", pkg: "socat" },
};

export function which(binary: string): string | null {
  return Bun.which(binary, { PATH: `${process.env.PATH ?? ""}:${SEARCH_PATH}` });
}

function aptGet(args: string[]): { ok: boolean; output: string } {
  const r = Bun.spawnSync({
    cmd: ["apt-get", ...args],
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    stdout: "pipe",
    stderr: "pipe",
  });
  return { ok: r.exitCode === 0, output: (r.stdout.toString() + r.stderr.toString()).trim() };
}

/** Returns the path of each needed binary, installing its package when it is missing. */
export function ensurePeers(needs: PeerNeed[]): Record<string, string> {
  const missing = needs.filter((n) => which(n.binary) === null);
  if (missing.length) {
    const pkgs = [...new Set(missing.map((n) => n.pkg))];
    log.info(`installing ${pkgs.join(", ")} from Debian's packages`);
    let r = aptGet(["install", "-y", "-q", "--no-install-recommends", ...pkgs]);
    if (!r.ok) {
      log.info("apt-get install failed; refreshing package lists once");
      aptGet(["update", "-q"]);
      r = aptGet(["install", "-y", "-q", "--no-install-recommends", ...pkgs]);
    }
    if (!r.ok) throw new Error(`apt-get install ${pkgs.join(" ")} failed:\n${r.output.split("\n").slice(-10).join("\n")}`);
  }
  const out: Record<string, string> = {};
  for (const n of needs) {
    const path = which(n.binary);
    if (!path) throw new Error(`${n.binary} is still missing after installing ${n.pkg}`);
    out[n.binary] = path;
  }
  return out;
}
