/**
 * Progress reporting for long operations: a cli-progress bar when stdout is a terminal, nothing otherwise (commands
 * then print one plain line per finished item, which is the progress a log or a pipe can use).
 */
import type { CliContext } from './context';

export interface Progress {
  /** Whether a bar is on screen (then print results after stop(), not while it runs). */
  readonly shown: boolean;
  /** Advances by `delta` units and shows `label` as the current item. */
  advance(delta: number, label: string): void;
  stop(): void;
}

const NONE: Progress = { shown: false, advance: () => undefined, stop: () => undefined };

/**
 * A byte-counting bar of `total` bytes. Shown only when interactive and the work is large enough to be worth a bar
 * (`minTotal` bytes, default 32 MiB).
 */
export function byteProgress(ctx: CliContext, total: number, minTotal = 32 * 1024 * 1024): Progress {
  if (!ctx.interactive || total < minTotal) return NONE;
  // Loaded lazily: only interactive runs pay for it.
  const cliProgress = require('cli-progress') as typeof import('cli-progress');
  const bar = new cliProgress.SingleBar(
    {
      format: ' {bar} {percentage}% | {done}/{size} | {item}',
      stream: ctx.stderr,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const mib = (b: number): string => `${(b / 1048576).toFixed(1)} MiB`;
  let done = 0;
  bar.start(total, 0, { done: mib(0), size: mib(total), item: '' });
  return {
    shown: true,
    advance(delta, label) {
      done += delta;
      bar.update(done, { done: mib(done), size: mib(total), item: label });
    },
    stop() {
      bar.stop();
    },
  };
}
