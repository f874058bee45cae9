/**
 * A shard set's index, `<name>.index.json` (see shards.ts): its JSON (Hugging Face's `weight_map` and `metadata`,
 * with our `tfjs_checkpoint.*` additions), read and validated whoever wrote it, and the header bytes of a shard
 * whose CRC32C the index records. Local files and s3:// objects alike (shard-place.ts).
 */
import { isPlainObject } from '../args';
import { CheckpointError, ErrorCode, fromNodeError } from '../errors';
import { FORMAT_VERSION, readHeaderLength, setOwn } from '../format/header';
import { getBackend } from '../backend/select';
import { parseS3Url } from '../s3/location';
import { type OpenedObject, openObject } from '../s3/objects';
import { isObjectLocation } from './check-path';
import { openRegularFile } from './open-file';
import { readSmallText } from './shard-place';

/** The largest index file read (HF indexes of 100B-parameter models are a few MB). */
export const MAX_INDEX_BYTES = 256 * 1024 * 1024;

const META_FORMAT = 'tfjs_checkpoint.format_version';

const META_SET_ID = 'tfjs_checkpoint.set_id';

const META_SHARDS = 'tfjs_checkpoint.shards';

const META_USER = 'tfjs_checkpoint.metadata';

/** One shard as the index records it. */
export interface ShardRecord {
  file: string;
  /** The shard's file size in bytes. */
  size: number;
  /** CRC32C of the shard's first 8 + N bytes (length prefix and JSON header). */
  headerCrc32c: number;
}

/** A parsed index. */
export interface ShardIndex {
  /** The index file (absolute). */
  path: string;
  /** Shard file names in order (ours: as recorded; a foreign index: in order of first appearance in weight_map). */
  files: string[];
  weightMap: Record<string, string>;
  totalSize?: number;
  /** Our additions; absent for an index written by another tool (then nothing is verifiable). */
  ours?: { setId: string; shards: ShardRecord[]; metadata: Record<string, string> };
}

/** The first 8 + N bytes of a checkpoint file (its length prefix and JSON header), and the file's size, read from one
 * open descriptor. */
async function readHeaderBytes(file: string): Promise<{ head: Uint8Array; size: number }> {
  const { handle: fh, stat: st } = await openRegularFile(file, 'open the shard');
  try {
    const prefix = new Uint8Array(8);
    const { bytesRead } = await fh.read(prefix, 0, 8, 0);
    const n = readHeaderLength(prefix.subarray(0, bytesRead), st.size, file);
    const head = new Uint8Array(8 + n);
    const r = await fh.read(head, 0, head.length, 0);
    if (r.bytesRead !== head.length) {
      throw new CheckpointError(ErrorCode.CORRUPT, `Corrupt checkpoint ${file}: truncated header`, { path: file });
    }
    return { head, size: st.size };
  } catch (e) {
    throw fromNodeError(e, file, 'read the shard');
  } finally {
    await fh.close().catch(() => undefined);
  }
}

export function corruptIndex(file: string, why: string): CheckpointError {
  return new CheckpointError(ErrorCode.CORRUPT, `Corrupt shard index ${file}: ${why}`, { path: file });
}

/** A shard file name as an index may give it: a plain name in the index's directory. */
function isPlainFileName(f: unknown): f is string {
  return typeof f === 'string' && f.length > 0 && f !== '.' && f !== '..' && !/[/\\\0]/.test(f);
}

/** The CRC32C of a shard's first 8 + N bytes (length prefix and JSON header), what an index of ours records, and the
 * shard's size: from one open descriptor, or (s3://) from ranged GETs of one version of the object. */
export async function shardHeaderCrc(file: string): Promise<{ crc: number; size: number }> {
  if (isObjectLocation(file)) return openedHeaderCrc(await openObject(parseS3Url(file, 'a shard'), 'if-present'));
  const { head, size } = await readHeaderBytes(file);
  return { crc: getBackend().crc32c(head), size };
}

/** shardHeaderCrc of an s3:// shard already opened (its header bytes as read, the size of that version). */
export function openedHeaderCrc(opened: OpenedObject): { crc: number; size: number } {
  return { crc: getBackend().crc32c(opened.head), size: opened.version.size };
}

/** What an index of ours records (see the module comment of shards.ts). */
export interface ShardIndexContents {
  /** Tensor name -> shard file, in sorted order of the names. */
  weightMap: Record<string, string>;
  /** The tensor bytes of all shards. */
  totalSize: number;
  setId: string;
  shards: readonly ShardRecord[];
  /** The user metadata (which every shard carries too). */
  metadata: Record<string, string>;
}

/** The index file's text: Hugging Face's `metadata.total_size` and `weight_map`, and our `tfjs_checkpoint.*` keys. */
export function shardIndexText(c: ShardIndexContents): string {
  const index = {
    metadata: {
      total_size: c.totalSize,
      [META_FORMAT]: FORMAT_VERSION,
      [META_SET_ID]: c.setId,
      [META_SHARDS]: c.shards.map((s) => ({
        file: s.file,
        size: s.size,
        header_crc32c: s.headerCrc32c.toString(16).padStart(8, '0'),
      })),
      [META_USER]: c.metadata,
    },
    weight_map: c.weightMap,
  };
  return JSON.stringify(index, null, 2) + '\n';
}

/** Reads and validates an index (ours or another tool's, e.g. transformers' save_pretrained), a local file or an
 * s3:// object. */
export async function readShardIndex(file: string): Promise<ShardIndex> {
  const text = await readSmallText(
    file,
    MAX_INDEX_BYTES,
    () => corruptIndex(file, `larger than ${MAX_INDEX_BYTES} bytes`),
    'the shard index',
  );
  return parseShardIndex(file, text);
}

/** Parses and validates the text of the index `file` (see readShardIndex). */
export function parseShardIndex(file: string, text: string): ShardIndex {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw corruptIndex(file, `not JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(raw) || !isPlainObject(raw.weight_map)) throw corruptIndex(file, 'no "weight_map" object');
  const meta = raw.metadata === undefined || raw.metadata === null ? {} : raw.metadata;
  if (!isPlainObject(meta)) throw corruptIndex(file, '"metadata" is not an object');
  const weightMap: Record<string, string> = {};
  const files: string[] = [];
  for (const [name, f] of Object.entries(raw.weight_map)) {
    if (!isPlainFileName(f)) throw corruptIndex(file, `tensor ${JSON.stringify(name)} maps to an invalid file name`);
    setOwn(weightMap, name, f);
    if (!files.includes(f)) files.push(f);
  }
  const totalSize = meta.total_size;
  const result: ShardIndex = {
    path: file,
    files,
    weightMap,
    ...(Number.isSafeInteger(totalSize) ? { totalSize: totalSize as number } : {}),
  };
  if (meta[META_FORMAT] === undefined) return result;
  if (meta[META_FORMAT] !== FORMAT_VERSION) {
    throw corruptIndex(file, `unknown tfjs-checkpoint format version ${JSON.stringify(meta[META_FORMAT])}`);
  }
  const setId = meta[META_SET_ID];
  const list = meta[META_SHARDS];
  const user = meta[META_USER];
  if (typeof setId !== 'string' || !Array.isArray(list) || !isPlainObject(user)) {
    throw corruptIndex(file, 'its tfjs_checkpoint metadata is incomplete');
  }
  const shards: ShardRecord[] = list.map((s: unknown) => {
    const r = s as Record<string, unknown>;
    const crc = typeof r?.header_crc32c === 'string' && /^[0-9a-f]{8}$/.test(r.header_crc32c) ? r.header_crc32c : '';
    if (!isPlainObject(s) || !isPlainFileName(r.file) || !Number.isSafeInteger(r.size) || !crc) {
      throw corruptIndex(file, `an invalid shard record ${JSON.stringify(s)}`);
    }
    return { file: r.file, size: r.size as number, headerCrc32c: parseInt(crc, 16) };
  });
  const listed = shards.map((s) => s.file);
  if (listed.length !== files.length || !files.every((f) => listed.includes(f))) {
    throw corruptIndex(file, 'its shard list and its weight_map name different files');
  }
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(user)) {
    if (typeof v !== 'string') throw corruptIndex(file, `metadata value of ${JSON.stringify(k)} is not a string`);
    setOwn(metadata, k, v);
  }
  return { ...result, files: listed, ours: { setId, shards, metadata } };
}

/** Whether an index file's text is valid JSON of another kind of index (no weight_map: the manager's). */
export function isOtherIndex(text: string): boolean {
  try {
    const raw: unknown = JSON.parse(text);
    return isPlainObject(raw) && raw.weight_map === undefined;
  } catch {
    return false;
  }
}
