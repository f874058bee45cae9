/**
 * The contract between the TypeScript layer and the two I/O backends.
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

export interface Backend {
  readonly name: 'native' | 'js';
  /** Writes plan atomically: temp file, data, header, (fsync), rename, (directory fsync). */
  write(plan: WritePlan): Promise<void>;
  /** Reads each range into its own ArrayBuffer (exactly the range's length), verifying CRCs when asked. */
  read(plan: ReadPlan): Promise<ArrayBuffer[]>;
  /** CRC32C (Castagnoli, reflected, init/xorout 0xffffffff) of `data`, continuing from `crc` (default 0). */
  crc32c(data: ArrayBufferView, crc?: number): number;
  /** The CRC32C of A followed by B from crc32c(A), crc32c(B) and B's length in bytes, without the bytes. */
  crc32cCombine(crcA: number, crcB: number, lengthB: number): number;
}
