/**
 * The benchmark's own building blocks (bench/): the state-dict layouts it saves, their deterministic contents (the
 * round-trip check regenerates them), the statistics behind every figure, and the wiring of the tf.loadLayersModel
 * rows (a model topology over the layout; the driver running them on tfjs-node beside loadTensors).
 */
import { fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { allocate, fillTensor, makeLayout } from '../../bench/layout';
import { tfjsNodeRows } from '../../bench/main';
import { tfjsModelOf } from '../../bench/tfjs-io';
import { memoryStatus } from '../../bench/memory';
import { describePeers, detectPeers, parsePeerOutput, pythonPath, toOpResult, venvDir } from '../../bench/peers';
import { threadCpuMs } from '../../bench/stall';
import { markdownTable, median, mibps, sizeLabel } from '../../bench/stats';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

describe('bench layouts', () => {
  it.each([256 * MiB, GiB, 5 * GiB, 64 * 1024 + 4 * 7])('hold exactly %d bytes of float32', (bytes) => {
    const layout = makeLayout(bytes);
    expect(layout.tensors.reduce((a, t) => a + t.size * 4, 0)).toBe(bytes);
    for (const t of layout.tensors) expect(t.size).toBe(t.shape.reduce((a, b) => a * b, 1));
  });

  it('keep every tensor at or below 1 GiB and every name unique, even for 5 GiB', () => {
    const layout = makeLayout(5 * GiB);
    expect(Math.max(...layout.tensors.map((t) => t.size * 4))).toBeLessThanOrEqual(GiB);
    expect(new Set(layout.tensors.map((t) => t.name)).size).toBe(layout.tensors.length);
  });

  it('look like a model: 4-D conv kernels, batch-norm vectors and an embedding table', () => {
    const layout = makeLayout(256 * MiB);
    const kernels = layout.tensors.filter((t) => t.name.endsWith('_conv/kernel'));
    expect(kernels.length).toBeGreaterThan(40);
    expect(kernels.every((t) => t.shape.length === 4)).toBe(true);
    expect(layout.tensors.some((t) => t.name.endsWith('_bn/moving_variance'))).toBe(true);
    const embedding = layout.tensors.find((t) => t.name === 'embedding/embeddings');
    expect(embedding?.shape[1]).toBe(1024);
  });

  it('reject sizes that are not a multiple of 4 or below 64 KiB', () => {
    expect(() => makeLayout(256 * MiB + 2)).toThrow(/multiple of 4/);
    expect(() => makeLayout(1024)).toThrow(/64 KiB/);
  });
});

describe('bench tensor contents', () => {
  it('are the same on every fill and differ between tensors', () => {
    const a = new Float32Array(300_000);
    const b = new Float32Array(300_000);
    const c = new Float32Array(300_000);
    fillTensor(a, 3);
    fillTensor(b, 3);
    fillTensor(c, 4);
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
    expect(Buffer.from(a.buffer).equals(Buffer.from(c.buffer))).toBe(false);
  });

  it('are small finite floats across a tensor longer than the 1 MiB pattern', () => {
    const a = new Float32Array(600_000);
    fillTensor(a, 1);
    let worst = 0;
    for (const x of a) worst = Math.max(worst, Number.isFinite(x) ? Math.abs(x) : Infinity);
    expect(worst).toBeLessThanOrEqual(0.1);
    expect(new Set(a.subarray(0, 1000)).size).toBeGreaterThan(990);
  });
});

describe('bench statistics', () => {
  it('take the median of odd and even sample counts without reordering the input', () => {
    const xs = [5, 1, 3];
    expect(median(xs)).toBe(3);
    expect(xs).toEqual([5, 1, 3]);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });

  it('express throughput in MiB/s and sizes in MiB or GiB', () => {
    expect(mibps(512 * MiB, 2000)).toBe(256);
    expect(sizeLabel(GiB)).toBe('1 GiB');
    expect(sizeLabel(256 * MiB)).toBe('256 MiB');
  });

  it('print Markdown tables with aligned columns', () => {
    expect(markdownTable(['a', 'bb'], [['xyz', '1']])).toBe('| a   | bb |\n| --- | -- |\n| xyz | 1  |');
  });
});

describe('bench memory readings', () => {
  it('read the resident set and its peak from /proc', () => {
    const m = memoryStatus();
    expect(m.rssKiB).toBeGreaterThan(1024);
    expect(m.hwmKiB).toBeGreaterThanOrEqual(m.rssKiB);
  });
});

describe('bench Python peers', () => {
  it('find the venv of the set-up script, unless BENCH_PYTHON or TFJS_CHECKPOINT_BENCH_VENV says otherwise', () => {
    expect(venvDir({ HOME: '/home/u' })).toBe('/home/u/.cache/tfjs-checkpoint/bench-venv');
    expect(venvDir({ HOME: '/home/u', XDG_CACHE_HOME: '/c' })).toBe('/c/tfjs-checkpoint/bench-venv');
    expect(venvDir({ TFJS_CHECKPOINT_BENCH_VENV: '/v' })).toBe('/v');
    expect(pythonPath({ BENCH_PYTHON: '/opt/py' })).toBe('/opt/py');
    // No venv there: python3 from the PATH.
    expect(pythonPath({ TFJS_CHECKPOINT_BENCH_VENV: '/nonexistent-venv' })).toBe('python3');
  });

  it('name the missing packages in one line with the command that installs them, keeping the others', () => {
    const p = describePeers('py', { python: '3.11.7', safetensors: '0.8.0', numpy: '2.4.6' });
    expect(p).toMatchObject({ torch: false, safetensors: false, safetensorsNumpy: true });
    expect(p.note).toMatch(/missing torch: .*setup-bench-python\.sh/);
    expect(p.note).not.toContain('\n');
    const all = describePeers('py', { python: '3.11.7', torch: '2.13.0', safetensors: '0.8.0', numpy: '2.4.6' });
    expect(all).toMatchObject({ torch: true, safetensors: true, safetensorsNumpy: true });
    expect(all.note).not.toMatch(/missing/);
  });

  it('report an interpreter that does not run as every peer missing, without throwing', () => {
    const p = detectPeers({ ...process.env, BENCH_PYTHON: '/nonexistent/bin/python' });
    expect(p).toMatchObject({ torch: false, safetensors: false, safetensorsNumpy: false });
    expect(p.note).toMatch(/python peers skipped: .*ENOENT.*setup-bench-python/);
  });

  it("parse a peer's last stdout line as its result and say what came back otherwise", () => {
    expect(parsePeerOutput(0, 'noise\n{"ms": 12.5, "baseRssKiB": 100}\n', '')).toEqual({
      ok: true,
      value: { ms: 12.5, baseRssKiB: 100 },
    });
    const failed = parsePeerOutput(1, '', 'Traceback\n  File x\nModuleNotFoundError: torch\n');
    expect(failed).toEqual({ ok: false, error: expect.stringContaining('ModuleNotFoundError: torch') });
    expect(parsePeerOutput(0, 'not json', '')).toEqual({ ok: false, error: expect.stringContaining('no JSON') });
    expect(parsePeerOutput(0, '[1]', '')).toMatchObject({ ok: false });
  });

  it('turn a reply into a timing only when it carries a time', () => {
    expect(toOpResult({ ms: 3, baseRssKiB: 7, peakExtraKiB: 2 })).toEqual({ ms: 3, baseRssKiB: 7, peakExtraKiB: 2 });
    expect(toOpResult({ ms: 3 })).toEqual({ ms: 3, baseRssKiB: 0 });
    expect(toOpResult({ baseRssKiB: 7 })).toMatchObject({ error: expect.stringContaining('without a time') });
  });
});

describe('bench JS-thread CPU time', () => {
  it('grows with work done on the calling thread', () => {
    const a = threadCpuMs();
    let x = 0;
    for (let i = 0; i < 2e7; i++) x += i % 3;
    const b = threadCpuMs();
    expect(x).toBeGreaterThan(0);
    expect(b.source).toBe(a.source);
    expect(b.ms).toBeGreaterThan(a.ms);
    if (process.platform === 'linux') expect(a.source).toBe('thread');
  });
});

describe('bench tf.loadLayersModel model', () => {
  it('is a topology tf.loadLayersModel builds, with every layout tensor in the weight it names, byte for byte', async () => {
    const layout = makeLayout(MiB);
    const { topology, weightNames } = tfjsModelOf(layout);
    expect(new Set(weightNames).size).toBe(layout.tensors.length);
    // Keras names are kept (conv, batch norm, dense, embedding); only the padding vector becomes a PReLU's alpha.
    const renamed = layout.tensors.filter((t, i) => weightNames[i] !== t.name).map((t) => t.name);
    expect(renamed).toEqual(['embedding/padding_bias']);
    const arrays = allocate(layout);
    const weightData = new Uint8Array(layout.bytes);
    let off = 0;
    for (const a of arrays) {
      weightData.set(new Uint8Array(a.buffer), off);
      off += a.byteLength;
    }
    const model = await tf.loadLayersModel(
      tf.io.fromMemory({
        modelTopology: topology,
        weightSpecs: layout.tensors.map((t, i) => ({ name: weightNames[i], shape: t.shape, dtype: 'float32' })),
        weightData: weightData.buffer,
      }),
    );
    try {
      const classes = new Set(model.layers.map((l) => l.getClassName()));
      expect([...classes].sort()).toEqual([
        'BatchNormalization',
        'Conv2D',
        'Dense',
        'Embedding',
        'InputLayer',
        'PReLU',
      ]);
      const byName = new Map(model.weights.map((w) => [w.originalName, w]));
      expect(byName.size).toBe(layout.tensors.length);
      layout.tensors.forEach((t, i) => {
        const w = byName.get(weightNames[i]);
        expect([weightNames[i], w?.shape]).toEqual([weightNames[i], t.shape]);
        const got = w!.read().dataSync() as Float32Array;
        expect(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(arrays[i].buffer))).toBe(
          true,
        );
      });
    } finally {
      model.dispose();
    }
  });
});

describe('bench tfjs-node rows', () => {
  it('are left out, all three, with one line naming them and the command that builds tfjs-node', () => {
    const missing = tfjsNodeRows('Error: libtensorflow.so.2: cannot open shared object file\n  at x');
    expect([...missing.unavailable].sort()).toEqual(['tfjs-node', 'tfjs-node-load', 'tfjs-node-st-load']);
    expect(missing.note).toMatch(/skipped: .*libtensorflow\.so\.2.*; npm run setup:tfjs-node$/);
    expect(missing.note).not.toContain('\n');
    const present = tfjsNodeRows(undefined, '4.22.0');
    expect(present.unavailable.size).toBe(0);
    expect(present.note).toContain('@tensorflow/tfjs-node 4.22.0');
  });

  const { tfjsNodeLoadError } = require('../../scripts/tfjs-node-probe') as {
    tfjsNodeLoadError(): string | undefined;
  };
  const unavailable = tfjsNodeLoadError();
  const REGISTER = path.join(__dirname, '..', 'fixtures', 'worker-register.js');
  const runMain = (args: string[]): Promise<{ code: number | null; output: string }> =>
    new Promise((resolve, reject) => {
      const child = fork(path.join(__dirname, '..', '..', 'bench', 'main.ts'), args, {
        execArgv: ['-r', REGISTER],
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      });
      let output = '';
      child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
      child.on('error', reject);
      child.on('exit', (code) => resolve({ code, output }));
    });

  it('load a 1 MiB model by tf.loadLayersModel from file:// and safetensors:// beside loadTensors, each a round trip', async () => {
    if (unavailable !== undefined) {
      const why = `@tensorflow/tfjs-node does not load (${unavailable}); run \`npm run setup:tfjs-node\` to enable`;
      if (process.env.CI === 'true') throw new Error(`${why} (CI=true: this test must run)`);
      console.info(`bench tfjs-node rows: not run: ${why}`);
      return;
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-harness-'));
    try {
      const out = path.join(dir, 'out');
      const ids = ['native-verify', 'tfjs-node-load', 'tfjs-node-st-load'];
      const { code, output } = await runMain([
        ...['--only', 'load', '--sizes', '1', '--reps', '1', '--contenders', ids.join(',')],
        ...['--no-drop-caches', '--no-profile', '--dir', dir, '--out', out],
      ]);
      expect([code, code === 0 ? '' : output.slice(-2000)]).toEqual([0, '']);
      const res = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as {
        tfjsNode: string;
        load: { id: string; kind: string; ms: number[]; peakExtraKiB: number[]; errors: string[] }[];
        roundtrips: { backend: string; ok: boolean; detail: string }[];
      };
      expect(res.tfjsNode).toMatch(/tfjs-node rows: @tensorflow\/tfjs-node \S+, tensorflow backend/);
      // Warm only (--no-drop-caches); one sample each, with a peak memory reading, and no failure.
      expect(res.load.map((r) => [r.id, r.kind, r.ms.length, r.peakExtraKiB.length, r.errors])).toEqual(
        ids.map((id) => [id, 'warm', 1, 1, []]),
      );
      expect(res.roundtrips.map((r) => [r.backend, r.ok, r.detail])).toEqual([
        ['native', true, expect.stringContaining('all bytes equal')],
        ['tfjs-node file://', true, expect.stringMatching(/^322 weights of \d+ layers, all bytes equal$/)],
        ['tfjs-node safetensors://', true, expect.stringMatching(/^322 weights of \d+ layers, all bytes equal$/)],
      ]);
      const md = fs.readFileSync(path.join(out, 'results.md'), 'utf8');
      expect(md).toContain("tfjs-node tf.loadLayersModel('file://…/model.json')");
      expect(md).toContain("tf.loadLayersModel('safetensors://…') of this package");
      // The work directory (models, checkpoint) is removed; only --out remains.
      expect(fs.readdirSync(dir)).toEqual(['out']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
