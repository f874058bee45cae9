/**
 * Read-through views of what a header holds, for files of many entries. lazyRecord: a view of a header's metadata, a `Record<string, string>` whose entries stay in the compact header
 * table (header-table.ts) until a caller writes to it. Used for metadata of more than LAZY_RECORD_ENTRIES entries:
 * one plain object property per entry costs ~90 bytes (200k keys: 18 MB of heap for a 3.8 MB header, 6x), where the
 * table costs a fraction of the header.
 *
 * It behaves as a plain object: `m[key]`, `key in m`, `Object.keys`/`entries`, `for...in`, spreading, JSON.stringify,
 * `hasOwnProperty` read the table (a hash lookup per key; enumeration builds the key strings then); the first write,
 * delete or freeze copies every entry into the object itself, which from then on is a plain object behind the proxy.
 * `util.inspect` (console.log) shows the entries. One difference remains: a Proxy cannot be cloned by the structured
 * clone algorithm (`structuredClone`, `postMessage`): clone a copy (`{ ...m }`) instead.
 */
import { inspect } from 'node:util';

/** Metadata with more entries than this is returned as a view (real files hold a handful). */
export const LAZY_RECORD_ENTRIES = 4096;

/** What the view reads: entry j's key and value (0 <= j < count), and the index of a key (or -1). */
export interface RecordSource {
  readonly count: number;
  key(j: number): string;
  value(j: number): string;
  find(key: string): number;
}

/**
 * Sets `key` as an own enumerable property of a plain record, even when it is `__proto__`: plain assignment would set
 * the prototype instead and silently drop a tensor or metadata entry of that name. A key found nowhere on the record
 * nor its prototypes is assigned (the same own property, without defineProperty's slower call: one per tensor of a
 * load); any other (`__proto__`, `toString`, which a frozen Object.prototype would refuse to shadow by assignment,
 * or a key set before) is defined.
 */
export function setOwn<T>(record: Record<string, T>, key: string, value: T): void {
  if (!(key in record)) record[key] = value;
  else Object.defineProperty(record, key, { value, enumerable: true, writable: true, configurable: true });
}

/** The source of each view not yet written to (see recordKeys). */
const sources = new WeakMap<object, RecordSource>();

/**
 * The keys of a record, as Object.keys gives them, but read straight from the table when `record` is an unwritten
 * view: no trap per key (the CLI's inspect lists 200k of them).
 */
export function recordKeys(record: Record<string, string>): string[] {
  const source = sources.get(record);
  if (!source) return Object.keys(record);
  const keys = new Array<string>(source.count);
  for (let j = 0; j < source.count; j++) keys[j] = source.key(j);
  return keys;
}

/** A Record<string, string> reading `source` until its first write (see the module comment). */
export function lazyRecord(source: RecordSource): Record<string, string> {
  const target: Record<string, string> = {};
  let copied = false;
  const copy = (): void => {
    if (copied) return;
    copied = true;
    sources.delete(view);
    for (let j = 0; j < source.count; j++) setOwn(target, source.key(j), source.value(j));
  };
  const index = (p: string | symbol): number => (copied || typeof p !== 'string' ? -1 : source.find(p));
  // util.inspect shows a proxy's target: let the target present the entries (not enumerable, so not an entry).
  Object.defineProperty(target, inspect.custom, {
    value: (_depth: number, options: object) => {
      const plain: Record<string, string> = {};
      if (copied) Object.assign(plain, target);
      else for (let j = 0; j < source.count; j++) setOwn(plain, source.key(j), source.value(j));
      return inspect(plain, options);
    },
    enumerable: false,
    configurable: true,
    writable: true,
  });
  const view = new Proxy(target, {
    get(t, p, receiver) {
      const j = index(p);
      return j >= 0 ? source.value(j) : Reflect.get(t, p, receiver);
    },
    has(t, p) {
      return index(p) >= 0 || Reflect.has(t, p);
    },
    getOwnPropertyDescriptor(t, p) {
      const j = index(p);
      if (j < 0) return Reflect.getOwnPropertyDescriptor(t, p);
      return { value: source.value(j), writable: true, enumerable: true, configurable: true };
    },
    ownKeys(t) {
      if (copied) return Reflect.ownKeys(t);
      const keys: (string | symbol)[] = new Array<string>(source.count);
      for (let j = 0; j < source.count; j++) keys[j] = source.key(j);
      return keys.concat(Reflect.ownKeys(t));
    },
    set(t, p, value) {
      copy();
      return Reflect.set(t, p, value);
    },
    defineProperty(t, p, descriptor) {
      copy();
      return Reflect.defineProperty(t, p, descriptor);
    },
    deleteProperty(t, p) {
      copy();
      return Reflect.deleteProperty(t, p);
    },
    preventExtensions(t) {
      copy();
      return Reflect.preventExtensions(t);
    },
    setPrototypeOf(t, proto) {
      copy();
      return Reflect.setPrototypeOf(t, proto);
    },
  });
  sources.set(view, source);
  return view;
}

/** Arrays longer than this are returned as a view (lazyArray). */
export const LAZY_ARRAY_ITEMS = 4096;

/** Whether `p` is an array index below `length` (its canonical decimal form). */
function indexOf(p: string | symbol, length: number): number {
  if (typeof p !== 'string' || p.length === 0 || p.length > 10) return -1;
  const i = Number(p);
  return Number.isInteger(i) && i >= 0 && i < length && String(i) === p ? i : -1;
}

/**
 * An array of `length` items, item i built by `item(i)` when first read and kept (so it is the same object on every
 * read, and changes to it stay), instead of all of them up front; the first write to the array itself (an index,
 * `length`, push, sort...) builds the rest, and from then on it is a plain array behind the proxy. `Array.isArray`,
 * indexing, iteration, the array methods, JSON and util.inspect behave as on a plain array; structuredClone does
 * not accept it (clone `[...a]`).
 */
export function lazyArray<T>(length: number, item: (i: number) => T): T[] {
  const target = new Array<T>(length);
  const filled = new Uint8Array(length);
  let complete = false;
  const at = (t: T[], i: number): T => {
    if (!filled[i]) {
      filled[i] = 1;
      t[i] = item(i);
    }
    return t[i];
  };
  const fillAll = (t: T[]): void => {
    if (complete) return;
    complete = true;
    for (let i = 0; i < length; i++) at(t, i);
  };
  Object.defineProperty(target, inspect.custom, {
    value: (_depth: number, options: object) => {
      fillAll(target);
      return inspect(Array.from(target), options);
    },
    enumerable: false,
    configurable: true,
    writable: true,
  });
  return new Proxy(target, {
    get(t, p, receiver) {
      if (!complete) {
        const i = indexOf(p, length);
        if (i >= 0) return at(t, i);
      }
      return Reflect.get(t, p, receiver);
    },
    has(t, p) {
      return (!complete && indexOf(p, length) >= 0) || Reflect.has(t, p);
    },
    getOwnPropertyDescriptor(t, p) {
      if (!complete) {
        const i = indexOf(p, length);
        if (i >= 0) at(t, i);
      }
      return Reflect.getOwnPropertyDescriptor(t, p);
    },
    ownKeys(t) {
      if (complete) return Reflect.ownKeys(t);
      const keys: (string | symbol)[] = new Array<string>(length);
      for (let i = 0; i < length; i++) keys[i] = String(i);
      return keys.concat(Reflect.ownKeys(t).filter((k) => indexOf(k, length) < 0));
    },
    set(t, p, value) {
      fillAll(t);
      return Reflect.set(t, p, value);
    },
    defineProperty(t, p, descriptor) {
      fillAll(t);
      return Reflect.defineProperty(t, p, descriptor);
    },
    deleteProperty(t, p) {
      fillAll(t);
      return Reflect.deleteProperty(t, p);
    },
    preventExtensions(t) {
      fillAll(t);
      return Reflect.preventExtensions(t);
    },
    setPrototypeOf(t, proto) {
      fillAll(t);
      return Reflect.setPrototypeOf(t, proto);
    },
  });
}
