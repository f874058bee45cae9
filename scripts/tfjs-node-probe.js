/**
 * Whether @tensorflow/tfjs-node loads here with the `tensorflow` backend, probed in a child process (a failed dlopen
 * or a half-built binding must not break the caller). One home for the check used by jest.config.js,
 * scripts/setup-tfjs-node.js and the benchmark (bench/stall.ts).
 */
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const PROBE =
  "const tf = require('@tensorflow/tfjs-node'); " +
  "if (tf.getBackend() !== 'tensorflow') throw new Error('the active backend is ' + tf.getBackend());";

/** Undefined when tfjs-node loads from `cwd` (default: this checkout), else the first line of its error. */
function tfjsNodeLoadError(cwd = path.join(__dirname, '..')) {
  const r = spawnSync(process.execPath, ['-e', PROBE], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' },
  });
  if (r.error) return `cannot run node: ${r.error.message}`;
  if (r.status === 0) return undefined;
  const line = `${r.stderr}`.split('\n').find((l) => /^\s*(\w*Error|Error)\b[^(]*:/.test(l));
  return (line ?? `exit status ${r.status}`).trim();
}

module.exports = { tfjsNodeLoadError };
