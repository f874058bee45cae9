#!/usr/bin/env node
/**
 * The `tfjs-checkpoint` executable (package.json "bin"). See program.ts and docs/CLI.md.
 */
import { run } from './program';

// A closed pipe (`tfjs-checkpoint inspect f | head`) is not an error: stop quietly.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

run(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr }).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // run() handles every error; reaching this is a bug in the CLI itself.
    process.stderr.write(`tfjs-checkpoint: internal error: ${String(err)}\n`);
    process.exitCode = 4;
  },
);
