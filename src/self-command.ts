// How to start this same program again (workers are the same executable with a hidden
// subcommand): the compiled binary runs itself; under `bun run` it is bun plus the entry file.

export function isCompiled(): boolean {
  return Bun.main.startsWith("/$bunfs/") || import.meta.path.startsWith("/$bunfs/");
}

export function selfCommand(args: readonly string[]): string[] {
  if (isCompiled()) return [process.execPath, ...args];
  return [process.execPath, Bun.main, ...args];
}
