/**
 * One benchmark job in a fresh process (forked by main.ts with the job as JSON in argv[2]): the weights are allocated
 * and touched first, the peak RSS is reset, then only the measured operation runs. The result goes back over IPC.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { crc32c as jsCrc32c } from '../lib/format/crc32c';
import { loadNativeBackend } from '../lib/backend/native-backend';
import { setBackend } from '../lib/backend/select';
import { LoadedArray, ST_ARRAYS } from '../lib/format/dtype-convert';
import { NamedTensors, loadTensors, readCheckpointInfo, saveTensors } from '../lib/io/tensors';
import type {
  ChildReply,
  CrcImpl,
  CrcResult,
  Job,
  NodeLoadContender,
  NodeSaveContender,
  OpResult,
  RoundtripResult,
} from './jobs';
import { Layout, allocate, fillTensor, makeLayout } from './layout';
import { memoryStatus, resetPeak } from './memory';
import { runStall } from './stall';
import { loadShardSet } from '../lib/io/shards';
import { createTfjsModelFiles, prepareFileSave, prepareTfioLoad, tfioRoundtrip } from './tfjs-io';
import { s3Create, s3Load, s3Save } from './s3-child';

function named(layout: Layout, arrays: Float32Array[]): NamedTensors {
  const out: NamedTensors = {};
  layout.tensors.forEach((t, i) => (out[t.name] = { dtype: 'float32', shape: t.shape, data: arrays[i] }));
  return out;
}

/** Runs `op` between a peak reset and a peak reading. `excludeKiB` is subtracted from the peak (bytes loaded). */
async function measure(op: () => Promise<unknown>, excludeKiB = 0): Promise<OpResult> {
  const canReset = resetPeak();
  const base = memoryStatus().rssKiB;
  const t0 = process.hrtime.bigint();
  await op();
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const peak = memoryStatus().hwmKiB;
  return { ms, baseRssKiB: base, ...(canReset ? { peakExtraKiB: Math.max(0, peak - base - excludeKiB) } : {}) };
}

function concatenate(arrays: Float32Array[]): Uint8Array {
  const total = arrays.reduce((a, b) => a + b.byteLength, 0);
  const out = new Uint8Array(total);
  let off = 0;
  for (const a of arrays) {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), off);
    off += a.byteLength;
  }
  return out;
}

async function save(contender: NodeSaveContender, bytes: number, dir: string): Promise<OpResult> {
  const layout = makeLayout(bytes);
  const arrays = allocate(layout);
  switch (contender) {
    case 'native-durable':
    case 'native-fast':
    case 'js-durable': {
      setBackend(contender === 'js-durable' ? 'js' : 'native');
      const tensors = named(layout, arrays);
      const durable = contender !== 'native-fast';
      return measure(() => saveTensors(path.join(dir, 'model.safetensors'), tensors, { durable }));
    }
    case 'tfjs-node':
      // What `model.save('file://dir')` does under tfjs-node (bench/tfjs-io.ts): the weights are in TensorFlow
      // before the clock starts; encodeWeights (a copy out of TensorFlow, then one concatenation) and the handler's
      // writeFile of model.json and weights.bin are timed. No fsync.
      return measure(await prepareFileSave(layout, arrays, dir));
    case 'writefile': {
      // The bytes are concatenated before the measurement (not timed, not counted): this row is the cost of
      // fs.promises.writeFile itself.
      const all = concatenate(arrays);
      arrays.length = 0;
      return measure(() => fsp.writeFile(path.join(dir, 'weights.bin'), all));
    }
  }
}

async function load(contender: NodeLoadContender, bytes: number, file: string): Promise<OpResult> {
  const excludeKiB = bytes / 1024;
  switch (contender) {
    case 'tfjs-node-load':
    case 'tfjs-node-st-load': {
      // tf.loadLayersModel on tfjs-node (bench/tfjs-io.ts); `file` is model.json, or the safetensors:// file.
      const { op, loaded } = await prepareTfioLoad(contender === 'tfjs-node-load' ? 'file' : 'safetensors', file);
      const r = await measure(op, excludeKiB);
      if (!loaded()) throw new Error('nothing loaded');
      return r;
    }
    case 'native-verify':
    case 'native-mmap':
    case 'js-verify': {
      setBackend(contender === 'js-verify' ? 'js' : 'native');
      const mmap = contender === 'native-mmap'; // every page is read by the CRCs: nothing is left to fault in later
      let keep: unknown;
      const r = await measure(async () => {
        keep = await loadTensors(file, { mmap });
      }, excludeKiB);
      if (!keep) throw new Error('nothing loaded');
      return r;
    }
    case 'native-into': {
      // loadTensors({ into }) into destinations allocated and touched (every page written) before the clock starts,
      // as a training job reloading into the same arrays finds them: the load itself faults no fresh page. The
      // destinations are in the base RSS, not the peak extra.
      setBackend('native');
      const info = await readCheckpointInfo(file);
      const into: Record<string, LoadedArray> = {};
      for (const t of info.tensors) {
        const buffer = new ArrayBuffer(t.byteLength);
        const buf = new Uint8Array(buffer);
        for (let off = 0; off < buf.length; off += 4096) buf[off] = 1;
        into[t.name] = new ST_ARRAYS[t.dtype](buffer);
      }
      let keep: unknown;
      const r = await measure(async () => {
        keep = await loadTensors(file, { into });
      }, excludeKiB);
      if (!keep) throw new Error('nothing loaded');
      return r;
    }
    case 'alloc-touch': {
      // No I/O: what the destination buffers alone cost (page faults and the kernel zeroing each page).
      const info = await readCheckpointInfo(file);
      const buffers: Uint8Array[] = [];
      return measure(async () => {
        for (const t of info.tensors) {
          const buf = new Uint8Array(new ArrayBuffer(t.byteLength));
          for (let off = 0; off < buf.length; off += 4096) buf[off] = 1;
          buffers.push(buf);
        }
      }, excludeKiB);
    }
    case 'raw-read': {
      // The same destination buffers (one ArrayBuffer per tensor), no checks: the header is parsed beforehand.
      const info = await readCheckpointInfo(file);
      const buffers: ArrayBuffer[] = [];
      return measure(async () => {
        const fh = await fsp.open(file, 'r');
        try {
          let pos = info.dataStart;
          for (const t of info.tensors) {
            const buf = new Uint8Array(new ArrayBuffer(t.byteLength));
            for (let off = 0; off < buf.length;) {
              const { bytesRead } = await fh.read(buf, off, Math.min(buf.length - off, 1 << 30), pos + off);
              if (bytesRead === 0) throw new Error('unexpected end of file');
              off += bytesRead;
            }
            pos += t.byteLength;
            buffers.push(buf.buffer as ArrayBuffer);
          }
        } finally {
          await fh.close();
        }
      }, excludeKiB);
    }
  }
}

async function create(bytes: number, file: string): Promise<void> {
  setBackend('native');
  const layout = makeLayout(bytes);
  await saveTensors(file, named(layout, allocate(layout)));
}

/** Loads (verified) and compares every byte with the regenerated weights, one tensor at a time. */
async function roundtrip(backend: 'native' | 'js', bytes: number, file: string): Promise<RoundtripResult> {
  setBackend(backend);
  const layout = makeLayout(bytes);
  const { tensors } = await loadTensors(file);
  const names = Object.keys(tensors);
  if (names.length !== layout.tensors.length) {
    return { ok: false, detail: `${names.length} tensors loaded, ${layout.tensors.length} saved` };
  }
  let largest = 0;
  for (let i = 0; i < layout.tensors.length; i++) {
    const spec = layout.tensors[i];
    const got = tensors[spec.name];
    if (!got || got.shape.join() !== spec.shape.join()) return { ok: false, detail: `tensor ${spec.name} differs` };
    const expected = new Float32Array(spec.size);
    fillTensor(expected, i);
    const a = Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength);
    if (!a.equals(Buffer.from(expected.buffer))) return { ok: false, detail: `tensor ${spec.name}: bytes differ` };
    largest = Math.max(largest, spec.size * 4);
    delete tensors[spec.name];
  }
  const size = (await readCheckpointInfo(file)).fileSize; // a file or an s3:// object
  return {
    ok: true,
    detail: `${layout.tensors.length} tensors, file ${size} bytes, largest tensor ${largest} bytes, all bytes equal`,
  };
}

function crc(bytes: number, reps: number): CrcResult {
  const loaded = loadNativeBackend();
  if ('error' in loaded) throw loaded.error;
  const native = loaded.backend;
  const data = new Uint8Array(bytes);
  const f = new Float32Array(data.buffer);
  fillTensor(f, 0);
  const copy = Buffer.from(data);
  const view = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const block = data.subarray(0, 256 << 10);
  const impls: Record<CrcImpl, () => number> = {
    hardware: () => native.crc32c(data),
    hardwareCached: () => {
      let c = 0;
      for (let off = 0; off < bytes; off += block.length) c = native.crc32c(block, c);
      return c;
    },
    portable: () => native.crc32cPortable(data),
    js: () => jsCrc32c(data),
    memread: () => view.compare(copy),
  };
  const ms = { hardware: [], hardwareCached: [], portable: [], js: [], memread: [] } as CrcResult['ms'];
  const values = new Set<number>();
  for (let r = 0; r < reps; r++) {
    for (const name of Object.keys(impls) as CrcImpl[]) {
      const t0 = process.hrtime.bigint();
      const v = impls[name]();
      ms[name].push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (name === 'hardware' || name === 'portable' || name === 'js') values.add(v);
    }
  }
  return { ms, hardware: native.crc32cHardware, agree: values.size === 1 };
}

async function run(job: Job): Promise<unknown> {
  switch (job.op) {
    case 'save':
      return save(job.contender, job.bytes, job.dir);
    case 'create':
      return create(job.bytes, job.file);
    case 'load':
      return load(job.contender, job.bytes, job.file);
    case 'roundtrip':
      return roundtrip(job.backend, job.bytes, job.file);
    case 'create-tfjs':
      return createTfjsModelFiles(job.bytes, job.dir);
    case 'tfio-roundtrip':
      return tfioRoundtrip(job.route, job.bytes, job.file);
    case 'crc':
      return crc(job.bytes, job.reps);
    case 's3-save':
      return s3Save(job.contender, makeLayout(job.bytes), job.url, measure, named);
    case 's3-load':
      return s3Load(job.contender, job.bytes, job.url, measure);
    case 's3-create':
      return s3Create(makeLayout(job.bytes), job.url, named);
    case 's3-roundtrip':
      return roundtrip(job.backend, job.bytes, job.url);
    case 'stall':
      return runStall(job);
    case 'shard-save': {
      setBackend('native');
      const layout = makeLayout(job.bytes);
      const tensors = named(layout, allocate(layout));
      const sharding = job.maxShardSize === null ? {} : { maxShardSize: job.maxShardSize };
      return measure(() =>
        saveTensors(path.join(job.dir, 'model.safetensors'), tensors, {
          ...sharding,
          shardConcurrency: job.concurrency,
        }),
      );
    }
    case 'shard-load': {
      setBackend('native');
      let keep: unknown;
      const set = job.target.endsWith('.index.json');
      const r = await measure(async () => {
        keep = set ? await loadShardSet(job.target, true, job.concurrency) : await loadTensors(job.target);
      }, job.bytes / 1024);
      if (!keep) throw new Error('nothing loaded');
      return r;
    }
  }
}

function reply(message: ChildReply): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) {
      process.stdout.write(JSON.stringify(message) + '\n');
      resolve();
      return;
    }
    process.send(message, () => resolve());
  });
}

run(JSON.parse(process.argv[2]) as Job).then(
  async (result) => {
    await reply({ ok: true, result });
    process.exit(0);
  },
  async (err: unknown) => {
    const e = err as Error;
    await reply({ ok: false, error: `${e?.name ?? 'Error'}: ${e?.message ?? String(err)}` });
    process.exit(1);
  },
);
