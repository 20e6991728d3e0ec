// Builds a JavaScript provider plugin into a component with componentize-js's API (the `jco
// componentize` command fails on a WASI path lookup with these versions). Installed next to
// node_modules by scripts/deps/pyjs.sh, so the import below resolves there.
//
// Usage: node componentize.mjs SOURCE.js WIT_DIR OUT.wasm
// fetch() and the HTTP handler are left out: plugins reach the network only through the
// `clusterstack:provider/http` capability. stdio, clocks and random stay (console.log, Date, Math.random).
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
import { resolve } from "node:path";

const [source, wit, out] = process.argv.slice(2);
if (!source || !wit || !out) {
  console.error("usage: node componentize.mjs SOURCE.js WIT_DIR OUT.wasm");
  process.exit(2);
}
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: resolve(wit),
  worldName: "provider",
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(out, component);
