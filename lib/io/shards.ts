/**
 * Sharded checkpoints (Hugging Face's layout): a checkpoint split into shard files, each an ordinary checkpoint file
 * of this library, plus an index `<name>.index.json` that maps every tensor to its shard:
 *
 *   model.safetensors.index.json                 {"metadata": {"total_size": N, ...}, "weight_map": {tensor: file}}
 *   model-<set id>-00001-of-00003.safetensors    shard 1 (its own header CRC and tensor CRC32Cs, the user metadata)
 *   ...
 *
 * Commit protocol (docs/FORMAT.md, "Shard sets"): every set gets a fresh set id (8 random hex digits) in its shard
 * names, so writing a set never touches the files of the set it replaces. The shards are written first, in parallel,
 * each atomically by the ordinary single-file path (temp file, fsync, rename, directory fsync); the index last, the
 * same way: its rename is the commit point. Until then readers see the previous set (or nothing), whole; after it the
 * new set, whole. Only then are the replaced set's shards deleted; shards no index references (a crashed save's)
 * are deleted by a later save of that name once FOREIGN_TEMP_MAX_AGE_MS old (a set in progress keeps touching its
 * finished shards, see HEARTBEAT_MS), and at once by a CheckpointManager, which holds its directory's lock.
 *
 * Memory: the writers write straight from the caller's TypedArrays (no copy), so a save holds only headers, whatever
 * the number of parallel writers. Reading a set reads its shards in parallel with the same bound on concurrency.
 *
 * Our additions to the index live in its "metadata" map under `tfjs_checkpoint.*` keys (HF readers read only
 * `weight_map`): the format version, the set id, each shard's size and the CRC32C of its header bytes, and the user
 * metadata (which every shard carries as well).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CheckpointError, ErrorCode, fromNodeError, invalidArgument, isPlainObject } from '../errors';
import { FORMAT_VERSION, HeaderInput, readHeaderLength, setOwn } from '../format/header';
import { getBackend } from '../backend/select';
import { FOREIGN_TEMP_MAX_AGE_MS } from '../fs/tempfiles';
import { writeTextAtomic } from '../fs/atomic-text';
import { readCheckpointInfo } from './info';
import { loadTensors } from './load';
import { notAFile, openRegularFile } from './open-file';
import { writeCheckpointFile } from './save';
import type { CheckpointInfo, LoadedTensors, NamedTensors, VerifyCheckpointArgs, VerifyResult } from './types';
import { verifyCheckpoint } from './verify';

/** What follows a checkpoint's name in its index's name (HF: `model.safetensors.index.json`). */
export const INDEX_SUFFIX = '.index.json';
/** Hugging Face's default shard size (transformers' `max_shard_size="5GB"`, decimal). */
export const DEFAULT_MAX_SHARD_SIZE = 5_000_000_000;
/** A shard file of ours: `<stem>-<set id>-<i>-of-<n>.safetensors`. */
export const SHARD_PATTERN = /^(.*)-([0-9a-f]{8})-(\d{5})-of-(\d{5})\.safetensors$/;
/** How often a set in progress refreshes the mtime of its finished shards, so no other save takes them for stale. */
export const HEARTBEAT_MS = 60_000;
/** The largest index file read (HF indexes of 100B-parameter models are a few MB). */
const MAX_INDEX_BYTES = 256 * 1024 * 1024;

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

/** The names of a checkpoint `target` saved as a set. */
export interface SetNames {
  /** The logical checkpoint path (what a single-file save would write). */
  target: string;
  index: string;
  dir: string;
  /** The shard name prefix: the target's basename without `.safetensors`. */
  stem: string;
}

/** The index and shard prefix of the checkpoint `target` (absolute; `x.safetensors` or its index's path). */
export function setNames(target: string): SetNames {
  const logical = target.endsWith(INDEX_SUFFIX) ? target.slice(0, -INDEX_SUFFIX.length) : target;
  const base = path.basename(logical);
  return {
    target: logical,
    index: logical + INDEX_SUFFIX,
    dir: path.dirname(logical),
    stem: base.endsWith('.safetensors') ? base.slice(0, -'.safetensors'.length) : base,
  };
}

function shardName(stem: string, setId: string, i: number, n: number): string {
  return `${stem}-${setId}-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
}

const SIZE_UNITS: Record<string, number> = {
  B: 1,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  KIB: 2 ** 10,
  MIB: 2 ** 20,
  GIB: 2 ** 30,
  TIB: 2 ** 40,
};

/**
 * Validates a maxShardSize: a positive integer of bytes, or a string as transformers takes it ("5GB" = 5e9 bytes,
 * "500MiB" = 500 * 2^20; units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB, case-insensitive).
 */
export function parseShardSize(v: unknown, what: string): number {
  const expected = 'a positive integer of bytes or a size string such as "5GB" or "512MiB"';
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 1) invalidArgument(what, expected, v);
    return v;
  }
  if (typeof v !== 'string') invalidArgument(what, expected, v);
  const m = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*$/.exec(v);
  const unit = m ? SIZE_UNITS[m[2].toUpperCase()] : undefined;
  const bytes = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 1) invalidArgument(what, expected, v);
  return bytes;
}

/** Validates a shard concurrency; default: the machine's core count. */
export function parseConcurrency(v: unknown, what: string): number {
  if (v === undefined) return os.availableParallelism();
  if (!Number.isSafeInteger(v) || (v as number) < 1) invalidArgument(what, 'an integer >= 1', v);
  return v as number;
}

/**
 * Splits tensors (in the caller's order) into shards of at most `max` data bytes, as transformers does: a tensor
 * that does not fit in the current shard starts a new one; a tensor larger than `max` gets a shard of its own.
 * Returns the input indices of each shard.
 */
export function planShards(byteLengths: readonly number[], max: number): number[][] {
  const shards: number[][] = [];
  let current: number[] = [];
  let size = 0;
  byteLengths.forEach((b, i) => {
    if (current.length > 0 && size + b > max) {
      shards.push(current);
      current = [];
      size = 0;
    }
    current.push(i);
    size += b;
  });
  if (current.length > 0 || shards.length === 0) shards.push(current);
  return shards;
}

/** Runs `fn` over `items`, at most `limit` at a time. After a failure launches nothing more, waits for the running
 * ones, and rejects with the first failure. */
async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i], i);
      } catch (e) {
        failure ??= { error: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.error;
  return results;
}

/** The first 8 + N bytes of a checkpoint file (its length prefix and JSON header), and the file's size. */
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

/** Set ids of saves in progress in this process (their unreferenced shards are never stale). */
const writing = new Set<string>();

export interface ShardSetArgs {
  metadata: Record<string, string>;
  durable: boolean;
  maxShardSize: number;
  concurrency: number;
  stack: string;
}

/** What saveShardSet wrote. */
export interface ShardSetResult {
  index: string;
  shards: ShardRecord[];
  /** Bytes of all shards and the index. */
  bytes: number;
}

/**
 * Saves validated tensors as a shard set named after `target` (see the module comment). `inputs` are in the caller's
 * order, with names. On failure nothing of the new set remains (the shards written are deleted) and the previous set
 * is intact, except when only the index's directory fsync failed: then the error has `committed: true`, the new set is
 * in place, and the previous set's shards are kept (power loss could bring its index back).
 */
export async function saveShardSet(
  target: string,
  tensors: NamedTensors,
  inputs: readonly HeaderInput[],
  args: ShardSetArgs,
): Promise<ShardSetResult> {
  const names = setNames(target);
  const groups = planShards(
    inputs.map((t) => t.byteLength),
    args.maxShardSize,
  );
  const setId = randomBytes(4).toString('hex');
  const files = groups.map((_, i) => shardName(names.stem, setId, i, groups.length));
  if (files.some((f) => Buffer.byteLength(f) > 255)) {
    invalidArgument('the checkpoint name', 'short enough for its shard names (at most 255 bytes)', names.stem);
  }
  const done: string[] = [];
  writing.add(setId);
  // A set in progress keeps its finished shards fresh, so another process' save does not take them for a crash's.
  const heartbeat = setInterval(() => {
    const now = new Date();
    for (const f of done) void fsp.utimes(path.join(names.dir, f), now, now).catch(() => undefined);
  }, HEARTBEAT_MS);
  heartbeat.unref();
  let shards: ShardRecord[];
  try {
    shards = await pool(groups, args.concurrency, async (group, i) => {
      const file = path.join(names.dir, files[i]);
      const subset: NamedTensors = {};
      for (const k of group) setOwn(subset, inputs[k].name, tensors[inputs[k].name]);
      try {
        await writeCheckpointFile(
          file,
          subset,
          group.map((k) => inputs[k]),
          args.metadata,
          args.durable,
          args.stack,
        );
      } catch (e) {
        // A shard whose rename succeeded (only its directory fsync failed) is there: remove it with the others.
        if ((e as { committed?: unknown }).committed === true) done.push(files[i]);
        throw e;
      }
      done.push(files[i]);
      const { head, size } = await readHeaderBytes(file);
      return { file: files[i], size, headerCrc32c: getBackend().crc32c(head) };
    });
  } catch (e) {
    clearInterval(heartbeat);
    writing.delete(setId);
    for (const f of done) await fsp.unlink(path.join(names.dir, f)).catch(() => undefined);
    // The set was not committed, whatever one shard's rename did.
    if (e instanceof CheckpointError) delete (e as { committed?: true }).committed;
    throw e;
  }
  clearInterval(heartbeat);

  const weightMap: Record<string, string> = {};
  const sorted = groups.flatMap((g, i) => g.map((k) => [inputs[k].name, files[i]] as const));
  sorted.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  for (const [name, file] of sorted) setOwn(weightMap, name, file);
  const totalSize = inputs.reduce((a, t) => a + t.byteLength, 0);
  const index = {
    metadata: {
      total_size: totalSize,
      [META_FORMAT]: FORMAT_VERSION,
      [META_SET_ID]: setId,
      [META_SHARDS]: shards.map((s) => ({
        file: s.file,
        size: s.size,
        header_crc32c: s.headerCrc32c.toString(16).padStart(8, '0'),
      })),
      [META_USER]: args.metadata,
    },
    weight_map: weightMap,
  };
  const text = JSON.stringify(index, null, 2) + '\n';
  // What the index replaces: read just before the commit, its shards are deleted once the new index is in place.
  const previous = await readShardIndex(names.index).catch(() => undefined);
  try {
    await writeTextAtomic(names.index, text, args.durable, 'write the shard index');
  } catch (e) {
    writing.delete(setId);
    if ((e as { committed?: unknown }).committed !== true) {
      for (const f of done) await fsp.unlink(path.join(names.dir, f)).catch(() => undefined);
    }
    throw e;
  }
  writing.delete(setId);
  const keep = new Set(files);
  const stale = (previous?.files ?? []).filter((f) => !keep.has(f));
  for (const f of stale) await fsp.unlink(path.join(names.dir, f)).catch(() => undefined);
  // A single file under the same name would shadow the set for readers of `target`: it is replaced too.
  if (target !== names.index) await fsp.unlink(names.target).catch(() => undefined);
  await removeOrphanShards(names.dir, { stem: names.stem, minAgeMs: FOREIGN_TEMP_MAX_AGE_MS });
  return {
    index: names.index,
    shards,
    bytes: shards.reduce((a, s) => a + s.size, 0) + Buffer.byteLength(text),
  };
}

function corruptIndex(file: string, why: string): CheckpointError {
  return new CheckpointError(ErrorCode.CORRUPT, `Corrupt shard index ${file}: ${why}`, { path: file });
}

/** A shard file name as an index may give it: a plain name in the index's directory. */
function isPlainFileName(f: unknown): f is string {
  return typeof f === 'string' && f.length > 0 && f !== '.' && f !== '..' && !/[/\\\0]/.test(f);
}

/** Reads and validates an index (ours or another tool's, e.g. transformers' save_pretrained). */
export async function readShardIndex(file: string): Promise<ShardIndex> {
  let text: string;
  const { handle, stat } = await openRegularFile(file, 'open the shard index');
  try {
    if (stat.size > MAX_INDEX_BYTES) throw corruptIndex(file, `larger than ${MAX_INDEX_BYTES} bytes`);
    text = await handle.readFile('utf8');
  } catch (e) {
    throw fromNodeError(e, file, 'read the shard index');
  } finally {
    await handle.close().catch(() => undefined);
  }
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

/**
 * Where a reader's path leads: a single checkpoint file, or a shard set's index. A directory leads to the one
 * `*.safetensors.index.json` it holds (refused when it holds none or several); `x.index.json` is an index; `x` that
 * does not exist but `x.index.json` does is that set (what a sharded save to `x` wrote). Anything else: the file.
 */
export async function resolveCheckpoint(abs: string): Promise<{ kind: 'file' } | { kind: 'set'; index: string }> {
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

/** Checks a shard against its index record: size and header CRC32C. */
async function checkShardRecord(index: ShardIndex, record: ShardRecord): Promise<void> {
  const file = path.join(path.dirname(index.path), record.file);
  const { head, size } = await readHeaderBytes(file);
  if (size !== record.size || getBackend().crc32c(head) !== record.headerCrc32c) {
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

/** Refuses a shard whose tensors differ from what the index maps to it. */
function checkShardTensors(index: ShardIndex, shard: string, names: readonly string[]): void {
  const shardPath = path.join(path.dirname(index.path), shard);
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
  const dir = path.dirname(index.path);
  const loaded = await pool(index.files, concurrency ?? os.availableParallelism(), async (shard, i) => {
    if (verify && index.ours) await checkShardRecord(index, index.ours.shards[i]);
    const one = await loadTensors(path.join(dir, shard), { verify, mmap });
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
  if (index.ours) await checkShardRecord(index, index.ours.shards[i]);
  const info = await readCheckpointInfo(path.join(path.dirname(index.path), shard));
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

/** Whether the checkpoint `target` exists, as a file or as a set (its index). */
export async function checkpointExists(target: string): Promise<boolean> {
  if ((await fsp.stat(target).catch(() => undefined))?.isFile()) return true;
  return (await fsp.stat(setNames(target).index).catch(() => undefined))?.isFile() === true;
}

/** The bytes a checkpoint takes: the file's size, or a set's shards and index; null when there is none. */
export async function checkpointSize(target: string): Promise<number | null> {
  const st = await fsp.stat(target).catch(() => undefined);
  if (st?.isFile() && !target.endsWith(INDEX_SUFFIX)) return st.size;
  const names = setNames(target);
  const ist = await fsp.stat(names.index).catch(() => undefined);
  if (!ist?.isFile()) return null;
  const index = await readShardIndex(names.index).catch(() => undefined);
  let size = ist.size;
  for (const f of index?.files ?? [])
    size += (await fsp.stat(path.join(names.dir, f)).catch(() => undefined))?.size ?? 0;
  return size;
}

/** The index, total bytes (shards and index) and shard count of the set saved under `target`. */
export async function shardSetSummary(target: string): Promise<{ index: string; bytes: number; shards: number }> {
  const names = setNames(target);
  const index = await readShardIndex(names.index);
  return { index: names.index, bytes: (await checkpointSize(names.index)) ?? 0, shards: index.files.length };
}

/**
 * After a single-file save to `target`: removes a set saved under the same name (its index, then its shards), which
 * readers of the directory would otherwise still find. Best effort: the save has succeeded, and what cannot be
 * removed is a complete older set, never a half one.
 */
export async function removeSupersededSet(target: string): Promise<void> {
  const names = setNames(target);
  if (target === names.index || !(await fsp.stat(names.index).catch(() => undefined))?.isFile()) return;
  const index = await readShardIndex(names.index).catch(() => undefined);
  if (
    !(await fsp.unlink(names.index).then(
      () => true,
      () => false,
    ))
  )
    return;
  for (const f of index?.files ?? []) await fsp.unlink(path.join(names.dir, f)).catch(() => undefined);
}

/**
 * Deletes the checkpoint `target`: the file, and the set of that name, index first (so no half set is ever
 * visible: a crash midway leaves unreferenced shards, which are garbage-collected), then its shards. Absent parts
 * count as deleted; another failure rejects with the OS code.
 */
export async function removeCheckpoint(target: string): Promise<void> {
  const names = setNames(target);
  const unlink = async (p: string) => {
    try {
      await fsp.unlink(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fromNodeError(e, p, 'delete');
    }
  };
  if (target !== names.index) await unlink(names.target);
  const index = await readShardIndex(names.index).catch(() => undefined);
  await unlink(names.index);
  for (const f of index?.files ?? []) await unlink(path.join(names.dir, f));
}

/** Whether an index file's text is valid JSON of another kind of index (no weight_map: the manager's). */
function isOtherIndex(text: string): boolean {
  try {
    const raw: unknown = JSON.parse(text);
    return isPlainObject(raw) && raw.weight_map === undefined;
  } catch {
    return false;
  }
}

/**
 * Deletes shard files of ours in `dir` that no index there references (a crashed or failed save's), of the stem
 * `stem` only when given, and only once their mtime is `minAgeMs` old (0: at once, for a caller holding the
 * directory's lock). Shards of saves in progress in this process are never deleted. Errors are ignored (nothing is
 * lost: what remains is unreferenced). Returns the names deleted.
 */
export async function removeOrphanShards(dir: string, opts: { stem?: string; minAgeMs: number }): Promise<string[]> {
  // Sets in progress before the listing: one committed meanwhile is in neither the indexes read nor `writing`.
  const busy = new Set(writing);
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return [];
  }
  const referenced = new Set<string>();
  for (const n of names.filter((x) => x.endsWith(INDEX_SUFFIX))) {
    let index: ShardIndex;
    try {
      index = await readShardIndex(path.join(dir, n));
    } catch {
      // Another kind of index (the manager's has no weight_map) references no shard; an unreadable one may
      // reference anything: then delete nothing.
      const text = await fsp.readFile(path.join(dir, n), 'utf8').catch(() => undefined);
      if (text !== undefined && isOtherIndex(text)) continue;
      return [];
    }
    for (const f of index.files) referenced.add(f);
  }
  const removed: string[] = [];
  for (const n of names) {
    const m = SHARD_PATTERN.exec(n);
    if (
      !m ||
      referenced.has(n) ||
      busy.has(m[2]) ||
      writing.has(m[2]) ||
      (opts.stem !== undefined && m[1] !== opts.stem)
    )
      continue;
    const st = await fsp.stat(path.join(dir, n)).catch(() => undefined);
    if (!st?.isFile() || Date.now() - st.mtimeMs < opts.minAgeMs) continue;
    if (
      await fsp.unlink(path.join(dir, n)).then(
        () => true,
        () => false,
      )
    )
      removed.push(n);
  }
  return removed;
}

/**
 * A directory's entries with shard sets under their checkpoint name (`x` for `x.index.json`) and our shard files
 * left out: what a scan for checkpoints of any name (the manager's) reads. Without dups.
 */
export function checkpointFileNames(entries: readonly string[]): string[] {
  const out = new Set<string>();
  for (const n of entries) {
    if (n.endsWith(INDEX_SUFFIX)) out.add(n.slice(0, -INDEX_SUFFIX.length));
    else if (!SHARD_PATTERN.test(n)) out.add(n);
  }
  return [...out];
}

/**
 * The checkpoints among a directory's entries, by logical name: `*.safetensors` files that are not shards of ours,
 * and each set under its checkpoint name (`x.safetensors` for `x.safetensors.index.json`). Sorted, without dups.
 */
export function checkpointNames(entries: readonly string[]): string[] {
  const out = new Set<string>();
  for (const n of entries) {
    if (n.startsWith('.')) continue;
    if (n.endsWith('.safetensors' + INDEX_SUFFIX)) out.add(n.slice(0, -INDEX_SUFFIX.length));
    else if (n.endsWith('.safetensors') && !SHARD_PATTERN.test(n)) out.add(n);
  }
  return [...out].sort();
}
