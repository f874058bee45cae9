/**
 * The two examples, run as `npm run example:fit` / `npm run example:loop` run them (the compiled files, in a child
 * process), each into a fresh directory: what they print matches the checkpoints on disk, and the restored best model
 * scores what the best epoch scored.
 */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT, ensureBuilt } from '../helpers/dist-build';
import { type Run, runNode } from '../helpers/run-node';

function runExample(file: string, args: string[]): Promise<Run> {
  return runNode(path.join(ROOT, 'dist', 'examples', file), args, { cwd: ROOT });
}

let dir: string;
beforeAll(async () => {
  await ensureBuilt();
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tfjs-ckpt-examples-'));
}, 300_000);
afterAll(async () => {
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

async function checkpointsIn(d: string): Promise<string[]> {
  return (await fsp.readdir(d)).filter((n) => n.endsWith('.safetensors')).sort();
}

test('package.json runs each example with one command', async () => {
  const pkg = JSON.parse(await fsp.readFile(path.join(ROOT, 'package.json'), 'utf8'));
  expect(pkg.scripts['example:fit']).toMatch(/node dist\/examples\/fit-with-callback\.js$/);
  expect(pkg.scripts['example:loop']).toMatch(/node dist\/examples\/custom-loop\.js$/);
  expect(pkg.scripts['build:examples']).toBe('tsc -p examples/tsconfig.json');
});

test('fit-with-callback: saves on each improvement, and the loaded best model scores the best val_accuracy', async () => {
  const out = path.join(dir, 'fit');
  const r = await runExample('fit-with-callback.js', ['--out', out, '--epochs', '4']);
  expect(r.code).toBe(0);
  const lines = r.stdout.trim().split('\n');
  const epochLines = lines.filter((l) => /^Epoch \d+: val_accuracy (improved|did not improve)/.test(l));
  expect(epochLines).toHaveLength(4);
  const saved = lines.flatMap((l) => /, saving model to (\S+)$/.exec(l)?.[1] ?? []);
  expect(saved.map((p) => path.basename(p))).toEqual(await checkpointsIn(out));
  // Keras 3's line once each save is on disk.
  const finished = lines.flatMap((l) => /^Epoch \d+: finished saving model to (\S+)$/.exec(l)?.[1] ?? []);
  expect(finished.sort()).toEqual([...saved].sort());
  const best = /^Best checkpoint: (\S+) \(epoch (\d+), val_accuracy ([0-9.]+)\)$/m.exec(r.stdout)!;
  expect(best[1]).toBe(saved[saved.length - 1]);
  const restored = /^Restored model: val_loss [0-9.e-]+, val_accuracy ([0-9.]+)$/m.exec(r.stdout)!;
  expect(Number(restored[1])).toBe(Number(best[3]));
}, 300_000);

test('custom-loop: "Checkpoint saved" lines match the files, and restoreBest brings back the best accuracy', async () => {
  const out = path.join(dir, 'loop');
  const r = await runExample('custom-loop.js', ['--out', out, '--epochs', '4']);
  expect(r.code).toBe(0);
  const lines = r.stdout.trim().split('\n');
  const accs = lines.flatMap((l) => /^Epoch \d+\/4: .* val_accuracy ([0-9.]+)$/.exec(l)?.[1] ?? []).map(Number);
  expect(accs).toHaveLength(4);
  const saved = lines.flatMap((l) => /^Checkpoint saved: (\S+)$/.exec(l)?.[1] ?? []);
  expect(saved.map((p) => path.basename(p))).toEqual(await checkpointsIn(out));
  // One save per strict improvement.
  let best = -Infinity;
  let improvements = 0;
  for (const a of accs) if (a > best) [best, improvements] = [a, improvements + 1];
  expect(saved).toHaveLength(improvements);
  const restored = /^Restored best: (\S+) \(epoch (\d+)\): val_accuracy ([0-9.]+)$/m.exec(r.stdout)!;
  expect(restored[1]).toBe(saved[saved.length - 1]);
  expect(Number(restored[3]).toFixed(4)).toBe(best.toFixed(4));
}, 300_000);

test('custom-loop run again on the same directory resumes: the earlier best stays unless beaten', async () => {
  const out = path.join(dir, 'resume');
  const first = await runExample('custom-loop.js', ['--out', out, '--epochs', '2']);
  expect(first.code).toBe(0);
  const firstSaved = first.stdout.split('\n').flatMap((l) => /^Checkpoint saved: (\S+)$/.exec(l)?.[1] ?? []);
  const firstBestFile = firstSaved[firstSaved.length - 1];
  const firstBest = Number(/_([0-9.]+)\.safetensors$/.exec(firstBestFile)![1]);
  const second = await runExample('custom-loop.js', ['--out', out, '--epochs', '2']);
  expect(second.code).toBe(0);
  // Everything the second run saved beats the first run's best (file names carry val_accuracy to 3 decimals).
  const savedAgain = second.stdout
    .split('\n')
    .flatMap((l) => /^Checkpoint saved: .*_([0-9.]+)\.safetensors$/.exec(l)?.[1] ?? []);
  for (const acc of savedAgain) expect(Number(acc)).toBeGreaterThanOrEqual(firstBest);
  // The first run's files are all still there, and the index's best is the best over both runs.
  const files = await checkpointsIn(out);
  for (const f of firstSaved) expect(files).toContain(path.basename(f));
  const index = JSON.parse(await fsp.readFile(path.join(out, 'tfjs-checkpoint.index.json'), 'utf8'));
  const scores = index.checkpoints.map((c: { score: number }) => c.score);
  expect(scores.length).toBe(firstSaved.length + savedAgain.length);
  const bestEntry = index.checkpoints.find((c: { file: string }) => c.file === index.best);
  expect(bestEntry.score).toBe(Math.max(...scores));
  expect(Number(bestEntry.score.toFixed(3))).toBeGreaterThanOrEqual(firstBest);
}, 300_000);
