/**
 * `ls DIR`: the checkpoints of a directory as a table: epoch, monitored metric, size, time, and which is best and
 * which is last. From the directory's index, or from the files' own metadata when there is no (valid) index.
 */
import { type CliContext, out, outJson } from '../context';
import { listCheckpoints, type ListedCheckpoint } from '../checkpoint-listing';
import { formatBytes, renderTable } from '../format-output';

/** A metric value for the table: fixed 4 decimals for ordinary magnitudes, exponent otherwise. */
export function formatMetric(v: number | null | undefined): string {
  if (v === null || v === undefined) return '-';
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : v.toFixed(4);
}

/** ISO time without milliseconds: 2026-11-26T12:40:01Z. */
function formatTime(iso: string | null): string {
  if (!iso) return '-';
  return iso.replace(/\.\d{3}Z$/, 'Z');
}

function epochCell(c: ListedCheckpoint): string {
  if (c.epoch === null) return '-';
  return c.batch !== undefined ? `${c.epoch + 1}:${c.batch + 1}` : String(c.epoch + 1);
}

function marks(c: ListedCheckpoint): string {
  const m: string[] = [];
  if (c.best) m.push('best');
  if (c.last) m.push('last');
  if (c.problem) m.push(c.size === null ? 'MISSING' : 'UNREADABLE');
  return m.join(',');
}

export async function lsCommand(ctx: CliContext, dir: string): Promise<void> {
  const listing = await listCheckpoints(dir);
  if (ctx.json) {
    // The checkpoints only: the index's step history (up to 10,000 entries) is what `plot` draws.
    const { history: _history, ...checkpoints } = listing;
    outJson(ctx, checkpoints);
    return;
  }
  const src =
    listing.source === 'index'
      ? 'from the index'
      : listing.indexProblem
        ? `from the files' metadata (the index is damaged: ${listing.indexProblem})`
        : "from the files' metadata (no index)";
  out(ctx, `${listing.directory}: ${listing.checkpoints.length} checkpoint(s), ${src}`);
  if (listing.monitor) out(ctx, `monitor: ${listing.monitor} (${listing.mode})`);
  if (listing.checkpoints.length === 0) return;
  out(ctx);
  out(
    ctx,
    renderTable(
      [
        { header: 'epoch', right: true },
        { header: listing.monitor ?? 'monitor', right: true },
        { header: 'size', right: true },
        { header: 'saved (UTC)' },
        { header: 'file' },
        { header: '' },
      ],
      listing.checkpoints.map((c) => [
        epochCell(c),
        formatMetric(c.score),
        c.size === null ? '-' : formatBytes(c.size),
        formatTime(c.savedAt),
        c.file,
        marks(c),
      ]),
    ),
  );
  for (const c of listing.checkpoints) if (c.problem) out(ctx, `note: ${c.file}: ${c.problem}`);
}
