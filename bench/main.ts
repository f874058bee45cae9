/**
 * `npm run bench`: save and load throughput against the alternatives, peak memory, training-loop stall, CRC32C.
 *
 * Every figure is the median of `--reps` runs (default 3). Contenders are measured side by side in one run,
 * round-robin: repetition r runs every contender once (the order rotated by r) before repetition r + 1 starts. Each
 * Node contender runs in a fresh child process (child.ts) so that one's heap and peak RSS cannot affect another's.
 * Before every save the dirty pages are flushed and the page cache dropped (when permitted), and after it the files
 * are removed and flushed, so no run pays for another's writeback.
 *
 * Options: --large (adds a 5 GiB state dict), --reps N, --sizes 256,1024 (MiB), --dir DIR (where files are
 * written; default the OS temp dir), --only save,load,crc,stall,s3,shards (s3: bench/s3.ts, object storage on a local Ceph gateway), --no-profile (skip the strace breakdown),
 * --contenders id,id (only these save/load rows, e.g. `dd-direct,torch-fsync,st-load`; ids in SAVE_CONTENDERS and
 * LOAD_CONTENDERS), --out DIR (where results.{json,md} and shards.{json,md} go; default bench/results, so a partial
 * run need not overwrite the committed results), --no-drop-caches (never drop the page cache, even as root: loads
 * warm only; for a shared machine or a test). The Python peers (torch, safetensors) run from the venv of scripts/setup-bench-python.sh; when
 * one is missing the bench says so in one line and leaves its rows out. Likewise the tfjs-node rows (the file://
 * save, tf.loadLayersModel of file:// and safetensors:// on the tensorflow backend: bench/tfjs-io.ts) without a
 * built @tensorflow/tfjs-node (npm run setup:tfjs-node).
 * Writes (into --out) results.json and results.md. The `shards` section (bench/shards.ts: 4 GiB, one file vs a
 * shard set) runs only when named in --only, and writes bench/results/shards.{json,md}; `--only shards` alone
 * leaves results.{json,md} untouched.
 */
import { fork, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type {
  ChildReply,
  CrcImpl,
  CrcResult,
  Job,
  NodeLoadContender,
  NodeSaveContender,
  OpResult,
  RoundtripResult,
  StallResult,
} from './jobs';
import { makeLayout } from './layout';
import { tfjsModelFiles } from './tfjs-io';
import { benchShards, shardsReport } from './shards';
import { S3Summary, S3_MAX_BYTES, benchS3, s3Report, s3Targets } from './s3';
import { findPackageRoot, loadNativeBackend } from '../lib/backend/native-backend';
import { MiB, fixed, markdownTable, median, mibps, sizeLabel, spread } from './stats';
import { STALL_MODEL, loadCheckpointManager, tfjsNodeLoadError } from './stall';
import { PeerLoad, PeerSave, Peers, detectPeers, peerLoad, peerSave } from './peers';
import { ExternalRun, MachineInfo, ddRead, ddWrite, dropCaches, machineInfo, syncAll } from './system';

// ---------------------------------------------------------------------------------------------------------------
// Options

interface Options {
  large: boolean;
  reps: number;
  sizes: number[];
  dir: string;
  sections: Set<string>;
  profile: boolean;
  /** Save and load contender ids to run (--contenders); undefined: all. */
  contenders?: Set<string>;
  /** Where results.{json,md} go (--out); default bench/results of the checkout. */
  out?: string;
  /** Drop the page cache where permitted (--no-drop-caches: never; loads are then measured warm only). */
  dropCaches: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    large: false,
    reps: 3,
    sizes: [256 * MiB, 1024 * MiB],
    dir: os.tmpdir(),
    sections: new Set(['save', 'load', 'crc', 'stall', 's3']),
    profile: true,
    dropCaches: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--large') o.large = true;
    else if (a === '--reps') o.reps = Number(value());
    else if (a === '--sizes')
      o.sizes = value()
        .split(',')
        .map((s) => Math.round(Number(s) * MiB));
    else if (a === '--dir') o.dir = path.resolve(value());
    else if (a === '--only') o.sections = new Set(value().split(','));
    else if (a === '--no-profile') o.profile = false;
    else if (a === '--contenders') o.contenders = new Set(value().split(','));
    else if (a === '--out') o.out = path.resolve(value());
    else if (a === '--no-drop-caches') o.dropCaches = false;
    else throw new Error(`unknown option ${a} (see the top of bench/main.ts)`);
  }
  if (!Number.isInteger(o.reps) || o.reps < 1) throw new Error('--reps must be a positive integer');
  if (o.sizes.some((s) => !(s >= 65536) || s % 4 !== 0)) throw new Error('--sizes: MiB values, at least 0.0625');
  if (o.large) o.sizes.push(5 * 1024 * MiB);
  return o;
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes

/** The compiled child (dist/bench); run from the sources (`node -r <a TypeScript hook> bench/main.ts`), child.ts. */
const CHILD = fs.existsSync(path.join(__dirname, 'child.js'))
  ? path.join(__dirname, 'child.js')
  : path.join(__dirname, 'child.ts');
/** A TypeScript child needs the parent's require hook (its -r), a compiled one nothing. */
const CHILD_EXEC_ARGV = CHILD.endsWith('.ts') ? process.execArgv : [];

function runChild<T>(job: Job): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = fork(CHILD, [JSON.stringify(job)], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      execArgv: CHILD_EXEC_ARGV,
    });
    let reply: ChildReply | undefined;
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    child.on('message', (m) => (reply = m as ChildReply));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (reply?.ok) resolve(reply.result as T);
      else if (reply) reject(new Error(reply.error));
      else reject(new Error(`child exited (${signal ?? code}) without a result: ${stderr.trim().slice(-500)}`));
    });
  });
}

function log(msg: string): void {
  process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${msg}\n`);
}

function rotate<T>(xs: T[], by: number): T[] {
  const k = by % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

// ---------------------------------------------------------------------------------------------------------------
// Rows

type Kind = 'durable' | 'page-cache';

interface Row {
  section: 'save' | 'load';
  bytes: number;
  id: string;
  label: string;
  /** save: durable or page cache; load: warm or cold cache. */
  kind: Kind | 'warm' | 'cold';
  ms: number[];
  peakExtraKiB: number[];
  errors: string[];
}

function newRow(section: Row['section'], bytes: number, id: string, label: string, kind: Row['kind']): Row {
  return { section, bytes, id, label, kind, ms: [], peakExtraKiB: [], errors: [] };
}

function record(row: Row, r: OpResult | ExternalRun | { error: string }, peakFromRss = false): string {
  if ('error' in r && r.error !== undefined) {
    row.errors.push(r.error);
    return `failed: ${r.error.slice(0, 200)}`;
  }
  const ok = r as OpResult & ExternalRun;
  row.ms.push(ok.ms);
  const peak = peakFromRss ? ok.maxRssKiB : ok.peakExtraKiB;
  if (peak !== undefined) row.peakExtraKiB.push(peak);
  return (
    `${(ok.ms / 1000).toFixed(2)} s, ${mibps(row.bytes, ok.ms).toFixed(0)} MiB/s` +
    (peak !== undefined ? `, peak +${(peak / 1024).toFixed(0)} MiB` : '')
  );
}

const medianMs = (row: Row): number => median(row.ms);
const rate = (row: Row | undefined): number => (row && row.ms.length ? mibps(row.bytes, medianMs(row)) : NaN);

// ---------------------------------------------------------------------------------------------------------------
// Section 1+2: saves

type PythonSaveId = 'torch' | 'torch-fsync' | 'st' | 'st-fsync';

interface SaveContender {
  id: NodeSaveContender | 'dd-fsync' | 'dd-direct' | 'dd' | PythonSaveId;
  label: string;
  kind: Kind;
}

/** The peers.py mode of each Python save row, and which package it needs. */
const PYTHON_SAVES: Record<PythonSaveId, { mode: PeerSave; needs: 'torch' | 'safetensors' }> = {
  torch: { mode: 'torch', needs: 'torch' },
  'torch-fsync': { mode: 'torch-fsync', needs: 'torch' },
  st: { mode: 'st', needs: 'safetensors' },
  'st-fsync': { mode: 'st-fsync', needs: 'safetensors' },
};
const isPythonSave = (id: string): id is PythonSaveId => id in PYTHON_SAVES;

const SAVE_CONTENDERS: SaveContender[] = [
  { id: 'native-durable', label: 'tfjs-checkpoint native (durable)', kind: 'durable' },
  { id: 'js-durable', label: 'tfjs-checkpoint JS fallback (durable)', kind: 'durable' },
  { id: 'dd-fsync', label: 'dd conv=fsync (reference)', kind: 'durable' },
  {
    id: 'dd-direct',
    label: "dd oflag=direct conv=fsync (reference: the device's sequential write bandwidth)",
    kind: 'durable',
  },
  { id: 'torch-fsync', label: 'python torch.save of a state dict, then os.fsync', kind: 'durable' },
  { id: 'st-fsync', label: 'python safetensors.torch.save_file, then os.fsync', kind: 'durable' },
  { id: 'native-fast', label: 'tfjs-checkpoint native (durable: false)', kind: 'page-cache' },
  {
    id: 'tfjs-node',
    label: 'tfjs-node file:// handler, tensorflow backend (encodeWeights + NodeFileSystem)',
    kind: 'page-cache',
  },
  { id: 'writefile', label: 'fs.promises.writeFile (pre-concatenated)', kind: 'page-cache' },
  { id: 'dd', label: 'dd (reference)', kind: 'page-cache' },
  { id: 'torch', label: 'python torch.save of a state dict', kind: 'page-cache' },
  { id: 'st', label: 'python safetensors.torch.save_file', kind: 'page-cache' },
];

/** A Python save of the same layout (same names, shapes and bytes; contents seeded, not the JS pattern). */
function runPythonSave(peers: Peers, id: PythonSaveId, bytes: number, dir: string): OpResult | { error: string } {
  const layoutFile = path.join(dir, 'layout.json');
  fs.writeFileSync(layoutFile, JSON.stringify(makeLayout(bytes)));
  const out = path.join(dir, id.startsWith('st') ? 'model.safetensors' : 'model.pt');
  return peerSave(peers, PYTHON_SAVES[id].mode, layoutFile, out);
}

async function benchSaves(
  o: Options,
  work: string,
  peers: Peers,
  canDrop: boolean,
  unavailable: ReadonlySet<string>,
): Promise<Row[]> {
  const rows: Row[] = [];
  const contenders = SAVE_CONTENDERS.filter(
    (c) =>
      (!o.contenders || o.contenders.has(c.id)) &&
      !unavailable.has(c.id) &&
      (!isPythonSave(c.id) || peers[PYTHON_SAVES[c.id].needs]),
  );
  for (const bytes of o.sizes) {
    const mine = contenders.map((c) => newRow('save', bytes, c.id, c.label, c.kind));
    rows.push(...mine);
    for (let rep = 0; rep < o.reps; rep++) {
      for (const c of rotate(contenders, rep)) {
        const row = mine.find((r) => r.id === c.id) as Row;
        const dir = path.join(work, `save-${c.id}-${rep}`);
        fs.mkdirSync(dir, { recursive: true });
        if (!canDrop || !dropCaches()) syncAll();
        let result: OpResult | ExternalRun | { error: string };
        try {
          if (c.id === 'dd' || c.id === 'dd-fsync' || c.id === 'dd-direct')
            result = ddWrite(
              path.join(dir, 'dd.bin'),
              bytes,
              c.id === 'dd' ? 'none' : c.id === 'dd-fsync' ? 'fsync' : 'direct',
            );
          else if (isPythonSave(c.id)) result = runPythonSave(peers, c.id, bytes, dir);
          else result = await runChild<OpResult>({ op: 'save', contender: c.id, bytes, dir });
        } catch (e) {
          result = { error: (e as Error).message };
        }
        const line = record(row, result, c.id.startsWith('dd'));
        log(`save ${sizeLabel(bytes)} rep ${rep + 1}/${o.reps} ${c.id}: ${line}`);
        fs.rmSync(dir, { recursive: true, force: true });
        syncAll();
      }
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------------------------
// Section 3: loads

type PythonLoadId = 'torch-load' | 'st-load' | 'st-load-touch' | 'st-np-load';

interface LoadContender {
  id: NodeLoadContender | 'dd-read' | PythonLoadId;
  label: string;
}

/** The peers.py mode of each Python load row, and which package it needs. */
const PYTHON_LOADS: Record<PythonLoadId, { mode: PeerLoad; needs: 'torch' | 'safetensors' | 'safetensorsNumpy' }> = {
  'torch-load': { mode: 'torch', needs: 'torch' },
  'st-load': { mode: 'st', needs: 'safetensors' },
  'st-load-touch': { mode: 'st-touch', needs: 'safetensors' },
  'st-np-load': { mode: 'st-np', needs: 'safetensorsNumpy' },
};
const isPythonLoad = (id: string): id is PythonLoadId => id in PYTHON_LOADS;

const LOAD_CONTENDERS: LoadContender[] = [
  { id: 'native-verify', label: 'tfjs-checkpoint native loadTensors (CRC verified)' },
  {
    id: 'native-mmap',
    label: 'tfjs-checkpoint native loadTensors { mmap: true } (CRC verified, views of the page cache)',
  },
  {
    id: 'native-into',
    label: 'tfjs-checkpoint native loadTensors { into } (CRC verified, into touched caller arrays)',
  },
  { id: 'js-verify', label: 'tfjs-checkpoint JS fallback loadTensors (CRC verified)' },
  { id: 'raw-read', label: 'raw fs read into per-tensor buffers (no checks)' },
  { id: 'dd-read', label: 'dd of=/dev/null bs=8M (reference: one reused buffer)' },
  { id: 'alloc-touch', label: 'allocate and touch the same buffers, no I/O (reference)' },
  {
    id: 'torch-load',
    label: 'python torch.load (weights_only) of a torch.save file of the same layout (no checks)',
  },
  {
    id: 'st-load',
    label: 'python safetensors.torch.load_file of the same file (no checks; returns tensors over an mmap, unread)',
  },
  {
    id: 'st-load-touch',
    label: 'python safetensors.torch.load_file, then one read per 4 KiB page of every tensor (first use)',
  },
  { id: 'st-np-load', label: 'python safetensors.numpy.load_file of the same file (no checks)' },
  {
    id: 'tfjs-node-load',
    label:
      "tfjs-node tf.loadLayersModel('file://…/model.json'), tensorflow backend, of its own handler's save (no checks)",
  },
  {
    id: 'tfjs-node-st-load',
    label: "tf.loadLayersModel('safetensors://…') of this package, tensorflow backend, same model (CRC verified)",
  },
];

/** The rows that need @tensorflow/tfjs-node (its tensorflow backend, its file:// handler). */
const TFJS_NODE_ROWS = new Set<string>(['tfjs-node', 'tfjs-node-load', 'tfjs-node-st-load']);
const TFIO_ROUTES = { 'tfjs-node-load': 'file', 'tfjs-node-st-load': 'safetensors' } as const;
const isTfioLoad = (id: string): id is keyof typeof TFIO_ROUTES => id in TFIO_ROUTES;

/**
 * Why @tensorflow/tfjs-node does not load (undefined when it does), from the checkout's scripts/tfjs-node-probe.js,
 * found from dist/bench/ and from bench/ (a run from the sources) alike.
 */
function tfjsNodeProbe(): string | undefined {
  const root = findPackageRoot(__dirname) ?? process.cwd();
  const probe = require(path.join(root, 'scripts', 'tfjs-node-probe.js')) as {
    tfjsNodeLoadError(): string | undefined;
  };
  return probe.tfjsNodeLoadError();
}

/**
 * The tfjs-node rows' fate: given why @tensorflow/tfjs-node does not load (undefined: it loads, at `version`), the
 * rows to leave out and the one line the bench logs and reports.
 */
export function tfjsNodeRows(
  why: string | undefined,
  version?: string,
): { unavailable: ReadonlySet<string>; note: string } {
  if (why === undefined) {
    return {
      unavailable: new Set(),
      note: `tfjs-node rows: @tensorflow/tfjs-node ${version ?? '?'}, tensorflow backend`,
    };
  }
  return {
    unavailable: TFJS_NODE_ROWS,
    note:
      `tfjs-node rows (${[...TFJS_NODE_ROWS].join(', ')}) skipped: @tensorflow/tfjs-node does not load ` +
      `(${why.split('\n')[0]}); npm run setup:tfjs-node`,
  };
}

interface Roundtrip {
  bytes: number;
  /** A loadTensors backend, or the route of tf.loadLayersModel on tfjs-node. */
  backend: 'native' | 'js' | 'tfjs-node file://' | 'tfjs-node safetensors://';
  ok: boolean;
  detail: string;
}

async function benchLoads(
  o: Options,
  work: string,
  canDrop: boolean,
  peers: Peers,
  unavailable: ReadonlySet<string>,
): Promise<{ rows: Row[]; roundtrips: Roundtrip[] }> {
  const rows: Row[] = [];
  const roundtrips: Roundtrip[] = [];
  const contenders = LOAD_CONTENDERS.filter(
    (c) =>
      (!o.contenders || o.contenders.has(c.id)) &&
      !unavailable.has(c.id) &&
      (!isPythonLoad(c.id) || peers[PYTHON_LOADS[c.id].needs]),
  );
  const caches: ('warm' | 'cold')[] = canDrop ? ['warm', 'cold'] : ['warm'];
  for (const bytes of o.sizes) {
    const file = path.join(work, `load-${bytes}.safetensors`);
    log(`load ${sizeLabel(bytes)}: writing the checkpoint and checking the round trip`);
    await runChild({ op: 'create', bytes, file });
    // torch.load reads torch's own format: a torch.save file of the same layout, written once, untimed.
    const ptFile = path.join(work, `load-${bytes}.pt`);
    let ptError: string | undefined;
    if (contenders.some((c) => c.id === 'torch-load')) {
      const layoutFile = path.join(work, `layout-${bytes}.json`);
      fs.writeFileSync(layoutFile, JSON.stringify(makeLayout(bytes)));
      const r = peerSave(peers, 'torch', layoutFile, ptFile);
      if ('error' in r) ptError = r.error;
    }
    // tf.loadLayersModel reads a model: the layout saved by tfjs-node's file:// handler, and through safetensors://.
    const tfio = tfjsModelFiles(path.join(work, `tfio-${bytes}`));
    let tfioError: string | undefined;
    if (contenders.some((c) => isTfioLoad(c.id))) {
      try {
        await runChild({ op: 'create-tfjs', bytes, dir: path.dirname(tfio.safetensors) });
      } catch (e) {
        tfioError = (e as Error).message;
      }
    }
    const fileOf = (id: LoadContender['id']): string =>
      id === 'torch-load'
        ? ptFile
        : id === 'tfjs-node-load'
          ? tfio.modelJson
          : id === 'tfjs-node-st-load'
            ? tfio.safetensors
            : file;
    /** What a warm run reads beforehand: every file the contender reads. */
    const warmFiles = (id: LoadContender['id']): string[] =>
      id === 'tfjs-node-load' ? [tfio.modelJson, tfio.weightsBin] : [fileOf(id)];
    // The JS backend's round trip is checked only past 4 GiB (the cross-backend suite covers smaller files).
    for (const backend of bytes > 4 * 1024 * MiB ? (['native', 'js'] as const) : (['native'] as const)) {
      try {
        const r = await runChild<RoundtripResult>({ op: 'roundtrip', backend, bytes, file });
        roundtrips.push({ bytes, backend, ...r });
      } catch (e) {
        roundtrips.push({ bytes, backend, ok: false, detail: (e as Error).message });
      }
      const last = roundtrips[roundtrips.length - 1];
      log(`load ${sizeLabel(bytes)} round trip (${backend}): ${last.ok ? 'ok' : 'FAILED'}: ${last.detail}`);
    }
    for (const c of contenders.filter((x) => isTfioLoad(x.id))) {
      const route = TFIO_ROUTES[c.id as keyof typeof TFIO_ROUTES];
      const backend = route === 'file' ? 'tfjs-node file://' : 'tfjs-node safetensors://';
      if (tfioError) roundtrips.push({ bytes, backend, ok: false, detail: `writing the models failed: ${tfioError}` });
      else {
        try {
          const job: Job = { op: 'tfio-roundtrip', route, bytes, file: fileOf(c.id) };
          roundtrips.push({ bytes, backend, ...(await runChild<RoundtripResult>(job)) });
        } catch (e) {
          roundtrips.push({ bytes, backend, ok: false, detail: (e as Error).message });
        }
      }
      const last = roundtrips[roundtrips.length - 1];
      log(`load ${sizeLabel(bytes)} round trip (${backend}): ${last.ok ? 'ok' : 'FAILED'}: ${last.detail}`);
    }
    for (const cache of caches) {
      const mine = contenders.map((c) => newRow('load', bytes, c.id, c.label, cache));
      rows.push(...mine);
      for (let rep = 0; rep < o.reps; rep++) {
        for (const c of rotate(contenders, rep)) {
          const row = mine.find((r) => r.id === c.id) as Row;
          const setupError = c.id === 'torch-load' ? ptError : isTfioLoad(c.id) ? tfioError : undefined;
          if (cache === 'cold') dropCaches();
          else if (!setupError) warmFiles(c.id).forEach((f) => ddRead(f)); // make sure every page is cached
          let result: OpResult | ExternalRun | { error: string };
          try {
            if (c.id === 'dd-read') result = ddRead(file);
            else if (isTfioLoad(c.id) && tfioError) result = { error: `writing the models failed: ${tfioError}` };
            else if (isPythonLoad(c.id)) {
              result =
                c.id === 'torch-load' && ptError
                  ? { error: `writing the torch.save file failed: ${ptError}` }
                  : peerLoad(peers, PYTHON_LOADS[c.id].mode, fileOf(c.id), bytes);
            } else result = await runChild<OpResult>({ op: 'load', contender: c.id, bytes, file: fileOf(c.id) });
          } catch (e) {
            result = { error: (e as Error).message };
          }
          const line = record(row, result, c.id === 'dd-read');
          log(`load ${sizeLabel(bytes)} ${cache} rep ${rep + 1}/${o.reps} ${c.id}: ${line}`);
        }
      }
    }
    fs.rmSync(file, { force: true });
    fs.rmSync(ptFile, { force: true });
    fs.rmSync(path.dirname(tfio.safetensors), { recursive: true, force: true });
  }
  return { rows, roundtrips };
}

// ---------------------------------------------------------------------------------------------------------------
// Strace breakdown of a native save (what bounds it)

interface Profile {
  contender: NodeSaveContender;
  bytes: number;
  wallMs: number;
  /** Wall-clock seconds spent in each syscall (strace -f -c -w), the largest first. */
  syscalls: { name: string; seconds: number; calls: number }[];
}

/** File I/O system calls (idle threads' futex and epoll waits would otherwise dominate a wall-clock summary). */
const FILE_SYSCALLS = new Set([
  'write',
  'pwrite64',
  'writev',
  'pwritev',
  'pwritev2',
  'read',
  'pread64',
  'preadv',
  'fsync',
  'fdatasync',
  'sync_file_range',
  'fallocate',
  'ftruncate',
  'openat',
  'close',
  'rename',
  'renameat',
  'renameat2',
  'unlink',
  'unlinkat',
  'mkdir',
  'mkdirat',
  'statx',
  'newfstatat',
  'fstat',
  'copy_file_range',
]);

/** False under --no-drop-caches (set by main): nothing then drops the page cache. */
let mayDropCaches = true;

function straceSave(contender: NodeSaveContender, bytes: number, work: string): Profile | { error: string } {
  const dir = path.join(work, `strace-${contender}`);
  fs.mkdirSync(dir, { recursive: true });
  const out = path.join(work, `strace-${contender}.txt`);
  if (mayDropCaches) dropCaches();
  const job: Job = { op: 'save', contender, bytes, dir };
  const r = spawnSync(
    'strace',
    ['-f', '-c', '-w', '-o', out, process.execPath, ...CHILD_EXEC_ARGV, CHILD, JSON.stringify(job)],
    {
      encoding: 'utf8',
    },
  );
  fs.rmSync(dir, { recursive: true, force: true });
  syncAll();
  if (r.error || r.status !== 0) return { error: `strace failed: ${r.error?.message ?? r.stderr.slice(-300)}` };
  const reply = JSON.parse(r.stdout.trim().split('\n').pop() as string) as ChildReply;
  if (!reply.ok) return { error: reply.error };
  const syscalls: Profile['syscalls'] = [];
  for (const line of fs.readFileSync(out, 'utf8').split('\n')) {
    const m = /^\s*[\d.]+\s+([\d.]+)\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$/.exec(line);
    if (m && FILE_SYSCALLS.has(m[3])) syscalls.push({ name: m[3], seconds: Number(m[1]), calls: Number(m[2]) });
  }
  fs.rmSync(out, { force: true });
  syscalls.sort((a, b) => b.seconds - a.seconds);
  return { contender, bytes, wallMs: (reply.result as OpResult).ms, syscalls: syscalls.slice(0, 8) };
}

// ---------------------------------------------------------------------------------------------------------------
// Sections 4 and 5

type StallMode = 'none' | 'sync' | 'async';
/** `*-tfjs-node`: the loop on tfjs-node's tensorflow backend (snapshots copy out of TensorFlow there). */
type StallLoop = 'fit' | 'custom' | 'fit-tfjs-node' | 'custom-tfjs-node';
const onTfjsNode = (l: StallLoop): boolean => l.endsWith('-tfjs-node');
interface StallRuns {
  epochMs: number[];
  epochCpuMs: number[];
  stallMs: number[];
  stallCpuMs: number[];
  closeMs: number[];
  snapshotMs: number[];
  /** The manager's snapshot inside each step() (StallResult.stepSnapshotMs). */
  stepSnapshotMs: number[];
  saveMs: number[];
  writeMs: number[];
  /** step() call to the end of its commit plan (the executor's timestamp; see StallResult.durableMs). */
  durableMs: number[];
  /** Saves (all runs) whose step() started while the previous write was in flight, of `saves`. */
  inFlightAtStep: number;
  saves: number;
}

interface StallSummary {
  measured: boolean;
  note: string;
  weightBytes?: number;
  fileBytes?: number;
  /** The loops that ran (`fit-tfjs-node` only when tfjs-node loads; `tfjsNode` says why not). */
  loops?: Partial<Record<StallLoop, Record<StallMode, StallRuns>>>;
  tfjsNode?: string;
  /** What the CPU columns count: the JS thread alone, or (without schedstat) every thread of the process. */
  cpuSource?: StallResult['cpuSource'];
}

const STALL = { epochs: 6, samples: 256 };
const STALL_LOOPS: StallLoop[] = ['fit', 'custom', 'fit-tfjs-node', 'custom-tfjs-node'];
/** The loops of a summary, in STALL_LOOPS order. */
const loopsOf = (loops: StallSummary['loops']): StallLoop[] => STALL_LOOPS.filter((l) => loops?.[l] !== undefined);
const STALL_MODES: StallMode[] = ['none', 'sync', 'async'];

/** The sync and async runs of every loop on the same platform as `loop` (whose saveTensors references compare). */
function onTfjsNodeRuns(loop: StallLoop, loops: NonNullable<StallSummary['loops']>): StallRuns[] {
  return loopsOf(loops)
    .filter((l) => onTfjsNode(l) === onTfjsNode(loop))
    .flatMap((l) => [
      (loops[l] as Record<StallMode, StallRuns>).sync,
      (loops[l] as Record<StallMode, StallRuns>).async,
    ]);
}

async function benchStall(o: Options, work: string): Promise<StallSummary> {
  const Ctor = loadCheckpointManager();
  if (Ctor instanceof Error) {
    return {
      measured: false,
      note: `not measured: CheckpointManager is not available (${Ctor.message.split('\n')[0]})`,
    };
  }
  const empty = (): StallRuns => ({
    epochMs: [],
    epochCpuMs: [],
    stallMs: [],
    stallCpuMs: [],
    closeMs: [],
    snapshotMs: [],
    stepSnapshotMs: [],
    saveMs: [],
    writeMs: [],
    durableMs: [],
    inFlightAtStep: 0,
    saves: 0,
  });
  const nodeError = tfjsNodeLoadError();
  const tfjsNode =
    nodeError === undefined
      ? 'fit-tfjs-node, custom-tfjs-node: the same loops on @tensorflow/tfjs-node (tensorflow backend; ' +
        'captureCheckpoint copies every tensor out of TensorFlow there)'
      : `*-tfjs-node: not measured: @tensorflow/tfjs-node does not load (${nodeError}); npm run setup:tfjs-node`;
  if (nodeError !== undefined) log(`stall: ${tfjsNode}`);
  const ran = STALL_LOOPS.filter((l) => !onTfjsNode(l) || nodeError === undefined);
  const loops: Partial<Record<StallLoop, Record<StallMode, StallRuns>>> = {};
  for (const l of ran) loops[l] = { none: empty(), sync: empty(), async: empty() };
  const configs = ran.flatMap((loop) => STALL_MODES.map((mode) => ({ loop, mode })));
  let weightBytes = 0;
  let fileBytes = 0;
  let cpuSource: StallResult['cpuSource'] = 'thread';
  for (let rep = 0; rep < o.reps; rep++) {
    for (const { loop, mode } of rotate(configs, rep)) {
      const dir = path.join(work, `stall-${loop}-${mode}-${rep}`);
      fs.mkdirSync(dir, { recursive: true });
      syncAll();
      const out = (loops[loop] as Record<StallMode, StallRuns>)[mode];
      try {
        const job: Job = onTfjsNode(loop)
          ? { op: 'stall', mode, loop: loop.startsWith('fit') ? 'fit' : 'custom', platform: 'tfjs-node', dir, ...STALL }
          : { op: 'stall', mode, loop: loop as 'fit' | 'custom', platform: 'tfjs', dir, ...STALL };
        const r = await runChild<StallResult>(job);
        weightBytes = r.weightBytes;
        // Epoch 0 includes tfjs's warm-up (kernel set-up, first allocations): left out of the medians.
        out.epochMs.push(...r.epochMs.slice(1));
        out.stallMs.push(...r.stallMs.slice(1));
        out.epochCpuMs.push(...r.epochCpuMs.slice(1));
        out.stallCpuMs.push(...r.stallCpuMs.slice(1));
        cpuSource = r.cpuSource;
        out.closeMs.push(r.closeMs);
        out.snapshotMs.push(...r.snapshotMs);
        out.stepSnapshotMs.push(...(r.stepSnapshotMs ?? []).slice(1));
        out.saveMs.push(...r.saveMs);
        out.writeMs.push(...r.writeMs);
        out.durableMs.push(...r.durableMs.slice(1));
        out.inFlightAtStep += r.inFlightAtStep;
        out.saves += r.stallMs.length;
        if (r.fileBytes) fileBytes = r.fileBytes;
        log(
          `stall rep ${rep + 1}/${o.reps} ${loop} ${mode}: epoch median ${fixed(median(r.epochMs.slice(1)), 0)} ms` +
            (mode === 'none'
              ? ''
              : `, step() median ${fixed(median(r.stallMs.slice(1)), 1)} ms wall, ` +
                `${fixed(median(r.stallCpuMs.slice(1)), 1)} ms JS-thread CPU, step() to durable ` +
                `${r.durableMs.length > 1 ? fixed(median(r.durableMs.slice(1)), 1) : '—'} ms`),
        );
      } catch (e) {
        fs.rmSync(dir, { recursive: true, force: true });
        return { measured: false, note: `not measured: the ${loop} ${mode} run failed: ${(e as Error).message}` };
      }
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  const m = STALL_MODEL;
  return {
    measured: true,
    note:
      `pure-JS @tensorflow/tfjs (cpu backend) unless the loop says otherwise; model: frozen embedding ${m.vocab}x${m.dim} (${m.tokens} tokens), ` +
      `flatten, dense ${m.hidden} relu, dense ${m.classes} softmax, Adam; ${STALL.samples} samples, batch ` +
      `${m.batchSize}; ${STALL.epochs} epochs per run (the first left out); durable saves every epoch. ` +
      '"fit": model.fit, step() in a callback\'s onEpochEnd (tfjs does not yield to the event loop there); ' +
      '"custom": a hand-written trainOnBatch loop that never yields to the event loop (it only awaits)',
    weightBytes,
    fileBytes,
    loops,
    tfjsNode,
    cpuSource,
  };
}

interface CrcSummary {
  bytes: number;
  hardware: boolean;
  agree: boolean;
  /** GB/s per repetition; `memread` counts the bytes of one buffer per 2 bytes read (see CrcResult). */
  gbps: Record<CrcImpl, number[]>;
}

async function benchCrc(o: Options): Promise<CrcSummary> {
  const bytes = 256 * MiB;
  const r = await runChild<CrcResult>({ op: 'crc', bytes, reps: Math.max(5, o.reps) });
  const gbps = {} as CrcSummary['gbps'];
  for (const k of Object.keys(r.ms) as CrcImpl[]) {
    gbps[k] = r.ms[k].map((ms) => ((k === 'memread' ? 2 : 1) * bytes) / 1e9 / (ms / 1000));
  }
  log(`crc32c GB/s: ` + (Object.keys(gbps) as CrcImpl[]).map((k) => `${k} ${fixed(median(gbps[k]), 2)}`).join(', '));
  return { bytes, hardware: r.hardware, agree: r.agree, gbps };
}

// ---------------------------------------------------------------------------------------------------------------
// Targets

interface Target {
  target: string;
  measured: string;
  status: 'met' | 'missed' | 'not measured';
  bound?: string;
}

function find(rows: Row[], section: Row['section'], bytes: number, id: string, kind?: Row['kind']): Row | undefined {
  return rows.find((r) => r.section === section && r.bytes === bytes && r.id === id && (!kind || r.kind === kind));
}

function syscallNote(p: Profile | undefined): string {
  if (!p) return '';
  const total = p.wallMs / 1000;
  const top = p.syscalls
    .slice(0, 3)
    .map((s) => `${s.name} ${s.seconds.toFixed(2)} s (${s.calls} calls)`)
    .join(', ');
  return `strace -f -c -w of one ${sizeLabel(p.bytes)} ${p.contender} save (${total.toFixed(2)} s wall): ${top}`;
}

/** A target of the form "ours >= factor x theirs" over two rows' throughput; none when either row is absent. */
function ratioTarget(
  target: string,
  ours: Row | undefined,
  theirs: Row | undefined,
  factor: number,
  bound?: string,
): Target[] {
  if (!ours || !ours.ms.length) return [];
  if (!theirs || !theirs.ms.length) {
    const why = theirs
      ? `every ${theirs.id} run failed: ${theirs.errors[0] ?? '?'}`
      : 'the peer did not run (see the peers line above)';
    return [{ target, measured: why.slice(0, 200), status: 'not measured' }];
  }
  const ratio = rate(ours) / rate(theirs);
  return [
    {
      target,
      measured: `${ratio.toFixed(2)}x (${fixed(rate(ours))} vs ${fixed(rate(theirs))} MiB/s)`,
      status: ratio >= factor ? 'met' : 'missed',
      ...(ratio < factor && bound ? { bound } : {}),
    },
  ];
}

/** Issue 11: the durable native save against the device's limit and against torch.save + fsync. */
function peerSaveTargets(rows: Row[], bytes: number, profiles: Profile[]): Target[] {
  const s = sizeLabel(bytes);
  const nd = find(rows, 'save', bytes, 'native-durable');
  const note = syscallNote(profiles.find((p) => p.contender === 'native-durable' && p.bytes === bytes));
  return [
    ...ratioTarget(
      `${s}: native durable save >= 0.9x dd oflag=direct`,
      nd,
      find(rows, 'save', bytes, 'dd-direct'),
      0.9,
      note,
    ),
    ...ratioTarget(
      `${s}: native durable save >= 1.5x torch.save + fsync`,
      nd,
      find(rows, 'save', bytes, 'torch-fsync'),
      1.5,
      note,
    ),
  ];
}

/** Issue 11: the verified native load against torch.load and safetensors' load_file (which verify nothing). */
function peerLoadTargets(rows: Row[], bytes: number, cache: 'warm' | 'cold'): Target[] {
  const s = sizeLabel(bytes);
  const nv = find(rows, 'load', bytes, 'native-verify', cache);
  const alloc = find(rows, 'load', bytes, 'alloc-touch', cache);
  const bound = alloc?.ms.length
    ? `allocating and touching the destination buffers alone runs at ${fixed(rate(alloc))} MiB/s`
    : undefined;
  return [
    ...ratioTarget(
      `${s}: native verified load >= torch.load (${cache} cache)`,
      nv,
      find(rows, 'load', bytes, 'torch-load', cache),
      1,
      bound,
    ),
    // load_file maps the file and reads nothing until the tensors are used: the comparable figure includes that
    // first use (st-load-touch); the call alone (st-load) is a row of the table.
    ...ratioTarget(
      `${s}: native verified load >= safetensors load_file + first use (${cache} cache)`,
      nv,
      find(rows, 'load', bytes, 'st-load-touch', cache),
      1,
      'load_file maps the page cache into the process (no copy, no fresh pages, nothing verified); a load into ' +
        'fresh ArrayBuffers pays page faults and a copy' +
        (bound ? `: ${bound}` : ''),
    ),
  ];
}

function targets(
  o: Options,
  rows: Row[],
  crc: CrcSummary | undefined,
  stall: StallSummary | undefined,
  profiles: Profile[],
): Target[] {
  const out: Target[] = [];
  const status = (ok: boolean): Target['status'] => (ok ? 'met' : 'missed');
  for (const bytes of o.sizes) {
    const s = sizeLabel(bytes);
    const nd = find(rows, 'save', bytes, 'native-durable');
    const nf = find(rows, 'save', bytes, 'native-fast');
    const ddf = find(rows, 'save', bytes, 'dd-fsync');
    const dd = find(rows, 'save', bytes, 'dd');
    const tfn = find(rows, 'save', bytes, 'tfjs-node');
    if (nd && ddf && nd.ms.length && ddf.ms.length) {
      const ratio = rate(nd) / rate(ddf);
      out.push({
        target: `${s}: native durable save >= 0.8x dd conv=fsync`,
        measured: `${ratio.toFixed(2)}x (${fixed(rate(nd))} vs ${fixed(rate(ddf))} MiB/s)`,
        status: status(ratio >= 0.8),
        ...(ratio < 0.8
          ? { bound: syscallNote(profiles.find((p) => p.contender === 'native-durable' && p.bytes === bytes)) }
          : {}),
      });
    }
    if (nf && dd && nf.ms.length && dd.ms.length) {
      const ratio = rate(nf) / rate(dd);
      out.push({
        target: `${s}: native save (durable: false) >= 0.8x dd to the page cache`,
        measured: `${ratio.toFixed(2)}x (${fixed(rate(nf))} vs ${fixed(rate(dd))} MiB/s)`,
        status: status(ratio >= 0.8),
        ...(ratio < 0.8
          ? { bound: syscallNote(profiles.find((p) => p.contender === 'native-fast' && p.bytes === bytes)) }
          : {}),
      });
    }
    if (nf && tfn && nd && nf.ms.length && tfn.ms.length) {
      const ratio = rate(nf) / rate(tfn);
      const ceiling = rate(dd) / rate(tfn);
      out.push({
        target: `${s}: native save >= 10x tfjs-node's file:// handler`,
        measured:
          `${ratio.toFixed(1)}x durable: false, ${(rate(nd) / rate(tfn)).toFixed(1)}x durable ` +
          `(tfjs-node ${fixed(rate(tfn))} MiB/s, page cache only)`,
        status: status(ratio >= 10),
        ...(ratio < 10
          ? {
              bound:
                ceiling < 10
                  ? `plain dd into the page cache is only ${ceiling.toFixed(1)}x tfjs-node here: 10x would exceed ` +
                    `the machine's page-cache write bandwidth`
                  : `the native save itself: it reaches ${(rate(nf) / rate(dd)).toFixed(2)}x plain dd; ` +
                    syscallNote(profiles.find((p) => p.contender === 'native-fast' && p.bytes === bytes)),
            }
          : {}),
      });
    }
    out.push(...peerSaveTargets(rows, bytes, profiles));
    const limitKiB = (64 * MiB + 0.05 * bytes) / 1024;
    for (const id of ['native-durable', 'native-fast', 'js-durable']) {
      const r = find(rows, 'save', bytes, id);
      if (!r || !r.peakExtraKiB.length) continue;
      const peak = Math.max(...r.peakExtraKiB);
      out.push({
        target: `${s}: ${id} peak extra memory <= 64 MiB + 5% (${fixed(limitKiB / 1024)} MiB)`,
        measured: `${fixed(peak / 1024)} MiB (max of ${r.peakExtraKiB.length} runs)`,
        status: status(peak <= limitKiB),
      });
    }
    for (const [id, how] of [
      ['native-mmap', 'mmap'],
      ['native-into', 'into'],
    ] as const) {
      const mm = find(rows, 'load', bytes, id, 'warm');
      if (!mm?.ms.length) continue;
      // Issue 11 §2: warm >= 3x the copying load's 1318 MiB/s of the 2026-12-01 run (1 GiB), bound by page faults.
      const rawWarm = find(rows, 'load', bytes, 'raw-read', 'warm');
      out.push({
        target: `${s}: native verified load (${how}), warm, >= 3x 1318 MiB/s (the copying load of 2026-12-01)`,
        measured:
          `${how} ${fixed(rate(mm))} MiB/s (${(rate(mm) / 1318).toFixed(2)}x` +
          (rawWarm?.ms.length ? `; ${(rate(mm) / rate(rawWarm)).toFixed(2)}x the raw read beside it)` : ')'),
        status: status(rate(mm) >= 3 * 1318),
      });
    }
    for (const cache of ['warm', 'cold'] as const) {
      out.push(...peerLoadTargets(rows, bytes, cache));
      const nv = find(rows, 'load', bytes, 'native-verify', cache);
      const raw = find(rows, 'load', bytes, 'raw-read', cache);
      if (!nv || !raw || !nv.ms.length || !raw.ms.length) continue;
      const ratio = rate(nv) / rate(raw);
      const alloc = find(rows, 'load', bytes, 'alloc-touch', cache);
      const ddr = find(rows, 'load', bytes, 'dd-read', cache);
      const references = [
        ...(ddr?.ms.length ? [`dd (one reused buffer) reads ${fixed(rate(ddr))} MiB/s`] : []),
        ...(alloc?.ms.length
          ? [`allocating and touching the destination buffers alone runs at ${fixed(rate(alloc))} MiB/s`]
          : []),
      ];
      out.push({
        target: `${s}: native verified load >= 0.9x raw read (${cache} cache)`,
        measured: `${ratio.toFixed(2)}x (${fixed(rate(nv))} vs ${fixed(rate(raw))} MiB/s)`,
        status: status(ratio >= 0.9),
        ...(ratio < 0.9 && references.length ? { bound: `references: ${references.join('; ')}` } : {}),
      });
      // The mapped load ({ mmap: true }) verifies every CRC as well: the same target, for the opt-in.
      const mapped = find(rows, 'load', bytes, 'native-mmap', cache);
      if (mapped?.ms.length) {
        const r = rate(mapped) / rate(raw);
        out.push({
          target: `${s}: native verified mapped load ({ mmap: true }) >= 0.9x raw read (${cache} cache)`,
          measured: `${r.toFixed(2)}x (${fixed(rate(mapped))} vs ${fixed(rate(raw))} MiB/s)`,
          status: status(r >= 0.9),
        });
      }
    }
  }
  if (stall) {
    if (!stall.measured || !stall.loops) {
      out.push({ target: 'async stall <= 10% of the sync save', measured: stall.note, status: 'not measured' });
      out.push({
        target: 'epoch time with a save every epoch within 5% of none',
        measured: stall.note,
        status: 'not measured',
      });
    } else {
      for (const loop of loopsOf(stall.loops)) {
        const m = stall.loops[loop] as Record<StallMode, StallRuns>;
        const a = median(m.async.stallMs);
        const sy = median(m.sync.stallMs);
        const fresh = median([...m.sync.snapshotMs, ...m.async.snapshotMs]);
        // What step() itself pays for its snapshot (the manager reuses unchanged weights' copies), when timed.
        const inStep = m.async.stepSnapshotMs.length > 0 ? median(m.async.stepSnapshotMs) : undefined;
        const snap = inStep ?? fresh;
        const snapText =
          inStep !== undefined
            ? `the manager's snapshot in step() takes ${fixed(inStep, 1)} ms (a fresh captureCheckpoint ${fixed(fresh, 1)} ms)`
            : `the snapshot alone (captureCheckpoint) takes ${fixed(fresh, 1)} ms`;
        out.push({
          target: `${loop} loop, async: stall per save <= 10% of the sync save`,
          measured: `${fixed(a, 1)} ms vs ${fixed(sy, 1)} ms (${fixed((100 * a) / sy, 1)}%)`,
          status: status(a <= 0.1 * sy),
          ...(a > 0.1 * sy
            ? {
                bound:
                  `${snapText}; the other ` +
                  `${fixed(Math.max(0, a - snap), 1)} ms are spent in step() besides it; ` +
                  `${m.async.inFlightAtStep} of ${m.async.saves} steps found the previous write still in flight ` +
                  `(a save became durable ${fixed(median(m.async.writeMs))} ms after step() returned; an epoch takes ` +
                  `${fixed(median(m.async.epochMs))} ms)`,
              }
            : {}),
        });
        out.push({
          target: `${loop} loop, async: stall per save <= the snapshot + 2 ms`,
          measured: `${fixed(a, 1)} ms vs ${fixed(snap, 1)} + 2 ms (${inStep !== undefined ? "the manager's snapshot in step()" : 'captureCheckpoint'})`,
          status: status(a <= snap + 2),
        });
        const saveRef = median(onTfjsNodeRuns(loop, stall.loops).flatMap((r) => r.saveMs));
        const dur = median(m.async.durableMs);
        out.push({
          target: `${loop} loop, async: step() to durable <= 1.5x a standalone saveTensors of the snapshot`,
          measured:
            m.async.durableMs.length === 0
              ? 'no commit-plan timestamps'
              : `${fixed(dur, 1)} ms vs ${fixed(saveRef, 1)} ms (${fixed(dur / saveRef, 2)}x)`,
          status: m.async.durableMs.length === 0 ? 'not measured' : status(dur <= 1.5 * saveRef),
        });
        const en = median(m.none.epochMs);
        for (const mode of ['async', 'sync'] as const) {
          const e = median(m[mode].epochMs);
          out.push({
            target: `${loop} loop, ${mode}: epoch time with a save every epoch within 5% of none`,
            measured: `${fixed(e)} ms vs ${fixed(en)} ms (${(e >= en ? '+' : '') + fixed((100 * (e - en)) / en, 1)}%)`,
            status: status(e <= 1.05 * en),
          });
        }
      }
    }
  }
  if (crc) {
    const g = median(crc.gbps.hardware);
    const cached = median(crc.gbps.hardwareCached);
    const mem = median(crc.gbps.memread);
    for (const [what, v] of [
      [`${sizeLabel(crc.bytes)} buffer (from memory)`, g],
      ['256 KiB cache-resident blocks', cached],
    ] as const) {
      out.push({
        target: `CRC32C >= 10 GB/s on one core (hardware), ${what}`,
        measured: crc.hardware
          ? `${fixed(v, 1)} GB/s`
          : `no hardware CRC32C on this CPU (${fixed(v, 1)} GB/s portable)`,
        status: crc.hardware ? status(v >= 10) : 'not measured',
        ...(crc.hardware && v < 10
          ? {
              bound:
                what.includes('memory') && cached >= 10
                  ? `memory, not the instruction: the same code hashes cache-resident data at ${fixed(cached, 1)} GB/s; ` +
                    `a memcmp reads ${fixed(mem, 1)} GB/s from DRAM on this machine`
                  : `instruction throughput on this CPU: ${fixed(cached, 1)} GB/s even with the data in cache`,
            }
          : {}),
      });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Report

interface Results {
  date: string;
  command: string;
  durationS: number;
  reps: number;
  machine: MachineInfo;
  /** Which Python peers ran (or how to install the missing ones). */
  peers: string;
  /** Whether the tfjs-node rows ran, or why not and how to enable them. */
  tfjsNode?: string;
  save: Row[];
  load: Row[];
  roundtrips: Roundtrip[];
  profiles: Profile[];
  crc?: CrcSummary;
  stall?: StallSummary;
  /** The object-storage section (bench/s3.ts). */
  s3?: S3Summary;
  targets: Target[];
}

function saveTable(rows: Row[]): string {
  const ref = (r: Row): Row | undefined => find(rows, 'save', r.bytes, r.kind === 'durable' ? 'dd-fsync' : 'dd');
  return markdownTable(
    ['size', 'contender', 'guarantee', 'MiB/s', 'x dd', 'time s (min–max)', 'peak extra MiB', 'runs'],
    rows.map((r) => {
      if (!r.ms.length) {
        return [sizeLabel(r.bytes), r.label, r.kind, `failed: ${r.errors[0] ?? '?'}`.slice(0, 120), '', '', '', '0'];
      }
      const isDd = r.id.startsWith('dd');
      const isRef = r.id === 'dd' || r.id === 'dd-fsync';
      return [
        sizeLabel(r.bytes),
        r.label,
        r.kind,
        fixed(rate(r)),
        isRef ? '1' : fixed(rate(r) / rate(ref(r)), 2),
        spread(
          r.ms.map((x) => x / 1000),
          2,
        ),
        r.peakExtraKiB.length ? `${isDd ? 'RSS ' : ''}${fixed(median(r.peakExtraKiB) / 1024)}` : '—',
        `${r.ms.length}${r.errors.length ? ` (${r.errors.length} failed)` : ''}`,
      ];
    }),
  );
}

function loadTable(rows: Row[]): string {
  return markdownTable(
    ['size', 'cache', 'contender', 'MiB/s', 'x raw read', 'time s (min–max)', 'peak extra MiB', 'runs'],
    rows.map((r) => {
      const raw = find(rows, 'load', r.bytes, 'raw-read', r.kind);
      if (!r.ms.length) return [sizeLabel(r.bytes), r.kind, r.label, `failed: ${r.errors[0] ?? '?'}`, '', '', '', '0'];
      return [
        sizeLabel(r.bytes),
        r.kind,
        r.label,
        fixed(rate(r)),
        fixed(rate(r) / rate(raw), 2),
        spread(
          r.ms.map((x) => x / 1000),
          2,
        ),
        r.peakExtraKiB.length ? `${r.id === 'dd-read' ? 'RSS ' : ''}${fixed(median(r.peakExtraKiB) / 1024)}` : '—',
        `${r.ms.length}${r.errors.length ? ` (${r.errors.length} failed)` : ''}`,
      ];
    }),
  );
}

function report(res: Results): string {
  const m = res.machine;
  const parts: string[] = [];
  parts.push(`# tfjs-checkpoint benchmark`);
  parts.push(
    `Run ${res.date} (\`${res.command}\`, ${res.durationS.toFixed(0)} s). Machine: ${m.cpu}, ${m.cores} cores, ` +
      `${m.memoryGiB} GiB RAM, ${m.kernel}, Node ${m.node}; files on ${m.filesystem}. ` +
      `Each figure is the median of ${res.reps} runs, contenders interleaved round-robin, each Node contender in a ` +
      `fresh child process. Page cache: ${m.dropCaches ? 'flushed and dropped before every save and before every cold load' : 'not dropped (not root, or --no-drop-caches): saves start after a sync, loads are warm only'}.`,
  );
  parts.push(`## Save throughput and peak extra memory`);
  parts.push(
    'MiB/s of tensor data. "x dd": durable rows against `dd conv=fsync`, page-cache rows against plain `dd` of the ' +
      "same number of bytes. Peak extra memory: the child's peak RSS during the save minus its RSS with the weights " +
      "allocated (for dd: its whole peak RSS). tfjs-node's and writeFile's rows do not fsync. " +
      `Python peers: ${res.peers}. The Python rows time the call itself inside a fresh interpreter ` +
      '(perf_counter; the tensors allocated and touched first); their "+ os.fsync" is a file fsync only, no temp ' +
      'file, rename or directory fsync.',
  );
  parts.push(res.save.length ? saveTable(res.save) : 'not measured: section not run');
  if (res.profiles.length) {
    parts.push(
      'Where the time of a native save goes (one extra run each, under `strace -f -c -w`, not in the medians):',
    );
    parts.push(
      res.profiles
        .map(
          (p) =>
            `- ${sizeLabel(p.bytes)} ${p.contender}, ${(p.wallMs / 1000).toFixed(2)} s: ` +
            p.syscalls
              .slice(0, 5)
              .map((s) => `${s.name} ${s.seconds.toFixed(3)} s / ${s.calls}`)
              .join(', '),
        )
        .join('\n'),
    );
  }
  parts.push(`## Load`);
  parts.push(
    'Whole checkpoint into one ArrayBuffer per tensor. Warm: the file is read once before each run; cold: caches ' +
      'dropped before each run. Peak extra memory excludes the loaded bytes themselves. The two ' +
      "`tf.loadLayersModel` rows load a model of the same weights (names, shapes, bytes) on tfjs-node's tensorflow " +
      "backend: from model.json + weights.bin written by tfjs-node's own file:// handler, and from one file written " +
      'through safetensors://; both end with the weights assigned to a built LayersModel (tfjs-node copies them into ' +
      'TensorFlow at their first use, in either case).' +
      (res.tfjsNode ? ` ${res.tfjsNode}.` : ''),
  );
  parts.push(res.load.length ? loadTable(res.load) : 'not measured: section not run');
  parts.push(
    'Round trips (saved natively, loaded with verification, every byte compared with the regenerated weights):\n' +
      res.roundtrips
        .map((r) => `- ${sizeLabel(r.bytes)}, ${r.backend} load: ${r.ok ? 'ok' : 'FAILED'} (${r.detail})`)
        .join('\n'),
  );
  parts.push(`## Training-loop stall`);
  if (res.stall?.measured && res.stall.loops) {
    const loops = res.stall.loops;
    parts.push(
      `${res.stall.note}. Model weights ${sizeLabel(res.stall.weightBytes ?? 0)}; checkpoint file (with the Adam ` +
        `state and topology) ${sizeLabel(res.stall.fileBytes ?? 0)}.`,
    );
    parts.push(
      markdownTable(
        [
          'loop',
          'checkpointing',
          'epoch ms (min–max)',
          `epoch ${res.stall.cpuSource === 'process' ? 'process' : 'JS-thread'} CPU ms`,
          'step() blocks the loop, ms (min–max)',
          `step() ${res.stall.cpuSource === 'process' ? 'process' : 'JS-thread'} CPU ms`,
          'durable after step() returned (JS promise), ms',
          'step() to durable (plan finished), ms',
          'steps that found a write in flight',
          'close() ms',
          'epochs',
        ],
        loopsOf(loops).flatMap((loop) =>
          STALL_MODES.map((k) => {
            const r = (loops[loop] as Record<StallMode, StallRuns>)[k];
            return [
              loop,
              k === 'none' ? 'none' : `every epoch, ${k}`,
              spread(r.epochMs),
              fixed(median(r.epochCpuMs), 1),
              k === 'none' ? '—' : spread(r.stallMs, 1),
              k === 'none' ? '—' : fixed(median(r.stallCpuMs), 1),
              k === 'async' ? spread(r.writeMs, 1) : '—',
              k === 'none' || r.durableMs.length === 0 ? '—' : spread(r.durableMs, 1),
              k === 'none' ? '—' : `${r.inFlightAtStep} of ${r.saves}`,
              k === 'none' ? '—' : fixed(median(r.closeMs), 1),
              String(r.epochMs.length),
            ];
          }),
        ),
      ),
    );
    parts.push(
      `CPU columns: the ${res.stall.cpuSource === 'process' ? 'whole process (process.cpuUsage(); no per-thread schedstat here)' : 'JS thread alone (/proc/thread-self/schedstat)'}, ` +
        'medians. Unlike wall time they exclude waiting for a core, so they stay stable on a loaded machine; an ' +
        "epoch's CPU above the `none` row's is what checkpointing costs the JS thread per epoch, the background " +
        "write's JavaScript steps included.",
    );
    // The snapshot's cost differs by platform: the cpu backend hands out its own arrays, tensorflow copies.
    const byPlatform = (tfjsNode: boolean): StallRuns[] =>
      loopsOf(loops)
        .filter((l) => onTfjsNode(l) === tfjsNode)
        .flatMap((l) => [
          (loops[l] as Record<StallMode, StallRuns>).sync,
          (loops[l] as Record<StallMode, StallRuns>).async,
        ]);
    const refs = (runs: StallRuns[]): string =>
      `\`captureCheckpoint(model)\` alone (a fresh copy of every weight) ${spread(
        runs.flatMap((r) => r.snapshotMs),
        1,
      )} ms; the manager's snapshot inside step() (reusing unchanged weights' copies) ${spread(
        runs.flatMap((r) => r.stepSnapshotMs),
        1,
      )} ms; \`saveTensors\` of that snapshot (durable) outside the manager ${spread(
        runs.flatMap((r) => r.saveMs),
        1,
      )} ms`;
    parts.push(
      `References, after training in the same children: on the cpu backend (fit, custom), ${refs(byPlatform(false))}.` +
        (loops['fit-tfjs-node'] ? ` On tfjs-node (*-tfjs-node), ${refs(byPlatform(true))}.` : '') +
        ` ${res.stall.tfjsNode ?? ''}`,
    );
  } else {
    parts.push(res.stall?.note ?? 'not measured: section not run');
  }
  parts.push(`## CRC32C`);
  if (res.crc) {
    const c = res.crc;
    parts.push(
      `${sizeLabel(c.bytes)} buffer, one core, GB/s (10^9 bytes/s); all implementations ${c.agree ? 'agree' : 'DISAGREE'}.`,
    );
    parts.push(
      markdownTable(
        ['implementation', 'GB/s (min–max)', 'runs'],
        [
          [
            `native crc32c (${c.hardware ? 'hardware' : 'no hardware: portable'})`,
            spread(c.gbps.hardware, 2),
            String(c.gbps.hardware.length),
          ],
          [
            'native crc32c, 256 KiB cache-resident blocks',
            spread(c.gbps.hardwareCached, 2),
            String(c.gbps.hardwareCached.length),
          ],
          ['native crc32cPortable (table)', spread(c.gbps.portable, 2), String(c.gbps.portable.length)],
          ['JS lib/format/crc32c.ts (slicing-by-16)', spread(c.gbps.js, 2), String(c.gbps.js.length)],
          [
            'reference: memcmp of the buffer and a copy (read GB/s)',
            spread(c.gbps.memread, 2),
            String(c.gbps.memread.length),
          ],
        ],
      ),
    );
  } else parts.push('not measured: section not run');
  if (res.s3) parts.push(s3Report(res.s3).trimEnd());
  parts.push(`## Targets`);
  parts.push(
    markdownTable(
      ['target', 'measured', 'status', 'what bounds it'],
      res.targets.map((t) => [t.target, t.measured, t.status, t.bound ?? '']),
    ),
  );
  return parts.join('\n\n') + '\n';
}

// ---------------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const work = fs.mkdtempSync(path.join(o.dir, 'tfjs-checkpoint-bench-'));
  const cleanup = (): void => fs.rmSync(work, { recursive: true, force: true });
  process.on('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  const native = loadNativeBackend();
  if ('error' in native)
    throw new Error(`the native addon does not load (npm run build:native): ${native.error.message}`);
  mayDropCaches = o.dropCaches;
  const canDrop = o.dropCaches && dropCaches();
  const peers = detectPeers();
  const machine = machineInfo(work, canDrop, peers.note);
  machine.crc32cHardware = native.backend.crc32cHardware;
  log(
    `bench in ${work}: sizes ${o.sizes.map(sizeLabel).join(', ')}, ${o.reps} reps; drop_caches ${canDrop ? 'works' : o.dropCaches ? 'not permitted' : 'off (--no-drop-caches)'}`,
  );
  log(peers.note);
  // tfjs-node's rows need its native binding: without it they are left out, with one line saying how to build it.
  const unavailable = new Set<string>();
  const wantsTfjsNode =
    (o.sections.has('save') || o.sections.has('load')) &&
    [...TFJS_NODE_ROWS].some((id) => !o.contenders || o.contenders.has(id));
  let tfjsNode: string | undefined;
  if (wantsTfjsNode) {
    const why = tfjsNodeProbe();
    const version =
      why === undefined ? (require('@tensorflow/tfjs-node/package.json') as { version: string }).version : undefined;
    const rows = tfjsNodeRows(why, version);
    rows.unavailable.forEach((id) => unavailable.add(id));
    tfjsNode = rows.note;
    log(tfjsNode);
  }
  const res: Results = {
    date: new Date().toISOString(),
    command: ['npm run bench', ...(process.argv.length > 2 ? ['--', ...process.argv.slice(2)] : [])].join(' '),
    durationS: 0,
    reps: o.reps,
    machine,
    peers: peers.note,
    ...(tfjsNode ? { tfjsNode } : {}),
    save: [],
    load: [],
    roundtrips: [],
    profiles: [],
    targets: [],
  };
  const root = findPackageRoot(__dirname) ?? process.cwd();
  const outDir = o.out ?? path.join(root, 'bench', 'results');
  if (o.sections.has('shards')) {
    try {
      const shards = await benchShards(work, canDrop, runChild, log);
      const md = shardsReport(shards);
      fs.mkdirSync(outDir, { recursive: true });
      fs.writeFileSync(path.join(outDir, 'shards.json'), JSON.stringify(shards, null, 2) + '\n');
      fs.writeFileSync(path.join(outDir, 'shards.md'), md);
      process.stdout.write('\n' + md);
    } finally {
      if (o.sections.size === 1) cleanup();
    }
    if (o.sections.size === 1) return;
  }
  try {
    if (o.sections.has('crc')) res.crc = await benchCrc(o);
    if (o.sections.has('save')) {
      res.save = await benchSaves(o, work, peers, canDrop, unavailable);
      const straceOk = spawnSync('strace', ['-V']).status === 0;
      if (o.profile && straceOk) {
        const bytes = Math.max(...o.sizes.filter((b) => b <= 1024 * MiB));
        for (const c of ['native-durable', 'native-fast'] as const) {
          const p = straceSave(c, bytes, work);
          if ('error' in p) log(`strace ${c}: ${p.error}`);
          else {
            res.profiles.push(p);
            log(`strace ${c}: ${syscallNote(p)}`);
          }
        }
      }
    }
    if (o.sections.has('load'))
      Object.assign(
        res,
        await benchLoads(o, work, canDrop, peers, unavailable).then((r) => ({
          load: r.rows,
          roundtrips: r.roundtrips,
        })),
      );
    if (o.sections.has('stall')) res.stall = await benchStall(o, work);
    // At least 5 runs: the gateway shares the 2 cores with the client, which makes these the noisiest rows.
    if (o.sections.has('s3')) res.s3 = await benchS3(o.sizes, Math.max(5, o.reps), o.contenders, work, runChild, log);
  } finally {
    cleanup();
  }
  res.durationS = (Date.now() - started) / 1000;
  res.targets = targets(o, [...res.save, ...res.load], res.crc, res.stall, res.profiles);
  if (res.s3)
    res.targets.push(
      ...s3Targets(
        res.s3,
        o.sizes.filter((b) => b <= S3_MAX_BYTES),
      ),
    );
  const md = report(res);
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'results.json'), JSON.stringify(res, null, 2) + '\n');
  fs.writeFileSync(path.join(outDir, 'results.md'), md);
  process.stdout.write('\n' + md);
  log(`done in ${res.durationS.toFixed(0)} s; wrote ${path.relative(process.cwd(), outDir)}/results.{json,md}`);
}

if (require.main === module)
  main().catch((e: unknown) => {
    process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
