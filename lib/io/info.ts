/** What a checkpoint's header says (readCheckpointInfo), without reading its data. */
import { checkPath } from './check-path';
import { withCheckpointFile } from './open-file';
import { type ResolvedCheckpoint, readShardSetInfo, resolveCheckpoint } from './shards';
import type { CheckpointInfo } from './types';
import type { ParsedHeader, TensorSummary } from '../format/header';
import { LAZY_ARRAY_ITEMS, lazyArray } from '../format/lazy-record';

/**
 * The tensors of a header as CheckpointInfo lists them: a plain array, or for more than LAZY_ARRAY_ITEMS tensors a
 * view that builds each one when first read (see lazy-record.ts: 200k plain objects cost 2-3x their header).
 */
function summaries(parsed: ParsedHeader): TensorSummary[] {
  const n = parsed.tensorCount;
  if (n > LAZY_ARRAY_ITEMS) return lazyArray(n, (k) => parsed.tensorSummary(k));
  return Array.from({ length: n }, (_, k) => parsed.tensorSummary(k));
}

/**
 * Reads a checkpoint's header (verifying its CRC when it has one) without reading the tensors. */
export async function readCheckpointInfo(file: string): Promise<CheckpointInfo> {
  const abs = checkPath(file);
  return infoResolved(abs, await resolveCheckpoint(abs, 'if-present'));
}

/** readCheckpointInfo from where `abs` led (resolveCheckpoint, 'if-present'); a set's shards are read from here too. */
export async function infoResolved(abs: string, where: ResolvedCheckpoint): Promise<CheckpointInfo> {
  if (where.kind === 'set') return readShardSetInfo(where.index);
  const { parsed, fileSize, state } =
    where.kind === 'object'
      ? { parsed: where.opened.parsed, fileSize: where.opened.version.size, state: where.opened.state }
      : await withCheckpointFile(abs, 'if-present', async (o) => o);
  return {
    path: abs,
    fileSize,
    dataStart: parsed.dataStart,
    tensors: summaries(parsed),
    metadata: parsed.metadata,
    ...(parsed.formatVersion ? { formatVersion: parsed.formatVersion } : {}),
    ...(state ? { header: state } : {}),
  };
}
