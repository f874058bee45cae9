/**
 * The tfjs-checkpoint CLI, run as users run it: the compiled dist/lib/cli/main.js in a child process. Every command,
 * its --json output, and the bad inputs (exit codes, one-line errors, stack traces only with --verbose).
 */
import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import {
  CheckpointManager,
  INDEX_FILENAME,
  loadModel,
  readCheckpointInfo,
  saveCheckpoint,
  saveTensors,
  loadTensors,
  verifyCheckpoint,
  type NamedTensors,
} from '../../lib';
import { ensureBuilt } from '../helpers/dist-build';
import { CLI, type Run, runCli } from '../helpers/run-node';
import { plainSafetensors } from '../helpers/safetensors-file';
import { fileProgress } from '../../lib/cli/commands/verify';

const { NodeFileSystem } = require('@tensorflow/tfjs-node/dist/io/file_system.js') as {
  NodeFileSystem: new (p: string | string[]) => tf.io.IOHandler;
};

function cli(...args: string[]): Promise<Run> {
  return runCli(args, { cwd: dir, env: { ...process.env, NODE_NO_WARNINGS: '1' } });
}

/** A one-line error without a stack trace. */
function expectOneLineError(r: Run, pattern: RegExp): void {
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^tfjs-checkpoint: /);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

let dir: string;
let full: string; // a full-model checkpoint (topology, weights, Adam state)
let weightsOnly: string;
let managed: string; // a CheckpointManager directory with an index
let original: tf.LayersModel;
const probe = tf.tensor2d([
  [0.1, -0.2, 0.3],
  [1.5, 0.25, -0.75],
  [-2, 0, 1],
]);

function tinyModel(): tf.LayersModel {
  const m = tf.sequential({
    layers: [
      tf.layers.dense({ units: 5, inputShape: [3], activation: 'relu' }),
      tf.layers.dense({ units: 2, activation: 'softmax' }),
    ],
  });
  m.compile({ optimizer: tf.train.adam(0.01), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
  return m;
}

async function predictions(model: tf.LayersModel): Promise<Float32Array> {
  const y = model.predict(probe) as tf.Tensor;
  const data = (await y.data()) as Float32Array;
  y.dispose();
  return data;
}

/** Where a tensor's bytes start in the file. */
async function tensorOffset(file: string, name: string): Promise<number> {
  const info = await readCheckpointInfo(file);
  let offset = info.dataStart;
  for (const t of info.tensors) {
    if (t.name === name) return offset;
    offset += t.byteLength;
  }
  throw new Error(`no tensor ${name}`);
}

async function copyWithFlippedByte(src: string, dst: string, offset: number): Promise<void> {
  const bytes = await fsp.readFile(src);
  bytes[offset] ^= 0x10;
  await fsp.writeFile(dst, bytes);
}

beforeAll(async () => {
  await ensureBuilt();
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tfjs-ckpt-cli-'));
  original = tinyModel();
  await original.fit(
    tf.randomNormal([16, 3], 0, 1, 'float32', 1),
    tf.oneHot(tf.tensor1d([0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0], 'int32'), 2),
    {
      epochs: 1,
      verbose: 0,
    },
  );
  full = path.join(dir, 'full.safetensors');
  weightsOnly = path.join(dir, 'weights-only.safetensors');
  await saveCheckpoint(original, full, { epoch: 4, metrics: { val_loss: 0.25, val_acc: 0.9 }, monitor: 'val_loss' });
  await saveCheckpoint(original, weightsOnly, { weightsOnly: true });

  // The seed's run: val_accuracy per epoch; saveBestOnly keeps epochs 1, 3 and 7.
  managed = path.join(dir, 'run');
  const ckpt = new CheckpointManager({
    directory: managed,
    filename: 'mobilenet_v2_{epoch:02d}_{val_accuracy:.3f}.safetensors',
    monitor: 'val_accuracy',
    mode: 'max',
    async: false,
    durable: false,
  });
  const seed = [0.72, 0.7, 0.81, 0.8, 0.79, 0.8, 0.895, 0.85, 0.84, 0.83];
  for (let epoch = 0; epoch < seed.length; epoch++) {
    await ckpt.step(original, epoch, { val_accuracy: seed[epoch], val_loss: 1 - seed[epoch] });
  }
  await ckpt.close();
}, 300_000);

afterAll(async () => {
  probe.dispose();
  original?.dispose();
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

describe('global behaviour', () => {
  test.each(['ls', 'inspect', 'verify', 'export', 'import', 'plot'])(
    '%s --help prints its usage and exits 0',
    async (cmd) => {
      const r = await cli(cmd, '--help');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`Usage: tfjs-checkpoint ${cmd}`);
      expect(r.stdout).toContain('--json');
    },
  );

  test('--help lists every command and the exit codes', async () => {
    const r = await cli('--help');
    expect(r.code).toBe(0);
    for (const cmd of ['ls', 'inspect', 'verify', 'export', 'import', 'plot']) expect(r.stdout).toContain(cmd);
    expect(r.stdout).toMatch(/Exit codes:[\s\S]*2 {2}usage error/);
  });

  test('an unknown command or option is a one-line usage error, exit 2', async () => {
    const a = await cli('frobnicate');
    expect(a.code).toBe(2);
    expectOneLineError(a, /unknown command 'frobnicate'/);
    const b = await cli('inspect', full, '--bogus');
    expect(b.code).toBe(2);
    expectOneLineError(b, /unknown option '--bogus'/);
  });

  test('a missing argument is a usage error, exit 2', async () => {
    const r = await cli('inspect');
    expect(r.code).toBe(2);
    expectOneLineError(r, /missing required argument 'file'/);
  });
});

describe('inspect', () => {
  test('shows tensors, metadata, format version and backend', async () => {
    const r = await cli('inspect', full);
    expect(r.code).toBe(0);
    const info = await readCheckpointInfo(full);
    expect(r.stdout).toContain('Format:   tfjs-checkpoint format 1');
    expect(r.stdout).toMatch(/Backend: {2}(native|js)/);
    for (const t of info.tensors) {
      expect(r.stdout).toMatch(
        new RegExp(
          `${t.name.replace(/[/]/g, '\\/')}\\s+${t.dtype}\\s+\\[${t.shape.join(', ')}\\]\\s+${t.byteLength}\\n`,
        ),
      );
    }
    expect(r.stdout).toMatch(/monitor\s+val_loss/);
    expect(r.stdout).toMatch(/tfjs\.model_topology\s+\{"class_name":"Sequential".*--full shows all/);
  });

  test('--json gives the header as the library reads it', async () => {
    const r = await cli('inspect', full, '--json');
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout);
    const info = await readCheckpointInfo(full);
    expect(json.tensors).toEqual(info.tensors);
    expect(json.metadata).toEqual(info.metadata);
    expect(json.formatVersion).toBe('1');
    expect(['native', 'js']).toContain(json.backend);
  });

  test('a missing file: exit 3, one line; --verbose adds the stack', async () => {
    const missing = path.join(dir, 'nope.safetensors');
    const r = await cli('inspect', missing);
    expect(r.code).toBe(3);
    expectOneLineError(r, /ENOENT/);
    const v = await cli('inspect', missing, '--verbose');
    expect(v.code).toBe(3);
    expect(v.stderr).toMatch(/\n\s+at /);
  });

  test('a file that is not a checkpoint: exit 1, one line', async () => {
    const text = path.join(dir, 'notes.txt');
    await fsp.writeFile(text, 'these are not the tensors you are looking for\n');
    const r = await cli('inspect', text);
    expect(r.code).toBe(1);
    expectOneLineError(r, /Corrupt checkpoint .*ERR_CHECKPOINT_CORRUPT/);
  });

  test('with --json, an error is also a JSON document on stdout', async () => {
    const r = await cli('inspect', path.join(dir, 'nope.safetensors'), '--json');
    expect(r.code).toBe(3);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, exitCode: 3, error: { code: 'ENOENT' } });
  });
});

describe('inspect at scale', () => {
  // Math.max(...values) over 200k values overflowed the stack (exit 4, uncoded) on these valid files.
  test('a valid file with 200k tensors or 200k metadata keys is listed (exit 0), its widest entry aligned', async () => {
    const tensors: Record<string, unknown> = {};
    for (let i = 0; i < 200_000; i++) tensors[`layer${i}/w`] = { dtype: 'F32', shape: [0], data_offsets: [0, 0] };
    const many = path.join(dir, 'many-tensors.safetensors');
    await fsp.writeFile(many, plainSafetensors(tensors));
    const r = await cli('inspect', many);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Tensors:  200000');
    expect(r.stdout).toMatch(/\nlayer199999\/w {2}F32 {4}\[0\] +0\n/);
    const metadata: Record<string, string> = {};
    for (let i = 0; i < 200_000; i++) metadata[`key${i}`] = 'v';
    const keys = path.join(dir, 'many-keys.safetensors');
    await fsp.writeFile(keys, plainSafetensors({ __metadata__: metadata }));
    const k = await cli('inspect', keys);
    expect(k.code).toBe(0);
    expect(k.stdout).toContain('  key199999  v\n');
    expect(k.stdout).toContain('  key0       v\n');
  }, 120_000);

  test('inspect lists every safetensors dtype by its name', async () => {
    const dtypes = ['BOOL', 'U8', 'I8', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64'];
    const header: Record<string, unknown> = {};
    dtypes.forEach((d) => (header[`t_${d}`] = { dtype: d, shape: [0], data_offsets: [0, 0] }));
    const file = path.join(dir, 'dtypes.safetensors');
    await fsp.writeFile(file, plainSafetensors(header));
    const r = await cli('inspect', file);
    expect(r.code).toBe(0);
    for (const d of dtypes) expect(r.stdout).toMatch(new RegExp(`t_${d}\\s+${d}\\s`));
  });
});

describe('verify', () => {
  test('a good file and a good directory: exit 0', async () => {
    const a = await cli('verify', full);
    expect(a.code).toBe(0);
    expect(a.stdout).toMatch(/^OK {6}.*full\.safetensors \(\d+ tensors/);
    const b = await cli('verify', managed);
    expect(b.code).toBe(0);
    expect(b.stdout).toContain('All 3 checkpoint(s) OK');
  });

  test('a flipped bit in a tensor: exit 1, naming the tensor', async () => {
    const name = (await readCheckpointInfo(full)).tensors.find((t) => !t.name.startsWith('__'))!.name;
    const bad = path.join(dir, 'bad', 'flipped.safetensors');
    await fsp.mkdir(path.dirname(bad), { recursive: true });
    await copyWithFlippedByte(full, bad, (await tensorOffset(full, name)) + 2);
    const r = await cli('verify', bad);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`FAILED  ${bad}: Checksum mismatch in tensor ${JSON.stringify(name)}`);
    const j = await cli('verify', bad, '--json');
    expect(j.code).toBe(1);
    expect(JSON.parse(j.stdout)).toMatchObject({
      ok: false,
      failed: 1,
      files: [{ path: bad, ok: false, code: 'ERR_CHECKPOINT_CHECKSUM', tensor: name }],
    });
  });

  test('a directory with one corrupt file among good ones: exit 1, each file reported', async () => {
    const mixed = path.join(dir, 'mixed');
    await fsp.mkdir(mixed);
    await fsp.copyFile(full, path.join(mixed, 'a.safetensors'));
    const bytes = await fsp.readFile(full);
    await fsp.writeFile(path.join(mixed, 'b.safetensors'), bytes.subarray(0, bytes.length - 3)); // truncated
    const r = await cli('verify', mixed);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^OK .*a\.safetensors/m);
    expect(r.stdout).toMatch(/^FAILED .*b\.safetensors: .*ERR_CHECKPOINT_CORRUPT/m);
    expect(r.stdout).toContain('1 of 2 checkpoint(s) FAILED');
  });

  test('a safetensors file without checksums: exit 1', async () => {
    const header = Buffer.from(JSON.stringify({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }).padEnd(48));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    const foreign = path.join(dir, 'foreign', 'plain.safetensors');
    await fsp.mkdir(path.dirname(foreign), { recursive: true });
    await fsp.writeFile(foreign, Buffer.concat([len, header, Buffer.alloc(4)]));
    const r = await cli('verify', foreign);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('ERR_CHECKPOINT_UNVERIFIED');
    // inspect still reads it, and says it has no checksums.
    const i = await cli('inspect', foreign);
    expect(i.code).toBe(0);
    expect(i.stdout).toContain('plain safetensors, no tfjs-checkpoint checksums');
  });

  test('large files: a progress bar when stdout is a terminal, plain lines otherwise', async () => {
    const big = path.join(dir, 'big');
    for (const name of ['a', 'b']) {
      const data = new Float32Array(5 * 1024 * 1024).fill(0.5); // 20 MiB each: 40 MiB in all, above the 32 MiB bar threshold
      await saveTensors(
        path.join(big, `${name}.safetensors`),
        { w: { dtype: 'float32', shape: [data.length], data } },
        { durable: false },
      );
    }
    // util-linux `script` runs the CLI on a pseudo-terminal (stdout and stderr both go to it).
    const tty = spawnSync(
      'script',
      ['-qec', `${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} verify ${JSON.stringify(big)}`, '/dev/null'],
      {
        encoding: 'utf8',
      },
    );
    expect(tty.status).toBe(0);
    expect(tty.stdout).toMatch(/[\u2588\u2591]{10,}/); // the bar's full and empty cells
    expect(tty.stdout).toContain('MiB');
    expect(tty.stdout).toMatch(/OK .*a\.safetensors/);
    const plain = await cli('verify', big);
    expect(plain.code).toBe(0);
    expect(plain.stdout + plain.stderr).not.toMatch(/[\u2588\u2591]/);
    expect(plain.stdout.trim().split('\n')).toEqual([
      expect.stringMatching(/^OK {6}.*a\.safetensors \(1 tensors, 20\.0 MiB\)$/),
      expect.stringMatching(/^OK {6}.*b\.safetensors \(1 tensors, 20\.0 MiB\)$/),
      'All 2 checkpoint(s) OK',
    ]);
  });

  test('the progress bar moves within a file as verifyCheckpoint reports its groups, and ends at the file size', async () => {
    const file = path.join(dir, 'grouped.safetensors');
    const data = () => new Float32Array(1000).fill(0.25);
    await saveTensors(file, {
      a: { dtype: 'float32', shape: [1000], data: data() },
      b: { dtype: 'float32', shape: [1000], data: data() },
      c: { dtype: 'float32', shape: [1000], data: data() },
    });
    const advances: [number, string][] = [];
    const progress = { shown: true, advance: (d: number, l: string) => advances.push([d, l]), stop: () => undefined };
    const bar = fileProgress(progress, 'grouped.safetensors');
    await verifyCheckpoint(file, { groupBytes: 4000, onProgress: bar.onProgress });
    const size = (await fsp.stat(file)).size;
    bar.finish(size);
    // 0 at the start, then each group's 4000 bytes, then the header's bytes.
    expect(advances.map(([d]) => d)).toEqual([0, 4000, 4000, 4000, size - 12000]);
    expect(new Set(advances.map(([, l]) => l))).toEqual(new Set(['grouped.safetensors']));
  });

  test('a missing path: exit 3; an empty directory: exit 1', async () => {
    const a = await cli('verify', path.join(dir, 'nowhere'));
    expect(a.code).toBe(3);
    expectOneLineError(a, /ENOENT/);
    const empty = path.join(dir, 'empty');
    await fsp.mkdir(empty);
    const b = await cli('verify', empty);
    expect(b.code).toBe(1);
    expectOneLineError(b, /No checkpoint files/);
  });
});

describe('export and import', () => {
  test('export writes a layers model that tfjs-node file:// loader builds, predicting identically', async () => {
    const out = path.join(dir, 'exported');
    const r = await cli('export', full, out);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Exported ${full} to ${path.join(out, 'model.json')}`);
    const json = JSON.parse(await fsp.readFile(path.join(out, 'model.json'), 'utf8'));
    expect(json.format).toBe('layers-model');
    expect(json.weightsManifest[0].paths).toEqual(['group1-shard1of1.bin']);
    const loaded = await tf.loadLayersModel(new NodeFileSystem(path.join(out, 'model.json')));
    expect(Buffer.from((await predictions(loaded)).buffer)).toEqual(Buffer.from((await predictions(original)).buffer));
    loaded.dispose();
  });

  test('export of a file without our checksums: refused by default (exit 1), exported with --no-verify, which it says', async () => {
    const { tensors, metadata } = await loadTensors(full);
    const plain = path.join(dir, 'plain-with-topology.safetensors');
    await saveTensors(plain, tensors as NamedTensors, { metadata, durable: false });
    // Strip our checksum keys: what a tool that keeps only user metadata writes.
    const bytes = await fsp.readFile(plain);
    const n = Number(bytes.readBigUInt64LE(0));
    const json = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
    for (const k of Object.keys(json.__metadata__)) if (k.startsWith('tfjs_checkpoint.')) delete json.__metadata__[k];
    await fsp.writeFile(plain, plainSafetensors(json, bytes.subarray(8 + n)));
    const refused = await cli('export', plain, path.join(dir, 'plain-out'));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('ERR_CHECKPOINT_UNVERIFIED');
    const r = await cli('export', plain, path.join(dir, 'plain-out'), '--no-verify');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('NOT verified (--no-verify)');
  });

  test('export splits weights into shards of --shard-size, still loading identically', async () => {
    const out = path.join(dir, 'sharded');
    const r = await cli('export', full, out, '--shard-size', String(40 / (1024 * 1024)));
    expect(r.code).toBe(0);
    const json = JSON.parse(await fsp.readFile(path.join(out, 'model.json'), 'utf8'));
    const shards: string[] = json.weightsManifest[0].paths;
    expect(shards.length).toBeGreaterThan(2);
    for (const s of shards) expect((await fsp.stat(path.join(out, s))).size).toBeLessThanOrEqual(40);
    const loaded = await tf.loadLayersModel(new NodeFileSystem(path.join(out, 'model.json')));
    expect(Buffer.from((await predictions(loaded)).buffer)).toEqual(Buffer.from((await predictions(original)).buffer));
    loaded.dispose();
  });

  test('export --include-optimizer writes the optimizer weights too', async () => {
    const out = path.join(dir, 'with-optimizer');
    const r = await cli('export', full, out, '--include-optimizer');
    expect(r.code).toBe(0);
    const json = JSON.parse(await fsp.readFile(path.join(out, 'model.json'), 'utf8'));
    const groups = json.weightsManifest[0].weights.map((w: { group?: string }) => w.group);
    expect(groups).toContain('optimizer');
  });

  test('export of a weights-only checkpoint: exit 1, one line', async () => {
    const r = await cli('export', weightsOnly, path.join(dir, 'nothing'));
    expect(r.code).toBe(1);
    expectOneLineError(r, /weights only, no model topology/);
  });

  test('export with a bad --shard-size: exit 2', async () => {
    const r = await cli('export', full, path.join(dir, 'x'), '--shard-size', '-1');
    expect(r.code).toBe(2);
    expectOneLineError(r, /shard-size/);
  });

  test('import of an exported model restores the same weights bit for bit', async () => {
    const out = path.join(dir, 'roundtrip');
    expect((await cli('export', full, out)).code).toBe(0);
    const imported = path.join(dir, 'imported.safetensors');
    const r = await cli('import', out, imported);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Imported ${path.join(out, 'model.json')} into ${imported}`);
    const a = await loadTensors(full);
    const b = await loadTensors(imported);
    for (const name of Object.keys(b.tensors)) {
      expect(Buffer.from(b.tensors[name].data.buffer)).toEqual(Buffer.from(a.tensors[name].data.buffer));
    }
    const model = await loadModel(imported);
    expect(Buffer.from((await predictions(model)).buffer)).toEqual(Buffer.from((await predictions(original)).buffer));
    model.dispose();
  });

  test('import reads what tfjs-node file:// handler saved', async () => {
    const saved = path.join(dir, 'tfjs-node-saved');
    await original.save(new NodeFileSystem(saved));
    const imported = path.join(dir, 'from-tfjs-node.safetensors');
    const r = await cli('import', path.join(saved, 'model.json'), imported, '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ checkpoint: imported, includeOptimizer: false });
    const model = await loadModel(imported);
    expect(Buffer.from((await predictions(model)).buffer)).toEqual(Buffer.from((await predictions(original)).buffer));
    model.dispose();
  });

  test('import of a directory without model.json: exit 3; of an invalid model.json: exit 1', async () => {
    const empty = path.join(dir, 'no-model');
    await fsp.mkdir(empty);
    const a = await cli('import', empty, path.join(dir, 'x.safetensors'));
    expect(a.code).toBe(3);
    expectOneLineError(a, /ENOENT/);
    const junk = path.join(dir, 'junk-model');
    await fsp.mkdir(junk);
    await fsp.writeFile(path.join(junk, 'model.json'), '{"hello": 1}');
    const b = await cli('import', junk, path.join(dir, 'x.safetensors'));
    expect(b.code).toBe(1);
    expectOneLineError(b, /not a tfjs layers model/);
  });

  test('import of a model.json whose shards are torn: exit 1', async () => {
    const out = path.join(dir, 'torn');
    expect((await cli('export', full, out)).code).toBe(0);
    const shard = path.join(out, 'group1-shard1of1.bin');
    await fsp.truncate(shard, (await fsp.stat(shard)).size - 4);
    const r = await cli('import', out, path.join(dir, 'torn.safetensors'));
    expect(r.code).toBe(1);
    expectOneLineError(r, /torn or mismatched export/);
  });
});

describe('ls', () => {
  test("lists the index's checkpoints with epoch, metric, size and time, best and last marked", async () => {
    const r = await cli('ls', managed);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('3 checkpoint(s), from the index');
    expect(r.stdout).toContain('monitor: val_accuracy (max)');
    expect(r.stdout).toMatch(
      /^\s+1\s+0\.7200\s+[\d.]+ (KiB|B)\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+mobilenet_v2_01_0\.720\.safetensors\s*$/m,
    );
    expect(r.stdout).toMatch(/^\s+3\s+0\.8100 .*mobilenet_v2_03_0\.810\.safetensors\s*$/m);
    expect(r.stdout).toMatch(/^\s+7\s+0\.8950 .*mobilenet_v2_07_0\.895\.safetensors\s+best,last$/m);
  });

  test('--json gives best, last and sizes', async () => {
    const r = await cli('ls', managed, '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({
      source: 'index',
      monitor: 'val_accuracy',
      mode: 'max',
      best: 'mobilenet_v2_07_0.895.safetensors',
    });
    expect(j.checkpoints.map((c: { epoch: number }) => c.epoch)).toEqual([0, 2, 6]);
    const size = (await fsp.stat(path.join(managed, 'mobilenet_v2_07_0.895.safetensors'))).size;
    expect(j.checkpoints[2]).toMatchObject({ size, best: true, last: true, score: 0.895 });
  });

  test('without an index, lists from the files metadata; a damaged index says so', async () => {
    const copy = path.join(dir, 'run-copy');
    await fsp.cp(managed, copy, { recursive: true });
    await fsp.rm(path.join(copy, INDEX_FILENAME));
    const a = await cli('ls', copy, '--json');
    expect(a.code).toBe(0);
    const ja = JSON.parse(a.stdout);
    expect(ja).toMatchObject({
      source: 'metadata',
      monitor: 'val_accuracy',
      best: 'mobilenet_v2_07_0.895.safetensors',
    });
    expect(ja.checkpoints.map((c: { score: number }) => c.score)).toEqual([0.72, 0.81, 0.895]);
    await fsp.writeFile(path.join(copy, INDEX_FILENAME), '{ torn');
    const b = await cli('ls', copy);
    expect(b.code).toBe(0);
    expect(b.stdout).toContain("from the files' metadata (the index is damaged");
    expect(b.stdout).toMatch(/mobilenet_v2_07_0\.895\.safetensors\s+best,last$/m);
  });

  test('a checkpoint the index lists but the disk lacks is marked MISSING', async () => {
    const copy = path.join(dir, 'run-missing');
    await fsp.cp(managed, copy, { recursive: true });
    await fsp.rm(path.join(copy, 'mobilenet_v2_03_0.810.safetensors'));
    const r = await cli('ls', copy);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/mobilenet_v2_03_0\.810\.safetensors\s+MISSING$/m);
  });

  test('a missing directory: exit 3; a file instead of a directory: exit 3', async () => {
    const a = await cli('ls', path.join(dir, 'nowhere'));
    expect(a.code).toBe(3);
    expectOneLineError(a, /ENOENT/);
    const b = await cli('ls', full);
    expect(b.code).toBe(3);
    expectOneLineError(b, /ENOTDIR/);
  });
});

describe('plot', () => {
  function groups(svg: string, name: string): string {
    const m = new RegExp(`<g class="[^"]*\\b${name}_marks"[^>]*>([\\s\\S]*?)</g>`).exec(svg);
    if (!m) throw new Error(`no ${name}_marks group in the SVG`);
    return m[1];
  }

  test("draws every epoch of the manager's history, a marker per saved checkpoint and the best highlighted (SVG)", async () => {
    const out = path.join(dir, 'plots', 'run.svg');
    const r = await cli('plot', managed, '--out', out);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Wrote ${out}: 10 epoch(s) of val_accuracy, 3 saved, best epoch 7 (0.8950)`);
    const svg = await fsp.readFile(out, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    // The curve: one path through the ten epochs the CheckpointManager recorded (saveBestOnly saved three).
    const curve = groups(svg, 'curve');
    const d = /<path[^>]* d="([^"]+)"/.exec(curve)![1];
    expect(d.match(/[ML]/g)).toEqual(['M', ...Array(9).fill('L')]);
    // The saved checkpoints: one marker each, labelled with epoch and value.
    const saved = groups(svg, 'saved');
    const labels = [...saved.matchAll(/aria-label="([^"]+)"/g)].map((m) => m[1]);
    expect(labels).toHaveLength(3);
    expect(labels[0]).toMatch(/epoch: 1; val_accuracy: 0\.72/);
    expect(labels[1]).toMatch(/epoch: 3; val_accuracy: 0\.81/);
    expect(labels[2]).toMatch(/epoch: 7; val_accuracy: 0\.895/);
    // The best: one red diamond at epoch 7, and its label.
    const best = groups(svg, 'best');
    expect([...best.matchAll(/<path/g)]).toHaveLength(1);
    expect(best).toMatch(/aria-label="epoch: 7; val_accuracy: 0\.895/);
    expect(best).toMatch(/fill="#d62728"/);
    expect(groups(svg, 'bestlabel')).toContain('best 0.8950');
    const j = JSON.parse((await cli('plot', managed, '--out', out, '--json')).stdout);
    expect(j).toMatchObject({ source: 'index history', points: 10, saved: 3, best: { epoch: 7, value: 0.895 } });
  });

  test('without a history in the index (or without an index), one point per saved checkpoint', async () => {
    const copy = path.join(dir, 'run-no-history');
    await fsp.cp(managed, copy, { recursive: true });
    const index = JSON.parse(await fsp.readFile(path.join(copy, INDEX_FILENAME), 'utf8'));
    expect(index.history).toHaveLength(10);
    delete index.history;
    await fsp.writeFile(path.join(copy, INDEX_FILENAME), JSON.stringify(index));
    const out = path.join(dir, 'plots', 'no-history.svg');
    const r = await cli('plot', copy, '--out', out, '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ source: 'index', points: 3, saved: 3, best: { epoch: 7 } });
    const svg = await fsp.readFile(out, 'utf8');
    expect(/<path[^>]* d="([^"]+)"/.exec(groups(svg, 'curve'))![1].match(/[ML]/g)).toEqual(['M', 'L', 'L']);
    expect([...groups(svg, 'saved').matchAll(/<path/g)]).toHaveLength(3);

    await fsp.rm(path.join(copy, INDEX_FILENAME));
    const m = await cli('plot', copy, '--out', out, '--json');
    expect(JSON.parse(m.stdout)).toMatchObject({ source: 'metadata', points: 3, saved: 3, best: { epoch: 7 } });
  });

  test('--out FILE.html writes a self-contained page around the SVG', async () => {
    const out = path.join(dir, 'plots', 'run.html');
    const r = await cli('plot', managed, '--out', out);
    expect(r.code).toBe(0);
    const html = await fsp.readFile(out, 'utf8');
    expect(html).toMatch(/^<!DOCTYPE html>/);
    expect(html).toContain('<svg');
    expect(html).not.toContain('<script');
  });

  test('the default output is DIR/metrics.svg', async () => {
    const copy = path.join(dir, 'run-default-plot');
    await fsp.cp(managed, copy, { recursive: true });
    expect((await cli('plot', copy)).code).toBe(0);
    expect((await fsp.readFile(path.join(copy, 'metrics.svg'), 'utf8')).startsWith('<svg')).toBe(true);
  });

  test('an --out that is not .svg or .html: exit 2; a directory without metrics: exit 1', async () => {
    const a = await cli('plot', managed, '--out', path.join(dir, 'x.png'));
    expect(a.code).toBe(2);
    expectOneLineError(a, /\.svg or \.html/);
    const empty = path.join(dir, 'plot-empty');
    await fsp.mkdir(empty);
    const b = await cli('plot', empty);
    expect(b.code).toBe(1);
    expectOneLineError(b, /No checkpoints with a monitored metric/);
  });
});

describe('shard sets', () => {
  /** A directory holding `full`'s model saved as a shard set, and a manager run writing sets. */
  async function setFixture(): Promise<{ setDir: string; index: string; run: string }> {
    const setDir = path.join(dir, 'set');
    await saveCheckpoint(original, path.join(setDir, 'model.safetensors'), { maxShardSize: 64, epoch: 2 });
    const run = path.join(dir, 'run-sets');
    const ckpt = new CheckpointManager({
      directory: run,
      filename: 'e{epoch:02d}.safetensors',
      monitor: 'val_loss',
      async: false,
      durable: false,
      maxShardSize: 64,
    });
    for (const [epoch, loss] of [0.5, 0.4, 0.45].entries()) await ckpt.step(original, epoch, { val_loss: loss });
    await ckpt.close();
    return { setDir, index: path.join(setDir, 'model.safetensors.index.json'), run };
  }
  let fx: { setDir: string; index: string; run: string };
  beforeAll(async () => {
    fx = await setFixture();
  });

  test('inspect, verify and export take the index or its directory; ls lists a run of sets by checkpoint name', async () => {
    for (const target of [fx.index, fx.setDir]) {
      const inspect = await cli('inspect', target, '--json');
      expect(inspect.code).toBe(0);
      const info = JSON.parse(inspect.stdout);
      expect(info.path).toBe(fx.index);
      expect(info.shards.length).toBeGreaterThan(2);
      expect(info.metadata.epoch).toBe('2');
      const verify = await cli('verify', target);
      expect(verify.code).toBe(0);
      expect(verify.stdout).toMatch(
        new RegExp(`^OK +${fx.index} \\(\\d+ tensors, .*, ${info.shards.length} shards\\)`),
      );
    }
    const out = path.join(dir, 'exported-from-set');
    expect((await cli('export', fx.setDir, out)).code).toBe(0);
    const loaded = await tf.loadLayersModel(new NodeFileSystem(path.join(out, 'model.json')));
    expect(Buffer.from((await predictions(loaded)).buffer)).toEqual(Buffer.from((await predictions(original)).buffer));
    loaded.dispose();

    const ls = await cli('ls', fx.run, '--json');
    expect(ls.code).toBe(0);
    const listing = JSON.parse(ls.stdout);
    expect(listing.checkpoints.map((c: { file: string }) => c.file)).toEqual(['e01.safetensors', 'e02.safetensors']);
    for (const c of listing.checkpoints) expect(c.size).toBeGreaterThan(0);
    // Without the manager's index, the listing reads each set's own metadata, never a shard as a checkpoint.
    const copy = path.join(dir, 'run-sets-noindex');
    await fsp.cp(fx.run, copy, { recursive: true });
    await fsp.unlink(path.join(copy, 'tfjs-checkpoint.index.json'));
    const ls2 = JSON.parse((await cli('ls', copy, '--json')).stdout);
    expect(ls2.source).toBe('metadata');
    expect(ls2.checkpoints.map((c: { file: string }) => c.file)).toEqual(['e01.safetensors', 'e02.safetensors']);
    const all = await cli('verify', fx.run);
    expect(all.code).toBe(0);
    expect(all.stdout).toContain('All 2 checkpoint(s) OK');
  });

  test('verify of a set with a damaged shard exits 1 naming the shard', async () => {
    const copy = path.join(dir, 'set-damaged');
    await fsp.cp(fx.setDir, copy, { recursive: true });
    const index = JSON.parse(await fsp.readFile(path.join(copy, 'model.safetensors.index.json'), 'utf8'));
    const shard = path.join(copy, Object.values(index.weight_map as Record<string, string>)[0]);
    const bytes = await fsp.readFile(shard);
    bytes[bytes.length - 1] ^= 1;
    await fsp.writeFile(shard, bytes);
    const r = await cli('verify', copy);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`FAILED  ${path.join(copy, 'model.safetensors.index.json')}`);
    expect(r.stdout).toContain(shard);
  });
});
