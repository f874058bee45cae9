/**
 * `export FILE OUTDIR`: rebuilds the model a checkpoint describes (its topology and weights) and writes it as a tfjs
 * layers model, model.json plus weight shards, which `tf.loadLayersModel('file://OUTDIR/model.json')` (tfjs-node) or
 * any tfjs layers loader reads. FILE and OUTDIR may be s3:// locations.
 */
import { MetadataKey } from '../../format/metadata';
import { readCheckpointInfo } from '../../io/tensors';
import { type CliContext, out, outJson } from '../context';
import { CliError, ExitCode } from '../exit-codes';
import { formatBytes } from '../format-output';
import { layersDirWriter, modelJsonIn } from '../layers-dir';
import { requireTfjs } from '../tfjs';

export interface ExportArgs {
  /** Also write the optimizer state (weights of group 'optimizer'). Default: false. */
  includeOptimizer?: boolean;
  /** Maximum bytes per shard. Default: 4 MiB. */
  shardBytes?: number;
  /** Check every checksum before exporting, refusing a file without tfjs-checkpoint's (`--no-verify` accepts it,
   * and the summary says it was not verified). Default: true. */
  verify?: boolean;
}

export async function exportCommand(
  ctx: CliContext,
  file: string,
  outdir: string,
  args: ExportArgs = {},
): Promise<void> {
  const info = await readCheckpointInfo(file);
  if (info.metadata[MetadataKey.MODEL_TOPOLOGY] === undefined) {
    throw new CliError(
      ExitCode.INVALID,
      `${info.path} holds weights only, no model topology: export needs a checkpoint saved with the model ` +
        '(saveCheckpoint without weightsOnly)',
    );
  }
  const includeOptimizer = args.includeOptimizer === true;
  if (includeOptimizer && info.metadata[MetadataKey.OPTIMIZER_WEIGHTS] === undefined) {
    throw new CliError(ExitCode.INVALID, `${info.path} has no optimizer state to export (--include-optimizer)`);
  }
  requireTfjs('export');
  const { loadModel } = await import('../../model/save-restore');
  const verify = args.verify !== false;
  const model = await loadModel(info.path, { verify });
  try {
    const result = await model.save(layersDirWriter(outdir, { shardBytes: args.shardBytes }), { includeOptimizer });
    const bytes = result.modelArtifactsInfo.weightDataBytes ?? 0;
    const summary = {
      checkpoint: info.path,
      modelJson: modelJsonIn(outdir),
      weights: model.weights.length,
      weightBytes: bytes,
      includeOptimizer,
      verified: verify && info.formatVersion !== undefined,
    };
    if (ctx.json) outJson(ctx, summary);
    else
      out(
        ctx,
        `Exported ${info.path} to ${summary.modelJson} (${summary.weights} weights, ${formatBytes(bytes)}` +
          `${includeOptimizer ? ', with optimizer state' : ''})` +
          (summary.verified ? '' : '; NOT verified (--no-verify): its checksums were not checked'),
      );
  } finally {
    model.dispose();
  }
}
