// Interface changes as the link monitor publishes them on the control socket (`mcrelay events`)
// and how they read in a log line. Shared by the supervisor (which emits them) and the client
// (which prints them), so a client verb never imports supervisor code to describe one.

export type LinkEvent =
  | { type: "link-added"; interface: string; ifindex: number; up: boolean; mtu: number }
  | { type: "link-removed"; interface: string; ifindex: number }
  | { type: "link-up" | "link-down"; interface: string; ifindex: number }
  | { type: "mtu-changed"; interface: string; ifindex: number; from: number; to: number }
  | { type: "link-recreated"; interface: string; from_ifindex: number; ifindex: number }
  | { type: "address-added" | "address-removed"; interface: string; address: string; prefixlen: number }
  | { type: "resync"; reason: string };

export function describe(e: LinkEvent): string {
  switch (e.type) {
    case "link-added":
      return `interface ${e.interface} appeared (index ${e.ifindex}, ${e.up ? "up" : "down"}, mtu ${e.mtu})`;
    case "link-removed":
      return `interface ${e.interface} vanished`;
    case "link-up":
    case "link-down":
      return `interface ${e.interface} is ${e.type === "link-up" ? "up" : "down"}`;
    case "mtu-changed":
      return `interface ${e.interface} mtu ${e.from} -> ${e.to}`;
    case "link-recreated":
      return `interface ${e.interface} was recreated (index ${e.from_ifindex} -> ${e.ifindex})`;
    case "address-added":
    case "address-removed":
      return `interface ${e.interface} ${e.type === "address-added" ? "gained" : "lost"} address ${e.address}/${e.prefixlen}`;
    case "resync":
      return e.reason;
  }
}
