/**
 * Setup file of the jest project `tfjs-node` (jest.config.js): loads @tensorflow/tfjs-node before the test file, so
 * the library's own `import '@tensorflow/tfjs'` gets the tensorflow backend, and fails the file loudly if it did not
 * (a second copy of @tensorflow/tfjs under tfjs-node would register the backend where the library cannot see it).
 */
import * as path from 'node:path';

process.env.TF_CPP_MIN_LOG_LEVEL ??= '2'; // libtensorflow's start-up banner, on every test file otherwise

const nodeDir = path.dirname(require.resolve('@tensorflow/tfjs-node/package.json'));
for (const pkg of ['@tensorflow/tfjs', '@tensorflow/tfjs-core']) {
  const ours = require.resolve(pkg);
  const theirs = require.resolve(pkg, { paths: [nodeDir] });
  if (ours !== theirs)
    throw new Error(`tfjs-node uses its own copy of ${pkg} (${theirs}, ours is ${ours}): deduplicate node_modules`);
}
require('@tensorflow/tfjs-node');
const tf = require('@tensorflow/tfjs') as typeof import('@tensorflow/tfjs');
if (tf.getBackend() !== 'tensorflow')
  throw new Error(`tfjs-node loaded but the active tfjs backend is ${tf.getBackend()}, not tensorflow`);
