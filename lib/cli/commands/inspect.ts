/**
 * `inspect FILE`: what a checkpoint holds (tensors, metadata, format version) and which I/O backend read it.
 */
import { readCheckpointInfo, type CheckpointInfo } from '../../io/tensors';
import { backendName } from '../../backend/select';
import { recordKeys } from '../../format/lazy-record';
import { type CliContext, out, outJson } from '../context';
import { formatBytes, formatShape, renderTable } from '../format-output';

export interface InspectArgs {
  /** Print metadata values in full (model topology can be long). Default: false (values cut at 100 characters). */
  full?: boolean;
}

const MAX_VALUE = 100;

export async function inspectCommand(ctx: CliContext, file: string, args: InspectArgs = {}): Promise<void> {
  const info = await readCheckpointInfo(file);
  const backend = backendName();
  if (ctx.json) {
    outJson(ctx, { ...info, backend, dataBytes: dataBytes(info) });
    return;
  }
  out(ctx, `File:     ${info.path}`);
  out(ctx, `Size:     ${formatBytes(info.fileSize)} (${info.fileSize} bytes)`);
  out(
    ctx,
    `Format:   ${
      info.formatVersion !== undefined
        ? `tfjs-checkpoint format ${info.formatVersion} (checksummed safetensors)`
        : 'plain safetensors, no tfjs-checkpoint checksums'
    }${info.header === 'resaved' ? '; header re-serialized by another tool, contents verified' : ''}`,
  );
  out(ctx, `Backend:  ${backend}`);
  if (info.shards) {
    out(ctx, `Shards:   ${info.shards.length} (shard set; sizes are the shards' total)`);
    for (const s of info.shards) out(ctx, `  ${s.file}  ${formatBytes(s.fileSize)}, ${s.tensors} tensors`);
  }
  out(ctx, `Tensors:  ${info.tensors.length} (${formatBytes(dataBytes(info))})`);
  if (info.tensors.length > 0) {
    out(ctx);
    out(
      ctx,
      renderTable(
        [{ header: 'name' }, { header: 'dtype' }, { header: 'shape' }, { header: 'bytes', right: true }],
        info.tensors.map((t) => [t.name, t.dtype, formatShape(t.shape), String(t.byteLength)]),
      ),
    );
  }
  const keys = recordKeys(info.metadata).sort(); // a large metadata view: its keys without a trap each
  out(ctx);
  if (keys.length === 0) {
    out(ctx, 'Metadata: none');
    return;
  }
  out(ctx, 'Metadata:');
  const width = keys.reduce((w, k) => Math.max(w, k.length), 0); // not Math.max(...keys): 200k arguments overflow
  for (const k of keys) {
    const v = info.metadata[k];
    const shown =
      args.full || v.length <= MAX_VALUE ? v : `${v.slice(0, MAX_VALUE)}... (${v.length} chars, --full shows all)`;
    out(ctx, `  ${k.padEnd(width)}  ${shown}`);
  }
}

function dataBytes(info: CheckpointInfo): number {
  return info.tensors.reduce((a, t) => a + t.byteLength, 0);
}
