/**
 * CheckpointPolicy: each rule on its own (scoring, better-than with mode and minDelta, the baseline, the save
 * decision, retention ranking with ties, best/last election), and the proof that the three places that elect a
 * best (the manager, the index rebuild, the CLI listing) agree for the same checkpoints, because they share it.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CheckpointPolicy, Ranked, compareProgress } from '../../lib/manager/policy';
import { CheckpointManager } from '../../lib/manager/checkpoint-manager';
import { INDEX_FILENAME, rebuildIndex } from '../../lib/manager/checkpoint-index';
import { listCheckpoints } from '../../lib/cli/checkpoint-listing';
import { tempDir } from '../helpers/backends';
import { tinyModel } from '../helpers/models';

const min = new CheckpointPolicy({ monitor: 'val_loss', mode: 'min' });
const max = new CheckpointPolicy({ monitor: 'val_accuracy', mode: 'max' });

function entry(name: string, epoch: number, score: number | null, kind = 'best', batch?: number) {
  return { name, epoch, score, kind, ...(batch !== undefined ? { batch } : {}) } satisfies Ranked & { name: string };
}

const names = (es: readonly { name: string }[]): string[] => es.map((e) => e.name);

describe('CheckpointPolicy rules', () => {
  test('score: the monitored value, null when missing, NaN or infinite; aliases resolve', () => {
    expect(min.score({ val_loss: 0.25 })).toBe(0.25);
    expect(min.score({ loss: 0.25 })).toBeNull();
    expect(min.score({ val_loss: NaN })).toBeNull();
    expect(min.score({ val_loss: Infinity })).toBeNull();
    expect(min.score({ val_loss: -Infinity })).toBeNull();
    expect(max.score({ val_acc: 0.9 })).toBe(0.9); // val_acc is an alias of val_accuracy
  });

  test('isBetter follows the mode, is strict, and beats null', () => {
    expect(min.isBetter(0.4, 0.5)).toBe(true);
    expect(min.isBetter(0.5, 0.4)).toBe(false);
    expect(min.isBetter(0.5, 0.5)).toBe(false); // a tie is not better
    expect(max.isBetter(0.6, 0.5)).toBe(true);
    expect(max.isBetter(0.4, 0.5)).toBe(false);
    expect(max.isBetter(0.5, 0.5)).toBe(false);
    expect(min.isBetter(123, null)).toBe(true);
    expect(max.isBetter(-123, null)).toBe(true);
  });

  test('minDelta: an improvement must beat the baseline by more than minDelta, in either mode', () => {
    const pMin = new CheckpointPolicy({ monitor: 'val_loss', mode: 'min', minDelta: 0.1 });
    expect(pMin.decide({ val_loss: 0.45 }, 0.5).save).toBe(false);
    expect(pMin.decide({ val_loss: 0.4 }, 0.5).save).toBe(false); // exactly minDelta: not more
    expect(pMin.decide({ val_loss: 0.39 }, 0.5).save).toBe(true);
    const pMax = new CheckpointPolicy({ monitor: 'val_accuracy', mode: 'max', minDelta: 0.05 });
    expect(pMax.decide({ val_accuracy: 0.84 }, 0.8).save).toBe(false);
    expect(pMax.decide({ val_accuracy: 0.86 }, 0.8).save).toBe(true);
    expect(pMax.decide({ val_accuracy: 0.1 }, null).save).toBe(true); // nothing to beat: minDelta does not apply
  });

  test('baseline: the best so far, or initialValueThreshold when it is stricter', () => {
    expect(min.baseline(null)).toBeNull();
    expect(min.baseline(0.3)).toBe(0.3);
    const t = new CheckpointPolicy({ monitor: 'val_loss', mode: 'min', initialValueThreshold: 0.5 });
    expect(t.baseline(null)).toBe(0.5);
    expect(t.baseline(0.7)).toBe(0.5); // the threshold is stricter
    expect(t.baseline(0.3)).toBe(0.3); // the best is stricter
    const tm = new CheckpointPolicy({ monitor: 'val_accuracy', mode: 'max', initialValueThreshold: 0.8 });
    expect(tm.baseline(0.7)).toBe(0.8);
    expect(tm.baseline(0.9)).toBe(0.9);
    expect(tm.decide({ val_accuracy: 0.75 }, tm.baseline(null)).save).toBe(false);
    expect(tm.decide({ val_accuracy: 0.85 }, tm.baseline(null)).save).toBe(true);
  });

  test('decide: NaN and infinities never save under saveBestOnly; a missing metric is reported as missing', () => {
    expect(min.decide({ val_loss: NaN }, null)).toEqual({ save: false, kind: 'best', score: null, missing: false });
    expect(min.decide({ val_loss: -Infinity }, 0.5).save).toBe(false);
    expect(max.decide({ val_accuracy: Infinity }, null).save).toBe(false);
    expect(min.decide({ loss: 0.1 }, null)).toEqual({ save: false, kind: 'periodic', score: null, missing: true });
    const every = new CheckpointPolicy({ monitor: 'val_loss', mode: 'min', saveBestOnly: false });
    expect(every.decide({ val_loss: NaN }, 0.1)).toEqual({ save: true, kind: 'periodic', score: null, missing: false });
    expect(every.decide({}, 0.1).save).toBe(true);
  });

  test('compareProgress: by epoch, then batch, an end-of-epoch entry after every batch of its epoch', () => {
    const order = [
      { epoch: 1 },
      { epoch: 0 },
      { epoch: 0, batch: 5 },
      { epoch: 1, batch: 0 },
      { epoch: 0, batch: 2 },
    ].sort(compareProgress);
    expect(order).toEqual([
      { epoch: 0, batch: 2 },
      { epoch: 0, batch: 5 },
      { epoch: 0 },
      { epoch: 1, batch: 0 },
      { epoch: 1 },
    ]);
  });

  test('retention keeps the k best, newest first among equal scores, unscored last, never last/previous', () => {
    const keep2 = new CheckpointPolicy({ monitor: 'val_loss', mode: 'min', keep: 2 });
    const es = [
      entry('a', 0, 0.5),
      entry('b', 1, 0.3),
      entry('c', 2, null),
      entry('d', 3, 0.3), // ties b: the newer wins
      entry('last', 4, 0.9, 'last'),
      entry('prev', 2, 0.1, 'previous'),
    ];
    const r = keep2.retain(es);
    expect(names(r.kept)).toEqual(['b', 'd', 'last', 'prev']);
    expect(names(r.evicted)).toEqual(['a', 'c']);
    const keep1 = new CheckpointPolicy({ monitor: 'val_loss', mode: 'min', keep: 1 });
    expect(names(keep1.retain(es).kept)).toEqual(['d', 'last', 'prev']); // the newer of the tied best
    const keep1max = new CheckpointPolicy({ monitor: 'val_accuracy', mode: 'max', keep: 1 });
    expect(names(keep1max.retain(es).kept)).toEqual(['a', 'last', 'prev']);
    expect(names(min.retain(es).kept)).toEqual(names(es)); // keep: 'all'
    expect(min.retain(es).evicted).toEqual([]);
  });

  test('election: best is the earliest of the best scores, never last/previous/unscored; last is the most advanced', () => {
    const es = [
      entry('a', 0, 0.5),
      entry('b', 1, 0.3),
      entry('c', 2, 0.3), // ties b: a tie never replaces a best
      entry('nan', 3, null),
      entry('prev', 9, 0.01, 'previous'),
      entry('last', 4, 0.0, 'last'),
    ];
    const m = min.elect(es);
    expect(m.best?.name).toBe('b');
    expect(m.last?.name).toBe('last');
    expect(max.elect(es).best?.name).toBe('a');
    // Among equally advanced entries the `last` file wins, whatever the order; else the later (newer) one.
    const tied = [entry('last', 4, 0.2, 'last'), entry('main', 4, 0.2)];
    expect(min.elect(tied).last?.name).toBe('last');
    expect(min.elect([...tied].reverse()).last?.name).toBe('last');
    expect(min.elect([entry('x', 4, 0.2), entry('y', 4, 0.2, 'periodic')]).last?.name).toBe('y');
    // A batch save is less advanced than its epoch's end.
    expect(min.elect([entry('end', 2, 0.2), entry('mid', 2, 0.1, 'best', 7)]).last?.name).toBe('end');
    expect(min.elect([entry('prev', 0, 0.1, 'previous')])).toEqual({ best: undefined, last: undefined });
    expect(min.elect([entry('n', 0, null)]).best).toBeUndefined();
  });
});

describe('one election for the manager, the index rebuild and the CLI listing', () => {
  const cases: { monitor: string; mode: 'min' | 'max'; values: number[] }[] = [
    // ties, NaN and an infinity among the scores
    { monitor: 'val_loss', mode: 'min', values: [0.5, 0.3, NaN, 0.3, -Infinity, 0.4] },
    { monitor: 'val_accuracy', mode: 'max', values: [0.7, 0.9, 0.9, Infinity, NaN, 0.8] },
  ];
  for (const { monitor, mode, values } of cases) {
    test(`elect the same best and last (${monitor}, ${mode}, with ties, NaN and infinities)`, async () => {
      const dir = await tempDir();
      const model = tinyModel();
      const ckpt = new CheckpointManager({
        directory: dir,
        filename: 'e{epoch}.safetensors',
        monitor,
        mode,
        saveBestOnly: false,
        saveLast: true,
        async: false,
        logger: { log: () => undefined, warn: () => undefined },
      });
      for (const [epoch, v] of values.entries()) await ckpt.step(model, epoch, { [monitor]: v });
      const best = ckpt.best?.file;
      const last = ckpt.last?.file;
      await ckpt.close();
      expect(best).toBe('e2.safetensors'); // the earliest of the tied best; NaN and infinities never best
      expect(last).toBe('last.safetensors');

      const policy = new CheckpointPolicy({ monitor, mode });
      const rebuilt = await rebuildIndex(dir, { policy, lastFilename: 'last.safetensors' });
      expect({ best: rebuilt.index.best, last: rebuilt.index.last }).toEqual({ best, last });

      await fsp.unlink(path.join(dir, INDEX_FILENAME)); // the listing reads the files' own metadata
      const listing = await listCheckpoints(dir);
      expect(listing.source).toBe('metadata');
      expect(listing.best).toBe(best);
      expect(listing.last).toBe(last);
    });
  }
});
