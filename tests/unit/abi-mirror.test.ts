// The TypeScript mirror of the native ABI is generated from the Zig types (zig/abi_mirror.zig ->
// src/native/abi.generated.ts), and the load-time check compares names and offsets, not only
// sizes. These tests hold that to account: the library agrees with the mirror line for line; a
// swapped pair of counters or fields is named by the check; and in a scratch copy of the Zig
// sources with two counters and two fields reordered, the regenerated mirror keeps every label
// on its word (labels follow the Zig order) while the check refuses the old mirror.
// Needs the native library (zig-out/lib/libmcrelay.so) and the pinned Zig (.toolchain/bin/zig).
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ABI_DESCRIPTION, LAYOUT, PARSE_DROPS, RULE_FLAG_NO_LOOP_GUARD, WORKER_COUNTERS, describeDifferences, encodeTable } from "../../src/native/abi.ts";
import { abiDescription } from "../../src/native/lib.ts";

const root = resolve(import.meta.dir, "../..");
const zig = join(root, ".toolchain/bin/zig");

/** The description with the values of two keys exchanged (as if two fields were swapped). */
function swapValues(text: string, a: string, b: string): string {
  const lines = text.split("\n");
  const ia = lines.findIndex((l) => l.startsWith(`${a} = `));
  const ib = lines.findIndex((l) => l.startsWith(`${b} = `));
  expect(ia).toBeGreaterThanOrEqual(0);
  expect(ib).toBeGreaterThanOrEqual(0);
  const va = lines[ia]!.slice(a.length + 3);
  const vb = lines[ib]!.slice(b.length + 3);
  lines[ia] = `${a} = ${vb}`;
  lines[ib] = `${b} = ${va}`;
  return lines.join("\n");
}

describe("ABI mirror", () => {
  test("the loaded library describes exactly the ABI of the generated mirror, line for line", () => {
    const native = abiDescription();
    expect(describeDifferences(native)).toEqual([]);
    expect(native).toBe(ABI_DESCRIPTION);
    // Names and offsets are in it, not only sizes.
    expect(native).toContain(`RuleDesc.port = offset ${LAYOUT.RuleDesc.fields.port.offset}, 2 bytes\n`);
    expect(native).toContain(`parse.Drop[${PARSE_DROPS.indexOf("ipv4_fragment")}] = ipv4_fragment\n`);
  });

  test("two parse-drop reasons swapped in the library are both named by the load check", () => {
    const i = PARSE_DROPS.indexOf("ipv4_fragment");
    const j = PARSE_DROPS.indexOf("not_udp");
    const library = swapValues(ABI_DESCRIPTION, `parse.Drop[${i}]`, `parse.Drop[${j}]`);
    expect(describeDifferences(library)).toEqual([
      `parse.Drop[${i}]: library not_udp; mirror ipv4_fragment`,
      `parse.Drop[${j}]: library ipv4_fragment; mirror not_udp`,
    ]);
  });

  test("two struct fields swapped (same sizes, same struct size) are named with both offsets", () => {
    const library = swapValues(ABI_DESCRIPTION, "RuleDesc.output_first", "RuleDesc.output_count");
    const found = describeDifferences(library);
    expect(found).toHaveLength(2);
    expect(found[0]).toMatch(/^RuleDesc\.output_first: library offset \d+, 2 bytes; mirror offset \d+, 2 bytes$/);
    expect(found[1]).toMatch(/^RuleDesc\.output_count: /);
  });

  test("a counter only the library has, or only the mirror has, is named", () => {
    const n = WORKER_COUNTERS.length;
    const extra = `${ABI_DESCRIPTION}stats.Worker[${n}] = rx_new_counter\n`;
    expect(describeDifferences(extra)).toEqual([`stats.Worker[${n}]: library rx_new_counter; mirror has no such entry`]);
    const missing = ABI_DESCRIPTION.replace(`stats.Worker[${n - 1}] = ${WORKER_COUNTERS[n - 1]}\n`, "");
    expect(describeDifferences(missing)).toEqual([`stats.Worker[${n - 1}]: mirror ${WORKER_COUNTERS[n - 1]}; library has no such entry`]);
  });

  test("the table encoder writes every RuleDesc and OutputDesc field at the generated offset", () => {
    const addr = (last: number) => Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 239, 1, 1, last]);
    const buf = encodeTable(
      [
        {
          id: 7n,
          group: addr(1),
          source: null,
          port: 5000,
          vlan: 100,
          local: Uint8Array.from([10, 0, 0, 1]),
          maxPps: 500,
          loopGuard: false,
          local6: [Uint8Array.from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]), Uint8Array.from([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6])],
          outputs: [{ id: 9n, addr: addr(2), source: null, port: 6000, ttl: 4, dscp: 46, gso: false, ifindex: 3 }],
        },
      ],
      12,
    );
    const v = new DataView(buf.buffer);
    const r = LAYOUT.TableHeader.size;
    const o = r + LAYOUT.RuleDesc.size;
    const rf = LAYOUT.RuleDesc.fields;
    const of = LAYOUT.OutputDesc.fields;
    expect(v.getUint32(LAYOUT.TableHeader.fields.generation.offset, true)).toBe(12);
    expect(v.getBigUint64(r + rf.id.offset, true)).toBe(7n);
    expect(v.getUint16(r + rf.port.offset, true)).toBe(5000);
    expect(v.getUint16(r + rf.vlan_id.offset, true)).toBe(100);
    expect(v.getUint32(r + rf.max_pps.offset, true)).toBe(500);
    expect(v.getUint16(r + rf.flags.offset, true)).toBe(RULE_FLAG_NO_LOOP_GUARD);
    expect(v.getUint16(r + rf.output_count.offset, true)).toBe(1);
    expect(buf[r + rf.group.offset + 15]).toBe(1);
    expect([...buf.subarray(r + rf.local_addr4.offset, r + rf.local_addr4.offset + 4)]).toEqual([10, 0, 0, 1]);
    expect([buf[r + rf.local_addr6.offset], buf[r + rf.local_addr6.offset + 15], buf[r + rf.local_addr6.offset + 16], buf[r + rf.local_addr6.offset + 31]]).toEqual([0xfe, 5, 0xfd, 6]);
    expect(v.getBigUint64(o + of.id.offset, true)).toBe(9n);
    expect(v.getUint16(o + of.port.offset, true)).toBe(6000);
    expect(buf[o + of.ttl.offset]).toBe(4);
    expect(buf[o + of.dscp.offset]).toBe(46);
    expect(v.getUint32(o + of.ifindex.offset, true)).toBe(3);
    expect(buf.length).toBe(o + LAYOUT.OutputDesc.size);
  });

  describe("in a scratch copy of the Zig sources with two counters and two fields reordered", () => {
    const scratch = mkdtempSync(join(tmpdir(), "mcr-abi-"));
    afterAll(() => rmSync(scratch, { recursive: true, force: true }));

    test(
      "the regenerated mirror keeps every label on its word, and the load check refuses the old mirror",
      async () => {
        cpSync(join(root, "zig"), join(scratch, "zig"), { recursive: true });
        // Swap two parse-drop reasons and two RuleDesc fields of the same size.
        const parsePath = join(scratch, "zig/dataplane/parse.zig");
        const parse = readFileSync(parsePath, "utf8");
        const fragment = parse.match(/^(\s+)ipv4_fragment,\n/m)?.[0];
        const notUdp = parse.match(/^(\s+)not_udp,\n/m)?.[0];
        expect(fragment && notUdp).toBeTruthy();
        writeFileSync(parsePath, parse.replace(fragment!, "@@A@@").replace(notUdp!, fragment!).replace("@@A@@", notUdp!));
        const abiPath = join(scratch, "zig/abi.zig");
        const abi = readFileSync(abiPath, "utf8");
        const first = "    output_first: u16,\n";
        const count = "    output_count: u16,\n";
        expect(abi).toContain(first + count);
        writeFileSync(abiPath, abi.replace(first + count, count + first));

        const run = Bun.spawnSync([zig, "run", "zig/abi_mirror.zig"], { cwd: scratch, stdout: "pipe", stderr: "pipe" });
        expect(run.stderr.toString()).toBe("");
        expect(run.exitCode).toBe(0);
        const generated = join(scratch, "abi.generated.ts");
        writeFileSync(generated, run.stdout);
        const m = (await import(generated)) as typeof import("../../src/native/abi.generated.ts");

        // Labels follow the Zig order: each name is at the index the reordered enum gives it.
        expect(m.PARSE_DROPS.indexOf("ipv4_fragment")).toBe(PARSE_DROPS.indexOf("not_udp"));
        expect(m.PARSE_DROPS.indexOf("not_udp")).toBe(PARSE_DROPS.indexOf("ipv4_fragment"));
        expect(m.LAYOUT.RuleDesc.fields.output_first.offset as number).toBe(LAYOUT.RuleDesc.fields.output_count.offset);
        expect(m.LAYOUT.RuleDesc.fields.output_count.offset as number).toBe(LAYOUT.RuleDesc.fields.output_first.offset);
        // Sizes and counts alone would pass: same struct size, same number of reasons.
        expect(m.LAYOUT.RuleDesc.size).toBe(LAYOUT.RuleDesc.size);
        expect(m.PARSE_DROPS.length).toBe(PARSE_DROPS.length);
        // A library built from the reordered sources is refused by today's mirror, naming all four.
        const refused = describeDifferences(m.ABI_DESCRIPTION).map((d) => d.slice(0, d.indexOf(":")));
        expect(refused.sort()).toEqual(
          [
            "RuleDesc.output_count",
            "RuleDesc.output_first",
            `parse.Drop[${PARSE_DROPS.indexOf("ipv4_fragment")}]`,
            `parse.Drop[${PARSE_DROPS.indexOf("not_udp")}]`,
          ].sort(),
        );
      },
      180_000,
    );
  });
});
