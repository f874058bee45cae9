/**
 * The safetensors header's JSON, read by a grammar-specific reader whose time and memory are bounded before anything
 * is built.
 *
 * A general JSON parser (JSON.parse) allocates for whatever a hostile header describes: 16M levels of `[` cost
 * seconds and gigabytes before the structure could be refused. A safetensors header has a fixed shape, three levels
 * at most:
 *
 *   { "<tensor>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, ..., "__metadata__": {"k": "v"} | null }
 *
 * so this reader accepts exactly that shape and refuses anything else at the first byte that departs from it, in one
 * pass over the bytes, without recursion. Its work is linear in the header's length. It builds no JavaScript object
 * or string per entry: what it finds goes into a HeaderTable, typed-array columns of byte spans into the header
 * (names, keys, values) and numbers (dtype, offsets), with duplicate names found by a hash table over those spans;
 * strings are decoded when asked for (header.ts materializes them once, for the callers that need them). So a header
 * of 200k metadata keys or 300k tensors costs a fraction of its own size before it is refused or used, where one JS
 * object and string per entry cost 10-30 times it. HEADER_LIMITS bounds the counts and key sizes (far above what real
 * files use). Numbers are integers only, as in the reference reader (serde into usize): `2.0`, `1.6e1`, `-0` and
 * anything above 2^53 - 1 are refused. Strings follow JSON exactly (escapes, checked at the byte level: json-string.ts; no raw control characters, no lone
 * surrogates; the bytes were checked to be UTF-8 before). Names are compared as decoded (`"a"` and `"\u0061"` are
 * the same name), as the reference reader does.
 */
import { isUtf8 } from 'node:buffer';
import { type HeaderDtypes, HeaderTable, Strings } from './header-table';
import { decodeEscapes, escapeEnd } from './json-string';

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
  /**
   * Dimensions of all shapes together (300k tensors of rank 6; real files: a few thousand tensors of rank < 10). A
   * shape is returned as a number[] (8 bytes a dimension, 4x the 2 bytes of `0,`): this bounds what a header of
   * maximal-rank shapes costs once read (47k shapes of rank 1024 in 99 MB took 8.7 s and +535 MB).
   */
  dimensions: 2_000_000,
} as const;

/** Thrown with what is wrong; header.ts turns it into ERR_CHECKPOINT_CORRUPT naming the file. */
export class HeaderSyntaxError extends Error {}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const METADATA_KEY = Buffer.from('__metadata__');
const FIELD_DTYPE = Buffer.from('dtype');
const FIELD_SHAPE = Buffer.from('shape');
const FIELD_OFFSETS = Buffer.from('data_offsets');

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/** Headers up to this many bytes are probed by plainJson (above it, 33 passes of memchr cost more than they save). */
const PLAIN_PROBE_MAX = 256 * 1024;

/**
 * Whether `buf` (at most PLAIN_PROBE_MAX bytes) holds no backslash and no byte below 0x20, found by Buffer.indexOf
 * (memchr) per byte value: then no string in it has an escape or a raw control character, the only things scan()
 * checks byte by byte, and those checks can be skipped. Headers as this library (and the reference writer) write them
 * are such. A header run cold (a fresh process's first load) spends most of its parse in that byte loop,
 * interpreted; false for any other header, which is then checked byte by byte as always.
 */
function plainJson(buf: Buffer): boolean {
  if (buf.length > PLAIN_PROBE_MAX || buf.indexOf(BACKSLASH) >= 0) return false;
  for (let c = 0; c < 0x20; c++) if (buf.indexOf(c) >= 0) return false;
  return true;
}

/**
 * The reader's state: one cursor over the bytes. Written as plain methods and loops (no closure per member): the
 * header of a large model holds hundreds of thousands of entries. Strings are found with Buffer.indexOf (memchr) and
 * checked byte by byte, escapes included (json-string.ts); none is decoded here except names, keys and field names
 * written with escapes (into bytes: the table's decoded buffer, or a small scratch buffer), so that they compare as
 * the reference reader compares them. Values are decoded only when materialized.
 */
class Reader {
  i = 0;
  /** Where the cursor is, for messages: the header, tensor `at`, `__metadata__`, or metadata entry `at`'s value. */
  where: 'header' | 'tensor' | 'metadata' | 'value' = 'header';
  at = 0;
  /** The span of the last string read (without quotes) as written, and whether it holds escapes. */
  lastStart = 0;
  lastEnd = 0;
  lastEscaped = false;
  /** Decoded bytes of the last short string (field name, dtype: at most 64 bytes as written) held escapes. */
  private readonly scratch = Buffer.alloc(64);
  /** Whether the header holds no backslash and no control byte at all (see plainJson): scan() checks no byte then. */
  private readonly plain: boolean;
  constructor(
    readonly buf: Buffer,
    readonly table: HeaderTable,
  ) {
    this.plain = plainJson(buf);
  }

  /** Moves the context for messages (only formatted when something fails). */
  in(where: Reader['where'], at = 0): void {
    this.where = where;
    this.at = at;
  }

  fail(what: string): never {
    const t = this.table;
    const context =
      this.where === 'tensor'
        ? `tensor ${JSON.stringify(t.name(this.at))}`
        : this.where === 'metadata'
          ? '__metadata__'
          : this.where === 'value'
            ? `the __metadata__ value of ${JSON.stringify(t.key(this.at))}`
            : 'the header';
    throw new HeaderSyntaxError(`${what} in ${context} at byte ${8 + this.i} of the file`);
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

  /**
   * Reads a JSON string (after spaces) of at most `limit` bytes as written, checks it (control characters, escapes,
   * surrogates) and sets last*. Builds nothing.
   */
  scan(what: string, limit: number): void {
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
    let escaped = false;
    for (let k = this.plain ? end : start; k < end; k++) {
      const c = buf[k];
      if (c < 0x20) {
        this.i = k;
        this.fail(`raw control character in ${what}`);
      }
      if (c === BACKSLASH) {
        escaped = true;
        const next = escapeEnd(buf, k, end);
        if (typeof next !== 'number') {
          this.i = next.at;
          this.fail(`${next.what} ${JSON.stringify(buf.toString('latin1', k, Math.min(k + 12, end)))} in ${what}`);
        }
        k = next - 1;
      }
    }
    this.i = end + 1;
    this.lastStart = start;
    this.lastEnd = end;
    this.lastEscaped = escaped;
  }

  /** The decoded bytes of the last string read, if it held escapes (short strings only: see scratch). */
  private lastDecoded(): Buffer {
    const n = decodeEscapes(this.buf, this.lastStart, this.lastEnd, this.scratch, 0);
    return this.scratch.subarray(0, n);
  }

  /** The last string read, decoded (for messages). */
  lastText(): string {
    return this.lastEscaped
      ? this.lastDecoded().toString('utf8')
      : this.buf.toString('utf8', this.lastStart, this.lastEnd);
  }

  /** The span (in `strings`) of the last string read by span(): in the header, or its decoded bytes. */
  spanAt = 0;
  spanEnd = 0;

  /** Scans a string and sets spanAt/spanEnd to its span in `strings` (decoded bytes when it held escapes). */
  span(what: string, limit: number): void {
    this.scan(what, limit);
    if (!this.lastEscaped) {
      this.spanAt = this.lastStart;
      this.spanEnd = this.lastEnd;
    } else {
      this.spanAt = this.table.strings.storeEscaped(this.buf, this.lastStart, this.lastEnd);
      this.spanEnd = this.table.strings.decodedLength;
    }
  }

  /** The index in `names` of the last string read (as decoded), or -1: compared as bytes, nothing built. */
  lastIndexIn(names: readonly Buffer[]): number {
    for (let k = 0; k < names.length; k++) if (this.lastIs(names[k])) return k;
    return -1;
  }

  /** A non-negative JSON integer (digits only: no sign, fraction or exponent), at most 2^53 - 1. */
  int(what: string): number {
    this.peek();
    const buf = this.buf;
    const start = this.i;
    let i = start;
    let v = 0;
    while (i < buf.length && buf[i] >= 0x30 && buf[i] <= 0x39 && i - start <= 16) v = v * 10 + (buf[i++] - 0x30);
    this.i = i;
    const c = buf[i];
    if (c === 0x2e || c === 0x65 || c === 0x45 || c === 0x2d || c === 0x2b || i === start) {
      this.fail(`${what} is not a non-negative integer (written without sign, fraction or exponent)`);
    }
    if (i - start > 1 && buf[start] === 0x30) this.fail(`${what} has a leading zero`);
    if (i - start > 16 || !Number.isSafeInteger(v)) this.fail(`${what} is larger than 2^53 - 1`);
    return v;
  }

  /** After an array's entry: true when another follows (`,`), false at `]`. */
  nextInArray(what: string): boolean {
    const c = this.peek();
    this.i++;
    if (c === 0x2c) return true;
    if (c === 0x5d) return false;
    this.i--;
    return this.fail(`expected , or ] in ${what}`);
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

  /** At `[`: true when the array is empty (consumed). */
  openArray(what: string): boolean {
    this.expect(0x5b, `[ opening ${what}`);
    if (this.peek() === 0x5d) {
      this.i++;
      return true;
    }
    return false;
  }

  /** Whether the last string read is `field` (as decoded). A loop: for a few bytes it beats a native call. */
  lastIs(field: Buffer): boolean {
    if (this.lastEscaped) return this.lastDecoded().equals(field);
    const n = field.length;
    if (this.lastEnd - this.lastStart !== n) return false;
    const buf = this.buf;
    const at = this.lastStart;
    for (let k = 0; k < n; k++) if (buf[at + k] !== field[k]) return false;
    return true;
  }
}

/** Reads tensor entry `i` (its name already added) into the table's columns, checking dtype and size. */
function tensorEntry(r: Reader, t: HeaderTable, i: number, dtypeBytes: readonly Buffer[]): void {
  r.in('tensor', i);
  if (r.peek() !== 0x7b) r.fail('not an object');
  let dtype = -1;
  let shapeAt = -1;
  let rank = 0;
  let elements = 1; // the product of the dimensions while below 2^53, then Infinity (0 wins: see zero)
  let zero = false;
  let begin = -1;
  let end = -1;
  if (!r.open('the entry')) {
    do {
      r.scan('a field name', 64);
      r.expect(0x3a, ': after a field name');
      if (r.lastIs(FIELD_DTYPE)) {
        if (dtype !== -1) r.fail('duplicate field "dtype"');
        r.scan('the dtype', 64);
        dtype = r.lastIndexIn(dtypeBytes);
        if (dtype < 0) r.fail(`unknown dtype ${JSON.stringify(r.lastText())}`);
      } else if (r.lastIs(FIELD_SHAPE)) {
        if (shapeAt !== -1) r.fail('duplicate field "shape"');
        r.peek();
        shapeAt = r.i;
        if (!r.openArray('the shape')) {
          do {
            if (rank >= HEADER_LIMITS.rank) r.fail(`the shape has more than ${HEADER_LIMITS.rank} entries`);
            if (++t.dimensions > HEADER_LIMITS.dimensions)
              r.fail(`the shapes have more than ${HEADER_LIMITS.dimensions} dimensions in all`);
            const d = r.int('an entry of the shape');
            rank++;
            if (d === 0) zero = true;
            elements = elements * d <= Number.MAX_SAFE_INTEGER ? elements * d : Infinity;
          } while (r.nextInArray('the shape'));
        }
      } else if (r.lastIs(FIELD_OFFSETS)) {
        if (begin !== -1) r.fail('duplicate field "data_offsets"');
        if (r.openArray('data_offsets')) r.fail('data_offsets is not [begin, end]');
        begin = r.int('an entry of data_offsets');
        if (!r.nextInArray('data_offsets')) r.fail('data_offsets is not [begin, end]');
        end = r.int('an entry of data_offsets');
        if (r.nextInArray('data_offsets')) r.fail('data_offsets has more than 2 entries');
      } else r.fail(`unknown field ${JSON.stringify(r.lastText())}`);
    } while (r.next());
  }
  if (dtype === -1) r.fail('no dtype');
  if (shapeAt === -1) r.fail('no shape');
  if (begin === -1) r.fail('data_offsets is not [begin, end]');
  if (begin > end) r.fail('invalid data_offsets (begin after end)');
  const size = t.dtypes.sizes[dtype];
  const bytes = zero ? 0 : elements * size;
  t.dtype[i] = dtype;
  t.rank[i] = rank;
  t.shapeAt[i] = shapeAt;
  t.begin[i] = begin;
  t.end[i] = end;
  if (bytes !== end - begin) {
    // Exact, in BigInt: the product of dimensions can overflow 2^64.
    const shape = t.shapeOf(i);
    const expected = shape.reduce((a, d) => a * BigInt(d), BigInt(size));
    r.fail(`shape [${shape.join(',')}] of ${expected} bytes but spans ${end - begin} bytes`);
  }
}

function metadataObject(r: Reader, t: HeaderTable): void {
  r.in('metadata');
  t.hasMetadata = true;
  if (r.open('__metadata__')) return;
  do {
    r.in('metadata');
    r.span('a key', HEADER_LIMITS.keyBytes);
    const at = r.spanAt;
    const end = r.spanEnd;
    const j = t.metaCount;
    if (j >= HEADER_LIMITS.metadataEntries) r.fail(`more than ${HEADER_LIMITS.metadataEntries} entries`);
    if (t.keys.add(at, end) >= 0) r.fail(`duplicate key ${JSON.stringify(t.strings.text(at, end))}`);
    r.expect(0x3a, ': after a key');
    r.in('value', j);
    if (r.peek() !== QUOTE) r.fail('not a string');
    r.scan('a value', Infinity);
    t.addValue(r.lastStart, r.lastEnd, r.lastEscaped);
  } while (r.next());
}

/**
 * Reads the JSON text of a header (`json`, UTF-8 bytes: the file's bytes 8 to 8 + N) into a HeaderTable, checking
 * its grammar, each tensor's dtype (one of `dtypes`) and that its shape matches its byte span, and that names and
 * keys are unique. Throws HeaderSyntaxError.
 */
export function parseHeaderJson(json: Uint8Array, dtypes: HeaderDtypes): HeaderTable {
  if (!isUtf8(json)) throw new HeaderSyntaxError('header is not valid UTF-8');
  const buf = Buffer.from(json.buffer, json.byteOffset, json.byteLength);
  const strings = new Strings(buf);
  const t = new HeaderTable(strings, dtypes);
  const r = new Reader(buf, t);
  const dtypeBytes = dtypes.names.map((d) => Buffer.from(d, 'latin1'));
  let sawMetadata = false;
  if (!r.open('the header')) {
    do {
      r.in('header');
      r.span('a tensor name', HEADER_LIMITS.keyBytes);
      const at = r.spanAt;
      const end = r.spanEnd;
      r.expect(0x3a, ': after a tensor name');
      if (strings.equalBytes(at, end, METADATA_KEY)) {
        if (sawMetadata) r.fail('duplicate key "__metadata__"');
        sawMetadata = true;
        const c = r.peek();
        if (c === 0x6e /* n */ && r.buf.toString('latin1', r.i, r.i + 4) === 'null') r.i += 4;
        else if (c === 0x7b) metadataObject(r, t);
        else r.fail('__metadata__ is not an object of strings (nor null)');
      } else {
        const i = t.tensorCount;
        if (i >= HEADER_LIMITS.tensors) r.fail(`more than ${HEADER_LIMITS.tensors} tensors`);
        if (t.names.add(at, end) >= 0) r.fail(`duplicate key ${JSON.stringify(strings.text(at, end))}`);
        t.addTensor();
        tensorEntry(r, t, i, dtypeBytes);
      }
      r.in('header');
    } while (r.next());
  }
  if (r.i < r.buf.length && !Number.isNaN(r.peek()))
    r.fail('unexpected data after the header object (only spaces may pad it)');
  t.seal();
  return t;
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
