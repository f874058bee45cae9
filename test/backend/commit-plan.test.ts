/**
 * Commit plans (backend.ts, "commit plans"), over both backends: steps run in order and stop at the first failure,
 * which names the step and the real OS error and says whether the checkpoint was committed; a failed step leaves its
 * target as it was and no temp file; a lock check that fails publishes nothing; a plan queued behind a failed one is
 * never executed (its index never published) until reset(); unlink failures are warnings; both backends write the
 * same bytes. Failures are injected with the filesystem itself (a directory in the way of a rename, a temp name
 * taken, a lock file rewritten, a missing source), which every backend meets through the real system calls; the
 * faults only a failing disk produces (a directory fsync, links refused) are in commit-plan-faults.test.ts.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { constants as osConstants } from 'node:os';
import type { CommitPlan, CommitQueue, CommitStep } from '../../lib/backend/backend';
import { getBackend, setBackend } from '../../lib/backend/select';
import { ErrorCode, fromCommitFailure } from '../../lib/errors';
import { BACKENDS, leftoverTemps, tempDir, useBackend } from '../helpers/backends';
import { LOCK, checkLock, checkpoint, link, text, unlink, versionOf } from '../helpers/commit-plans';

const { EISDIR, EEXIST, ENOENT } = osConstants.errno;

/** Every file of `dir` with its bytes, temp files included. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of fs.readdirSync(dir).sort()) {
    const full = path.join(dir, name);
    out[name] = fs.statSync(full).isDirectory() ? '<dir>' : fs.readFileSync(full).toString('base64');
  }
  return out;
}

/** A non-empty directory where a step wants to rename its file: the rename fails with EISDIR. */
function blockWithDirectory(target: string): void {
  fs.mkdirSync(target);
  fs.writeFileSync(path.join(target, 'keep'), 'x');
}

async function rejection(p: Promise<unknown>): Promise<Record<string, unknown>> {
  try {
    await p;
  } catch (e) {
    return e as Record<string, unknown>;
  }
  throw new Error('expected the plan to fail');
}

describe.each(BACKENDS)('%s backend', (backend) => {
  useBackend(backend);
  let dir: string;
  let queue: CommitQueue;
  beforeEach(async () => {
    dir = await tempDir('tfjs-ckpt-commit-');
    fs.writeFileSync(path.join(dir, 'lock'), LOCK);
    queue = getBackend().openCommitQueue();
  });
  afterEach(async () => {
    await queue.close();
  });

  /** The previous state: checkpoint version 1, its `last` link, the index naming it, a file retention will drop. */
  async function previous(): Promise<void> {
    await queue.commit({
      label: 'previous',
      steps: [
        checkpoint(dir, 'a.safetensors', 1),
        link(dir, 'a.safetensors', 'last.safetensors'),
        text(dir, 'index.json', '{"v":1}'),
      ],
    });
    fs.writeFileSync(path.join(dir, 'old.safetensors'), 'evicted');
  }

  /** The save under test: version 2, link, lock check, index, retention. */
  const save = (): CommitPlan => ({
    label: 'save 2',
    steps: [
      checkpoint(dir, 'b.safetensors', 2),
      link(dir, 'b.safetensors', 'last.safetensors'),
      checkLock(dir),
      text(dir, 'index.json', '{"v":2}'),
      unlink(dir, 'old.safetensors'),
    ],
  });

  test('a plan runs every step: checkpoint, link, lock check, index, deletion, and reports when it finished', async () => {
    await previous();
    const before = Number(process.hrtime.bigint()) / 1e6;
    const result = await queue.commit(save());
    const after = Number(process.hrtime.bigint()) / 1e6;
    expect({ ...result, finishedAt: 0 }).toEqual({ fallbacks: [], warnings: [], finishedAt: 0 });
    // The executor's own clock reading when the last step ended: process.hrtime's clock, within the commit call.
    expect(result.finishedAt).toBeGreaterThanOrEqual(before);
    expect(result.finishedAt).toBeLessThanOrEqual(after);
    expect(await versionOf(path.join(dir, 'b.safetensors'))).toBe(2);
    expect(await versionOf(path.join(dir, 'a.safetensors'))).toBe(1);
    expect(await versionOf(path.join(dir, 'last.safetensors'))).toBe(2);
    expect(fs.statSync(path.join(dir, 'last.safetensors')).ino).toBe(fs.statSync(path.join(dir, 'b.safetensors')).ino);
    expect(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).toBe('{"v":2}');
    expect(fs.existsSync(path.join(dir, 'old.safetensors'))).toBe(false);
    expect(await leftoverTemps(dir)).toEqual([]);
  });

  test('steps run in the order given: a deletion before a write leaves the file, after it removes it', async () => {
    await queue.commit({ label: 'delete then write', steps: [unlink(dir, 'x'), text(dir, 'x', 'kept')] });
    expect(fs.readFileSync(path.join(dir, 'x'), 'utf8')).toBe('kept');
    await queue.commit({ label: 'write then delete', steps: [text(dir, 'y', 'gone'), unlink(dir, 'y')] });
    expect(fs.existsSync(path.join(dir, 'y'))).toBe(false);
  });

  // Failure injected at each step of save() in turn: the steps before it took effect, it and those after did not.
  const failures: { step: number; kind: string; inject: (d: string) => void; errno: number; syscall: string }[] = [
    {
      step: 0,
      kind: 'checkpoint',
      inject: (d) => blockWithDirectory(path.join(d, 'b.safetensors')),
      errno: EISDIR,
      syscall: 'rename',
    },
    {
      step: 1,
      kind: 'link',
      inject: (d) => {
        fs.rmSync(path.join(d, 'last.safetensors'));
        blockWithDirectory(path.join(d, 'last.safetensors'));
      },
      errno: EISDIR,
      syscall: 'rename',
    },
    {
      step: 2,
      kind: 'checkLock',
      inject: (d) => fs.writeFileSync(path.join(d, 'lock'), LOCK.replace('0123', '9999')),
      errno: 0,
      syscall: '',
    },
    {
      step: 3,
      kind: 'text',
      inject: (d) => blockWithDirectory(path.join(d, 'index.json.d')),
      errno: EISDIR,
      syscall: 'rename',
    },
  ];
  test.each(failures.map((f) => [f.step, f.kind, f] as const))(
    'a failure at step %i (%s) stops the plan there: earlier steps done, later ones not, no temp file, the step and OS error reported',
    async (step, kind, f) => {
      await previous();
      const plan = save();
      if (kind === 'text') {
        // The index step aims at a name with a directory in the way (same directory, so the temp rule holds).
        const s = plan.steps[3] as Extract<CommitStep, { kind: 'text' }>;
        s.path = path.join(dir, 'index.json.d');
      }
      f.inject(dir);
      const e = await rejection(queue.commit(plan));
      expect({ step: e.step, stepKind: e.stepKind, plan: e.plan, errno: e.errno, syscall: e.syscall }).toEqual({
        step,
        stepKind: kind,
        plan: 'save 2',
        errno: f.errno,
        syscall: f.syscall,
      });
      expect(e.kind).toBe(kind === 'checkLock' ? 'lock' : 'io');
      expect(e.stepCommitted).toBe(false);
      // The checkpoint (step 0) is committed exactly when the failure came after it.
      expect(e.committed).toBe(step > 0);
      expect(await leftoverTemps(dir)).toEqual([]);
      // Step 0: b written? step 1: last -> b? step 3: the index, step 4: the deletion.
      expect(
        fs.existsSync(path.join(dir, 'b.safetensors')) && !fs.statSync(path.join(dir, 'b.safetensors')).isDirectory(),
      ).toBe(step > 0);
      if (step !== 1) expect(await versionOf(path.join(dir, 'last.safetensors'))).toBe(step > 1 ? 2 : 1);
      expect(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).toBe('{"v":1}');
      expect(fs.readFileSync(path.join(dir, 'old.safetensors'), 'utf8')).toBe('evicted');
      expect(await versionOf(path.join(dir, 'a.safetensors'))).toBe(1);
    },
  );

  test('a failed checkpoint write leaves the index and every file as they were, and no temp file', async () => {
    await previous();
    blockWithDirectory(path.join(dir, 'b.safetensors'));
    const before = snapshot(dir);
    const e = await rejection(queue.commit(save()));
    expect({ step: e.step, stepKind: e.stepKind, committed: e.committed }).toEqual({
      step: 0,
      stepKind: 'checkpoint',
      committed: false,
    });
    expect(snapshot(dir)).toEqual(before);
  });

  test("a taken temp name fails the checkpoint at its exclusive open (EEXIST) and the other writer's file is left alone", async () => {
    const plan = save();
    const w = (plan.steps[0] as Extract<CommitStep, { kind: 'checkpoint' }>).write;
    fs.writeFileSync(w.tmpPath, 'another writer');
    const e = await rejection(queue.commit(plan));
    expect({ step: e.step, errno: e.errno, syscall: e.syscall, path: e.path }).toEqual({
      step: 0,
      errno: EEXIST,
      syscall: 'open',
      path: w.tmpPath,
    });
    expect(fs.readFileSync(w.tmpPath, 'utf8')).toBe('another writer');
  });

  test('a failed index write after the checkpoint is reported as committed, naming the index step', async () => {
    await previous();
    const plan: CommitPlan = {
      label: 'save 2',
      steps: [checkpoint(dir, 'b.safetensors', 2), text(dir, 'index.json.d', '{"v":2}')],
    };
    blockWithDirectory(path.join(dir, 'index.json.d'));
    const e = await rejection(queue.commit(plan));
    expect({ step: e.step, stepKind: e.stepKind, committed: e.committed, stepCommitted: e.stepCommitted }).toEqual({
      step: 1,
      stepKind: 'text',
      committed: true,
      stepCommitted: false,
    });
    expect(await versionOf(path.join(dir, 'b.safetensors'))).toBe(2);
    // As a CheckpointError: the OS code of the index step; `committed` keeps its meaning (the failing step's own file
    // in place), and the message says the checkpoint is.
    const coded = fromCommitFailure(e);
    expect({ code: coded.code, committed: coded.committed, syscall: coded.syscall }).toEqual({
      code: 'EISDIR',
      committed: undefined,
      syscall: 'rename',
    });
    expect(coded.message).toContain('save 2, step 1 (text)');
    expect(coded.message).toContain('the checkpoint itself is in place');
  });

  test('a failed lock check publishes nothing: no index, no link, no deletion', async () => {
    await previous();
    fs.rmSync(path.join(dir, 'lock'));
    const e = await rejection(queue.commit(save()));
    expect({ kind: e.kind, step: e.step, stepKind: e.stepKind, path: e.path }).toEqual({
      kind: 'lock',
      step: 2,
      stepKind: 'checkLock',
      path: path.join(dir, 'lock'),
    });
    expect(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).toBe('{"v":1}');
    expect(fs.readFileSync(path.join(dir, 'old.safetensors'), 'utf8')).toBe('evicted');
    expect(fromCommitFailure(e).code).toBe(ErrorCode.LOCKED);
  });

  test('a lock file with extra bytes after the expected content fails the check', async () => {
    fs.writeFileSync(path.join(dir, 'lock'), LOCK + 'x');
    const e = await rejection(queue.commit({ label: 'p', steps: [checkLock(dir), text(dir, 'index.json', 'x')] }));
    expect(e.kind).toBe('lock');
    expect(fs.existsSync(path.join(dir, 'index.json'))).toBe(false);
  });

  test('plans queued behind a failed one are never executed, their index never published, until reset()', async () => {
    await previous();
    blockWithDirectory(path.join(dir, 'b.safetensors'));
    // Submitted together, without awaiting: the second and third are queued while the first runs.
    const failed = queue.commit(save());
    const behind = queue.commit({
      label: 'save 3',
      steps: [checkpoint(dir, 'c.safetensors', 3), text(dir, 'index.json', '{"v":3}')],
    });
    const e = await rejection(failed);
    expect(e.step).toBe(0);
    const aborted = await rejection(behind);
    expect({ kind: aborted.kind, plan: aborted.plan, abortedBy: aborted.abortedBy, step: aborted.step }).toEqual({
      kind: 'aborted',
      plan: 'save 3',
      abortedBy: 'save 2',
      step: -1,
    });
    const coded = fromCommitFailure(aborted);
    expect(coded.code).toBe(ErrorCode.ABORTED);
    expect(coded.message).toContain('save 2');
    // Submitted after the failure but before reset(): aborted as well.
    const late = await rejection(queue.commit({ label: 'save 4', steps: [text(dir, 'index.json', '{"v":4}')] }));
    expect({ kind: late.kind, abortedBy: late.abortedBy }).toEqual({ kind: 'aborted', abortedBy: 'save 2' });
    expect(fs.existsSync(path.join(dir, 'c.safetensors'))).toBe(false);
    expect(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).toBe('{"v":1}');
    expect(await leftoverTemps(dir)).toEqual([]);

    queue.reset();
    await queue.commit({
      label: 'save 5',
      steps: [checkpoint(dir, 'e.safetensors', 5), text(dir, 'index.json', '{"v":5}')],
    });
    expect(await versionOf(path.join(dir, 'e.safetensors'))).toBe(5);
    expect(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).toBe('{"v":5}');
  });

  test("a reset() made while a plan is still queued does not acknowledge that plan's failure", async () => {
    // A slow plan first, so that the failing one is still queued when reset() is called.
    const slow = queue.commit({ label: 'slow', steps: [checkpoint(dir, 'slow.safetensors', 1, 16 << 20)] });
    blockWithDirectory(path.join(dir, 'b.safetensors'));
    const failing = queue.commit({ label: 'failing', steps: [checkpoint(dir, 'b.safetensors', 2)] });
    queue.reset(); // before the failure happened
    // The precondition, checked rather than assumed: the slow plan had not finished, so the failing one had not run.
    expect(fs.existsSync(path.join(dir, 'slow.safetensors'))).toBe(false);
    const after = queue.commit({ label: 'next', steps: [text(dir, 'index.json', 'next')] });
    await slow;
    await rejection(failing);
    expect((await rejection(after)).abortedBy).toBe('failing');
    expect(fs.existsSync(path.join(dir, 'index.json'))).toBe(false);
  });

  test('unlink failures are warnings: absent files count as deleted, the rest of the plan runs', async () => {
    fs.writeFileSync(path.join(dir, 'f1'), '1');
    blockWithDirectory(path.join(dir, 'd'));
    const result = await queue.commit({
      label: 'retention',
      steps: [unlink(dir, 'absent', 'd', 'f1'), text(dir, 'index.json', 'after')],
    });
    expect(result.fallbacks).toEqual([]);
    expect(result.warnings).toHaveLength(1);
    expect(result.warnings[0]).toMatchObject({ step: 0, path: path.join(dir, 'd'), syscall: 'unlink' });
    // unlink(2) on a directory: EISDIR on Linux, EPERM on macOS.
    expect([EISDIR, osConstants.errno.EPERM]).toContain(result.warnings[0].errno);
    expect(result.warnings[0].message).toMatch(/unlink/);
    expect(fs.existsSync(path.join(dir, 'f1'))).toBe(false);
    expect(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).toBe('after');
  });

  test('a link from a missing file fails the step with ENOENT (not a reason to fall back)', async () => {
    const e = await rejection(queue.commit({ label: 'l', steps: [link(dir, 'missing', 'last.safetensors')] }));
    expect({ step: e.step, stepKind: e.stepKind, errno: e.errno, syscall: e.syscall }).toEqual({
      step: 0,
      stepKind: 'link',
      errno: ENOENT,
      syscall: 'link',
    });
    expect(await leftoverTemps(dir)).toEqual([]);
  });

  test('a plan that breaks the contract is refused before anything runs', async () => {
    const bad = { label: 'bad', steps: [text(dir, 'x', 'x'), { ...text(dir, 'y', 'y'), tmpPath: '/elsewhere/t' }] };
    await expect(queue.commit(bad as CommitPlan)).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    expect(fs.existsSync(path.join(dir, 'x'))).toBe(false);
    // A refused plan is not a failed one: the queue is not poisoned.
    await queue.commit({ label: 'ok', steps: [text(dir, 'x', 'x')] });
    expect(fs.readFileSync(path.join(dir, 'x'), 'utf8')).toBe('x');
  });

  test('close() waits for the plans submitted before it, and later commits are refused', async () => {
    const running = queue.commit({ label: 'p', steps: [checkpoint(dir, 'a.safetensors', 1, 1 << 20)] });
    await queue.close();
    expect(await versionOf(path.join(dir, 'a.safetensors'))).toBe(1);
    await running;
    await expect(queue.commit({ label: 'q', steps: [] })).rejects.toMatchObject({ code: ErrorCode.CLOSED });
  });

  test('a second close() also resolves only once the plans submitted before the first have settled', async () => {
    let settled = false;
    const running = queue
      .commit({ label: 'p', steps: [checkpoint(dir, 'a.safetensors', 1, 4 << 20)] })
      .finally(() => (settled = true));
    void queue.close();
    await queue.close();
    expect(settled).toBe(true);
    await running;
  });
});

describe('native executor', () => {
  useBackend('native');

  test('runs queued plans to their end while the JS thread never yields (no event-loop turn needed)', async () => {
    const dir = await tempDir('tfjs-ckpt-commit-');
    const queue = getBackend().openCommitQueue();
    const first = queue.commit({
      label: 'first',
      steps: [checkpoint(dir, 'a.safetensors', 1, 4 << 20), text(dir, 'index.json', 'first')],
    });
    // Submitted while the first is running: queued natively.
    const second = queue.commit({
      label: 'second',
      steps: [checkpoint(dir, 'b.safetensors', 2, 1 << 20), text(dir, 'index.json', 'second')],
    });
    // Block this thread (no await, no turn) until the second plan's index is on disk.
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    const deadline = Date.now() + 30_000;
    const published = () =>
      fs.existsSync(path.join(dir, 'index.json')) && fs.readFileSync(path.join(dir, 'index.json'), 'utf8') === 'second';
    while (!published() && Date.now() < deadline) Atomics.wait(sleeper, 0, 0, 5);
    expect(published()).toBe(true);
    await Promise.all([first, second]);
    expect(await versionOf(path.join(dir, 'b.safetensors'))).toBe(2);
    await queue.close();
  });
});

/** A script for a child node: `body` runs in an async function with `addon` (the native binary) and `dir`. */
function childScript(dir: string, body: string): string {
  const binary = (getBackend() as unknown as { binaryPath: string }).binaryPath;
  return `
    const fs = require('node:fs');
    const path = require('node:path');
    const addon = require(${JSON.stringify(binary)});
    const dir = ${JSON.stringify(dir)};
    const textStep = (name, body) => ({ kind: 'text', path: path.join(dir, name),
      tmpPath: path.join(dir, '.tfjs-ckpt-' + process.pid + '-' + name + '-000000000000.tmp'),
      bytes: Buffer.from(body), durable: true });
    (async () => { ${body} })().catch((e) => { process.stderr.write(String(e && e.stack)); process.exit(3); });
  `;
}

describe('native executor teardown', () => {
  useBackend('native');

  test('a worker_threads worker commits plans; the process waits for a pending plan, then exits by itself', async () => {
    const dir = await tempDir('tfjs-ckpt-commit-');
    const script = childScript(
      dir,
      `
      const { Worker } = require('node:worker_threads');
      const src = ${JSON.stringify(`
        const { parentPort, workerData } = require('node:worker_threads');
        const path = require('node:path');
        const addon = require(workerData.binary);
        const q = new addon.CommitQueue();
        const step = { kind: 'text', path: path.join(workerData.dir, 'from-worker'),
          tmpPath: path.join(workerData.dir, '.tfjs-ckpt-w.tmp'), bytes: Buffer.from('w'), durable: true };
        q.commit({ label: 'w', steps: [step] }).then((r) =>
          parentPort.postMessage({ ...r, finishedAt: typeof r.finishedAt === 'number' && r.finishedAt > 0 }));
      `)};
      const worker = new Worker(src, { eval: true, workerData: { binary: ${JSON.stringify(
        (getBackend() as unknown as { binaryPath: string }).binaryPath,
      )}, dir } });
      const result = await new Promise((resolve, reject) => { worker.once('message', resolve); worker.once('error', reject); });
      const q = new addon.CommitQueue();
      await q.commit({ label: 'main', steps: [textStep('from-main', 'm')] });
      process.stdout.write(JSON.stringify(result) + ' ' + fs.readFileSync(path.join(dir, 'from-worker'), 'utf8') +
        fs.readFileSync(path.join(dir, 'from-main'), 'utf8'));
      // Not awaited: Node must stay alive until it settles (a pending plan refs the loop)...
      q.commit({ label: 'late', steps: [textStep('late', 'x'.repeat(8 << 20))] });
      // ...and then end by itself: no close(), no exit() (an idle queue holds no ref on the loop).
    `,
    );
    expect(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 })).toBe(
      '{"fallbacks":[],"warnings":[],"finishedAt":true} wm',
    );
    expect(fs.statSync(path.join(dir, 'late')).size).toBe(8 << 20);
  });

  test('survives a worker terminated, and a process exiting, with plans in flight; an idle queue can be collected', async () => {
    const dir = await tempDir('tfjs-ckpt-commit-');
    const binary = (getBackend() as unknown as { binaryPath: string }).binaryPath;
    const script = childScript(
      dir,
      `
      const { Worker } = require('node:worker_threads');
      const src = ${JSON.stringify(`
        const { parentPort, workerData } = require('node:worker_threads');
        const path = require('node:path');
        const addon = require(workerData.binary);
        const q = new addon.CommitQueue();
        for (let i = 0; i < 20; i++) {
          q.commit({ label: 'w' + i, steps: [{ kind: 'text', path: path.join(workerData.dir, 'w' + i),
            tmpPath: path.join(workerData.dir, '.tfjs-ckpt-w' + i + '.tmp'), bytes: Buffer.alloc(1 << 20), durable: true }] });
        }
        parentPort.postMessage('submitted');
      `)};
      const worker = new Worker(src, { eval: true, workerData: { binary: ${JSON.stringify(binary)}, dir } });
      await new Promise((resolve) => worker.once('message', resolve));
      await worker.terminate();
      // An idle queue, unreferenced, collected: its destructor stops its thread.
      (() => { new addon.CommitQueue(); })();
      global.gc();
      await new Promise((r) => setTimeout(r, 50));
      global.gc();
      // Plans in flight at exit.
      const q = new addon.CommitQueue();
      for (let i = 0; i < 5; i++) q.commit({ label: 'm' + i, steps: [textStep('m' + i, 'x'.repeat(1 << 20))] });
      process.stdout.write('ok');
      process.exit(0);
    `,
    );
    expect(execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 30_000 })).toBe(
      'ok',
    );
  });
});

describe('both backends', () => {
  test('write byte-identical files for the same plans', async () => {
    const dirs: Record<string, string> = {};
    for (const backend of ['native', 'js'] as const) {
      setBackend(backend);
      const dir = await tempDir('tfjs-ckpt-commit-');
      dirs[backend] = dir;
      fs.writeFileSync(path.join(dir, 'lock'), LOCK);
      const queue = getBackend().openCommitQueue();
      await queue.commit({
        label: 'p',
        steps: [
          checkpoint(dir, 'a.safetensors', 1, 3000),
          link(dir, 'a.safetensors', 'last.safetensors'),
          checkLock(dir),
          text(dir, 'index.json', '{"ü":"✓"}\n'),
        ],
      });
      await queue.close();
    }
    expect(snapshot(dirs.native)).toEqual(snapshot(dirs.js));
  });
});
