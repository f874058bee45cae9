/**
 * The demo (`npm start`), shortened: what it prints matches the files on disk, and the best checkpoint restored
 * into a fresh model scores exactly the best epoch's validation accuracy. Also its parts: the seeded dataset, the
 * conv filter-gradient kernel (bit-identical to tfjs's), the platform option.
 */
import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { runDemo } from '../../demo/run';
import { generateShapes, splitDataset } from '../../demo/shapes';
import { installFastConvGrad } from '../../demo/fast-conv-grad';
import { loadPlatform, PlatformError } from '../../demo/platform';
import { ROOT, ensureBuilt } from '../helpers/dist-build';
const { tfjsNodeLoadError } = require('../../scripts/tfjs-node-probe') as { tfjsNodeLoadError(): string | undefined };

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), 'tfjs-ckpt-demo-'));
  dirs.push(d);
  return d;
}
afterAll(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

describe('the demo, shortened', () => {
  test('prints each saved checkpoint, the files on disk match, and the restored best scores exactly the best', async () => {
    const out = path.join(await tempDir(), 'checkpoints');
    const lines: string[] = [];
    const result = await runDemo({ epochs: 3, samples: 300, out, log: (l) => lines.push(l) });
    const text = lines.join('\n');

    // The epoch lines, one per epoch.
    expect(lines.filter((l) => /^Epoch +\d+\/3 {2}loss \d\.\d{4} {2}acc/.test(l))).toHaveLength(3);
    // Every "Checkpoint saved" path exists, and every checkpoint on disk was announced.
    const announced = lines.flatMap((l) => /^ {2}Checkpoint saved: (\S+)/.exec(l)?.[1] ?? []);
    expect(announced.length).toBeGreaterThan(0);
    expect(announced).toEqual(result.saved);
    const onDisk = (await fsp.readdir(out)).filter((n) => n.endsWith('.safetensors')).sort();
    expect(announced.map((p) => path.basename(p)).sort()).toEqual(onDisk);
    // The listing printed after training is the directory's content, with the real sizes.
    for (const name of onDisk) {
      const size = (await fsp.stat(path.join(out, name))).size;
      expect(text).toContain(`  ${name}  ${size} bytes`);
    }
    // Saves happen exactly at the strict improvements of val_acc (saveBestOnly, mode max).
    let best = -Infinity;
    const improving: number[] = [];
    for (const e of result.history) {
      if (e.valAcc > best) {
        best = e.valAcc;
        improving.push(e.epoch);
      }
    }
    expect(onDisk.map((n) => Number(/^shapes_cnn_(\d+)_/.exec(n)![1]))).toEqual(improving);
    // The file names carry the epoch's val_accuracy with 3 decimals.
    for (const n of onDisk) {
      const [, ep, acc] = /^shapes_cnn_(\d+)_([0-9.]+)\.safetensors$/.exec(n)!;
      expect(acc).toBe(result.history[Number(ep) - 1].valAcc.toFixed(3));
    }
    // The restored fresh model scores the best epoch's accuracy exactly, and the demo says so.
    expect(result.best.valAcc).toBe(best);
    expect(result.best.epoch).toBe(improving[improving.length - 1]);
    expect(result.restoredValAcc).toBe(result.best.valAcc);
    expect(result.identical).toBe(true);
    expect(text).toContain("= the best epoch's, exactly");
  });

  test('a second run into the same directory replaces only its own previous files', async () => {
    const out = path.join(await tempDir(), 'checkpoints');
    await fsp.mkdir(out);
    await fsp.writeFile(path.join(out, 'keep-me.txt'), 'user file');
    await runDemo({ epochs: 1, samples: 120, out, log: () => undefined });
    const lines: string[] = [];
    const second = await runDemo({ epochs: 1, samples: 120, out, log: (l) => lines.push(l) });
    expect(lines.join('\n')).toContain('Removed 1 checkpoint(s) of a previous demo run');
    expect(second.saved).toHaveLength(1);
    expect((await fsp.readdir(out)).sort()).toEqual(
      ['keep-me.txt', path.basename(second.saved[0]), 'tfjs-checkpoint.index.json'].sort(),
    );
  });
});

describe('the dataset', () => {
  test('the same seed gives the same bytes; another seed, other images', () => {
    const a = generateShapes({ count: 50, seed: 3 });
    const b = generateShapes({ count: 50, seed: 3 });
    const c = generateShapes({ count: 50, seed: 4 });
    expect(Buffer.from(a.images.buffer)).toEqual(Buffer.from(b.images.buffer));
    expect(Array.from(a.labels)).toEqual(Array.from(b.labels));
    expect(Buffer.from(a.images.buffer)).not.toEqual(Buffer.from(c.images.buffer));
  });

  test('all four classes occur, and the split keeps every image once', () => {
    const d = generateShapes({ count: 400, seed: 1 });
    expect(new Set(d.labels)).toEqual(new Set([0, 1, 2, 3]));
    const { train, validation } = splitDataset(d, 0.25);
    expect([train.count, validation.count]).toEqual([300, 100]);
    expect(Array.from(train.labels).concat(Array.from(validation.labels))).toEqual(Array.from(d.labels));
  });
});

describe('the fast conv filter-gradient kernel', () => {
  const cases: [string, number[], number[], [number, number], 'same' | 'valid'][] = [
    ['3x3 stride 2 same', [4, 16, 16, 1], [3, 3, 1, 8], [2, 2], 'same'],
    ['3x3 stride 1 valid', [2, 9, 7, 3], [3, 3, 3, 5], [1, 1], 'valid'],
    ['4x2 stride 3x1 same', [3, 11, 8, 2], [4, 2, 2, 4], [3, 1], 'same'],
  ];
  test.each(cases)('gives the stock kernel bits exactly (%s)', async (_name, xShape, filterShape, strides, pad) => {
    await tf.setBackend('cpu');
    const x = tf.randomNormal(xShape, 0, 1, 'float32', 11);
    const filter = tf.randomNormal(filterShape, 0, 1, 'float32', 12);
    const dy = tf.tidy(() =>
      tf.randomNormal(tf.conv2d(x as tf.Tensor4D, filter as tf.Tensor4D, strides, pad).shape, 0, 1, 'float32', 13),
    );
    const grad = (): Float32Array =>
      tf.tidy(
        () =>
          tf
            .grad((f: tf.Tensor) =>
              tf
                .conv2d(x as tf.Tensor4D, f as tf.Tensor4D, strides, pad)
                .mul(dy)
                .sum(),
            )(filter)
            .dataSync() as Float32Array,
      );
    const stock = grad();
    const uninstall = installFastConvGrad(tf);
    let fast: Float32Array;
    try {
      fast = grad();
    } finally {
      uninstall();
    }
    expect(Buffer.from(fast.buffer)).toEqual(Buffer.from(stock.buffer));
    expect(grad()).toEqual(stock); // uninstall restored the stock kernel, which still works
    tf.dispose([x, filter, dy]);
  });
});

describe('the platform option', () => {
  test('a platform that is not installed is a clear error naming the package', async () => {
    expect(() => require.resolve('@tensorflow/tfjs-node-gpu')).toThrow(); // this machine has no tfjs-node-gpu
    await expect(loadPlatform('tfjs-node-gpu')).rejects.toThrow(PlatformError);
    await expect(loadPlatform('tfjs-node-gpu')).rejects.toThrow(
      '--platform tfjs-node-gpu: @tensorflow/tfjs-node-gpu is not installed. Install it (npm install @tensorflow/tfjs-node-gpu)',
    );
  });

  test('npm start options: a bad --epochs or --platform is a one-line usage error, exit 2', async () => {
    await ensureBuilt();
    const main = path.join(ROOT, 'dist', 'demo', 'main.js');
    const a = spawnSync(process.execPath, [main, '--epochs', '0'], { encoding: 'utf8' });
    expect(a.status).toBe(2);
    expect(a.stderr.trim()).toBe(
      "demo: option '--epochs <n>' argument '0' is invalid. Expected --epochs to be a positive integer.",
    );
    const b = spawnSync(process.execPath, [main, '--platform', 'tfjs-node-gpu'], { encoding: 'utf8' });
    expect(b.status).toBe(2);
    expect(b.stderr.trim().split('\n')).toHaveLength(1);
    expect(b.stderr).toContain('@tensorflow/tfjs-node-gpu is not installed');
  }, 300_000);

  // Both outcomes are checked: where tfjs-node loads (CI, after npm run setup:tfjs-node) the demo trains on it and the
  // restored best matches exactly; where it does not, the demo says in one line how to enable it.
  test('npm start -- --platform tfjs-node trains on the tensorflow backend, or says in one line to run npm run setup:tfjs-node', async () => {
    await ensureBuilt();
    const main = path.join(ROOT, 'dist', 'demo', 'main.js');
    const out = path.join(await tempDir(), 'checkpoints');
    const args = [main, '--platform', 'tfjs-node', '--epochs', '1', '--samples', '100', '--out', out];
    const r = spawnSync(process.execPath, args, { encoding: 'utf8' });
    if (tfjsNodeLoadError() === undefined) {
      expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
      expect(r.stdout).toContain('tfjs backend: tensorflow;');
      expect(r.stdout).toMatch(/Restored into a fresh model: val_acc [\d.]+ = the best epoch's, exactly/);
    } else {
      expect(r.status).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain('npm run setup:tfjs-node');
    }
  }, 300_000);
});
