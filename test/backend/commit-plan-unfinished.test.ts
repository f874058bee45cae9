/**
 * CommitQueue.unfinished (backend.ts, "commit plans"): a synchronous count of the plans whose execution has not
 * ended. On the native queue it drops when the queue's thread finishes a plan, while the JS thread is still busy
 * (no event-loop turn, so the promise cannot have settled): what lets the manager's writer free a slot in a loop
 * that never yields. The outcome still comes only through the promise, a failure included, and a failed plan has
 * already poisoned the queue: a plan submitted before the rejection is handled is aborted. On the JS backend the
 * count drops when the plan's promise settles (its steps need turns).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CommitQueue } from '../../lib/backend/backend';
import { getBackend } from '../../lib/backend/select';
import { BACKENDS, tempDir, useBackend } from '../helpers/backends';
import { LOCK, checkpoint, text } from '../helpers/commit-plans';

/** Blocks the JS thread (no turn, no microtask) until `done()` or `ms` elapsed; true if `done()` came true. */
function spinUntil(done: () => boolean, ms: number): boolean {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (done()) return true;
    Atomics.wait(cell, 0, 0, 2);
  }
  return done();
}

describe.each(BACKENDS)('%s backend', (backend) => {
  useBackend(backend);
  let dir: string;
  let queue: CommitQueue;
  beforeEach(async () => {
    dir = await tempDir('tfjs-ckpt-unfinished-');
    fs.writeFileSync(path.join(dir, 'lock'), LOCK);
    queue = getBackend().openCommitQueue();
  });
  afterEach(async () => {
    await queue.close();
  });

  test('unfinished counts every plan submitted and not yet finished: never more than submitted, never 0 while a plan is not on disk, 0 once they have settled', async () => {
    expect(queue.unfinished).toBe(0);
    const a = queue.commit({ label: 'a', steps: [checkpoint(dir, 'a.safetensors', 1)] });
    const b = queue.commit({ label: 'b', steps: [text(dir, 'index.json', '{"v":1}')] });
    // Read once, then look at the disk: a plan no longer counted must already be there (plans run in order). The
    // native thread may finish both before this line (so no lower bound holds there); the JS backend's steps need
    // event-loop turns, so both are still counted.
    const seen = queue.unfinished;
    expect(seen).toBeGreaterThanOrEqual(backend === 'js' ? 2 : 0);
    expect(seen).toBeLessThanOrEqual(2);
    if (seen <= 1) expect(fs.existsSync(path.join(dir, 'a.safetensors'))).toBe(true);
    if (seen === 0) expect(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).toBe('{"v":1}');
    await Promise.all([a, b]);
    expect(queue.unfinished).toBe(0);
  });

  test('a settled plan is never still counted: unfinished is 0 as each of 100 plans in a row settles (the count drops before the outcome is reported)', async () => {
    const seen: number[] = [];
    for (let i = 0; i < 100; i++) {
      await queue.commit({ label: `p${i}`, steps: [text(dir, 'index.json', `{"v":${i}}`)] });
      seen.push(queue.unfinished);
    }
    expect(seen.filter((n) => n !== 0)).toEqual([]);
  });

  if (backend === 'native') {
    test('native: unfinished drops to 0 when the thread finishes a plan, before any event-loop turn settles it', async () => {
      let settled = false;
      const run = queue.commit({
        label: 'a',
        steps: [checkpoint(dir, 'a.safetensors', 1), text(dir, 'index.json', '{"v":1}')],
      });
      void run.then(() => (settled = true));
      expect(spinUntil(() => queue.unfinished === 0, 20_000)).toBe(true);
      // The JS thread never let go: the file is durable on disk, yet the promise has not settled.
      expect(settled).toBe(false);
      expect(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).toBe('{"v":1}');
      const result = await run;
      expect(typeof result.finishedAt).toBe('number');
    });

    test('native: a plan that failed is finished without a turn, still rejects, and the plan behind it is aborted', async () => {
      fs.mkdirSync(path.join(dir, 'a.safetensors'));
      fs.writeFileSync(path.join(dir, 'a.safetensors', 'keep'), 'x'); // the rename fails: EISDIR / ENOTEMPTY
      let outcome = 'pending';
      const failing = queue.commit({
        label: 'failing',
        steps: [checkpoint(dir, 'a.safetensors', 1), text(dir, 'index.json', '{"v":1}')],
      });
      failing.then(
        () => (outcome = 'resolved'),
        () => (outcome = 'rejected'),
      );
      expect(spinUntil(() => queue.unfinished === 0, 20_000)).toBe(true);
      expect(outcome).toBe('pending'); // learning that it finished tells nothing of how
      // Decided before the failure is known (as a never-yielding loop would): it must not publish its index.
      const behind = queue.commit({ label: 'behind', steps: [text(dir, 'index.json', '{"v":2}')] });
      await expect(failing).rejects.toMatchObject({ plan: 'failing', step: 0 });
      await expect(behind).rejects.toMatchObject({ kind: 'aborted', abortedBy: 'failing' });
      expect(fs.existsSync(path.join(dir, 'index.json'))).toBe(false);
      expect(queue.unfinished).toBe(0);
    });
  }
});
