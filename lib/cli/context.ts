/**
 * What every command receives: the global flags and where to write. Commands never call process.exit themselves;
 * they return normally (exit 0) or throw (main.ts maps the error to an exit code).
 */
export interface CliContext {
  /** --json: one JSON document on stdout instead of text. */
  json: boolean;
  /** --verbose: stack traces on errors, extra detail. */
  verbose: boolean;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  /** Whether to draw progress bars (stdout is a terminal and --json is off). */
  interactive: boolean;
  /** Set by a command to a non-zero code when it completed but found a problem (e.g. verify found corruption). */
  exitCode: number;
}

/** Writes one line of text to stdout. */
export function out(ctx: CliContext, text = ''): void {
  ctx.stdout.write(text + '\n');
}

/** Writes one JSON document to stdout. */
export function outJson(ctx: CliContext, value: unknown): void {
  ctx.stdout.write(JSON.stringify(value, null, 2) + '\n');
}
