/**
 * Power loss, simulated (docs/POWER-LOSS.md). A child process saves through the public API (saveTensors; a
 * CheckpointManager with keep 2 and saveLast, sync and async; native and JS backends) onto power_loss_fs, a FUSE
 * filesystem that records every operation. The power is then cut after every prefix of that record, and for each
 * cut the enumerator (helpers/power-loss.ts) builds the states a crash may leave under two persistence models:
 * `posix` (only what an fsync of the file, or of the directory for names, made durable; any subset of the rest) and
 * `ordered` (ext4 data=ordered-like: names in program order, committed by any fsync). On each state:
 * - under every checkpoint name, one complete version: it loads and verifies, and holds what some save wrote there;
 * - every save reported complete before the cut (saveTensors resolved, `durable` resolved) is there, or a newer
 *   save under its name; for the manager, it is there unless retention dropped it for `keep` better durable ones;
 * - the index parses and lists only existing files (or is absent), and a new manager opens the directory, rebuilding
 *   what is missing, with `best` the true best of the durable saves (or a better save that was in flight), `last`
 *   no older than the last reported save, and every kept file holding its epoch's weights.
 * Negative controls, which must find violations: the same recorded runs with every directory fsync removed, and
 * runs with `durable: false` (no fsync at all).
 *
 * POWER_LOSS_STATES sets the states per cut and model (default 4; npm run test:power-loss: 64, exhaustive where
 * fewer). Needs root and FUSE: elsewhere the test says why and how to enable it, and fails under CI=true.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CheckpointManager } from '../lib/checkpoint-manager';
import { readIndex } from '../lib/checkpoint-index';
import { loadTensors, verifyCheckpoint } from '../lib/index';
import type { NamedTensors } from '../lib/index';
import { TEMP_PATTERN } from '../lib/tempfiles';
import { MANAGER_KEEP, crashWeightValue } from './fixtures/crash-child';
import {
  POWER_LOSS_NAMES,
  powerLossManagerArgs,
  powerLossName,
  powerLossTensors,
} from './fixtures/power-loss-child';
import { REGISTER } from './helpers/disk';
import { MODELS, Model, OpLog, crashStates, materialize, parseOpLog, writeState } from './helpers/power-loss';
import { buildPowerLossFs, mountPowerLossFs, powerLossFsUnavailable } from './helpers/power-loss-fs';

const CHILD = path.join(__dirname, 'fixtures', 'power-loss-child.ts');
const STATES_PER_CUT = Number(process.env.POWER_LOSS_STATES ?? 4);
const LONG = process.env.POWER_LOSS_STATES !== undefined;
const unavailable = powerLossFsUnavailable();

jest.setTimeout(LONG ? 3_600_000 : 120_000);

type Workload = 'tensors' | 'manager-sync' | 'manager-async';
interface Report {
  logpos: number;
  name?: string;
  seed?: number;
  epoch?: number;
  val_loss?: number;
}
interface Recorded {
  opLogText: string;
  reports: Report[];
}

let root: string;
let bin: string;
beforeAll(() => {
  if (unavailable) return;
  root = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'tfjs-ckpt-power-loss-'));
  bin = buildPowerLossFs();
});
afterAll(() => {
  if (root) if (!process.env.POWER_LOSS_KEEP) fs.rmSync(root, { recursive: true, force: true });
});

/** Where each workload saves, relative to the mount root: a directory the save itself has to create. */
const SUBDIR: Record<Workload, string> = { tensors: 'tensors/sub', 'manager-sync': 'ckpt', 'manager-async': 'ckpt' };

/** Mounts a fresh power_loss_fs, runs the child to completion on it, unmounts; returns the op log and reports. */
async function record(workload: Workload, backend: 'native' | 'js', durable: boolean): Promise<Recorded> {
  const runRoot = fs.mkdtempSync(path.join(root, `${workload}-${backend}-${durable}-`));
  const mount = await mountPowerLossFs(bin, runRoot);
  const reportFile = path.join(runRoot, 'reports.jsonl');
  try {
    const child = spawn(
      process.execPath,
      [
        '-r',
        REGISTER,
        CHILD,
        workload,
        backend,
        path.join(mount.mountpoint, SUBDIR[workload]),
        mount.opLog,
        reportFile,
        String(durable),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    if (code !== 0) throw new Error(`power-loss child failed (${code}): ${stderr}`);
  } finally {
    await mount.unmount();
  }
  const reports = fs
    .readFileSync(reportFile, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Report);
  return { opLogText: fs.readFileSync(mount.opLog, 'utf8'), reports };
}

function sameBytes(a: NamedTensors, b: NamedTensors): boolean {
  const bytes = (v: ArrayBufferView) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return (
    Object.keys(a).sort().join() === Object.keys(b).sort().join() &&
    Object.keys(b).every((n) => bytes(a[n].data).equals(bytes(b[n].data)))
  );
}

async function problem(what: string, p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return `${what}: ${(e as { code?: string }).code ?? ''} ${(e as Error).message}`;
  }
}

/** What a state holds, checked once per distinct state; `judge` then compares it with the reports before a cut. */
interface Summary {
  problems: string[];
  /** tensors: the seed under each name. */
  seeds: Map<string, number>;
  /** manager: what the reopened manager reports. */
  best?: { epoch: number; val_loss: number } | null;
  lastEpoch?: number | null;
  kept: { epoch: number; val_loss: number; kind: string }[];
}

async function summarizeTensors(dir: string): Promise<Summary> {
  const s: Summary = { problems: [], seeds: new Map(), kept: [] };
  if (!fs.existsSync(dir)) return s;
  for (const name of fs.readdirSync(dir)) {
    if (TEMP_PATTERN.test(name)) continue; // a save in flight; the next save removes it
    if (!POWER_LOSS_NAMES.includes(name)) {
      s.problems.push(`unexpected file ${name}`);
      continue;
    }
    const file = path.join(dir, name);
    try {
      await verifyCheckpoint(file);
      const loaded = await loadTensors(file);
      const seed = Number(loaded.metadata.seed);
      if (powerLossName(seed) !== name || !sameBytes(loaded.tensors, powerLossTensors(seed))) {
        s.problems.push(`${name} holds bytes no save wrote there (seed ${seed})`);
      } else {
        s.seeds.set(name, seed);
      }
    } catch (e) {
      s.problems.push(`${name} is torn: ${(e as { code?: string }).code ?? ''} ${(e as Error).message}`);
    }
  }
  return s;
}

async function summarizeManager(dir: string): Promise<Summary> {
  const s: Summary = { problems: [], seeds: new Map(), kept: [] };
  // No directory: a reopened manager would start empty.
  if (!fs.existsSync(dir)) return { ...s, best: null, lastEpoch: null };
  const read = await readIndex(dir);
  if (read.status === 'damaged') s.problems.push(`index damaged: ${read.reason}`);
  if (read.status === 'ok') {
    for (const e of read.index.checkpoints) {
      if (!read.index.deleting.includes(e.file) && !fs.existsSync(path.join(dir, e.file))) {
        s.problems.push(`index lists ${e.file}, which is missing`);
      }
    }
  }
  for (const name of fs.readdirSync(dir).filter((n) => n.endsWith('.safetensors'))) {
    const p = await problem(`${name} is torn`, verifyCheckpoint(path.join(dir, name)));
    if (p) s.problems.push(p);
  }
  const mgr = new CheckpointManager(powerLossManagerArgs(dir, false, true));
  const opened = await problem('a new manager cannot open the directory', mgr.open());
  if (opened) {
    s.problems.push(opened);
    return s;
  }
  try {
    const best = mgr.best;
    s.best = best ? { epoch: best.epoch, val_loss: best.metrics.val_loss } : null;
    s.lastEpoch = mgr.last ? mgr.last.epoch : null;
    const kept = mgr.checkpoints;
    if (kept.filter((c) => c.kind !== 'last').length > MANAGER_KEEP) s.problems.push(`more than ${MANAGER_KEEP} kept`);
    for (const c of kept) {
      s.kept.push({ epoch: c.epoch, val_loss: c.metrics.val_loss, kind: c.kind });
      try {
        const { tensors, metadata } = await loadTensors(c.path);
        const fileEpoch = Number(metadata.epoch);
        const kernel = Object.entries(tensors).find(([n]) => n.endsWith('/kernel'));
        if (!kernel || !Array.from(kernel[1].data).every((x) => x === crashWeightValue(fileEpoch))) {
          s.problems.push(`${c.file} does not hold the weights of epoch ${fileEpoch}`);
        }
        if (c.kind === 'last' ? fileEpoch < c.epoch : fileEpoch !== c.epoch) {
          s.problems.push(`${c.file} holds epoch ${fileEpoch}, the manager says ${c.epoch}`);
        }
      } catch (e) {
        s.problems.push(`kept ${c.file} does not load: ${(e as Error).message}`);
      }
    }
  } finally {
    const closed = await problem('close', mgr.close());
    if (closed) s.problems.push(closed);
  }
  return s;
}

/** The problems of a state left by a cut, given the saves reported complete before it. */
function judge(workload: Workload, s: Summary, before: Report[]): string[] {
  const out = [...s.problems];
  if (workload === 'tensors') {
    const last = new Map<string, number>();
    for (const r of before) last.set(r.name!, r.seed!);
    for (const [name, seed] of last) {
      const has = s.seeds.get(name);
      if (has === undefined) out.push(`${name}: save ${seed} was reported complete, the file is missing`);
      else if (has < seed) out.push(`${name}: save ${seed} was reported complete, the file holds older save ${has}`);
    }
    return out;
  }
  if (before.length === 0 || s.best === undefined) return out;
  const reportedEpochs = new Set(before.map((r) => r.epoch!));
  const trueBest = before.reduce((a, b) => (b.val_loss! < a.val_loss! ? b : a));
  if (s.best === null) out.push(`no best, although epoch ${trueBest.epoch} was reported durable`);
  else if (s.best.epoch !== trueBest.epoch && (reportedEpochs.has(s.best.epoch) || s.best.val_loss >= trueBest.val_loss!)) {
    out.push(`best is epoch ${s.best.epoch} (${s.best.val_loss}), the true best is epoch ${trueBest.epoch}`);
  }
  const maxEpoch = Math.max(...before.map((r) => r.epoch!));
  if (s.lastEpoch === null || (s.lastEpoch !== undefined && s.lastEpoch < maxEpoch)) {
    out.push(`last is epoch ${s.lastEpoch}, epoch ${maxEpoch} was reported durable`);
  }
  // A reported checkpoint may be gone only because retention kept `keep` better ones.
  const keptMain = s.kept.filter((k) => k.kind !== 'last');
  for (const r of before) {
    if (keptMain.some((k) => k.epoch === r.epoch)) continue;
    const better = keptMain.filter((k) => k.val_loss < r.val_loss! || (k.val_loss === r.val_loss && k.epoch > r.epoch!));
    if (better.length < MANAGER_KEEP) out.push(`epoch ${r.epoch} was reported durable and is gone`);
  }
  return out;
}

interface Outcome {
  cuts: number;
  states: Record<Model, number>;
  distinct: number;
  violations: Record<Model, number>;
  examples: string[];
}

/** Cuts the power after every effect of the log, checks up to STATES_PER_CUT states per cut and model. */
async function explore(workload: Workload, rec: Recorded, log: OpLog): Promise<Outcome> {
  const out: Outcome = {
    cuts: log.effects.length + 1,
    states: { posix: 0, ordered: 0 },
    distinct: 0,
    violations: { posix: 0, ordered: 0 },
    examples: [],
  };
  const cache = new Map<string, Summary>();
  const scratch = fs.mkdtempSync(path.join(root, 'state-'));
  for (let k = 0; k <= log.effects.length; k++) {
    const cutPos = k === 0 ? 0 : log.ends[k - 1];
    const before = rec.reports.filter((r) => r.logpos <= cutPos);
    for (const model of MODELS) {
      for (const state of crashStates(log, k, model, STATES_PER_CUT, k * 7919 + (model === 'posix' ? 1 : 2))) {
        out.states[model]++;
        const m = materialize(log, state);
        let summary = cache.get(m.signature);
        if (!summary) {
          const dir = path.join(scratch, String(out.distinct++));
          writeState(m, dir);
          const sub = path.join(dir, SUBDIR[workload]);
          summary = workload === 'tensors' ? await summarizeTensors(sub) : await summarizeManager(sub);
          fs.rmSync(dir, { recursive: true, force: true });
          cache.set(m.signature, summary);
        }
        const problems = judge(workload, summary, before);
        if (problems.length > 0) {
          out.violations[model]++;
          if (out.examples.length < 3) {
            const after = k === 0 ? 'before any operation' : `after "${log.labels[k - 1]}"`;
            out.examples.push(`${model}, cut ${k}/${log.effects.length} ${after}: ${problems.join('; ')}`);
          }
        }
      }
    }
  }
  fs.rmSync(scratch, { recursive: true, force: true });
  return out;
}

function describeOutcome(what: string, o: Outcome): string {
  return (
    `power-loss ${what}: ${o.cuts} cuts, ${o.states.posix} posix + ${o.states.ordered} ordered states ` +
    `(${o.distinct} distinct), violations posix ${o.violations.posix}, ordered ${o.violations.ordered}`
  );
}

/** Fails under CI=true; elsewhere says in one line why the test cannot run here and how to enable it. */
function fuseOrExplain(): boolean {
  if (!unavailable) return true;
  if (process.env.CI === 'true') throw new Error(`${unavailable} (CI=true: this test must run)`);
  console.info(unavailable);
  return false;
}

const WORKLOADS: Workload[] = ['tensors', 'manager-sync', 'manager-async'];

describe.each(['native', 'js'] as const)('%s backend', (backend) => {
  test.each(WORKLOADS)(
    `%s with durable: true: at every cut, under posix and ordered, every name holds one complete version, every save reported durable survives, the index is valid or absent, a reopened manager's best is the true best; without the directory fsyncs the same run violates that`,
    async (workload) => {
      if (!fuseOrExplain()) return;
      const rec = await record(workload, backend, true);
      expect(rec.reports.length).toBeGreaterThan(0);
      const good = await explore(workload, rec, parseOpLog(rec.opLogText));
      console.info(describeOutcome(`${backend} ${workload} durable`, good));
      expect(good.examples).toEqual([]);
      expect(good.states.posix).toBeGreaterThan(good.cuts);

      // Negative control: the same operations without any directory fsync must lose a reported save.
      const noDirSync = await explore(workload, rec, parseOpLog(rec.opLogText, { dropFsyncdir: true }));
      console.info(describeOutcome(`${backend} ${workload} without directory fsyncs`, noDirSync));
      expect(noDirSync.violations.posix).toBeGreaterThan(0);
    },
  );

  test.each(WORKLOADS)(
    '%s with durable: false (no fsync): the checker finds states that lose or tear a save reported complete',
    async (workload) => {
      if (!fuseOrExplain()) return;
      const rec = await record(workload, backend, false);
      const o = await explore(workload, rec, parseOpLog(rec.opLogText));
      console.info(describeOutcome(`${backend} ${workload} durable: false`, o));
      expect(o.violations.posix).toBeGreaterThan(0);
      expect(o.violations.ordered).toBeGreaterThan(0);
    },
  );
});
