/**
 * Small text files written atomically (the checkpoint manager's index, a shard set's index): temp file in the same
 * directory (fsync when durable), rename over the target, directory fsync when durable. A failure before the rename
 * leaves the previous file and no temp file; a failed directory fsync rejects with `committed: true` (the new file is
 * in place, its durability unknown).
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fromNodeError } from '../errors';
import { fsyncDirectory } from './fsync-dir';
import { acquireTempPath, releaseTempPath } from './tempfiles';

/** Writes `text` (UTF-8) to `target` atomically; `action` names the operation in error messages. */
export async function writeTextAtomic(target: string, text: string, durable: boolean, action: string): Promise<void> {
  const dir = path.dirname(target);
  const tmp = acquireTempPath(dir);
  try {
    const fh = await fsp.open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(text, 'utf8');
      if (durable) await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, target);
  } catch (e) {
    await fsp.unlink(tmp).catch(() => undefined);
    throw fromNodeError(e, target, action);
  } finally {
    releaseTempPath(tmp);
  }
  if (durable) {
    try {
      await fsyncDirectory(dir);
    } catch (e) {
      // The new file is in place; only its durability is unknown.
      throw Object.assign(fromNodeError(e, target, action), { committed: true });
    }
  }
}
