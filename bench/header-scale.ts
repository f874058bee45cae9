/**
 * What valid files with many header entries cost to read (issue 14: no file with at most 100 MB of header should
 * cost more than ~1 s and ~3x its header size in memory). Each file is written with the library itself
 * (saveTensors / saveCheckpoint), then each reader runs in a fresh process, which reports its wall time, the peak
 * growth of its resident set over a baseline taken after everything the read uses was loaded (VmHWM, reset by
 * /proc/self/clear_refs: exact even while a parser runs without yielding) and the heap its result keeps alive, all
 * measured by bench/read-cost.ts (shared with the hostile-header child of the format tests).
 *
 *   node -r ./test/fixtures/worker-register.js bench/header-scale.ts [--cases a,b] [--ops a,b] [--backends native,js]
 *
 * Cases: keys-200k (200k metadata keys, one tensor), tensors-200k (200k one-element F32 tensors), string-50MB (one
 * metadata value of 50 MB), and the model-* twins (a small model saved by saveCheckpoint with that metadata) for
 * loadModel. Ops: load (loadTensors), verify (verifyCheckpoint), info (readCheckpointInfo), inspect (the CLI's
 * `inspect`, output counted, not kept), model (loadModel, model-* cases only). Linux only (VmHWM).
 * The same child serves the memory-bound test (test/format/many-entries.test.ts).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { type ReadCost, inspectCounted, measureRead } from './read-cost';

export const CASES = ['keys-200k', 'tensors-200k', 'string-50MB', 'model-keys-200k', 'model-string-50MB'] as const;
export const OPS = ['load', 'verify', 'info', 'inspect', 'model'] as const;
export type Case = (typeof CASES)[number];
export type Op = (typeof OPS)[number];

/** The metadata of a case (before the library's own keys). */
function metadataOf(c: Case): Record<string, string> {
  if (c.endsWith('string-50MB')) return { note: 'x'.repeat(50_000_000) };
  const m: Record<string, string> = {};
  for (let i = 0; i < 200_000; i++) m[`k${i}`] = `v${i}`;
  return m;
}

async function make(c: Case, file: string): Promise<void> {
  const lib = await import('../lib/index');
  if (c.startsWith('model-')) {
    const tf = await import('@tensorflow/tfjs');
    const model = tf.sequential({ layers: [tf.layers.dense({ units: 2, inputShape: [3] })] });
    model.compile({ optimizer: 'adam', loss: 'meanSquaredError' });
    await lib.saveCheckpoint(model, file, { metadata: metadataOf(c), durable: false });
    return;
  }
  const tensors: Record<string, { dtype: 'float32'; shape: number[]; data: Float32Array }> = {};
  const count = c === 'tensors-200k' ? 200_000 : 1;
  for (let i = 0; i < count; i++) tensors[`t${i}`] = { dtype: 'float32', shape: [1], data: new Float32Array([i]) };
  await lib.saveTensors(file, tensors, { metadata: c === 'tensors-200k' ? {} : metadataOf(c), durable: false });
}

/** One measured read in this process; prints its figures as JSON. */
async function read(op: Op, file: string, backend: string): Promise<void> {
  const lib = await import('../lib/index');
  lib.setBackend(backend as 'native' | 'js');
  const { inspectCommand } = await import('../lib/cli/commands/inspect');
  if (op === 'model') await import('@tensorflow/tfjs');
  const fd = fs.openSync(file, 'r');
  const prefix = Buffer.alloc(8);
  fs.readSync(fd, prefix, 0, 8, 0);
  fs.closeSync(fd);
  const headerBytes = Number(prefix.readBigUInt64LE(0));
  const cost = await measureRead(async () => {
    if (op === 'load') return lib.loadTensors(file);
    if (op === 'verify') return lib.verifyCheckpoint(file);
    if (op === 'info') return lib.readCheckpointInfo(file);
    if (op === 'model') return lib.loadModel(file);
    return inspectCounted(inspectCommand, file);
  });
  process.stdout.write(JSON.stringify({ ...cost, headerBytes }));
}

/** What a `read` child prints: its ReadCost and the size of the file's header. */
export interface Measured extends ReadCost {
  headerBytes: number;
}

const REGISTER = path.join(__dirname, '..', 'test', 'fixtures', 'worker-register.js');

/** Runs this script in a child: `make` (uncapped) or a measured `read` (with `flags`, e.g. a heap cap). */
export function runChild(args: string[], flags: string[] = []): string {
  return execFileSync(process.execPath, [...flags, '-r', REGISTER, __filename, ...args], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
}

function opsOf(c: Case, ops: readonly Op[]): Op[] {
  return ops.filter((o) => (o === 'model') === c.startsWith('model-') || (o === 'inspect' && c.startsWith('model-')));
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === 'make') return make(argv[1] as Case, argv[2]);
  if (argv[0] === 'read') return read(argv[1] as Op, argv[2], argv[3]);
  const flag = (name: string, all: readonly string[]) => {
    const i = argv.indexOf(`--${name}`);
    return i < 0 ? all : argv[i + 1].split(',');
  };
  const cases = flag('cases', CASES) as Case[];
  const ops = flag('ops', OPS) as Op[];
  const backends = flag('backends', ['native', 'js']);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'header-scale-'));
  console.log('| case (header) | op | backend | outcome | time | peak RSS growth | x header | retained heap |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
  try {
    for (const c of cases) {
      const file = path.join(dir, `${c}.safetensors`);
      runChild(['make', c, file]);
      for (const op of opsOf(c, ops)) {
        for (const b of backends) {
          const r = JSON.parse(runChild(['read', op, file, b], ['--expose-gc'])) as Measured;
          const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
          console.log(
            `| ${c} (${mb(r.headerBytes)}) | ${op} | ${b} | ${r.outcome} | ${(r.ms / 1000).toFixed(2)} s | ` +
              `+${mb(r.grownBytes)} | ${(r.grownBytes / r.headerBytes).toFixed(1)}x | ${mb(r.retainedHeap)} |`,
          );
        }
      }
      fs.rmSync(file, { force: true });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) void main();
