/**
 * `verify FILE|DIR`: checks every checksum (the header's and each tensor's) of one checkpoint or of every
 * `*.safetensors` file and shard set (`*.safetensors.index.json`, checked whole against its shards) in a directory;
 * FILE and DIR may be s3:// objects and prefixes (checkpoint-source.ts). Prints one line per file; exits 1 when any
 * file fails, naming the tensor. On a terminal, a progress bar that moves within each file (verifyCheckpoint's
 * onProgress).
 */
import * as path from 'node:path';
import { CheckpointError } from '../../errors';
import { checkpointSize } from '../../io/shards';
import { isObjectLocation, verifyCheckpoint } from '../../io/tensors';
import { resolveTarget } from '../checkpoint-source';
import { type CliContext, out, outJson } from '../context';
import { CliError, ExitCode, exitCodeFor } from '../exit-codes';
import { formatBytes } from '../format-output';
import { type Progress, byteProgress } from '../progress';

export interface VerifyFileResult {
  path: string;
  ok: boolean;
  tensors?: number;
  bytes?: number;
  /** For a shard set (`path` is its index): its number of shards. */
  shards?: number;
  /** On failure: the error code (e.g. ERR_CHECKPOINT_CHECKSUM), the message and the tensor concerned, if any. */
  code?: string;
  error?: string;
  tensor?: string;
}

/**
 * Moves `progress` within one file as verifyCheckpoint reports its tensor bytes (groups of at most 64 MiB), then by
 * the rest of the file's size (its header, or what a failure left unchecked) when the file is done.
 */
export function fileProgress(
  progress: Progress,
  label: string,
): { onProgress: (bytesDone: number) => void; finish: (fileSize: number) => void } {
  let reported = 0;
  return {
    onProgress(bytesDone) {
      progress.advance(bytesDone - reported, label);
      reported = bytesDone;
    },
    finish(fileSize) {
      progress.advance(fileSize - reported, label);
      reported = fileSize;
    },
  };
}

export async function verifyCommand(ctx: CliContext, target: string): Promise<void> {
  const resolved = await resolveTarget(target);
  const source = resolved.kind === 'directory' ? resolved.source : undefined;
  const names = source ? source.checkpointNames() : [];
  const files = source ? names.map((n) => source.locate(n)) : [resolved.kind === 'file' ? resolved.path : target];
  if (files.length === 0) {
    throw new CliError(ExitCode.INVALID, `No checkpoint files (*.safetensors) in ${source!.directory}`);
  }
  // An s3:// checkpoint's size came with resolving it (0 when it could not be read: its verify says why).
  const sizes = source
    ? await Promise.all(names.map(async (n) => (await source.size(n)) ?? 0))
    : [
        resolved.kind === 'file' && isObjectLocation(resolved.path)
          ? (resolved.size ?? 0)
          : ((await checkpointSize(files[0]).catch(() => null)) ?? 0),
      ];
  const total = sizes.reduce((a, b) => a + b, 0);
  const progress = byteProgress(ctx, total);
  const results: VerifyFileResult[] = [];
  try {
    for (let i = 0; i < files.length; i++) {
      const file = files[i];
      let result: VerifyFileResult;
      const fileBar = fileProgress(progress, path.basename(file));
      try {
        const r = await verifyCheckpoint(file, { onProgress: fileBar.onProgress });
        result = {
          path: r.path,
          ok: true,
          tensors: r.tensors,
          bytes: r.bytes,
          ...(r.shards ? { shards: r.shards } : {}),
        };
      } catch (e) {
        // A failure that is not about this file's content (e.g. EACCES on one file) is still reported per file;
        // only errors unrelated to files (bugs) propagate.
        if (!(e instanceof CheckpointError)) throw e;
        result = { path: file, ok: false, code: e.code, error: e.message, ...(e.tensor ? { tensor: e.tensor } : {}) };
        ctx.exitCode = Math.max(ctx.exitCode, exitCodeFor(e));
      }
      results.push(result);
      fileBar.finish(sizes[i]);
      if (!ctx.json && !progress.shown) out(ctx, resultLine(result));
    }
  } finally {
    progress.stop();
  }
  if (!ctx.json && progress.shown) for (const r of results) out(ctx, resultLine(r));
  const failed = results.filter((r) => !r.ok).length;
  if (ctx.json) {
    outJson(ctx, { ok: failed === 0, checked: results.length, failed, files: results });
    return;
  }
  if (files.length > 1 || failed > 0) {
    out(
      ctx,
      failed === 0 ? `All ${results.length} checkpoint(s) OK` : `${failed} of ${results.length} checkpoint(s) FAILED`,
    );
  }
}

function resultLine(r: VerifyFileResult): string {
  const shards = r.shards ? `, ${r.shards} shards` : '';
  if (r.ok) return `OK      ${r.path} (${r.tensors} tensors, ${formatBytes(r.bytes ?? 0)}${shards})`;
  return `FAILED  ${r.path}: ${r.error} [${r.code}]`;
}
