/**
 * `npm start`: the demo (run.ts). Options: --epochs, --out, --platform, --samples, --seed.
 * Exit codes: 0 done and the restored model scores exactly the best epoch's accuracy; 1 it does not, or the run
 * failed; 2 usage error.
 */
import { Command, InvalidArgumentError } from 'commander';
import { PLATFORMS, PlatformError, isPlatform } from './platform';
import { runDemo } from './run';

function positiveInt(what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n <= 0)
      throw new InvalidArgumentError(`Expected ${what} to be a positive integer.`);
    return n;
  };
}

function platform(value: string): string {
  if (!isPlatform(value)) throw new InvalidArgumentError(`Expected one of ${PLATFORMS.join(', ')}.`);
  return value;
}

async function main(): Promise<number> {
  const program = new Command()
    .name('npm start --')
    .description('Train a small CNN on generated shapes, keeping the best checkpoint with modelCheckpoint.')
    .option('--epochs <n>', 'training epochs', positiveInt('--epochs'), 10)
    .option('--out <dir>', 'checkpoint directory', 'checkpoints')
    .option('--platform <name>', `tfjs platform: ${PLATFORMS.join(' | ')}`, platform, 'tfjs')
    .option('--samples <n>', 'images to generate (80% train, 20% validation)', positiveInt('--samples'), 1200)
    .option('--seed <n>', 'seed of the data and the initial weights', positiveInt('--seed'), 42)
    .exitOverride()
    .configureOutput({ outputError: (s, write) => write(`demo: ${s.replace(/^error: /, '')}`) });
  try {
    program.parse(process.argv);
  } catch (e) {
    const code = (e as { code?: string }).code;
    return code === 'commander.helpDisplayed' || code === 'commander.version' ? 0 : 2;
  }
  const opts = program.opts<{ epochs: number; out: string; platform: string; samples: number; seed: number }>();
  try {
    const result = await runDemo({
      epochs: opts.epochs,
      out: opts.out,
      platform: opts.platform as (typeof PLATFORMS)[number],
      samples: opts.samples,
      seed: opts.seed,
    });
    return result.identical ? 0 : 1;
  } catch (e) {
    if (e instanceof PlatformError) {
      process.stderr.write(`demo: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`demo: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return 1;
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`demo: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  },
);
