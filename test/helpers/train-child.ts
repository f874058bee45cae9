/**
 * Driving test/fixtures/train-child.ts (a training process the suites kill): forking it, and the BackupAndRestore
 * key case its `fit-backup` mode serves, shared by the local and the s3:// suites.
 */
import { ChildProcess, fork } from 'node:child_process';
import * as path from 'node:path';
import { PLATFORM } from './platform';

const CHILD = path.join(__dirname, '..', 'fixtures', 'train-child.ts');
const REGISTER = path.join(__dirname, '..', 'fixtures', 'worker-register.js');

/** Forks the training child with `args` (see train-child.ts), on the JS storage backend, in `env` (default: ours). */
export function startTrainChild(args: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): ChildProcess {
  return fork(CHILD, [JSON.stringify({ platform: PLATFORM, ...args })], {
    execArgv: ['-r', REGISTER],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    env: { ...env, TFJS_CHECKPOINT_NATIVE: '0' },
  });
}

type Message = Record<string, unknown>;

export interface KilledFit {
  /** How the first run ended (expected: 'SIGKILL'). */
  killedBy: NodeJS.Signals | null;
  /** The first run's messages (`epoch` with the weights after each epoch). */
  first: Message[];
  /** The second run's exit code, stderr and messages (`start` with initialEpoch, `epoch-begin`, `end`). */
  exitCode: number | null;
  stderr: string;
  second: Message[];
}

/**
 * BackupAndRestore's key case: a `model.fit` of 6 epochs with a backupAndRestore callback on `directory`, SIGKILLed
 * while idling at the end of epoch index 2 (its backup written), then run again to completion.
 */
export async function killedAndResumedFit(directory: string, env?: NodeJS.ProcessEnv): Promise<KilledFit> {
  const first: Message[] = [];
  const child = startTrainChild({ mode: 'fit-backup', directory, epochs: 6, hangAfterEpoch: 2 }, env);
  const killed = new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_c, signal) => r(signal)));
  let firstErr = '';
  child.stderr?.on('data', (d) => (firstErr += String(d)));
  await new Promise<void>((resolve, reject) => {
    child.on('message', (m: Message) => {
      first.push(m);
      if (m.type === 'hanging') resolve();
    });
    child.on('exit', () => reject(new Error(`the first run exited before hanging: ${firstErr}`)));
  });
  child.kill('SIGKILL');
  const killedBy = await killed;

  const second: Message[] = [];
  const again = startTrainChild({ mode: 'fit-backup', directory, epochs: 6 }, env);
  let stderr = '';
  again.stderr?.on('data', (d) => (stderr += String(d)));
  again.on('message', (m: Message) => second.push(m));
  const exitCode = await new Promise<number | null>((r) => again.on('exit', (c) => r(c)));
  return { killedBy, first, exitCode, stderr, second };
}

/** The checks of the key case (in a jest test). */
export function expectResumedAfterEpoch3(run: KilledFit): void {
  expect(run.killedBy).toBe('SIGKILL');
  expect(run.first.filter((m) => m.type === 'epoch').map((m) => m.epoch)).toEqual([0, 1, 2]);
  expect(run.exitCode === 0 ? 0 : `exit ${run.exitCode}: ${run.stderr}`).toBe(0);
  expect(run.second.find((m) => m.type === 'start')?.initialEpoch).toBe(3);
  expect(run.second.filter((m) => m.type === 'epoch').map((m) => m.epoch)).toEqual([3, 4, 5]);
  // Epoch 4 (index 3) starts from exactly the weights the killed run had at the end of epoch 3.
  const endOf2 = run.first.find((m) => m.type === 'epoch' && m.epoch === 2)?.weights;
  const beginOf3 = run.second.find((m) => m.type === 'epoch-begin' && m.epoch === 3)?.weights;
  expect(endOf2).toBeDefined();
  expect(beginOf3).toEqual(endOf2);
  // Adam's step counter went on from the killed run's: 6 epochs x 2 batches in all.
  expect(run.second.find((m) => m.type === 'end')?.optimizerIterations).toBe(12);
}
