/**
 * The public types of the file API (saveTensors, loadTensors, verifyCheckpoint, readCheckpointInfo): what goes in,
 * what comes out. No code.
 */
import type { LoadedArray } from '../format/dtype-convert';
import type { DType, HeaderState, SafetensorsDType, TensorArray, TensorSummary } from '../format/header';
import type { ShardInfo } from './shards';

export type { DType, SafetensorsDType, TensorArray, TensorSummary } from '../format/header';
export type { LoadedArray } from '../format/dtype-convert';

/** One tensor: dtype, shape, and its elements in row-major order. */
export interface TensorData {
  dtype: DType;
  shape: number[];
  /** Float32Array for float32, Int32Array for int32, Uint8Array of 0/1 for bool. Never copied by a save. */
  data: TensorArray;
}

/** Tensors by name (tfjs original weight names, e.g. `dense_Dense1/kernel`). */
export type NamedTensors = Record<string, TensorData>;

export interface SaveTensorsArgs {
  /** String-to-string metadata stored in the header's `__metadata__`. Keys starting with `tfjs_checkpoint.` are
   * reserved. The whole header (tensor names, shapes, metadata) must fit in MAX_HEADER_LENGTH (100,000,000) bytes of
   * JSON, the limit every safetensors reader enforces. Default: none. */
  metadata?: Record<string, string>;
  /** fsync the file before the rename and the directory after it (and the parents of directories the save
   * created), so that the save survives power loss.
   * `false` keeps the atomic rename (never a torn file after a crash of the process) but not power-loss safety.
   * Default: true. */
  durable?: boolean;
  /**
   * Write a shard set instead of one file (Hugging Face's layout, see docs/FORMAT.md "Shard sets"): shards of at most
   * this many bytes of tensor data (a tensor larger than that gets a shard of its own), a number of bytes or a string
   * as transformers takes it ("5GB" = 5e9 bytes, "512MiB"). For `file` = `dir/model.safetensors` the save writes
   * `dir/model-<set id>-00001-of-0000N.safetensors`... and commits them with `dir/model.safetensors.index.json`
   * (always, even for one shard); every reader accepts `dir/model.safetensors` (then read as the set when no such
   * file exists), the index or `dir`. On `s3://bucket/prefix/model.safetensors` the same objects, with the same index
   * bytes: every shard uploaded whole (one PUT or a completed multipart upload), the index object last; readers take
   * the name or the index (an S3 prefix is no directory). Default: undefined (one file).
   */
  maxShardSize?: number | string;
  /** With maxShardSize: how many shards are written at once. Default: the core count (os.availableParallelism()).
   * On s3:// at most the S3 concurrency of shards that each fit in one part (one PUT each), else one at a time
   * (each uploads `concurrency` parts at once): memory stays that of one object's upload. */
  shardConcurrency?: number;
}

export interface LoadTensorsArgs {
  /** Verify the header CRC and every tensor's CRC32C. With `false`, also loads plain safetensors files that carry no
   * checksums. Default: true. */
  verify?: boolean;
  /**
   * Memory-map the file instead of reading it into fresh memory (native backend; the JS backend and `s3://` read as
   * without it): every tensor's array is a view of one private, copy-on-write mapping of the file, verified as
   * usual, and the file's pages are shared with the page cache (a warm load copies nothing). Safety rules (README,
   * "Memory-mapped loads"): while any loaded array is alive, nobody may truncate the file (the process would die of
   * SIGBUS when touching the lost pages) or write into it in place (unverified bytes would show through). Replacing
   * it by rename, as every save of this library does, is safe: the mapping keeps the old file. Writes into the
   * arrays stay private, never reaching the file. Default: false.
   */
  mmap?: boolean;
  /**
   * Read tensors into your own arrays instead of fresh ones (as PyTorch's `load_state_dict` copies into existing
   * parameters): `{ name: array }`, each array of the kind the tensor's dtype loads as (Float32Array for F32,
   * Int32Array for I32, Uint8Array for BOOL, BigInt64Array for I64, Uint16Array for F16/BF16, ...; a Buffer is a
   * Uint8Array) and exactly the tensor's byte length (a view of a larger buffer is fine). Reloading into arrays you
   * already touched skips the page faults of fresh memory, the bound of a warm load. The loaded tensor's `data` is
   * then your array itself; tensors you give no array for load into fresh buffers as usual. Checked against the
   * header before any data is read: a name the file does not hold, or an array of the wrong kind or length, is
   * ERR_CHECKPOINT_MISMATCH naming the tensor; two arrays sharing bytes are ERR_CHECKPOINT_INVALID_ARGUMENT. Every
   * CRC is verified as usual, but the bytes land in your arrays as they are read: after a failed load (e.g.
   * ERR_CHECKPOINT_CHECKSUM) they may hold part of the file's bytes, unverified. Do not read, write, resize or
   * transfer them until the promise settles. Not with `mmap` (ERR_CHECKPOINT_INVALID_ARGUMENT), a shard set
   * (ERR_CHECKPOINT_INVALID_ARGUMENT) or `s3://` (ERR_CHECKPOINT_UNSUPPORTED_SCHEME), all refused before reading.
   * Default: none.
   */
  into?: Record<string, LoadedArray>;
}

/** The safetensors dtypes that have no tfjs dtype of their own: loaded under their safetensors name. */
export type ForeignDType = Exclude<SafetensorsDType, 'F32' | 'I32' | 'BOOL'>;

/** A loaded tensor of a ForeignDType, as its natural TypedArray (see ST_ARRAYS in dtype-convert.ts). */
export interface ForeignTensor {
  dtype: ForeignDType;
  shape: number[];
  data: LoadedArray;
}

/**
 * A loaded tensor: F32, I32 and BOOL load as tfjs' float32, int32 and bool (TensorData, ready for tf.tensor);
 * every other safetensors dtype under its safetensors name ('F16', 'BF16', 'F64', 'I64', ...) as its natural
 * TypedArray (ForeignTensor): convert it with toTfjs or convertLoaded (dtype-convert.ts).
 */
export type LoadedTensor = TensorData | ForeignTensor;

/**
 * How much of a loaded file was checked:
 * - 'verified': the header's bytes and every tensor's bytes match their CRC32Cs;
 * - 'verified-resaved': another tool re-serialized the header (e.g. Python `save_file(..., metadata=...)`, which
 *   re-sorts tensors and metadata keys), but it says exactly what tfjs-checkpoint wrote (its contents match the
 *   header CRC), and every tensor's bytes match their CRC32Cs, matched by name;
 * - 'unverified': nothing was checked (`verify: false`), or the file carries no checksums of ours.
 */
export type Verification = 'verified' | 'verified-resaved' | 'unverified';

export interface LoadedTensors {
  tensors: Record<string, LoadedTensor>;
  /** The file's `__metadata__` without this library's own keys. */
  metadata: Record<string, string>;
  verification: Verification;
}

/** What a checkpoint's header says, without reading the data. */
export interface CheckpointInfo {
  path: string;
  fileSize: number;
  /** Where the data section begins (8 + header length). */
  dataStart: number;
  /** Tensors in file order, each with its safetensors dtype (F32, I32, BOOL, F16, BF16, I64, ...). */
  tensors: TensorSummary[];
  metadata: Record<string, string>;
  /** This library's format version, or undefined for a foreign safetensors file (no checksums). */
  formatVersion?: string;
  /** For a shard set (`path` is its index; `fileSize` the shards' total, `dataStart` 0): each shard, in order. */
  shards?: ShardInfo[];
  /** For a file with our checksums: whether its header is byte-for-byte as written ('intact') or was re-serialized
   * by another tool with the same contents ('resaved'; see Verification). Undefined for a foreign file. */
  header?: HeaderState;
}

export interface VerifyResult {
  path: string;
  tensors: number;
  /** Bytes of tensor data checked. */
  bytes: number;
  /** For a shard set (`path` is its index): the number of shards verified. */
  shards?: number;
}

export interface VerifyCheckpointArgs {
  /**
   * Called with the tensor bytes checked so far and the total: once with 0 before reading, then after each group
   * (see `groupBytes`), last with bytesDone === bytesTotal. A save replacing the file meanwhile changes nothing (the
   * version opened is verified, whole); a shard set whose shards such a save deletes is verified again from the
   * start, its new version, so bytesDone goes back to 0. Default: none.
   */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  /**
   * The most tensor bytes read (hence held in memory) at once: consecutive tensors are read and checked in groups
   * of at most this size, and a tensor larger than this in pieces of this size (its CRC computed across them).
   * Default: 64 MiB.
   */
  groupBytes?: number;
}
