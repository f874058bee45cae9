/**
 * Shard sets (lib/io/shards.ts): planning, writing, reading through every reader entry point, verification against the
 * index, replacement without ever exposing a half set, failure cleanup. Run over both backends.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import {
  ErrorCode,
  LoadedTensor,
  NamedTensors,
  loadTensors,
  readCheckpointInfo,
  saveTensors,
  verifyCheckpoint,
} from '../../lib';
import {
  DEFAULT_MAX_SHARD_SIZE,
  SHARD_PATTERN,
  checkpointNames,
  parseShardSize,
  planShards,
  readShardIndex,
  removeCheckpoint,
  removeOrphanShards,
} from '../../lib/io/shards';
import { BACKENDS, leftoverTemps, rng, tempDir, useBackend } from '../helpers/backends';
import { getBackend } from '../../lib/backend/select';
import { PYTHON_HINT, findPythonSafetensors, runPython } from '../helpers/python-safetensors';

/** Eight float32 tensors of 400 bytes, two int32 of 40, one bool of 4: 3284 bytes of data. */
function sample(seed = 7): NamedTensors {
  const r = rng(seed);
  const t: NamedTensors = {};
  for (let i = 0; i < 8; i++) {
    t[`layer${i}/kernel`] = { dtype: 'float32', shape: [10, 10], data: Float32Array.from({ length: 100 }, r) };
  }
  t['counts/a'] = { dtype: 'int32', shape: [10], data: Int32Array.from({ length: 10 }, (_, i) => i - 5) };
  t['counts/b'] = { dtype: 'int32', shape: [2, 5], data: Int32Array.from({ length: 10 }, (_, i) => i * 1000) };
  t.mask = { dtype: 'bool', shape: [4], data: new Uint8Array([1, 0, 1, 1]) };
  return t;
}

function expectSame(actual: Record<string, LoadedTensor>, expected: NamedTensors): void {
  expect(Object.keys(actual).sort()).toEqual(Object.keys(expected).sort());
  for (const [name, t] of Object.entries(expected)) {
    expect({ name, dtype: actual[name].dtype, shape: actual[name].shape }).toEqual({
      name,
      dtype: t.dtype,
      shape: t.shape,
    });
    expect(Buffer.from(actual[name].data.buffer)).toEqual(
      Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength),
    );
  }
}

async function shardFiles(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir)).filter((n) => SHARD_PATTERN.test(n)).sort();
}

describe('shard planning', () => {
  test('planShards fills shards in order up to the limit and gives an oversized tensor a shard of its own', () => {
    expect(planShards([400, 400, 400, 1000, 100, 100], 900)).toEqual([[0, 1], [2], [3], [4, 5]]);
    expect(planShards([], 10)).toEqual([[]]);
    expect(planShards([5, 5], 10)).toEqual([[0, 1]]);
  });

  test('parseShardSize takes bytes and transformers-style size strings, and refuses anything else', () => {
    expect(parseShardSize('5GB', 'x')).toBe(DEFAULT_MAX_SHARD_SIZE);
    expect(parseShardSize('512MiB', 'x')).toBe(512 * 2 ** 20);
    expect(parseShardSize('1.5kb', 'x')).toBe(1500);
    expect(parseShardSize(4096, 'x')).toBe(4096);
    for (const bad of [0, -1, 1.5, '5 parsecs', '', 'GB', null, {}]) {
      expect(() => parseShardSize(bad, 'options.maxShardSize')).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }),
      );
    }
  });

  test('checkpointNames lists sets under their checkpoint name and hides our shard files', () => {
    expect(
      checkpointNames([
        'a.safetensors',
        'm.safetensors.index.json',
        'm-0123abcd-00001-of-00002.safetensors',
        'm-0123abcd-00002-of-00002.safetensors',
        'model-00001-of-00002.safetensors',
        '.hidden.safetensors',
        'notes.txt',
      ]),
    ).toEqual(['a.safetensors', 'm.safetensors', 'model-00001-of-00002.safetensors']);
  });
});

describe.each(BACKENDS)('shard sets (%s backend)', (backend) => {
  useBackend(backend);

  test('a sharded save writes HF-layout shards of at most maxShardSize plus an index that maps every tensor', async () => {
    const dir = await tempDir();
    const tensors = sample();
    await saveTensors(path.join(dir, 'model.safetensors'), tensors, { maxShardSize: 900, metadata: { epoch: '3' } });
    const files = await shardFiles(dir);
    // The float32 tensors in pairs of 800 bytes; 40 + 40 + 4 still fit beside the last pair (884): 4 shards.
    expect(files).toHaveLength(4);
    expect(files.every((f, i) => f.endsWith(`-0000${i + 1}-of-00004.safetensors`))).toBe(true);
    expect(new Set(files.map((f) => SHARD_PATTERN.exec(f)?.[2])).size).toBe(1); // one set id
    await expect(fsp.stat(path.join(dir, 'model.safetensors'))).rejects.toMatchObject({ code: 'ENOENT' });
    const raw = JSON.parse(await fsp.readFile(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    expect(raw.metadata.total_size).toBe(3284);
    expect(Object.keys(raw.weight_map).sort()).toEqual(Object.keys(tensors).sort());
    const index = await readShardIndex(path.join(dir, 'model.safetensors.index.json'));
    expect(index.ours?.metadata).toEqual({ epoch: '3' });
    for (const s of index.ours!.shards) {
      const st = await fsp.stat(path.join(dir, s.file));
      expect(st.size).toBe(s.size);
      const info = await readCheckpointInfo(path.join(dir, s.file));
      expect(info.tensors.reduce((a, t) => a + t.byteLength, 0)).toBeLessThanOrEqual(900);
      expect(info.metadata).toEqual({ epoch: '3' }); // every shard is an ordinary, complete checkpoint file
    }
    expect(await leftoverTemps(dir)).toEqual([]);
  });

  test('every reader accepts the saved name, the index and the directory, and returns the tensors bit-exact', async () => {
    const dir = await tempDir();
    const tensors = sample();
    await saveTensors(path.join(dir, 'model.safetensors'), tensors, { maxShardSize: 1000, metadata: { a: 'b' } });
    for (const p of [path.join(dir, 'model.safetensors'), path.join(dir, 'model.safetensors.index.json'), dir]) {
      const loaded = await loadTensors(p);
      expectSame(loaded.tensors, tensors);
      expect(loaded.metadata).toEqual({ a: 'b' });
      const info = await readCheckpointInfo(p);
      expect(info.path).toBe(path.join(dir, 'model.safetensors.index.json'));
      expect(info.tensors.map((t) => t.name).sort()).toEqual(Object.keys(tensors).sort());
      expect(info.shards).toHaveLength(4);
      expect(info.formatVersion).toBe('1');
      expect(info.fileSize).toBe(info.shards!.reduce((a, s) => a + s.fileSize, 0));
      const progress: number[] = [];
      const v = await verifyCheckpoint(p, { groupBytes: 500, onProgress: (d, total) => progress.push(d, total) });
      expect(v).toEqual({ path: info.path, tensors: 11, bytes: 3284, shards: 4 });
      expect(progress[progress.length - 2]).toBe(3284);
      expect(progress.filter((_, i) => i % 2 === 1).every((t) => t === 3284)).toBe(true);
    }
  });

  test('a bit flip in any shard fails loadTensors and verifyCheckpoint with a checksum error naming the file', async () => {
    const dir = await tempDir();
    await saveTensors(path.join(dir, 'm.safetensors'), sample(), { maxShardSize: 900 });
    const [, second] = await shardFiles(dir);
    const file = path.join(dir, second);
    const bytes = await fsp.readFile(file);
    bytes[bytes.length - 3] ^= 0x10;
    await fsp.writeFile(file, bytes);
    await expect(loadTensors(dir)).rejects.toMatchObject({ code: ErrorCode.CHECKSUM, path: file });
    await expect(verifyCheckpoint(dir)).rejects.toMatchObject({ code: ErrorCode.CHECKSUM, path: file });
  });

  test('a shard swapped for one of another set is refused: the index records each shard header CRC32C', async () => {
    const a = await tempDir();
    const b = await tempDir();
    await saveTensors(path.join(a, 'm.safetensors'), sample(1), { maxShardSize: 900 });
    await saveTensors(path.join(b, 'm.safetensors'), sample(2), { maxShardSize: 900 });
    const [fa] = await shardFiles(a);
    const [fb] = await shardFiles(b);
    await fsp.copyFile(path.join(b, fb), path.join(a, fa)); // same tensors, same size, other values: valid on its own
    await expect(verifyCheckpoint(path.join(a, fa))).resolves.toBeDefined();
    for (const op of [loadTensors, verifyCheckpoint, readCheckpointInfo]) {
      await expect(op(a)).rejects.toMatchObject({ code: ErrorCode.CHECKSUM, path: path.join(a, fa) });
    }
  });

  test('an index whose weight_map disagrees with the shards is refused as corrupt', async () => {
    const dir = await tempDir();
    await saveTensors(path.join(dir, 'm.safetensors'), sample(), { maxShardSize: 900 });
    const indexPath = path.join(dir, 'm.safetensors.index.json');
    const raw = JSON.parse(await fsp.readFile(indexPath, 'utf8'));
    const files = await shardFiles(dir);
    raw.weight_map['layer0/kernel'] = files[1];
    await fsp.writeFile(indexPath, JSON.stringify(raw));
    for (const op of [loadTensors, verifyCheckpoint, readCheckpointInfo]) {
      await expect(op(dir)).rejects.toMatchObject({ code: ErrorCode.CORRUPT, path: indexPath });
    }
    await fsp.writeFile(indexPath, '{"weight_map": ');
    await expect(loadTensors(indexPath)).rejects.toMatchObject({ code: ErrorCode.CORRUPT });
    raw.weight_map['layer0/kernel'] = '../elsewhere.safetensors';
    await fsp.writeFile(indexPath, JSON.stringify(raw));
    await expect(loadTensors(indexPath)).rejects.toMatchObject({ code: ErrorCode.CORRUPT });
  });

  test('a missing shard fails the load with ENOENT naming it', async () => {
    const dir = await tempDir();
    await saveTensors(path.join(dir, 'm.safetensors'), sample(), { maxShardSize: 900 });
    const [, , third] = await shardFiles(dir);
    await fsp.unlink(path.join(dir, third));
    await expect(loadTensors(dir)).rejects.toMatchObject({ code: 'ENOENT', path: path.join(dir, third) });
  });

  test('re-saving under the same name replaces the checkpoint whole: file to set, set to set (new set id, old shards deleted), set to file', async () => {
    const dir = await tempDir();
    const target = path.join(dir, 'm.safetensors');
    await saveTensors(target, sample(1)); // a single file first
    await saveTensors(target, sample(2), { maxShardSize: 900 });
    const first = await shardFiles(dir);
    await expect(fsp.stat(target)).rejects.toMatchObject({ code: 'ENOENT' }); // would shadow the set
    await saveTensors(target, sample(3), { maxShardSize: 2000 });
    const second = await shardFiles(dir);
    expect(second).toHaveLength(2);
    expect(second.some((f) => first.includes(f))).toBe(false);
    expectSame((await loadTensors(target)).tensors, sample(3));
    // And back to one file: the set under that name goes, so the directory holds one checkpoint, the new one.
    await saveTensors(target, sample(4));
    expect(await fsp.readdir(dir)).toEqual(['m.safetensors']);
    expectSame((await loadTensors(target)).tensors, sample(4));
  });

  test('a failed shard write leaves the previous set intact and none of the new shards nor temp files', async () => {
    const dir = await tempDir();
    const target = path.join(dir, 'm.safetensors');
    await saveTensors(target, sample(1), { maxShardSize: 900 });
    const kept = await shardFiles(dir);
    const indexKept = await fsp.readFile(`${target}.index.json`, 'utf8');
    // The third shard's write fails as a full disk would, after others were written (and others still in flight).
    const backend = getBackend();
    const real = backend.write.bind(backend);
    let calls = 0;
    const spy = jest.spyOn(backend, 'write').mockImplementation(async (plan) => {
      if (++calls === 3) {
        throw Object.assign(new Error('no space'), { kind: 'io', errno: 28, syscall: 'write', path: plan.tmpPath });
      }
      return real(plan);
    });
    try {
      await expect(saveTensors(target, sample(3), { maxShardSize: 900, shardConcurrency: 2 })).rejects.toMatchObject({
        code: 'ENOSPC',
      });
    } finally {
      spy.mockRestore();
    }
    expect(calls).toBeGreaterThanOrEqual(3);
    expect(await shardFiles(dir)).toEqual(kept);
    expect(await fsp.readFile(`${target}.index.json`, 'utf8')).toBe(indexKept);
    expect(await leftoverTemps(dir)).toEqual([]);
    expectSame((await loadTensors(target)).tensors, sample(1));
  });

  test('removeCheckpoint deletes a whole set, index first; removeOrphanShards deletes only unreferenced shards', async () => {
    const dir = await tempDir();
    await saveTensors(path.join(dir, 'a.safetensors'), sample(1), { maxShardSize: 900 });
    await saveTensors(path.join(dir, 'b.safetensors'), sample(2), { maxShardSize: 900 });
    const bFiles = (await shardFiles(dir)).filter((f) => f.startsWith('b-'));
    const orphan = bFiles[0].replace(SHARD_PATTERN.exec(bFiles[0])![2], 'deadbeef');
    await fsp.copyFile(path.join(dir, bFiles[0]), path.join(dir, orphan));
    expect(await removeOrphanShards(dir, { stem: 'b', minAgeMs: 60_000 })).toEqual([]); // too fresh
    expect(await removeOrphanShards(dir, { minAgeMs: 0 })).toEqual([orphan]);
    await removeCheckpoint(path.join(dir, 'a.safetensors'));
    expect(await shardFiles(dir)).toEqual(bFiles);
    expect((await fsp.readdir(dir)).sort()).toEqual([...bFiles, 'b.safetensors.index.json'].sort());
    expectSame((await loadTensors(dir)).tensors, sample(2));
  });

  test('an index written by another tool (no checksums) loads with verify: false and is refused as unverified', async () => {
    const dir = await tempDir();
    const t = sample();
    const names = Object.keys(t);
    await saveTensors(
      path.join(dir, 'model-00001-of-00002.safetensors'),
      Object.fromEntries(names.slice(0, 5).map((n) => [n, t[n]])),
    );
    await saveTensors(
      path.join(dir, 'model-00002-of-00002.safetensors'),
      Object.fromEntries(names.slice(5).map((n) => [n, t[n]])),
    );
    const weightMap = Object.fromEntries(names.map((n, i) => [n, `model-0000${i < 5 ? 1 : 2}-of-00002.safetensors`]));
    await fsp.writeFile(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: { total_size: 3284 }, weight_map: weightMap }),
    );
    await expect(loadTensors(dir)).rejects.toMatchObject({ code: ErrorCode.UNVERIFIED });
    await expect(verifyCheckpoint(dir)).rejects.toMatchObject({ code: ErrorCode.UNVERIFIED });
    expectSame((await loadTensors(dir, { verify: false })).tensors, t);
    const info = await readCheckpointInfo(dir);
    expect(info.formatVersion).toBeUndefined();
    expect(info.shards).toHaveLength(2);
  });

  test('loads racing with saves that replace the set always return one complete set with its own metadata', async () => {
    const dir = await tempDir();
    const target = path.join(dir, 'm.safetensors');
    await saveTensors(target, sample(100), { maxShardSize: 900, metadata: { seed: '100' } });
    let saving = true;
    const saves = (async () => {
      // Spaced like training saves: a writer replacing the set back-to-back can starve a reader (README, Limits).
      for (let seed = 101; seed < 111; seed++) {
        await saveTensors(target, sample(seed), { maxShardSize: 900, metadata: { seed: String(seed) } });
        await new Promise((r) => setTimeout(r, 100));
      }
      saving = false;
    })();
    let loads = 0;
    while (saving) {
      const loaded = await loadTensors(dir);
      expectSame(loaded.tensors, sample(Number(loaded.metadata.seed)));
      await verifyCheckpoint(dir);
      loads++;
    }
    await saves;
    expect(loads).toBeGreaterThan(0);
    expect(await shardFiles(dir)).toHaveLength(4); // every replaced set's shards were deleted
  });

  test('a directory with no index or several is refused with ERR_CHECKPOINT_NOT_A_FILE saying which', async () => {
    const dir = await tempDir();
    await expect(loadTensors(dir)).rejects.toMatchObject({
      code: ErrorCode.NOT_A_FILE,
      message: expect.stringContaining('without'),
    });
    await saveTensors(path.join(dir, 'a.safetensors'), sample(), { maxShardSize: 900 });
    await saveTensors(path.join(dir, 'b.safetensors'), sample(), { maxShardSize: 900 });
    await expect(loadTensors(dir)).rejects.toMatchObject({
      code: ErrorCode.NOT_A_FILE,
      message: expect.stringContaining('2 shard'),
    });
  });
});

// The official Python `safetensors` package reads our shard sets the way transformers does: the index's weight_map
// names each tensor's shard, each shard is opened with safe_open. Needs Python (see helpers/python-safetensors.ts):
// without it the test fails under CI=true and otherwise says in one line how to enable it.
const python = findPythonSafetensors();

/** What transformers' load_sharded_checkpoint does with an index, in plain safetensors + json. */
const READ_SET = `
import json, os, sys
from safetensors import safe_open
index_path = sys.argv[1]
with open(index_path) as f:
    index = json.load(f)
folder = os.path.dirname(index_path)
out = {"total_size": index["metadata"]["total_size"], "tensors": {}, "shard_metadata": []}
for shard in sorted(set(index["weight_map"].values())):
    with safe_open(os.path.join(folder, shard), framework="np") as f:
        out["shard_metadata"].append(f.metadata())
        for name in f.keys():
            assert index["weight_map"][name] == shard, name
            t = f.get_tensor(name)
            out["tensors"][name] = [str(t.dtype), list(t.shape), t.tobytes().hex()]
print(json.dumps(out))
`;

function pySample(): NamedTensors {
  const r = rng(11);
  const t: NamedTensors = {};
  for (let i = 0; i < 6; i++) {
    t[`model.layers.${i}.weight`] = { dtype: 'float32', shape: [16, 8], data: Float32Array.from({ length: 128 }, r) };
  }
  t['model.position_ids'] = { dtype: 'int32', shape: [1, 32], data: Int32Array.from({ length: 32 }, (_, i) => i) };
  t['model.mask'] = { dtype: 'bool', shape: [5], data: new Uint8Array([1, 0, 0, 1, 1]) };
  t['model.empty'] = { dtype: 'float32', shape: [0, 3], data: new Float32Array(0) };
  return t;
}

const NUMPY_DTYPES = { float32: 'float32', int32: 'int32', bool: 'bool' } as const;

if (!python) {
  if (process.env.CI === 'true') {
    test('python safetensors is installed (CI runs the reference cross-check of shard sets)', () => {
      throw new Error(PYTHON_HINT);
    });
  } else {
    console.info(`shards-python: ${PYTHON_HINT}`);
  }
}

if (python) {
  describe.each(BACKENDS)('the official Python safetensors package reads our shard sets (%s backend)', (backend) => {
    useBackend(backend);

    test('every tensor of a 4-shard set, through the index as transformers reads it, with the same dtype, shape and bytes', async () => {
      const dir = await tempDir();
      const tensors = pySample();
      await saveTensors(path.join(dir, 'model.safetensors'), tensors, { maxShardSize: 1100, metadata: { epoch: '5' } });
      const got = JSON.parse(runPython(python!, READ_SET, [path.join(dir, 'model.safetensors.index.json')])) as {
        total_size: number;
        tensors: Record<string, [string, number[], string]>;
        shard_metadata: Record<string, string>[];
      };
      expect(got.shard_metadata.length).toBe(4);
      for (const m of got.shard_metadata) expect(m.epoch).toBe('5');
      expect(Object.keys(got.tensors).sort()).toEqual(Object.keys(tensors).sort());
      let total = 0;
      for (const [name, t] of Object.entries(tensors)) {
        const bytes = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
        expect({ name, value: got.tensors[name] }).toEqual({
          name,
          value: [NUMPY_DTYPES[t.dtype], t.shape, bytes.toString('hex')],
        });
        total += bytes.length;
      }
      expect(got.total_size).toBe(total);
    });
  });
}
