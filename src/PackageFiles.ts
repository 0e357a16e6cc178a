import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The package's root (the folder with package.json), found by walking up from this module: the
 * same answer from src/ (tests), from dist/ (tsc's output) and from the bundled dist/main.js.
 */
const packageRoot = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${import.meta.url}`);
    dir = parent;
  }
  return dir;
})();

/** A file shipped with the package, by its path from the package root. */
export const packageFile = (path: string) => join(packageRoot, path);
