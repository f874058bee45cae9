/**
 * Loads @tensorflow/tfjs (a peer dependency) for the commands that build models (export, import), with a one-line
 * error when it is not installed. The other commands never load it.
 */
import type * as tfTypes from '@tensorflow/tfjs';
import { CliError, ExitCode } from './exit-codes';

export function requireTfjs(command: string): typeof tfTypes {
  try {
    const tf = require('@tensorflow/tfjs') as typeof tfTypes;
    // PROD silences tfjs's console banner about tfjs-node (stderr noise for a CLI); the commands need no debug checks.
    tf.env().set('PROD', true);
    return tf;
  } catch (e) {
    throw new CliError(
      ExitCode.OTHER,
      `'${command}' needs @tensorflow/tfjs, which could not be loaded (${(e as Error).message.split('\n')[0]}); ` +
        'install it with: npm install @tensorflow/tfjs',
      { cause: e },
    );
  }
}
