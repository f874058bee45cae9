/**
 * `import DIR FILE`: builds the tfjs layers model stored in DIR (model.json + weight shards) and saves it as a
 * checkpoint with its topology (and its optimizer state, when the model.json carries it). DIR and FILE may be s3://
 * locations.
 */
import type * as tfTypes from '@tensorflow/tfjs';
import { type CliContext, out, outJson } from '../context';
import { formatBytes } from '../format-output';
import { layersDirReader, resolveModelJson } from '../layers-dir';
import { requireTfjs } from '../tfjs';
import { checkPath, readCheckpointInfo } from '../../io/tensors';

export async function importCommand(ctx: CliContext, dir: string, file: string): Promise<void> {
  const modelJson = await resolveModelJson(dir);
  const tf = requireTfjs('import');
  const reader = layersDirReader(modelJson);
  let hasOptimizer = false;
  const handler: tfTypes.io.IOHandler = {
    async load() {
      const artifacts = await (reader.load as () => Promise<tfTypes.io.ModelArtifacts>)();
      hasOptimizer = (artifacts.weightSpecs ?? []).some((s) => s.group === 'optimizer');
      return artifacts;
    },
  };
  const model = await tf.loadLayersModel(handler);
  try {
    const { saveCheckpoint } = await import('../../model/save-restore');
    const target = checkPath(file, 'the checkpoint file');
    await saveCheckpoint(model, target, { includeOptimizer: hasOptimizer && model.optimizer != null });
    const info = await readCheckpointInfo(target);
    const bytes = info.tensors.reduce((a, t) => a + t.byteLength, 0);
    const summary = {
      modelJson,
      checkpoint: target,
      tensors: info.tensors.length,
      bytes: info.fileSize,
      includeOptimizer: hasOptimizer && model.optimizer != null,
    };
    if (ctx.json) outJson(ctx, summary);
    else
      out(
        ctx,
        `Imported ${modelJson} into ${target} (${info.tensors.length} tensors, ${formatBytes(bytes)}` +
          `${summary.includeOptimizer ? ', with optimizer state' : ''})`,
      );
  } finally {
    model.dispose();
  }
}
