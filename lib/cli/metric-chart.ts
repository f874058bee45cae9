/**
 * The metric chart of a checkpoint directory as a Vega-Lite spec, rendered to SVG headlessly (vega's `renderer:
 * 'none'` view and `toSVG()`: no browser, no canvas). Three named layers, which appear in the SVG as
 * `<g class="... curve_marks">` (the metric per epoch), `saved_marks` (a dot per saved checkpoint) and `best_marks`
 * (a larger red diamond on the best one), plus a text label on the best.
 */
import type { Listing } from './checkpoint-listing';
import { CliError, ExitCode } from './exit-codes';
import { lookupMetric } from '../manager/metric-names';

export interface ChartPoint {
  /** 1-based epoch, as file names show it. */
  epoch: number;
  value: number;
  saved: boolean;
  best: boolean;
  file: string;
}

/** The points to plot: every end-of-epoch step when the index records a history, else one point per checkpoint. */
export function chartPoints(listing: Listing): ChartPoint[] {
  const monitor = listing.monitor;
  if (!monitor) return [];
  const byEpoch = new Map<number, { file: string; best: boolean }>();
  for (const c of listing.checkpoints) {
    if (c.epoch === null || c.batch !== undefined || c.size === null) continue;
    const prev = byEpoch.get(c.epoch);
    // A `last` file and a best file of the same epoch: keep the best one's name.
    if (!prev || c.best || (prev.file === listing.last && !prev.best))
      byEpoch.set(c.epoch, { file: c.file, best: c.best || (prev?.best ?? false) });
  }
  const points: ChartPoint[] = [];
  // End-of-epoch steps only: steps within an epoch (saveFreq in batches) would put several points on one epoch.
  const epochs = (listing.history ?? []).filter((h) => h.batch === undefined);
  if (epochs.length > 0) {
    for (const h of epochs) {
      const v = lookupMetric(h.metrics, monitor);
      if (v === undefined || !Number.isFinite(v)) continue;
      const saved = byEpoch.get(h.epoch);
      points.push({
        epoch: h.epoch + 1,
        value: v,
        saved: !!saved,
        best: saved?.best ?? false,
        file: saved?.file ?? '',
      });
    }
  } else {
    for (const c of listing.checkpoints) {
      if (c.epoch === null || c.batch !== undefined || c.score === null || !Number.isFinite(c.score)) continue;
      if (byEpoch.get(c.epoch)?.file !== c.file) continue;
      points.push({ epoch: c.epoch + 1, value: c.score, saved: c.size !== null, best: c.best, file: c.file });
    }
  }
  return points.sort((a, b) => a.epoch - b.epoch);
}

/** The Vega-Lite spec of the chart. */
export function chartSpec(listing: Listing, points: ChartPoint[]): Record<string, unknown> {
  const monitor = listing.monitor ?? 'metric';
  const best = points.find((p) => p.best);
  const subtitle = [
    `dots: saved checkpoints (${points.filter((p) => p.saved).length})`,
    best ? `diamond: best, epoch ${best.epoch}, ${monitor} = ${best.value.toFixed(4)}` : 'no best checkpoint',
  ].join(' · ');
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: `${monitor} per epoch (${listing.mode ?? 'auto'})`, subtitle },
    description: `${monitor} per epoch in ${listing.directory}`,
    width: 560,
    height: 300,
    data: { values: points },
    encoding: {
      x: { field: 'epoch', type: 'quantitative', title: 'epoch', axis: { tickMinStep: 1, format: 'd' } },
      y: { field: 'value', type: 'quantitative', title: monitor, scale: { zero: false } },
    },
    layer: [
      { name: 'curve', mark: { type: 'line', color: '#4c78a8', strokeWidth: 2 } },
      {
        name: 'saved',
        transform: [{ filter: 'datum.saved' }],
        mark: { type: 'point', filled: true, size: 70, color: '#4c78a8' },
        encoding: { tooltip: [{ field: 'epoch' }, { field: 'value', title: monitor }, { field: 'file' }] },
      },
      {
        name: 'best',
        transform: [{ filter: 'datum.best' }],
        mark: { type: 'point', shape: 'diamond', filled: true, size: 300, color: '#d62728', stroke: '#000' },
        encoding: { tooltip: [{ field: 'epoch' }, { field: 'value', title: monitor }, { field: 'file' }] },
      },
      {
        name: 'bestlabel',
        transform: [{ filter: 'datum.best' }, { calculate: "'best ' + format(datum.value, '.4f')", as: 'label' }],
        mark: { type: 'text', dy: -16, color: '#d62728', fontWeight: 'bold' },
        encoding: { text: { field: 'label' } },
      },
    ],
  };
}

interface VegaModules {
  vega: typeof import('vega');
  vl: typeof import('vega-lite');
}

function loadVega(): VegaModules {
  try {
    const vega = require('vega') as typeof import('vega');
    const vl = require('vega-lite') as typeof import('vega-lite');
    return { vega, vl };
  } catch (e) {
    throw new CliError(
      ExitCode.OTHER,
      `'plot' needs vega@5 and vega-lite@5, which could not be loaded (${(e as Error).message.split('\n')[0]}); ` +
        'install them with: npm install vega@5 vega-lite@5',
      { cause: e },
    );
  }
}

/** Renders a Vega-Lite spec to an SVG document, without a browser. */
export async function renderSvg(spec: Record<string, unknown>): Promise<string> {
  const { vega, vl } = loadVega();
  const compiled = vl.compile(spec as unknown as Parameters<typeof vl.compile>[0]).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A self-contained HTML page around the SVG (no scripts, opens offline). */
export function htmlPage(title: string, svg: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font-family:sans-serif;margin:2em}</style></head>
<body>
<h1>${escapeHtml(title)}</h1>
${svg}
</body>
</html>
`;
}
