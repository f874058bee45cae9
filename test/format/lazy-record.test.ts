/**
 * The read-through views that stand for large metadata and tensor lists (lib/format/lazy-record.ts) behave as the
 * plain objects and arrays they replace, through the public readers.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { inspect } from 'node:util';
import { loadTensors, readCheckpointInfo, saveTensors } from '../../lib/index';
import { LAZY_ARRAY_ITEMS, LAZY_RECORD_ENTRIES, lazyArray, lazyRecord, recordKeys } from '../../lib/format/lazy-record';

const N = LAZY_RECORD_ENTRIES + 10;

function plainMetadata(): Record<string, string> {
  const m: Record<string, string> = {};
  for (let i = 0; i < N; i++) m[`k${i}`] = `v${i}`;
  return m;
}

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ckpt-lazy-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('large metadata is a view that behaves as a plain record', () => {
  test('reads, enumeration, JSON, spreading and inspect match the saved record; our keys stay hidden', async () => {
    const file = path.join(dir, 'meta.safetensors');
    const metadata = { ...plainMetadata(), ['__proto__']: 'p', 'key with "quotes" é': 'x\ny' };
    Object.defineProperty(metadata, '__proto__', { value: 'p', enumerable: true, writable: true, configurable: true });
    await saveTensors(file, { t: { dtype: 'float32', shape: [1], data: new Float32Array([1]) } }, { metadata });
    const m = (await loadTensors(file)).metadata;
    expect(m.k0).toBe('v0');
    expect(m[`k${N - 1}`]).toBe(`v${N - 1}`);
    expect(m['key with "quotes" é']).toBe('x\ny');
    expect(Object.prototype.hasOwnProperty.call(m, '__proto__')).toBe(true);
    expect(m.missing).toBeUndefined();
    expect('k5' in m).toBe(true);
    expect('tfjs_checkpoint.header_crc32c' in m).toBe(false);
    expect(m['tfjs_checkpoint.tensor_crc32c']).toBeUndefined();
    expect(Object.keys(m)).toHaveLength(N + 2);
    expect(JSON.parse(JSON.stringify(m))).toEqual(JSON.parse(JSON.stringify(metadata)));
    expect({ ...m }).toEqual(metadata);
    expect(inspect(m, { maxArrayLength: 2, breakLength: Infinity })).toContain("k0: 'v0'");
    const info = await readCheckpointInfo(file);
    expect(Object.entries(info.metadata)).toEqual(Object.entries(m));
  });

  test('the first write copies the entries into the object: writes, deletes and freezing then act as on a plain record; recordKeys gives Object.keys before and after', () => {
    const keys = ['a', 'b', 'c'];
    const m = lazyRecord({
      count: 3,
      key: (j) => keys[j],
      value: (j) => keys[j].toUpperCase(),
      find: (k) => keys.indexOf(k),
    });
    expect(recordKeys(m)).toEqual(['a', 'b', 'c']); // read from the source
    m.d = 'D';
    expect(recordKeys(m)).toEqual(['a', 'b', 'c', 'd']); // a plain object now: Object.keys
    expect(recordKeys({ x: '1' })).toEqual(['x']);
    delete m.a;
    expect(m).toEqual({ b: 'B', c: 'C', d: 'D' });
    Object.freeze(m);
    expect(Object.isFrozen(m)).toBe(true);
    expect(() => {
      'use strict';
      m.b = 'x';
    }).toThrow(TypeError);
  });
});

describe('a long tensor list is a view that behaves as a plain array', () => {
  test('readCheckpointInfo of more than LAZY_ARRAY_ITEMS tensors: indexing, iteration, methods and JSON match', async () => {
    const file = path.join(dir, 'tensors.safetensors');
    const tensors: Record<string, { dtype: 'float32'; shape: number[]; data: Float32Array }> = {};
    const count = LAZY_ARRAY_ITEMS + 5;
    for (let i = 0; i < count; i++) tensors[`t${i}`] = { dtype: 'float32', shape: [1], data: new Float32Array([i]) };
    await saveTensors(file, tensors);
    const list = (await readCheckpointInfo(file)).tensors;
    expect(Array.isArray(list)).toBe(true);
    expect(list).toHaveLength(count);
    expect(list[0]).toMatchObject({ dtype: 'F32', shape: [1], byteLength: 4, crc32c: expect.any(Number) });
    expect(list[0]).toBe(list[0]); // built once, then kept
    const names = list.map((t) => t.name);
    expect(new Set(names)).toEqual(new Set(Object.keys(tensors)));
    expect([...list].map((t) => t.name)).toEqual(names);
    expect(JSON.parse(JSON.stringify(list))).toHaveLength(count);
    expect(list.reduce((n, t) => n + t.byteLength, 0)).toBe(4 * count);
  });

  test('writes to the array act as on a plain array; items keep their changes', () => {
    const a = lazyArray(3, (i) => ({ i }));
    a[1].i = 10;
    expect(a[1]).toEqual({ i: 10 });
    a.push({ i: 3 });
    expect(a).toEqual([{ i: 0 }, { i: 10 }, { i: 2 }, { i: 3 }]);
    a.length = 1;
    expect(a).toEqual([{ i: 0 }]);
    expect(inspect(lazyArray(2, (i) => i))).toBe('[ 0, 1 ]');
  });
});
