/**
 * `plot DIR [--out FILE.svg|.html]`: charts the monitored metric per epoch of a checkpoint directory, saved
 * checkpoints marked and the best highlighted (metric-chart.ts). DIR and FILE may be s3:// locations (the chart is
 * then one PUT).
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fromNodeError } from '../../errors';
import { listCheckpoints } from '../checkpoint-listing';
import { type CliContext, out, outJson } from '../context';
import { CliError, ExitCode } from '../exit-codes';
import { chartPoints, chartSpec, htmlPage, renderSvg } from '../metric-chart';
import { putObject } from '../../s3/text-objects';
import { joinLocation, locationScheme, parseS3Url } from '../../s3/location';

export interface PlotArgs {
  /** Output file, .svg or .html, local or s3://. Default: DIR/metrics.svg (an object under DIR's prefix for s3://). */
  out?: string;
}

export async function plotCommand(ctx: CliContext, dir: string, args: PlotArgs = {}): Promise<void> {
  const listing = await listCheckpoints(dir);
  const points = chartPoints(listing);
  if (points.length === 0) {
    throw new CliError(
      ExitCode.INVALID,
      listing.monitor
        ? `No ${listing.monitor} values to plot in ${listing.directory}`
        : `No checkpoints with a monitored metric in ${listing.directory}`,
    );
  }
  const outArg = args.out ?? joinLocation(listing.directory, 'metrics.svg');
  const object = locationScheme(outArg, '--out') === 's3' ? parseS3Url(outArg, '--out') : undefined;
  const target = object ? object.url : path.resolve(outArg);
  const svg = await renderSvg(chartSpec(listing, points));
  const html = /\.html$/i.test(target);
  const content = html ? htmlPage(`${listing.monitor} per epoch: ${listing.directory}`, svg) : svg;
  if (object) {
    await putObject(object, content, html ? 'text/html' : 'image/svg+xml', 'write');
  } else {
    try {
      await fsp.mkdir(path.dirname(target), { recursive: true });
      await fsp.writeFile(target, content);
    } catch (e) {
      throw fromNodeError(e, target, 'write');
    }
  }
  const best = points.find((p) => p.best);
  const summary = {
    out: target,
    monitor: listing.monitor,
    mode: listing.mode,
    source: listing.history?.some((h) => h.batch === undefined) ? 'index history' : listing.source,
    points: points.length,
    saved: points.filter((p) => p.saved).length,
    best: best ? { epoch: best.epoch, value: best.value, file: best.file } : null,
  };
  if (ctx.json) outJson(ctx, summary);
  else
    out(
      ctx,
      `Wrote ${target}: ${summary.points} epoch(s) of ${listing.monitor}, ${summary.saved} saved` +
        (best ? `, best epoch ${best.epoch} (${best.value.toFixed(4)})` : ''),
    );
}
