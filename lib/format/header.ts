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
import { CheckpointError, ErrorCode } from '../errors';
import { HeaderSyntaxError, parseHeaderJson } from './header-json';

/** tfjs dtypes that are stored, with their safetensors names and element sizes. */
export const DTYPES = {
  float32: { st: 'F32', size: 4 },
  int32: { st: 'I32', size: 4 },
  bool: { st: 'BOOL', size: 1 },
} as const;

export type DType = keyof typeof DTYPES;
export type TensorArray = Float32Array | Int32Array | Uint8Array;

/**
 * Every dtype of the safetensors specification this library reads: element size and the TypedArray it loads into
 * (the raw bits for the 16- and 8-bit floats, which JavaScript has no array for; see dtype-convert.ts).
 * C64 and the sub-byte float formats (F4, F6_*) are validated as structure but not loaded.
 */
export const ST_DTYPES = {
  BOOL: { size: 1 },
  U8: { size: 1 },
  I8: { size: 1 },
  F8_E5M2: { size: 1 },
  F8_E4M3: { size: 1 },
  F8_E8M0: { size: 1 },
  I16: { size: 2 },
  U16: { size: 2 },
  F16: { size: 2 },
  BF16: { size: 2 },
  I32: { size: 4 },
  U32: { size: 4 },
  F32: { size: 4 },
  F64: { size: 8 },
  I64: { size: 8 },
  U64: { size: 8 },
  C64: { size: 8 },
} as const;

export type SafetensorsDType = keyof typeof ST_DTYPES;

/** The tfjs dtype a safetensors dtype loads as without conversion (F32, I32, BOOL), else undefined. */
export const TFJS_OF_ST: Partial<Record<SafetensorsDType, DType>> = { F32: 'float32', I32: 'int32', BOOL: 'bool' };

export function isSafetensorsDType(s: string): s is SafetensorsDType {
  return Object.prototype.hasOwnProperty.call(ST_DTYPES, s);
}

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
  dtype: SafetensorsDType;
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
  dtype: SafetensorsDType;
  shape: number[];
  byteLength: number;
}

/**
 * The canonical order of tensors: element size descending (so that every offset is a multiple of its element size),
 * then name (JavaScript string order, i.e. by UTF-16 code unit). It depends only on names and dtypes, so it is the
 * same whoever re-serializes the file: the tensor CRC list, written in this order, is keyed by name.
 * Returns the indices of `items` in that order.
 */
export function canonicalOrder(items: readonly { name: string; dtype: SafetensorsDType }[]): number[] {
  const order = items.map((_, i) => i);
  order.sort((a, b) => {
    const d = ST_DTYPES[items[b].dtype].size - ST_DTYPES[items[a].dtype].size;
    if (d !== 0) return d;
    const na = items[a].name;
    const nb = items[b].name;
    return na < nb ? -1 : na > nb ? 1 : 0;
  });
  return order;
}

/**
 * Builds the header for tensors (already validated) and metadata (string to string, no reserved keys), tensors in
 * canonical order (see canonicalOrder). Also rebuilds, when reading, the header this library wrote for a file's
 * contents (see checkResavedHeader).
 */
export function buildHeader(inputs: readonly HeaderInput[], metadata: Readonly<Record<string, string>>): BuiltHeader {
  const order = canonicalOrder(inputs);
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
    json += `,${JSON.stringify(e.name)}:{"dtype":"${e.dtype}","shape":[${e.shape.join(',')}],"data_offsets":[${e.begin},${e.end}]}`;
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
  /** The stored header CRC (found by its key), when checksummed. */
  headerCrc?: number;
  /** Each entry's stored CRC (file order, matched by name through the canonical order), when checksummed. */
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
 * The header CRC as stored at the fixed position where this library writes it, or undefined when the header does not
 * start with our prefix (then it is found by key, see parseHeader). `head` is the file's first 8 + N bytes.
 */
export function storedHeaderCrc(head: Uint8Array): number | undefined {
  if (head.length < HEADER_CRC_OFFSET + 9) return undefined;
  for (let i = 0; i < HEADER_PREFIX.length; i++) if (head[8 + i] !== HEADER_PREFIX.charCodeAt(i)) return undefined;
  if (head[HEADER_CRC_OFFSET + 8] !== 0x22 /* " */) return undefined;
  const hex = Buffer.from(head.subarray(HEADER_CRC_OFFSET, HEADER_CRC_OFFSET + 8)).toString('latin1');
  return /^[0-9a-f]{8}$/.test(hex) ? parseInt(hex, 16) : undefined;
}

/** CRC of the head with the 8 bytes at `at` (the header CRC's digits) read as '0's, computed by `crc`. */
export function computeHeaderCrc(
  head: Uint8Array,
  crc: (d: ArrayBufferView, c?: number) => number,
  at = HEADER_CRC_OFFSET,
): number {
  let c = crc(head.subarray(0, at));
  c = crc(Buffer.from(ZERO_CRC, 'latin1'), c);
  return crc(head.subarray(at + 8), c);
}

/**
 * How a checksummed header relates to what this library wrote:
 * - 'intact': its bytes are exactly as written (the header CRC over them matches);
 * - 'resaved': another tool re-serialized it (Python `save_file(..., metadata=...)` re-sorts tensors and metadata
 *   keys): its bytes differ, but the header this library writes for its contents (tensors, dtypes, shapes, metadata,
 *   CRCs) has exactly the stored CRC, so nothing it says was changed; only the offsets and the layout moved.
 * Anything else (a header damaged in place, or contents that differ from what was written) throws
 * ERR_CHECKPOINT_CHECKSUM.
 */
export type HeaderState = 'intact' | 'resaved';

function checksumError(path: string, what: string): CheckpointError {
  return new CheckpointError(ErrorCode.CHECKSUM, `Checksum mismatch in the header of ${path}: ${what}`, { path });
}

/**
 * Reads and checks a header: parses it (parseHeader) and, when `verify` and the file is checksummed, checks its CRC
 * (see HeaderState). A header that starts with our prefix but fails its CRC and does not parse is a checksum error
 * (damage), not a structure error. `crc` is the backend's crc32c.
 */
export function readHeader(
  head: Uint8Array,
  fileSize: number,
  path: string,
  verify: boolean,
  crc: (d: ArrayBufferView, c?: number) => number,
): { parsed: ParsedHeader; state?: HeaderState } {
  const fixed = storedHeaderCrc(head);
  if (verify && fixed !== undefined && computeHeaderCrc(head, crc) === fixed) {
    return { parsed: parseHeader(head, fileSize, path), state: 'intact' };
  }
  let parsed: ParsedHeader;
  try {
    parsed = parseHeader(head, fileSize, path);
  } catch (e) {
    if (verify && fixed !== undefined) throw checksumError(path, 'it was altered');
    throw e;
  }
  if (!verify || !parsed.checksummed) return { parsed };
  // Located by key: the stored value, wherever the writer put it.
  const stored = parsed.headerCrc as number;
  const rebuilt = rebuildHeader(parsed);
  const same = rebuilt.length === head.length && Buffer.compare(Buffer.from(rebuilt), Buffer.from(head)) === 0;
  if (same || computeHeaderCrc(rebuilt, crc) !== stored) {
    throw checksumError(
      path,
      same || fixed !== undefined
        ? 'it was altered'
        : 'it was re-serialized with contents (tensors, shapes or metadata) that differ from what was written',
    );
  }
  return { parsed, state: 'resaved' };
}

/** The header this library writes for a parsed header's contents, with its stored CRCs filled in. */
function rebuildHeader(parsed: ParsedHeader): Uint8Array {
  const built = buildHeader(
    parsed.entries.map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape, byteLength: e.end - e.begin })),
    parsed.metadata,
  );
  const stored = parsed.rawMetadata[META_HEADER_CRC];
  const bytes = built.bytes;
  bytes.set(Buffer.from(stored, 'latin1'), HEADER_CRC_OFFSET);
  const list = parsed.rawMetadata[META_TENSOR_CRCS];
  bytes.set(Buffer.from(list, 'latin1'), TENSOR_CRC_OFFSET);
  return bytes;
}

/**
 * Parses and validates a header. `head` is the file's first 8 + N bytes (N from readHeaderLength), `fileSize` the
 * file's size. Enforces every rule of the safetensors reference reader, then this library's metadata rules (the
 * checksums are found by key, and matched to tensors by name). Throws CORRUPT. Does not check CRCs (readHeader does).
 */
export function parseHeader(head: Uint8Array, fileSize: number, path: string): ParsedHeader {
  const dataStart = head.length;
  let raw;
  try {
    raw = parseHeaderJson(head.subarray(8), META_HEADER_CRC);
  } catch (e) {
    if (e instanceof HeaderSyntaxError) throw corrupt(path, e.message);
    throw e;
  }
  const rawMetadata: Record<string, string> = raw.metadata ?? {};
  for (const t of raw.tensors) {
    const where = () => `tensor ${JSON.stringify(t.name)}`;
    if (!isSafetensorsDType(t.dtype)) throw corrupt(path, `${where()} has unknown dtype ${JSON.stringify(t.dtype)}`);
    if (t.begin > t.end) throw corrupt(path, `${where()} has invalid data_offsets (begin after end)`);
    // In doubles while exact (below 2^53), else in BigInt: the product of dimensions can overflow 2^64.
    let elements = ST_DTYPES[t.dtype].size;
    for (const d of t.shape) elements *= d;
    let expected: number | bigint = elements;
    if (!Number.isSafeInteger(elements)) {
      expected = BigInt(ST_DTYPES[t.dtype].size);
      for (const d of t.shape) expected *= BigInt(d);
    }
    if (expected !== t.end - t.begin) {
      throw corrupt(
        path,
        `${where()} has shape [${t.shape.join(',')}] of ${expected} bytes but spans ${t.end - t.begin} bytes`,
      );
    }
  }
  // Validated above: every dtype is a SafetensorsDType (the entries are used as they are, not copied).
  const entries = raw.tensors as TensorEntry[];
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
  let ours = false;
  for (const k of Object.keys(rawMetadata)) {
    if (k.startsWith(META_PREFIX)) ours = true;
    else if (k === '__proto__') setOwn(metadata, k, rawMetadata[k]);
    else metadata[k] = rawMetadata[k];
  }
  const result: ParsedHeader = { dataStart, dataLength, entries, rawMetadata, metadata, checksummed: false };
  if (ours) {
    const headerHex = rawMetadata[META_HEADER_CRC];
    const list = rawMetadata[META_TENSOR_CRCS];
    const version = rawMetadata[META_FORMAT_VERSION];
    if (typeof headerHex !== 'string' || !/^[0-9a-f]{8}$/.test(headerHex)) {
      throw corrupt(path, 'the header checksum field is damaged');
    }
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
    // The list is in canonical order (computed from names and dtypes): tensor canonical[k] has CRC k.
    const canonical = canonicalOrder(entries);
    const tensorCrcs = new Array<number>(entries.length);
    canonical.forEach((entry, k) => (tensorCrcs[entry] = parseInt(crcs[k], 16)));
    result.checksummed = true;
    result.headerCrc = parseInt(headerHex, 16);
    result.tensorCrcs = tensorCrcs;
    result.formatVersion = version;
  }
  return result;
}
