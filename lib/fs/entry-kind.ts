/**
 * The operating system's own verdict when a path is the wrong kind of entry: a directory where a file is needed, or
 * a file where a directory is. The library never invents an OS code (lib/errors.ts): when a stat shows that the next
 * step cannot work, it makes the system call that step needs and reports that call's real failure (its code, errno
 * and syscall), with a message saying what was asked. Both functions return undefined when the call succeeds after
 * all (the entry was replaced meanwhile): the caller then carries on with what the path now is. Also the one stat of
 * "is this path a directory" whose failure is a coded error (isDirectory).
 */
import { constants, promises as fsp } from 'node:fs';
import { CheckpointError, fromNodeError } from '../errors';

function refusal(err: unknown, p: string, message: string): CheckpointError {
  const os = fromNodeError(err, p, 'open');
  if (!/^E[A-Z0-9]+$/.test(os.code)) return os;
  return new CheckpointError(os.code, `${message} (${os.code} from ${os.syscall ?? 'the system call'})`, {
    path: p,
    ...(os.errno !== undefined ? { errno: os.errno } : {}),
    ...(os.syscall !== undefined ? { syscall: os.syscall } : {}),
    cause: err,
  });
}

/**
 * The error using the directory `p` as a file fails with: for 'write', open(2) for writing (EISDIR); for 'read',
 * open(2) and read(2) of a byte (EISDIR from the read on POSIX, from the open on Windows). O_NONBLOCK: a FIFO found
 * there instead never blocks the probe.
 */
export async function directoryAsFileError(
  p: string,
  use: 'read' | 'write',
  message: string,
): Promise<CheckpointError | undefined> {
  const flags = (use === 'write' ? constants.O_WRONLY : constants.O_RDONLY) | (constants.O_NONBLOCK ?? 0);
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(p, flags);
    if (use === 'read') await fh.read(new Uint8Array(1), 0, 1, 0);
    return undefined;
  } catch (e) {
    return refusal(e, p, message);
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/** The error opening the non-directory `p` as a directory fails with: opendir(3) (ENOTDIR). */
export async function fileAsDirectoryError(p: string, message: string): Promise<CheckpointError | undefined> {
  try {
    await (await fsp.opendir(p)).close();
    return undefined;
  } catch (e) {
    return refusal(e, p, message);
  }
}

/**
 * Whether `p` is a directory (stat(2), following links). A failing stat (ENOENT, EACCES...) throws its coded error
 * naming `p` and what was asked: "Could not <action> <p>: ...".
 */
export async function isDirectory(p: string, action: string): Promise<boolean> {
  try {
    return (await fsp.stat(p)).isDirectory();
  } catch (e) {
    throw fromNodeError(e, p, action);
  }
}
