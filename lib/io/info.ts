/** What a checkpoint's header says (readCheckpointInfo), without reading its data. */
import { parseS3Url } from '../s3/location';
import { openObject } from '../s3/objects';
import { checkPath, isObjectLocation } from './check-path';
import { withCheckpointFile } from './open-file';
import { readShardSetInfo, resolveCheckpoint } from './shards';
import type { CheckpointInfo } from './types';

/** Reads a checkpoint's header (verifying its CRC when it has one) without reading the tensors. */
export async function readCheckpointInfo(file: string): Promise<CheckpointInfo> {
  const abs = checkPath(file);
  const where = await resolveCheckpoint(abs);
  if (where.kind === 'set') return readShardSetInfo(where.index);
  const object = isObjectLocation(abs) ? await openObject(parseS3Url(abs, 'file'), 'if-present') : undefined;
  const { parsed, fileSize, state } = object
    ? { parsed: object.parsed, fileSize: object.version.size, state: object.state }
    : await withCheckpointFile(abs, 'if-present', async (o) => o);
  return {
    path: abs,
    fileSize,
    dataStart: parsed.dataStart,
    tensors: parsed.entries.map((e, i) => ({
      name: e.name,
      dtype: e.dtype,
      shape: e.shape,
      byteLength: e.end - e.begin,
      ...(parsed.tensorCrcs ? { crc32c: parsed.tensorCrcs[i] } : {}),
    })),
    metadata: parsed.metadata,
    ...(parsed.formatVersion ? { formatVersion: parsed.formatVersion } : {}),
    ...(state ? { header: state } : {}),
  };
}
