/**
 * SnapshotCache: the host copies of tensor data that one CheckpointManager's snapshots took, kept to be reused by
 * the next snapshot while the tensor's data has not changed. On a backend whose reads copy (tfjs-node: every
 * `data()` copies the tensor out of TensorFlow into fresh memory, about 1.4 GB/s here, fault-bound), a snapshot of a
 * model with frozen layers (a fine-tuning run's embedding or backbone) would otherwise copy the same bytes at every
 * save; on the cpu backend the reads return the tensors' own arrays, so nothing is copied either way.
 *
 * Why reuse is sound: tfjs never changes the data behind a `dataId` (a variable's assign gives it a new dataId; a
 * clone or reshape shares the dataId with the same bytes), which is also what lets the cpu backend's snapshot be
 * the tensors' own arrays (capture.ts). An entry is keyed weakly by the dataId object, so it lives exactly as long as
 * the tensor data it copies: a trained weight's copy goes with its old value, a frozen weight's copy stays while the
 * model lives (host memory: the frozen weights' bytes, once). The arrays are shared between snapshots, so they are
 * never handed to user code (the public captureCheckpoint takes none): the writer only reads them.
 */
import type * as tf from '@tensorflow/tfjs';
import type { TensorArray } from '../io/tensors';

export class SnapshotCache {
  private readonly arrays = new WeakMap<object, TensorArray>();

  /** The array a previous snapshot took of `t`'s data, if its dataId, dtype and size still match. */
  get(t: tf.Tensor, dtype: string): TensorArray | undefined {
    const hit = this.arrays.get(t.dataId);
    if (hit === undefined || hit.length !== t.size || arrayDtype(hit) !== dtype) return undefined;
    return hit;
  }

  /** Remembers the array a snapshot took of `t`'s data. */
  set(t: tf.Tensor, data: TensorArray): void {
    this.arrays.set(t.dataId, data);
  }
}

function arrayDtype(a: TensorArray): string {
  return a instanceof Float32Array ? 'float32' : a instanceof Int32Array ? 'int32' : 'bool';
}
