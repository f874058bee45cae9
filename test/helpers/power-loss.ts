/**
 * Crash states after a power cut, from the operation log of test/native/power_loss_fs.cc (see docs/POWER-LOSS.md).
 *
 * The log is parsed into effects on objects: data effects on a file (write, truncate, fallocate), name effects on a
 * directory (an entry set or removed: create, link, unlink, rename, mkdir, rmdir), and barriers (fsync of a file,
 * fsync of a directory). A cut after the first k effects leaves, under a persistence model, the durable effects plus
 * some of the pending ones:
 * - `posix` (the worst case POSIX allows): a file's data effects are durable once an fsync of that file follows them;
 *   a directory's name effects once an fsync of that directory follows them. Nothing else is promised: any subset of
 *   the pending effects may have reached the disk, in any combination (a later write without an earlier one, a
 *   rename without the data of the file it names, an unlink without the create before it). Renames are atomic; a
 *   write may also be torn (one state per cut keeps only the first half, in whole 512-byte sectors, of the newest
 *   pending write).
 * - `ordered` (ext4 data=ordered-like, one journal): name effects reach the disk in program order, and any fsync
 *   (of a file or a directory) commits the journal, so every name effect before it is durable; a cut keeps a prefix
 *   of the pending name effects. File data is durable at the file's fsync; of its pending data effects, a prefix
 *   survives (delayed allocation: a committed rename may name a file whose data never made it).
 * Every `ordered` state is also a `posix` state: the first model is the one that can fail a program, the second says
 * whether a common filesystem would.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { mulberry32 as rng } from '../../demo/shapes';

export type Model = 'posix' | 'ordered';
export const MODELS: readonly Model[] = ['posix', 'ordered'];

/** A directory entry's value: a file object's id, or a directory (by its path; directories are never renamed). */
type EntryValue = { file: number } | { dir: string };

type Effect =
  | { t: 'write'; file: number; offset: number; data: Buffer }
  | { t: 'trunc'; file: number; size: number }
  | { t: 'falloc'; file: number; end: number }
  | { t: 'name'; dir: string; changes: { name: string; value: EntryValue | null; onlyIf?: number }[] }
  | { t: 'fsync'; file: number }
  | { t: 'fsyncdir'; dir: string };

export interface OpLog {
  effects: Effect[];
  /** Byte offset in the log file just after each effect's line: a report made when the log had size P happened
   * after every effect whose end <= P. */
  ends: number[];
  /** Each effect's log line (shortened), to name a cut in a failure message. */
  labels: string[];
}

function split(p: string): { dir: string; name: string } {
  return { dir: path.posix.dirname(p), name: path.posix.basename(p) };
}

/**
 * Parses the log of power_loss_fs. Resolves inode numbers and names to objects as the live filesystem did, so
 * that each effect can later be applied alone. `dropFsyncdir` removes every directory fsync (the negative control:
 * the same run as if the program never fsynced a directory).
 */
export function parseOpLog(text: string, { dropFsyncdir = false } = {}): OpLog {
  const effects: Effect[] = [];
  const ends: number[] = [];
  const labels: string[] = [];
  const live = new Map<string, EntryValue>([['/', { dir: '/' }]]);
  const byIno = new Map<string, number>();
  let nextFile = 0;
  let offset = 0;
  const fileOf = (ino: string, line: string): number => {
    const f = byIno.get(ino);
    if (f === undefined) throw new Error(`op log: inode ${ino} was never created: ${line.slice(0, 80)}`);
    return f;
  };
  const liveFile = (p: string, line: string): number => {
    const v = live.get(p);
    if (!v || !('file' in v)) throw new Error(`op log: ${p} is not a known file: ${line.slice(0, 80)}`);
    return v.file;
  };
  for (const line of text.split('\n')) {
    const lineEnd = offset + Buffer.byteLength(line) + 1;
    offset = lineEnd;
    if (line.length === 0) continue;
    const [kind, a, b, c] = line.split(' ');
    let e: Effect | undefined;
    switch (kind) {
      case 'create': {
        const file = nextFile++;
        byIno.set(a, file);
        live.set(b, { file });
        const { dir, name } = split(b);
        e = { t: 'name', dir, changes: [{ name, value: { file } }] };
        break;
      }
      case 'write':
        e = { t: 'write', file: fileOf(a, line), offset: Number(b), data: Buffer.from(c ?? '', 'hex') };
        break;
      case 'trunc':
        e = { t: 'trunc', file: fileOf(a, line), size: Number(b) };
        break;
      case 'falloc':
        e = { t: 'falloc', file: fileOf(a, line), end: Number(b) + Number(c) };
        break;
      case 'fsync':
        e = { t: 'fsync', file: fileOf(a, line) };
        break;
      case 'fsyncdir':
        if (!dropFsyncdir) e = { t: 'fsyncdir', dir: a };
        break;
      case 'rename': {
        const file = liveFile(a, line);
        const from = split(a);
        const to = split(b);
        if (from.dir !== to.dir) throw new Error(`op log: rename across directories is not modelled: ${line}`);
        live.delete(a);
        live.set(b, { file });
        e = {
          t: 'name',
          dir: to.dir,
          changes: [
            { name: to.name, value: { file } },
            { name: from.name, value: null, onlyIf: file },
          ],
        };
        break;
      }
      case 'link': {
        const file = liveFile(a, line);
        live.set(b, { file });
        const to = split(b);
        e = { t: 'name', dir: to.dir, changes: [{ name: to.name, value: { file } }] };
        break;
      }
      case 'unlink': {
        const file = liveFile(a, line);
        live.delete(a);
        const { dir, name } = split(a);
        e = { t: 'name', dir, changes: [{ name, value: null, onlyIf: file }] };
        break;
      }
      case 'mkdir': {
        live.set(a, { dir: a });
        const { dir, name } = split(a);
        e = { t: 'name', dir, changes: [{ name, value: { dir: a } }] };
        break;
      }
      case 'rmdir': {
        live.delete(a);
        const { dir, name } = split(a);
        e = { t: 'name', dir, changes: [{ name, value: null }] };
        break;
      }
      default:
        throw new Error(`op log: unknown operation: ${line.slice(0, 80)}`);
    }
    if (e) {
      effects.push(e);
      ends.push(lineEnd);
      labels.push(line.length > 60 ? `${line.slice(0, 57)}...` : line);
    }
  }
  return { effects, ends, labels };
}

/** Which of the first k effects are durable under `model`, and which are pending (data and name effects only). */
function classify(log: OpLog, k: number, model: Model): { durable: boolean[]; pending: number[] } {
  const durable = new Array<boolean>(k).fill(false);
  const synced = new Set<number>();
  const syncedDirs = new Set<string>();
  let journal = false;
  // Walk backwards: an effect is durable when a barrier that covers it comes later.
  for (let i = k - 1; i >= 0; i--) {
    const e = log.effects[i];
    if (e.t === 'fsync') {
      synced.add(e.file);
      journal = true;
    } else if (e.t === 'fsyncdir') {
      syncedDirs.add(e.dir);
      journal = true;
    } else if (e.t === 'name') {
      durable[i] = model === 'ordered' ? journal : syncedDirs.has(e.dir);
    } else {
      durable[i] = synced.has(e.file);
    }
  }
  const pending: number[] = [];
  for (let i = 0; i < k; i++) {
    const t = log.effects[i].t;
    if (!durable[i] && t !== 'fsync' && t !== 'fsyncdir') pending.push(i);
  }
  return { durable, pending };
}

/** A crash state: the set of effects (indices, among the first `cut`) that reached the disk. */
export interface CrashState {
  cut: number;
  model: Model;
  applied: number[];
  /** posix only: one applied write that reached the disk in part (its first `bytes` bytes): a torn write. */
  torn?: { effect: number; bytes: number };
}

/**
 * Up to `limit` crash states for a cut after k effects (every subset when there are fewer): under `posix`, subsets of
 * the pending effects (none, all, all with the newest write torn, then seeded random subsets alternating with
 * all-but-one and one-alone); under `ordered`, prefixes of the pending name effects combined with per-file prefixes
 * of the pending data (none, all, random).
 */
export function crashStates(log: OpLog, k: number, model: Model, limit: number, seed: number): CrashState[] {
  const { durable, pending } = classify(log, k, model);
  const base: number[] = [];
  for (let i = 0; i < k; i++) if (durable[i]) base.push(i);
  const states: CrashState[] = [];
  const seen = new Set<string>();
  const add = (chosen: number[], torn?: { effect: number; bytes: number }): void => {
    const key = chosen.join(',') + (torn ? ` torn ${torn.effect}` : '');
    if (seen.has(key) || states.length >= limit) return;
    seen.add(key);
    states.push({ cut: k, model, applied: [...base, ...chosen].sort((x, y) => x - y), ...(torn ? { torn } : {}) });
  };
  const random = rng(seed);
  if (model === 'posix') {
    const n = pending.length;
    if (n <= 16 && 2 ** n <= limit) {
      for (let mask = 0; mask < 2 ** n; mask++) add(pending.filter((_, j) => (mask >> j) & 1));
      return states;
    }
    // None and all; then, alternately, a random subset and one effect dropped or alone (the newest first: the
    // effects a cut most often catches in flight).
    add([]);
    add(pending);
    // Everything, but the newest pending write torn: only its first half (rounded down to 512 bytes, a sector)
    // reached the disk.
    const lastWrite = [...pending].reverse().find((i) => log.effects[i].t === 'write');
    if (lastWrite !== undefined) {
      const e = log.effects[lastWrite] as { data: Buffer };
      add(pending, { effect: lastWrite, bytes: Math.floor(e.data.length / 2 / 512) * 512 });
    }
    for (let j = n - 1, tries = 0; states.length < limit && tries < limit * 4; tries++) {
      if (tries % 2 === 0 || j < 0) add(pending.filter(() => random() < 0.5));
      else {
        add(pending.filter((_, x) => x !== j));
        add([pending[j]]);
        j--;
      }
    }
    return states;
  }
  const names = pending.filter((i) => log.effects[i].t === 'name');
  const dataByFile = new Map<number, number[]>();
  for (const i of pending) {
    const e = log.effects[i];
    if (e.t === 'write' || e.t === 'trunc' || e.t === 'falloc') {
      dataByFile.set(e.file, [...(dataByFile.get(e.file) ?? []), i]);
    }
  }
  const files = [...dataByFile.values()];
  const dataChoices: number[][] = [[], files.flat()];
  for (let r = 0; r < 4 && files.length > 0; r++) {
    dataChoices.push(files.flatMap((f) => f.slice(0, Math.floor(random() * (f.length + 1)))));
  }
  const combos: [number, number][] = [];
  for (let m = 0; m <= names.length; m++) for (let d = 0; d < dataChoices.length; d++) combos.push([m, d]);
  // Both extremes first, then the rest in a seeded order.
  const order = combos.map((c) => ({ c, key: random() }));
  order.sort((x, y) => x.key - y.key);
  const ranked = [
    [names.length, 1] as [number, number],
    [0, 0] as [number, number],
    [names.length, 0] as [number, number],
    ...order.map((o) => o.c),
  ];
  for (const [m, d] of ranked) add([...names.slice(0, m), ...dataChoices[d]]);
  return states;
}

/** The files (path relative to the mount root -> content) and directories a crash state leaves. */
export interface Materialized {
  dirs: string[];
  files: Map<string, Buffer>;
  /** Each file's content hash, to check each distinct file (and, with subtreeSignature, state) once. */
  hashes: Map<string, string>;
}

/** A hash of everything at or under `dir` (a path from the mount root): equal for equal subtrees. */
export function subtreeSignature(m: Materialized, dir: string): string {
  const under = (p: string) => p === dir || p.startsWith(dir + '/');
  const h = createHash('sha1');
  for (const d of m.dirs) if (under(d)) h.update(`d ${d}\n`);
  for (const [p, hash] of m.hashes) if (under(p)) h.update(`f ${p} ${hash}\n`);
  return h.digest('hex');
}

export function materialize(log: OpLog, state: CrashState): Materialized {
  const entries = new Map<string, Map<string, EntryValue>>([['/', new Map()]]);
  const data = new Map<number, Buffer>();
  const sizeOf = (f: number): Buffer => data.get(f) ?? Buffer.alloc(0);
  for (const i of state.applied) {
    const e = log.effects[i];
    if (e.t === 'write') {
      let b = sizeOf(e.file);
      const bytes = state.torn?.effect === i ? e.data.subarray(0, state.torn.bytes) : e.data;
      const end = e.offset + bytes.length;
      if (b.length < end) b = Buffer.concat([b, Buffer.alloc(end - b.length)]);
      bytes.copy(b, e.offset);
      data.set(e.file, b);
    } else if (e.t === 'trunc') {
      const b = sizeOf(e.file);
      data.set(
        e.file,
        e.size <= b.length ? b.subarray(0, e.size) : Buffer.concat([b, Buffer.alloc(e.size - b.length)]),
      );
    } else if (e.t === 'falloc') {
      const b = sizeOf(e.file);
      if (b.length < e.end) data.set(e.file, Buffer.concat([b, Buffer.alloc(e.end - b.length)]));
    } else if (e.t === 'name') {
      let dir = entries.get(e.dir);
      if (!dir) entries.set(e.dir, (dir = new Map()));
      for (const ch of e.changes) {
        const cur = dir.get(ch.name);
        if (ch.value) dir.set(ch.name, ch.value);
        else if (ch.onlyIf === undefined || (cur && 'file' in cur && cur.file === ch.onlyIf)) dir.delete(ch.name);
      }
    }
  }
  // Only what is reachable from the root exists.
  const dirs: string[] = [];
  const files = new Map<string, Buffer>();
  const walk = (dir: string): void => {
    dirs.push(dir);
    for (const [name, v] of [...(entries.get(dir) ?? new Map<string, EntryValue>())].sort()) {
      const p = path.posix.join(dir, name);
      if ('dir' in v) walk(v.dir);
      else files.set(p, sizeOf(v.file));
    }
  };
  walk('/');
  const hashes = new Map<string, string>();
  for (const [p, b] of files) hashes.set(p, createHash('sha1').update(b).digest('hex'));
  return { dirs, files, hashes };
}

/** Long enough ago that nothing in the restored state looks freshly written (a reboot takes longer). */
const REBOOT_MS = 3_600_000;

/**
 * Writes a materialized state (only what is at or under `only`) under `root` (which must not exist), with every mtime an hour back: the time a
 * machine takes to come back after a power cut, so that the library's "a lock file written seconds ago may still
 * be being written" grace does not apply to a state a crash left.
 */
export function writeState(m: Materialized, root: string, only = '/'): void {
  const then = new Date(Date.now() - REBOOT_MS);
  const under = (p: string) => only === '/' || p === only || p.startsWith(only + '/');
  for (const d of m.dirs) if (under(d)) fs.mkdirSync(path.join(root, d), { recursive: true });
  for (const [p, b] of m.files) {
    if (!under(p)) continue;
    fs.writeFileSync(path.join(root, p), b);
    fs.utimesSync(path.join(root, p), then, then);
  }
}
