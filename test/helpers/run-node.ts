/**
 * Runs compiled scripts as users run them, `node <script> ...args` in a child process, collecting what it prints:
 * the CLI (dist/lib/cli/main.js) for the local and the s3:// CLI suites, the examples for theirs. Call ensureBuilt
 * (dist-build.ts) first.
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { ROOT } from './dist-build';

/** The compiled CLI. */
export const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');

/** How a child ended (its exit code, null when killed by a signal) and everything it printed. */
export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunNodeArgs {
  /** The child's working directory. */
  cwd: string;
  /** The child's environment. Default: this process's. */
  env?: NodeJS.ProcessEnv;
}

/** `node script ...args` in a child process; resolves when it has exited and its output is read. */
export function runNode(script: string, args: readonly string[], { cwd, env }: RunNodeArgs): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { cwd, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The compiled CLI with `args` in a child process. */
export function runCli(args: readonly string[], options: RunNodeArgs): Promise<Run> {
  return runNode(CLI, args, options);
}
