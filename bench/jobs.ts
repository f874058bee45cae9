/** The messages between the benchmark driver (main.ts) and its one-job child processes (child.ts). */

/** Save contenders that run inside a Node child (dd and torch run as their own processes). */
export type NodeSaveContender = 'native-durable' | 'native-fast' | 'js-durable' | 'tfjs-node' | 'writefile';
/**
 * Load contenders that run inside a Node child. `tfjs-node-load` and `tfjs-node-st-load`: tf.loadLayersModel on
 * tfjs-node's tensorflow backend, of `file://…/model.json` (tfjs-node's own handler) and of `safetensors://…`.
 */
export type NodeLoadContender =
  | 'native-verify'
  | 'native-mmap'
  | 'native-into'
  | 'js-verify'
  | 'raw-read'
  | 'alloc-touch'
  | 'tfjs-node-load'
  | 'tfjs-node-st-load';

/** Object-storage contenders (bench/s3.ts, run by bench/s3-child.ts against the local Ceph gateway). */
export type S3SaveContender = 's3-native' | 's3-js' | 's3-upload';
export type S3LoadContender = 's3-native-verify' | 's3-js-verify' | 's3-get' | 's3-get-ranged';

export type Job =
  | { op: 'save'; contender: NodeSaveContender; bytes: number; dir: string }
  | { op: 'create'; bytes: number; file: string }
  | { op: 'load'; contender: NodeLoadContender; bytes: number; file: string }
  | { op: 'roundtrip'; backend: 'native' | 'js'; bytes: number; file: string }
  /** The two models the tf.loadLayersModel rows read, written into dir (bench/tfjs-io.ts, tfjsModelFiles). */
  | { op: 'create-tfjs'; bytes: number; dir: string }
  /** tf.loadLayersModel of a route's file, every weight compared with the regenerated layout. */
  | { op: 'tfio-roundtrip'; route: 'file' | 'safetensors'; bytes: number; file: string }
  | { op: 'crc'; bytes: number; reps: number }
  /** One save to an s3:// URL (the gateway's address and keys in the environment the child inherits). */
  | { op: 's3-save'; contender: S3SaveContender; bytes: number; url: string }
  /** One load of the object s3-create wrote. */
  | { op: 's3-load'; contender: S3LoadContender; bytes: number; url: string }
  /** saveTensors of the layout to `url` (native backend, untimed): the object the loads read. */
  | { op: 's3-create'; bytes: number; url: string }
  /** loadTensors of `url` (verified, `backend`), every byte compared with the regenerated layout. */
  | { op: 's3-roundtrip'; backend: 'native' | 'js'; bytes: number; url: string }
  /** saveTensors of a state dict to dir/model.safetensors (durable), as one file (maxShardSize null) or a set. */
  | { op: 'shard-save'; bytes: number; dir: string; maxShardSize: number | null; concurrency: number }
  /** loadTensors of what shard-save wrote (verified); a set's shards read `concurrency` at a time. */
  | { op: 'shard-load'; bytes: number; target: string; concurrency: number }
  | {
      op: 'stall';
      mode: 'none' | 'sync' | 'async';
      loop: 'fit' | 'custom';
      /** `tfjs`: the pure-JS cpu backend; `tfjs-node`: its tensorflow backend, where data() copies out of TF. */
      platform: 'tfjs' | 'tfjs-node';
      dir: string;
      epochs: number;
      samples: number;
    };

export interface OpResult {
  /** Wall time of the measured operation. */
  ms: number;
  /** Peak RSS during the operation minus RSS just before it (weights allocated), KiB; for loads minus the bytes
   * loaded as well. Undefined when the peak could not be reset. */
  peakExtraKiB?: number;
  /** RSS before the operation, KiB. */
  baseRssKiB: number;
}

export type CrcImpl = 'hardware' | 'hardwareCached' | 'portable' | 'js' | 'memread';

export interface CrcResult {
  /**
   * Per implementation, the time of each repetition (ms) over the whole buffer. `hardwareCached` hashes a 256 KiB
   * block (cache-resident) as many times as it takes to cover the same bytes; `memread` is the time of a memcmp of
   * the buffer with a copy of it (reads twice the bytes): the memory read bandwidth that bounds a CRC from DRAM.
   */
  ms: Record<CrcImpl, number[]>;
  hardware: boolean;
  agree: boolean;
}

export interface RoundtripResult {
  ok: boolean;
  detail: string;
}

export interface StallResult {
  /** Time each epoch took (ms), in order. */
  epochMs: number[];
  /** Per epoch: CPU time of the JS thread over the same span (ms; see `cpuSource`). */
  epochCpuMs: number[];
  /** Per save: how long `step()` blocked the loop (ms). */
  stallMs: number[];
  /** Per save: CPU time of the JS thread during `step()` (ms): its own cost, without waiting for a core. */
  stallCpuMs: number[];
  /** `thread`: the JS thread alone (/proc/thread-self/schedstat); `process`: process.cpuUsage(), all threads. */
  cpuSource: 'thread' | 'process';
  /** Bytes of the model weights. */
  weightBytes: number;
  /** Time `close()` waited for the last background write (ms). */
  closeMs: number;
  /** captureCheckpoint(model) alone, after training (ms, 5 runs; empty without checkpointing): a fresh copy of
   * every weight (on tfjs-node: copied out of TensorFlow). */
  snapshotMs: number[];
  /** Per save: the manager's own snapshot inside step() (captureReusing, timed by wrapping it; ms), which reuses
   * the host copy of every weight unchanged since the previous save (the frozen embedding here). Empty when the
   * build has no captureReusing. */
  stepSnapshotMs: number[];
  /** saveTensors of that snapshot, durable, outside the manager (ms, 3 runs). */
  saveMs: number[];
  /** Size of that checkpoint file. */
  fileBytes: number;
  /** Per save: from step() returning to its `durable` promise settling (ms; near 0 when sync). */
  writeMs: number[];
  /** Saves whose step() was called while the previous save's write was still in flight. */
  inFlightAtStep: number;
  /** Per save: from step() being called to the end of its commit plan's last step, as the executor itself timed it
   * (CommitResult.finishedAt: on the native queue's thread), so not delayed by a loop that gives no JS turn. Empty
   * when the saves took no commit plan (a JS-path medium). */
  durableMs: number[];
}

export type ChildReply = { ok: true; result: unknown } | { ok: false; error: string };
