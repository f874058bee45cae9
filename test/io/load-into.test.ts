/**
 * loadTensors(path, { into }): tensors read into the caller's arrays (LoadTensorsArgs.into), over both backends.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, NamedTensors, loadTensors, readCheckpointInfo, saveTensors } from '../../lib';
import { getBackend } from '../../lib/backend/select';
import { BACKENDS, rng, tempDir, useBackend } from '../helpers/backends';
import { rejectionOf } from '../helpers/errors';

/** Large enough (> 8 MiB in all) that the native reader checksums on its second thread while reading. */
const BIG = (9 << 20) / 4;

function sample(big = 16): NamedTensors {
  const r = rng(7);
  return {
    kernel: { dtype: 'float32', shape: [big], data: Float32Array.from({ length: big }, () => r() - 0.5) },
    step: { dtype: 'int32', shape: [], data: new Int32Array([-7]) },
    mask: { dtype: 'bool', shape: [4], data: new Uint8Array([1, 0, 0, 1]) },
    empty: { dtype: 'float32', shape: [0], data: new Float32Array(0) },
  };
}

const bytes = (a: ArrayBufferView): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe.each(BACKENDS)('loadTensors into given arrays (%s backend)', (name) => {
  useBackend(name);

  async function saved(tensors: NamedTensors): Promise<string> {
    const file = path.join(await tempDir(), 'a.safetensors');
    await saveTensors(file, tensors);
    return file;
  }

  test.each([
    ['small (checksummed inline)', 16],
    ['large (checksummed on a second thread natively)', BIG],
  ])(
    'a %s load into given arrays returns those very arrays holding the saved bytes, verified, twice in a row',
    async (_what, big) => {
      const tensors = sample(big);
      const file = await saved(tensors);
      // The kernel's destination is a view into a larger buffer (offset 8), filled with garbage first.
      const backing = new ArrayBuffer(8 + big * 4 + 8);
      const kernel = new Float32Array(backing, 8, big).fill(123);
      const into = { kernel, step: new Int32Array(1), mask: new Uint8Array(4), empty: new Float32Array(0) };
      for (let rep = 0; rep < 2; rep++) {
        const loaded = await loadTensors(file, { into });
        expect(loaded.verification).toBe('verified');
        for (const [n, t] of Object.entries(tensors)) {
          expect(loaded.tensors[n].data).toBe(into[n as keyof typeof into]);
          expect({ n, dtype: loaded.tensors[n].dtype, shape: loaded.tensors[n].shape }).toEqual({
            n,
            dtype: t.dtype,
            shape: t.shape,
          });
          expect(bytes(loaded.tensors[n].data).equals(bytes(t.data))).toBe(true);
        }
        expect(new Float32Array(backing, 0, 2)).toEqual(new Float32Array(2)); // bytes around the view untouched
        expect(new Float32Array(backing, 8 + big * 4, 2)).toEqual(new Float32Array(2));
        kernel.fill(-1);
      }
    },
  );

  test('tensors without a given array load into fresh buffers beside the given ones (a mix)', async () => {
    const tensors = sample(BIG);
    const file = await saved(tensors);
    const step = new Int32Array(1);
    const mask = Buffer.alloc(4); // a Buffer is a Uint8Array
    const loaded = await loadTensors(file, { into: { step, mask } });
    expect(loaded.tensors.step.data).toBe(step);
    expect(loaded.tensors.mask.data).toBe(mask);
    expect(Array.from(step)).toEqual([-7]);
    expect(Array.from(mask)).toEqual([1, 0, 0, 1]);
    const kernel = loaded.tensors.kernel.data;
    expect(kernel).toBeInstanceOf(Float32Array);
    expect(kernel.byteOffset).toBe(0);
    expect(kernel.buffer.byteLength).toBe(BIG * 4); // its own buffer, as without into
    expect(bytes(kernel).equals(bytes(tensors.kernel.data))).toBe(true);
    expect(loaded.tensors.empty.data).toEqual(new Float32Array(0));
  });

  test('small tensors read as one run are copied into their given arrays after their CRCs, and a flipped byte among them is caught', async () => {
    const tensors: NamedTensors = {};
    for (let i = 0; i < 20; i++) {
      tensors[`w${String(i).padStart(2, '0')}`] = { dtype: 'int32', shape: [3], data: new Int32Array([i, -i, 7 * i]) };
    }
    const file = await saved(tensors);
    const into = { w03: new Int32Array(3), w10: new Int32Array(3), w19: new Int32Array(3) };
    const loaded = await loadTensors(file, { into });
    for (const [n, t] of Object.entries(tensors)) {
      if (n in into) expect(loaded.tensors[n].data).toBe(into[n as keyof typeof into]);
      expect(Array.from(loaded.tensors[n].data as Int32Array)).toEqual(Array.from(t.data));
    }
    const info = await readCheckpointInfo(file);
    const index = info.tensors.findIndex((t) => t.name === 'w10');
    const fh = await fsp.open(file, 'r+');
    await fh.write(Buffer.from([0x55]), 0, 1, info.dataStart + 12 * index + 1);
    await fh.close();
    const err = await rejectionOf(loadTensors(file, { into }), ErrorCode.CHECKSUM);
    expect(err.tensor).toBe('w10');
  });

  test('a wrong kind of array, a wrong byte length, an unknown name or shared bytes are refused with codes before any data is read', async () => {
    const file = await saved(sample());
    const read = jest.spyOn(getBackend(), 'read');
    try {
      const wrongKind = await rejectionOf(
        loadTensors(file, { into: { kernel: new Int32Array(16) } }),
        ErrorCode.MISMATCH,
      );
      expect(wrongKind.tensor).toBe('kernel');
      expect(wrongKind.message).toMatch(/Int32Array.*F32.*Float32Array/);
      const wrongLength = await rejectionOf(
        loadTensors(file, { into: { kernel: new Float32Array(15) } }),
        ErrorCode.MISMATCH,
      );
      expect(wrongLength.message).toMatch(/60 bytes.*64/);
      const boolAsFloat = await rejectionOf(
        loadTensors(file, { into: { mask: new Float32Array(1) } }),
        ErrorCode.MISMATCH,
      );
      expect(boolAsFloat.tensor).toBe('mask');
      const unknown = await rejectionOf(
        loadTensors(file, { into: { kernel: new Float32Array(16), nope: new Float32Array(1) } }),
        ErrorCode.MISMATCH,
      );
      expect(unknown.tensor).toBe('nope');
      expect(unknown.message).toContain('"nope"');
      const shared = new ArrayBuffer(64);
      await rejectionOf(
        loadTensors(file, {
          into: { kernel: new Float32Array(shared, 0, 16), step: new Int32Array(shared, 60, 1) },
        }),
        ErrorCode.INVALID_ARGUMENT,
      );
      await rejectionOf(
        loadTensors(file, { into: { kernel: new DataView(shared) as never } }),
        ErrorCode.INVALID_ARGUMENT,
      );
      await rejectionOf(loadTensors(file, { into: [] as never }), ErrorCode.INVALID_ARGUMENT);
      await rejectionOf(
        loadTensors(file, { into: { kernel: new Float32Array(16) }, mmap: true }),
        ErrorCode.INVALID_ARGUMENT,
      );
      expect(read).not.toHaveBeenCalled();
    } finally {
      read.mockRestore();
    }
  });

  test('destinations side by side in one buffer load; two overlapping in one buffer are refused naming both, with views of other buffers between them by offset', async () => {
    const tensors = sample();
    const file = await saved(tensors);
    const backing = new ArrayBuffer(72);
    const adjacent = {
      kernel: new Float32Array(backing, 0, 16),
      step: new Int32Array(backing, 64, 1),
      mask: new Uint8Array(backing, 68, 4),
    };
    const loaded = await loadTensors(file, { into: adjacent });
    for (const n of ['kernel', 'step', 'mask'] as const) {
      expect(loaded.tensors[n].data).toBe(adjacent[n]);
      expect(bytes(adjacent[n]).equals(bytes(tensors[n].data))).toBe(true);
    }
    // kernel [0, 64) and mask [60, 64) of one buffer overlap; step, at offset 8 of another, sorts between them.
    const other = new ArrayBuffer(16);
    const err = await rejectionOf(
      loadTensors(file, {
        into: {
          kernel: new Float32Array(backing, 0, 16),
          step: new Int32Array(other, 8, 1),
          mask: new Uint8Array(backing, 60, 4),
        },
      }),
      ErrorCode.INVALID_ARGUMENT,
    );
    expect(err.message).toMatch(/options\.into\["kernel"\] and options\.into\["mask"\] share bytes/);
  });

  test('a flipped byte in a tensor with a given array, fresh or used before, fails with the usual checksum error naming it', async () => {
    const file = await saved(sample(BIG));
    const info = await readCheckpointInfo(file);
    const fh = await fsp.open(file, 'r+');
    const index = info.tensors.findIndex((t) => t.name === 'kernel');
    const before = info.tensors.slice(0, index).reduce((sum, t) => sum + t.byteLength, 0);
    const at = info.dataStart + before + (BIG * 4) / 2; // inside kernel
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0] ^= 0x10;
    await fh.write(b, 0, 1, at);
    await fh.close();
    // A fresh array (its pages not yet mapped: pre-faulted natively), and one used before (every page written, so
    // resident: natively its pre-faulting is skipped): both reads are checked, the flip caught in either.
    for (const kernel of [new Float32Array(BIG), new Float32Array(BIG).fill(5)]) {
      const err = await rejectionOf(
        loadTensors(file, { into: { kernel, step: new Int32Array(1) } }),
        ErrorCode.CHECKSUM,
      );
      expect(err.tensor).toBe('kernel');
      expect(err.expectedCrc).toBe(info.tensors[index].crc32c);
    }
  });

  test('a bool byte other than 0 or 1 read into a given array fails as corrupt, with verify: false too', async () => {
    const file = await saved(sample());
    const info = await readCheckpointInfo(file);
    const mask = info.tensors.find((t) => t.name === 'mask');
    const offset = info.tensors.slice(0, info.tensors.indexOf(mask!)).reduce((s, t) => s + t.byteLength, 0);
    const fh = await fsp.open(file, 'r+');
    await fh.write(Buffer.from([2]), 0, 1, info.dataStart + offset);
    await fh.close();
    const err = await rejectionOf(
      loadTensors(file, { verify: false, into: { mask: new Uint8Array(4) } }),
      ErrorCode.CORRUPT,
    );
    expect(err.tensor).toBe('mask');
  });

  test('a shard set with into is refused with a code before any data is read', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'm.safetensors');
    await saveTensors(file, sample(), { maxShardSize: 64 });
    const read = jest.spyOn(getBackend(), 'read');
    try {
      await rejectionOf(loadTensors(file, { into: { step: new Int32Array(1) } }), ErrorCode.INVALID_ARGUMENT);
      expect(read).not.toHaveBeenCalled();
    } finally {
      read.mockRestore();
    }
  });
});

test('loadTensors refuses into for an s3:// location with ERR_CHECKPOINT_UNSUPPORTED_SCHEME before any request', async () => {
  const err = await rejectionOf(
    loadTensors('s3://bucket/a.safetensors', { into: { step: new Int32Array(1) } }),
    ErrorCode.UNSUPPORTED_SCHEME,
  );
  expect(err.message).toContain('s3://bucket/a.safetensors');
});
