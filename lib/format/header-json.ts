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
  tensors: 300_000,
  /** `__metadata__` entries. Real files hold a handful (ours: the checksums, the training info). */
  metadataEntries: 300_000,
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
// eslint-disable-next-line no-control-regex -- JSON forbids raw control characters in strings: this finds them.
const CONTROL = /[\u0000-\u001f]/;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/**
 * The reader's state: one cursor over the bytes. Written as plain methods and loops (no closure per member): the
 * header of a large model holds hundreds of thousands of entries. Strings are found with Buffer.indexOf (memchr)
 * and decoded natively; only the structure between them is walked byte by byte. `context` names where the cursor is,
 * for messages, and is only formatted when something fails.
 */
class Reader {
  i = 0;
  context = 'the header';
  constructor(readonly buf: Buffer) {}

  fail(what: string): never {
    throw new HeaderSyntaxError(`${what} in ${this.context} at byte ${8 + this.i} of the file`);
  }

  /** Skips whitespace; returns the byte there (NaN at the end). */
  peek(): number {
    const buf = this.buf;
    let i = this.i;
    while (i < buf.length && isSpace(buf[i])) i++;
    this.i = i;
    return i < buf.length ? buf[i] : NaN;
  }

  expect(c: number, what: string): void {
    if (this.peek() !== c) this.fail(`expected ${what}`);
    this.i++;
  }

  /** Reads a JSON string (after spaces) of at most `limit` bytes as written; sets `start` to its first byte. */
  str(what: string, limit: number): string {
    if (this.peek() !== QUOTE) this.fail(`expected ${what} (a string)`);
    const buf = this.buf;
    const start = ++this.i;
    let end = buf.indexOf(QUOTE, start);
    // A quote preceded by an odd number of backslashes is escaped: look further.
    for (;;) {
      if (end < 0) this.fail(`unterminated ${what}`);
      let k = end - 1;
      while (k >= start && buf[k] === BACKSLASH) k--;
      if ((end - 1 - k) % 2 === 0) break;
      end = buf.indexOf(QUOTE, end + 1);
    }
    if (end - start > limit) this.fail(`${what} is longer than ${limit} bytes`);
    this.i = end + 1;
    this.lastStart = start;
    this.lastEnd = end;
    const text = buf.toString('utf8', start, end);
    if (CONTROL.test(text)) this.fail(`raw control character in ${what}`);
    if (!text.includes('\\')) return text;
    let s: unknown;
    try {
      // A string literal alone: JSON.parse's cost is linear and it builds nothing but the string.
      s = JSON.parse(`"${text}"`);
    } catch {
      return this.fail(`invalid escape in ${what}`);
    }
    if (typeof s !== 'string' || !s.isWellFormed()) this.fail(`${what} holds a lone surrogate`);
    return s as string;
  }

  lastStart = 0;
  lastEnd = 0;

  /** A non-negative JSON integer (digits only: no sign, fraction or exponent), at most 2^53 - 1. */
  int(what: string): number {
    this.peek();
    const buf = this.buf;
    const start = this.i;
    let i = start;
    let v = 0;
    while (i < buf.length && buf[i] >= 0x30 && buf[i] <= 0x39) v = v * 10 + (buf[i++] - 0x30);
    this.i = i;
    const c = buf[i];
    if (c === 0x2e || c === 0x65 || c === 0x45 || c === 0x2d || c === 0x2b || i === start) {
      this.fail(`${what} is not a non-negative integer (written without sign, fraction or exponent)`);
    }
    if (i - start > 1 && buf[start] === 0x30) this.fail(`${what} has a leading zero`);
    if (i - start > 16 || !Number.isSafeInteger(v)) this.fail(`${what} is larger than 2^53 - 1`);
    return v;
  }

  intArray(what: string, limit: number): number[] {
    this.expect(0x5b, `[ opening ${what}`);
    const out: number[] = [];
    if (this.peek() === 0x5d) {
      this.i++;
      return out;
    }
    for (;;) {
      if (out.length >= limit) this.fail(`${what} has more than ${limit} entries`);
      out.push(this.int(`an entry of ${what}`));
      const c = this.peek();
      this.i++;
      if (c === 0x2c) continue;
      if (c === 0x5d) return out;
      this.i--;
      this.fail(`expected , or ] in ${what}`);
    }
  }

  /** After a member's value: true when another member follows (`,`), false at `}`. */
  next(): boolean {
    const c = this.peek();
    this.i++;
    if (c === 0x2c) return true;
    if (c === 0x7d) return false;
    this.i--;
    return this.fail('expected , or }');
  }

  /** At `{`: true when the object is empty (consumed), false when a member follows. */
  open(what: string): boolean {
    this.expect(0x7b, `{ opening ${what}`);
    if (this.peek() === 0x7d) {
      this.i++;
      return true;
    }
    return false;
  }
}

function tensorEntry(r: Reader, name: string): RawTensorEntry {
  r.context = `tensor ${JSON.stringify(name)}`;
  if (r.peek() !== 0x7b) r.fail('not an object');
  let dtype: string | undefined;
  let shape: number[] | undefined;
  let offsets: number[] | undefined;
  if (!r.open('the entry')) {
    do {
      const field = r.str('a field name', 64);
      r.expect(0x3a, ': after a field name');
      if (field === 'dtype' && dtype === undefined) dtype = r.str('the dtype', 64);
      else if (field === 'shape' && shape === undefined) shape = r.intArray('the shape', HEADER_LIMITS.rank);
      else if (field === 'data_offsets' && offsets === undefined) offsets = r.intArray('data_offsets', 2);
      else if (field === 'dtype' || field === 'shape' || field === 'data_offsets') r.fail(`duplicate field "${field}"`);
      else r.fail(`unknown field ${JSON.stringify(field)}`);
    } while (r.next());
  }
  if (dtype === undefined) return r.fail('no dtype');
  if (shape === undefined) return r.fail('no shape');
  if (offsets === undefined || offsets.length !== 2) return r.fail('data_offsets is not [begin, end]');
  return { name, dtype, shape, begin: offsets[0], end: offsets[1] };
}

function metadataObject(r: Reader, locateKey: string | undefined, out: RawHeader): Record<string, string> {
  r.context = '__metadata__';
  const meta: Record<string, string> = {};
  const keys = new Set<string>();
  if (r.open('__metadata__')) return meta;
  do {
    r.context = '__metadata__';
    const k = r.str('a key', HEADER_LIMITS.keyBytes);
    if (keys.has(k)) r.fail(`duplicate key ${JSON.stringify(k)}`);
    keys.add(k);
    if (keys.size > HEADER_LIMITS.metadataEntries) r.fail(`more than ${HEADER_LIMITS.metadataEntries} entries`);
    r.expect(0x3a, ': after a key');
    r.context = `the __metadata__ value of ${JSON.stringify(k)}`;
    if (r.peek() !== QUOTE) r.fail('not a string');
    const v = r.str('a value', Infinity);
    if (k === locateKey) out.located = { at: r.lastStart, length: r.lastEnd - r.lastStart };
    // Plain assignment is fast; `__proto__` would set the prototype instead, so it is defined as an own property.
    if (k === '__proto__')
      Object.defineProperty(meta, k, { value: v, enumerable: true, writable: true, configurable: true });
    else meta[k] = v;
  } while (r.next());
  return meta;
}

/**
 * Parses the JSON text of a header (`json`, UTF-8 bytes: the file's bytes 8 to 8 + N). `locateKey`: a metadata key
 * whose value's position to report. Throws HeaderSyntaxError.
 */
export function parseHeaderJson(json: Uint8Array, locateKey?: string): RawHeader {
  if (!isUtf8(json)) throw new HeaderSyntaxError('header is not valid UTF-8');
  const r = new Reader(Buffer.from(json.buffer, json.byteOffset, json.byteLength));
  const out: RawHeader = { tensors: [], metadata: null };
  const names = new Set<string>();
  let sawMetadata = false;
  if (!r.open('the header')) {
    do {
      r.context = 'the header';
      const key = r.str('a tensor name', HEADER_LIMITS.keyBytes);
      r.expect(0x3a, ': after a tensor name');
      if (key === '__metadata__') {
        if (sawMetadata) r.fail('duplicate key "__metadata__"');
        sawMetadata = true;
        const c = r.peek();
        if (c === 0x6e /* n */ && r.buf.toString('latin1', r.i, r.i + 4) === 'null') r.i += 4;
        else if (c === 0x7b) out.metadata = metadataObject(r, locateKey, out);
        else r.fail('__metadata__ is not an object of strings (nor null)');
      } else {
        if (names.has(key)) r.fail(`duplicate key ${JSON.stringify(key)}`);
        names.add(key);
        if (names.size > HEADER_LIMITS.tensors) r.fail(`more than ${HEADER_LIMITS.tensors} tensors`);
        out.tensors.push(tensorEntry(r, key));
      }
      r.context = 'the header';
    } while (r.next());
  }
  if (r.i < r.buf.length && !Number.isNaN(r.peek()))
    r.fail('unexpected data after the header object (only spaces may pad it)');
  return out;
}

/** The deepest nesting accepted in JSON stored in metadata (a model topology: real ones nest a few dozen levels). */
export const MAX_JSON_DEPTH = 256;

/**
 * Whether JSON text nests deeper than `max` levels of arrays and objects, found by a scan that skips strings and
 * allocates nothing; run before JSON.parse, whose cost on 50 MB of `[` is gigabytes. Malformed text is left for
 * JSON.parse to report.
 */
export function nestsDeeperThan(text: string, max = MAX_JSON_DEPTH): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      // Skip the string: to the next quote not escaped by an odd run of backslashes.
      for (;;) {
        i = text.indexOf('"', i + 1);
        if (i < 0) return false;
        let k = i - 1;
        while (text.charCodeAt(k) === BACKSLASH) k--;
        if ((i - 1 - k) % 2 === 0) break;
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return false;
}
