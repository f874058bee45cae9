/**
 * Two projects. `tfjs` runs every suite on @tensorflow/tfjs's pure-JS cpu backend. `tfjs-node` runs the model-level
 * suites again on @tensorflow/tfjs-node's tensorflow backend (libtensorflow), with the same test code: a test that
 * must know the platform asks test/helpers/platform.ts. tfjs-node needs `npm run setup:tfjs-node` once; without it
 * that project is skipped with one line saying so, except under CI=true or TFJS_NODE_REQUIRED=1 (.ci/run sets it),
 * where it is an error: jest does not start.
 */
const { tfjsNodeLoadError } = require('./scripts/tfjs-node-probe');

/** @type {import('jest').Config} */
const common = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] },
};

/** The suites that train, save and restore models: they run on both platforms. */
const MODEL_LEVEL = [
  'model/model',
  'callbacks/model-checkpoint',
  'manager/checkpoint-manager',
  'manager/async-save',
  'callbacks/backup-and-restore',
  'model/restore-twin',
  'model/io-handler',
  'manager/shards-training',
];

function tfjsNodeProject() {
  const why = tfjsNodeLoadError();
  if (why !== undefined) {
    const message =
      `tfjs-node project skipped: @tensorflow/tfjs-node does not load (${why}); ` +
      'run `npm run setup:tfjs-node` to enable it';
    if (process.env.CI === 'true' || process.env.TFJS_NODE_REQUIRED === '1')
      throw new Error(`${message} (CI=true or TFJS_NODE_REQUIRED=1: it must run)`);
    process.stderr.write(`jest: ${message}\n`);
    return [];
  }
  return [
    {
      ...common,
      displayName: 'tfjs-node',
      testMatch: [`<rootDir>/test/(${MODEL_LEVEL.join('|')}).test.ts`],
      testEnvironment: '<rootDir>/test/helpers/tfjs-node-environment.js',
      setupFiles: ['<rootDir>/test/helpers/tfjs-node-setup.ts'],
      globals: { TFJS_CKPT_PLATFORM: 'tfjs-node' },
    },
  ];
}

/** @type {import('jest').Config} */
module.exports = {
  projects: [
    { ...common, displayName: 'tfjs', testMatch: ['**/*.test.ts'], globals: { TFJS_CKPT_PLATFORM: 'tfjs' } },
    ...tfjsNodeProject(),
  ],
  testTimeout: 60000, // a global option: inside a project jest ignores it
  // Native and JS backends share process-wide state (the addon, tfjs); files run in separate workers anyway.
  maxWorkers: 2,
};
