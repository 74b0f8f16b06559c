// Builds vip-check.js into a component with componentize-js (npm), through
// its JavaScript API: `node build.mjs` writes vip_check.wasm here.
import { componentize } from "@bytecodealliance/componentize-js";
import { readFile, writeFile } from "node:fs/promises";

const here = new URL(".", import.meta.url).pathname;
const source = await readFile(`${here}vip-check.js`, "utf8");
const { component } = await componentize(source, {
  witPath: `${here}../../../wit`,
  worldName: "condition",
  // The condition world grants no WASI beyond what the host allows.
  disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
});
await writeFile(`${here}vip_check.wasm`, component);
console.log(`${here}vip_check.wasm: ${component.byteLength} bytes`);
