/**
 * Test helpers shared by the suites that run over both backends.
 */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { nativeLoadError, setBackend } from '../../lib/backend/select';
import { PLATFORM } from './platform';

const STORAGE_BACKENDS = ['native', 'js'] as const;
export type BackendName = (typeof STORAGE_BACKENDS)[number];

/**
 * The backends every suite runs against. The native one must load: a missing build fails the tests loudly.
 * In the jest project `tfjs-node` (test/helpers/platform.ts) only the native one: the two write identical bytes from
 * the same snapshot arrays (the `tfjs` project proves it), and the tfjs platform changes only how the snapshot is
 * taken, so the JS storage backend there would repeat the `tfjs` project's work at twice the time.
 */
export const BACKENDS: readonly BackendName[] = PLATFORM === 'tfjs-node' ? ['native'] : STORAGE_BACKENDS;

/** Selects `name` for the tests of a describe block (call inside it). */
export function useBackend(name: BackendName): void {
  beforeAll(() => {
    if (name === 'native') {
      const err = nativeLoadError();
      if (err)
        throw new Error(`native backend expected but it did not load (run npm run build:native): ${err.message}`);
    }
    setBackend(name);
  });
}

/** A fresh temp directory, removed after the test file. */
export async function tempDir(prefix = 'tfjs-ckpt-test-'): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  created.push(dir);
  return dir;
}

const created: string[] = [];
afterAll(async () => {
  await Promise.all(created.splice(0).map((d) => fsp.rm(d, { recursive: true, force: true })));
});

/** Deterministic pseudo-random generator (the demo's mulberry32), so failures reproduce. */
export { mulberry32 as rng } from '../../demo/shapes';

/** Names of temp files (of this library) left in `dir`. */
export async function leftoverTemps(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir)).filter((n) => n.startsWith('.tfjs-ckpt-'));
}
