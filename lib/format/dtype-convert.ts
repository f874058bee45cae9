/**
 * Safetensors dtypes as JavaScript arrays, and their explicit conversion to tfjs dtypes.
 *
 * loadTensors gives every tensor as the natural TypedArray of its safetensors dtype (ST_ARRAYS): BigInt64Array for
 * I64, Float64Array for F64, Uint16Array holding the raw bits of F16 and BF16, Uint8Array the raw bits of the F8
 * formats, Float32Array interleaved (re, im) pairs for C64. toTfjs converts one to a tfjs dtype, exactly or not at all:
 * - to float32: F32 as is; F16, BF16 and the F8 formats exactly (every value of theirs is a float32); F64 rounded
 *   to nearest (the one lossy conversion, as tf.tensor(Float64Array) does); integers when every value is exactly a
 *   float32 (|v| <= 2^24, or representable), else ERR_CHECKPOINT_OUT_OF_RANGE.
 * - to int32: I32 as is; I8, U8, I16, U16 always; U32, I64, U64 when every value fits in [-2^31, 2^31 - 1], else
 *   ERR_CHECKPOINT_OUT_OF_RANGE naming the tensor, the element index and the value. Floats never become int32.
 * - to bool: BOOL only (U8 stays numeric, never silently bool).
 * C64 converts to nothing (ERR_CHECKPOINT_UNSUPPORTED_DTYPE): tfjs' complex64 layout is internal.
 */
import { CheckpointError, ErrorCode } from '../errors';
import type { DType, SafetensorsDType } from './header';

/** The array a tensor of each safetensors dtype loads into. */
export type LoadedArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

type ArrayCtor = new (buffer: ArrayBuffer) => LoadedArray;

/** The TypedArray of each safetensors dtype (elements in the file's little-endian order, on a little-endian host). */
export const ST_ARRAYS: Record<SafetensorsDType, ArrayCtor> = {
  BOOL: Uint8Array,
  U8: Uint8Array,
  I8: Int8Array,
  F8_E5M2: Uint8Array,
  F8_E4M3: Uint8Array,
  F8_E8M0: Uint8Array,
  I16: Int16Array,
  U16: Uint16Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I32: Int32Array,
  U32: Uint32Array,
  F32: Float32Array,
  F64: Float64Array,
  I64: BigInt64Array,
  U64: BigUint64Array,
  C64: Float32Array,
};

/** One F16 value (its 16 bits) as a number, exactly. */
export function f16ToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1024 + frac) * 2 ** (exp - 25);
}

/** F8_E4M3 (the "fn" variant of the OCP spec used by safetensors/PyTorch: no infinities, S.1111.111 is NaN). */
function f8e4m3ToNumber(bits: number): number {
  const sign = bits & 0x80 ? -1 : 1;
  const exp = (bits >> 3) & 0xf;
  const frac = bits & 0x7;
  if (exp === 0xf && frac === 0x7) return NaN;
  if (exp === 0) return sign * frac * 2 ** -9;
  return sign * (8 + frac) * 2 ** (exp - 10);
}

/** F8_E5M2: IEEE-like (infinities and NaNs at exponent 31). */
function f8e5m2ToNumber(bits: number): number {
  const sign = bits & 0x80 ? -1 : 1;
  const exp = (bits >> 2) & 0x1f;
  const frac = bits & 0x3;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  if (exp === 0) return sign * frac * 2 ** -16;
  return sign * (4 + frac) * 2 ** (exp - 17);
}

/** F8_E8M0: an unsigned power of two, 2^(bits - 127); 0xff is NaN. */
function f8e8m0ToNumber(bits: number): number {
  return bits === 0xff ? NaN : 2 ** (bits - 127);
}

function table(size: number, f: (bits: number) => number): Float32Array {
  const t = new Float32Array(size);
  for (let b = 0; b < size; b++) t[b] = f(b);
  return t;
}

const lazyTables = new Map<SafetensorsDType, Float32Array>();
/** Lookup tables from the raw bits of the small float formats to float32 (every entry exact). */
function bitsTable(dtype: SafetensorsDType): Float32Array {
  let t = lazyTables.get(dtype);
  if (!t) {
    if (dtype === 'F16') t = table(1 << 16, f16ToNumber);
    else if (dtype === 'F8_E4M3') t = table(256, f8e4m3ToNumber);
    else if (dtype === 'F8_E5M2') t = table(256, f8e5m2ToNumber);
    else t = table(256, f8e8m0ToNumber);
    lazyTables.set(dtype, t);
  }
  return t;
}

/** What toTfjs converts: a loaded tensor's safetensors dtype and array, and its name for error messages. */
export interface ConvertInput {
  name: string;
  safetensorsDtype: SafetensorsDType;
  data: LoadedArray;
}

function outOfRange(input: ConvertInput, index: number, value: number | bigint, to: DType): CheckpointError {
  return new CheckpointError(
    ErrorCode.OUT_OF_RANGE,
    `Tensor ${JSON.stringify(input.name)} (${input.safetensorsDtype}) cannot be converted to ${to}: element ${index} ` +
      `is ${String(value)}, which ${to} cannot hold exactly`,
    { tensor: input.name },
  );
}

function unsupported(input: ConvertInput, to: DType): CheckpointError {
  return new CheckpointError(
    ErrorCode.UNSUPPORTED_DTYPE,
    `Tensor ${JSON.stringify(input.name)} is ${input.safetensorsDtype}, which does not convert to ${to}` +
      (to === 'bool' ? ' (only BOOL is bool: a U8 tensor stays numeric)' : ''),
    { tensor: input.name },
  );
}

const FLOATS: ReadonlySet<SafetensorsDType> = new Set(['F16', 'BF16', 'F8_E4M3', 'F8_E5M2', 'F8_E8M0', 'F64', 'F32']);

/**
 * Converts a loaded tensor's data to the tfjs dtype `to` (see the module comment for what converts and how).
 * Returns the input array itself when no conversion is needed.
 */
export function toTfjs(input: ConvertInput, to: DType): Float32Array | Int32Array | Uint8Array {
  const { safetensorsDtype: st, data } = input;
  if (st === 'C64') throw unsupported(input, to);
  if (to === 'bool') {
    if (st !== 'BOOL') throw unsupported(input, to);
    return data as Uint8Array;
  }
  if (to === 'float32') {
    if (st === 'F32') return data as Float32Array;
    if (st === 'BOOL') throw unsupported(input, to);
    if (st === 'BF16') {
      const src = data as Uint16Array;
      const out = new Float32Array(src.length);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
      return out;
    }
    if (st === 'F16' || st.startsWith('F8_')) {
      const t = bitsTable(st);
      const src = data as Uint16Array | Uint8Array;
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
      return out;
    }
    if (st === 'F64') return Float32Array.from(data as Float64Array);
    // Integers: exact only.
    const out = new Float32Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      const f = Math.fround(Number(v));
      if (typeof v === 'bigint' ? BigInt(f) !== v : f !== v) throw outOfRange(input, i, v, to);
      out[i] = f;
    }
    return out;
  }
  // int32
  if (st === 'I32') return data as Int32Array;
  if (FLOATS.has(st) || st === 'BOOL') throw unsupported(input, to);
  if (st === 'I8' || st === 'U8' || st === 'I16' || st === 'U16') return Int32Array.from(data as Uint8Array);
  const out = new Int32Array(data.length);
  if (st === 'U32') {
    const src = data as Uint32Array;
    for (let i = 0; i < src.length; i++) {
      if (src[i] > 0x7fffffff) throw outOfRange(input, i, src[i], to);
      out[i] = src[i];
    }
    return out;
  }
  const src = data as BigInt64Array | BigUint64Array;
  for (let i = 0; i < src.length; i++) {
    const v = src[i];
    if (v > 2147483647n || v < -2147483648n) throw outOfRange(input, i, v, to);
    out[i] = Number(v);
  }
  return out;
}

/** The tfjs dtype a safetensors dtype converts to by default: float32 for floats, int32 for integers, bool for BOOL. */
export function defaultTfjsDtype(st: SafetensorsDType): DType {
  if (st === 'BOOL') return 'bool';
  return FLOATS.has(st) || st === 'C64' ? 'float32' : 'int32';
}

/** A loaded file (loadTensors' result) with every tensor as a tfjs dtype. */
export interface ConvertedTensors<M> {
  tensors: Record<string, { dtype: DType; shape: number[]; data: Float32Array | Int32Array | Uint8Array }>;
  metadata: M;
}

/**
 * Converts every tensor of a loaded file to the tfjs dtype of its kind (defaultTfjsDtype): floats to float32,
 * integers to int32 (exactly, or ERR_CHECKPOINT_OUT_OF_RANGE), BOOL to bool. tfjs weights are float32, int32 or
 * bool, so this is the model weight's dtype whenever the two agree in kind; a weight of another kind (an int32 file
 * tensor for a float32 weight) stays a dtype mismatch, reported by the restore. Tensors already of their tfjs dtype
 * are passed through uncopied.
 */
export function convertLoaded<M, T extends { metadata: M; tensors: Record<string, LoadedTensorLike> }>(
  loaded: T,
): Omit<T, 'tensors'> & ConvertedTensors<M> {
  const tensors: ConvertedTensors<M>['tensors'] = {};
  for (const [name, t] of Object.entries(loaded.tensors)) {
    const st = safetensorsDtypeOf(t.dtype);
    const to = defaultTfjsDtype(st);
    const data = toTfjs({ name, safetensorsDtype: st, data: t.data }, to);
    Object.defineProperty(tensors, name, {
      value: { dtype: to, shape: t.shape, data },
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return { ...loaded, tensors };
}

/** What convertLoaded needs of a loaded tensor: a tfjs dtype or a safetensors one (see LoadedTensor, tensors.ts). */
export interface LoadedTensorLike {
  dtype: string;
  shape: number[];
  data: LoadedArray;
}

/** The safetensors dtype of a loaded tensor's `dtype` (float32, int32 and bool are F32, I32 and BOOL). */
export function safetensorsDtypeOf(dtype: string): SafetensorsDType {
  return dtype === 'float32'
    ? 'F32'
    : dtype === 'int32'
      ? 'I32'
      : dtype === 'bool'
        ? 'BOOL'
        : (dtype as SafetensorsDType);
}
