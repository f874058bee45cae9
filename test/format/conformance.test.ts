/**
 * Conformance: files written by saveTensors follow every rule of the safetensors format and of this library's
 * checksums, checked by an independent reading of the spec (this file's own parser and CRC32C, not lib/format/header.ts or
 * lib/format/crc32c.ts), and tensors round-trip bit-exactly through both backends, which write identical bytes and read each
 * other's files.
 */
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { convertLoaded } from '../../lib/format/dtype-convert';
import { PYTHON_HINT, findPythonSafetensors, runPython } from '../helpers/python-safetensors';
import { loadTensors, readCheckpointInfo, saveTensors, setBackend, verifyCheckpoint } from '../../lib/index';
import type { LoadedTensor, NamedTensors, TensorData } from '../../lib/index';

// ---------------------------------------------------------------------------------------------------------------
// An independent reading of the spec.

/** CRC32C table built bit by bit from the reflected Castagnoli polynomial (byte-at-a-time, unlike lib's slicing-8). */
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function specCrc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Element sizes of the safetensors dtypes (huggingface/safetensors, src/tensor.rs). */
const SPEC_DTYPE_SIZES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};
const TFJS_DTYPE: Record<string, TensorData['dtype']> = { F32: 'float32', I32: 'int32', BOOL: 'bool' };

interface SpecTensor {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

interface SpecFile {
  n: number;
  metadata: Record<string, string>;
  /** In file (offset) order. */
  tensors: SpecTensor[];
  data: Uint8Array;
}

const MAX_N = 100_000_000;
const HEADER_CRC_KEY = 'tfjs_checkpoint.header_crc32c';
const TENSOR_CRCS_KEY = 'tfjs_checkpoint.tensor_crc32c';

/** Parses `file` by the spec, failing the test (with a message naming the rule) on any violation. */
function specParse(file: Uint8Array): SpecFile {
  const fail = (rule: string): never => {
    throw new Error(`safetensors rule violated: ${rule}`);
  };
  if (file.length < 8) fail('file shorter than 8 bytes');
  const n64 = new DataView(file.buffer, file.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(MAX_N)) fail('N <= 100,000,000');
  const n = Number(n64);
  if (8 + n > file.length) fail('8 + N <= file size');
  if (n % 8 !== 0) fail('N is a multiple of 8');
  const headerBytes = file.subarray(8, 8 + n);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    return fail('header is valid UTF-8');
  }
  const jsonEnd = text.lastIndexOf('}') + 1;
  if (!/^ *$/.test(text.slice(jsonEnd))) fail('header padded with spaces only');
  if (text.length - jsonEnd >= 8) fail('padding is shorter than 8 bytes (the minimal padding)');
  if (text[0] !== '{') fail('header starts with the JSON object');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return fail('header is JSON');
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) fail('header is a JSON object');
  const metadata: Record<string, string> = {};
  const tensors: SpecTensor[] = [];
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) fail('__metadata__ is an object');
      for (const [k, s] of Object.entries(v as object)) {
        if (typeof s !== 'string') fail('__metadata__ maps strings to strings');
        Object.defineProperty(metadata, k, { value: s, enumerable: true, writable: true, configurable: true });
      }
      continue;
    }
    const info = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (Object.keys(info).sort().join() !== 'data_offsets,dtype,shape') fail('tensor info has exactly 3 fields');
    if (typeof info.dtype !== 'string' || !(info.dtype in SPEC_DTYPE_SIZES)) fail(`known dtype (${info.dtype})`);
    const shape = info.shape as number[];
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) fail('shape of naturals');
    const offsets = info.data_offsets as number[];
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0))
      fail('data_offsets is [begin, end]');
    const size = SPEC_DTYPE_SIZES[info.dtype as string];
    const elements = shape.reduce((a, b) => a * b, 1);
    if (offsets[1] - offsets[0] !== elements * size) fail(`byte size of ${name} equals elements x dtype size`);
    if (offsets[0] % size !== 0) fail(`offset of ${name} is a multiple of its element size`);
    tensors.push({ name, dtype: info.dtype as string, shape, begin: offsets[0], end: offsets[1] });
  }
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const t of tensors) {
    if (t.begin !== at) fail(`tensors contiguous from 0 (${t.name} begins at ${t.begin}, expected ${at})`);
    at = t.end;
  }
  if (8 + n + at !== file.length) fail('file size == 8 + N + data length');
  return { n, metadata, tensors, data: file.subarray(8 + n) };
}

/** Checks this library's checksums in a spec-parsed file: every tensor's CRC32C and the header CRC. */
function checkChecksums(file: Uint8Array, parsed: SpecFile): void {
  const meta = parsed.metadata;
  expect(meta['tfjs_checkpoint.format_version']).toBe('1');
  const list = meta[TENSOR_CRCS_KEY];
  const stored = list === '' ? [] : list.split(',');
  expect(stored).toHaveLength(parsed.tensors.length);
  parsed.tensors.forEach((t, i) => {
    expect(stored[i]).toMatch(/^[0-9a-f]{8}$/);
    expect(parseInt(stored[i], 16)).toBe(specCrc32c(parsed.data.subarray(t.begin, t.end)));
  });
  // The header CRC: over bytes [0, 8 + N) with its own 8 digits read as ASCII '0'.
  const headerCrc = meta[HEADER_CRC_KEY];
  expect(headerCrc).toMatch(/^[0-9a-f]{8}$/);
  const head = Buffer.from(file.subarray(0, 8 + parsed.n));
  const field = Buffer.from(`"${HEADER_CRC_KEY}":"${headerCrc}"`, 'latin1');
  const at = head.indexOf(field);
  expect(at).toBeGreaterThan(8);
  expect(head.indexOf(field, at + 1)).toBe(-1);
  const digits = at + field.length - 9;
  const zeroed = Buffer.from(head);
  zeroed.fill(0x30, digits, digits + 8);
  expect(specCrc32c(zeroed)).toBe(parseInt(headerCrc, 16));
}

/** Compares spec-parsed content to what was saved, bit for bit. */
function checkContent(parsed: SpecFile, tensors: NamedTensors, metadata: Record<string, string> = {}): void {
  expect(parsed.tensors.map((t) => t.name).sort()).toEqual(Object.keys(tensors).sort());
  for (const t of parsed.tensors) {
    const src = tensors[t.name];
    expect(TFJS_DTYPE[t.dtype]).toBe(src.dtype);
    expect(t.shape).toEqual(src.shape);
    const bytes = parsed.data.subarray(t.begin, t.end);
    expect(Buffer.from(bytes).equals(bytesOf(src))).toBe(true);
  }
  const user = Object.fromEntries(Object.entries(parsed.metadata).filter(([k]) => !k.startsWith('tfjs_checkpoint.')));
  expect(user).toEqual(metadata);
}

function bytesOf(t: { data: ArrayBufferView }): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/** A loaded tensor equals the saved one: dtype, shape, and the exact bytes (NaN payloads and -0 included). */
function expectSameTensors(actual: Record<string, LoadedTensor>, expected: NamedTensors): void {
  expect(Object.keys(actual).sort()).toEqual(Object.keys(expected).sort());
  for (const [name, t] of Object.entries(expected)) {
    const a = actual[name];
    expect(a.dtype).toBe(t.dtype);
    expect(a.shape).toEqual(t.shape);
    expect(a.data.constructor).toBe(t.data.constructor);
    expect(bytesOf(a).equals(bytesOf(t))).toBe(true);
  }
}

// ---------------------------------------------------------------------------------------------------------------

let root: string;
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ckpt-conformance-'));
});
afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

function f32(...v: number[]): TensorData {
  return { dtype: 'float32', shape: [v.length], data: Float32Array.from(v) };
}

const unicodeNames = [
  'dense_Dense1/kernel',
  'ünïcødé/权重',
  'emoji 🧠/bias',
  'quote"back\\slash',
  'tab\tnewline\n',
  'e\u0301 (combining) vs \u00e9',
  '\u0000nul',
  '\uffff',
  '𝔘𝔫𝔦𝔠𝔬𝔡𝔢',
];

const cases: { name: string; tensors: () => NamedTensors; metadata?: Record<string, string> }[] = [
  {
    name: 'float32, int32 and bool tensors with NaN payloads, -0, extremes',
    tensors: () => {
      const special = new Float32Array(8);
      const u = new Uint32Array(special.buffer);
      u.set([0x7fc00001, 0xffc12345, 0x80000000, 0x7f800000, 0xff800000, 0x00000001, 0x7f7fffff, 0x3f800000]);
      return {
        'layer/kernel': { dtype: 'float32', shape: [2, 4], data: special },
        'layer/ints': { dtype: 'int32', shape: [5], data: Int32Array.from([0, -1, 2147483647, -2147483648, 42]) },
        'layer/mask': { dtype: 'bool', shape: [3, 1], data: Uint8Array.from([1, 0, 1]) },
      };
    },
    metadata: { epoch: '3', 'metric:val_loss': '0.25', empty: '', unicode: 'π≈3.14 🚀' },
  },
  {
    name: 'scalars of every dtype (shape [])',
    tensors: () => ({
      s32: { dtype: 'float32', shape: [], data: Float32Array.from([Math.PI]) },
      si: { dtype: 'int32', shape: [], data: Int32Array.from([-7]) },
      sb: { dtype: 'bool', shape: [], data: Uint8Array.from([1]) },
    }),
  },
  {
    name: 'empty tensors (a 0 in the shape) next to non-empty ones',
    tensors: () => ({
      e1: { dtype: 'float32', shape: [0], data: new Float32Array(0) },
      e2: { dtype: 'int32', shape: [3, 0, 2], data: new Int32Array(0) },
      e3: { dtype: 'bool', shape: [0, 5], data: new Uint8Array(0) },
      full: f32(1, 2, 3),
      b: { dtype: 'bool', shape: [1], data: Uint8Array.from([0]) },
    }),
  },
  { name: 'no tensors at all', tensors: () => ({}), metadata: { note: 'nothing' } },
  {
    name: 'unicode, quoting and control characters in names',
    tensors: () => Object.fromEntries(unicodeNames.map((n, i) => [n, f32(i, -i)])),
  },
  {
    name: 'tensor names and metadata keys that are Object.prototype members (__proto__, constructor, toString)',
    tensors: () =>
      Object.fromEntries(['__proto__', 'constructor', 'toString', 'hasOwnProperty'].map((n, i) => [n, f32(i)])),
    metadata: Object.fromEntries([
      ['__proto__', 'p'],
      ['constructor', 'c'],
      ['valueOf', 'v'],
    ]),
  },
  {
    name: 'mixed dtypes in an order that needs realignment (bool before float32 by name)',
    tensors: () => ({
      a_bool: { dtype: 'bool', shape: [3], data: Uint8Array.from([1, 1, 0]) },
      b_f32: f32(1.5),
      c_bool: { dtype: 'bool', shape: [1], data: Uint8Array.from([1]) },
      d_i32: { dtype: 'int32', shape: [2], data: Int32Array.from([9, 8]) },
    }),
  },
  {
    name: '1000 tiny tensors',
    tensors: () => {
      const out: NamedTensors = {};
      for (let i = 0; i < 1000; i++) {
        const kind = i % 3;
        out[`block_${i}/w`] =
          kind === 0
            ? f32(i / 7)
            : kind === 1
              ? { dtype: 'int32', shape: [2], data: Int32Array.from([i, -i]) }
              : { dtype: 'bool', shape: [1], data: Uint8Array.from([i & 1]) };
      }
      return out;
    },
  },
];

describe.each(['native', 'js'] as const)('%s backend', (backend) => {
  beforeEach(() => setBackend(backend));

  test.each(cases)('writes a spec-conformant, checksummed file and round-trips it bit-exactly: $name', async (c) => {
    const tensors = c.tensors();
    const file = path.join(root, `${backend}-case.safetensors`);
    await saveTensors(file, tensors, { metadata: c.metadata });
    const bytes = fs.readFileSync(file);
    const parsed = specParse(bytes);
    checkChecksums(bytes, parsed);
    checkContent(parsed, tensors, c.metadata);
    const loaded = await loadTensors(file);
    expectSameTensors(loaded.tensors, tensors);
    expect(loaded.metadata).toEqual(c.metadata ?? {});
    await expect(verifyCheckpoint(file)).resolves.toMatchObject({ tensors: Object.keys(tensors).length });
  });

  test('one 300 MiB tensor round-trips bit-exactly and its file conforms', async () => {
    const data = new Float32Array((300 << 20) / 4);
    randomFillSync(data);
    const tensors: NamedTensors = { big: { dtype: 'float32', shape: [data.length / 1024, 1024], data } };
    const file = path.join(root, `${backend}-big.safetensors`);
    await saveTensors(file, tensors, { durable: false });
    expect(fs.statSync(file).size).toBeGreaterThan(300 << 20);
    const bytes = fs.readFileSync(file);
    const parsed = specParse(bytes);
    checkChecksums(bytes, parsed);
    const loaded = await loadTensors(file);
    expectSameTensors(loaded.tensors, tensors);
    fs.rmSync(file);
  }, 120_000);
});

describe('both backends', () => {
  afterAll(() => setBackend('native'));

  const dtypeArb = fc.constantFrom('float32' as const, 'int32' as const, 'bool' as const);
  const tensorArb = fc
    .tuple(dtypeArb, fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }))
    .chain(([dtype, shape]) => {
      const count = shape.reduce((a, b) => a * b, 1);
      const size = dtype === 'bool' ? 1 : 4;
      const bytes =
        dtype === 'bool'
          ? fc.uint8Array({ min: 0, max: 1, minLength: count, maxLength: count })
          : fc.uint8Array({ minLength: count * size, maxLength: count * size });
      return bytes.map((b): TensorData => {
        const buf = b.slice().buffer;
        const data = dtype === 'float32' ? new Float32Array(buf) : dtype === 'int32' ? new Int32Array(buf) : b;
        return { dtype, shape, data };
      });
    });
  const nameArb = fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }).filter((s) => s !== '__metadata__');
  const keyArb = fc.string({ unit: 'binary', maxLength: 8 }).filter((s) => !s.startsWith('tfjs_checkpoint.'));

  test('write byte-identical files and read each other’s files (randomized)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.dictionary(nameArb, tensorArb, { maxKeys: 6 }),
        fc.dictionary(keyArb, fc.string({ unit: 'binary', maxLength: 10 }), { maxKeys: 3 }),
        async (tensors, metadata) => {
          const files = { native: path.join(root, 'prop-native.st'), js: path.join(root, 'prop-js.st') };
          for (const b of ['native', 'js'] as const) {
            setBackend(b);
            await saveTensors(files[b], tensors, { metadata, durable: false });
          }
          const nativeBytes = fs.readFileSync(files.native);
          expect(nativeBytes.equals(fs.readFileSync(files.js))).toBe(true);
          const parsed = specParse(nativeBytes);
          checkChecksums(nativeBytes, parsed);
          checkContent(parsed, tensors, metadata);
          for (const [reader, writer] of [
            ['native', 'js'],
            ['js', 'native'],
          ] as const) {
            setBackend(reader);
            const loaded = await loadTensors(files[writer]);
            expectSameTensors(loaded.tensors, tensors);
            expect(loaded.metadata).toEqual(metadata);
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});

// Python's official safetensors package is the reference reader and writer (helpers/python-safetensors.ts finds
// it; CI installs it into a venv). Under CI=true its absence fails the suite; elsewhere one line says how to enable it.
const python = findPythonSafetensors();

function py(script: string, ...args: string[]): string {
  return runPython(python!, script, args);
}

/** Python: writes one tensor of every safetensors dtype to argv[1] and prints, per tensor, its dtype, shape, raw
 * bytes and what its values are as float32 (floats) or as integers (integer types), computed by numpy. */
const WRITE_EVERY_DTYPE = `
import sys, json, numpy as np
from safetensors import TensorSpec, serialize_file
out, keep, specs = {}, [], {}
def add(name, st, arr, expect_f32=None, expect_int=None):
    arr = np.ascontiguousarray(arr); keep.append(arr)
    specs[name] = TensorSpec(dtype=st, shape=arr.shape, data_ptr=arr.ctypes.data, data_len=arr.nbytes)
    out[name] = {"shape": list(arr.shape), "raw": arr.tobytes().hex(),
                 "f32": None if expect_f32 is None else np.asarray(expect_f32, np.float32).tobytes().hex(),
                 "int": None if expect_int is None else [int(v) for v in np.asarray(expect_int).ravel()]}
vals = [0.0, 1.0, -2.5, 0.125, 3.0e-5, 1000.0]
f16 = np.array(vals, np.float16).reshape(2, 3); add("f16", "float16", f16, f16.astype(np.float32))
bf = (np.array(vals, np.float32).view(np.uint32) >> 16).astype(np.uint16)
add("bf16", "bfloat16", bf, (bf.astype(np.uint32) << 16).view(np.float32))
f64 = np.array([0.1, -3.25, 1e-50, 123456789.123]); add("f64", "float64", f64, f64.astype(np.float32))
f32 = np.array([1.5, -0.0, 7.0], np.float32); add("f32", "float32", f32, f32)
add("f8_e4m3", "float8_e4m3fn", np.array([0x38, 0x7e, 0x01, 0xb8], np.uint8), [1.0, 448.0, 2.0**-9, -1.0])
add("f8_e5m2", "float8_e5m2", np.array([0x3c, 0x7b, 0x7c, 0x01], np.uint8), [1.0, 57344.0, np.inf, 2.0**-16])
for st, dt in [("int8", np.int8), ("uint8", np.uint8), ("int16", np.int16), ("uint16", np.uint16),
               ("int32", np.int32), ("uint32", np.uint32), ("int64", np.int64), ("uint64", np.uint64)]:
    info = np.iinfo(dt)
    v = np.array([0, 1, min(info.max, 2**31 - 1), max(info.min, -2**31)], dt)
    add(st, st, v, expect_int=v)
add("position_ids", "int64", np.arange(6, dtype=np.int64).reshape(1, 6), expect_int=np.arange(6))
add("mask", "bool", np.array([True, False, True]), expect_int=[1, 0, 1])
serialize_file(specs, sys.argv[1], metadata={"format": "np"})
print(json.dumps(out))
`;

/** Python: what a user does to edit weights and keep the topology: load, re-save with the metadata kept. */
const RESAVE = `
import sys
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
with safe_open(sys.argv[1], "np") as f: meta = f.metadata()
save_file(load_file(sys.argv[1]), sys.argv[2], metadata=meta)
`;

const ST_NAME: Record<string, string> = {
  f16: 'F16',
  bf16: 'BF16',
  f64: 'F64',
  f32: 'F32',
  f8_e4m3: 'F8_E4M3',
  f8_e5m2: 'F8_E5M2',
  int8: 'I8',
  uint8: 'U8',
  int16: 'I16',
  uint16: 'U16',
  int32: 'I32',
  uint32: 'U32',
  int64: 'I64',
  uint64: 'U64',
  position_ids: 'I64',
  mask: 'BOOL',
};

if (!python) {
  if (process.env.CI === 'true') {
    test('the reference reader (python safetensors) is installed, as CI requires', () => {
      throw new Error(`${PYTHON_HINT} (.ci/run installs them into a venv with pip)`);
    });
  } else {
    console.info(`conformance: the cross-check with the reference is not run: ${PYTHON_HINT}`);
  }
} else {
  describe('the reference reader (python safetensors)', () => {
    test('loads a file written by saveTensors with the same values', async () => {
      setBackend('native');
      const file = path.join(root, 'py.safetensors');
      const tensors = cases[0].tensors();
      await saveTensors(file, tensors, { metadata: { epoch: '1' } });
      const out = py(
        'import sys, json\nfrom safetensors.numpy import load_file\nd = load_file(sys.argv[1])\n' +
          'print(json.dumps({k: [str(v.dtype), list(v.shape), v.tobytes().hex()] for k, v in d.items()}))',
        file,
      );
      const got = JSON.parse(out) as Record<string, [string, number[], string]>;
      for (const [name, t] of Object.entries(tensors)) {
        expect(got[name][1]).toEqual(t.shape);
        expect(got[name][2]).toBe(bytesOf(t).toString('hex'));
      }
    });

    test.each(['native', 'js'] as const)(
      'we write (%s), Python loads and re-saves with the metadata kept, we load it verified by name as resaved',
      async (backend) => {
        setBackend(backend);
        for (const c of cases) {
          const file = path.join(root, `py-ours-${backend}.safetensors`);
          const resaved = path.join(root, `py-resaved-${backend}.safetensors`);
          const tensors = c.tensors();
          await saveTensors(file, tensors, { metadata: { epoch: '7', 'tfjs.model_topology': '{"a":[1,2]}', z: '' } });
          py(RESAVE, file, resaved);
          // The reference orders metadata keys as a HashMap does (at random): rarely, the bytes come out as ours.
          const identical = fs.readFileSync(resaved).equals(fs.readFileSync(file));
          const loaded = await loadTensors(resaved);
          expect(loaded.verification).toBe(identical ? 'verified' : 'verified-resaved');
          expectSameTensors(loaded.tensors, tensors);
          expect(loaded.metadata).toEqual({ epoch: '7', 'tfjs.model_topology': '{"a":[1,2]}', z: '' });
          await verifyCheckpoint(resaved);
        }
      },
    );

    test.each(['native', 'js'] as const)(
      'Python writes every dtype: we list (%s), load as natural arrays bit for bit, and convert exactly',
      async (backend) => {
        setBackend(backend);
        const file = path.join(root, `py-dtypes-${backend}.safetensors`);
        const expected = JSON.parse(py(WRITE_EVERY_DTYPE, file)) as Record<
          string,
          { shape: number[]; raw: string; f32: string | null; int: number[] | null }
        >;
        const info = await readCheckpointInfo(file);
        expect(Object.fromEntries(info.tensors.map((t) => [t.name, t.dtype]))).toEqual(ST_NAME);
        await expect(loadTensors(file)).rejects.toMatchObject({ code: 'ERR_CHECKPOINT_UNVERIFIED' });
        const loaded = await loadTensors(file, { verify: false });
        expect(loaded.verification).toBe('unverified');
        expect(loaded.metadata).toEqual({ format: 'np' });
        const converted = convertLoaded(loaded);
        for (const [name, e] of Object.entries(expected)) {
          const t = loaded.tensors[name];
          expect([name, t.shape]).toEqual([name, e.shape]);
          expect([name, bytesOf(t).toString('hex')]).toEqual([name, e.raw]);
          expect(t.data.constructor.name).toBe(NATURAL[ST_NAME[name]]);
          const c = converted.tensors[name];
          if (e.f32 !== null) expect([name, c.dtype, bytesOf(c).toString('hex')]).toEqual([name, 'float32', e.f32]);
          else expect([name, c.dtype, Array.from(c.data)]).toEqual([name, name === 'mask' ? 'bool' : 'int32', e.int]);
        }
      },
    );
  });
}

/** The TypedArray each safetensors dtype loads as. */
const NATURAL: Record<string, string> = {
  F16: 'Uint16Array',
  BF16: 'Uint16Array',
  F64: 'Float64Array',
  F32: 'Float32Array',
  F8_E4M3: 'Uint8Array',
  F8_E5M2: 'Uint8Array',
  I8: 'Int8Array',
  U8: 'Uint8Array',
  I16: 'Int16Array',
  U16: 'Uint16Array',
  I32: 'Int32Array',
  U32: 'Uint32Array',
  I64: 'BigInt64Array',
  U64: 'BigUint64Array',
  BOOL: 'Uint8Array',
};
