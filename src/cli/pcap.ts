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
 * One record. The kernel moves an 802.1Q tag into the ring's metadata; `vlan` puts it back
 * (as libpcap does), so the file shows the frame as it was on the wire.
 */
export function pcapRecord(timeNs: bigint, frame: Uint8Array, wireLen: number, vlan: number | null): Uint8Array {
  let bytes = frame;
  let orig = wireLen;
  const et = frame.length >= 14 ? (frame[12]! << 8) | frame[13]! : 0;
  if (vlan !== null && et !== 0x8100 && et !== 0x88a8 && frame.length >= 14) {
    bytes = new Uint8Array(frame.length + 4);
    bytes.set(frame.subarray(0, 12), 0);
    bytes.set([0x81, 0x00, (vlan >> 8) & 0x0f, vlan & 0xff], 12);
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
