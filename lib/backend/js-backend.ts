/**
 * The pure-TypeScript backend: the same contract as the native addon (see backend.ts), through node's fs.
 * Slower (CRC32C in JS, ~0.5 GB/s), and the work runs on the JS thread between awaits, but it writes the same bytes
 * with the same temp file, fsyncs and rename, and reads with the same checks.
 */
import * as fs from 'node:fs';
import { Stats, constants as fsConstants, promises as fsp } from 'node:fs';
import { promisify } from 'node:util';
import {
  type Backend,
  type BackendFailure,
  type CommitFailure,
  type ReadFunction,
  type ReadIntoPlan,
  type ReadPlan,
  type WritePlan,
  ZERO_WRITE_ATTEMPTS,
} from './backend';
import { crc32c, crc32cCombine, crcHex } from '../format/crc32c';
import { writeAtomic } from '../fs/atomic-file';
import { openJsCommitQueue } from './js-commit';
import { crc32cViewsChecked, crc32cViewsSliced } from './crc-views';

/** O_NONBLOCK: opening a FIFO returns at once (to be refused) instead of waiting for a writer; no effect on files. */
const READ_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0);

/** Bytes per write/read call and per CRC step: large enough to amortise the syscall, small enough to stay cached. */
const CHUNK = 8 << 20;

/** A BackendFailure-shaped Error (see backend.ts); with kind 'lock' or 'aborted', the failure fields of a
 * CommitFailure (js-commit.ts adds the plan's own). */
export function failure(
  kind: CommitFailure['kind'],
  message: string,
  p: string,
  extra: Partial<BackendFailure> = {},
): Error {
  return Object.assign(new Error(message), { kind, errno: 0, syscall: '', path: p, tensorIndex: -1, ...extra });
}

/** A failed fs call as a BackendFailure: kind 'io' with its errno, or 'internal' when it carries none (then it was
 * no failed system call but, say, a TypeError, and has no OS code). */
export function ioFailure(err: unknown, syscall: string, p: string): Error {
  const e = err as NodeJS.ErrnoException;
  const message = e?.message ?? String(err);
  if (typeof e?.errno !== 'number') return failure('internal', message, p);
  return failure('io', message, p, { errno: Math.abs(e.errno), syscall: e?.syscall ?? syscall });
}

/**
 * A buffer of `bytes` bytes, or a 'memory' failure: V8 throws a RangeError when its allocator refuses (a tensor
 * larger than the memory the process can get), with no errno to report (it was reported as an invented EIO).
 */
function allocate(bytes: number, p: string): ArrayBuffer {
  try {
    return new ArrayBuffer(bytes);
  } catch {
    throw failure('memory', `could not allocate ${bytes} bytes (out of memory) for '${p}'`, p);
  }
}

/** Writes all of `view` at `position`, looping on short writes. */
export async function writeAll(fh: fsp.FileHandle, view: Uint8Array, position: number, p: string): Promise<void> {
  let done = 0;
  let zeroWrites = 0; // calls in a row that returned 0 bytes
  while (done < view.length) {
    let n: number;
    try {
      ({ bytesWritten: n } = await fh.write(view, done, Math.min(view.length - done, 1 << 30), position + done));
    } catch (e) {
      throw ioFailure(e, 'write', p);
    }
    if (n <= 0) {
      if (++zeroWrites < ZERO_WRITE_ATTEMPTS) continue;
      throw failure(
        'stalled',
        `write made no progress: it returned 0 bytes ${ZERO_WRITE_ATTEMPTS} times in a row without an error, '${p}'`,
        p,
        { syscall: 'write' },
      );
    }
    zeroWrites = 0;
    done += n;
  }
}

/** Backend.write: see WritePlan. The temp file, fsyncs and rename are lib/fs/atomic-file.ts's, with BackendFailures. */
export async function write(plan: WritePlan): Promise<void> {
  const { tmpPath } = plan;
  const fill = async (fh: fsp.FileHandle): Promise<void> => {
    const header = new Uint8Array(allocate(plan.header.byteLength, tmpPath));
    header.set(plan.header);
    let position = header.length;
    for (let i = 0; i < plan.arrays.length; i++) {
      const a = plan.arrays[i];
      const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
      let crc = 0;
      for (let off = 0; off < bytes.length; off += CHUNK) {
        const chunk = bytes.subarray(off, Math.min(bytes.length, off + CHUNK));
        crc = crc32c(chunk, crc);
        await writeAll(fh, chunk, position + off, tmpPath);
      }
      position += bytes.length;
      header.set(Buffer.from(crcHex(crc), 'latin1'), plan.tensorCrcOffset + 9 * i);
    }
    header.set(Buffer.from(crcHex(crc32c(header)), 'latin1'), plan.headerCrcOffset);
    await writeAll(fh, header, 0, tmpPath);
  };
  await writeAtomic(tmpPath, plan.path, fill, plan.durable, ioFailure);
}

/** The descriptor-level calls `read` needs, over a caller's descriptor or one it opened. */
interface ReadSource {
  stat(): Promise<Stats>;
  read(into: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  close(): Promise<void>;
}

const freadAsync = promisify(fs.read);
const fstatAsync = promisify(fs.fstat);

/** The caller's descriptor (ReadPlan.fd): read with pread, never closed here. */
function borrowed(fd: number): ReadSource {
  return {
    stat: () => fstatAsync(fd),
    read: async (into, offset, length, position) => (await freadAsync(fd, into, offset, length, position)).bytesRead,
    close: async () => undefined,
  };
}

async function opened(p: string): Promise<ReadSource> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(p, READ_FLAGS);
  } catch (e) {
    throw ioFailure(e, 'open', p);
  }
  return {
    stat: () => fh.stat(),
    read: async (into, offset, length, position) => (await fh.read(into, offset, length, position)).bytesRead,
    close: () => fh.close(),
  };
}

async function readPlan(plan: ReadPlan | ReadIntoPlan): Promise<(ArrayBuffer | null)[]> {
  const source = plan.fd === undefined ? await opened(plan.path) : borrowed(plan.fd);
  try {
    let st: Stats;
    try {
      st = await source.stat();
    } catch (e) {
      throw ioFailure(e, 'fstat', plan.path);
    }
    if (!st.isFile()) {
      // As native: not read. The OS's own verdict when reading fails (EISDIR for a directory, ESPIPE for a FIFO);
      // a device that does read is not what the plan says.
      try {
        await source.read(new Uint8Array(1), 0, 1, 0);
      } catch (e) {
        throw ioFailure(e, 'read', plan.path);
      }
      throw failure('corrupt', 'not a regular file', plan.path);
    }
    const size = st.size;
    if (size !== plan.fileSize) {
      throw failure(
        'corrupt',
        `file is ${size} bytes, expected ${plan.fileSize} (it changed while being read)`,
        plan.path,
      );
    }
    const out: (ArrayBuffer | null)[] = [];
    for (let i = 0; i < plan.ranges.length / 2; i++) {
      const begin = plan.ranges[2 * i];
      const length = plan.ranges[2 * i + 1] - begin;
      const given = ('into' in plan ? plan.into[i] : null) ?? null; // the caller's destination, exactly `length` bytes (ReadPlan.into)
      const buffer = given ? null : allocate(length, plan.path);
      const bytes = given ?? new Uint8Array(buffer as ArrayBuffer);
      let crc = 0;
      for (let off = 0; off < length;) {
        let n: number;
        try {
          n = await source.read(bytes, off, Math.min(CHUNK, length - off), plan.dataStart + begin + off);
        } catch (e) {
          throw ioFailure(e, 'read', plan.path);
        }
        if (n === 0) throw failure('corrupt', 'unexpected end of file (it changed while being read)', plan.path);
        if (plan.verify) crc = crc32c(bytes.subarray(off, off + n), crc);
        off += n;
      }
      if (plan.verify && crc !== plan.crcs[i]) {
        throw failure('checksum', `checksum mismatch in tensor ${i}`, plan.path, {
          tensorIndex: i,
          expectedCrc: plan.crcs[i],
          actualCrc: crc,
        });
      }
      out.push(buffer);
    }
    return out;
  } finally {
    await source.close().catch(() => undefined);
  }
}

/** Backend.read (null entries only where plan.into gives a destination). */
const read = readPlan as ReadFunction;

export const jsBackend: Backend = {
  name: 'js',
  write,
  read,
  crc32c,
  crc32cCombine,
  crc32cViews: (views: readonly ArrayBufferView[]): Promise<number[]> => crc32cViewsChecked(views, crc32cViewsSliced),
  // A call, not the function itself: js-commit.ts imports this module's helpers (a cycle resolved at call time).
  openCommitQueue: () => openJsCommitQueue(),
};
