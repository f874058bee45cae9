/**
 * The compact form of a parsed safetensors header (see header-json.ts, which fills it): typed-array columns of byte
 * spans into the header's bytes and of numbers, instead of one JavaScript object and string per entry; and
 * TableHeader, the ParsedHeader that materializes names, entries and metadata from it when first asked for.
 */
import type { ParsedHeader, SafetensorsDType, TensorEntry, TensorSummary } from './header';
import { decodeEscapes, decodeString } from './json-string';
import { LAZY_RECORD_ENTRIES, lazyRecord, setOwn } from './lazy-record';

export { setOwn };

/** What the reader needs to know about dtypes: their names, and each one's element size in bytes. */
export interface HeaderDtypes {
  names: readonly string[];
  sizes: readonly number[];
}

/** A copy of `a` with room for at least `need` elements (twice its length, or more when needed). */
function grown<T extends Int32Array | Uint32Array | Uint16Array | Uint8Array | Float64Array>(a: T, need: number): T {
  if (need <= a.length) return a;
  const b = new (a.constructor as new (n: number) => T)(Math.max(need, a.length * 2, 64));
  b.set(a);
  return b;
}

/**
 * A set of strings (tensor names, or metadata keys) as byte spans: in the header when written without escapes, else
 * decoded (as UTF-8) into the shared `decoded` buffer. A span is (at, end) with at >= 0 in the header, and ~at (< 0)
 * in `decoded`. Duplicates are found by an open-addressing hash table of entry indices over the decoded bytes.
 */
class SpanSet {
  count = 0;
  at = new Int32Array(64);
  end = new Int32Array(64);
  private hashes = new Uint32Array(64);
  private slots = new Int32Array(128); // entry index + 1, 0 when empty; at most half full
  constructor(private readonly strings: Strings) {}

  /** Adds the span; returns the index of an equal one already present, or -1 (then it was added). */
  add(at: number, end: number): number {
    const s = this.strings;
    const h = s.hash(at, end);
    const mask = this.slots.length - 1;
    for (let k = h & mask; ; k = (k + 1) & mask) {
      const e = this.slots[k];
      if (e === 0) break;
      if (this.hashes[e - 1] === h && s.equal(this.at[e - 1], this.end[e - 1], at, end)) return e - 1;
    }
    const i = this.count++;
    this.at = grown(this.at, this.count);
    this.end = grown(this.end, this.count);
    this.hashes = grown(this.hashes, this.count);
    this.at[i] = at;
    this.end[i] = end;
    this.hashes[i] = h;
    if (this.count * 2 > this.slots.length) this.rehash();
    else this.insert(i);
    return -1;
  }

  private insert(i: number): void {
    const mask = this.slots.length - 1;
    let k = this.hashes[i] & mask;
    while (this.slots[k] !== 0) k = (k + 1) & mask;
    this.slots[k] = i + 1;
  }

  private rehash(): void {
    this.slots = new Int32Array(this.slots.length * 2);
    for (let i = 0; i < this.count; i++) this.insert(i);
  }

  /** Index of the entry equal to `bytes` (a plain buffer), or -1: by the hash table when kept (see seal). */
  find(bytes: Buffer): number {
    if (this.slots.length > 0) {
      let h = 0x811c9dc5;
      for (let k = 0; k < bytes.length; k++) h = Math.imul(h ^ bytes[k], 0x01000193);
      h >>>= 0;
      const mask = this.slots.length - 1;
      for (let k = h & mask; ; k = (k + 1) & mask) {
        const e = this.slots[k];
        if (e === 0) return -1;
        if (this.hashes[e - 1] === h && this.strings.equalBytes(this.at[e - 1], this.end[e - 1], bytes)) return e - 1;
      }
    }
    for (let i = 0; i < this.count; i++) {
      if (this.strings.equalBytes(this.at[i], this.end[i], bytes)) return i;
    }
    return -1;
  }

  /**
   * Releases spare capacity once reading is done, and the hash table unless `keepIndex` (the metadata keys of a
   * large `__metadata__`, which a lazy record looks up by key: see lazy-record.ts).
   */
  seal(keepIndex = false): void {
    if (!keepIndex) {
      this.slots = new Int32Array(0);
      this.hashes = new Uint32Array(0);
    } else this.hashes = this.hashes.slice(0, this.count);
    this.at = this.at.slice(0, this.count);
    this.end = this.end.slice(0, this.count);
  }
}

/** The header's bytes plus the decoded bytes of strings written with escapes; spans as in SpanSet. */
export class Strings {
  decoded = Buffer.alloc(0);
  decodedLength = 0;
  constructor(readonly json: Buffer) {}

  private buf(at: number): Buffer {
    return at >= 0 ? this.json : this.decoded;
  }

  /** The string of a span. */
  text(at: number, end: number): string {
    return at >= 0 ? this.json.toString('utf8', at, end) : this.decoded.toString('utf8', ~at, end);
  }

  /**
   * Decodes the checked JSON string body json[start..end) (with escapes) into `decoded`; returns its span start
   * (negative: in `decoded`); the span ends at `decodedLength`.
   */
  storeEscaped(json: Buffer, start: number, end: number): number {
    const room = end - start; // decoded is never longer than written
    if (this.decodedLength + room > this.decoded.length) {
      const b = Buffer.alloc(Math.max(this.decodedLength + room, this.decoded.length * 2, 256));
      this.decoded.copy(b, 0, 0, this.decodedLength);
      this.decoded = b;
    }
    const at = this.decodedLength;
    this.decodedLength = decodeEscapes(json, start, end, this.decoded, at);
    return ~at;
  }

  hash(at: number, end: number): number {
    const b = this.buf(at);
    let h = 0x811c9dc5;
    for (let k = at >= 0 ? at : ~at; k < end; k++) h = Math.imul(h ^ b[k], 0x01000193);
    return h >>> 0;
  }

  equal(a: number, aEnd: number, b: number, bEnd: number): boolean {
    const as = a >= 0 ? a : ~a;
    const bs = b >= 0 ? b : ~b;
    if (aEnd - as !== bEnd - bs) return false;
    return this.buf(a).compare(this.buf(b), bs, bEnd, as, aEnd) === 0;
  }

  equalBytes(at: number, end: number, bytes: Buffer): boolean {
    const s = at >= 0 ? at : ~at;
    return end - s === bytes.length && bytes.compare(this.buf(at), s, end) === 0;
  }
}

/**
 * A parsed header, as columns (index i: the i-th tensor, or metadata entry, as written). Tensor i: its name is the
 * span (names.at[i], names.end[i]) of `strings`, its dtype `dtypes.names[dtype[i]]`, its data [begin[i], end[i]),
 * its shape the `rank[i]` integers of the JSON array at byte shapeAt[i] of the header (see shapeOf). Metadata entry j:
 * the key span (keys.at[j], keys.end[j]), the value written at bytes [valueAt[j], valueEnd[j]) of the header (without
 * its quotes), with escapes when valueEscaped[j] (see valueOf).
 */
export class HeaderTable {
  tensorCount = 0;
  /** Dimensions of all shapes read so far (bounded by HEADER_LIMITS.dimensions). */
  dimensions = 0;
  dtype = new Uint8Array(64);
  rank = new Uint16Array(64);
  shapeAt = new Int32Array(64);
  begin = new Float64Array(64);
  end = new Float64Array(64);
  readonly names: SpanSet;
  /** Whether `__metadata__` is present as an object (false when absent or `null`). */
  hasMetadata = false;
  metaCount = 0;
  readonly keys: SpanSet;
  valueAt = new Int32Array(64);
  valueEnd = new Int32Array(64);
  valueEscaped = new Uint8Array(64);

  constructor(
    readonly strings: Strings,
    readonly dtypes: HeaderDtypes,
  ) {
    this.names = new SpanSet(strings);
    this.keys = new SpanSet(strings);
  }

  /** Makes room for one more tensor (its columns are then set by the reader). */
  addTensor(): void {
    const n = ++this.tensorCount;
    this.dtype = grown(this.dtype, n);
    this.rank = grown(this.rank, n);
    this.shapeAt = grown(this.shapeAt, n);
    this.begin = grown(this.begin, n);
    this.end = grown(this.end, n);
  }

  /** Records the value of the metadata entry whose key was added last. */
  addValue(at: number, end: number, escaped: boolean): void {
    const j = this.metaCount++;
    this.valueAt = grown(this.valueAt, j + 1);
    this.valueEnd = grown(this.valueEnd, j + 1);
    this.valueEscaped = grown(this.valueEscaped, j + 1);
    this.valueAt[j] = at;
    this.valueEnd[j] = end;
    this.valueEscaped[j] = escaped ? 1 : 0;
  }

  name(i: number): string {
    return this.strings.text(this.names.at[i], this.names.end[i]);
  }

  key(j: number): string {
    return this.strings.text(this.keys.at[j], this.keys.end[j]);
  }

  /** The decoded value of metadata entry j (validated while reading: decoding cannot fail). */
  valueOf(j: number): string {
    return decodeString(this.strings.json, this.valueAt[j], this.valueEnd[j], this.valueEscaped[j] === 1);
  }

  /** The index of the metadata entry whose key is `key`, or -1 (a linear search: for a few known keys). */
  findKey(key: string): number {
    return this.keys.find(Buffer.from(key));
  }

  /** Tensor i's shape, read again from the header (validated while reading). */
  shapeOf(i: number): number[] {
    const b = this.strings.json;
    const out = new Array<number>(this.rank[i]);
    let k = this.shapeAt[i] + 1;
    for (let d = 0; d < out.length; d++) {
      while (b[k] < 0x30 || b[k] > 0x39) k++;
      let v = 0;
      while (b[k] >= 0x30 && b[k] <= 0x39) v = v * 10 + (b[k++] - 0x30);
      out[d] = v;
    }
    return out;
  }

  /** Releases what only reading needed (the hash tables, spare capacity). */
  seal(): void {
    this.names.seal();
    this.keys.seal(this.metaCount > LAZY_RECORD_ENTRIES);
    const n = this.tensorCount;
    this.dtype = this.dtype.slice(0, n);
    this.rank = this.rank.slice(0, n);
    this.shapeAt = this.shapeAt.slice(0, n);
    this.begin = this.begin.slice(0, n);
    this.end = this.end.slice(0, n);
    const m = this.metaCount;
    this.valueAt = this.valueAt.slice(0, m);
    this.valueEnd = this.valueEnd.slice(0, m);
    this.valueEscaped = this.valueEscaped.slice(0, m);
  }
}

/**
 * A ParsedHeader over a HeaderTable: `order[k]` is the table index of the k-th tensor in file order. Names, entries
 * and metadata are materialized on first use (once), from the table.
 */
export class TableHeader implements ParsedHeader {
  checksummed = false;
  headerCrc?: number;
  tensorCrcs?: number[];
  formatVersion?: string;
  private cached: { names?: string[]; entries?: TensorEntry[]; raw?: Record<string, string> } = {};
  private user?: Record<string, string>;

  constructor(
    private readonly table: HeaderTable,
    private readonly order: Uint32Array,
    readonly dataStart: number,
    readonly dataLength: number,
    /** Keys with this prefix are the library's: left out of `metadata`. */
    private readonly ourPrefix: string,
  ) {}

  /** Tensor names in file order. */
  get names(): string[] {
    if (!this.cached.names) this.cached.names = Array.from(this.order, (i) => this.table.name(i));
    return this.cached.names;
  }

  get entries(): TensorEntry[] {
    if (!this.cached.entries) {
      const names = this.names;
      const out = new Array<TensorEntry>(names.length);
      for (let k = 0; k < out.length; k++) out[k] = this.entryAt(k);
      this.cached.entries = out;
    }
    return this.cached.entries;
  }

  entryAt(k: number): TensorEntry {
    const t = this.table;
    const i = this.order[k];
    const name = this.cached.names ? this.cached.names[k] : t.name(i);
    return { name, dtype: this.dtypeOf(k), shape: t.shapeOf(i), begin: t.begin[i], end: t.end[i] };
  }

  nameOf(k: number): string {
    return this.names[k];
  }

  beginOf(k: number): number {
    return this.table.begin[this.order[k]];
  }

  endOf(k: number): number {
    return this.table.end[this.order[k]];
  }

  dtypeOf(k: number): SafetensorsDType {
    return this.table.dtypes.names[this.table.dtype[this.order[k]]] as SafetensorsDType;
  }

  get rawMetadata(): Record<string, string> {
    if (!this.cached.raw) this.cached.raw = this.metadataObject(true);
    return this.cached.raw;
  }

  get metadata(): Record<string, string> {
    if (!this.user) this.user = this.metadataObject(false);
    return this.user;
  }

  get tensorCount(): number {
    return this.order.length;
  }

  tensorSummary(k: number): TensorSummary {
    const t = this.table;
    const i = this.order[k];
    return {
      name: this.cached.names ? this.cached.names[k] : t.name(i),
      dtype: t.dtypes.names[t.dtype[i]] as SafetensorsDType,
      shape: t.shapeOf(i),
      byteLength: t.end[i] - t.begin[i],
      ...(this.tensorCrcs ? { crc32c: this.tensorCrcs[k] } : {}),
    };
  }

  /** Element size of the k-th tensor in file order. */
  sizeAt(k: number): number {
    return this.table.dtypes.sizes[this.table.dtype[this.order[k]]];
  }

  /** The value of a metadata key, or undefined. */
  value(key: string): string | undefined {
    const j = this.table.findKey(key);
    return j < 0 ? undefined : this.table.valueOf(j);
  }

  /** Whether any metadata key is this library's. */
  hasOurKeys(): boolean {
    for (let j = 0; j < this.table.metaCount; j++) if (this.isOurKey(j)) return true;
    return false;
  }

  /** Whether metadata key j is this library's (compared as bytes when written without escapes: no string built). */
  private isOurKey(j: number): boolean {
    const t = this.table;
    const prefix = (this.prefixBytes ??= Buffer.from(this.ourPrefix));
    const at = t.keys.at[j];
    const end = t.keys.end[j];
    if (at < 0) return t.key(j).startsWith(this.ourPrefix);
    return end - at >= prefix.length && prefix.compare(t.strings.json, at, at + prefix.length) === 0;
  }

  private prefixBytes?: Buffer;

  private metadataObject(all: boolean): Record<string, string> {
    const t = this.table;
    if (t.metaCount > LAZY_RECORD_ENTRIES) return this.metadataView(all);
    const out: Record<string, string> = {};
    for (let j = 0; j < t.metaCount; j++) {
      const k = t.key(j);
      if (!all && k.startsWith(this.ourPrefix)) continue;
      if (k === '__proto__') setOwn(out, k, t.valueOf(j));
      else out[k] = t.valueOf(j);
    }
    return out;
  }

  /** The metadata as a read-through view of the table (lazy-record.ts), without this library's keys unless `all`. */
  private metadataView(all: boolean): Record<string, string> {
    const t = this.table;
    let picked: Int32Array | undefined; // table indices of the entries shown, when some are left out
    if (!all && this.hasOurKeys()) {
      const keep: number[] = [];
      for (let j = 0; j < t.metaCount; j++) if (!this.isOurKey(j)) keep.push(j);
      picked = Int32Array.from(keep);
    }
    const prefix = this.ourPrefix;
    return lazyRecord({
      count: picked ? picked.length : t.metaCount,
      key: (j) => t.key(picked ? picked[j] : j),
      value: (j) => t.valueOf(picked ? picked[j] : j),
      find: (key) => {
        if (!all && key.startsWith(prefix)) return -1;
        const j = t.findKey(key);
        if (j < 0 || !picked) return j;
        // The view's index of table entry j: a binary search (picked is ascending).
        let lo = 0;
        let hi = picked.length - 1;
        while (lo <= hi) {
          const mid = (lo + hi) >> 1;
          if (picked[mid] < j) lo = mid + 1;
          else if (picked[mid] > j) hi = mid - 1;
          else return mid;
        }
        return -1;
      },
    });
  }
}
