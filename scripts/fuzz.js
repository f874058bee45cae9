#!/usr/bin/env node
/**
 * Builds the libFuzzer target (test/native/fuzz_read.cc, CMake option TFJS_CKPT_FUZZ, clang with
 * -fsanitize=fuzzer,address,undefined) and runs it in one process (-jobs is never used: one core) from the seed
 * corpus in test/native/fuzz-corpus/, for FUZZ_SECONDS (default 60) or, when FUZZ_RUNS is set, for exactly that many
 * executions (no time limit). New inputs go to build-fuzz/corpus (the repo's seeds are never modified); a crashing
 * input is saved under build-fuzz/artifacts/ and the script exits non-zero.
 *
 * FUZZ_MAX_LEN caps the input size (default 65536). On a loaded machine the long run uses 4096 (libFuzzer's own
 * default, room for a header and several tensors): the cost of an execution grows with its input (CRC32C at every
 * alignment, a file written and read back), so the cap buys executions.
 *
 * FUZZ_MERGE=1 instead adds to test/native/fuzz-corpus the inputs of build-fuzz/corpus that bring coverage the seeds
 * lack (libFuzzer -merge=1, which keeps the corpus minimal), so the next short pass (CI's) starts from what a long run
 * found.
 *
 * The long run (at least 10M executions; see README, Limits): FUZZ_RUNS=10000000 npm run fuzz, then
 * FUZZ_MERGE=1 npm run fuzz.
 *
 * Without clang it prints "skipped: clang not found" and exits 0 (install it with `apt-get install -y clang`).
 */
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const buildDir = path.join(root, 'build-fuzz');
const seeds = path.join(root, 'test', 'native', 'fuzz-corpus');
function positiveInteger(name, fallback) {
  const value = process.env[name] === undefined ? fallback : Number(process.env[name]);
  if (value !== undefined && !(Number.isSafeInteger(value) && value > 0)) {
    console.error(`fuzz: ${name} must be a positive integer, got ${JSON.stringify(process.env[name])}`);
    process.exit(2);
  }
  return value;
}
const runs = positiveInteger('FUZZ_RUNS', undefined);
const maxLen = positiveInteger('FUZZ_MAX_LEN', 65536);
const seconds = positiveInteger('FUZZ_SECONDS', 60);
const merge = process.env.FUZZ_MERGE === '1';

function which(command) {
  const r = spawnSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function run(command, args, options = {}) {
  console.log(`fuzz: ${command} ${args.join(' ')}`);
  const r = spawnSync(command, args, { stdio: 'inherit', cwd: root, ...options });
  if (r.error) {
    console.error(`fuzz: cannot run ${command}: ${r.error.message}`);
    process.exit(2);
  }
  return r.status ?? 1;
}

const clangxx = which('clang++');
if (!clangxx) {
  console.log('fuzz: skipped: clang not found (apt-get install -y clang, then npm run fuzz)');
  process.exit(0);
}
if (!which('cmake')) {
  console.error('fuzz: cmake not found; it is needed to build the fuzz target');
  process.exit(2);
}

const configure = ['-S', root, '-B', buildDir, '-DTFJS_CKPT_FUZZ=ON', `-DCMAKE_CXX_COMPILER=${clangxx}`];
configure.push('-DCMAKE_BUILD_TYPE=RelWithDebInfo');
if (which('ninja') && !fs.existsSync(path.join(buildDir, 'Makefile'))) configure.push('-G', 'Ninja');
if (run('cmake', configure) !== 0) process.exit(1);
if (run('cmake', ['--build', buildDir, '--target', 'tfjs_checkpoint_fuzz_read', '-j', '2']) !== 0) process.exit(1);

const corpus = path.join(buildDir, 'corpus');
const artifacts = path.join(buildDir, 'artifacts') + path.sep;
fs.mkdirSync(corpus, { recursive: true });
fs.mkdirSync(artifacts, { recursive: true });
// The target writes each input to a file and reads it back: a tmpfs makes that ~30x faster.
const tmpdir = fs.existsSync('/dev/shm') ? '/dev/shm' : process.env.TMPDIR || '/tmp';
const env = { ...process.env, TMPDIR: tmpdir, ASAN_OPTIONS: 'detect_leaks=1', UBSAN_OPTIONS: 'print_stacktrace=1' };
const common = [`-max_len=${maxLen}`, '-timeout=10', '-rss_limit_mb=2048', `-artifact_prefix=${artifacts}`];
const target = path.join(buildDir, 'tfjs_checkpoint_fuzz_read');

if (merge) {
  // Adds to the seeds only the inputs of build-fuzz/corpus that bring new coverage; the named seeds stay as they are.
  const before = fs.readdirSync(seeds).length;
  if (run(target, ['-merge=1', ...common, seeds, corpus], { env }) !== 0) process.exit(1);
  const after = fs.readdirSync(seeds).length;
  console.log(`fuzz: ${after - before} inputs added to ${path.relative(root, seeds)} (${after} in all)`);
  process.exit(0);
}

const budget = runs === undefined ? [`-max_total_time=${seconds}`] : [`-runs=${runs}`];
const status = run(target, [...budget, ...common, '-print_final_stats=1', corpus, seeds], { env });
if (status === 72) {
  // libFuzzer's exit code when interrupted (SIGINT): no finding, and no full run either.
  console.error('fuzz: interrupted before the budget was spent (no finding so far)');
  process.exit(1);
}
if (status !== 0) {
  console.error(`fuzz: the fuzzer failed (exit ${status}); the crashing input is in ${artifacts}`);
  process.exit(1);
}
console.log(`fuzz: ${runs === undefined ? `${seconds} s` : `${runs} executions`} without a failure`);
