// The problems a config text is refused with, for tests of the config file's errors.
import { expect } from "bun:test";
import { ConfigFileError, parseConfig, type ConfigProblem } from "../../src/config/file.ts";

/** Every problem of `text` (read as f.json5); fails the test when the text is accepted. */
export function problemsOf(text: string): ConfigProblem[] {
  try {
    parseConfig(text, "f.json5");
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigFileError);
    return (err as ConfigFileError).problems;
  }
  throw new Error("accepted");
}
