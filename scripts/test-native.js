#!/usr/bin/env node
/**
 * npm run test:native: the native code under AddressSanitizer and UndefinedBehaviorSanitizer.
 *
 * 1. cmake-js configures build-native-test/ with TFJS_CKPT_TESTS=ON and TFJS_CKPT_SANITIZE=ON, builds the core, the
 *    C++ unit tests (test/native/unit_tests.cc) and the addon, all instrumented, and ctest runs the unit tests.
 * 2. The addon's jest suites (test/backend/native-backend.test.ts, commit-plan.test.ts for the commit queue's
 *    thread and thread-safe function, crc-views.test.ts for crc32cViews' worker) run against that instrumented addon
 *    (TFJS_CHECKPOINT_NATIVE_PATH), with the compiler's ASan and UBSan runtimes preloaded into node, so the
 *    Node-API boundary (argument unpacking, workers, external buffers) is checked too. This needs Linux and gcc's
 *    runtimes; elsewhere step 2 says it is skipped.
 * Any sanitizer report fails the run (halt_on_error).
 */
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const buildDir = path.join(root, 'build-native-test');
const config = 'RelWithDebInfo';
const bin = (name) => path.join(root, 'node_modules', '.bin', name);

function run(command, args, env = process.env) {
  console.log(`test:native: ${command} ${args.join(' ')}`);
  const r = spawnSync(command, args, { stdio: 'inherit', cwd: root, env });
  if (r.error) {
    console.error(`test:native: cannot run ${command}: ${r.error.message}`);
    process.exit(2);
  }
  if (r.status !== 0) process.exit(r.status ?? 1);
}

const sanitizerEnv = {
  ASAN_OPTIONS: 'allocator_may_return_null=1:detect_leaks=1:halt_on_error=1',
  UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
};

run(bin('cmake-js'), [
  'configure',
  '-O',
  buildDir,
  '-B',
  config,
  '--CDTFJS_CKPT_TESTS=ON',
  '--CDTFJS_CKPT_SANITIZE=ON',
  '--CDTFJS_CKPT_ADDON=ON',
]);
run('cmake', ['--build', buildDir, '-j', '2']);
run('ctest', ['--test-dir', buildDir, '--output-on-failure']);

// Step 2: the addon suite on the instrumented addon.
const addon = [path.join(buildDir, config, 'tfjs_checkpoint.node'), path.join(buildDir, 'tfjs_checkpoint.node')].find(
  (p) => fs.existsSync(p),
);
const cache = fs.readFileSync(path.join(buildDir, 'CMakeCache.txt'), 'utf8');
const compiler = /^CMAKE_CXX_COMPILER:[A-Z]+=(.*)$/m.exec(cache)?.[1];
const runtime = (name) => {
  const r = spawnSync(compiler, [`-print-file-name=${name}`], { encoding: 'utf8' });
  const file = r.status === 0 ? r.stdout.trim() : '';
  return path.isAbsolute(file) && fs.existsSync(file) ? file : undefined;
};
const asan = process.platform === 'linux' && compiler ? runtime('libasan.so') : undefined;
const ubsan = asan ? runtime('libubsan.so') : undefined;
if (!addon || !asan || !ubsan) {
  console.log(
    'test:native: the addon suite under ASan is skipped: it needs Linux and gcc (libasan.so, libubsan.so) ' +
      `(addon: ${addon ?? 'not built'}, compiler: ${compiler ?? 'unknown'})`,
  );
  process.exit(0);
}
run(
  bin('jest'),
  [
    '--runInBand',
    'test/backend/native-backend.test.ts',
    'test/backend/commit-plan.test.ts',
    'test/backend/crc-views.test.ts',
  ],
  {
    ...process.env,
    TFJS_CHECKPOINT_NATIVE_PATH: addon,
    LD_PRELOAD: `${asan} ${ubsan}`,
    // node itself is not instrumented and keeps memory until exit: leak checking would only report node.
    ASAN_OPTIONS: sanitizerEnv.ASAN_OPTIONS.replace('detect_leaks=1', 'detect_leaks=0'),
    UBSAN_OPTIONS: sanitizerEnv.UBSAN_OPTIONS,
  },
);
console.log('test:native: C++ unit tests and the addon suite passed under ASan + UBSan');
