/**
 * Commit plans meeting faults only a failing disk or a limited filesystem produces, injected into the real libc calls
 * of a child process by the LD_PRELOAD shim (test/native/fault_shim.c, as test/durability/faults.test.ts uses it;
 * io_uring off so that the JS backend's calls go through libc too), over both backends: a directory fsync failing
 * after a checkpoint's rename (committed, the index not written), an index fsync failing after the checkpoint
 * (committed, named as the index step), hard links refused (the copy and rewrite fallbacks), a link failing with EIO
 * (no fallback), a deletion failing (a warning). Each test first proves from the shim's log that its fault fired.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadTensors } from '../../lib/io/tensors';
import { BACKENDS } from '../helpers/backends';
import { REGISTER, tempFiles } from '../helpers/disk';
import { versionOf } from '../helpers/commit-plans';
import { COMMIT_FAULTS } from '../fixtures/commit-fault-child';
import type { CommitFaultReport } from '../fixtures/commit-fault-child';
import { buildFaultShim } from '../helpers/fault-shim';

const CHILD = path.join(__dirname, '..', 'fixtures', 'commit-fault-child.ts');
const { EIO } = os.constants.errno;

jest.setTimeout(60_000);

let root: string;
let shim: string;
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ckpt-commit-faults-'));
  shim = buildFaultShim(root);
});
afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

/** Runs one scenario in a fresh directory; returns its report, the directory and the shim's injections there. */
function run(backend: string, name: string): { report: CommitFaultReport; dir: string; injected: string[] } {
  const dir = path.join(root, `${backend}-${name.replace(/[^A-Za-z0-9]+/g, '-')}`);
  fs.mkdirSync(dir);
  const control = path.join(root, `${path.basename(dir)}.control`);
  const log = path.join(root, `${path.basename(dir)}.log`);
  const child = spawnSync(process.execPath, ['-r', REGISTER, CHILD, backend, name, dir, control], {
    encoding: 'utf8',
    env: { ...process.env, LD_PRELOAD: shim, FAULT_SHIM_CONTROL: control, FAULT_SHIM_LOG: log, UV_USE_IO_URING: '0' },
  });
  expect({ status: child.status, stderr: child.status === 0 ? '' : child.stderr }).toEqual({ status: 0, stderr: '' });
  const injected = fs.existsSync(log)
    ? fs
        .readFileSync(log, 'utf8')
        .split('\n')
        .filter((l) => l.includes(' inject '))
    : [];
  return { report: JSON.parse(child.stdout.trim().split('\n').pop() as string) as CommitFaultReport, dir, injected };
}

const scenario = (n: number) => COMMIT_FAULTS[n].name;

describe.each(BACKENDS)('%s backend', (backend) => {
  test(`${scenario(0)}: the step is committed (its file in place), the plan stops before the index`, async () => {
    const { report, dir, injected } = run(backend, scenario(0));
    expect(injected).toHaveLength(1);
    expect(report.error).toMatchObject({
      kind: 'io',
      errno: EIO,
      syscall: 'fsync',
      path: dir,
      step: 0,
      stepKind: 'checkpoint',
      stepCommitted: true,
      committed: true,
    });
    expect(await versionOf(path.join(dir, 'b.safetensors'))).toBe(2);
    expect(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).toBe('{"v":1}');
    expect(tempFiles(dir)).toEqual([]);
  });

  test(`${scenario(1)}: reported as committed, naming the index step; the old index stays, no temp file`, async () => {
    const { report, dir, injected } = run(backend, scenario(1));
    expect(injected).toHaveLength(1);
    expect(report.error).toMatchObject({
      errno: EIO,
      syscall: 'fsync',
      step: 1,
      stepKind: 'text',
      stepCommitted: false,
      committed: true,
    });
    expect(await versionOf(path.join(dir, 'b.safetensors'))).toBe(2);
    expect(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).toBe('{"v":1}');
    expect(tempFiles(dir)).toEqual([]);
  });

  test(`${scenario(2)}: last is a copy with the same bytes, the step listed in fallbacks`, async () => {
    const { report, dir, injected } = run(backend, scenario(2));
    expect(injected).toHaveLength(1);
    expect(report.result).toEqual({ fallbacks: [1], warnings: [], finishedAt: expect.any(Number) });
    const last = path.join(dir, 'last.safetensors');
    expect(fs.readFileSync(last).equals(fs.readFileSync(path.join(dir, 'b.safetensors')))).toBe(true);
    expect(fs.statSync(last).ino).not.toBe(fs.statSync(path.join(dir, 'b.safetensors')).ino);
    expect(tempFiles(dir)).toEqual([]);
  });

  test(`${scenario(3)}: last is written from the snapshot and verifies`, async () => {
    const { report, dir, injected } = run(backend, scenario(3));
    expect(injected).toHaveLength(1);
    expect(report.result).toEqual({ fallbacks: [1], warnings: [], finishedAt: expect.any(Number) });
    const { tensors } = await loadTensors(path.join(dir, 'last.safetensors'));
    expect((tensors.w.data as Float32Array)[0]).toBe(2);
    expect(tempFiles(dir)).toEqual([]);
  });

  test(`${scenario(4)}: the plan stops at the link, the index is not written`, async () => {
    const { report, dir, injected } = run(backend, scenario(4));
    expect(injected).toHaveLength(1);
    expect(report.error).toMatchObject({ errno: EIO, syscall: 'link', step: 1, stepKind: 'link', committed: true });
    expect(fs.existsSync(path.join(dir, 'last.safetensors'))).toBe(false);
    expect(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).toBe('{"v":1}');
    expect(tempFiles(dir)).toEqual([]);
  });

  test(`${scenario(5)}: the plan succeeds and reports the file`, async () => {
    const { report, dir, injected } = run(backend, scenario(5));
    expect(injected).toHaveLength(1);
    expect(report.result?.warnings).toEqual([
      expect.objectContaining({ step: 0, path: path.join(dir, 'old.safetensors'), errno: EIO, syscall: 'unlink' }),
    ]);
    expect(fs.readFileSync(path.join(dir, 'old.safetensors'), 'utf8')).toBe('evicted');
    expect(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).toBe('{"v":2}');
  });
});
