/**
 * The safetensors header's JSON, parsed by a grammar-specific reader whose cost is bounded before anything is built.
 *
 * A general JSON parser (JSON.parse) allocates for whatever a hostile header describes: 16M levels of `[` cost
 * seconds and gigabytes before the structure could be refused. A safetensors header has a fixed shape, three levels
 * at most:
 *
 *   { "<tensor>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, ..., "__metadata__": {"k": "v"} | null }
 *
 * so this reader accepts exactly that shape and refuses anything else at the first byte that departs from it, in one
 * pass over the bytes, without recursion. Its work is linear in the header's length and what it allocates is one
 * string per key and value plus one small record per tensor; HEADER_LIMITS bounds the counts and key sizes (far above
 * what real files use). Numbers are integers only, as in the reference reader (serde into usize): `2.0`, `1.6e1`,
 * `-0` and anything above 2^53 - 1 are refused. Strings follow JSON exactly (escapes, no raw control characters,
 * no lone surrogates; the bytes were checked to be UTF-8 before).
 */
import { isUtf8 } from 'node:buffer';

/** Bounds on what a header may hold, checked while reading it (see docs/FORMAT.md). */
export const HEADER_LIMITS = {
  /** Tensors in one file. Real files hold at most a few thousand (one shard of a large model). */
  tensors: 1_000_000,
  /** `__metadata__` entries. Real files hold a handful (ours: the checksums, the training info). */
  metadataEntries: 1_000_000,
  /** Bytes of one tensor name or metadata key (values are bounded only by the header's length). */
  keyBytes: 65_536,
  /** Dimensions of one tensor's shape. */
  rank: 1_024,
} as const;

/** One tensor entry as written, before the structural checks of format.ts. */
export interface RawTensorEntry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

export interface RawHeader {
  tensors: RawTensorEntry[];
  /** `__metadata__`'s entries (own properties, `__proto__` included), or null when absent or `null`. */
  metadata: Record<string, string> | null;
  /**
   * Where the value of the metadata key `locateKey` starts in `json` (the byte after its opening quote) and its length
   * in bytes as written, when present; lets the caller find a checksum by key rather than by position.
   */
  located?: { at: number; length: number };
}

/** Thrown with what is wrong; format.ts turns it into ERR_CHECKPOINT_CORRUPT naming the file. */
export class HeaderSyntaxError extends Error {}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/**
 * Parses the JSON text of a header (`json`, UTF-8 bytes: the file's bytes 8 to 8 + N). `locateKey`: a metadata key
 * whose value's position to report. Throws HeaderSyntaxError.
 */
export function parseHeaderJson(json: Uint8Array, locateKey?: string): RawHeader {
  if (!isUtf8(json)) throw new HeaderSyntaxError('header is not valid UTF-8');
  const buf = Buffer.from(json.buffer, json.byteOffset, json.byteLength);
  const n = buf.length;
  let i = 0;

  const fail = (what: string): never => {
    throw new HeaderSyntaxError(`${what} at byte ${8 + i} of the file`);
  };
  const skipSpace = () => {
    while (i < n && isSpace(buf[i])) i++;
  };
  const expect = (c: number, what: string) => {
    skipSpace();
    if (buf[i] !== c) fail(`expected ${what}`);
    i++;
  };
  /** Reads a JSON string at i (after spaces); `limit` bounds its length in bytes as written. */
  const readString = (what: string, limit = Infinity): string => {
    skipSpace();
    if (buf[i] !== QUOTE) fail(`expected ${what} (a string)`);
    const start = ++i;
    let escaped = false;
    while (i < n) {
      const c = buf[i];
      if (c === QUOTE) break;
      if (c < 0x20) fail(`raw control character in ${what}`);
      if (c === BACKSLASH) {
        escaped = true;
        i++;
      }
      i++;
    }
    if (i >= n) fail(`unterminated ${what}`);
    if (i - start > limit) fail(`${what} is longer than ${limit} bytes`);
    const end = i++;
    if (!escaped) return buf.toString('utf8', start, end);
    let s: unknown;
    try {
      // A string literal alone: JSON.parse's cost is linear and it builds nothing but the string.
      s = JSON.parse(buf.toString('utf8', start - 1, end + 1));
    } catch {
      return fail(`invalid escape in ${what}`);
    }
    if (typeof s !== 'string' || !s.isWellFormed()) fail(`${what} holds a lone surrogate`);
    return s as string;
  };
  /** Reads a non-negative JSON integer (digits only, no sign, fraction or exponent), at most 2^53 - 1. */
  const readInteger = (what: string): number => {
    skipSpace();
    const start = i;
    while (i < n && buf[i] >= 0x30 && buf[i] <= 0x39) i++;
    const c = buf[i];
    if (c === 0x2e || c === 0x65 || c === 0x45 || c === 0x2d || c === 0x2b || i === start) {
      fail(`${what} is not a non-negative integer (written without sign, fraction or exponent)`);
    }
    if (i - start > 1 && buf[start] === 0x30) fail(`${what} has a leading zero`);
    if (i - start > 16) fail(`${what} is larger than 2^53 - 1`);
    const v = Number(buf.toString('latin1', start, i));
    if (!Number.isSafeInteger(v)) fail(`${what} is larger than 2^53 - 1`);
    return v;
  };
  const readIntegerArray = (what: string, limit: number): number[] => {
    expect(0x5b, `[ opening ${what}`);
    const out: number[] = [];
    skipSpace();
    if (buf[i] === 0x5d) {
      i++;
      return out;
    }
    for (;;) {
      if (out.length >= limit) fail(`${what} has more than ${limit} entries`);
      out.push(readInteger(`an entry of ${what}`));
      skipSpace();
      if (buf[i] === 0x2c) {
        i++;
        continue;
      }
      if (buf[i] === 0x5d) {
        i++;
        return out;
      }
      fail(`expected , or ] in ${what}`);
    }
  };
  /** Iterates the members of an object at i: calls `member(key)` with i at the value. */
  const readObject = (what: string, member: (key: string) => void, keyLimit: number = HEADER_LIMITS.keyBytes) => {
    expect(0x7b, `{ opening ${what}`);
    skipSpace();
    if (buf[i] === 0x7d) {
      i++;
      return;
    }
    for (;;) {
      const key = readString(`a key of ${what}`, keyLimit);
      expect(0x3a, `: after a key of ${what}`);
      member(key);
      skipSpace();
      if (buf[i] === 0x2c) {
        i++;
        continue;
      }
      if (buf[i] === 0x7d) {
        i++;
        return;
      }
      fail(`expected , or } in ${what}`);
    }
  };

  const tensors: RawTensorEntry[] = [];
  const names = new Set<string>();
  let metadata: Record<string, string> | null = null;
  let sawMetadata = false;
  let located: RawHeader['located'];
  readObject('the header', (key) => {
    if (names.has(key) || (key === '__metadata__' && sawMetadata)) fail(`duplicate key ${JSON.stringify(key)}`);
    if (key === '__metadata__') {
      sawMetadata = true;
      skipSpace();
      if (buf.toString('latin1', i, i + 4) === 'null') {
        i += 4;
        return;
      }
      if (buf[i] !== 0x7b) fail('__metadata__ is not an object of strings (nor null)');
      const meta: Record<string, string> = {};
      let count = 0;
      readObject('__metadata__', (k) => {
        if (Object.prototype.hasOwnProperty.call(meta, k)) fail(`duplicate key ${JSON.stringify(k)} in __metadata__`);
        if (++count > HEADER_LIMITS.metadataEntries)
          fail(`__metadata__ has more than ${HEADER_LIMITS.metadataEntries} entries`);
        skipSpace();
        if (buf[i] !== QUOTE) fail(`__metadata__ value of ${JSON.stringify(k)} is not a string`);
        const at = i + 1;
        const v = readString(`the __metadata__ value of ${JSON.stringify(k)}`);
        if (k === locateKey) located = { at, length: i - 1 - at };
        Object.defineProperty(meta, k, { value: v, enumerable: true, writable: true, configurable: true });
      });
      metadata = meta;
      return;
    }
    names.add(key);
    if (tensors.length >= HEADER_LIMITS.tensors) fail(`the header lists more than ${HEADER_LIMITS.tensors} tensors`);
    const where = `tensor ${JSON.stringify(key)}`;
    skipSpace();
    if (buf[i] !== 0x7b) fail(`${where} is not an object`);
    let dtype: string | undefined;
    let shape: number[] | undefined;
    let offsets: number[] | undefined;
    readObject(
      where,
      (field) => {
        if (field === 'dtype' && dtype === undefined) dtype = readString(`${where}'s dtype`, 64);
        else if (field === 'shape' && shape === undefined)
          shape = readIntegerArray(`${where}'s shape`, HEADER_LIMITS.rank);
        else if (field === 'data_offsets' && offsets === undefined)
          offsets = readIntegerArray(`${where}'s data_offsets`, 2);
        else
          fail(
            `${where} has ${field === 'dtype' || field === 'shape' || field === 'data_offsets' ? 'a duplicate' : 'an unknown'} field ${JSON.stringify(field)}`,
          );
      },
      64,
    );
    if (dtype === undefined || shape === undefined || offsets === undefined) {
      fail(`${where} lacks ${dtype === undefined ? 'dtype' : shape === undefined ? 'shape' : 'data_offsets'}`);
    }
    if (offsets!.length !== 2) fail(`${where}'s data_offsets is not [begin, end]`);
    tensors.push({ name: key, dtype: dtype!, shape: shape!, begin: offsets![0], end: offsets![1] });
  });
  skipSpace();
  if (i !== n) fail('unexpected data after the header object (only spaces may pad it)');
  return { tensors, metadata, ...(located ? { located } : {}) };
}
