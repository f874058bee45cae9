/**
 * The Python peers of the benchmark (bench/peers.py: torch.save / torch.load, safetensors.torch and
 * safetensors.numpy), found in the venv that scripts/setup-bench-python.sh creates. Each run is a fresh Python
 * process that times itself (perf_counter around the call) and reports its peak memory; a missing peer is reported
 * in one line with the command that installs it, and its rows are left out rather than failing the bench.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { OpResult } from './jobs';

/** Run from dist/bench/: the script is a plain file of the checkout. */
const SCRIPT = path.join(__dirname, '..', '..', 'bench', 'peers.py');
export const SETUP_HINT = 'scripts/setup-bench-python.sh (npm run setup:bench-python)';

/** Where the set-up script puts the venv (TFJS_CHECKPOINT_BENCH_VENV, else ~/.cache/tfjs-checkpoint/bench-venv). */
export function venvDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TFJS_CHECKPOINT_BENCH_VENV) return env.TFJS_CHECKPOINT_BENCH_VENV;
  const cache = env.XDG_CACHE_HOME || path.join(env.HOME || os.homedir(), '.cache');
  return path.join(cache, 'tfjs-checkpoint', 'bench-venv');
}

/** BENCH_PYTHON, else the venv's python when it exists, else python3 on the PATH. */
export function pythonPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.BENCH_PYTHON) return env.BENCH_PYTHON;
  const venvPython = path.join(venvDir(env), 'bin', 'python');
  return fs.existsSync(venvPython) ? venvPython : 'python3';
}

export interface PeerVersions {
  python: string;
  torch?: string;
  safetensors?: string;
  numpy?: string;
}

export interface Peers {
  python: string;
  versions?: PeerVersions;
  /** torch.save / torch.load rows can run. */
  torch: boolean;
  /** safetensors.torch rows can run (needs torch as well). */
  safetensors: boolean;
  /** safetensors.numpy rows can run. */
  safetensorsNumpy: boolean;
  /** One line: what runs, and for what is missing how to install it. */
  note: string;
}

/** Which peers a `peers.py versions` reply (or its failure) makes available. */
export function describePeers(python: string, reply: PeerVersions | { error: string }): Peers {
  if ('error' in reply) {
    return {
      python,
      torch: false,
      safetensors: false,
      safetensorsNumpy: false,
      note: `python peers skipped: ${python} does not run (${reply.error}); install them with ${SETUP_HINT}`,
    };
  }
  const torch = !!reply.torch;
  const st = !!reply.safetensors;
  const np = !!reply.numpy;
  const have = [
    `python ${reply.python}`,
    ...(torch ? [`torch ${reply.torch}`] : []),
    ...(st ? [`safetensors ${reply.safetensors}`] : []),
    ...(np ? [`numpy ${reply.numpy}`] : []),
  ];
  const missing = [...(torch ? [] : ['torch']), ...(st ? [] : ['safetensors']), ...(np ? [] : ['numpy'])];
  return {
    python,
    versions: reply,
    torch,
    safetensors: st && torch,
    safetensorsNumpy: st && np,
    note:
      `python peers (${python}): ${have.join(', ')}` +
      (missing.length ? `; missing ${missing.join(', ')}: their rows are skipped; install with ${SETUP_HINT}` : ''),
  };
}

/** The last line of a peer's stdout as JSON, or an error saying what came back instead. */
export function parsePeerOutput(
  status: number | null,
  stdout: string,
  stderr: string,
): { ok: true; value: Record<string, unknown> } | { ok: false; error: string } {
  const last = stdout.trim().split('\n').pop() ?? '';
  if (status !== 0) {
    const why = stderr.trim().split('\n').slice(-3).join(' | ') || `exit status ${status}`;
    return { ok: false, error: why.slice(-400) };
  }
  try {
    const value = JSON.parse(last) as unknown;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not an object');
    return { ok: true, value: value as Record<string, unknown> };
  } catch {
    return { ok: false, error: `no JSON result on the last line of stdout: ${JSON.stringify(last.slice(0, 200))}` };
  }
}

/** A peer's timing reply as an OpResult (ms and baseRssKiB numbers; peakExtraKiB optional). */
export function toOpResult(value: Record<string, unknown>): OpResult | { error: string } {
  const { ms, baseRssKiB, peakExtraKiB } = value;
  if (typeof ms !== 'number' || !(ms >= 0)) return { error: `peer reply without a time: ${JSON.stringify(value)}` };
  return {
    ms,
    baseRssKiB: typeof baseRssKiB === 'number' ? baseRssKiB : 0,
    ...(typeof peakExtraKiB === 'number' ? { peakExtraKiB } : {}),
  };
}

function runPython(python: string, args: string[]): ReturnType<typeof parsePeerOutput> {
  // No BLAS is involved, but a caller's thread settings must not matter either way: pinned, as peers.py does.
  const env = { ...process.env, OPENBLAS_NUM_THREADS: '1', OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1' };
  const r = spawnSync(python, [SCRIPT, ...args], { encoding: 'utf8', env, maxBuffer: 16 << 20 });
  if (r.error) return { ok: false, error: r.error.message };
  return parsePeerOutput(r.status, r.stdout, r.stderr);
}

export function detectPeers(env: NodeJS.ProcessEnv = process.env): Peers {
  const python = pythonPath(env);
  const r = runPython(python, ['versions']);
  return describePeers(python, r.ok ? (r.value as unknown as PeerVersions) : { error: r.error });
}

export type PeerSave = 'torch' | 'torch-fsync' | 'st' | 'st-fsync';
export type PeerLoad = 'torch' | 'st' | 'st-touch' | 'st-np';

/** One timed save by a fresh Python process: the layout (makeLayout's output) is passed as a JSON file. */
export function peerSave(peers: Peers, mode: PeerSave, layoutFile: string, out: string): OpResult | { error: string } {
  const r = runPython(peers.python, ['save', mode, layoutFile, out]);
  return r.ok ? toOpResult(r.value) : { error: `peers.py save ${mode}: ${r.error}` };
}

/** One timed load by a fresh Python process of `file`, which holds `bytes` bytes of tensor data. */
export function peerLoad(peers: Peers, mode: PeerLoad, file: string, bytes: number): OpResult | { error: string } {
  const r = runPython(peers.python, ['load', mode, file, String(bytes)]);
  return r.ok ? toOpResult(r.value) : { error: `peers.py load ${mode}: ${r.error}` };
}
