/**
 * Coded errors. Every error this library throws on purpose is a `CheckpointError` with a stable `code`:
 * the operating system's (`ENOSPC`, `EACCES`, `ENOENT`, ...) only for a system call that really failed (with its
 * errno and syscall), else one of `ErrorCode` below: a library refusal never wears an OS code.
 * Codes never come from matching message text.
 */
import * as util from 'node:util';
import type { BackendFailure, CommitFailure } from './backend/backend';
import { crcHex } from './format/crc32c';

export const ErrorCode = {
  /** An argument had the wrong type or value; the message names it. */
  INVALID_ARGUMENT: 'ERR_CHECKPOINT_INVALID_ARGUMENT',
  /** A tensor's dtype cannot be stored faithfully (string, complex64) or read (a foreign dtype). */
  UNSUPPORTED_DTYPE: 'ERR_CHECKPOINT_UNSUPPORTED_DTYPE',
  /** The file is not a valid checkpoint: bad structure, sizes, offsets, header, or it changed while being read. */
  CORRUPT: 'ERR_CHECKPOINT_CORRUPT',
  /** A CRC32C did not match: the header or the named tensor's bytes were altered. */
  CHECKSUM: 'ERR_CHECKPOINT_CHECKSUM',
  /** A valid safetensors file without this library's checksums; load it with `{ verify: false }`. */
  UNVERIFIED: 'ERR_CHECKPOINT_UNVERIFIED',
  /** The checkpoint does not fit the model: a missing, extra or shape-mismatched weight (strict restore). */
  MISMATCH: 'ERR_CHECKPOINT_MISMATCH',
  /** loadModel was given a weights-only checkpoint: it holds no model topology to build a model from. */
  NO_TOPOLOGY: 'ERR_CHECKPOINT_NO_TOPOLOGY',
  /** Another writer holds the checkpoint directory. */
  LOCKED: 'ERR_CHECKPOINT_LOCKED',
  /** A filename template is invalid or names a key the logs do not have. */
  TEMPLATE: 'ERR_CHECKPOINT_TEMPLATE',
  /** The object was used after close(). */
  CLOSED: 'ERR_CHECKPOINT_CLOSED',
  /** A value cannot be converted to the dtype asked for without changing it (e.g. an I64 above 2^31 - 1 to int32);
   * the message names the tensor, the element index and the value. */
  OUT_OF_RANGE: 'ERR_CHECKPOINT_OUT_OF_RANGE',
  /** A location with a scheme the library does not serve (`gs://`, `http://`, `file:`, ...), or an `s3://` location
   * given where it is not supported yet (the tf.io route and some CLI commands). */
  UNSUPPORTED_SCHEME: 'ERR_CHECKPOINT_UNSUPPORTED_SCHEME',
  /** An `s3://` location was used but the optional dependency `@aws-sdk/client-s3` is not installed. */
  S3_SDK_MISSING: 'ERR_CHECKPOINT_S3_SDK_MISSING',
  /** An S3 request failed (the message names the S3 error, e.g. NoSuchKey, NoSuchBucket, AccessDenied, and the
   * HTTP status; `cause` is the SDK's error). */
  S3: 'ERR_CHECKPOINT_S3',
  /** A CheckpointManager refused to replace a file in its directory that it did not write (neither in its index nor
   * bearing its record): the message names the file; move it away or change the file name. */
  FOREIGN_FILE: 'ERR_CHECKPOINT_FOREIGN_FILE',
  /** A write made no progress: the system call returned 0 bytes, several times in a row, without an error (no errno
   * to report, so none is invented; `syscall` and `path` name the call and the file). The save failed as any other:
   * the previous checkpoint is intact and no temp file is left. */
  WRITE_STALLED: 'ERR_CHECKPOINT_WRITE_STALLED',
  /** A bug in tfjs-checkpoint, not a problem with the input or the system: an internal invariant broke (the native
   * backend was handed a plan the TypeScript layer should have refused, or an operation failed with an error that is
   * no failed system call, corrupt file or checksum). The message says what; `cause` is the original error. Please
   * report it. */
  INTERNAL: 'ERR_CHECKPOINT_INTERNAL',
  /** A reader (loadTensors, verifyCheckpoint, readCheckpointInfo, a shard index or shard) was given a path that is
   * not a regular file: a directory (one that leads to no single shard index), a FIFO, socket or device. Refused
   * without reading it; the message says what it is. */
  NOT_A_FILE: 'ERR_CHECKPOINT_NOT_A_FILE',
  /** The S3 server does not honour `If-None-Match: *` on PUT (probed when a prefix is locked), without which one
   * writer per prefix cannot be guaranteed: the lock is refused rather than given without that guarantee. */
  S3_CONDITIONAL_WRITES: 'ERR_CHECKPOINT_S3_CONDITIONAL_WRITES',
  /** A buffer for a tensor or the header could not be allocated (V8's allocator refused it on the JS backend, malloc
   * on the native one): the library's refusal, with no errno (no system call failed), worded alike on both backends.
   * `path` names the file, the message the size asked for. Nothing was
   * changed: a failed load returned nothing, a failed save left the previous checkpoint intact and no temp file. */
  OUT_OF_MEMORY: 'ERR_CHECKPOINT_OUT_OF_MEMORY',
  /** A commit plan (one save's disk work, see backend.ts) was not executed because a plan queued before it failed:
   * it could have published an index listing the failed plan's checkpoint. The message names the failed plan; the
   * queue runs plans again once its owner has acknowledged the failure (CommitQueue.reset). */
  ABORTED: 'ERR_CHECKPOINT_ABORTED',
} as const;

export type LibraryErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface CheckpointErrorDetails {
  /** The file or directory concerned. */
  path?: string;
  /** The tensor concerned, by name. */
  tensor?: string;
  /** For system-call failures: the positive errno and the call. */
  errno?: number;
  syscall?: string;
  /** See CheckpointError.committed. */
  committed?: true;
  /** See CheckpointError.expectedCrc and actualCrc. */
  expectedCrc?: number;
  actualCrc?: number;
  cause?: unknown;
}

export class CheckpointError extends Error {
  readonly code: string;
  readonly path?: string;
  readonly tensor?: string;
  readonly errno?: number;
  readonly syscall?: string;
  /**
   * Set (true) on a failed save whose last step, the directory fsync after the rename, failed: the new file is in
   * place under the target name but may not survive power loss. Absent on every other error (the target was not
   * touched).
   */
  readonly committed?: true;
  /** On ERR_CHECKPOINT_CHECKSUM for a tensor: the CRC32C the file records for it, and the one its bytes have. */
  readonly expectedCrc?: number;
  readonly actualCrc?: number;

  constructor(code: string, message: string, details: CheckpointErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'CheckpointError';
    this.code = code;
    if (details.path !== undefined) this.path = details.path;
    if (details.tensor !== undefined) this.tensor = details.tensor;
    if (details.errno !== undefined) this.errno = details.errno;
    if (details.syscall !== undefined) this.syscall = details.syscall;
    if (details.committed === true) this.committed = true;
    if (details.expectedCrc !== undefined) this.expectedCrc = details.expectedCrc;
    if (details.actualCrc !== undefined) this.actualCrc = details.actualCrc;
  }
}

/** Throws INVALID_ARGUMENT: "Expected <what> to be <expected>, got <actual>". */
export function invalidArgument(what: string, expected: string, actual: unknown): never {
  throw new CheckpointError(ErrorCode.INVALID_ARGUMENT, `Expected ${what} to be ${expected}, got ${describe(actual)}`);
}

/** isPlainObject lives in args.ts with the other argument checks; re-exported here for existing importers. */
export { isPlainObject } from './args';

/** `err` itself when it is an Error of any realm (the addon's errors may come from another context under jest), else
 * an Error of its text: what a caught value becomes before it is passed on as a rejection. */
export function asError(err: unknown): Error {
  return util.types.isNativeError(err) || err instanceof Error ? (err as Error) : new Error(String(err));
}

/** A short, safe description of a value for error messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? value.slice(0, 77) + '...' : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name} of length ${(value as Uint8Array).length}`;
  const ctor = (value as object).constructor;
  return ctor && ctor !== Object ? `a ${ctor.name}` : 'an object';
}

/** The OS's name for a positive errno (28 -> 'ENOSPC'), or 'EIO' when unknown. */
export function errnoCode(errno: number): string {
  try {
    return util.getSystemErrorName(-Math.abs(errno));
  } catch {
    return 'EIO';
  }
}

/** Wraps an error thrown by node's fs (which has a string code and a negative errno) as a CheckpointError. */
export function fromNodeError(err: unknown, fallbackPath: string, action: string): CheckpointError {
  if (err instanceof CheckpointError) return err;
  const e = err as NodeJS.ErrnoException;
  // No code: not a failed system call (a TypeError, a RangeError...), so no OS code to report.
  const code = typeof e?.code === 'string' ? e.code : ErrorCode.INTERNAL;
  const p = typeof e?.path === 'string' ? e.path : fallbackPath;
  const syscall = typeof e?.syscall === 'string' ? e.syscall : undefined;
  const reason = typeof e?.message === 'string' ? e.message : String(err);
  return new CheckpointError(code, `Could not ${action} ${p}: ${reason}`, {
    path: p,
    errno: typeof e?.errno === 'number' ? Math.abs(e.errno) : undefined,
    syscall,
    cause: err,
  });
}

/**
 * Converts a backend failure (see BackendFailure) into a CheckpointError. `tensorNames` are the file-order names,
 * used to name the tensor of a checksum failure. `callerStack` is a stack captured in the public API function before
 * the asynchronous work started, so that the trace points at the user's code.
 */
export function fromBackendFailure(
  err: unknown,
  action: string,
  tensorNames: readonly string[],
  callerStack?: CallerStack,
): CheckpointError {
  const out = codedFailure(err as FailureFields | undefined, err, action, tensorNames, '');
  if (callerStack) withCallerStack(out, callerStack);
  return out;
}

/** The fields codedFailure reads: a BackendFailure's, of any kind a commit step may report. */
type FailureFields = Partial<Omit<BackendFailure, 'kind'>> & { kind?: CommitFailure['kind'] };

/**
 * The one translation of a failure's fields `f` (BackendFailure's; `f.committed` the failing write's own) into a
 * CheckpointError about `action`, with `err` (the rejection itself) as its cause and `suffix` ending its message:
 * fromBackendFailure's, and fromCommitFailure's for every kind a step shares with a plain write.
 */
function codedFailure(
  f: FailureFields | undefined,
  err: unknown,
  action: string,
  tensorNames: readonly string[],
  suffix: string,
): CheckpointError {
  if (f && f.kind === 'checksum') {
    const index = typeof f.tensorIndex === 'number' ? f.tensorIndex : -1;
    const name = tensorNames[index] ?? `#${index}`;
    const crcs =
      typeof f.expectedCrc === 'number' && typeof f.actualCrc === 'number'
        ? { expectedCrc: f.expectedCrc, actualCrc: f.actualCrc }
        : undefined;
    const detail = crcs ? ` (CRC32C recorded ${crcHex(crcs.expectedCrc)}, computed ${crcHex(crcs.actualCrc)})` : '';
    return new CheckpointError(
      ErrorCode.CHECKSUM,
      `Checksum mismatch in tensor ${JSON.stringify(name)} of ${f.path}: its bytes were altered${detail}${suffix}`,
      { path: f.path, tensor: name, ...crcs, cause: err },
    );
  }
  if (f && f.kind === 'corrupt') {
    return new CheckpointError(ErrorCode.CORRUPT, `Corrupt checkpoint ${f.path}: ${f.message}${suffix}`, {
      path: f.path,
      cause: err,
    });
  }
  if (f && f.kind === 'stalled') {
    return new CheckpointError(ErrorCode.WRITE_STALLED, `Could not ${action}: ${f.message}${suffix}`, {
      path: f.path,
      syscall: f.syscall || 'write',
      cause: err,
    });
  }
  if (f && f.kind === 'memory') {
    return new CheckpointError(ErrorCode.OUT_OF_MEMORY, `Could not ${action}: ${f.message}${suffix}`, {
      path: f.path,
      cause: err,
    });
  }
  if (f && f.kind === 'io' && typeof f.errno === 'number' && f.errno > 0) {
    const code = errnoCode(f.errno);
    const syscall = f.syscall || 'io';
    const committed = f.committed === true;
    const consequence = committed
      ? '; the new file is in place under the target name but may not survive power loss'
      : '';
    return new CheckpointError(code, `Could not ${action}: ${code} (${syscall} ${f.path})${consequence}${suffix}`, {
      path: f.path,
      errno: f.errno,
      syscall,
      ...(committed ? { committed: true as const } : {}),
      cause: err,
    });
  }
  // kind 'internal', or anything else a backend threw: a broken invariant, not a failed system call.
  const message = typeof f?.message === 'string' ? f.message : String(err);
  return new CheckpointError(
    ErrorCode.INTERNAL,
    `Could not ${action}: internal error in tfjs-checkpoint (please report it): ${message}${suffix}`,
    { ...(f?.path ? { path: f.path } : {}), cause: err },
  );
}

/**
 * Replaces `err`'s stack with its first line followed by the frames of `callerStack` (a captureStack() taken in a
 * public API call before its work went asynchronous or to the background), so that the trace points at the user's
 * call rather than at library frames. Returns `err`; a non-Error is returned as it is.
 */
export function withCallerStack<T>(err: T, callerStack: CallerStack): T {
  const frames = callerStack.stack;
  if (!(err instanceof Error) || !frames) return err;
  const head =
    err instanceof CheckpointError ? `${err.name} [${err.code}]: ${err.message}` : `${err.name}: ${err.message}`;
  err.stack = `${head}\n${frames.split('\n').slice(1).join('\n')}`;
  return err;
}

/**
 * A stack captured by captureStack: its text (`stack`) is formatted only when read, i.e. only when an error is
 * raised (V8 formats a captured trace lazily, and the formatting is most of its cost), so every public call can
 * afford to take one, a CheckpointManager step() included.
 */
export interface CallerStack {
  readonly stack?: string;
}

/** The current stack, for attaching to errors raised after an await. */
export function captureStack(): CallerStack {
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, captureStack);
  return holder;
}

/**
 * Converts a commit plan's rejection (see CommitFailure in backend.ts) into a CheckpointError: the OS code for an
 * 'io' failure (as fromBackendFailure), ERR_CHECKPOINT_LOCKED for a failed lock check, ERR_CHECKPOINT_ABORTED for a
 * plan not executed after an earlier one failed. The message names the plan and the failing step, and says when the
 * plan's checkpoint is in place although a later step failed. `committed` keeps its meaning (CheckpointError): the
 * failing step's own file is in place, only its directory fsync failed. `tensorNames` name a checksum failure's
 * tensor, as in fromBackendFailure; `callerStack` as there.
 */
export function fromCommitFailure(
  err: unknown,
  tensorNames: readonly string[] = [],
  callerStack?: CallerStack,
): CheckpointError {
  const f = err as Partial<CommitFailure> & Error;
  const where =
    `${f?.plan ?? 'a commit plan'}` +
    (typeof f?.step === 'number' && f.step >= 0 ? `, step ${f.step} (${f.stepKind})` : '');
  const committed = f?.stepCommitted === true;
  const consequence = f?.committed === true && !committed ? '; the checkpoint itself is in place under its name' : '';
  let out: CheckpointError;
  if (f?.kind === 'aborted') {
    out = new CheckpointError(ErrorCode.ABORTED, `Did not commit ${where}: ${f.message}`);
  } else if (f?.kind === 'lock') {
    out = new CheckpointError(
      ErrorCode.LOCKED,
      `Did not commit ${where}: the directory lock is no longer held by this process (${f.message})`,
      { path: f.path },
    );
  } else {
    // The step's own committed flag is CheckpointError.committed; the plan's (`f.committed`) only adds `consequence`.
    out = codedFailure(
      { ...f, committed: committed ? true : undefined },
      err,
      `commit ${where}`,
      tensorNames,
      consequence,
    );
  }
  if (callerStack) withCallerStack(out, callerStack);
  return out;
}
