/**
 * Valid files with many header entries (200k metadata keys, 200k tensors, a 50 MB metadata value), written by the
 * library, cost a bounded multiple of their header to read: each reader runs in a fresh process
 * (bench/header-scale.ts), which reports the peak growth of its resident set (VmHWM) and the heap its result keeps.
 * Bounds: 3x the header plus a constant (RSS_SLACK for the resident set: V8's young generation and code grow by tens
 * of MB under any allocation churn; HEAP_SLACK for the heap kept). Before the read-through views (lazy-record.ts) and
 * the runs of small tensors, readCheckpointInfo of 200k keys grew the resident set by 57 MB and kept 22 MB of heap
 * (bounds here: 51 MB, 15 MB), of 200k tensors by 115 MB and verifyCheckpoint of them by 113-227 MB (bound 86 MB):
 * all would fail. Times are measured by the
 * script, not asserted (the machine is shared).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { type Case, type Measured, type Op, runChild } from '../../bench/header-scale';

const RSS_SLACK = 40e6;
const HEAP_SLACK = 4e6;

let root: string;
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ckpt-many-'));
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const made = new Map<Case, string>();
function fileOf(c: Case): string {
  let file = made.get(c);
  if (!file) {
    file = path.join(root, `${c}.safetensors`);
    runChild(['make', c, file]); // in its own process, so that building it is not billed to the read
    made.set(c, file);
  }
  return file;
}

const cases: [Case, Op, string][] = [];
for (const backend of ['native', 'js']) {
  for (const op of ['info', 'verify', 'load'] as const) {
    cases.push(['keys-200k', op, backend], ['string-50MB', op, backend]);
  }
  cases.push(['tensors-200k', 'info', backend], ['tensors-200k', 'verify', backend]);
  cases.push(['model-keys-200k', 'model', backend]);
}

describe('valid files of many header entries cost at most 3x their header (fresh process, resident set and heap measured)', () => {
  test.each(cases)(
    '%s: %s on the %s backend grows the resident set by at most 3x the header + 40 MB and keeps at most 3x + 4 MB of heap',
    (c, op, backend) => {
      const out = runChild(['read', op, fileOf(c), backend], ['--expose-gc']);
      const r = JSON.parse(out.slice(out.indexOf('{"outcome"'))) as Measured;
      expect(r.outcome).toBe('ok');
      expect(r.grownBytes).toBeLessThan(3 * r.headerBytes + RSS_SLACK);
      expect(r.retainedHeap).toBeLessThan(3 * r.headerBytes + HEAP_SLACK);
    },
    300_000,
  );
});
