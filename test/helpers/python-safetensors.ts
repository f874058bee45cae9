/**
 * The Python interpreter with the official `safetensors` and `numpy` packages, for the tests that check our files
 * with the reference implementation. Found as $TFJS_CHECKPOINT_PYTHON (.ci/run sets it to the venv it builds with
 * pip), else `python3` on PATH (with both packages). Missing: the tests that need it say in one line how to enable
 * them, and fail under CI=true (CI must run them).
 */
import { execFileSync } from 'node:child_process';

/** How to make the interpreter available (printed when it is missing). */
export const PYTHON_HINT =
  'python3 with safetensors and numpy not found; enable with: python3 -m venv .venv && .venv/bin/pip install ' +
  'safetensors numpy && export TFJS_CHECKPOINT_PYTHON=$PWD/.venv/bin/python';

/** The interpreter's path, or undefined when none has both packages. */
export function findPythonSafetensors(): string | undefined {
  for (const candidate of [process.env.TFJS_CHECKPOINT_PYTHON, 'python3']) {
    if (!candidate) continue;
    try {
      execFileSync(candidate, ['-c', 'import safetensors, numpy'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // not this one
    }
  }
  return undefined;
}

/** Runs a Python script with arguments; returns its stdout. */
export function runPython(python: string, script: string, args: string[]): string {
  return execFileSync(python, ['-c', script, ...args], { encoding: 'utf8', maxBuffer: 256 << 20 });
}
