/**
 * Two projects. `tfjs` runs every suite on @tensorflow/tfjs's pure-JS cpu backend. `tfjs-node` runs the model-level
 * suites again on @tensorflow/tfjs-node's tensorflow backend (libtensorflow), with the same test code: a test that
 * must know the platform asks test/helpers/platform.ts. tfjs-node needs `npm run setup:tfjs-node` once; without it
 * that project is skipped with one line saying so, except under CI=true, where it is an error.
 */
const { spawnSync } = require('node:child_process');

/** @type {import('jest').Config} */
const common = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] },
};

/** The suites that train, save and restore models: they run on both platforms. */
const MODEL_LEVEL = [
  'model',
  'model-checkpoint',
  'checkpoint-manager',
  'async-save',
  'backup-and-restore',
  'restore-twin',
];

/** Why tfjs-node does not load here (probed in a child: a failed dlopen must not break jest), or undefined. */
function tfjsNodeLoadError() {
  const probe =
    "const tf = require('@tensorflow/tfjs-node'); " +
    "if (tf.getBackend() !== 'tensorflow') throw new Error('the active backend is ' + tf.getBackend());";
  const r = spawnSync(process.execPath, ['-e', probe], {
    cwd: __dirname,
    encoding: 'utf8',
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' },
  });
  if (r.status === 0) return undefined;
  const line = `${r.stderr}`.split('\n').find((l) => /Error/.test(l));
  return (line ?? `exit status ${r.status}`).trim();
}

function tfjsNodeProject() {
  const why = tfjsNodeLoadError();
  if (why !== undefined) {
    const message =
      `tfjs-node project skipped: @tensorflow/tfjs-node does not load (${why}); ` +
      'run `npm run setup:tfjs-node` to enable it';
    if (process.env.CI === 'true') throw new Error(`${message} (CI=true: it must run)`);
    process.stderr.write(`jest: ${message}\n`);
    return [];
  }
  return [
    {
      ...common,
      displayName: 'tfjs-node',
      testMatch: [`<rootDir>/test/(${MODEL_LEVEL.join('|')}).test.ts`],
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
