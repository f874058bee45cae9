/**
 * The LD_PRELOAD fault shim (test/native/fault_shim.c) the fault-injection suites load into their children
 * (test/durability/faults.test.ts, test/backend/commit-plan-faults.test.ts): built once per suite into its own
 * temporary folder. Linux only (LD_PRELOAD, /proc/self/fd); needs a C compiler: apt-get install -y gcc.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const SHIM_SOURCE = path.join(__dirname, '..', 'native', 'fault_shim.c');

/** Compiles the shim into `dir` with warnings as errors and returns the library's path; throws with the compiler's
 * output when it fails (a missing compiler included), so a suite never runs without its faults. */
export function buildFaultShim(dir: string): string {
  const shim = path.join(dir, 'fault_shim.so');
  const cc = process.env.CC ?? 'cc';
  const flags = ['-std=c11', '-shared', '-fPIC', '-O2', '-Wall', '-Wextra', '-Werror', '-o', shim, SHIM_SOURCE];
  const built = spawnSync(cc, [...flags, '-ldl', '-lpthread'], { encoding: 'utf8' });
  if (built.status !== 0) {
    throw new Error(
      `building the fault shim with ${cc} failed (${built.error?.message ?? built.status}):\n${built.stderr}`,
    );
  }
  return shim;
}
