// Every fixed limit of the TypeScript side, in one place: what an edge accepts (TTL, port,
// workers per interface) and the defaults inside those ranges. The native library's limits
// (rules per dataplane, outputs per rule, ...) are defined in zig/constants.zig and reach
// TypeScript through the ABI mirror; they are re-exported here so one module answers "how many".
export { LIMITS as NATIVE_LIMITS } from "./native/abi.ts";

/** IP TTL (IPv4) or hop limit (IPv6) of relayed packets. */
export const TTL_MIN = 1;
export const TTL_MAX = 255;
/** TTL of relayed packets when a rule names none. */
export const DEFAULT_TTL = 8;

/** DSCP of relayed packets (the upper six bits of the IPv4 TOS byte). */
export const DSCP_MAX = 63;

/** 802.1Q VLAN id a rule may match (0 and 4095 are reserved). */
export const VLAN_MIN = 1;
export const VLAN_MAX = 4094;

/** A rule's rate cap (max_pps), datagrams per second. */
export const MAX_PPS_MIN = 1;
export const MAX_PPS_MAX = 100_000_000;

/** UDP port of an input or output (0 is not a port one can relay to). */
export const PORT_MIN = 1;
export const PORT_MAX = 65535;

/** Workers (packet sockets in one fanout group) per input interface. */
export const WORKERS_PER_INTERFACE_MAX = 64;

/**
 * Ring of each packet socket in MiB (`ring_mib`). Unset, the native default applies
 * (zig/constants.zig `ring_bytes_default`, 8 MiB); the ring has at most 4096 blocks of 64 KiB
 * at MTU 1500, so more than 256 MiB would not be used.
 */
export const RING_MIB_MIN = 1;
export const RING_MIB_MAX = 256;
