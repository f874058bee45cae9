/**
 * `npm run bench -- --only shards`: a 4 GiB state dict (the layout of layout.ts) saved durably as one file and as a
 * shard set (1 GiB shards, HF's layout), the set written and read with 1 writer/reader and with one per core; then
 * each loaded back (verified) from a cold page cache when caches can be dropped. One run of each (4 GiB apiece: the
 * machine is shared), each in a fresh child process. Writes bench/results/shards.{json,md}.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Job, OpResult } from './jobs';
import { MiB, fixed, markdownTable, mibps, sizeLabel } from './stats';
import { dropCaches, syncAll } from './system';

export const SHARDS_BYTES = 4 * 1024 * MiB;
export const SHARD_SIZE = 1024 * MiB;

export interface ShardRun {
  config: string;
  maxShardSize: number | null;
  concurrency: number;
  shards: number;
  save: OpResult | { error: string };
  load: OpResult | { error: string };
  coldLoad: boolean;
}

export interface ShardsResults {
  date: string;
  bytes: number;
  cores: number;
  runs: ShardRun[];
}

type RunChild = <T>(job: Job) => Promise<T>;

async function attempt(f: () => Promise<OpResult>): Promise<OpResult | { error: string }> {
  try {
    return await f();
  } catch (e) {
    return { error: (e as Error).message };
  }
}

export async function benchShards(
  work: string,
  canDrop: boolean,
  runChild: RunChild,
  log: (m: string) => void,
): Promise<ShardsResults> {
  const cores = os.availableParallelism();
  const configs = [
    { config: 'one file', maxShardSize: null, concurrency: 1 },
    { config: `shards of ${sizeLabel(SHARD_SIZE)}, 1 at a time`, maxShardSize: SHARD_SIZE, concurrency: 1 },
    { config: `shards of ${sizeLabel(SHARD_SIZE)}, ${cores} at a time`, maxShardSize: SHARD_SIZE, concurrency: cores },
  ];
  const runs: ShardRun[] = [];
  for (const c of configs) {
    const dir = path.join(work, `shards-${runs.length}`);
    fs.mkdirSync(dir, { recursive: true });
    if (!canDrop || !dropCaches()) syncAll();
    const save = await attempt(() => runChild<OpResult>({ op: 'shard-save', bytes: SHARDS_BYTES, dir, ...c }));
    const set = c.maxShardSize !== null;
    const target = path.join(dir, set ? 'model.safetensors.index.json' : 'model.safetensors');
    const shards = fs.readdirSync(dir).filter((n) => n.endsWith('.safetensors')).length;
    log(`shards: save ${c.config}: ${'error' in save ? save.error : `${fixed(save.ms)} ms`} (${shards} file(s))`);
    const coldLoad = canDrop && dropCaches();
    const load = await attempt(() =>
      runChild<OpResult>({ op: 'shard-load', bytes: SHARDS_BYTES, target, concurrency: c.concurrency }),
    );
    log(`shards: load ${c.config}: ${'error' in load ? load.error : `${fixed(load.ms)} ms`}`);
    runs.push({ ...c, shards, save, load, coldLoad });
    fs.rmSync(dir, { recursive: true, force: true });
    syncAll();
  }
  return { date: new Date().toISOString(), bytes: SHARDS_BYTES, cores, runs };
}

function cell(r: OpResult | { error: string }, bytes: number): string[] {
  if ('error' in r) return [`failed: ${r.error.slice(0, 80)}`, '', ''];
  return [fixed(r.ms), fixed(mibps(bytes, r.ms)), r.peakExtraKiB === undefined ? 'n/a' : fixed(r.peakExtraKiB / 1024)];
}

export function shardsReport(res: ShardsResults): string {
  const rows = res.runs.map((r) => [
    r.config,
    String(r.shards),
    ...cell(r.save, res.bytes),
    ...cell(r.load, res.bytes),
  ]);
  const cold = res.runs.every((r) => r.coldLoad) ? 'cold page cache' : 'warm page cache (caches could not be dropped)';
  return (
    `# Shards: ${sizeLabel(res.bytes)} state dict, ${res.cores} cores, ${res.date}\n\n` +
    `Durable saves (native backend); loads verified, ${cold}. One run each. Peak = RSS above the weights held.\n\n` +
    markdownTable(
      ['layout', 'files', 'save ms', 'save MiB/s', 'save peak MiB', 'load ms', 'load MiB/s', 'load peak MiB'],
      rows,
    ) +
    '\n'
  );
}
