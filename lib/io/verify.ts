/**
 * Verifying a checkpoint without keeping its tensors: every checksum and the structure, in groups of bounded size, with
 * progress. One file is verified through its one open descriptor (open-file.ts), whatever saves replace it meanwhile.
 */
import { readArgs } from '../args';
import { type CallerStack, captureStack, fromBackendFailure } from '../errors';
import { ParsedHeader, TensorEntry } from '../format/header';
import { getBackend } from '../backend/select';
import { readOpened, verifyObjectData } from '../s3/objects';
import { checkPath } from './check-path';
import { checkBoolBytes } from './load';
import { OpenedFile, rangesPlan, visitTensorBytes, withCheckpointFile } from './open-file';
import { resolveCheckpoint, verifyShardSet } from './shards';
import type { VerifyCheckpointArgs, VerifyResult } from './types';

/** verifyCheckpoint's default groupBytes. */
export const VERIFY_GROUP_BYTES = 64 * 1024 * 1024;

/** What verify reads in one backend call: whole tensors `first` to `end - 1`, or a piece of the tensor `first`. */
type VerifyStep = { first: number; end: number } | { tensor: number; begin: number; end: number };

/** Splits the tensors into groups of at most `limit` bytes; a larger tensor into pieces of `limit` bytes. */
function verifySteps(parsed: ParsedHeader, limit: number): VerifyStep[] {
  const steps: VerifyStep[] = [];
  let first = 0;
  let bytes = 0;
  const flush = (end: number) => {
    if (end > first) steps.push({ first, end });
    first = end;
    bytes = 0;
  };
  for (let i = 0; i < parsed.tensorCount; i++) {
    const begin = parsed.beginOf(i);
    const end = parsed.endOf(i);
    const size = end - begin;
    if (size > limit) {
      flush(i);
      for (let at = begin; at < end; at += limit) steps.push({ tensor: i, begin: at, end: Math.min(at + limit, end) });
      first = i + 1;
      continue;
    }
    if (bytes + size > limit) flush(i);
    bytes += size;
  }
  flush(parsed.tensorCount);
  return steps;
}

/**
 * Reads and checks an opened file's tensors step by step, holding one step's bytes at a time. Works from the header's
 * columns: an entry object is built only for a bool tensor (to check its bytes) or a failure.
 */
async function verifyData(
  opened: OpenedFile,
  stack: CallerStack,
  limit: number,
  onProgress: ((bytesDone: number, bytesTotal: number) => void) | undefined,
): Promise<void> {
  const file = opened.path;
  const action = `verify ${file}`;
  const { parsed } = opened;
  const { tensorCrcs, dataLength } = parsed;
  const backend = getBackend();
  let done = 0;
  onProgress?.(0, dataLength);
  let crc = 0; // of the pieces of a large tensor read so far
  for (const step of verifySteps(parsed, limit)) {
    if ('first' in step) {
      await visitTensorBytes(opened, action, stack, step.first, step.end, (k, bytes) => {
        const i = step.first + k;
        if (parsed.dtypeOf(i) === 'BOOL') checkBoolBytes(parsed.entryAt(i), bytes, 0, file);
      });
      done += parsed.endOf(step.end - 1) - parsed.beginOf(step.first);
    } else {
      const e = parsed.entryAt(step.tensor);
      let bytes: Uint8Array;
      try {
        bytes = new Uint8Array((await backend.read(rangesPlan(opened, [step.begin, step.end], [], false)))[0]);
      } catch (err) {
        throw fromBackendFailure(err, action, [e.name], stack);
      }
      if (step.begin === e.begin) crc = 0;
      crc = backend.crc32c(bytes, crc);
      if (e.dtype === 'BOOL') checkBoolBytes(e, bytes, step.begin - e.begin, file);
      if (step.end === e.end && tensorCrcs && crc !== tensorCrcs[step.tensor]) {
        const failure = {
          kind: 'checksum',
          tensorIndex: 0,
          path: file,
          expectedCrc: tensorCrcs[step.tensor],
          actualCrc: crc,
          message: 'checksum mismatch',
        };
        throw fromBackendFailure(failure, action, [e.name], stack);
      }
      done += step.end - step.begin;
    }
    onProgress?.(done, dataLength);
  }
}

/**
 * Checks every checksum of a checkpoint (header and tensors) and its structure, reading the tensors in groups of at
 * most `groupBytes` (so memory stays bounded whatever the file's size) and reporting progress after each. Resolves
 * with a summary; rejects with a coded error (ERR_CHECKPOINT_CHECKSUM naming the tensor and both CRCs,
 * ERR_CHECKPOINT_CORRUPT, ERR_CHECKPOINT_UNVERIFIED, ERR_CHECKPOINT_NOT_A_FILE, ...).
 */
export async function verifyCheckpoint(file: string, options: VerifyCheckpointArgs = {}): Promise<VerifyResult> {
  const stack = captureStack();
  const abs = checkPath(file);
  const args = readArgs(options, 'options', ['onProgress', 'groupBytes'] as const);
  const onProgress = args.function<NonNullable<VerifyCheckpointArgs['onProgress']>>(
    'onProgress',
    'a function (bytesDone, bytesTotal) => void',
  );
  const limit = args.integer('groupBytes', { min: 1 }) ?? VERIFY_GROUP_BYTES;
  const where = await resolveCheckpoint(abs, true);
  if (where.kind === 'set') return verifyShardSet(where.index, { groupBytes: limit, onProgress });
  if (where.kind === 'object') {
    const loc = where.location;
    const check = (e: TensorEntry, bytes: Uint8Array, at: number) => {
      if (e.dtype === 'BOOL') checkBoolBytes(e, bytes, at, abs);
    };
    const object = await readOpened(loc, where.opened, true, async (o) => {
      await verifyObjectData(loc, o, limit, stack, check, onProgress);
      return o;
    });
    return { path: abs, tensors: object.parsed.entries.length, bytes: object.parsed.dataLength };
  }
  return withCheckpointFile(abs, true, async (opened) => {
    await verifyData(opened, stack, limit, onProgress);
    return { path: abs, tensors: opened.parsed.tensorCount, bytes: opened.parsed.dataLength };
  });
}
