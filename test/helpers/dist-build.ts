/**
 * Compiles lib/, demo/ and examples/ to dist/ (tsc -p examples/tsconfig.json) for the suites that run the compiled CLI and
 * examples. One build at a time across jest workers (a lock file), and none when dist is newer than every source.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as lockfile from 'proper-lockfile';

export const ROOT = path.resolve(__dirname, '..', '..');
const DIST = path.join(ROOT, 'dist');
const STAMP = path.join(DIST, '.test-build-stamp');

function newestSourceMtime(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSourceMtime(full));
    else if (entry.name.endsWith('.ts') || entry.name === 'tsconfig.json')
      newest = Math.max(newest, fs.statSync(full).mtimeMs);
  }
  return newest;
}

/** Builds dist/lib, dist/demo and dist/examples unless they are up to date. Throws with tsc's output when it fails. */
export async function ensureBuilt(): Promise<void> {
  fs.mkdirSync(DIST, { recursive: true });
  const release = await lockfile.lock(DIST, {
    lockfilePath: path.join(DIST, '.test-build.lock'),
    retries: { retries: 600, minTimeout: 200, maxTimeout: 500 },
    stale: 30000,
  });
  try {
    const sources = Math.max(...['lib', 'demo', 'examples'].map((d) => newestSourceMtime(path.join(ROOT, d))));
    const stamp = fs.statSync(STAMP, { throwIfNoEntry: false });
    if (stamp && stamp.mtimeMs > sources) return;
    const started = new Date();
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    try {
      execFileSync(process.execPath, [tsc, '-p', path.join('examples', 'tsconfig.json')], { cwd: ROOT, stdio: 'pipe' });
    } catch (e) {
      const out = (e as { stdout?: Buffer }).stdout?.toString() ?? '';
      throw new Error(`tsc -p examples/tsconfig.json failed:\n${out}`, { cause: e });
    }
    // The stamp carries the build's start time, so an edit made during the build still triggers the next one.
    fs.writeFileSync(STAMP, '');
    fs.utimesSync(STAMP, started, started);
  } finally {
    await release();
  }
}
