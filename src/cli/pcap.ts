// The classic pcap file format (what tcpdump -w writes): a global header, then per frame a
// record header and the bytes. Microsecond timestamps, link type Ethernet.
export const PCAP_MAGIC_US = 0xa1b2c3d4;
export const LINKTYPE_ETHERNET = 1;
export const SNAPLEN = 65535;

export function pcapHeader(): Uint8Array {
  const b = new Uint8Array(24);
  const d = new DataView(b.buffer);
  d.setUint32(0, PCAP_MAGIC_US, true);
  d.setUint16(4, 2, true);
  d.setUint16(6, 4, true);
  d.setInt32(8, 0, true);
  d.setUint32(12, 0, true);
  d.setUint32(16, SNAPLEN, true);
  d.setUint32(20, LINKTYPE_ETHERNET, true);
  return b;
}

/**
 * One record. The kernel moves a frame's (outer) VLAN tag into the ring's metadata; `tag` puts
 * it back whole, TPID and TCI (PCP, DEI, VID), after the MAC addresses, as libpcap does, so the
 * file shows the frame as it was on the wire. Always when there is one: with QinQ the frame
 * left in the ring still starts with the inner 802.1Q tag, and the outer one is the tag.
 */
export function pcapRecord(timeNs: bigint, frame: Uint8Array, wireLen: number, tag: { tpid: number; tci: number } | null): Uint8Array {
  let bytes = frame;
  let orig = wireLen;
  if (tag !== null && frame.length >= 12) {
    bytes = new Uint8Array(frame.length + 4);
    bytes.set(frame.subarray(0, 12), 0);
    bytes.set([(tag.tpid >> 8) & 0xff, tag.tpid & 0xff, (tag.tci >> 8) & 0xff, tag.tci & 0xff], 12);
    bytes.set(frame.subarray(12), 16);
    orig += 4;
  }
  const out = new Uint8Array(16 + bytes.length);
  const d = new DataView(out.buffer);
  d.setUint32(0, Number(timeNs / 1_000_000_000n), true);
  d.setUint32(4, Number((timeNs % 1_000_000_000n) / 1000n), true);
  d.setUint32(8, bytes.length, true);
  d.setUint32(12, Math.max(orig, bytes.length), true);
  out.set(bytes, 16);
  return out;
}
