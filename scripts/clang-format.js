#!/usr/bin/env node
/**
 * Checks or fixes the formatting of the C++ sources with the clang-format binary from node_modules.
 *
 *   node scripts/clang-format.js --check   exit 1 and list the files that differ from .clang-format
 *   node scripts/clang-format.js --fix     rewrite them in place
 *
 * Files: native/**\/*.{h,cc} and test/native/**\/*.{h,cc,c} (the C fault-injection shim).
 */
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const binary = path.join(
  root,
  'node_modules',
  '.bin',
  process.platform === 'win32' ? 'clang-format.cmd' : 'clang-format',
);

function sources(dir) {
  const out = [];
  if (!fs.existsSync(dir)) return out;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sources(full));
    else if (/\.(h|cc|c)$/.test(entry.name)) out.push(full);
  }
  return out;
}

const mode = process.argv[2];
if (mode !== '--check' && mode !== '--fix') {
  console.error('usage: node scripts/clang-format.js --check | --fix');
  process.exit(2);
}
const files = [...sources(path.join(root, 'native')), ...sources(path.join(root, 'test', 'native'))].sort();
if (!fs.existsSync(binary)) {
  console.error(`clang-format not found at ${binary}: run npm ci`);
  process.exit(2);
}

if (mode === '--fix') {
  const r = spawnSync(binary, ['-i', '--style=file', ...files], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const differing = [];
for (const file of files) {
  const r = spawnSync(binary, ['--dry-run', '--Werror', '--style=file', file], { encoding: 'utf8' });
  if (r.error) {
    console.error(`cannot run ${binary}: ${r.error.message}`);
    process.exit(2);
  }
  if (r.status !== 0) differing.push(path.relative(root, file));
}
if (differing.length > 0) {
  console.error(`clang-format: ${differing.length} file(s) need formatting (run npm run format):`);
  for (const f of differing) console.error(`  ${f}`);
  process.exit(1);
}
console.log(`clang-format: ${files.length} files formatted correctly`);
