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
import { type CallerStack, CheckpointError, ErrorCode, fromBackendFailure, fromNodeError } from '../errors';
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

/** Tensors of at most this many bytes are read in runs (see readTensors): below it, a read call per tensor costs more
 * than its bytes (200k one-element tensors: 200k preads and, natively, 200k external buffers, 6.9 s and +273 MB). */
export const SMALL_TENSOR_BYTES = 4096;
/** The most bytes one run of small tensors reads at once. */
const RUN_BYTES = 4 * 1024 * 1024;
/** Fewer consecutive small tensors than this are read one by one, as the others. */
const MIN_RUN = 8;

/** Consecutive small tensors [from, to) of a list, read as one range (contiguous: the data section has no gaps). */
interface Run {
  from: number;
  to: number;
}

/**
 * Splits the tensors `first` to `end - 1` of a header into runs of small tensors (see SMALL_TENSOR_BYTES) and those
 * read on their own; indices are relative to `first`. Reads the columns (no entry is built).
 */
function planRuns(parsed: ParsedHeader, first: number, end: number): { runs: Run[]; single: number[] } {
  const runs: Run[] = [];
  const single: number[] = [];
  let from = 0;
  let bytes = 0;
  const close = (to: number) => {
    if (to - from >= MIN_RUN) runs.push({ from, to });
    else for (let k = from; k < to; k++) single.push(k);
  };
  for (let k = 0; k < end - first; k++) {
    const size = parsed.endOf(first + k) - parsed.beginOf(first + k);
    if (size > SMALL_TENSOR_BYTES) {
      close(k);
      single.push(k);
      from = k + 1;
      bytes = 0;
    } else if (bytes + size > RUN_BYTES) {
      close(k);
      from = k;
      bytes = size;
    } else bytes += size;
  }
  close(end - first);
  return { runs, single };
}

/**
 * Reads the tensors `first` to `end - 1` (all of them by default) of an opened file, each into its own ArrayBuffer
 * (with `map`, views of one mapping: ReadPlan.map), checking their CRC32Cs when `verify` (and the file has them).
 * Consecutive small tensors are read as one range per run and copied out into their own buffers, each checked
 * against its CRC here (a backend call per tiny tensor is what made 200k of them cost seconds). Failures are coded
 * CheckpointErrors whose stack is `stack` (the public call's); `action` says what was being done ('load x', 'verify
 * x').
 */
export async function readTensors(
  opened: OpenedFile,
  verify: boolean,
  action: string,
  stack: CallerStack,
  first = 0,
  end?: number,
  map = false,
): Promise<ArrayBuffer[]> {
  const out = new Array<ArrayBuffer>((end ?? opened.parsed.tensorCount) - first);
  await readRanges(opened, verify, action, stack, first, end, map, (k, bytes, own) => {
    out[k] = own
      ? (bytes.buffer as ArrayBuffer)
      : (bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) as ArrayBuffer);
  });
  return out;
}

/**
 * As readTensors for all the tensors of an opened file, tensor i read into `into[i]` when given (the caller's
 * destination, exactly its byte length: ReadIntoPlan.into; its entry in the result is then null), else into a fresh
 * ArrayBuffer. A small tensor read in a run is copied into its destination after its CRC is checked.
 */
export async function readTensorsInto(
  opened: OpenedFile,
  verify: boolean,
  action: string,
  stack: CallerStack,
  into: (Uint8Array | null)[],
): Promise<(ArrayBuffer | null)[]> {
  const out = new Array<ArrayBuffer | null>(opened.parsed.tensorCount);
  const sink = (k: number, bytes: Uint8Array, own: boolean): void => {
    const dest = into[k];
    if (dest) {
      if (bytes !== dest) dest.set(bytes);
      out[k] = null;
    } else {
      out[k] = own
        ? (bytes.buffer as ArrayBuffer)
        : (bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) as ArrayBuffer);
    }
  };
  await readRanges(opened, verify, action, stack, 0, undefined, false, sink, into);
  return out;
}

/**
 * As readTensors (verifying), but hands each tensor's bytes to `visit` (k relative to `first`) as a view, possibly of
 * a buffer shared with others, valid during the call: for a reader that keeps no tensor (verifyCheckpoint).
 */
export async function visitTensorBytes(
  opened: OpenedFile,
  action: string,
  stack: CallerStack,
  first: number,
  end: number,
  visit: (k: number, bytes: Uint8Array) => void,
): Promise<void> {
  await readRanges(opened, true, action, stack, first, end, false, visit);
}

/** The read behind readTensors and visitTensorBytes: `sink(k, bytes, own)`, own when `bytes` is a whole buffer. */
async function readRanges(
  opened: OpenedFile,
  verify: boolean,
  action: string,
  stack: CallerStack,
  first: number,
  end: number | undefined,
  map: boolean,
  sink: (k: number, bytes: Uint8Array, own: boolean) => void,
  into?: (Uint8Array | null)[],
): Promise<void> {
  const { parsed } = opened;
  const last = end ?? parsed.tensorCount;
  const checked = verify && parsed.checksummed;
  const crcOf = (k: number): number => (parsed.tensorCrcs as number[])[first + k];
  const beginOf = (k: number) => parsed.beginOf(first + k);
  const endOf = (k: number) => parsed.endOf(first + k);
  const backend = getBackend();
  const { runs, single } = map
    ? { runs: [], single: Array.from({ length: last - first }, (_, k) => k) }
    : planRuns(parsed, first, last);
  const plan = rangesPlan(
    opened,
    single.flatMap((k) => [beginOf(k), endOf(k)]),
    checked ? single.map(crcOf) : [],
    checked,
  );
  const runPlan = rangesPlan(
    opened,
    runs.flatMap((r) => [beginOf(r.from), endOf(r.to - 1)]),
    [],
    false,
  );
  let singles: (ArrayBuffer | null)[];
  let runBuffers: ArrayBuffer[];
  try {
    // With `into`, a single tensor's destination is read into directly (its entry then null).
    singles = await (into
      ? backend.read({ ...plan, into: single.map((k) => into[k] ?? null) })
      : backend.read(map ? { ...plan, map } : plan));
    runBuffers = runs.length > 0 ? await backend.read(runPlan) : [];
  } catch (e) {
    // Names only now: a checksum failure's tensorIndex is an index into the plan's ranges (singles).
    const names = single.map((k) => parsed.entryAt(first + k).name);
    throw fromBackendFailure(e, action, names, stack);
  }
  single.forEach((k, i) => {
    const buffer = singles[i];
    sink(k, buffer ? new Uint8Array(buffer) : (into?.[k] as Uint8Array), buffer !== null);
  });
  singles = [];
  runs.forEach((r, i) => {
    const base = beginOf(r.from);
    for (let k = r.from; k < r.to; k++) {
      const bytes = new Uint8Array(runBuffers[i], beginOf(k) - base, endOf(k) - beginOf(k));
      if (checked) {
        const crc = backend.crc32c(bytes);
        if (crc !== crcOf(k)) {
          const name = parsed.entryAt(first + k).name;
          const failure = {
            kind: 'checksum',
            tensorIndex: 0,
            path: opened.path,
            expectedCrc: crcOf(k),
            actualCrc: crc,
          };
          throw fromBackendFailure({ ...failure, message: 'checksum mismatch' }, action, [name], stack);
        }
      }
      sink(k, bytes, false);
    }
  });
}
