/**
 * The CLI's exit codes and how an error maps to one. Documented in docs/CLI.md; scripts may rely on them.
 */
import { CheckpointError, ErrorCode } from '../errors';

export const ExitCode = {
  /** Success. */
  OK: 0,
  /** A checkpoint failed verification or is not a usable checkpoint: checksum mismatch, corrupt or foreign file,
   * no checksums, a checkpoint without the model topology that the command needs. */
  INVALID: 1,
  /** Usage error: unknown command or option, missing or malformed argument. */
  USAGE: 2,
  /** I/O error: a file or directory is missing, unreadable or unwritable; an S3 request failed. */
  IO: 3,
  /** Anything else: a missing optional dependency, or an unexpected failure (run with --verbose for the trace). */
  OTHER: 4,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** An error the CLI raises itself, with the exit code it leads to. */
export class CliError extends Error {
  readonly exitCode: ExitCodeValue;
  constructor(exitCode: ExitCodeValue, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}

/** Library codes about a checkpoint's content (spelled out: they are a stable, documented contract). */
const INVALID_CODES: ReadonlySet<string> = new Set([
  ErrorCode.CORRUPT,
  ErrorCode.CHECKSUM,
  ErrorCode.UNVERIFIED,
  ErrorCode.UNSUPPORTED_DTYPE,
  ErrorCode.MISMATCH,
  'ERR_CHECKPOINT_NO_TOPOLOGY',
]);

/** The exit code for an error thrown while running a command. */
export function exitCodeFor(err: unknown): ExitCodeValue {
  if (err instanceof CliError) return err.exitCode;
  if (err instanceof CheckpointError) {
    if (INVALID_CODES.has(err.code)) return ExitCode.INVALID;
    if (err.code === ErrorCode.INVALID_ARGUMENT || err.code === ErrorCode.TEMPLATE) return ExitCode.USAGE;
    // A write that made no progress is an I/O failure without an errno; so is a failed S3 request (NoSuchKey,
    // AccessDenied, a gateway that does not answer).
    if (/^E[A-Z0-9]+$/.test(err.code) || err.code === ErrorCode.WRITE_STALLED || err.code === ErrorCode.S3)
      return ExitCode.IO;
    return ExitCode.OTHER;
  }
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (
    typeof code === 'string' &&
    /^E[A-Z0-9]+$/.test(code) &&
    typeof (err as NodeJS.ErrnoException).syscall === 'string'
  )
    return ExitCode.IO;
  return ExitCode.OTHER;
}

/** The one line printed for an error (without the "tfjs-checkpoint: " prefix). */
export function errorLine(err: unknown): string {
  if (err instanceof CheckpointError) return `${err.message} [${err.code}]`;
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    const first = err.message.split('\n')[0];
    return typeof code === 'string' && !(err instanceof CliError) ? `${first} [${code}]` : first;
  }
  return String(err);
}
