/**
 * How a checkpoint is laid out as a shard set (Hugging Face's layout, see shards.ts): the index and shard file names,
 * the shard size a save takes (maxShardSize), the split of the tensors into shards, and the bounded pool that
 * writes or reads them.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { integerArg } from '../args';
import { invalidArgument } from '../errors';
import { placeOf } from './shard-place';

/** What follows a checkpoint's name in its index's name (HF: `model.safetensors.index.json`). */
export const INDEX_SUFFIX = '.index.json';

/** Hugging Face's default shard size (transformers' `max_shard_size="5GB"`, decimal). */
export const DEFAULT_MAX_SHARD_SIZE = 5_000_000_000;

/** A shard file of ours: `<stem>-<set id>-<i>-of-<n>.safetensors`. */
export const SHARD_PATTERN = /^(.*)-([0-9a-f]{8})-(\d{5})-of-(\d{5})\.safetensors$/;

/** The names of a checkpoint `target` saved as a set. */
export interface SetNames {
  /** The logical checkpoint path (what a single-file save would write). */
  target: string;
  index: string;
  /** The directory, or the s3:// prefix (shard-place.ts). */
  dir: string;
  /** The shard name prefix: the target's basename without `.safetensors`. */
  stem: string;
}

/** The index and shard prefix of the checkpoint `target` (absolute or s3://; `x.safetensors` or its index's path). */
export function setNames(target: string): SetNames {
  const logical = target.endsWith(INDEX_SUFFIX) ? target.slice(0, -INDEX_SUFFIX.length) : target;
  const base = path.basename(logical);
  return {
    target: logical,
    index: logical + INDEX_SUFFIX,
    dir: placeOf(logical),
    stem: base.endsWith('.safetensors') ? base.slice(0, -'.safetensors'.length) : base,
  };
}

export function shardName(stem: string, setId: string, i: number, n: number): string {
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
  if (typeof v === 'number') return integerArg(v, what, { min: 1, expected });
  if (typeof v !== 'string') invalidArgument(what, expected, v);
  const m = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*$/.exec(v);
  const unit = m ? SIZE_UNITS[m[2].toUpperCase()] : undefined;
  const bytes = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 1) invalidArgument(what, expected, v);
  return bytes;
}

/** Validates a shard concurrency; default: the machine's core count. */
export function parseConcurrency(v: unknown, what: string): number {
  return v === undefined ? os.availableParallelism() : integerArg(v, what, { min: 1 });
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
