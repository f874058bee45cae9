/**
 * Directory fsync: makes the entries created, renamed or removed in a directory survive power loss. The TypeScript
 * twin of FsyncDirectory in native/atomic_file.cc, with the same rule: open the directory read-only (O_DIRECTORY),
 * fsync it, and close it checked; an fsync failing with EINVAL (a filesystem that cannot fsync a directory: nothing
 * to flush there) is not a failure. Every TypeScript module that needs a durable directory entry uses this helper
 * (atomic-file.ts after its rename, tensors.ts for new directories, the checkpoint index and manager).
 */
import { constants, promises as fsp } from 'node:fs';
import * as path from 'node:path';

const DIRECTORY_FLAGS = constants.O_RDONLY | (constants.O_DIRECTORY ?? 0);

/** Node's error with the directory as its path (FileHandle errors carry none) and the call that failed. */
function withPath(err: unknown, dir: string, syscall: string): NodeJS.ErrnoException {
  const e = (err instanceof Error ? err : new Error(String(err))) as NodeJS.ErrnoException;
  if (typeof e.path !== 'string') e.path = dir;
  if (typeof e.syscall !== 'string') e.syscall = syscall;
  return e;
}

/**
 * fsyncs the directory `dir`. Rejects with node's error (its `code` and `errno`, `syscall` 'open', 'fsync' or
 * 'close', `path` = dir).
 */
export async function fsyncDirectory(dir: string): Promise<void> {
  let dh: fsp.FileHandle;
  try {
    dh = await fsp.open(dir, DIRECTORY_FLAGS);
  } catch (e) {
    throw withPath(e, dir, 'open');
  }
  try {
    await dh.sync();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EINVAL') {
      await dh.close().catch(() => undefined);
      throw withPath(e, dir, 'fsync');
    }
  }
  try {
    await dh.close();
  } catch (e) {
    throw withPath(e, dir, 'close');
  }
}

/**
 * After `fsp.mkdir(deepest, { recursive: true })` returned `first` (the shallowest directory it created), fsyncs the
 * parent of every created level, from the deepest's parent up to the parent of `first`, so that each new directory
 * entry survives power loss. Rejects like fsyncDirectory.
 */
export async function fsyncCreatedDirectories(deepest: string, first: string): Promise<void> {
  const top = path.resolve(first);
  for (let d = path.resolve(deepest); ; d = path.dirname(d)) {
    const parent = path.dirname(d);
    await fsyncDirectory(parent);
    if (d === top || parent === d) return;
  }
}
