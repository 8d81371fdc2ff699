// `import path from "x.so" with { type: "file" }` gives the file's path (inside the compiled
// executable, a path Bun's dlopen reads from the embedded file system).
declare module "*.so" {
  const path: string;
  export default path;
}

// The worker executable (zig-out/bin/mcrelay-worker), embedded the same way.
declare module "*/mcrelay-worker" {
  const path: string;
  export default path;
}
