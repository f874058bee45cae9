/**
 * Failing disks: real libc calls made to fail under the library, in a child node process with an LD_PRELOAD shim
 * (test/native/fault_shim.c, built here with warnings as errors). Both backends meet the same calls: the native
 * addon calls libc directly, the JS backend through libuv's thread pool (io_uring off: UV_USE_IO_URING=0, so every
 * file operation is a libc call the shim sees). The shim logs every call it matched, so each test first proves its
 * fault fired.
 *
 * For saveTensors and a CheckpointManager step (sync and async), each case of fixtures/fault-child.ts FAULT_CASES:
 * - a failing call (fsync, write, open, close, rename: EIO, ENOSPC, EXDEV): a CheckpointError whose code and errno
 *   are the injected ones and whose syscall is the failing call; a failed fsync is never retried (the shim saw it
 *   once); the previous checkpoint is intact and loads (and stays the manager's best, in memory and in the index);
 *   no temp file is left; with async, flush() reports the failure again;
 * - the directory fsync after the rename failing: a coded error with `committed: true`, the new file in place (the
 *   manager records it as its best, in memory and in the index, and keeps the previous one);
 * - short writes and EINTR: the library loops or retries, the save succeeds and the file verifies;
 * - a write returning 0 bytes without an errno: retried while fewer than ZERO_WRITE_ATTEMPTS come in a row (the
 *   save succeeds); that many in a row fail as above, but with ERR_CHECKPOINT_WRITE_STALLED and no errno (none is
 *   invented);
 * - in every case the next save, once the fault is cleared, works in the same process (and the same manager).
 */
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { readIndex } from '../../lib/manager/checkpoint-index';
import { loadTensors, verifyCheckpoint } from '../../lib/index';
import type { NamedTensors } from '../../lib/index';
import { BACKENDS } from '../helpers/backends';
import { REGISTER, tempFiles } from '../helpers/disk';
import {
  FAULT_MODES,
  MANAGER_FILES,
  TENSORS_FILE,
  caseDirName,
  faultCases,
  faultTensors,
} from '../fixtures/fault-child';
import type { FaultCase, FaultMode, FaultReport, ReportedError } from '../fixtures/fault-child';
import { buildFaultShim } from '../helpers/fault-shim';

const CHILD = path.join(__dirname, '..', 'fixtures', 'fault-child.ts');

jest.setTimeout(60_000);

let root: string;
let shim: string;
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ckpt-faults-'));
  shim = buildFaultShim(root);
});
afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

/** One line of the shim's log: the function, the path it matched, and what it did. */
interface ShimHit {
  fn: string;
  path: string;
  outcome: string;
}

function shimHits(log: string, dir: string): ShimHit[] {
  if (!fs.existsSync(log)) return [];
  return fs
    .readFileSync(log, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => {
      const [fn, p, ...rest] = l.split(' ');
      return { fn, path: p, outcome: rest.join(' ') };
    })
    .filter((h) => h.path === dir || h.path.startsWith(dir + '/'));
}

function sameTensors(a: Record<string, { data: ArrayBufferView }>, b: NamedTensors): boolean {
  const bytes = (v: ArrayBufferView) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return (
    Object.keys(a).sort().join() === Object.keys(b).sort().join() &&
    Object.keys(b).every((n) => bytes(a[n].data).equals(bytes(b[n].data)))
  );
}

/** Loads and verifies a saveTensors file; returns its version. */
async function tensorsVersion(file: string): Promise<number> {
  await verifyCheckpoint(file);
  const { tensors } = await loadTensors(file);
  const v = (tensors.version.data as Int32Array)[0];
  expect(sameTensors(tensors, faultTensors(v))).toBe(true);
  return v;
}

/** The manager file of an epoch exists, verifies and loads. */
async function expectManagerFile(dir: string, epoch: number): Promise<void> {
  const file = path.join(dir, MANAGER_FILES[epoch]);
  await verifyCheckpoint(file);
  await loadTensors(file);
}

async function indexBest(dir: string): Promise<string | null> {
  const read = await readIndex(dir);
  expect(read.status).toBe('ok');
  return read.status === 'ok' ? read.index.best : null;
}

function expectCoded(error: ReportedError | null, c: FaultCase): void {
  expect(error).not.toBeNull();
  expect({ name: error!.name, code: error!.code, errno: error!.errno, syscall: error!.syscall }).toEqual({
    name: 'CheckpointError',
    code: c.code ?? c.action,
    errno: c.code ? undefined : os.constants.errno[c.action as keyof typeof os.constants.errno],
    syscall: c.syscall,
  });
}

/** The child of one (backend, mode), driven case by case. */
class FaultChild {
  readonly log: string;
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly lines: AsyncIterableIterator<string>;
  private stderr = '';

  constructor(
    readonly mode: FaultMode,
    readonly backend: string,
    readonly dir: string,
  ) {
    fs.mkdirSync(dir, { recursive: true });
    const control = path.join(dir, 'shim-control');
    this.log = path.join(dir, 'shim-log');
    this.proc = spawn(process.execPath, ['-r', REGISTER, CHILD, mode, backend, dir, control], {
      env: {
        ...process.env,
        LD_PRELOAD: shim,
        FAULT_SHIM_CONTROL: control,
        FAULT_SHIM_LOG: this.log,
        UV_USE_IO_URING: '0',
      },
    });
    this.proc.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.lines = readline.createInterface({ input: this.proc.stdout })[Symbol.asyncIterator]();
  }

  async next(caseName: string, phase: FaultReport['phase']): Promise<FaultReport> {
    const line = await this.lines.next();
    if (line.done) throw new Error(`fault child ended before ${caseName} ${phase}: ${this.stderr}`);
    const r = JSON.parse(line.value) as FaultReport;
    expect({ case: r.case, phase: r.phase }).toEqual({ case: caseName, phase });
    return r;
  }

  resume(): void {
    this.proc.stdin.write('continue\n');
  }

  async end(): Promise<void> {
    this.proc.stdin.end();
    const code = await new Promise<number | null>((resolve) => {
      if (this.proc.exitCode !== null) resolve(this.proc.exitCode);
      else this.proc.on('exit', resolve);
    });
    expect({ code, stderr: code === 0 ? '' : this.stderr }).toEqual({ code: 0, stderr: '' });
  }
}

describe.each(BACKENDS)('%s backend', (backend) => {
  describe.each(FAULT_MODES)('%s', (mode) => {
    let child: FaultChild;
    beforeAll(() => {
      child = new FaultChild(mode, backend, path.join(root, `${backend}-${mode}`));
    });
    afterAll(async () => {
      await child.end();
    });

    test.each(faultCases(mode, backend).map((c) => [c.name, c] as const))(
      '%s: the fault fires, the outcome is as promised (coded error, previous checkpoint intact, no temp file), and the next save works',
      async (_name, c) => {
        const dir = path.join(child.dir, caseDirName(c));
        const faulted = await child.next(c.name, 'faulted');
        let recovered: FaultReport;
        try {
          const hits = shimHits(child.log, dir);
          const injected = hits.filter((h) => h.outcome !== 'pass');
          expect(injected.length).toBeGreaterThan(0);
          expect(tempFiles(dir)).toEqual([]);
          const isManager = mode !== 'tensors';

          if (c.outcome === 'fail') {
            expectCoded(faulted.error, c);
            expect(faulted.error!.committed).toBeUndefined();
            if (mode === 'manager-async') expect(faulted.flushError).toEqual(faulted.error);
            if (c.families === 'fsync') {
              // Never retried: the failing file saw exactly one fsync (the injected one).
              const failed = injected[0].path;
              expect(hits.filter((h) => h.path === failed && /^f(data)?sync$/.test(h.fn))).toHaveLength(1);
            }
            if (isManager) {
              expect(faulted.best).toBe(0);
              expect(await indexBest(dir)).toBe(MANAGER_FILES[0]);
              await expectManagerFile(dir, 0);
            } else {
              expect(await tensorsVersion(path.join(dir, TENSORS_FILE))).toBe(1);
            }
          } else if (c.outcome === 'committed') {
            expectCoded(faulted.error, c);
            expect(faulted.error!.committed).toBe(true);
            if (mode === 'manager-async') expect(faulted.flushError).toEqual(faulted.error);
            if (isManager) {
              // The file is in place (only its durability is unknown), so the manager records it, in memory and in
              // the index, without deleting anything on its account; the previous checkpoint stays.
              expect(faulted.best).toBe(1);
              expect(await indexBest(dir)).toBe(MANAGER_FILES[1]);
              await expectManagerFile(dir, 1);
              await expectManagerFile(dir, 0);
            } else expect(await tensorsVersion(path.join(dir, TENSORS_FILE))).toBe(2);
          } else {
            expect(faulted.error).toBeNull();
            if (isManager) {
              expect(faulted.best).toBe(1);
              expect(await indexBest(dir)).toBe(MANAGER_FILES[1]);
              await expectManagerFile(dir, 1);
            } else {
              expect(await tensorsVersion(path.join(dir, TENSORS_FILE))).toBe(2);
            }
          }
        } finally {
          // Even when a check failed: the child goes on, so the next case still meets its own messages.
          child.resume();
          recovered = await child.next(c.name, 'recovered');
        }
        expect(recovered.error).toBeNull();
        expect(tempFiles(dir)).toEqual([]);
        if (mode === 'tensors') {
          expect(await tensorsVersion(path.join(dir, TENSORS_FILE))).toBe(3);
        } else {
          expect(recovered.best).toBe(2);
          expect(await indexBest(dir)).toBe(MANAGER_FILES[2]);
          await expectManagerFile(dir, 2);
          await expectManagerFile(dir, 0);
        }
      },
    );
  });
});
