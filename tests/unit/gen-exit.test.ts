// `mcrelay gen` whose every send failed exits 7 (system) instead of 0: a run that put nothing on
// the wire is not a measurement. (Provoking it end to end needs a route that breaks between the
// socket's connect and its first send, which no namespace set-up here does reliably.)
import { describe, expect, test } from "bun:test";
import { genExitCode } from "../../src/cli/gen.ts";
import { EXIT } from "../../src/errors.ts";

describe("gen exit code", () => {
  test("nothing sent and send errors: exit 7 (system); anything sent, or no errors: exit 0", () => {
    expect(genExitCode(0, 100)).toBe(EXIT.system);
    expect(EXIT.system).toBe(7);
    expect(genExitCode(1, 100)).toBe(EXIT.ok);
    expect(genExitCode(0, 0)).toBe(EXIT.ok);
    expect(genExitCode(500, 0)).toBe(EXIT.ok);
  });
});
