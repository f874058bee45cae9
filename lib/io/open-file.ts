/**
 * The one read path of a local checkpoint file: the file is opened once, and that descriptor serves its header (read
 * and checked here) and its data (the backend preads from it, see ReadPlan.fd). Header and data therefore always
 * come from one inode: a save's atomic rename replacing the path during a read leaves the reader on the version it
 * opened, whole, and a reader is never sent back to start again (no retry, no starvation). Our writer never modifies
 * a file in place, so that version stays intact until the descriptor is closed.
 *
 * Only regular files are read: a directory, FIFO, socket or device is refused with ERR_CHECKPOINT_NOT_A_FILE before a
 * byte is read (notAFile), by every reader and the shard index reader alike.
 */
import { Stats, constants as fsConstants, promises as fsp } from 'node:fs';
import type { ReadPlan } from '../backend/backend';
import { getBackend } from '../backend/select';
import { CheckpointError, ErrorCode, fromBackendFailure, fromNodeError } from '../errors';
import { HeaderState, ParsedHeader, readHeader, readHeaderLength } from '../format/header';

/**
 * Opening flags of every file a reader opens: O_NONBLOCK so that opening a FIFO returns at once (a blocking open would
 * wait for a writer forever) and is then refused as not a regular file; on a regular file it changes nothing.
 */
const READ_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0);

/** What a non-regular file is, for messages. */
function fileKind(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a file';
}

/** The verdict on a non-regular file given to a reader: ERR_CHECKPOINT_NOT_A_FILE saying what it is. */
export function notAFile(file: string, what: string, cause?: unknown): CheckpointError {
  return new CheckpointError(
    ErrorCode.NOT_A_FILE,
    `Cannot read ${file}: it is ${what}, not a regular file (refused without reading it)`,
    { path: file, ...(cause === undefined ? {} : { cause }) },
  );
}

/**
 * Opens `file` for reading and checks it is a regular file (on the open descriptor: what is read is what was checked).
 * A path that cannot be opened because of what it is (a socket: ENXIO) gets the same verdict as one that opens.
 * Resolves with the open handle and its stat; the caller closes it.
 */
export async function openRegularFile(file: string, action: string): Promise<{ handle: fsp.FileHandle; stat: Stats }> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(file, READ_FLAGS);
  } catch (e) {
    const st = await fsp.stat(file).catch(() => undefined);
    if (st && !st.isFile()) throw notAFile(file, fileKind(st), e);
    throw fromNodeError(e, file, action);
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw notAFile(file, fileKind(stat));
    return { handle, stat };
  } catch (e) {
    await handle.close().catch(() => undefined);
    throw fromNodeError(e, file, action);
  }
}

/** A checkpoint file open for reading: its header read and checked from `handle`, which also serves its data. */
export interface OpenedFile {
  path: string;
  handle: fsp.FileHandle;
  parsed: ParsedHeader;
  /** Set when the header CRC was checked. */
  state?: HeaderState;
  fileSize: number;
  /** The first 8 + N bytes (length prefix and JSON header) as read. */
  head: Uint8Array;
}

/** Reads exactly `into.length` bytes at `position`, or fails CORRUPT (the file ended early). */
async function readFully(fh: fsp.FileHandle, into: Uint8Array, position: number, file: string): Promise<void> {
  for (let off = 0; off < into.length;) {
    const { bytesRead } = await fh.read(into, off, into.length - off, position + off);
    if (bytesRead === 0) {
      throw new CheckpointError(ErrorCode.CORRUPT, `Corrupt checkpoint ${file}: it ends inside its header`, {
        path: file,
      });
    }
    off += bytesRead;
  }
}

/**
 * Opens a checkpoint and reads, checks and parses its header. `verify`: true checks the header CRC and refuses a
 * file without checksums (UNVERIFIED); 'if-present' checks the header CRC when the file has one; false checks no CRC.
 * The caller closes `handle` (see withCheckpointFile).
 */
export async function openCheckpointFile(file: string, verify: boolean | 'if-present'): Promise<OpenedFile> {
  const { handle, stat } = await openRegularFile(file, 'open the checkpoint');
  try {
    const fileSize = stat.size;
    const prefix = new Uint8Array(8);
    const { bytesRead } = await handle.read(prefix, 0, 8, 0);
    const n = readHeaderLength(prefix.subarray(0, bytesRead), fileSize, file);
    const head = new Uint8Array(8 + n);
    head.set(prefix);
    await readFully(handle, head.subarray(8), 8, file);
    const { parsed, state } = readHeader(head, fileSize, file, verify !== false, getBackend().crc32c);
    if (verify === true && !parsed.checksummed) {
      throw new CheckpointError(
        ErrorCode.UNVERIFIED,
        `${file} is a safetensors file without tfjs-checkpoint checksums; load it with { verify: false }`,
        { path: file },
      );
    }
    return { path: file, handle, parsed, fileSize, head, ...(state ? { state } : {}) };
  } catch (e) {
    await handle.close().catch(() => undefined);
    throw fromNodeError(e, file, 'read the checkpoint');
  }
}

/** Opens a checkpoint (as openCheckpointFile), runs `use` on it, and closes it however `use` ends. */
export async function withCheckpointFile<T>(
  file: string,
  verify: boolean | 'if-present',
  use: (opened: OpenedFile) => Promise<T>,
): Promise<T> {
  const opened = await openCheckpointFile(file, verify);
  try {
    return await use(opened);
  } finally {
    await opened.handle.close().catch(() => undefined);
  }
}

/** The read plan of byte ranges of an opened file's data section ([b0, e0, b1, e1, ...], see ReadPlan). */
export function rangesPlan(opened: OpenedFile, ranges: number[], crcs: number[], verify: boolean): ReadPlan {
  return {
    path: opened.path,
    fd: opened.handle.fd,
    fileSize: opened.fileSize,
    dataStart: opened.parsed.dataStart,
    ranges,
    crcs: verify ? crcs : [],
    verify,
  };
}

/**
 * Reads the tensors `first` to `end - 1` (all of them by default) of an opened file, each into its own ArrayBuffer
 * (with `map`, views of one mapping: ReadPlan.map), checking their CRC32Cs when `verify` (and the file has them). Failures are coded CheckpointErrors whose stack is
 * `stack` (the public call's); `action` says what was being done ('load x', 'verify x').
 */
export async function readTensors(
  opened: OpenedFile,
  verify: boolean,
  action: string,
  stack: string,
  first = 0,
  end?: number,
  map = false,
): Promise<ArrayBuffer[]> {
  const { parsed } = opened;
  const entries = parsed.entries.slice(first, end);
  const checked = verify && parsed.checksummed;
  const crcs = checked ? (parsed.tensorCrcs?.slice(first, end) ?? []) : [];
  const plan = rangesPlan(
    opened,
    entries.flatMap((e) => [e.begin, e.end]),
    crcs,
    checked,
  );
  try {
    return await getBackend().read(map ? { ...plan, map } : plan);
  } catch (e) {
    throw fromBackendFailure(
      e,
      action,
      entries.map((t) => t.name),
      stack,
    );
  }
}
