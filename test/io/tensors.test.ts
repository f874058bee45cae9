/**
 * The low-level API (saveTensors / loadTensors / verifyCheckpoint / readCheckpointInfo), run over both backends.
 */
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  CheckpointError,
  ErrorCode,
  LoadedTensor,
  LoadedTensors,
  NamedTensors,
  backendName,
  loadTensors,
  readCheckpointInfo,
  saveTensors,
  verifyCheckpoint,
} from '../../lib';
import { BACKENDS, leftoverTemps, rng, tempDir, useBackend } from '../helpers/backends';
import { rejectionOf } from '../helpers/errors';
import { plainSafetensors } from '../helpers/safetensors-file';
import { getBackend, setBackend } from '../../lib/backend/select';
import type { ReadPlan } from '../../lib/backend/backend';
import * as tf from '@tensorflow/tfjs';
import { convertLoaded, toTfjs } from '../../lib/format/dtype-convert';
import { crc32c } from '../../lib/format/crc32c';
import { restoreCheckpoint } from '../../lib/model/save-restore';
import {
  DTYPES,
  HEADER_CRC_OFFSET,
  MAX_HEADER_LENGTH,
  TENSOR_CRC_OFFSET,
  buildHeader,
  computeHeaderCrc,
} from '../../lib/format/header';

function sample(): NamedTensors {
  const r = rng(42);
  return {
    'dense_Dense1/kernel': {
      dtype: 'float32',
      shape: [3, 4],
      data: Float32Array.from({ length: 12 }, () => r() - 0.5),
    },
    'dense_Dense1/bias': { dtype: 'float32', shape: [4], data: new Float32Array([0, -0, Infinity, NaN]) },
    step: { dtype: 'int32', shape: [], data: new Int32Array([-7]) },
    mask: { dtype: 'bool', shape: [2, 2], data: new Uint8Array([1, 0, 0, 1]) },
    empty: { dtype: 'float32', shape: [0, 5], data: new Float32Array(0) },
    'ünïcødé/层/🙂': { dtype: 'int32', shape: [2], data: new Int32Array([2147483647, -2147483648]) },
  };
}

function expectBitExact(actual: Record<string, LoadedTensor>, expected: NamedTensors): void {
  expect(Object.keys(actual).sort()).toEqual(Object.keys(expected).sort());
  for (const [name, t] of Object.entries(expected)) {
    const a = actual[name];
    expect({ name, dtype: a.dtype, shape: a.shape }).toEqual({ name, dtype: t.dtype, shape: t.shape });
    expect(a.data.constructor).toBe(t.data.constructor);
    expect(Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength)).toEqual(
      Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength),
    );
  }
}

/** Bytes of header JSON (unpadded) for `tensors` with the metadata { big: '' }: a value of L bytes adds L. */
function headerBase(tensors: NamedTensors): number {
  const inputs = Object.entries(tensors).map(([name, t]) => ({
    name,
    dtype: DTYPES[t.dtype].st,
    shape: t.shape,
    byteLength: t.data.byteLength,
  }));
  const { bytes } = buildHeader(inputs, { big: '' });
  let base = bytes.length - 8;
  while (bytes[8 + base - 1] === 0x20) base--;
  return base;
}

describe.each(BACKENDS)('saveTensors/loadTensors on the %s backend', (name) => {
  useBackend(name);

  test('reports the backend in use', () => {
    expect(backendName()).toBe(name);
  });

  test('round-trips float32, int32, bool, scalars, empty tensors and unicode names bit-exactly with metadata', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'a.safetensors');
    const tensors = sample();
    await saveTensors(file, tensors, { metadata: { epoch: '7', note: 'ünïcødé "quoted"' } });
    const loaded = await loadTensors(file);
    expectBitExact(loaded.tensors, tensors);
    expect(loaded.metadata).toEqual({ epoch: '7', note: 'ünïcødé "quoted"' });
    await expect(verifyCheckpoint(file)).resolves.toMatchObject({ tensors: 6 });
  });

  test('a tensor larger than the process can allocate is refused with ERR_CHECKPOINT_OUT_OF_MEMORY, its path and size and no errno (the same on both backends)', async () => {
    // A sparse file of one 1 TB tensor (no disk used): its buffer cannot be allocated.
    const dir = await tempDir();
    const file = path.join(dir, 'huge.safetensors');
    const n = 2 ** 40;
    const json = Buffer.from(JSON.stringify({ t: { dtype: 'U8', shape: [n], data_offsets: [0, n] } }));
    const header = Buffer.alloc(8 + Math.ceil(json.length / 8) * 8, 0x20);
    header.writeBigUInt64LE(BigInt(header.length - 8));
    json.copy(header, 8);
    await fsp.writeFile(file, header);
    await fsp.truncate(file, header.length + n);
    const err = (await loadTensors(file, { verify: false }).catch((e: unknown) => e)) as CheckpointError;
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err).toMatchObject({
      code: ErrorCode.OUT_OF_MEMORY,
      path: file,
      message: `Could not load ${file}: could not allocate ${n} bytes (out of memory) for '${file}'`,
    });
    expect(err.errno).toBeUndefined();
    expect(err.syscall).toBeUndefined();
  });

  test('round-trips 1000 tiny tensors', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'many.safetensors');
    const tensors: NamedTensors = {};
    for (let i = 0; i < 1000; i++) {
      tensors[`layer_${i}/w`] =
        i % 3 === 0
          ? { dtype: 'bool', shape: [i % 5], data: new Uint8Array(i % 5).fill(1) }
          : { dtype: 'float32', shape: [i % 7], data: Float32Array.from({ length: i % 7 }, (_, k) => i + k / 8) };
    }
    await saveTensors(file, tensors);
    expectBitExact((await loadTensors(file)).tensors, tensors);
  });

  test('a save with durable: false still commits a complete file', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'fast.safetensors');
    await saveTensors(file, sample(), { durable: false });
    expectBitExact((await loadTensors(file)).tensors, sample());
  });

  test('creates missing parent directories', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'a', 'b', 'c', 'x.safetensors');
    await saveTensors(file, sample());
    expectBitExact((await loadTensors(file)).tensors, sample());
  });

  test('overwrites an existing checkpoint atomically and leaves no temp file', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'x.safetensors');
    await saveTensors(file, sample());
    const next = { w: { dtype: 'int32' as const, shape: [1], data: new Int32Array([5]) } };
    await saveTensors(file, next);
    expectBitExact((await loadTensors(file)).tensors, next);
    expect(await leftoverTemps(dir)).toEqual([]);
  });

  test('a save onto a directory fails with EISDIR and leaves no temp file', async () => {
    const dir = await tempDir();
    await fsp.mkdir(path.join(dir, 'taken'));
    const err = await rejectionOf(saveTensors(path.join(dir, 'taken'), sample()), 'EISDIR');
    expect(err.path).toBe(path.join(dir, 'taken'));
    expect(await leftoverTemps(dir)).toEqual([]);
  });

  test("a write whose temp file already exists fails with EEXIST and leaves that file (someone else's) alone", async () => {
    const dir = await tempDir();
    const built = buildHeader([{ name: 'w', dtype: 'F32', shape: [2], byteLength: 8 }], {});
    const tmpPath = path.join(dir, '.tfjs-ckpt-other.tmp');
    const target = path.join(dir, 'w.safetensors');
    await fsp.writeFile(tmpPath, 'another writer');
    await fsp.writeFile(target, 'previous checkpoint');
    const failure = await getBackend()
      .write({
        path: target,
        tmpPath,
        header: built.bytes,
        headerCrcOffset: HEADER_CRC_OFFSET,
        tensorCrcOffset: TENSOR_CRC_OFFSET,
        arrays: [new Float32Array([1, 2])],
        durable: true,
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(failure).toMatchObject({ kind: 'io', errno: os.constants.errno.EEXIST, syscall: 'open', path: tmpPath });
    expect(await fsp.readFile(tmpPath, 'utf8')).toBe('another writer');
    expect(await fsp.readFile(target, 'utf8')).toBe('previous checkpoint');
  });

  test('a save under a parent that is a file fails with a coded OS error', async () => {
    const dir = await tempDir();
    await fsp.writeFile(path.join(dir, 'file'), 'x');
    const err = await rejectionOf(saveTensors(path.join(dir, 'file', 'x.safetensors'), sample()), 'ENOTDIR');
    expect(err.message).toContain(path.join(dir, 'file'));
  });

  test('invalid tensors are refused with coded errors naming the tensor, and the previous file stays intact', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'keep.safetensors');
    await saveTensors(file, sample());
    const before = await fsp.readFile(file);
    const f32 = (shape: number[], n: number) => ({ dtype: 'float32' as const, shape, data: new Float32Array(n) });
    const cases: [unknown, string, string][] = [
      [{ w: f32([2, 2], 3) }, ErrorCode.INVALID_ARGUMENT, '"w"'],
      [{ w: { dtype: 'float32', shape: [2], data: new Int32Array(2) } }, ErrorCode.INVALID_ARGUMENT, 'Float32Array'],
      [{ w: { dtype: 'float64', shape: [2], data: new Float64Array(2) } }, ErrorCode.INVALID_ARGUMENT, 'dtype'],
      [{ w: { dtype: 'string', shape: [1], data: ['a'] } }, ErrorCode.UNSUPPORTED_DTYPE, '"w"'],
      [{ z: { dtype: 'complex64', shape: [1], data: new Float32Array(2) } }, ErrorCode.UNSUPPORTED_DTYPE, '"z"'],
      [{ w: f32([-1], 0) }, ErrorCode.INVALID_ARGUMENT, 'shape'],
      [{ w: f32([1.5], 1) }, ErrorCode.INVALID_ARGUMENT, 'shape'],
      [{ b: { dtype: 'bool', shape: [1], data: new Uint8Array([2]) } }, ErrorCode.INVALID_ARGUMENT, '0 or 1'],
      [{ __metadata__: f32([1], 1) }, ErrorCode.INVALID_ARGUMENT, '__metadata__'],
      [{ '': f32([1], 1) }, ErrorCode.INVALID_ARGUMENT, 'tensor name'],
      [{ ['bad\ud800']: f32([1], 1) }, ErrorCode.INVALID_ARGUMENT, 'surrogate'],
      [[f32([1], 1)], ErrorCode.INVALID_ARGUMENT, 'tensors'],
      [null, ErrorCode.INVALID_ARGUMENT, 'tensors'],
    ];
    for (const [tensors, code, fragment] of cases) {
      const err = await rejectionOf(saveTensors(file, tensors as NamedTensors), code);
      expect(err.message).toContain(fragment);
    }
    expect(await fsp.readFile(file)).toEqual(before);
    expect(await leftoverTemps(dir)).toEqual([]);
  });

  test('invalid paths and options are refused with ERR_CHECKPOINT_INVALID_ARGUMENT', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'x.safetensors');
    await rejectionOf(saveTensors('' as string, sample()), ErrorCode.INVALID_ARGUMENT);
    await rejectionOf(saveTensors(42 as unknown as string, sample()), ErrorCode.INVALID_ARGUMENT);
    await rejectionOf(saveTensors(dir + '/', sample()), ErrorCode.INVALID_ARGUMENT);
    await rejectionOf(saveTensors('a\0b', sample()), ErrorCode.INVALID_ARGUMENT);
    await rejectionOf(
      saveTensors(file, sample(), { durable: 'yes' as unknown as boolean }),
      ErrorCode.INVALID_ARGUMENT,
    );
    await rejectionOf(
      saveTensors(file, sample(), { metadata: { a: 1 as unknown as string } }),
      ErrorCode.INVALID_ARGUMENT,
    );
    const reserved = await rejectionOf(
      saveTensors(file, sample(), { metadata: { 'tfjs_checkpoint.x': 'y' } }),
      ErrorCode.INVALID_ARGUMENT,
    );
    expect(reserved.message).toContain('reserved');
    await rejectionOf(loadTensors(file, { verify: 1 as unknown as boolean }), ErrorCode.INVALID_ARGUMENT);
    await expect(fsp.access(file)).rejects.toThrow();
  });

  test('a header one byte over MAX_HEADER_LENGTH is refused before touching the disk, keeping the previous file', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'x.safetensors');
    const tensors = sample();
    await saveTensors(file, tensors);
    const before = await fsp.readFile(file);
    const over = { big: 'x'.repeat(MAX_HEADER_LENGTH + 1 - headerBase(tensors)) };
    const err = await rejectionOf(saveTensors(file, tensors, { metadata: over }), ErrorCode.INVALID_ARGUMENT);
    expect(err.message).toContain(String(MAX_HEADER_LENGTH));
    const fresh = path.join(dir, 'new-dir', 'y.safetensors');
    await rejectionOf(saveTensors(fresh, tensors, { metadata: over }), ErrorCode.INVALID_ARGUMENT);
    expect(await fsp.readFile(file)).toEqual(before);
    expect(await leftoverTemps(dir)).toEqual([]);
    await expect(fsp.access(path.dirname(fresh))).rejects.toThrow();
  });

  test('every non-regular file (directory, FIFO, socket, character device) gets ERR_CHECKPOINT_NOT_A_FILE from every reader, unread', async () => {
    const dir = await tempDir();
    const fifo = path.join(dir, 'fifo.safetensors');
    execFileSync('mkfifo', [fifo]);
    const sub = path.join(dir, 'sub.safetensors');
    await fsp.mkdir(sub);
    const socket = path.join(dir, 'socket.safetensors');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    // Shard indexes are read by the same path: an index name that is not a regular file.
    const indexFifo = path.join(dir, 'set.safetensors.index.json');
    execFileSync('mkfifo', [indexFifo]);
    const kinds: [string, string][] = [
      [fifo, 'a FIFO'],
      [sub, 'a directory without a shard index'],
      [socket, 'a socket'],
      ['/dev/null', 'a character device'],
      [indexFifo, 'a FIFO'],
    ];
    const readers: [string, (f: string) => Promise<unknown>][] = [
      ['loadTensors', (f) => loadTensors(f)],
      ['loadTensors verify: false', (f) => loadTensors(f, { verify: false })],
      ['verifyCheckpoint', (f) => verifyCheckpoint(f)],
      ['readCheckpointInfo', (f) => readCheckpointInfo(f)],
    ];
    try {
      for (const [file, kind] of kinds) {
        for (const [reader, read] of readers) {
          const err = await rejectionOf(read(file), ErrorCode.NOT_A_FILE);
          expect({ reader, path: err.path, message: err.message }).toEqual({
            reader,
            path: file,
            message: expect.stringContaining(`it is ${kind}`),
          });
          expect(err.message).toContain('not a regular file');
          expect(err.errno).toBeUndefined(); // a library verdict, no invented OS code
        }
      }
    } finally {
      server.close();
    }
    // The backend itself, given such a path, reports what the OS says when it tries to read it: no invented code.
    const plan = (p: string): ReadPlan => ({ path: p, fileSize: 0, dataStart: 0, ranges: [], crcs: [], verify: false });
    await expect(getBackend().read(plan(sub))).rejects.toMatchObject({
      kind: 'io',
      errno: os.constants.errno.EISDIR,
      syscall: 'read',
      path: sub,
    });
    await expect(getBackend().read(plan(fifo))).rejects.toMatchObject({
      kind: 'io',
      errno: os.constants.errno.ESPIPE,
      syscall: 'read',
      path: fifo,
    });
    await expect(getBackend().read(plan('/dev/null'))).rejects.toMatchObject({ kind: 'corrupt', errno: 0 });
  });

  test('loadTensors { mmap: true } returns the same bytes verified, catches a flipped byte, keeps writes private and outlives a save replacing the file', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'm.safetensors');
    await saveTensors(file, sample(), { metadata: { v: '1' } });
    const mapped = await loadTensors(file, { mmap: true });
    expect(mapped.verification).toBe('verified');
    expectBitExact(mapped.tensors, sample());
    const before = await fsp.readFile(file);
    const kernel = mapped.tensors['dense_Dense1/kernel'].data as Float32Array;
    kernel[0] = 12345; // private (copy-on-write): the file does not change
    expect(await fsp.readFile(file)).toEqual(before);
    const other = sample();
    (other['dense_Dense1/kernel'].data as Float32Array).fill(7);
    await saveTensors(file, other, { metadata: { v: '2' } }); // replaced by rename under the mapping
    expect(kernel[0]).toBe(12345);
    expect(Buffer.from(mapped.tensors.step.data.buffer)).toEqual(Buffer.from(sample().step.data.buffer));
    expect((await loadTensors(file, { mmap: true })).metadata.v).toBe('2');
    const bytes = await fsp.readFile(file);
    const info = await readCheckpointInfo(file);
    const k = info.tensors.findIndex((t) => t.name === 'dense_Dense1/kernel');
    bytes[info.dataStart + info.tensors.slice(0, k).reduce((n, t) => n + t.byteLength, 0) + 3] ^= 1;
    await fsp.writeFile(file, bytes);
    const err = await rejectionOf(loadTensors(file, { mmap: true }), ErrorCode.CHECKSUM);
    expect(err.tensor).toBe('dense_Dense1/kernel');
    expect(typeof err.expectedCrc === 'number' && typeof err.actualCrc === 'number').toBe(true);
    await rejectionOf(loadTensors(file, { mmap: 'yes' as never }), ErrorCode.INVALID_ARGUMENT);
  });

  test('a load large enough to checksum while reading (over 8 MiB) returns every byte, and names the one altered tensor of three', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'big.safetensors');
    const r = rng(3);
    const big = (n: number) => Float32Array.from({ length: n }, () => r());
    const tensors: NamedTensors = {
      a: { dtype: 'float32', shape: [1_500_000], data: big(1_500_000) },
      b: { dtype: 'float32', shape: [1_200_001], data: big(1_200_001) },
      c: { dtype: 'float32', shape: [3], data: big(3) },
    };
    await saveTensors(file, tensors);
    const loaded = (await loadTensors(file)).tensors;
    const bytesOf = (v: ArrayBufferView) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    for (const n of ['a', 'b', 'c']) expect(bytesOf(loaded[n].data).equals(bytesOf(tensors[n].data))).toBe(true);
    const info = await readCheckpointInfo(file);
    const bytes = await fsp.readFile(file);
    bytes[info.dataStart + info.tensors[0].byteLength + (4 << 20) + 1] ^= 0x40; // b, just past a 4 MiB piece
    await fsp.writeFile(file, bytes);
    const err = await rejectionOf(loadTensors(file), ErrorCode.CHECKSUM);
    expect({ tensor: err.tensor, expectedCrc: err.expectedCrc }).toEqual({
      tensor: 'b',
      expectedCrc: info.tensors[1].crc32c,
    });
  });

  test("loads racing saves that replace a 72 MiB file (CRCs on a second thread, pages pre-faulted) each return one version whole, copied or mapped; a flipped byte in either half, or in the tail of the tensor split at the mapped read's midpoint, is named; a short file refused", async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'race.safetensors');
    // Two tensors across the mapped read's byte midpoint (its second CRC thread) and past the copying read's 8 MiB.
    const version = (v: number): NamedTensors => ({
      a: { dtype: 'float32', shape: [10 << 20], data: new Float32Array(10 << 20).fill(v) },
      b: { dtype: 'float32', shape: [8 << 20], data: new Float32Array(8 << 20).fill(-v) },
    });
    const wholeVersion = (loaded: LoadedTensors): number => {
      const v = Number(loaded.metadata.v);
      const a = loaded.tensors.a.data as Float32Array;
      const b = loaded.tensors.b.data as Float32Array;
      expect(a.length === 10 << 20 && b.length === 8 << 20).toBe(true);
      expect(a.every((x) => x === v) && b.every((x) => x === -v)).toBe(true);
      return v;
    };
    await saveTensors(file, version(1), { metadata: { v: '1' }, durable: false });
    const seen = new Set<number>();
    for (let v = 2; v <= 4; v++) {
      const loads = [loadTensors(file, { mmap: true }), loadTensors(file)];
      const save = saveTensors(file, version(v), { metadata: { v: String(v) }, durable: false });
      const loaded = await Promise.all(loads);
      await save;
      for (const l of loaded) seen.add(wholeVersion(l));
    }
    expect([...seen].every((v) => v >= 1 && v <= 4)).toBe(true);
    const info = await readCheckpointInfo(file);
    for (const [k, at] of [
      [0, 5 << 20], // a: the first CRC thread's half
      [0, 38 << 20], // a, past the byte midpoint (36 MiB): the mapped read's second thread checksums this piece of a
      [1, 30 << 20], // b: the second half
    ]) {
      const bytes = await fsp.readFile(file);
      bytes[info.dataStart + (k === 1 ? info.tensors[0].byteLength : 0) + at] ^= 0x10;
      const broken = path.join(dir, `broken${k}-${at}.safetensors`);
      await fsp.writeFile(broken, bytes);
      for (const mmap of [true, false]) {
        const err = await rejectionOf(loadTensors(broken, { mmap }), ErrorCode.CHECKSUM);
        expect({ tensor: err.tensor, expectedCrc: err.expectedCrc }).toEqual({
          tensor: info.tensors[k].name,
          expectedCrc: info.tensors[k].crc32c,
        });
      }
    }
    // A file already shorter than its header says is refused before anything is mapped (no SIGBUS).
    const short = path.join(dir, 'short.safetensors');
    await fsp.copyFile(file, short);
    await fsp.truncate(short, info.fileSize - 4096);
    for (const mmap of [true, false]) await rejectionOf(loadTensors(short, { mmap }), ErrorCode.CORRUPT);
  });

  test('loading a missing file fails with ENOENT naming the path', async () => {
    const dir = await tempDir();
    const err = await rejectionOf(loadTensors(path.join(dir, 'nope.safetensors')), 'ENOENT');
    expect(err.message).toContain('nope.safetensors');
  });

  test('a flipped data byte is a checksum error naming the tensor, from loadTensors and verifyCheckpoint', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'x.safetensors');
    await saveTensors(file, sample());
    const info = await readCheckpointInfo(file);
    const kernel = info.tensors.findIndex((t) => t.name === 'dense_Dense1/kernel');
    const offset = info.dataStart + info.tensors.slice(0, kernel).reduce((s, t) => s + t.byteLength, 0) + 5;
    const bytes = await fsp.readFile(file);
    bytes[offset] ^= 0x10;
    await fsp.writeFile(file, bytes);
    // One call at a time: created together, the second would reject unhandled while the first is awaited.
    for (const op of [() => loadTensors(file), () => verifyCheckpoint(file)]) {
      const err = await rejectionOf(op(), ErrorCode.CHECKSUM);
      expect(err.tensor).toBe('dense_Dense1/kernel');
      expect(err.message).toContain('dense_Dense1/kernel');
    }
  });

  test("a checksum failure's error names the tensor and both CRCs (recorded and computed), whole or verified in pieces", async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'x.safetensors');
    await saveTensors(file, sample());
    const info = await readCheckpointInfo(file);
    const kernel = info.tensors.findIndex((t) => t.name === 'dense_Dense1/kernel');
    const begin = info.dataStart + info.tensors.slice(0, kernel).reduce((s, t) => s + t.byteLength, 0);
    const bytes = await fsp.readFile(file);
    bytes[begin + 5] ^= 0x10;
    await fsp.writeFile(file, bytes);
    const recorded = info.tensors[kernel].crc32c as number;
    const computed = crc32c(bytes.subarray(begin, begin + info.tensors[kernel].byteLength));
    expect(computed).not.toBe(recorded);
    const hex = (c: number) => c.toString(16).padStart(8, '0');
    // groupBytes 16 verifies the 48-byte kernel in three pieces, its CRC computed across them.
    for (const op of [
      () => loadTensors(file),
      () => verifyCheckpoint(file),
      () => verifyCheckpoint(file, { groupBytes: 16 }),
    ]) {
      const err = await rejectionOf(op(), ErrorCode.CHECKSUM);
      expect({ tensor: err.tensor, expectedCrc: err.expectedCrc, actualCrc: err.actualCrc }).toEqual({
        tensor: 'dense_Dense1/kernel',
        expectedCrc: recorded,
        actualCrc: computed,
      });
      expect(err.message).toContain('"dense_Dense1/kernel"');
      expect(err.message).toContain(`recorded ${hex(recorded)}, computed ${hex(computed)}`);
    }
  });

  /** Tensors of 1000, 1000, 5000 (larger than the 2048-byte groups below), 100 and 12 (bool) bytes. */
  function groupedSample(): NamedTensors {
    const r = rng(7);
    const f32 = (n: number) => Float32Array.from({ length: n }, () => r() - 0.5);
    return {
      a: { dtype: 'float32', shape: [250], data: f32(250) },
      b: { dtype: 'float32', shape: [250], data: f32(250) },
      big: { dtype: 'float32', shape: [1250], data: f32(1250) },
      c: { dtype: 'int32', shape: [25], data: Int32Array.from({ length: 25 }, (_, i) => i) },
      mask: { dtype: 'bool', shape: [12], data: Uint8Array.from({ length: 12 }, (_, i) => i % 2) },
    };
  }

  /** Where tensor `name` starts in the file. */
  async function offsetOf(file: string, name: string): Promise<number> {
    const info = await readCheckpointInfo(file);
    const i = info.tensors.findIndex((t) => t.name === name);
    return info.dataStart + info.tensors.slice(0, i).reduce((sum, t) => sum + t.byteLength, 0);
  }

  test('verifyCheckpoint reads groups of at most groupBytes (a larger tensor in pieces), reporting progress within the file', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'g.safetensors');
    await saveTensors(file, groupedSample());
    const info = await readCheckpointInfo(file);
    const total = info.tensors.reduce((sum, t) => sum + t.byteLength, 0);
    const backend = getBackend();
    const real = backend.read;
    const reads: ReadPlan[] = [];
    backend.read = (plan: ReadPlan) => {
      reads.push(plan);
      return real.call(backend, plan);
    };
    const progress: [number, number][] = [];
    try {
      const r = await verifyCheckpoint(file, { groupBytes: 2048, onProgress: (d, t) => progress.push([d, t]) });
      expect(r).toMatchObject({ tensors: 5, bytes: total });
    } finally {
      backend.read = real;
    }
    // Groups: [a, b] (2000 bytes), big in pieces of 2048, 2048 and 904, then [c, mask] (112 bytes).
    expect(reads.map((p) => [p.ranges, p.verify])).toEqual([
      [[0, 1000, 1000, 2000], true],
      [[2000, 4048], false],
      [[4048, 6096], false],
      [[6096, 7000], false],
      [[7000, 7100, 7100, 7112], true],
    ]);
    expect(progress).toEqual([
      [0, total],
      [2000, total],
      [4048, total],
      [6096, total],
      [7000, total],
      [7112, total],
    ]);
    // The default group (64 MiB) reads this small file in one call.
    reads.length = 0;
    backend.read = (plan: ReadPlan) => {
      reads.push(plan);
      return real.call(backend, plan);
    };
    try {
      await verifyCheckpoint(file);
    } finally {
      backend.read = real;
    }
    expect(reads.map((p) => p.ranges.length / 2)).toEqual([5]);
  });

  test.each([
    ['a tensor of a group', 'b', 2048],
    ['a tensor read in pieces', 'big', 2048],
    ['a tensor read in pieces, in its last piece', 'big', 1024],
  ])('grouped verify: a flipped byte in %s is a checksum error naming it', async (_what, name, groupBytes) => {
    const dir = await tempDir();
    const file = path.join(dir, 'g.safetensors');
    await saveTensors(file, groupedSample());
    const bytes = await fsp.readFile(file);
    const tensorBytes = name === 'big' ? 5000 : 1000;
    bytes[(await offsetOf(file, name)) + tensorBytes - 3] ^= 0x01;
    await fsp.writeFile(file, bytes);
    const progress: number[] = [];
    const err = await rejectionOf(
      verifyCheckpoint(file, { groupBytes, onProgress: (d) => progress.push(d) }),
      ErrorCode.CHECKSUM,
    );
    expect(err.tensor).toBe(name);
    expect(err.message).toContain(JSON.stringify(name));
    expect(progress[progress.length - 1]).toBeLessThan(7112);
  });

  test('grouped verify: a bool byte other than 0/1 in a piece is corrupt, naming the tensor and the byte index', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'b.safetensors');
    await saveTensors(file, { mask: { dtype: 'bool', shape: [5000], data: new Uint8Array(5000).fill(1) } });
    // A byte 2 with every checksum recomputed, so that only the bool check can catch it.
    const bytes = await fsp.readFile(file);
    const { dataStart } = await readCheckpointInfo(file);
    bytes[dataStart + 4500] = 2;
    const crc = getBackend().crc32c(bytes.subarray(dataStart));
    bytes.write(crc.toString(16).padStart(8, '0'), TENSOR_CRC_OFFSET, 'latin1');
    const headerCrc = computeHeaderCrc(bytes.subarray(0, dataStart), (d, c) => getBackend().crc32c(d, c));
    bytes.write(headerCrc.toString(16).padStart(8, '0'), HEADER_CRC_OFFSET, 'latin1');
    await fsp.writeFile(file, bytes);
    for (const groupBytes of [1024, undefined]) {
      const err = await rejectionOf(verifyCheckpoint(file, groupBytes ? { groupBytes } : {}), ErrorCode.CORRUPT);
      expect(err.tensor).toBe('mask');
      expect(err.message).toContain('holds the byte 2 at 4500');
    }
  });

  test('verifyCheckpoint options are validated', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'v.safetensors');
    await saveTensors(file, groupedSample());
    for (const options of [{ onProgress: 'yes' }, { groupBytes: 0 }, { groupBytes: 1.5 }, [], null]) {
      await rejectionOf(verifyCheckpoint(file, options as never), ErrorCode.INVALID_ARGUMENT);
    }
  });

  test('a flipped header byte is a header checksum error', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'x.safetensors');
    await saveTensors(file, sample(), { metadata: { epoch: '3' } });
    const bytes = await fsp.readFile(file);
    const at = bytes.indexOf('"epoch":"3"') + 9;
    bytes[at] = '4'.charCodeAt(0);
    await fsp.writeFile(file, bytes);
    const err = await rejectionOf(loadTensors(file), ErrorCode.CHECKSUM);
    expect(err.message).toContain('header');
    await rejectionOf(readCheckpointInfo(file), ErrorCode.CHECKSUM);
  });

  test('errors carry the caller stack', async () => {
    const dir = await tempDir();
    const bytes = Buffer.alloc(64);
    await fsp.writeFile(path.join(dir, 'f'), bytes);
    await saveTensors(path.join(dir, 'x.safetensors'), sample());
    const file = path.join(dir, 'x.safetensors');
    const b = await fsp.readFile(file);
    b[b.length - 1] ^= 1;
    await fsp.writeFile(file, b);
    async function callerFunctionName(): Promise<unknown> {
      return loadTensors(file);
    }
    const err = await rejectionOf(callerFunctionName(), ErrorCode.CHECKSUM);
    expect(err.stack).toContain('callerFunctionName');
  });

  test('a plain safetensors file without checksums loads only with verify: false', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'foreign.safetensors');
    const json = JSON.stringify({
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      __metadata__: { format: 'pt' },
    });
    const header = Buffer.from(json.padEnd(Math.ceil(json.length / 8) * 8, ' '));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    await fsp.writeFile(file, Buffer.concat([len, header, Buffer.from(new Float32Array([1.5, -2]).buffer)]));
    await rejectionOf(loadTensors(file), ErrorCode.UNVERIFIED);
    const loaded = await loadTensors(file, { verify: false });
    expect(Array.from(loaded.tensors.a.data as Float32Array)).toEqual([1.5, -2]);
    expect(loaded.metadata).toEqual({ format: 'pt' });
  });

  test('readCheckpointInfo lists tensors in file order with sizes and CRCs without reading the data', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'x.safetensors');
    await saveTensors(file, sample(), { metadata: { epoch: '1' } });
    const info = await readCheckpointInfo(file);
    expect(info.formatVersion).toBe('1');
    expect(info.metadata).toEqual({ epoch: '1' });
    expect(info.tensors.map((t) => t.name)).toEqual([
      'dense_Dense1/bias',
      'dense_Dense1/kernel',
      'empty',
      'step',
      'ünïcødé/层/🙂',
      'mask',
    ]);
    expect(info.tensors.every((t) => typeof t.crc32c === 'number')).toBe(true);
    const st = await fsp.stat(file);
    expect(info.fileSize).toBe(st.size);
  });

  test('readCheckpointInfo opens the file once, verifying the header CRC in that one read', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'x.safetensors');
    await saveTensors(file, sample(), { metadata: { epoch: '1' } });
    const opens = jest.spyOn(fsp, 'open');
    try {
      await readCheckpointInfo(file);
      expect(opens.mock.calls.filter(([p]) => p === file)).toHaveLength(1);
      const bytes = await fsp.readFile(file);
      bytes[bytes.indexOf('"epoch":"1"') + 9] = '2'.charCodeAt(0);
      await fsp.writeFile(file, bytes);
      opens.mockClear();
      await rejectionOf(readCheckpointInfo(file), ErrorCode.CHECKSUM);
      expect(opens.mock.calls.filter(([p]) => p === file)).toHaveLength(1);
    } finally {
      opens.mockRestore();
    }
  });

  test('stale temp files of dead processes are removed by the next save; live ones are left alone', async () => {
    const dir = await tempDir();
    const dead = path.join(dir, '.tfjs-ckpt-999999999-0123456789ab.tmp');
    const live = path.join(dir, `.tfjs-ckpt-1-0123456789ab.tmp`);
    const foreign = path.join(dir, 'not-ours.tmp');
    for (const f of [dead, live, foreign]) await fsp.writeFile(f, 'partial');
    await saveTensors(path.join(dir, 'x.safetensors'), sample());
    const names = (await fsp.readdir(dir)).sort();
    expect(names).toEqual(['.tfjs-ckpt-1-0123456789ab.tmp', 'not-ours.tmp', 'x.safetensors']);
  });
});

describe('the two backends', () => {
  test('a header of exactly MAX_HEADER_LENGTH bytes saves and loads (the limit is inclusive, as in every reader)', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'limit.safetensors');
    const tensors = sample();
    const atLimit = { big: 'x'.repeat(MAX_HEADER_LENGTH - headerBase(tensors)) };
    await saveTensors(file, tensors, { metadata: atLimit, durable: false });
    const loaded = await loadTensors(file);
    expect(loaded.metadata.big).toHaveLength(atLimit.big.length);
    const dataLength = Object.values(tensors).reduce((sum, t) => sum + t.data.byteLength, 0);
    expect((await fsp.stat(file)).size).toBe(8 + MAX_HEADER_LENGTH + dataLength);
  });

  test("write byte-identical files and read each other's files", async () => {
    const dir = await tempDir();
    const files = { native: path.join(dir, 'n.safetensors'), js: path.join(dir, 'j.safetensors') };
    for (const b of BACKENDS) {
      setBackend(b);
      await saveTensors(files[b], sample(), { metadata: { k: 'v' } });
    }
    expect(await fsp.readFile(files.native)).toEqual(await fsp.readFile(files.js));
    setBackend('native');
    expectBitExact((await loadTensors(files.js)).tensors, sample());
    setBackend('js');
    expectBitExact((await loadTensors(files.native)).tensors, sample());
  });
});

describe.each(BACKENDS)('every safetensors dtype (%s backend)', (backend) => {
  useBackend(backend);

  test('a file mixing F32 and I64 (a Hugging Face position_ids) loads: Float32Array and BigInt64Array', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'mixed.safetensors');
    const w = Buffer.from(Float32Array.from([1.5, -2]).buffer);
    const ids = Buffer.from(BigInt64Array.from([0n, 1n, 2n, 9007199254740993n]).buffer);
    await fsp.writeFile(
      file,
      plainSafetensors(
        {
          position_ids: { dtype: 'I64', shape: [1, 4], data_offsets: [0, 32] },
          w: { dtype: 'F32', shape: [2], data_offsets: [32, 40] },
        },
        Buffer.concat([ids, w]),
      ),
    );
    expect((await readCheckpointInfo(file)).tensors.map((t) => [t.name, t.dtype])).toEqual([
      ['position_ids', 'I64'],
      ['w', 'F32'],
    ]);
    const { tensors, verification } = await loadTensors(file, { verify: false });
    expect(verification).toBe('unverified');
    expect(tensors.w).toEqual({ dtype: 'float32', shape: [2], data: Float32Array.from([1.5, -2]) });
    expect(tensors.position_ids.dtype).toBe('I64');
    expect(tensors.position_ids.data).toEqual(BigInt64Array.from([0n, 1n, 2n, 9007199254740993n]));
    // 2^53 + 1 does not fit int32: the conversion names the tensor, the element and the value.
    const err = (() => {
      try {
        convertLoaded({ tensors, metadata: {} });
      } catch (e) {
        return e as CheckpointError;
      }
      return undefined;
    })();
    expect(err).toMatchObject({ code: ErrorCode.OUT_OF_RANGE, tensor: 'position_ids' });
    expect(err?.message).toContain('element 3 is 9007199254740993');
  });

  test('conversions: F16 and BF16 exactly (subnormals, infinities, NaN), F64 rounded, U8 numeric, never bool', () => {
    const f16 = Uint16Array.from([0x0000, 0x8000, 0x3c00, 0xc000, 0x0001, 0x03ff, 0x7bff, 0x7c00, 0xfc00, 0x7e00]);
    expect(Array.from(toTfjs({ name: 'h', safetensorsDtype: 'F16', data: f16 }, 'float32'))).toEqual([
      0,
      -0,
      1,
      -2,
      2 ** -24,
      1023 * 2 ** -24,
      65504,
      Infinity,
      -Infinity,
      NaN,
    ]);
    const f32 = Float32Array.from([3.140625, -0.0078125, 1e-40, Infinity]);
    const bf16 = Uint16Array.from(Array.from(new Uint32Array(f32.buffer), (b) => b >>> 16));
    expect(toTfjs({ name: 'b', safetensorsDtype: 'BF16', data: bf16 }, 'float32')).toEqual(
      Float32Array.from(
        Array.from(new Uint32Array(f32.buffer), (b) => new Float32Array(Uint32Array.of((b >>> 16) << 16).buffer)[0]),
      ),
    );
    expect(Array.from(toTfjs({ name: 'd', safetensorsDtype: 'F64', data: Float64Array.of(0.1) }, 'float32'))).toEqual([
      Math.fround(0.1),
    ]);
    expect(toTfjs({ name: 'u', safetensorsDtype: 'U8', data: Uint8Array.of(0, 255) }, 'int32')).toEqual(
      Int32Array.of(0, 255),
    );
    expect(() => toTfjs({ name: 'u', safetensorsDtype: 'U8', data: Uint8Array.of(1) }, 'bool')).toThrow(
      expect.objectContaining({ code: ErrorCode.UNSUPPORTED_DTYPE, tensor: 'u' }),
    );
    expect(() => toTfjs({ name: 'x', safetensorsDtype: 'U32', data: Uint32Array.of(1, 2 ** 31) }, 'int32')).toThrow(
      expect.objectContaining({ code: ErrorCode.OUT_OF_RANGE, tensor: 'x' }),
    );
    expect(() => toTfjs({ name: 'c', safetensorsDtype: 'C64', data: new Float32Array(2) }, 'float32')).toThrow(
      expect.objectContaining({ code: ErrorCode.UNSUPPORTED_DTYPE }),
    );
  });

  test.each(['F16', 'BF16'] as const)(
    'a %s file restores into a float32 model exactly (verify: false, reported unverified)',
    async (st) => {
      const model = tf.sequential({ layers: [tf.layers.dense({ units: 2, inputShape: [3] })] });
      const [kernel, bias] = model.weights;
      const kernelBits = Uint16Array.from([0x3c00, 0xc000, 0x3800, 0x0001, 0x7bff, 0x8000]);
      const biasBits = Uint16Array.from([0x4248, 0xbe00]);
      const values = (bits: Uint16Array) =>
        st === 'F16'
          ? Array.from(toTfjs({ name: 'v', safetensorsDtype: 'F16', data: bits }, 'float32'))
          : Array.from(bits, (b) => new Float32Array(Uint32Array.of(b << 16).buffer)[0]);
      const dir = await tempDir();
      const file = path.join(dir, `${st}.safetensors`);
      await fsp.writeFile(
        file,
        plainSafetensors(
          {
            __metadata__: { format: 'pt' },
            [kernel.originalName]: { dtype: st, shape: [3, 2], data_offsets: [0, 12] },
            [bias.originalName]: { dtype: st, shape: [2], data_offsets: [12, 16] },
          },
          Buffer.concat([Buffer.from(kernelBits.buffer), Buffer.from(biasBits.buffer)]),
        ),
      );
      await expect(restoreCheckpoint(model, file)).rejects.toMatchObject({ code: ErrorCode.UNVERIFIED });
      const result = await restoreCheckpoint(model, file, { verify: false });
      expect(result.verification).toBe('unverified');
      expect(Array.from(await kernel.read().data())).toEqual(values(kernelBits));
      expect(Array.from(await bias.read().data())).toEqual(values(biasBits));
      model.dispose();
    },
  );
});
