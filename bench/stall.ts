/**
 * Training-loop stall (benchmark section 4), run in a child on the pure-JS backend, or on tfjs-node's tensorflow
 * backend (where a snapshot copies every tensor out of TensorFlow: what that costs is the point of that run). The model is a small trainable
 * head on a large frozen embedding (a fine-tuning set-up: cheap to train, big to save), trained with Adam; a
 * CheckpointManager step at each epoch's end saves every epoch (sync or async), or nothing is saved.
 *
 * Two loops: `fit` is model.fit with the step in a callback's onEpochEnd (tfjs does not yield to the event loop
 * there: callback instances turn its yielding off); `custom` is a hand-written loop of trainOnBatch that never
 * yields to the event loop (only awaits). Records each epoch's wall time (epoch start to the next epoch's start, so
 * the save counts), how long each `step()` kept the loop waiting (wall and JS-thread CPU), and each save's time from
 * step() to the end of its commit plan as the plan's executor timed it (CommitResult.finishedAt).
 *
 * CheckpointManager is loaded at run time: the benchmark reports "not measured" when the build has none.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NamedTensors, saveTensors } from '../lib/io/tensors';
import type { CommitQueue } from '../lib/backend/backend';
import type { Job, StallResult } from './jobs';

type StallJob = Extract<Job, { op: 'stall' }>;

/**
 * CPU time the calling thread has run so far, ms: /proc/thread-self/schedstat (Linux, nanoseconds, this thread
 * only), else process.cpuUsage() (every thread of the process: native writer threads count too). On a loaded
 * machine wall time includes waiting for a core; this does not, so it is the stable measure of what a save costs
 * the JS thread.
 */
export function threadCpuMs(): { ms: number; source: 'thread' | 'process' } {
  try {
    const ns = Number(fs.readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);
    if (Number.isFinite(ns)) return { ms: ns / 1e6, source: 'thread' };
  } catch {
    // not Linux, or no schedstat: fall through
  }
  const u = process.cpuUsage();
  return { ms: (u.user + u.system) / 1000, source: 'process' };
}

interface ManagerLike {
  step(model: unknown, epoch: number, logs?: Record<string, number>): Promise<unknown>;
  close(): Promise<void>;
}
type ManagerCtor = new (args: Record<string, unknown>) => ManagerLike;

/** The CheckpointManager class of this build, or an Error saying why there is none. */
export function loadCheckpointManager(): ManagerCtor | Error {
  const file = path.join(__dirname, '..', 'lib', 'manager', 'checkpoint-manager');
  try {
    const mod = require(file) as { CheckpointManager?: ManagerCtor };
    if (typeof mod.CheckpointManager !== 'function') return new Error(`${file} exports no CheckpointManager`);
    return mod.CheckpointManager;
  } catch (e) {
    return e as Error;
  }
}

/** Why @tensorflow/tfjs-node does not load here (scripts/tfjs-node-probe.js), or undefined when it does. */
export function tfjsNodeLoadError(): string | undefined {
  // Run from dist/bench/: the probe is a plain script of the checkout.
  const probe = require(path.join(__dirname, '..', '..', 'scripts', 'tfjs-node-probe.js')) as {
    tfjsNodeLoadError(): string | undefined;
  };
  return probe.tfjsNodeLoadError();
}

/** The model and data of the stall benchmark (also described in the report). */
export const STALL_MODEL = {
  vocab: 100_000,
  dim: 64,
  tokens: 8,
  hidden: 256,
  classes: 10,
  batchSize: 32,
};

export async function runStall(job: StallJob): Promise<StallResult> {
  if (job.platform === 'tfjs-node') {
    process.env.TF_CPP_MIN_LOG_LEVEL ??= '2';
    require('@tensorflow/tfjs-node'); // registers the tensorflow backend on the @tensorflow/tfjs required below
  }
  const tf = require('@tensorflow/tfjs') as typeof import('@tensorflow/tfjs');
  const want = job.platform === 'tfjs-node' ? 'tensorflow' : 'cpu';
  await tf.setBackend(want);
  await tf.ready();
  if (tf.getBackend() !== want) throw new Error(`the ${want} backend did not start (got ${tf.getBackend()})`);
  let manager: ManagerLike | undefined;
  // When each save's commit plan finished (CommitResult.finishedAt), in submission order: the backend's queues are
  // wrapped before the manager opens one.
  const finishedAt: number[] = [];
  const stepSnapshotMs: number[] = [];
  if (job.mode !== 'none') {
    const { getBackend } = require(path.join(__dirname, '..', 'lib', 'backend', 'select')) as {
      getBackend(): import('../lib/backend/backend').Backend;
    };
    const backend = getBackend();
    const open = backend.openCommitQueue.bind(backend);
    (backend as { openCommitQueue: () => CommitQueue }).openCommitQueue = () => {
      const real = open();
      return {
        commit: (plan) =>
          real.commit(plan).then((r) => {
            finishedAt.push(r.finishedAt);
            return r;
          }),
        reset: () => real.reset(),
        close: () => real.close(),
        get unfinished() {
          return real.unfinished;
        },
      };
    };
    // The manager's own snapshot inside step(): the manager calls capture.ts's export, so wrapping it times each one.
    const capture = require(path.join(__dirname, '..', 'lib', 'model', 'capture')) as Record<string, unknown>;
    const inner = capture.captureReusing;
    if (typeof inner === 'function') {
      capture.captureReusing = async (...args: unknown[]): Promise<unknown> => {
        const s0 = now();
        try {
          return await (inner as (...a: unknown[]) => Promise<unknown>)(...args);
        } finally {
          stepSnapshotMs.push(now() - s0);
        }
      };
    }
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

  const m = STALL_MODEL;
  const model = tf.sequential({
    layers: [
      tf.layers.embedding({ inputDim: m.vocab, outputDim: m.dim, inputLength: m.tokens, trainable: false }),
      tf.layers.flatten(),
      tf.layers.dense({ units: m.hidden, activation: 'relu' }),
      tf.layers.dense({ units: m.classes, activation: 'softmax' }),
    ],
  });
  model.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy' });
  const weightBytes = model.weights.reduce((a, w) => a + w.read().size * 4, 0);
  const xs = tf.randomUniform([job.samples, m.tokens], 0, m.vocab, 'int32', 1);
  const ys = tf.oneHot(tf.randomUniform([job.samples], 0, m.classes, 'int32', 2), m.classes).toFloat();

  const marks: number[] = [];
  const cpuMarks: number[] = [];
  const stallMs: number[] = [];
  const stallCpuMs: number[] = [];
  const cpuSource = threadCpuMs().source;
  const mark = (): void => {
    marks.push(now());
    cpuMarks.push(threadCpuMs().ms);
  };
  const now = (): number => Number(process.hrtime.bigint()) / 1e6;
  // Per save: whether the previous save's write was still in flight when step() was called, and how long each
  // write took from step() returning to its `durable` promise settling (the background part).
  const writeMs: number[] = [];
  let inFlightAtStep = 0;
  let previousSettled = true;
  const stepAt: number[] = [];
  const save = async (epoch: number, loss: number): Promise<void> => {
    if (!manager) return;
    if (!previousSettled) inFlightAtStep++;
    const c0 = threadCpuMs().ms;
    const t0 = now();
    stepAt.push(t0);
    const result = (await manager.step(model, epoch, { loss })) as { durable?: Promise<void> } | null;
    const t1 = now();
    stallCpuMs.push(threadCpuMs().ms - c0);
    stallMs.push(t1 - t0);
    if (result?.durable) {
      previousSettled = false;
      result.durable.then(
        () => {
          previousSettled = true;
          writeMs.push(now() - t1);
        },
        () => (previousSettled = true),
      );
    }
  };

  if (job.loop === 'fit') {
    class Recorder extends tf.Callback {
      override async onEpochBegin(): Promise<void> {
        mark();
      }
      override async onEpochEnd(epoch: number, logs?: Record<string, unknown>): Promise<void> {
        const v = logs?.loss;
        const loss = typeof v === 'number' ? v : ((await (v as import('@tensorflow/tfjs').Tensor).data())[0] ?? NaN);
        await save(epoch, loss);
      }
    }
    await model.fit(xs, ys, { epochs: job.epochs, batchSize: m.batchSize, verbose: 0, callbacks: [new Recorder()] });
  } else {
    const batches = Math.ceil(job.samples / m.batchSize);
    for (let epoch = 0; epoch < job.epochs; epoch++) {
      mark();
      let loss = 0;
      for (let b = 0; b < batches; b++) {
        const [x, y] = tf.tidy(() => [
          xs.slice([b * m.batchSize, 0], [Math.min(m.batchSize, job.samples - b * m.batchSize), m.tokens]),
          ys.slice([b * m.batchSize, 0], [Math.min(m.batchSize, job.samples - b * m.batchSize), m.classes]),
        ]);
        loss = (await model.trainOnBatch(x, y)) as number;
        tf.dispose([x, y]); // and on to the next batch: no yield to the event loop
      }
      await save(epoch, loss);
    }
  }
  mark();
  const t0 = now();
  await manager?.close();
  const closeMs = now() - t0;
  // One plan per save (saveLast links within it): pairs the step() calls with their plans' ends.
  const durableMs = finishedAt.length === stepAt.length ? finishedAt.map((f, i) => f - stepAt[i]) : [];
  const epochMs = marks.slice(1).map((mk, i) => mk - marks[i]);
  const epochCpuMs = cpuMarks.slice(1).map((mk, i) => mk - cpuMarks[i]);
  // References for what a step() costs at least: the snapshot alone, and a plain durable saveTensors of it.
  const snapshotMs: number[] = [];
  const saveMs: number[] = [];
  let fileBytes = 0;
  if (manager) {
    const { captureCheckpoint } = require(path.join(__dirname, '..', 'lib', 'model', 'save-restore')) as {
      captureCheckpoint(mdl: unknown): Promise<{ tensors: NamedTensors; metadata: Record<string, string> }>;
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
  return {
    epochMs,
    epochCpuMs,
    stallMs,
    stallCpuMs,
    cpuSource,
    weightBytes,
    closeMs,
    snapshotMs,
    stepSnapshotMs,
    saveMs,
    fileBytes,
    writeMs,
    inFlightAtStep,
    durableMs,
  };
}
