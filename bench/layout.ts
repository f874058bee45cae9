/**
 * Benchmark state dicts: realistic float32 tensor lists of an exact total size, with deterministic contents.
 *
 * A layout is a ResNet-50-like backbone (Keras names and shapes: conv kernels [k, k, in, out] with biases, four
 * batch-norm vectors per conv, a dense head) whose width is scaled so that it holds about 40% of the bytes, then
 * embedding tables [rows, 1024] (at most 1 GiB each: Node 20 caps one TypedArray at 4 GiB, and real tables are
 * sharded anyway), then one small vector that makes the total exact. Contents are a fixed pseudo-random pattern of
 * small floats shifted per tensor, so any process can regenerate them to check a round trip byte for byte.
 */

export interface TensorSpec {
  name: string;
  shape: number[];
  /** Number of float32 elements. */
  size: number;
}

export interface Layout {
  /** Total bytes of tensor data (exactly the requested size). */
  bytes: number;
  tensors: TensorSpec[];
}

const EMBEDDING_DIM = 1024;
const MAX_TENSOR_ELEMENTS = (1 << 30) / 4;
/** Share of the bytes held by the convolutional backbone. */
const BACKBONE_SHARE = 0.4;

function spec(name: string, shape: number[]): TensorSpec {
  return { name, shape, size: shape.reduce((a, b) => a * b, 1) };
}

/** ResNet-50 (Keras applications naming) with every channel count multiplied by `width` (rounded to 8, min 8). */
function resnetBackbone(width: number): TensorSpec[] {
  const ch = (c: number): number => Math.max(8, Math.round((c * width) / 8) * 8);
  const out: TensorSpec[] = [];
  const convBn = (prefix: string, k: number, cin: number, cout: number): void => {
    out.push(spec(`${prefix}_conv/kernel`, [k, k, cin, cout]), spec(`${prefix}_conv/bias`, [cout]));
    for (const p of ['gamma', 'beta', 'moving_mean', 'moving_variance']) out.push(spec(`${prefix}_bn/${p}`, [cout]));
  };
  convBn('conv1', 7, 3, ch(64));
  let cin = ch(64);
  const stages: [number, number][] = [
    [64, 3],
    [128, 4],
    [256, 6],
    [512, 3],
  ];
  stages.forEach(([filters, blocks], s) => {
    const f = ch(filters);
    for (let b = 1; b <= blocks; b++) {
      const name = `conv${s + 2}_block${b}`;
      if (b === 1) convBn(`${name}_0`, 1, cin, 4 * f);
      convBn(`${name}_1`, 1, cin, f);
      convBn(`${name}_2`, 3, f, f);
      convBn(`${name}_3`, 1, f, 4 * f);
      cin = 4 * f;
    }
  });
  out.push(spec('predictions/kernel', [cin, 1000]), spec('predictions/bias', [1000]));
  return out;
}

function elements(list: TensorSpec[]): number {
  return list.reduce((a, t) => a + t.size, 0);
}

/** A state dict of exactly `bytes` bytes of float32 (a multiple of 4, at least 64 KiB). */
export function makeLayout(bytes: number): Layout {
  if (!Number.isSafeInteger(bytes) || bytes % 4 !== 0 || bytes < 65536) {
    throw new Error(`state dict size must be a multiple of 4 of at least 64 KiB, got ${bytes}`);
  }
  const total = bytes / 4;
  const base = elements(resnetBackbone(1));
  let width = Math.sqrt((BACKBONE_SHARE * total) / base);
  let tensors = resnetBackbone(width);
  while (elements(tensors) > total * 0.9) {
    width *= 0.8;
    tensors = resnetBackbone(width);
    if (width < 0.01) {
      tensors = [];
      break;
    }
  }
  let rest = total - elements(tensors);
  for (let i = 0; rest >= EMBEDDING_DIM; i++) {
    const rows = Math.min(Math.floor(rest / EMBEDDING_DIM), MAX_TENSOR_ELEMENTS / EMBEDDING_DIM);
    tensors.push(spec(i === 0 ? 'embedding/embeddings' : `embedding_${i}/embeddings`, [rows, EMBEDDING_DIM]));
    rest -= rows * EMBEDDING_DIM;
  }
  if (rest > 0) tensors.push(spec('embedding/padding_bias', [rest]));
  return { bytes, tensors };
}

const PATTERN_ELEMENTS = 1 << 18; // 1 MiB of floats
let pattern: Float32Array | undefined;

/** 1 MiB of small floats (roughly uniform in [-0.1, 0.1)) from a fixed xorshift32 seed. */
function getPattern(): Float32Array {
  if (pattern) return pattern;
  pattern = new Float32Array(PATTERN_ELEMENTS);
  let x = 0x9e3779b9;
  for (let i = 0; i < PATTERN_ELEMENTS; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    pattern[i] = ((x >>> 0) / 2 ** 32 - 0.5) * 0.2;
  }
  return pattern;
}

/** Fills `a` (tensor number `index` of a layout) with its deterministic contents, touching every page. */
export function fillTensor(a: Float32Array, index: number): void {
  const p = getPattern();
  const shift = (index * 7919) % PATTERN_ELEMENTS;
  const first = p.subarray(shift);
  let off = 0;
  if (a.length > 0) {
    a.set(first.subarray(0, Math.min(first.length, a.length)), 0);
    off = Math.min(first.length, a.length);
  }
  while (off < a.length) {
    const n = Math.min(PATTERN_ELEMENTS, a.length - off);
    a.set(p.subarray(0, n), off);
    off += n;
  }
}

/** Allocates and fills every tensor of the layout. */
export function allocate(layout: Layout): Float32Array[] {
  return layout.tensors.map((t, i) => {
    const a = new Float32Array(t.size);
    fillTensor(a, i);
    return a;
  });
}
