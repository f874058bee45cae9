/**
 * The native addon at its boundary: CRC32C (vectors, hardware vs portable vs the TypeScript implementation),
 * write/read of hand-built plans with the bytes checked independently, the failure objects (BackendFailure),
 * temp-file cleanup, keeping the written arrays alive, durable on/off, and use from worker_threads.
 * The cross-backend suite through the public API lives elsewhere.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { types } from 'node:util';
import { MessageChannel, Worker } from 'node:worker_threads';
import type { ReadIntoPlan, ReadPlan, WritePlan } from '../../lib/backend/backend';
import { crc32c as crc32cTs, crc32cCombine as crc32cCombineTs } from '../../lib/format/crc32c';
import { findPackageRoot, loadNativeBackend, type NativeBackend } from '../../lib/backend/native-backend';
import { randomBytes } from '../helpers/random-bytes';

const loaded = loadNativeBackend();
if ('error' in loaded) throw loaded.error; // the addon must build and load here: fail loudly, never skip
const native: NativeBackend = loaded.backend;

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ckpt-native-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);
const hex = (crc: number): string => (crc >>> 0).toString(16).padStart(8, '0');

/**
 * A file prefix like format.ts builds: 8-byte LE length, JSON with "00000000" placeholders (header CRC, then one
 * per tensor separated by commas), padded with spaces to a multiple of 8.
 */
function buildHeader(lengths: number[]): { header: Uint8Array; headerCrcOffset: number; tensorCrcOffset: number } {
  const tensors: Record<string, unknown> = {};
  let offset = 0;
  lengths.forEach((len, i) => {
    tensors[`t${i}`] = { dtype: 'U8', shape: [len], data_offsets: [offset, offset + len] };
    offset += len;
  });
  const crcs = lengths.map(() => '00000000').join(',');
  const metadata = { format: 'test', header_crc32c: 'HDRCRC__', crc32c: crcs || 'NONE' };
  let json = JSON.stringify({ __metadata__: metadata, ...tensors }).replace('HDRCRC__', '00000000');
  while ((8 + json.length) % 8 !== 0) json += ' ';
  const header = new Uint8Array(8 + json.length);
  new DataView(header.buffer).setBigUint64(0, BigInt(json.length), true);
  header.set(ascii(json), 8);
  const headerCrcOffset = 8 + json.indexOf('"header_crc32c":"') + '"header_crc32c":"'.length;
  const tensorCrcOffset = 8 + json.indexOf('"crc32c":"') + '"crc32c":"'.length;
  return { header, headerCrcOffset, tensorCrcOffset };
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

function makeWritePlan(arrays: ArrayBufferView[], name = 'model.safetensors', durable = true): WritePlan {
  const { header, headerCrcOffset, tensorCrcOffset } = buildHeader(arrays.map((a) => a.byteLength));
  return {
    path: path.join(dir, name),
    tmpPath: path.join(dir, `.${name}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`),
    header,
    headerCrcOffset,
    tensorCrcOffset,
    arrays,
    durable,
  };
}

/** The read plan of a file written from `plan`, derived independently of the addon. */
function makeReadPlan(plan: WritePlan, verify = true): ReadPlan {
  const ranges: number[] = [];
  let offset = 0;
  for (const a of plan.arrays) {
    ranges.push(offset, offset + a.byteLength);
    offset += a.byteLength;
  }
  return {
    path: plan.path,
    fileSize: plan.header.byteLength + offset,
    dataStart: plan.header.byteLength,
    ranges,
    crcs: plan.arrays.map((a) => crc32cTs(a)),
    verify,
  };
}

/** Checks every byte of a written file against the plan, computing the CRCs with the TypeScript implementation. */
function expectFileMatchesPlan(file: string, plan: WritePlan, arrays: Uint8Array[] = plan.arrays.map(bytesOf)): void {
  const bytes = new Uint8Array(fs.readFileSync(file));
  const expectedHeader = plan.header.slice();
  arrays.forEach((a, i) => expectedHeader.set(ascii(hex(crc32cTs(a))), plan.tensorCrcOffset + 9 * i));
  expectedHeader.set(ascii(hex(crc32cTs(expectedHeader))), plan.headerCrcOffset);
  expect(bytes.length).toBe(plan.header.length + arrays.reduce((s, a) => s + a.length, 0));
  expect(Buffer.from(bytes.subarray(0, plan.header.length)).toString('latin1')).toBe(
    Buffer.from(expectedHeader).toString('latin1'),
  );
  let offset = plan.header.length;
  for (const a of arrays) {
    expect(Buffer.compare(bytes.subarray(offset, offset + a.length), a)).toBe(0);
    offset += a.length;
  }
}

function tempFilesIn(d: string): string[] {
  return fs.readdirSync(d).filter((f) => f.includes('.tmp-'));
}

describe('loading', () => {
  it('finds the package root (the package.json named tfjs-checkpoint) from source and compiled locations', () => {
    const root = path.resolve(__dirname, '..', '..');
    expect(findPackageRoot(path.join(root, 'lib'))).toBe(root);
    expect(findPackageRoot(path.join(root, 'dist', 'lib'))).toBe(root);
    expect(findPackageRoot(os.tmpdir())).toBeUndefined();
    expect(native.binaryPath.startsWith(root)).toBe(true);
  });
});

describe('crc32c', () => {
  const vectors: Array<[string, Uint8Array, number]> = [
    ['"123456789"', ascii('123456789'), 0xe3069283],
    ['empty input', new Uint8Array(0), 0],
    ['32 zero bytes (RFC 3720)', new Uint8Array(32), 0x8a9136aa],
    ['32 0xff bytes (RFC 3720)', new Uint8Array(32).fill(0xff), 0x62a8ab43],
    ['bytes 0..31 (RFC 3720)', Uint8Array.from({ length: 32 }, (_, i) => i), 0x46dd794e],
    ['bytes 31..0 (RFC 3720)', Uint8Array.from({ length: 32 }, (_, i) => 31 - i), 0x113fdb5c],
  ];
  it.each(vectors)('matches the known CRC32C of %s in both implementations', (_name, data, expected) => {
    expect(native.crc32c(data)).toBe(expected);
    expect(native.crc32cPortable(data)).toBe(expected);
  });

  it('uses the hardware instructions on an x86-64 CPU with SSE4.2', () => {
    expect(typeof native.crc32cHardware).toBe('boolean');
    const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
    if (process.arch === 'x64' && /\bsse4_2\b/.test(cpuinfo)) expect(native.crc32cHardware).toBe(true);
    if (process.arch === 'arm64' && /\bcrc32\b/.test(cpuinfo)) expect(native.crc32cHardware).toBe(true);
  });

  it('gives the same result in hardware, portable and TypeScript for random lengths and alignments', () => {
    const pool = randomBytes(3 * 8192 * 4 + 4096, 12345);
    // Lengths around the three-stream block thresholds (3 * 256, 3 * 8192) and random ones.
    const lengths = [1, 7, 8, 9, 767, 768, 769, 24575, 24576, 24577, 3 * 24576 + 5];
    let seed = 99;
    for (let i = 0; i < 300; i++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      lengths.push(seed % (i % 3 === 0 ? 2000 : 90000));
    }
    lengths.forEach((length, i) => {
      const offset = (i * 7) % 64;
      const view = pool.subarray(offset, offset + length);
      const expected = crc32cTs(view);
      expect([native.crc32c(view), native.crc32cPortable(view)]).toEqual([expected, expected]);
    });
  });

  it('continues a previous CRC: crc32c(b, crc32c(a)) === crc32c(a + b)', () => {
    const data = randomBytes(100_000, 7);
    for (const split of [0, 1, 5, 768, 24_576, 50_001, 99_999, 100_000]) {
      const a = data.subarray(0, split);
      const b = data.subarray(split);
      expect(native.crc32c(b, native.crc32c(a))).toBe(native.crc32c(data));
      expect(native.crc32cPortable(b, native.crc32cPortable(a))).toBe(native.crc32c(data));
    }
  });

  it('crc32cCombine joins CRCs computed apart: the addon and the TypeScript one agree with the CRC of the whole', () => {
    const data = randomBytes(100_000, 8);
    const whole = native.crc32c(data);
    for (const split of [0, 1, 5, 768, 24_576, 50_001, 99_999, 100_000]) {
      const [a, b] = [native.crc32c(data.subarray(0, split)), native.crc32c(data.subarray(split))];
      expect([native.crc32cCombine(a, b, 100_000 - split), crc32cCombineTs(a, b, 100_000 - split)]).toEqual([
        whole,
        whole,
      ]);
    }
    // Lengths beyond 32 bits (no bytes needed): both implementations agree on random CRCs and lengths up to 2^53.
    const r = randomBytes(4 * 3 * 200, 9);
    const dv = new DataView(r.buffer);
    for (let i = 0; i < 200; i++) {
      const [a, b] = [dv.getUint32(12 * i), dv.getUint32(12 * i + 4)];
      const length = Math.floor((dv.getUint32(12 * i + 8) / 2 ** 32) * 2 ** (i % 54));
      expect(native.crc32cCombine(a, b, length)).toBe(crc32cCombineTs(a, b, length));
    }
    expect(native.crc32cCombine(0, whole, 100_000)).toBe(whole);
    expect(crc32cCombineTs(whole, 0, 0)).toBe(whole);
  });

  it('respects byteOffset and byteLength of any view type, including views of a SharedArrayBuffer', () => {
    const bytes = randomBytes(4096 + 16, 3);
    const f32 = new Float32Array(bytes.buffer, 16, 1024);
    const dv = new DataView(bytes.buffer, 5, 1000);
    expect(native.crc32c(f32)).toBe(crc32cTs(bytes.subarray(16, 16 + 4096)));
    expect(native.crc32c(dv)).toBe(crc32cTs(bytes.subarray(5, 1005)));
    expect(native.crc32c(Buffer.from(bytes.buffer, 3, 10))).toBe(crc32cTs(bytes.subarray(3, 13)));
    const shared = new Uint8Array(new SharedArrayBuffer(64), 5, 40);
    shared.set(bytes.subarray(0, 40));
    expect(native.crc32c(shared)).toBe(crc32cTs(bytes.subarray(0, 40)));
    expect(native.crc32c(new DataView(shared.buffer, 5, 40))).toBe(crc32cTs(bytes.subarray(0, 40)));
  });

  it('throws a TypeError (never aborts) on a non-view or an out-of-range crc', () => {
    const addonCrc = native.crc32c as (data: unknown, crc?: unknown) => number;
    // The addon's errors belong to the main realm, not jest's sandbox: compare names, not constructors.
    const thrown = (f: () => unknown): unknown => {
      try {
        f();
      } catch (e) {
        return e;
      }
      return undefined;
    };
    for (const call of [
      () => addonCrc('abc'),
      () => addonCrc(new Uint8Array(1), -1),
      () => addonCrc(new Uint8Array(1), 2 ** 32),
      () => addonCrc(new Uint8Array(1), 1.5),
    ]) {
      expect(thrown(call)).toMatchObject({ name: 'TypeError' });
    }
  });
});

describe('write and read', () => {
  it('round-trips tensors of several view types, including empty ones and offset views', async () => {
    const pool = randomBytes(10_000, 42);
    const arrays: ArrayBufferView[] = [
      new Float32Array(pool.buffer, 8, 100),
      new Uint8Array(0),
      pool.subarray(1, 1 + 333), // unaligned
      new DataView(pool.buffer, 1000, 17),
      new Int32Array([1, -2, 3, 2147483647]),
      new Uint8Array(0),
    ];
    const plan = makeWritePlan(arrays);
    await native.write(plan);
    expectFileMatchesPlan(plan.path, plan);
    expect(tempFilesIn(dir)).toEqual([]);

    const buffers = await native.read(makeReadPlan(plan));
    expect(buffers).toHaveLength(arrays.length);
    buffers.forEach((buffer, i) => {
      expect(buffer).toBeInstanceOf(ArrayBuffer);
      expect(buffer.byteLength).toBe(arrays[i].byteLength);
      expect(Buffer.compare(new Uint8Array(buffer), bytesOf(arrays[i]))).toBe(0);
    });
  });

  it('returns ArrayBuffers whose bytes survive a transfer (Node copies external buffers instead of detaching)', async () => {
    const data = randomBytes(100_000, 11);
    const plan = makeWritePlan([data, randomBytes(10, 12)]);
    await native.write(plan);
    const [first] = await native.read(makeReadPlan(plan));
    const { port1, port2 } = new MessageChannel();
    const received = new Promise<ArrayBuffer>((resolve) => port2.once('message', resolve));
    port1.postMessage(first, [first]);
    const copy = await received;
    port1.close();
    port2.close();
    expect(Buffer.compare(new Uint8Array(copy), data)).toBe(0);
    expect(Buffer.compare(new Uint8Array(first), data)).toBe(0); // still valid: external buffers are not detachable
  });

  it('reads a subset of the ranges (not from 0, not to the end, with gaps, within a tensor), checking their CRCs', async () => {
    const arrays = [randomBytes(1000, 21), randomBytes(3000, 22), randomBytes(500, 23), randomBytes(700, 24)];
    const plan = makeWritePlan(arrays);
    await native.write(plan);
    const full = makeReadPlan(plan);
    const data = Buffer.concat(arrays.map((a) => bytesOf(a)));
    // Tensors 1 and 3 (skipping 0, 2 and nothing after 3 missing; then 1 and 2 only, stopping before the end).
    for (const pick of [
      [1, 3],
      [1, 2],
    ]) {
      const buffers = await native.read({
        ...full,
        ranges: pick.flatMap((i) => full.ranges.slice(2 * i, 2 * i + 2)),
        crcs: pick.map((i) => full.crcs[i]),
      });
      expect(buffers.map((b) => Buffer.from(b))).toEqual(pick.map((i) => Buffer.from(bytesOf(arrays[i]))));
    }
    // A piece of a tensor, unverified.
    const [piece] = await native.read({ ...full, ranges: [1500, 2600], crcs: [], verify: false });
    expect(Buffer.compare(new Uint8Array(piece), data.subarray(1500, 2600))).toBe(0);
    // A wrong CRC in a subset names the index within the plan.
    await expect(
      native.read({ ...full, ranges: full.ranges.slice(2, 6), crcs: [full.crcs[1], full.crcs[2] ^ 1] }),
    ).rejects.toMatchObject({ kind: 'checksum', tensorIndex: 1, actualCrc: full.crcs[2] });
  });

  it('writes a file with no tensors and reads it back as an empty list', async () => {
    const plan = makeWritePlan([]);
    await native.write(plan);
    expectFileMatchesPlan(plan.path, plan);
    expect(await native.read(makeReadPlan(plan))).toEqual([]);
  });

  it('writes a tensor spanning many write chunks with the right CRC', async () => {
    const big = randomBytes(3 * 1024 * 1024 + 12345, 5);
    const plan = makeWritePlan([new Uint8Array(16), big]);
    await native.write(plan);
    expectFileMatchesPlan(plan.path, plan);
    const [, back] = await native.read(makeReadPlan(plan));
    expect(Buffer.compare(new Uint8Array(back), big)).toBe(0);
  });

  it.each([true, false])('writes identical bytes with durable: %s and replaces an existing file', async (durable) => {
    fs.writeFileSync(path.join(dir, 'model.safetensors'), 'old contents');
    const plan = makeWritePlan([randomBytes(1000, 1), randomBytes(10, 2)], 'model.safetensors', durable);
    await native.write(plan);
    expectFileMatchesPlan(plan.path, plan);
    expect(tempFilesIn(dir)).toEqual([]);
  });

  it('runs many writes and reads at once without mixing them up', async () => {
    const plans = Array.from({ length: 16 }, (_, i) =>
      makeWritePlan([randomBytes(50_000 + i, i + 1), randomBytes(i, i + 100)], `m${i}.safetensors`),
    );
    await Promise.all(plans.map((p) => native.write(p)));
    const results = await Promise.all(plans.map((p) => native.read(makeReadPlan(p))));
    results.forEach((buffers, i) => {
      plans[i].arrays.forEach((a, k) => expect(Buffer.compare(new Uint8Array(buffers[k]), bytesOf(a))).toBe(0));
    });
  });

  it('keeps the arrays alive until the write settles (child process with --expose-gc)', () => {
    const binary = native.binaryPath;
    const file = path.join(dir, 'gc.safetensors');
    // The only references to the arrays are inside the plan, which is dropped right after the call; the child then
    // forces garbage collections and churns the heap while the write runs, and finally checks the bytes on disk.
    const script = `
      const addon = require(${JSON.stringify(binary)});
      const crc32c = (bytes) => addon.crc32cPortable(bytes);
      (async () => {
        const expected = [];
        const start = () => {
          const arrays = [];
          for (let i = 0; i < 8; i++) {
            const a = new Float64Array(1 << 19).map((_, k) => k * (i + 1) + 0.5);
            expected.push(crc32c(new Uint8Array(a.buffer)));
            arrays.push(a);
          }
          const json = '{"__metadata__":{"h":"00000000","c":"' + arrays.map(() => '00000000').join(',') + '"}}';
          const padded = json + ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
          const header = new Uint8Array(8 + padded.length);
          new DataView(header.buffer).setBigUint64(0, BigInt(padded.length), true);
          header.set(Buffer.from(padded, 'latin1'), 8);
          return addon.write({ path: ${JSON.stringify(file)}, tmpPath: ${JSON.stringify(file + '.tmp-gc')}, header,
            headerCrcOffset: 8 + padded.indexOf('"h":"') + 5, tensorCrcOffset: 8 + padded.indexOf('"c":"') + 5,
            arrays, durable: true });
        };
        const pending = start();
        let junk = [];
        for (let round = 0; round < 20; round++) {
          global.gc();
          junk.push(new Float64Array(1 << 19).fill(-1));
          if (junk.length > 4) junk = [];
          await new Promise((r) => setImmediate(r));
        }
        await pending;
        const bytes = require('fs').readFileSync(${JSON.stringify(file)});
        const n = bytes.readUInt32LE(0);
        const header = bytes.subarray(8, 8 + n).toString('latin1');
        const stored = /"c":"([^"]*)"/.exec(header)[1].split(',').map((h) => parseInt(h, 16));
        const data = bytes.subarray(8 + n);
        const actual = [];
        for (let i = 0; i < 8; i++) actual.push(crc32c(data.subarray(i * 8 * (1 << 19), (i + 1) * 8 * (1 << 19))));
        process.stdout.write(JSON.stringify({ expected, stored, actual }));
      })().catch((e) => { console.error(e); process.exit(1); });
    `;
    const out = JSON.parse(execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' })) as {
      expected: number[];
      stored: number[];
      actual: number[];
    };
    expect(out.stored).toEqual(out.expected);
    expect(out.actual).toEqual(out.expected);
  });

  it('writes from a worker_threads worker, and a file written there reads back on the main thread', async () => {
    const file = path.join(dir, 'worker.safetensors');
    const plan = makeWritePlan([randomBytes(5000, 9), randomBytes(3, 10)], 'worker.safetensors');
    const worker = new Worker(
      `
      const { parentPort, workerData } = require('node:worker_threads');
      const addon = require(workerData.binary);
      addon.write(workerData.plan).then(
        () => addon.read(workerData.readPlan).then((buffers) => parentPort.postMessage({ ok: buffers.map((b) => b.byteLength) })),
        (e) => parentPort.postMessage({ error: String(e) }),
      );
      `,
      { eval: true, workerData: { binary: native.binaryPath, plan, readPlan: makeReadPlan(plan) } },
    );
    const message = await new Promise<{ ok?: number[]; error?: string }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await worker.terminate();
    expect(message).toEqual({ ok: [5000, 3] });
    expect(plan.path).toBe(file);
    expectFileMatchesPlan(file, plan);
  });
  it('survives a worker_threads worker terminated while its write and read are in flight', () => {
    // In a child process, so that an abort (node-addon-api throwing while the worker's environment shuts down)
    // shows up as a failed exit status instead of killing the test runner.
    const file = path.join(dir, 'terminated.safetensors');
    const script = `
      const { Worker } = require('node:worker_threads');
      const src = \`
        const { parentPort, workerData } = require('node:worker_threads');
        const addon = require(workerData.binary);
        const arrays = [];
        for (let i = 0; i < 4; i++) arrays.push(new Float32Array(4 << 20).fill(i));
        const json = '{"__metadata__":{"h":"00000000","c":"' + arrays.map(() => '00000000').join(',') + '"}}';
        const padded = json + ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
        const header = new Uint8Array(8 + padded.length);
        new DataView(header.buffer).setBigUint64(0, BigInt(padded.length), true);
        header.set(Buffer.from(padded, 'latin1'), 8);
        addon.write({ path: workerData.file, tmpPath: workerData.file + '.tmp', header, arrays, durable: false,
          headerCrcOffset: 8 + padded.indexOf('"h":"') + 5, tensorCrcOffset: 8 + padded.indexOf('"c":"') + 5 });
        const size = require('node:fs').statSync(workerData.binary).size;
        addon.read({ path: workerData.binary, fileSize: size, dataStart: 0, ranges: [0, size], crcs: [], verify: false });
        parentPort.postMessage('started');
      \`;
      (async () => {
        const worker = new Worker(src, { eval: true, workerData: { binary: ${JSON.stringify(native.binaryPath)},
          file: ${JSON.stringify(file)} } });
        await new Promise((resolve) => worker.once('message', resolve));
        await worker.terminate();
        process.stdout.write('ok');
      })();
    `;
    expect(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })).toBe('ok');
  });
});

describe('failures', () => {
  it('rejects with kind io, ENOENT, open and the temp path when the directory does not exist', async () => {
    const plan = makeWritePlan([randomBytes(10, 1)]);
    plan.path = path.join(dir, 'missing', 'm.safetensors');
    plan.tmpPath = path.join(dir, 'missing', '.m.tmp-1');
    await expect(native.write(plan)).rejects.toMatchObject({
      kind: 'io',
      errno: os.constants.errno.ENOENT,
      syscall: 'open',
      path: plan.tmpPath,
      tensorIndex: -1,
    });
  });

  it('rejects with EEXIST when the temp file exists, and leaves that file and the target alone', async () => {
    const plan = makeWritePlan([randomBytes(10, 1)]);
    fs.writeFileSync(plan.tmpPath, 'another writer');
    fs.writeFileSync(plan.path, 'previous checkpoint');
    const failure = await native.write(plan).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(types.isNativeError(failure)).toBe(true);
    expect(failure).toMatchObject({
      kind: 'io',
      errno: os.constants.errno.EEXIST,
      syscall: 'open',
      path: plan.tmpPath,
    });
    expect((failure as Error).message).toContain('EEXIST');
    expect(fs.readFileSync(plan.tmpPath, 'utf8')).toBe('another writer');
    expect(fs.readFileSync(plan.path, 'utf8')).toBe('previous checkpoint');
  });

  it('removes its temp file when the rename fails (the target is a non-empty directory)', async () => {
    const plan = makeWritePlan([randomBytes(100, 1)]);
    fs.mkdirSync(plan.path);
    fs.writeFileSync(path.join(plan.path, 'keep'), 'x');
    await expect(native.write(plan)).rejects.toMatchObject({ kind: 'io', syscall: 'rename', path: plan.path });
    expect(tempFilesIn(dir)).toEqual([]);
    expect(fs.readFileSync(path.join(plan.path, 'keep'), 'utf8')).toBe('x');
  });

  it('rejects a read of a missing file with kind io, ENOENT, open', async () => {
    const plan = makeReadPlan(makeWritePlan([randomBytes(10, 1)]));
    await expect(native.read(plan)).rejects.toMatchObject({
      kind: 'io',
      errno: os.constants.errno.ENOENT,
      syscall: 'open',
      path: plan.path,
    });
  });

  it('rejects a read of a directory with EISDIR instead of reading it', async () => {
    const plan = makeReadPlan(makeWritePlan([]));
    fs.mkdirSync(plan.path);
    await expect(native.read(plan)).rejects.toMatchObject({ kind: 'io', errno: os.constants.errno.EISDIR });
  });

  it.each([
    ['one byte longer', 1],
    ['one byte shorter', -1],
  ])('rejects a file %s than the plan with kind corrupt', async (_name, delta) => {
    const plan = makeWritePlan([randomBytes(100, 1), randomBytes(50, 2)]);
    await native.write(plan);
    const readPlan = makeReadPlan(plan);
    if (delta > 0) fs.appendFileSync(plan.path, Buffer.from([0]));
    else fs.truncateSync(plan.path, readPlan.fileSize - 1);
    await expect(native.read(readPlan)).rejects.toMatchObject({
      kind: 'corrupt',
      errno: 0,
      syscall: '',
      path: plan.path,
      tensorIndex: -1,
    });
  });

  it('names the altered tensor of a checksum mismatch, with the CRC of the bytes actually read', async () => {
    const arrays = [randomBytes(100, 1), new Uint8Array(0), randomBytes(64, 2), randomBytes(7, 3)];
    const plan = makeWritePlan(arrays);
    await native.write(plan);
    const readPlan = makeReadPlan(plan);
    const fd = fs.openSync(plan.path, 'r+');
    const at = readPlan.dataStart + 100 + 10; // inside tensor 2
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    b[0] ^= 0x10;
    fs.writeSync(fd, b, 0, 1, at);
    fs.closeSync(fd);
    const altered = arrays[2].slice();
    altered[10] ^= 0x10;
    await expect(native.read(readPlan)).rejects.toMatchObject({
      kind: 'checksum',
      tensorIndex: 2,
      actualCrc: crc32cTs(altered),
      path: plan.path,
      errno: 0,
    });
    // verify: false reads the altered bytes without complaint.
    const buffers = await native.read({ ...readPlan, verify: false, crcs: [] });
    expect(Buffer.compare(new Uint8Array(buffers[2]), altered)).toBe(0);
  });

  it('fails early on a full filesystem (ENOSPC on a 1 MiB tmpfs, or EFBIG past RLIMIT_FSIZE), cleaning up', async () => {
    const mnt = path.join(dir, 'small-fs');
    fs.mkdirSync(mnt);
    let mounted = false;
    if (process.platform === 'linux' && process.getuid?.() === 0) {
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { stdio: 'ignore' });
        mounted = true;
      } catch {
        // no permission to mount here (a container without CAP_SYS_ADMIN): use the resource limit below
      }
    }
    const plan = makeWritePlan([randomBytes(2 * 1024 * 1024, 1)]);
    plan.path = path.join(mnt, 'model.safetensors');
    plan.tmpPath = path.join(mnt, '.model.safetensors.tmp-full');
    fs.writeFileSync(plan.path, 'previous');
    try {
      if (mounted) {
        await expect(native.write(plan)).rejects.toMatchObject({
          kind: 'io',
          errno: os.constants.errno.ENOSPC,
          path: plan.tmpPath,
        });
        // Once the data fits, the next save works.
        const small = makeWritePlan([randomBytes(1000, 2)]);
        await native.write({ ...small, path: plan.path, tmpPath: plan.tmpPath });
        expectFileMatchesPlan(plan.path, { ...small, path: plan.path });
      } else {
        const script = `
          const plan = ${JSON.stringify({ ...plan, header: Array.from(plan.header), arrays: [] })};
          plan.header = Uint8Array.from(plan.header);
          plan.arrays = [new Uint8Array(2 * 1024 * 1024)];
          require(${JSON.stringify(native.binaryPath)}).write(plan).then(
            () => process.stdout.write('{}'),
            (e) => process.stdout.write(JSON.stringify(e)),
          );
        `;
        const out = execFileSync('prlimit', ['--fsize=65536', process.execPath, '-e', script], { encoding: 'utf8' });
        expect(JSON.parse(out)).toMatchObject({ kind: 'io', errno: os.constants.errno.EFBIG, path: plan.tmpPath });
        expect(fs.readFileSync(plan.path, 'utf8')).toBe('previous');
      }
      expect(tempFilesIn(mnt)).toEqual([]);
    } finally {
      if (mounted) execFileSync('umount', [mnt]);
    }
  });

  it("reports a failed allocation as a 'memory' failure without errno (the JS backend's wording), instead of aborting (sparse 1 TiB file)", async () => {
    const file = path.join(dir, 'huge.safetensors');
    fs.writeFileSync(file, '');
    fs.truncateSync(file, 2 ** 40); // sparse: no disk used, but the plan asks for a 1 TiB buffer
    await expect(
      native.read({ path: file, fileSize: 2 ** 40, dataStart: 16, ranges: [0, 2 ** 40 - 16], crcs: [0], verify: true }),
    ).rejects.toMatchObject({
      kind: 'memory',
      errno: 0,
      syscall: '',
      path: file,
      message: `could not allocate ${2 ** 40 - 16} bytes (out of memory) for '${file}'`,
    });
  });

  it('throws TypeError/RangeError for plans that break the contract, and writes nothing', async () => {
    const good = makeWritePlan([randomBytes(10, 1)]);
    // The addon's errors belong to the main realm, not jest's sandbox: compare names, not constructors.
    const bad: Array<[Partial<Record<keyof WritePlan, unknown>>, string]> = [
      [{ arrays: [123] }, 'TypeError'],
      [{ arrays: 'not an array' }, 'TypeError'],
      [{ header: Array.from(good.header) }, 'TypeError'],
      [{ header: new Uint16Array(8) }, 'TypeError'],
      [{ path: 42 }, 'TypeError'],
      [{ tmpPath: 'a\0b' }, 'TypeError'],
      [{ durable: 'yes' }, 'TypeError'],
      [{ headerCrcOffset: -1 }, 'TypeError'],
      [{ headerCrcOffset: good.header.length }, 'RangeError'],
      [{ tensorCrcOffset: good.header.length - 4 }, 'RangeError'],
      [{ headerCrcOffset: 0 }, 'RangeError'],
    ];
    for (const [patch, name] of bad) {
      await expect(native.write({ ...good, ...patch } as WritePlan)).rejects.toMatchObject({ name });
    }
    await expect((native.write as (p: unknown) => Promise<void>)(undefined)).rejects.toMatchObject({
      name: 'TypeError',
    });
    const readGood = makeReadPlan(good);
    const badReads: Array<[Partial<Record<keyof ReadIntoPlan, unknown>>, string]> = [
      [{ ranges: [0, 5, 4, 10] }, 'RangeError'], // overlapping
      [{ ranges: [0, 5, 7, 6] }, 'RangeError'], // a range ending before it begins
      [{ ranges: [0, readGood.fileSize - readGood.dataStart + 1], crcs: [0] }, 'RangeError'], // past the data
      [{ ranges: [0] }, 'RangeError'],
      [{ crcs: [] }, 'RangeError'],
      [{ dataStart: readGood.fileSize + 1 }, 'RangeError'],
      [{ fileSize: -1 }, 'TypeError'],
      [{ fileSize: 2 ** 53 }, 'TypeError'],
      [{ crcs: [2 ** 32] }, 'TypeError'],
      [{ ranges: [0, '10'] }, 'TypeError'],
      [{ into: 'x' }, 'TypeError'], // not an array
      [{ into: [new DataView(new ArrayBuffer(1)), 5] }, 'TypeError'], // an entry neither null nor a view
      [{ into: [null, null] }, 'RangeError'], // not one per range
      [{ into: readGood.crcs.map(() => new Uint8Array(1)) }, 'RangeError'], // a length other than its range's
      [{ into: readGood.crcs.map(() => null), map: true }, 'RangeError'],
    ];
    for (const [patch, name] of badReads) {
      await expect(native.read({ ...readGood, ...patch } as ReadPlan)).rejects.toMatchObject({ name });
    }
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});

/** The scheduling policy of each thread of this process (field 41 of /proc/self/task/<tid>/stat; 3 is SCHED_BATCH). */
function threadPolicies(): number[] {
  return fs.readdirSync('/proc/self/task').flatMap((tid) => {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      return [Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38])];
    } catch {
      return []; // the thread ended meanwhile
    }
  });
}

describe('commit queue scheduling', () => {
  test('on Linux the commit queue thread runs under SCHED_BATCH (waking it from step() does not preempt the JS thread), and its thread is gone after close()', async () => {
    if (process.platform !== 'linux') {
      // /proc and SCHED_BATCH are Linux's: elsewhere the thread keeps the default policy (commit_queue.h).
      expect(fs.existsSync('/proc/self/task')).toBe(false);
      return;
    }
    const SCHED_BATCH = 3;
    const batch = (): number => threadPolicies().filter((p) => p === SCHED_BATCH).length;
    const before = batch();
    const queue = native.openCommitQueue();
    // The thread sets its own policy as it starts: allow it a moment.
    const deadline = Date.now() + 5000;
    while (batch() === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(batch()).toBe(before + 1);
    await queue.close();
    expect(batch()).toBe(before);
  });
});
