/**
 * Concurrency: many saves at once, from several worker_threads and from concurrent promises in each, into separate
 * directories and into one shared directory (different names, and one name written by every worker): no save fails,
 * nothing is corrupted, every file loads and verifies with the content it should have, no temp file remains.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { loadTensors, saveTensors, setBackend, verifyCheckpoint } from '../../lib/index';
import type { ReadPlan } from '../../lib/backend/backend';
import { getBackend } from '../../lib/backend/select';
import type { CheckpointError, NamedTensors } from '../../lib/index';
import { sameTensors, tensorsFor } from '../fixtures/worker-save';

const REGISTER = path.join(__dirname, '..', 'fixtures', 'worker-register.js');
const WORKER = path.join(__dirname, '..', 'fixtures', 'worker-save.ts');
const WORKERS = 4;
const SAVES_PER_WORKER = 10;

let root: string;
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ckpt-concurrency-'));
});
afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

function runWorker(backend: 'native' | 'js', jobs: { target: string; seed: number }[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(`require(${JSON.stringify(REGISTER)}); require(${JSON.stringify(WORKER)});`, {
      eval: true,
      workerData: { backend, jobs },
    });
    let errors: string[] | undefined;
    worker.on('message', (m: { errors: string[] }) => (errors = m.errors));
    worker.on('error', reject);
    worker.on('exit', (code) =>
      errors && code === 0 ? resolve(errors) : reject(new Error(`worker exited with ${code} without a report`)),
    );
  });
}

function tempFilesUnder(dir: string): string[] {
  return fs
    .readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((n) => path.basename(n).startsWith('.tfjs-ckpt-'));
}

describe.each(['native', 'js'] as const)('%s backend', (backend) => {
  beforeEach(() => setBackend(backend));

  test(`${WORKERS} worker threads x ${SAVES_PER_WORKER} simultaneous saves (own directories, a shared directory, one shared name) all succeed and load intact`, async () => {
    const base = path.join(root, backend);
    const shared = path.join(base, 'shared');
    const plans = Array.from({ length: WORKERS }, (_, w) =>
      Array.from({ length: SAVES_PER_WORKER }, (_, i) => {
        const seed = 1 + w * SAVES_PER_WORKER + i;
        if (i < 6) return { target: path.join(base, `worker-${w}`, `ckpt-${i}.safetensors`), seed };
        if (i < 9) return { target: path.join(shared, `w${w}-${i}.safetensors`), seed };
        return { target: path.join(shared, 'everyone.safetensors'), seed };
      }),
    );
    const reports = await Promise.all(plans.map((jobs) => runWorker(backend, jobs)));
    expect(reports.flat()).toEqual([]);
    // Checked again here, after every worker is done (a later save must not have damaged an earlier file).
    for (const { target, seed } of plans.flat()) {
      const loaded = await loadTensors(target);
      await verifyCheckpoint(target);
      const expectedSeed = target.endsWith('everyone.safetensors') ? Number(loaded.metadata.seed) : seed;
      expect(sameTensors(loaded.tensors, tensorsFor(expectedSeed))).toBe(true);
    }
    const everyone = Number((await loadTensors(path.join(shared, 'everyone.safetensors'))).metadata.seed);
    expect(plans.map((jobs) => jobs[SAVES_PER_WORKER - 1].seed)).toContain(everyone);
    expect(tempFilesUnder(base)).toEqual([]);
  }, 120_000);

  /** Same shapes at every save, as when one model is saved every epoch: only the values (and metadata) differ. */
  const sameShape = (seed: number): NamedTensors => {
    const w = new Float32Array(64 * 1024).fill(seed);
    return {
      w: { dtype: 'float32', shape: [w.length], data: w },
      b: { dtype: 'int32', shape: [1], data: Int32Array.from([seed]) },
    };
  };

  test.each([
    ['different sizes', tensorsFor, {}],
    ['the same shapes', sameShape, {}],
    ['the same shapes, loaded with verify: false', sameShape, { verify: false }],
  ] as const)(
    'loads racing with saves that replace the file (%s) always return one complete version with its own metadata',
    async (_kind, make, options) => {
      const file = path.join(root, `${backend}-replace-${_kind.replace(/\W+/g, '-')}`, 'model.safetensors');
      await saveTensors(file, make(500), { metadata: { seed: '500' } });
      let writing = true;
      const writer = (async () => {
        try {
          for (let s = 501; s <= 530; s++) {
            await saveTensors(file, make(s), { metadata: { seed: String(s) } });
            // A short breath between saves, as a training loop has (back to back: the test below).
            await new Promise((r) => setTimeout(r, 2));
          }
        } finally {
          writing = false;
        }
      })();
      const failures: string[] = [];
      let loads = 0;
      const reader = async () => {
        while (writing) {
          loads++;
          try {
            const loaded = await loadTensors(file, options);
            const seed = Number(loaded.metadata.seed);
            if (!sameTensors(loaded.tensors, make(seed))) failures.push(`metadata says ${seed}, tensors differ`);
          } catch (e) {
            failures.push(`${(e as CheckpointError).code}: ${(e as Error).message}`);
          }
        }
      };
      await Promise.all([writer, reader(), reader()]);
      expect(loads).toBeGreaterThan(0);
      expect(failures).toEqual([]);
    },
  );

  test.each([
    ['loadTensors', {}],
    ['loadTensors verify: false', { verify: false }],
    ['verifyCheckpoint', undefined],
  ] as const)(
    'a reader (%s) whose file is atomically replaced between its header and its data reads the complete old version, no error',
    async (_reader, options) => {
      const file = path.join(root, `${backend}-mid-read-${_reader.replace(/\W+/g, '-')}`, 'model.safetensors');
      await saveTensors(file, tensorsFor(600), { metadata: { seed: '600' } });
      const io = getBackend();
      const real = io.read;
      let replaced = 0;
      // The replacement lands after the reader has read the header and before it reads a byte of data.
      io.read = async (plan: ReadPlan) => {
        if (replaced === 0) {
          await saveTensors(file, tensorsFor(601), { metadata: { seed: '601' } });
          replaced++;
        }
        return real.call(io, plan);
      };
      try {
        if (options === undefined) {
          const result = await verifyCheckpoint(file);
          const old = Object.values(tensorsFor(600)).reduce((n, t) => n + t.data.byteLength, 0);
          expect(result.bytes).toBe(old);
        } else {
          const loaded = await loadTensors(file, options);
          expect(loaded.metadata.seed).toBe('600');
          expect(sameTensors(loaded.tensors, tensorsFor(600))).toBe(true);
        }
      } finally {
        io.read = real;
      }
      expect(replaced).toBe(1);
      expect((await loadTensors(file)).metadata.seed).toBe('601'); // the path did move on to the new version
    },
  );

  test('readers under continuous replacement (saves back to back, no pause) each return one complete version, never an error, never starved', async () => {
    const file = path.join(root, `${backend}-continuous`, 'model.safetensors');
    await saveTensors(file, tensorsFor(700), { metadata: { seed: '700' } });
    let saved = 0;
    let reading = true;
    const writer = (async () => {
      for (let s = 701; reading; s++) {
        await saveTensors(file, tensorsFor(s), { metadata: { seed: String(s) }, durable: false });
        saved++;
      }
    })();
    const failures: string[] = [];
    const seen = new Set<string>();
    let replacedDuring = 0;
    const LOADS = 25;
    const reader = async () => {
      for (let i = 0; i < LOADS; i++) {
        const before = saved;
        try {
          const loaded = await loadTensors(file);
          seen.add(loaded.metadata.seed);
          if (!sameTensors(loaded.tensors, tensorsFor(Number(loaded.metadata.seed)))) {
            failures.push(`metadata says ${loaded.metadata.seed}, tensors differ`);
          }
        } catch (e) {
          failures.push(`${(e as CheckpointError).code}: ${(e as Error).message}`);
        }
        if (saved > before) replacedDuring++;
      }
    };
    try {
      await Promise.all([reader(), reader()]);
    } finally {
      reading = false;
      await writer;
    }
    expect(failures).toEqual([]);
    // Every one of the 2 x 25 loads finished (no reader starved), many of them while the file was being replaced.
    expect(replacedDuring).toBeGreaterThan(LOADS / 2);
    expect(seen.size).toBeGreaterThan(1);
  }, 120_000);

  test('40 concurrent saves from one thread into one directory all succeed and load intact', async () => {
    const dir = path.join(root, `${backend}-one-thread`);
    const seeds = Array.from({ length: 40 }, (_, i) => 100 + i);
    await Promise.all(seeds.map((s) => saveTensors(path.join(dir, `c${s % 20}-${s}.safetensors`), tensorsFor(s))));
    for (const s of seeds) {
      const { tensors } = await loadTensors(path.join(dir, `c${s % 20}-${s}.safetensors`));
      expect(sameTensors(tensors, tensorsFor(s))).toBe(true);
    }
    expect(tempFilesUnder(dir)).toEqual([]);
  });
});
