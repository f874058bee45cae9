/**
 * The `tfjs-checkpoint` command line: commands, global flags, and the mapping of failures to one-line errors and
 * exit codes (exit-codes.ts). `run` never throws and never exits the process: it resolves to the exit code.
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { type CliContext, outJson } from './context';
import { CliError, ExitCode, errorLine, exitCodeFor } from './exit-codes';
import { inspectCommand } from './commands/inspect';
import { verifyCommand } from './commands/verify';
import { exportCommand } from './commands/export';
import { importCommand } from './commands/import';
import { lsCommand } from './commands/ls';
import { plotCommand } from './commands/plot';

const EXIT_CODES_HELP = `
Exit codes:
  0  success
  1  a checkpoint failed verification or is not a usable checkpoint (corrupt, checksum mismatch, no checksums,
     no model topology for export)
  2  usage error (unknown command or option, bad or missing argument)
  3  I/O error (missing file or directory, permission denied, disk full, a failed S3 request)
  4  other (missing optional dependency, unexpected failure: rerun with --verbose)
`;

export interface RunIo {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
}

function parseShardMiB(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('Expected a positive number of MiB.');
  return n;
}

function parsePlotOut(value: string): string {
  if (!/\.(svg|html)$/i.test(value)) throw new InvalidArgumentError('Expected a file name ending in .svg or .html.');
  return value;
}

function buildProgram(ctx: CliContext): Command {
  const program = new Command();
  program
    .name('tfjs-checkpoint')
    .description(
      'Inspect, verify, list, plot, export and import tfjs-checkpoint files (checksummed safetensors), local or s3://.',
    )
    .option('--json', 'machine-readable JSON on stdout')
    .option('--verbose', 'stack traces on errors')
    .version(readVersion(), '-V, --version')
    .showSuggestionAfterError(true)
    .configureHelp({ showGlobalOptions: true })
    .addHelpText('after', EXIT_CODES_HELP)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => ctx.stdout.write(s),
      writeErr: (s) => ctx.stderr.write(s),
      // Commander's own parse errors: keep them to one line with our prefix.
      outputError: (s, write) => write(`tfjs-checkpoint: ${s.replace(/^error: /, '').trimEnd()}\n`),
    })
    .hook('preAction', (cmd) => {
      const opts = cmd.optsWithGlobals<{ json?: boolean; verbose?: boolean }>();
      ctx.json = opts.json === true;
      ctx.verbose = opts.verbose === true;
      ctx.interactive = ctx.interactive && !ctx.json;
    });

  program
    .command('ls')
    .description('list the checkpoints of a directory: epoch, monitored metric, size, time; best and last marked')
    .argument('<dir>', 'checkpoint directory or s3://bucket/prefix')
    .action((dir: string) => lsCommand(ctx, dir));

  program
    .command('inspect')
    .description('show a checkpoint: tensors (name, dtype, shape, bytes), metadata, format version, backend')
    .argument('<file>', 'checkpoint file, shard set index (*.index.json) or the directory holding it')
    .option('--full', 'print long metadata values (such as the model topology) in full')
    .action((file: string, opts: { full?: boolean }) => inspectCommand(ctx, file, { full: opts.full === true }));

  program
    .command('verify')
    .description('check every checksum of a checkpoint, or of every checkpoint in a directory; exit 1 on corruption')
    .argument('<path>', 'checkpoint file or directory, or an s3:// object or prefix')
    .action((target: string) => verifyCommand(ctx, target));

  program
    .command('export')
    .description('write a checkpoint (with its model topology) as a tfjs layers model: model.json + weight shards')
    .argument('<file>', 'checkpoint file or shard set (index or its directory) saved with the model topology')
    .argument('<outdir>', 'output directory (created if missing) or s3://bucket/prefix')
    .option('--include-optimizer', 'also export the optimizer state, when the checkpoint has it')
    .option('--shard-size <MiB>', 'maximum weight shard size in MiB', parseShardMiB, 4)
    .option('--no-verify', 'skip the checksums: also exports plain safetensors files without tfjs-checkpoint checksums')
    .action((file: string, outdir: string, opts: { includeOptimizer?: boolean; shardSize: number; verify: boolean }) =>
      exportCommand(ctx, file, outdir, {
        includeOptimizer: opts.includeOptimizer === true,
        verify: opts.verify,
        shardBytes: Math.round(opts.shardSize * 1024 * 1024),
      }),
    );

  program
    .command('import')
    .description('convert a tfjs layers model (model.json + weight shards) into a checkpoint file')
    .argument('<dir>', 'directory holding model.json (or the path of model.json), local or s3://')
    .argument('<file>', 'checkpoint file to write, local or s3://bucket/key')
    .action((dir: string, file: string) => importCommand(ctx, dir, file));

  program
    .command('plot')
    .description(
      'chart the monitored metric per epoch from a directory index, saved checkpoints marked, best highlighted',
    )
    .argument('<dir>', 'checkpoint directory')
    .option('-o, --out <file>', 'output file, .svg or .html, local or s3:// (default: <dir>/metrics.svg)', parsePlotOut)
    .action((dir: string, opts: { out?: string }) => plotCommand(ctx, dir, { out: opts.out }));

  return program;
}

function readVersion(): string {
  try {
    // dist/lib/cli/program.js -> package.json at the package root.
    return (require('../../../package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** Runs the CLI on `argv` (without node and the script) and resolves to the process exit code. */
export async function run(argv: readonly string[], io: RunIo): Promise<number> {
  const ctx: CliContext = {
    json: argv.includes('--json'),
    verbose: argv.includes('--verbose'),
    stdout: io.stdout,
    stderr: io.stderr,
    interactive: io.stdout.isTTY === true,
    exitCode: ExitCode.OK,
  };
  const program = buildProgram(ctx);
  try {
    if (argv.length === 0) {
      program.outputHelp();
      return ExitCode.USAGE;
    }
    await program.parseAsync([...argv], { from: 'user' });
    return ctx.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version print and succeed; every other commander error is a usage error it already printed.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help')
        return ExitCode.OK;
      return ExitCode.USAGE;
    }
    const code = exitCodeFor(err);
    if (ctx.json) outJson(ctx, { ok: false, exitCode: code, error: jsonError(err) });
    io.stderr.write(`tfjs-checkpoint: ${errorLine(err)}\n`);
    if (ctx.verbose && err instanceof Error && err.stack) io.stderr.write(`${stackWithCauses(err)}\n`);
    else if (code === ExitCode.OTHER && !(err instanceof CliError))
      io.stderr.write('tfjs-checkpoint: rerun with --verbose for the stack trace\n');
    return code;
  }
}

function jsonError(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { message: String(err) };
  const e = err as Error & { code?: unknown; path?: unknown; tensor?: unknown };
  return {
    message: e.message,
    ...(typeof e.code === 'string' ? { code: e.code } : {}),
    ...(typeof e.path === 'string' ? { path: e.path } : {}),
    ...(typeof e.tensor === 'string' ? { tensor: e.tensor } : {}),
  };
}

function stackWithCauses(err: Error): string {
  let text = err.stack ?? String(err);
  let cause = err.cause;
  for (let depth = 0; cause instanceof Error && depth < 5; depth++) {
    text += `\nCaused by: ${cause.stack ?? cause.message}`;
    cause = cause.cause;
  }
  return text;
}
