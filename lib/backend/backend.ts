/**
 * The contract between the TypeScript layer and the two I/O backends: single-file writes and reads, and commit
 * plans (one save of a CheckpointManager, executed off the JS thread: see "commit plans" below).
 *
 * Both backends (the native addon in native/, and the pure-TypeScript fallback in js-backend.ts) implement
 * exactly this interface and produce byte-identical files: the header bytes are always built by format.ts,
 * the backends only write the data section, fill in the CRC32C placeholders, and commit the file atomically.
 *
 * All arguments have been validated by the TypeScript layer before a backend sees them; a backend only asserts its
 * own invariants.
 */

/** One `write` call: everything a backend needs to persist one checkpoint file. */
export interface WritePlan {
  /** Final path of the checkpoint (absolute). Its directory exists. */
  path: string;
  /**
   * Temp file to create in the same directory (absolute). Must be created exclusively (O_CREAT | O_EXCL), mode 0644
   * before umask. On any failure it is removed before the promise settles.
   */
  tmpPath: string;
  /**
   * The complete file prefix: 8-byte little-endian header length N, then N bytes of JSON header padded with spaces.
   * It contains ASCII "00000000" placeholders for the CRCs, which the backend overwrites (in its own copy) with
   * lowercase hex before writing it at offset 0. `header.byteLength` is 8 + N and the data section starts there.
   */
  header: Uint8Array;
  /** Byte offset in `header` of the 8 hex digits of the header CRC. */
  headerCrcOffset: number;
  /**
   * Byte offset in `header` of the first tensor CRC; tensor i's 8 hex digits start at
   * `tensorCrcOffset + 9 * i` (the digits are separated by commas).
   */
  tensorCrcOffset: number;
  /**
   * Tensor data, in file order: array i is written at `header.byteLength + sum(byteLength of arrays before i)`.
   * Views are written as they are (byteOffset/byteLength respected). The backend keeps them alive until it settles.
   */
  arrays: ArrayBufferView[];
  /** fsync the temp file before the rename and the directory after it (a failure there sets `committed`). */
  durable: boolean;
}

/** One `read` call: a validated plan of which byte ranges to read and which CRCs to expect. */
export interface ReadPlan {
  /** Path of the checkpoint file: named in failures, and opened (then closed) by the backend when `fd` is absent. */
  path: string;
  /**
   * A descriptor of `path` the caller opened and read the header from, which the backend reads from with pread (its
   * offset untouched) and never closes; the caller keeps it open until the promise settles. Header and data then
   * come from one inode: an atomic rename replacing `path` meanwhile leaves the read on the old version, whole.
   */
  fd?: number;
  /** The file size the header implies (8 + N + data length); a different actual size is `corrupt`. */
  fileSize: number;
  /** 8 + N: where the data section begins. */
  dataStart: number;
  /**
   * The byte ranges to read, each as [begin, end) relative to dataStart, flattened: [b0, e0, b1, e1, ...].
   * Ascending and non-overlapping, within [0, fileSize - dataStart]. A load reads every tensor (contiguous from 0 to
   * the end, as format.ts validated them); verify reads a group of tensors at a time (a subset: it may start after
   * 0, end before the end), or with `verify: false` a piece of one large tensor.
   */
  ranges: number[];
  /** Expected CRC32C of each range's bytes, in order; ignored when `verify` is false. */
  crcs: number[];
  /** Compute and compare the CRCs. */
  verify: boolean;
  /**
   * Map the file instead of copying it (LoadTensorsArgs.mmap): each ArrayBuffer is then a view of one private
   * (copy-on-write) mapping of the file, unmapped when the last of them is collected. Only the native backend maps;
   * the JS backend reads as without it. Default: false.
   */
  map?: boolean;
}

/**
 * Calls in a row that may return 0 bytes before a write is reported as making no progress ('stalled'). POSIX does
 * not say why a write of a regular file returns 0 for a non-empty buffer (it happens on some FUSE filesystems): a
 * few retries let a transient one pass; the same in native/atomic_file.h (kZeroWriteAttempts).
 */
export const ZERO_WRITE_ATTEMPTS = 3;

/**
 * How a backend reports a failure: the promise rejects with an Error carrying these fields, and errors.ts turns it
 * into a coded CheckpointError with the caller's stack. No code is derived from message text.
 */
export interface BackendFailure {
  /** 'io': a system call failed (errno, syscall, path set). 'corrupt': the file is not what the plan says
   * (e.g. the size changed, a short read at EOF, not a regular
   * file). 'checksum': tensor `tensorIndex`'s bytes do not match its CRC.
   * 'stalled': a write made no progress without an error (it returned 0 bytes ZERO_WRITE_ATTEMPTS times in a row;
   * syscall and path set, errno 0: none is invented).
   * 'internal': a bug (the plan broke an invariant the TypeScript layer guarantees, or a call failed without an
   * errno); errno 0 and syscall '' as for 'corrupt' and 'checksum'.
   * 'memory': a destination buffer could not be allocated (V8's allocator on the JS backend, malloc on the native
   * one; the same message on both: "could not allocate <n> bytes (out of memory) for '<path>'"; path set, errno 0). */
  kind: 'io' | 'corrupt' | 'checksum' | 'stalled' | 'internal' | 'memory';
  /** Positive errno for kind 'io', else 0. */
  errno: number;
  /** The failing system call for kind 'io' ('open', 'write', 'fsync', 'rename', ...), else ''. */
  syscall: string;
  /** The path the failing call was about. */
  path: string;
  /** For kind 'checksum': index in the plan's ranges of the one whose CRC failed (the tensor's index in the file
   * when the plan reads them all), else -1. */
  tensorIndex: number;
  /** For kind 'checksum': the CRC the plan expected (`crcs[tensorIndex]`). */
  expectedCrc?: number;
  /** For kind 'checksum': the CRC computed from the bytes read. */
  actualCrc?: number;
  /**
   * Set (true) only by `write`, when the failure came after the rename: the directory fsync failed, so the new file
   * is in place under the target name (the previous one is gone) but may not survive power loss. Absent otherwise
   * (the target was not touched).
   */
  committed?: true;
  message: string;
}

// ---- commit plans ----------------------------------------------------------------------------------------------
//
// One save of a CheckpointManager is one commit plan: every step decided and serialized on the JS thread at step()
// time (paths, header, index bytes, files to delete, the lock content to re-check), then executed by the backend
// without needing the JS thread (the native executor runs on its own thread; see native/commit_queue.h).
//
// Rules, the same on both backends:
// - Steps run in order. The first failing step stops the plan: later steps do not run, and the plan rejects with a
//   CommitFailure naming the step (index and kind), the OS error of the real call (errno, syscall, path), and
//   whether the plan's checkpoint was committed (renamed into place).
// - Every step that replaces a file does it atomically (temp file created exclusively in the target's directory,
//   rename over the target): a step that fails before its rename leaves its target as it was and removes its temp
//   file. A step that fails after its rename (the directory fsync) has its file in place: `stepCommitted`.
// - 'unlink' is best-effort: an absent file counts as deleted, any other failure is a warning in the result, never
//   the plan's failure.
// - A CommitQueue runs the plans submitted to it strictly in submission order, one at a time. Once a plan fails, the
//   queue is poisoned: every plan submitted before the owner calls `reset()` (those already queued behind the
//   failed one, and later ones) is not executed and rejects with kind 'aborted' naming the failed plan, so that a
//   later plan never publishes an index listing a checkpoint whose own plan failed. `reset()` acknowledges the
//   failure: plans submitted after it run again.
// - Threading (native): the plan is unpacked on the calling JS thread (strings and small byte arrays copied, the
//   tensor arrays referenced until the plan settles: do not detach or transfer them meanwhile); steps run on the
//   queue's own thread; the promise settles on the JS thread. A queue belongs to the JS thread (main or worker) that
//   opened it.

/** Rewrites one checkpoint file atomically: exactly `Backend.write` (temp, data and CRCs, fsync, rename, dir fsync). */
export interface CheckpointStep {
  kind: 'checkpoint';
  write: WritePlan;
}

/**
 * Makes `to` hold the same file as `from` (already in place, usually written by an earlier step): hard link `from`
 * to `tmpPath` (in `to`'s directory, must not exist), rename `tmpPath` over `to`, fsync the directory (durable).
 * When the filesystem refuses hard links (link fails with EPERM, EOPNOTSUPP/ENOTSUP, ENOSYS, EMLINK or EXDEV) the
 * `fallback` decides: 'copy' copies `from`'s bytes into `tmpPath` (created exclusively, fsynced when durable) and
 * renames it the same way; a WritePlan (whose `path` must be `to`) writes that checkpoint instead, as a 'checkpoint'
 * step would; 'fail' fails the step with the link's error. Any other link error fails the step.
 */
export interface LinkStep {
  kind: 'link';
  from: string;
  to: string;
  tmpPath: string;
  durable: boolean;
  fallback: 'copy' | 'fail' | WritePlan;
}

/**
 * Re-reads the lock file at `path` and compares its bytes with `content` (the holder's own record): a writer whose
 * lock was taken over must not publish. Fails with kind 'lock' when the file holds anything else or is missing
 * (ENOENT), kind 'io' when it cannot be read.
 */
export interface CheckLockStep {
  kind: 'checkLock';
  path: string;
  content: Uint8Array;
}

/** Writes `bytes` to `path` atomically (the manager's index): temp `tmpPath` created exclusively, write, fsync
 * (durable), close, rename over `path`, directory fsync (durable; its failure sets `stepCommitted`). */
export interface TextStep {
  kind: 'text';
  path: string;
  tmpPath: string;
  bytes: Uint8Array;
  durable: boolean;
}

/** Deletes `paths` (retention), in order, best-effort: absent counts as deleted, other failures are warnings. */
export interface UnlinkStep {
  kind: 'unlink';
  paths: string[];
}

export type CommitStep = CheckpointStep | LinkStep | CheckLockStep | TextStep | UnlinkStep;
export type CommitStepKind = CommitStep['kind'];

/** One save's disk work, in order. */
export interface CommitPlan {
  /** Names the plan in failures (its own, and the 'aborted' ones of the plans behind it), e.g. the checkpoint file. */
  label: string;
  steps: CommitStep[];
}

/** An 'unlink' failure that did not fail the plan. */
export interface CommitWarning {
  /** The step's index in the plan. */
  step: number;
  path: string;
  /** Positive errno, the call ('unlink'), and the OS message. */
  errno: number;
  syscall: string;
  message: string;
}

/** A plan that ran to its end. */
export interface CommitResult {
  /** Indexes of the 'link' steps that used their fallback (the filesystem refused the hard link). */
  fallbacks: number[];
  /** Files an 'unlink' step could not delete (absent files are not listed: they count as deleted). */
  warnings: CommitWarning[];
  /** When the plan's last step ended, in milliseconds on the clock of `process.hrtime` (Number(hrtime.bigint()) /
   * 1e6), taken by the executor itself (the native queue's thread: CLOCK_MONOTONIC, libuv's clock on Linux), not when
   * the promise settles, which waits for a JS turn. For measuring a save's time to durable. */
  finishedAt: number;
}

/**
 * How a plan rejects: an Error carrying these fields. `kind` 'io', 'corrupt', 'checksum' as in BackendFailure; 'lock'
 * for a failed 'checkLock' (the lock file no longer holds `content`); 'aborted' for a plan not executed because a plan
 * before it failed (then `step` is -1, `stepKind` null, and `abortedBy` is the failed plan's label).
 */
export interface CommitFailure {
  kind: BackendFailure['kind'] | 'lock' | 'aborted';
  errno: number;
  syscall: string;
  path: string;
  tensorIndex: number;
  actualCrc?: number;
  /** The failed plan's label. */
  plan: string;
  /** Index of the failing step, -1 for 'aborted'. */
  step: number;
  stepKind: CommitStepKind | null;
  /** The failing step's file is in place: it failed after its rename (the directory fsync). */
  stepCommitted: boolean;
  /** The plan has at least one 'checkpoint' step and all of them are renamed into place (completed before `step`,
   * or `step` itself with `stepCommitted`): the checkpoint exists under its name, durable unless `step` is it. */
  committed: boolean;
  /** For 'aborted': the label of the failed plan that poisoned the queue. */
  abortedBy?: string;
  /** Unlink warnings of the steps before the failing one. */
  warnings: CommitWarning[];
  message: string;
}

/** A serial executor of commit plans (see the rules above). */
export interface CommitQueue {
  /** Queues `plan` behind every plan submitted before it. Rejects with a CommitFailure. */
  commit(plan: CommitPlan): Promise<CommitResult>;
  /** Acknowledges a failure: plans submitted after this call run again. Harmless when nothing failed. */
  reset(): void;
  /** Plans submitted whose execution has not ended (queued or running), read synchronously: on the native queue it
   * drops when the queue's thread finishes a plan, before its promise settles (which waits for an event-loop turn).
   * Only a count: the outcome, success or failure, comes through the plan's promise, and a failed plan has already
   * poisoned the queue, so plans submitted before its rejection is handled are aborted as the rules above say. */
  readonly unfinished: number;
  /** Resolves once every submitted plan has settled, then releases the executor (its thread). Later commits reject
   * with ERR_CHECKPOINT_CLOSED. Idempotent. */
  close(): Promise<void>;
}

/** A read plan with the caller's destinations. */
export interface ReadIntoPlan extends ReadPlan {
  /**
   * The caller's destinations (LoadTensorsArgs.into): absent, or one entry per range, null for a fresh buffer or a
   * byte view of exactly the range's length to read into (its result entry is then null). The backend writes only
   * those bytes, from its own thread (native) while the promise is pending, and keeps the views alive until it
   * settles; on a failure a view may hold part of the range's bytes. Never with `map`.
   */
  into: (Uint8Array | null)[];
}

/** Backend.read: without destinations (ReadIntoPlan.into), every entry is an ArrayBuffer. */
export interface ReadFunction {
  (plan: ReadIntoPlan): Promise<(ArrayBuffer | null)[]>;
  (plan: ReadPlan): Promise<ArrayBuffer[]>;
}

export interface Backend {
  readonly name: 'native' | 'js';
  /** A new commit-plan executor with its own serial queue (native: its own thread). */
  openCommitQueue(): CommitQueue;
  /** Writes plan atomically: temp file, data, header, (fsync), rename, (directory fsync). */
  write(plan: WritePlan): Promise<void>;
  /** Reads each range into its own ArrayBuffer (exactly the range's length), verifying CRCs when asked; a range with
   * a destination (ReadIntoPlan.into) is read into it instead, and its entry is null. */
  read: ReadFunction;
  /** CRC32C (Castagnoli, reflected, init/xorout 0xffffffff) of `data`, continuing from `crc` (default 0). */
  crc32c(data: ArrayBufferView, crc?: number): number;
  /** The CRC32C of A followed by B from crc32c(A), crc32c(B) and B's length in bytes, without the bytes. */
  crc32cCombine(crcA: number, crcB: number, lengthB: number): number;
  /**
   * The CRC32C of each of `views` (each from 0). Views that are not ArrayBufferViews reject with
   * ERR_CHECKPOINT_INVALID_ARGUMENT before any byte is read (crc-views.ts crc32cViewsChecked).
   * Threading: native, on a libuv pool thread, so the JS thread is free meanwhile (an S3 upload hashes and sends the
   * other parts then); JS, on the calling thread in slices with turns of the event loop between them (slices.ts).
   * Either way the views are read until the promise settles and must not change before it does.
   */
  crc32cViews(views: readonly ArrayBufferView[]): Promise<number[]>;
}
