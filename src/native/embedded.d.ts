// `import path from "x.so" with { type: "file" }` gives the file's path (inside the compiled
// executable, a path Bun's dlopen reads from the embedded file system).
declare module "*.so" {
  const path: string;
  export default path;
}
