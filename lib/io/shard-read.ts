/**
 * Reading a shard set (see shards.ts): where a reader's path leads (a file, a set, or on s3:// an object opened by
 * the very GET that tells it from a set: objectOrSet, no HEAD first), and loading, inspecting and verifying a set,
 * each shard checked against its index (from the header bytes its reader goes on from), retried when a save
 * replaces the set underneath. A local
 * directory or an s3:// prefix alike (shard-place.ts); a missing shard is the medium's own error (ENOENT from the
 * open; ERR_CHECKPOINT_S3 NoSuchKey, HTTP 404, from the GET), a replaced one ERR_CHECKPOINT_CHECKSUM.
 */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CheckpointError, ErrorCode, captureStack, fromNodeError } from '../errors';
import { FORMAT_VERSION, setOwn } from '../format/header';
import {
  type CheckpointInfo,
  type LoadedTensors,
  type VerifyCheckpointArgs,
  type VerifyResult,
  verifyCheckpoint,
} from './tensors';
import { notAFile } from './open-file';
import { INDEX_SUFFIX, SHARD_PATTERN } from './shard-plan';
import { pool } from '../pool';
import { inPlace, isFileAt, placeOf } from './shard-place';
import { isObjectLocation } from './check-path';
import { parseS3Url, type S3Location } from '../s3/location';
import { type OpenedObject, openObject, readOneVersion } from '../s3/objects';
import { isMissingObject } from '../s3/text-objects';
import {
  type ShardIndex,
  type ShardRecord,
  corruptIndex,
  openedHeaderCrc,
  readShardIndex,
  shardHeaderCrc,
} from './shard-index';
import { loadResolved } from './load';
import { infoResolved } from './info';

/** Where a reader's path leads (resolveCheckpoint): a local file, a shard set's index, or an s3:// object, opened. */
export type ResolvedCheckpoint =
  { kind: 'file' } | { kind: 'set'; index: string } | { kind: 'object'; location: S3Location; opened: OpenedObject };

/**
 * Where a reader's path leads: a single checkpoint file, or a shard set's index. A directory leads to the one
 * `*.safetensors.index.json` it holds (refused when it holds none or several); `x.index.json` is an index; `x` that
 * does not exist but `x.index.json` does is that set (what a sharded save to `x` wrote). Anything else: the file.
 * On s3:// an object is opened here (its header read and checked as openObject does, in the reader's `verify` mode),
 * since the GET that opens it is what tells an object from a set (objectOrSet): its read goes on from `opened`.
 */
export async function resolveCheckpoint(abs: string, verify: boolean | 'if-present'): Promise<ResolvedCheckpoint> {
  if (isObjectLocation(abs)) {
    if (abs.endsWith(INDEX_SUFFIX)) return { kind: 'set', index: abs };
    const location = parseS3Url(abs, 'file');
    const r = await objectOrSet(abs, () => readOneVersion(() => openObject(location, verify)));
    return 'set' in r ? { kind: 'set', index: r.set } : { kind: 'object', location, opened: r.object };
  }
  const st = await fsp.stat(abs).catch(() => undefined);
  if (st?.isDirectory()) {
    let names: string[];
    try {
      names = await fsp.readdir(abs);
    } catch (e) {
      throw fromNodeError(e, abs, 'read the directory');
    }
    const indexes = names.filter((n) => n.endsWith('.safetensors' + INDEX_SUFFIX)).sort();
    if (indexes.length === 1) return { kind: 'set', index: path.join(abs, indexes[0]) };
    throw notAFile(
      abs,
      indexes.length === 0
        ? 'a directory without a shard index (*.safetensors.index.json)'
        : `a directory with ${indexes.length} shard indexes (${indexes.join(', ')}; name one)`,
    );
  }
  if (abs.endsWith(INDEX_SUFFIX)) return { kind: 'set', index: abs };
  if (!st) {
    const index = abs + INDEX_SUFFIX;
    if ((await fsp.stat(index).catch(() => undefined))?.isFile()) return { kind: 'set', index };
  }
  return { kind: 'file' };
}

/**
 * The one rule for an s3:// name that is one object or a shard set (`x`, whose set's index is `x.index.json`; there
 * are no directories): `act` on the object first, so that the usual case, an object, costs no lookup; only when it
 * is absent (act rejected with NoSuchKey, HTTP 404) is the set's index looked up (not for a shard of ours, by its
 * name: a shard is never a set). Resolves with act's result, or the set's index; rejects with act's error when
 * neither is there (a missing object reports itself, as a local ENOENT does). For the readers (resolveCheckpoint)
 * and a store's server-side copies (s3-store.ts).
 */
export async function objectOrSet<T>(url: string, act: () => Promise<T>): Promise<{ object: T } | { set: string }> {
  try {
    return { object: await act() };
  } catch (e) {
    if (!isMissingObject(e) || SHARD_PATTERN.test(url.slice(url.lastIndexOf('/') + 1))) throw e;
    const index = url + INDEX_SUFFIX;
    if (await isFileAt(index)) return { set: index };
    throw e;
  }
}

/** Checks a shard against its index record: size and header CRC32C (read now, unless `read` gives them). */
async function checkShardRecord(
  index: ShardIndex,
  record: ShardRecord,
  read?: { crc: number; size: number },
): Promise<void> {
  const file = inPlace(placeOf(index.path), record.file);
  const { crc: headerCrc, size } = read ?? (await shardHeaderCrc(file));
  if (size !== record.size || headerCrc !== record.headerCrc32c) {
    throw new CheckpointError(
      ErrorCode.CHECKSUM,
      `Shard ${file} does not match ${index.path}: ` +
        (size !== record.size
          ? `its size is ${size} bytes, the index says ${record.size}`
          : 'its header checksum differs from the one the index records (another set, or altered)'),
      { path: file },
    );
  }
}

/**
 * Opens shard `i` of a set for a reader (resolveCheckpoint in `verify`'s mode), checked against its index record
 * first when `check` and the index is ours: on s3:// from the header bytes the reader goes on from (one GET serves
 * both), locally by a read of its own.
 */
async function openShard(
  index: ShardIndex,
  i: number,
  verify: boolean | 'if-present',
  check: boolean,
): Promise<{ file: string; where: ResolvedCheckpoint }> {
  const file = inPlace(placeOf(index.path), index.files[i]);
  const record = check ? index.ours?.shards[i] : undefined;
  if (record && !isObjectLocation(file)) await checkShardRecord(index, record);
  const where = await resolveCheckpoint(file, verify);
  if (record && where.kind === 'object') await checkShardRecord(index, record, openedHeaderCrc(where.opened));
  return { file, where };
}

/** Refuses a shard whose tensors differ from what the index maps to it. */
function checkShardTensors(index: ShardIndex, shard: string, names: readonly string[]): void {
  const shardPath = inPlace(placeOf(index.path), shard);
  for (const n of names) {
    if (index.weightMap[n] !== shard) {
      throw corruptIndex(
        index.path,
        `shard ${shardPath} holds tensor ${JSON.stringify(n)}, which its weight_map ` +
          (Object.hasOwn(index.weightMap, n) ? `maps to ${index.weightMap[n]}` : 'does not list'),
      );
    }
  }
  const expected = Object.keys(index.weightMap).filter((n) => index.weightMap[n] === shard).length;
  if (expected !== names.length) {
    const have = new Set(names);
    const missing = Object.keys(index.weightMap).find((n) => index.weightMap[n] === shard && !have.has(n));
    throw corruptIndex(index.path, `its weight_map maps ${JSON.stringify(missing)} to ${shardPath}, which lacks it`);
  }
}

function checkShardMetadata(index: ShardIndex, shard: string, metadata: Record<string, string>): void {
  const want = index.ours?.metadata;
  if (!want) return;
  const keys = Object.keys(metadata);
  if (keys.length !== Object.keys(want).length || keys.some((k) => want[k] !== metadata[k])) {
    throw corruptIndex(index.path, `shard ${shard}'s metadata differs from the index's`);
  }
}

function unverifiedSet(index: ShardIndex): CheckpointError {
  return new CheckpointError(
    ErrorCode.UNVERIFIED,
    `${index.path} is a shard index without tfjs-checkpoint checksums (written by another tool); load it with ` +
      '{ verify: false }',
    { path: index.path },
  );
}

/** How many times a read of a set is retried when saves keep replacing it under the reader. */
const READ_ATTEMPTS = 10;

/** What identifies a set: its id (ours), else its shard list. */
function setKey(index: ShardIndex): string {
  return index.ours?.setId ?? index.files.join('\0');
}

/**
 * Runs `read` on the set the index names. Shards are never modified, only deleted once a new set has replaced theirs,
 * so a read that succeeds read one set; one that fails because a save of the same name committed a new set meanwhile
 * (and deleted the shards being read) is retried on the new set, like a single file replaced while being read.
 */
async function readStable<T>(indexPath: string, read: (index: ShardIndex) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const index = await readShardIndex(indexPath);
    try {
      return await read(index);
    } catch (e) {
      const now = await readShardIndex(indexPath).catch(() => undefined);
      if (now && setKey(now) === setKey(index)) throw e;
      if (attempt >= READ_ATTEMPTS) {
        throw new CheckpointError(
          ErrorCode.CORRUPT,
          `Could not read ${indexPath}: its shard set was replaced while being read, ${READ_ATTEMPTS} times in a row`,
          { path: indexPath },
        );
      }
    }
  }
}

/** Loads every tensor of a set (shards read in parallel, each verified as a single file is, and against the index). */
export async function loadShardSet(
  indexPath: string,
  verify: boolean,
  concurrency?: number,
  mmap = false,
): Promise<LoadedTensors> {
  return readStable(indexPath, (index) => loadSet(index, verify, concurrency, mmap));
}

async function loadSet(index: ShardIndex, verify: boolean, concurrency?: number, mmap = false): Promise<LoadedTensors> {
  if (verify && !index.ours) throw unverifiedSet(index);
  const stack = captureStack();
  const loaded = await pool(index.files, concurrency ?? os.availableParallelism(), async (shard, i) => {
    const { file, where } = await openShard(index, i, verify, verify);
    const one = await loadResolved(file, where, verify, mmap, undefined, stack);
    checkShardTensors(index, shard, Object.keys(one.tensors));
    checkShardMetadata(index, shard, one.metadata);
    return one;
  });
  const tensors: LoadedTensors['tensors'] = {};
  for (const one of loaded) for (const [k, v] of Object.entries(one.tensors)) setOwn(tensors, k, v);
  // The set is as verified as its least verified shard.
  const verification: LoadedTensors['verification'] = loaded.some((one) => one.verification === 'unverified')
    ? 'unverified'
    : loaded.some((one) => one.verification === 'verified-resaved')
      ? 'verified-resaved'
      : 'verified';
  return { tensors, metadata: index.ours?.metadata ?? loaded[0]?.metadata ?? {}, verification };
}

/** Shard details of a set's CheckpointInfo. */
export interface ShardInfo {
  file: string;
  fileSize: number;
  tensors: number;
}

/** A set's header information: every shard's header read (and its CRC checked), nothing else. */
export async function readShardSetInfo(indexPath: string): Promise<CheckpointInfo> {
  return readStable(indexPath, setInfo);
}

async function setInfo(index: ShardIndex): Promise<CheckpointInfo> {
  const tensors: CheckpointInfo['tensors'] = [];
  const shards: ShardInfo[] = [];
  let fileSize = 0;
  let formatVersion: string | undefined = index.ours ? FORMAT_VERSION : undefined;
  let metadata = index.ours?.metadata;
  for (const [i, shard] of index.files.entries()) {
    const info = await readShardInfo(index, i);
    if (info.formatVersion === undefined) formatVersion = undefined;
    metadata ??= info.metadata;
    tensors.push(...info.tensors);
    shards.push({ file: shard, fileSize: info.fileSize, tensors: info.tensors.length });
    fileSize += info.fileSize;
  }
  return {
    path: index.path,
    fileSize,
    dataStart: 0,
    tensors,
    metadata: metadata ?? {},
    ...(formatVersion ? { formatVersion } : {}),
    shards,
  };
}

/** Shard `i` of a set: its record in the index (when ours) checked, its header read and checked against the index. */
async function readShardInfo(index: ShardIndex, i: number): Promise<CheckpointInfo> {
  const shard = index.files[i];
  const { file, where } = await openShard(index, i, 'if-present', true);
  const info = await infoResolved(file, where);
  checkShardTensors(
    index,
    shard,
    info.tensors.map((t) => t.name),
  );
  checkShardMetadata(index, shard, info.metadata);
  return info;
}

/** Verifies a set: the index against every shard (size, header CRC, tensors), then each shard's checksums. */
export async function verifyShardSet(indexPath: string, options: VerifyCheckpointArgs): Promise<VerifyResult> {
  return readStable(indexPath, (index) => verifySet(index, options));
}

async function verifySet(index: ShardIndex, options: VerifyCheckpointArgs): Promise<VerifyResult> {
  if (!index.ours) throw unverifiedSet(index);
  const infos: CheckpointInfo[] = [];
  for (const i of index.files.keys()) infos.push(await readShardInfo(index, i));
  const total = infos.reduce((a, info) => a + info.tensors.reduce((b, t) => b + t.byteLength, 0), 0);
  let before = 0;
  let tensors = 0;
  const { onProgress } = options;
  for (const info of infos) {
    const r = await verifyCheckpoint(info.path, {
      ...(options.groupBytes !== undefined ? { groupBytes: options.groupBytes } : {}),
      ...(onProgress ? { onProgress: (done: number) => onProgress(before + done, total) } : {}),
    });
    before += r.bytes;
    tensors += r.tensors;
  }
  return { path: index.path, tensors, bytes: before, shards: infos.length };
}
