/**
 * Commit-plan builders shared by test/backend/commit-plan*.test.ts and their child process (fixtures/
 * commit-fault-child.ts): steps over small real checkpoints, with temp names of this library's pattern (so that
 * leftoverTemps and the fault shim's '.tfjs-ckpt-' needle see them).
 */
import * as path from 'node:path';
import type { CommitStep, WritePlan } from '../../lib/backend/backend';
import { HEADER_CRC_OFFSET, TENSOR_CRC_OFFSET, buildHeader } from '../../lib/format/header';
import { acquireTempPath } from '../../lib/fs/tempfiles';
import { loadTensors } from '../../lib/io/tensors';

/** A checkpoint of one float32 tensor whose values are `version + i`. */
export function checkpointWrite(dir: string, file: string, version: number, length = 1024): WritePlan {
  const data = new Float32Array(length);
  for (let i = 0; i < length; i++) data[i] = version + i;
  const header = buildHeader([{ name: 'w', dtype: 'F32', shape: [length], byteLength: data.byteLength }], {
    version: String(version),
  });
  return {
    path: path.join(dir, file),
    tmpPath: tmpName(dir),
    header: header.bytes,
    headerCrcOffset: HEADER_CRC_OFFSET,
    tensorCrcOffset: TENSOR_CRC_OFFSET,
    arrays: [data],
    durable: true,
  };
}

/** A temp path of this library's pattern in `dir` (registered as in flight: no cleanup in the test removes it). */
export function tmpName(dir: string): string {
  return acquireTempPath(dir);
}

export const checkpoint = (dir: string, file: string, version: number, length?: number): CommitStep => ({
  kind: 'checkpoint',
  write: checkpointWrite(dir, file, version, length),
});
export const text = (dir: string, file: string, body: string): CommitStep => ({
  kind: 'text',
  path: path.join(dir, file),
  tmpPath: tmpName(dir),
  bytes: Buffer.from(body),
  durable: true,
});
export const link = (dir: string, from: string, to: string, fallback: 'copy' | 'fail' = 'copy'): CommitStep => ({
  kind: 'link',
  from: path.join(dir, from),
  to: path.join(dir, to),
  tmpPath: tmpName(dir),
  durable: true,
  fallback,
});
export const LOCK = '{"owner":"this test","nonce":"0123"}\n';
export const checkLock = (dir: string): CommitStep => ({
  kind: 'checkLock',
  path: path.join(dir, 'lock'),
  content: Buffer.from(LOCK),
});
export const unlink = (dir: string, ...files: string[]): CommitStep => ({
  kind: 'unlink',
  paths: files.map((f) => path.join(dir, f)),
});

/** The version a checkpoint file holds (loaded and verified). */
export async function versionOf(file: string): Promise<number> {
  const { tensors } = await loadTensors(file);
  return (tensors.w.data as Float32Array)[0];
}
