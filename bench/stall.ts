/**
 * Training-loop stall (benchmark section 4), run in a child: a small MLP trained with model.fit on the pure-JS
 * backend, with a CheckpointManager step in onEpochEnd saving every epoch (sync or async), or no checkpointing.
 * Records each epoch's wall time (epoch begin to next epoch begin, so the save in onEpochEnd counts) and how long
 * each `step()` kept the loop waiting.
 *
 * CheckpointManager is loaded at run time: the benchmark reports "not measured" when lib/checkpoint-manager.ts does
 * not exist in the build.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NamedTensors, saveTensors } from '../lib/tensors';
import type { Job, StallResult } from './jobs';

type StallJob = Extract<Job, { op: 'stall' }>;

interface ManagerLike {
  step(model: unknown, epoch: number, logs?: Record<string, number>): Promise<unknown>;
  close(): Promise<void>;
}
type ManagerCtor = new (args: Record<string, unknown>) => ManagerLike;

/** The CheckpointManager class of this build, or an Error saying why there is none. */
export function loadCheckpointManager(): ManagerCtor | Error {
  const file = path.join(__dirname, '..', 'lib', 'checkpoint-manager');
  try {
    const mod = require(file) as { CheckpointManager?: ManagerCtor };
    if (typeof mod.CheckpointManager !== 'function') return new Error(`${file} exports no CheckpointManager`);
    return mod.CheckpointManager;
  } catch (e) {
    return e as Error;
  }
}

export async function runStall(job: StallJob): Promise<StallResult> {
  const tf = require('@tensorflow/tfjs') as typeof import('@tensorflow/tfjs');
  await tf.setBackend('cpu');
  await tf.ready();
  let manager: ManagerLike | undefined;
  if (job.mode !== 'none') {
    const Ctor = loadCheckpointManager();
    if (Ctor instanceof Error) throw Ctor;
    manager = new Ctor({
      directory: job.dir,
      filename: 'model.safetensors',
      monitor: 'loss',
      mode: 'min',
      async: job.mode === 'async',
      saveBestOnly: false,
    });
  }

  const inputDim = 64;
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [inputDim], units: job.units, activation: 'relu' }),
      tf.layers.dense({ units: job.units, activation: 'relu' }),
      tf.layers.dense({ units: 10, activation: 'softmax' }),
    ],
  });
  model.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy' });
  const weightBytes = model.weights.reduce((a, w) => a + w.read().size * 4, 0);
  const xs = tf.randomNormal([job.samples, inputDim], 0, 1, 'float32', 1);
  const ys = tf.oneHot(tf.randomUniform([job.samples], 0, 10, 'int32', 2), 10).toFloat();

  const marks: number[] = [];
  const stallMs: number[] = [];
  const now = (): number => Number(process.hrtime.bigint()) / 1e6;
  class Recorder extends tf.Callback {
    override async onEpochBegin(): Promise<void> {
      marks.push(now());
    }
    override async onEpochEnd(epoch: number, logs?: Record<string, unknown>): Promise<void> {
      if (!manager) return;
      const plain: Record<string, number> = {};
      for (const [k, v] of Object.entries(logs ?? {})) {
        plain[k] = typeof v === 'number' ? v : ((await (v as import('@tensorflow/tfjs').Tensor).data())[0] ?? NaN);
      }
      const t0 = now();
      await manager.step(this.model, epoch, plain);
      stallMs.push(now() - t0);
    }
  }
  await model.fit(xs, ys, { epochs: job.epochs, batchSize: 64, verbose: 0, callbacks: [new Recorder()] });
  marks.push(now());
  const t0 = now();
  await manager?.close();
  const closeMs = now() - t0;
  const epochMs = marks.slice(1).map((m, i) => m - marks[i]);
  // References for what a step() costs at least: the snapshot alone, and a plain durable saveTensors of it.
  const snapshotMs: number[] = [];
  const saveMs: number[] = [];
  let fileBytes = 0;
  if (manager) {
    const { captureCheckpoint } = require(path.join(__dirname, '..', 'lib', 'model')) as {
      captureCheckpoint(m: unknown): Promise<{ tensors: NamedTensors; metadata: Record<string, string> }>;
    };
    for (let i = 0; i < 5; i++) {
      const s0 = now();
      const captured = await captureCheckpoint(model);
      snapshotMs.push(now() - s0);
      if (i >= 3) continue;
      const file = path.join(job.dir, 'reference.safetensors');
      const w0 = now();
      await saveTensors(file, captured.tensors, { metadata: captured.metadata });
      saveMs.push(now() - w0);
      fileBytes = fs.statSync(file).size;
    }
  }
  return { epochMs, stallMs, weightBytes, closeMs, snapshotMs, saveMs, fileBytes };
}
