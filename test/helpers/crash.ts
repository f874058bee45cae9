/**
 * The crash tests' plumbing (test/durability/crash.test.ts, test/s3/crash.test.ts): a child process that saves in a
 * loop is killed with SIGKILL at a random moment; it logs (fsynced) every save it was promised, read back here.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LoadedTensor, NamedTensors } from '../../lib/index';

const REGISTER = path.join(__dirname, '..', 'fixtures', 'worker-register.js');

/** The child's log: one JSON line per promised save. */
export function readLog<T>(file: string): T[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as T);
}

/** Whether loaded tensors hold exactly the bytes of `b`, name for name. */
export function sameBytes(a: Record<string, LoadedTensor>, b: NamedTensors): boolean {
  const bytes = (v: ArrayBufferView) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return (
    Object.keys(a).sort().join() === Object.keys(b).sort().join() &&
    Object.keys(b).every((n) => bytes(a[n].data).equals(bytes(b[n].data)))
  );
}

/**
 * Runs the TypeScript child `script` (compiled on the fly) with `args` until it prints "ready", waits a random time
 * (up to `maxDelayMs`), kills it with SIGKILL. Fails if the child dies on its own (its stderr in the message).
 * Resolves with how long the child ran after "ready", in ms.
 */
export async function runAndKill(
  script: string,
  args: string[],
  maxDelayMs: number,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const child = spawn(process.execPath, ['-r', REGISTER, script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const ready = new Promise<void>((resolve) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready\n')) resolve();
    });
  });
  const first = await Promise.race([ready.then(() => 'ready' as const), exited]);
  if (first !== 'ready')
    throw new Error(`crash child exited before it was ready (${JSON.stringify(first)}): ${stderr}`);
  const delay = Math.random() * maxDelayMs;
  const early = await Promise.race([new Promise((r) => setTimeout(r, delay)).then(() => null), exited]);
  if (early) throw new Error(`crash child died on its own (${JSON.stringify(early)}): ${stderr}`);
  child.kill('SIGKILL');
  const end = await exited;
  if (end.signal !== 'SIGKILL') throw new Error(`crash child ended with ${JSON.stringify(end)}: ${stderr}`);
  return delay;
}
