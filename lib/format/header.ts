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
import { type HeaderDtypes, type HeaderTable, TableHeader, setOwn } from './header-table';

export { setOwn };

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

/** What readCheckpointInfo says about one tensor. */
export interface TensorSummary {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  byteLength: number;
  /** Its stored CRC32C, when the file has our checksums. */
  crc32c?: number;
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
  return canonicalIndices(
    items.map((t) => t.name),
    items.map((t) => ST_DTYPES[t.dtype].size),
  );
}

/** canonicalOrder over columns: `names[i]` and `sizes[i]` (element size) of item i. */
function canonicalIndices(names: readonly string[], sizes: ArrayLike<number>): number[] {
  const order = names.map((_, i) => i);
  const before = (a: number, b: number): number => {
    const d = sizes[b] - sizes[a];
    if (d !== 0) return d;
    const na = names[a];
    const nb = names[b];
    return na < nb ? -1 : na > nb ? 1 : 0;
  };
  // A file this library wrote is already in that order: a linear check spares the sort.
  let sorted = true;
  for (let i = 1; i < order.length && sorted; i++) sorted = before(i - 1, i) < 0;
  if (!sorted) order.sort(before);
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

/**
 * The parsed, validated header of a file. Its tensor entries and metadata are built from the compact HeaderTable
 * (header-json.ts) when first read, so that a check that only needs counts, offsets and CRCs (and every refusal)
 * never builds one object per entry.
 */
export interface ParsedHeader {
  /** 8 + N: where the data section starts. */
  readonly dataStart: number;
  readonly dataLength: number;
  /** Tensors in file order. */
  readonly entries: TensorEntry[];
  /** The number of tensors. */
  readonly tensorCount: number;
  /** Tensor k (file order) as readCheckpointInfo describes it, built from the table (entries not needed). */
  tensorSummary(k: number): TensorSummary;
  /** Tensor k's entry, built anew from the table (`entries` builds every one once and keeps them). */
  entryAt(k: number): TensorEntry;
  /** Tensor k's name, decoded once for all tensors (kept: entryAt and entries reuse it). */
  nameOf(k: number): string;
  /** Tensor k's span [beginOf(k), endOf(k)) in the data section and its dtype, without building its entry. */
  beginOf(k: number): number;
  endOf(k: number): number;
  dtypeOf(k: number): SafetensorsDType;
  /** All of `__metadata__`, including this library's keys. */
  readonly rawMetadata: Record<string, string>;
  /** `__metadata__` without this library's keys. */
  readonly metadata: Record<string, string>;
  /** Whether the file carries this library's checksums (else it is a foreign safetensors file). */
  readonly checksummed: boolean;
  /** The stored header CRC (found by its key), when checksummed. */
  readonly headerCrc?: number;
  /** Each entry's stored CRC (file order, matched by name through the canonical order), when checksummed. */
  readonly tensorCrcs?: number[];
  readonly formatVersion?: string;
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

/** The dtypes the header reader accepts, with their element sizes (see header-json.ts). */
const READER_DTYPES: HeaderDtypes = {
  names: Object.keys(ST_DTYPES),
  sizes: Object.values(ST_DTYPES).map((d) => d.size),
};

/** Parses a comma-separated list of 8-digit lowercase hex CRCs, or undefined if it is not exactly `count` of them. */
function parseCrcList(list: string, count: number): number[] | undefined {
  if (list === '' ? count !== 0 : list.length !== 9 * count - 1) return undefined;
  const out = new Array<number>(count);
  for (let k = 0; k < count; k++) {
    let v = 0;
    for (let d = 9 * k; d < 9 * k + 8; d++) {
      const c = list.charCodeAt(d);
      const h = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1;
      if (h < 0) return undefined;
      v = v * 16 + h;
    }
    if (k + 1 < count && list.charCodeAt(9 * k + 8) !== 0x2c) return undefined;
    out[k] = v;
  }
  return out;
}

/**
 * Parses and validates a header. `head` is the file's first 8 + N bytes (N from readHeaderLength), `fileSize` the
 * file's size. Enforces every rule of the safetensors reference reader (the grammar, dtypes and each tensor's size are
 * checked while reading, see header-json.ts), then this library's metadata rules (the checksums are found by key, and
 * matched to tensors by name). Throws CORRUPT. Does not check CRCs (readHeader does).
 */
export function parseHeader(head: Uint8Array, fileSize: number, path: string): ParsedHeader {
  const dataStart = head.length;
  let t: HeaderTable;
  try {
    t = parseHeaderJson(head.subarray(8), READER_DTYPES);
  } catch (e) {
    if (e instanceof HeaderSyntaxError) throw corrupt(path, e.message);
    throw e;
  }
  // File order: by offsets (a permutation, so that nothing is copied but indices).
  const n = t.tensorCount;
  const order = new Uint32Array(n);
  let inOrder = true;
  for (let i = 0; i < n; i++) {
    order[i] = i;
    if (i > 0 && (t.begin[i] < t.begin[i - 1] || (t.begin[i] === t.begin[i - 1] && t.end[i] < t.end[i - 1])))
      inOrder = false;
  }
  if (!inOrder) order.sort((a, b) => t.begin[a] - t.begin[b] || t.end[a] - t.end[b]);
  let expectedBegin = 0;
  for (let k = 0; k < n; k++) {
    const i = order[k];
    if (t.begin[i] !== expectedBegin) {
      throw corrupt(
        path,
        t.begin[i] < expectedBegin
          ? `tensor ${JSON.stringify(t.name(i))} overlaps the previous tensor`
          : `gap in the data section before tensor ${JSON.stringify(t.name(i))}`,
      );
    }
    expectedBegin = t.end[i];
  }
  const dataLength = expectedBegin;
  if (dataStart + dataLength !== fileSize) {
    throw corrupt(path, `file is ${fileSize} bytes but its header describes ${dataStart + dataLength}`);
  }
  const result = new TableHeader(t, order, dataStart, dataLength, META_PREFIX);
  if (result.hasOurKeys()) {
    const headerHex = result.value(META_HEADER_CRC);
    const list = result.value(META_TENSOR_CRCS);
    const version = result.value(META_FORMAT_VERSION);
    if (headerHex === undefined || !/^[0-9a-f]{8}$/.test(headerHex)) {
      throw corrupt(path, 'the header checksum field is damaged');
    }
    if (list === undefined || version === undefined) throw corrupt(path, 'checksum metadata is missing');
    if (version !== FORMAT_VERSION) {
      throw new CheckpointError(
        ErrorCode.CORRUPT,
        `Checkpoint ${path} has format version ${JSON.stringify(version)}; this version of tfjs-checkpoint reads ${FORMAT_VERSION}`,
        { path },
      );
    }
    const crcs = parseCrcList(list, n);
    if (!crcs) throw corrupt(path, `${META_TENSOR_CRCS} does not list one CRC per tensor`);
    // The list is in canonical order (computed from names and dtypes): tensor canonical[k] has CRC k.
    const canonical = canonicalIndices(
      result.names,
      Array.from({ length: n }, (_, k) => result.sizeAt(k)),
    );
    const tensorCrcs = new Array<number>(n);
    for (let k = 0; k < n; k++) tensorCrcs[canonical[k]] = crcs[k];
    result.checksummed = true;
    result.headerCrc = parseInt(headerHex, 16);
    result.tensorCrcs = tensorCrcs;
    result.formatVersion = version;
  }
  return result;
}
