// Whether this program runs as the compiled executable (bun build --compile) or from a checkout
// under `bun run`.

export function isCompiled(): boolean {
  return Bun.main.startsWith("/$bunfs/") || import.meta.path.startsWith("/$bunfs/");
}
