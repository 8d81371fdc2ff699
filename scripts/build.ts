// Builds the native library (ReleaseSafe) and the single executable dist/mcrelay with the
// library embedded. Usage: bun scripts/build.ts [--optimize debug|safe|fast|small]
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dir, "..");
const zig = join(root, ".toolchain/bin/zig");
const optimizeIndex = process.argv.indexOf("--optimize");
const optimize = optimizeIndex > 0 ? process.argv[optimizeIndex + 1] : "safe";
if (!["debug", "safe", "fast", "small"].includes(optimize ?? "")) {
  console.error(`build: --optimize must be one of debug, safe, fast, small (got '${optimize}')`);
  process.exit(2);
}

function step(name: string, cmd: string[]): void {
  const started = performance.now();
  const r = Bun.spawnSync(cmd, { cwd: root, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) {
    console.error(`build: ${name} failed (exit ${r.exitCode}): ${cmd.join(" ")}`);
    process.exit(1);
  }
  console.error(`build: ${name} done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

if (!existsSync(zig)) {
  console.error("build: .toolchain/bin/zig is missing: run scripts/bootstrap.sh first");
  process.exit(1);
}
// Stripped: the embedded copy needs only its dynamic symbols (3.8 MB -> 0.3 MB).
step(`native library (${optimize}, stripped)`, [zig, "build", `-Doptimize=${optimize}`, "-Dstrip=true"]);
mkdirSync(join(root, "dist"), { recursive: true });
step("dist/mcrelay", [process.execPath, "build", "--compile", "src/main.ts", "--outfile", "dist/mcrelay"]);
