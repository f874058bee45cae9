/**
 * Shared setup of the suites that save through fixtures/disk-child.ts (durable directories, paths, full disk). No jest
 * globals: the child fixture loads this file too.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NamedTensors } from '../../lib/io/tensors';

/** The TypeScript require hook for child processes (`node -r REGISTER child.ts`). */
export const REGISTER = path.join(__dirname, '..', 'fixtures', 'worker-register.js');
/** The child that saves diskChildWeights(count, seed) to a target (see fixtures/disk-child.ts). */
export const DISK_CHILD = path.join(__dirname, '..', 'fixtures', 'disk-child.ts');
/** Whether the tests run as root (for whom chmod does not deny writes, and mount/chattr are allowed). */
export const IS_ROOT = process.getuid?.() === 0;

/** The one float32 tensor `weights` of `count` values seed, seed + 1/8, ...: what disk-child writes. */
export function diskChildWeights(count: number, seed: number): NamedTensors {
  const data = new Float32Array(count);
  for (let i = 0; i < data.length; i++) data[i] = seed + i / 8;
  return { weights: { dtype: 'float32', shape: [count], data } };
}

/** Names of this library's temp files left in `dir`. */
export function tempFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => n.startsWith('.tfjs-ckpt-'));
}
