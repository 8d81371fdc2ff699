// Who may do what on the control socket, decided once per connection from the peer's
// credentials as the kernel recorded them at connect(2) (SO_PEERCRED, SO_PEERGROUPS):
// - admin (every request): root, the daemon's own user, a process holding CAP_NET_ADMIN, or a
//   member of the admin group (--admin-group);
// - read (status, list, stats, workers, events, ping, version, config-show, log-level without a level):
//   a member of the socket's group;
// - anyone else is refused at connect.
import { readFileSync } from "node:fs";
import { peerCred, withPeerPinned } from "../native/lib.ts";

export type Rights = "none" | "read" | "admin";

export interface AccessPolicy {
  /** The daemon's own uid: its user administers it. */
  ownUid: number;
  /** Members may read (the socket file's group). */
  readGid: number;
  /** Members may change things (--admin-group). */
  adminGid?: number;
}

export interface Peer {
  pid: number;
  uid: number;
  gid: number;
  groups: number[];
  rights: Rights;
  /** Why it has these rights, for the log. */
  why: string;
}

const CAP_NET_ADMIN = 12;

/** CAP_NET_ADMIN in the effective set of `pid`, read while its pidfd pins the process. */
function hasNetAdmin(fd: number, pid: number): boolean {
  return (
    withPeerPinned(fd, () => {
      const hex = readFileSync(`/proc/${pid}/status`, "utf8").match(/^CapEff:\s*([0-9a-f]+)/m)?.[1];
      return hex !== undefined && ((BigInt(`0x${hex}`) >> BigInt(CAP_NET_ADMIN)) & 1n) === 1n;
    }) === true
  );
}

export function decideRights(cred: { uid: number; gid: number; groups: number[] }, policy: AccessPolicy, netAdmin: () => boolean): { rights: Rights; why: string } {
  const member = (gid: number) => cred.gid === gid || cred.groups.includes(gid);
  if (cred.uid === 0) return { rights: "admin", why: "root" };
  if (cred.uid === policy.ownUid) return { rights: "admin", why: "the daemon's own user" };
  if (policy.adminGid !== undefined && member(policy.adminGid)) return { rights: "admin", why: `member of the admin group ${policy.adminGid}` };
  if (netAdmin()) return { rights: "admin", why: "holds CAP_NET_ADMIN" };
  if (member(policy.readGid)) return { rights: "read", why: `member of the socket group ${policy.readGid}` };
  return { rights: "none", why: "neither in the socket group nor the admin group" };
}

/** The peer of an accepted connection and its rights. Throws when the kernel cannot tell. */
export function peerRights(fd: number, policy: AccessPolicy): Peer {
  const cred = peerCred(fd);
  const { rights, why } = decideRights(cred, policy, () => hasNetAdmin(fd, cred.pid));
  return { ...cred, rights, why };
}
