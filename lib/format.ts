/**
 * The checkpoint file format: safetensors with this library's integrity metadata. See docs/FORMAT.md.
 *
 *   [u64 LE N] [N bytes: JSON header, padded with spaces so that N % 8 == 0] [data section]
 *
 * The header always begins with the fixed prefix HEADER_PREFIX followed by the 8 hex digits of the header CRC, then
 * the comma-separated CRCs of the tensors in file order:
 *
 *   {"__metadata__":{"tfjs_checkpoint.header_crc32c":"hhhhhhhh","tfjs_checkpoint.tensor_crc32c":"c0,c1,...",
 *    "tfjs_checkpoint.format_version":"1", <user metadata, keys sorted>},"<name>":{"dtype":..,"shape":..,
 *    "data_offsets":[b,e]},...}
 *
 * The header CRC is CRC32C over the first 8 + N bytes of the file with its own 8 digits set to ASCII '0', so it is
 * verifiable from the file alone and covers the length prefix, the JSON and the padding. Every data byte is covered by
 * its tensor's CRC. This module builds headers (for both backends: the bytes are identical by construction) and
 * parses and validates them (every rule of the safetensors reference reader, plus ours).
 */
import { CheckpointError, ErrorCode } from './errors';

/** tfjs dtypes that are stored, with their safetensors names and element sizes. */
export const DTYPES = {
  float32: { st: 'F32', size: 4 },
  int32: { st: 'I32', size: 4 },
  bool: { st: 'BOOL', size: 1 },
} as const;

export type DType = keyof typeof DTYPES;
export type SafetensorsDType = (typeof DTYPES)[DType]['st'];
export type TensorArray = Float32Array | Int32Array | Uint8Array;

const FROM_ST: Record<string, DType> = { F32: 'float32', I32: 'int32', BOOL: 'bool' };
/** Element sizes of every safetensors dtype, to validate foreign files fully even when we cannot load a dtype. */
const ST_SIZES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
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
  C64: 8,
};

export const FORMAT_VERSION = '1';
export const META_PREFIX = 'tfjs_checkpoint.';
export const META_HEADER_CRC = 'tfjs_checkpoint.header_crc32c';
export const META_TENSOR_CRCS = 'tfjs_checkpoint.tensor_crc32c';
export const META_FORMAT_VERSION = 'tfjs_checkpoint.format_version';
export const HEADER_PREFIX = `{"__metadata__":{"${META_HEADER_CRC}":"`;
/** Byte offset in the file of the header CRC's 8 hex digits. */
export const HEADER_CRC_OFFSET = 8 + HEADER_PREFIX.length;
const TENSOR_CRCS_PREFIX = `","${META_TENSOR_CRCS}":"`;
/** Byte offset in the file of the first tensor CRC (tensor i's at + 9 * i). */
export const TENSOR_CRC_OFFSET = HEADER_CRC_OFFSET + 8 + TENSOR_CRCS_PREFIX.length;
/** The safetensors reference reader's limit on N. */
export const MAX_HEADER_LENGTH = 100_000_000;
export const ZERO_CRC = '00000000';

/** What the header says about one tensor. */
export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** [begin, end) in the data section. */
  begin: number;
  end: number;
}

/** A header ready to be written by a backend. */
export interface BuiltHeader {
  /** The file prefix: length, JSON, padding; CRC digits are '0' placeholders. */
  bytes: Uint8Array;
  /** Tensors in file order, with their offsets. */
  entries: TensorEntry[];
  /** For each entry in file order, its index in the input list. */
  order: number[];
  dataLength: number;
}

export interface HeaderInput {
  name: string;
  dtype: DType;
  shape: number[];
  byteLength: number;
}

/**
 * Builds the header for tensors (already validated) and metadata (string to string, no reserved keys).
 * File order: element size descending (so every offset is a multiple of its element size), then name by code point.
 */
export function buildHeader(inputs: readonly HeaderInput[], metadata: Readonly<Record<string, string>>): BuiltHeader {
  const order = inputs.map((_, i) => i);
  order.sort((a, b) => {
    const d = DTYPES[inputs[b].dtype].size - DTYPES[inputs[a].dtype].size;
    if (d !== 0) return d;
    const na = inputs[a].name;
    const nb = inputs[b].name;
    return na < nb ? -1 : na > nb ? 1 : 0;
  });
  const entries: TensorEntry[] = [];
  let offset = 0;
  for (const i of order) {
    const t = inputs[i];
    entries.push({ name: t.name, dtype: t.dtype, shape: t.shape, begin: offset, end: offset + t.byteLength });
    offset += t.byteLength;
  }
  let json =
    HEADER_PREFIX +
    ZERO_CRC +
    TENSOR_CRCS_PREFIX +
    entries.map(() => ZERO_CRC).join(',') +
    `",${JSON.stringify(META_FORMAT_VERSION)}:${JSON.stringify(FORMAT_VERSION)}`;
  for (const key of Object.keys(metadata).sort()) json += `,${JSON.stringify(key)}:${JSON.stringify(metadata[key])}`;
  json += '}';
  for (const e of entries) {
    json += `,${JSON.stringify(e.name)}:{"dtype":"${DTYPES[e.dtype].st}","shape":[${e.shape.join(',')}],"data_offsets":[${e.begin},${e.end}]}`;
  }
  json += '}';
  const text = Buffer.from(json, 'utf8');
  const n = Math.ceil(text.length / 8) * 8;
  const bytes = new Uint8Array(8 + n);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(n), true);
  bytes.set(text, 8);
  bytes.fill(0x20, 8 + text.length);
  return { bytes, entries, order, dataLength: offset };
}

/** The parsed, validated header of a file. */
export interface ParsedHeader {
  /** 8 + N: where the data section starts. */
  dataStart: number;
  dataLength: number;
  /** Tensors in file order. */
  entries: TensorEntry[];
  /** All of `__metadata__`, including this library's keys. */
  rawMetadata: Record<string, string>;
  /** `__metadata__` without this library's keys. */
  metadata: Record<string, string>;
  /** Whether the file carries this library's checksums (else it is a foreign safetensors file). */
  checksummed: boolean;
  /** The stored header CRC and tensor CRCs (file order), when checksummed. */
  headerCrc?: number;
  tensorCrcs?: number[];
  formatVersion?: string;
}

/**
 * Sets `key` as an own enumerable property of a plain record, even when it is `__proto__`: plain assignment would set
 * the prototype instead and silently drop a tensor or metadata entry of that name.
 */
export function setOwn<T>(record: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(record, key, { value, enumerable: true, writable: true, configurable: true });
}

function corrupt(path: string, what: string): CheckpointError {
  return new CheckpointError(ErrorCode.CORRUPT, `Corrupt checkpoint ${path}: ${what}`, { path });
}

/** Reads N from the first 8 bytes, checking it against the file size and the 100 MB limit (before any allocation). */
export function readHeaderLength(prefix: Uint8Array, fileSize: number, path: string): number {
  if (fileSize < 8 || prefix.length < 8)
    throw corrupt(path, `file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_LENGTH))
    throw corrupt(path, `header length ${n} exceeds the limit of ${MAX_HEADER_LENGTH} bytes`);
  if (8n + n > BigInt(fileSize))
    throw corrupt(path, `header length ${n} runs past the end of the ${fileSize}-byte file`);
  return Number(n);
}

/**
 * The header CRC as stored (from the fixed position), or undefined when the header does not start with our prefix.
 * `head` is the file's first 8 + N bytes.
 */
export function storedHeaderCrc(head: Uint8Array): number | undefined {
  if (head.length < HEADER_CRC_OFFSET + 9) return undefined;
  for (let i = 0; i < HEADER_PREFIX.length; i++) if (head[8 + i] !== HEADER_PREFIX.charCodeAt(i)) return undefined;
  if (head[HEADER_CRC_OFFSET + 8] !== 0x22 /* " */) return undefined;
  const hex = Buffer.from(head.subarray(HEADER_CRC_OFFSET, HEADER_CRC_OFFSET + 8)).toString('latin1');
  return /^[0-9a-f]{8}$/.test(hex) ? parseInt(hex, 16) : undefined;
}

/** CRC of the head with the header CRC's digits read as '0's, computed by `crc` (a backend's crc32c). */
export function computeHeaderCrc(head: Uint8Array, crc: (d: ArrayBufferView, c?: number) => number): number {
  let c = crc(head.subarray(0, HEADER_CRC_OFFSET));
  c = crc(Buffer.from(ZERO_CRC, 'latin1'), c);
  return crc(head.subarray(HEADER_CRC_OFFSET + 8), c);
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Parses and validates a header. `head` is the file's first 8 + N bytes (N from readHeaderLength), `fileSize` the
 * file's size. Enforces every rule of the safetensors reference reader, then this library's metadata rules.
 * Throws CORRUPT (structure), UNSUPPORTED_DTYPE (a valid dtype we do not load).
 */
export function parseHeader(head: Uint8Array, fileSize: number, path: string): ParsedHeader {
  const dataStart = head.length;
  let text: string;
  try {
    text = utf8.decode(head.subarray(8));
  } catch {
    throw corrupt(path, 'header is not valid UTF-8');
  }
  checkNoDuplicateKeys(text, path);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw corrupt(path, `header is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json))
    throw corrupt(path, 'header is not a JSON object');
  const rawMetadata: Record<string, string> = {};
  const entries: TensorEntry[] = [];
  const foreign: { name: string; st: string }[] = [];
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        throw corrupt(path, '__metadata__ is not an object of strings');
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') throw corrupt(path, `__metadata__ value of ${JSON.stringify(k)} is not a string`);
        setOwn(rawMetadata, k, v);
      }
      continue;
    }
    const where = `tensor ${JSON.stringify(name)}`;
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw corrupt(path, `${where} is not an object`);
    const { dtype, shape, data_offsets: offsets, ...rest } = value as Record<string, unknown>;
    const extra = Object.keys(rest);
    if (extra.length > 0) throw corrupt(path, `${where} has unknown field ${JSON.stringify(extra[0])}`);
    if (typeof dtype !== 'string' || !(dtype in ST_SIZES))
      throw corrupt(path, `${where} has unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw corrupt(path, `${where} has an invalid shape`);
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offsets[0] > offsets[1]
    ) {
      throw corrupt(path, `${where} has invalid data_offsets`);
    }
    let elements = 1n;
    for (const d of shape as number[]) elements *= BigInt(d);
    const expected = elements * BigInt(ST_SIZES[dtype]);
    if (expected !== BigInt(offsets[1] - offsets[0])) {
      throw corrupt(
        path,
        `${where} has shape [${shape.join(',')}] of ${expected} bytes but spans ${offsets[1] - offsets[0]} bytes`,
      );
    }
    if (!(dtype in FROM_ST)) foreign.push({ name, st: dtype });
    entries.push({
      name,
      dtype: FROM_ST[dtype] ?? 'float32',
      shape: shape as number[],
      begin: offsets[0],
      end: offsets[1],
    });
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expectedBegin = 0;
  for (const e of entries) {
    if (e.begin !== expectedBegin) {
      throw corrupt(
        path,
        e.begin < expectedBegin
          ? `tensor ${JSON.stringify(e.name)} overlaps the previous tensor`
          : `gap in the data section before tensor ${JSON.stringify(e.name)}`,
      );
    }
    expectedBegin = e.end;
  }
  const dataLength = expectedBegin;
  if (dataStart + dataLength !== fileSize) {
    throw corrupt(path, `file is ${fileSize} bytes but its header describes ${dataStart + dataLength}`);
  }

  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(rawMetadata)) if (!k.startsWith(META_PREFIX)) setOwn(metadata, k, v);
  const headerCrc = storedHeaderCrc(head);
  const ours = Object.keys(rawMetadata).some((k) => k.startsWith(META_PREFIX));
  const result: ParsedHeader = { dataStart, dataLength, entries, rawMetadata, metadata, checksummed: false };
  if (headerCrc !== undefined || ours) {
    const list = rawMetadata[META_TENSOR_CRCS];
    const version = rawMetadata[META_FORMAT_VERSION];
    if (headerCrc === undefined) throw corrupt(path, 'the header checksum field is damaged');
    if (typeof list !== 'string' || typeof version !== 'string') throw corrupt(path, 'checksum metadata is missing');
    if (version !== FORMAT_VERSION) {
      throw new CheckpointError(
        ErrorCode.CORRUPT,
        `Checkpoint ${path} has format version ${JSON.stringify(version)}; this version of tfjs-checkpoint reads ${FORMAT_VERSION}`,
        { path },
      );
    }
    const crcs = list === '' ? [] : list.split(',');
    if (crcs.length !== entries.length || !crcs.every((c) => /^[0-9a-f]{8}$/.test(c))) {
      throw corrupt(path, `${META_TENSOR_CRCS} does not list one CRC per tensor`);
    }
    result.checksummed = true;
    result.headerCrc = headerCrc;
    result.tensorCrcs = crcs.map((c) => parseInt(c, 16));
    result.formatVersion = version;
  }
  if (foreign.length > 0) {
    const f = foreign[0];
    throw new CheckpointError(
      ErrorCode.UNSUPPORTED_DTYPE,
      `Tensor ${JSON.stringify(f.name)} in ${path} has dtype ${f.st}; tfjs-checkpoint loads F32, I32 and BOOL`,
      { path, tensor: f.name },
    );
  }
  return result;
}

/**
 * Rejects JSON text with a duplicate key in any object (JSON.parse would silently keep the last one, and another
 * reader might keep the first). A structural scan: strings are skipped exactly, keys compared after decoding.
 * Malformed JSON is left for JSON.parse to report.
 */
function checkNoDuplicateKeys(text: string, path: string): void {
  const stack: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 0x22 /* " */) {
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      if (j >= text.length) return;
      const top = stack[stack.length - 1];
      if (expectKey && top) {
        let key: string;
        try {
          key = JSON.parse(text.slice(i, j + 1)) as string;
        } catch {
          return;
        }
        if (top.has(key)) throw corrupt(path, `duplicate key ${JSON.stringify(key)} in the header`);
        top.add(key);
        expectKey = false;
      }
      i = j;
    } else if (ch === 0x7b /* { */) {
      stack.push(new Set());
      expectKey = true;
    } else if (ch === 0x5b /* [ */) {
      stack.push(null);
    } else if (ch === 0x7d /* } */ || ch === 0x5d /* ] */) {
      stack.pop();
    } else if (ch === 0x2c /* , */) {
      expectKey = stack[stack.length - 1] instanceof Set;
    }
  }
}
