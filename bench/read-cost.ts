/**
 * What one read costs in this process, measured the same way by the header-scale benchmark (bench/header-scale.ts)
 * and the hostile-header child of the format tests (test/fixtures/hostile-header-child.ts): the outcome (ok or the
 * error code), the wall time, the peak growth of the resident set over a baseline (VmHWM, reset after the baseline:
 * exact even while a parser runs without yielding) and the heap the result keeps alive. Linux only (VmHWM).
 * The caller loads everything the read uses before calling, so that compiling it is not billed to the read; run
 * under `--expose-gc` for the heap figures to mean anything.
 */
import type { inspectCommand } from '../lib/cli/commands/inspect';
import { memoryStatus, resetPeak } from './memory';

export interface ReadCost {
  /** 'ok', or the code of the error the read failed with (`UNCODED <error>` for an error without one). */
  outcome: string;
  /** Wall time of the read, ms. */
  ms: number;
  /** Peak resident set during the read minus the resident set at the baseline, bytes. */
  grownBytes: number;
  /** Heap still used after the read (and a gc) minus the heap at the baseline, bytes: what the result keeps. */
  retainedHeap: number;
  /** Heap used at the baseline, bytes. */
  baseHeap: number;
}

/** Runs `read` once after a baseline and returns what it cost; its result is kept alive until the heap is measured. */
export async function measureRead(read: () => Promise<unknown>): Promise<ReadCost> {
  global.gc?.();
  const base = process.memoryUsage();
  if (!resetPeak()) throw new Error('cannot reset VmHWM through /proc/self/clear_refs');
  const start = process.hrtime.bigint();
  let outcome = 'ok';
  let kept: unknown;
  try {
    kept = await read();
  } catch (e) {
    outcome = (e as { code?: string }).code ?? `UNCODED ${String(e)}`;
  }
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  const grownBytes = memoryStatus().hwmKiB * 1024 - base.rss;
  global.gc?.();
  const retainedHeap = process.memoryUsage().heapUsed - base.heapUsed;
  void kept;
  return { outcome, ms, grownBytes, retainedHeap, baseHeap: base.heapUsed };
}

/** The CLI's `inspect` of `file` (text output) with its output counted, not kept: resolves to the characters printed. */
export async function inspectCounted(inspect: typeof inspectCommand, file: string): Promise<number> {
  let printed = 0;
  const sink = { write: (s: string) => ((printed += s.length), true) };
  const ctx = { json: false, verbose: false, stdout: sink, stderr: sink, interactive: false, exitCode: 0 };
  await inspect(ctx as unknown as Parameters<typeof inspectCommand>[0], file);
  return printed;
}
