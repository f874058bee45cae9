/**
 * A copy of fixtures/disk-child.ts and what it loads (lib/ compiled to JavaScript, the package.json the native
 * backend finds its root by, the built addon, node-gyp-build) in a world-readable temp directory, for the children that
 * drop root to uid 65534 before saving: such a child cannot read a checkout that lives under a mode-0700 directory
 * (root's home), so it must not load anything from there.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { transformSync } from '@swc/core';

const ROOT = path.resolve(__dirname, '..', '..');

function compileTree(from: string, to: string): void {
  fs.mkdirSync(to, { recursive: true, mode: 0o755 });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const src = path.join(from, entry.name);
    if (entry.isDirectory()) compileTree(src, path.join(to, entry.name));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) compileFile(src, path.join(to, entry.name));
  }
}

function compileFile(src: string, dest: string): void {
  const { code } = transformSync(fs.readFileSync(src, 'utf8'), {
    filename: src,
    jsc: { target: 'es2022', parser: { syntax: 'typescript' } },
    module: { type: 'commonjs' },
  });
  fs.mkdirSync(path.dirname(dest), { recursive: true, mode: 0o755 });
  fs.writeFileSync(dest.replace(/\.ts$/, '.js'), code, { mode: 0o644 });
}

function copyTree(from: string, to: string): void {
  fs.cpSync(from, to, { recursive: true, dereference: true });
}

/** Makes every directory under `dir` 0755 and every file 0644 (cpSync keeps the checkout's modes). */
function openUp(dir: string): void {
  fs.chmodSync(dir, 0o755);
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) openUp(full);
    else fs.chmodSync(full, 0o644);
  }
}

export interface StagedChild {
  /** The staged disk-child script: run it as `node <script> <args>` (plain JavaScript, no require hook). */
  script: string;
  /** Removes the staged copy. */
  remove(): void;
}

/** Stages disk-child and its closure under os.tmpdir() (see the module comment). */
export function stageDiskChild(): StagedChild {
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ckpt-child-'));
  compileTree(path.join(ROOT, 'lib'), path.join(stage, 'lib'));
  compileFile(path.join(ROOT, 'test', 'helpers', 'disk.ts'), path.join(stage, 'test', 'helpers', 'disk.ts'));
  compileFile(
    path.join(ROOT, 'test', 'fixtures', 'disk-child.ts'),
    path.join(stage, 'test', 'fixtures', 'disk-child.ts'),
  );
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(stage, 'package.json'));
  const release = path.join(ROOT, 'build', 'Release');
  for (const name of fs.readdirSync(release).filter((n) => n.endsWith('.node'))) {
    fs.mkdirSync(path.join(stage, 'build', 'Release'), { recursive: true });
    fs.copyFileSync(path.join(release, name), path.join(stage, 'build', 'Release', name));
  }
  const prebuilds = path.join(ROOT, 'prebuilds');
  if (fs.existsSync(prebuilds)) copyTree(prebuilds, path.join(stage, 'prebuilds'));
  copyTree(
    path.dirname(require.resolve('node-gyp-build/package.json')),
    path.join(stage, 'node_modules', 'node-gyp-build'),
  );
  openUp(stage);
  return {
    script: path.join(stage, 'test', 'fixtures', 'disk-child.js'),
    remove: () => fs.rmSync(stage, { recursive: true, force: true }),
  };
}
