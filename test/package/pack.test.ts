/**
 * The package as users get it: `npm run prebuild` (prebuildify --napi --strip), `npm pack`, then an install of the
 * tarball into a fresh project with install scripts disabled (npm 11's default for dependencies), where
 * `require('tfjs-checkpoint')` must load the shipped prebuild (backend 'native') and save and load a checkpoint.
 *
 * The prebuild and the pack run in a staging copy of the package, so that rebuilding build/ does not disturb other
 * test files loading the addon at the same time, and the repository's prebuilds/ is left alone.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..', '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
};

jest.setTimeout(15 * 60 * 1000);

function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): string {
  try {
    return execFileSync(command, args, { cwd, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(
      `${command} ${args.join(' ')} failed in ${cwd}: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`,
      { cause: err },
    );
  }
}

function listTs(dir: string): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listTs(full));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(full);
  }
  return out;
}

/** Runs `npm run build:ts` when some lib/**.ts has no compiled dist/lib/**.js or a newer one. */
function ensureFreshDist(): void {
  const stale = listTs(path.join(root, 'lib')).some((source) => {
    const compiled = path.join(root, 'dist', path.relative(root, source)).replace(/\.ts$/, '.js');
    return !fs.existsSync(compiled) || fs.statSync(compiled).mtimeMs < fs.statSync(source).mtimeMs;
  });
  if (stale) run(npm, ['run', 'build:ts'], root);
}

/** A copy of the package sources and compiled output (not build/, prebuilds/ or node_modules, which is linked). */
function stagePackage(into: string): void {
  const skip = new Set(['node_modules', '.git', 'build', 'prebuilds', 'coverage']);
  for (const entry of fs.readdirSync(root)) {
    if (skip.has(entry) || entry.startsWith('build-') || entry.endsWith('.tgz')) continue;
    fs.cpSync(path.join(root, entry), path.join(into, entry), { recursive: true });
  }
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(into, 'node_modules'), 'dir');
}

let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-ckpt-pack-'));
});
afterAll(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

it('installs from the packed tarball with scripts disabled and saves/loads with the native prebuild', () => {
  ensureFreshDist();
  const stage = path.join(work, 'stage');
  fs.mkdirSync(stage);
  stagePackage(stage);

  // What `prepack` does on publish (build:ts is fresh already); `npm pack` below then skips the scripts.
  run(npm, ['run', 'prebuild'], stage);
  const platformDir = `${process.platform}-${process.arch}`;
  const prebuilds = fs.readdirSync(path.join(stage, 'prebuilds', platformDir));
  // Tagged with the C library (glibc/musl), so that a musl system never loads a glibc binary.
  const libc =
    process.platform === 'linux'
      ? (process.report.getReport() as { header: { glibcVersionRuntime?: string } }).header.glibcVersionRuntime
        ? '.glibc'
        : '.musl'
      : '';
  const prebuild = `${manifest.name}${libc}.node`;
  expect(prebuilds).toEqual([prebuild]);

  const packed = JSON.parse(
    run(npm, ['pack', '--json', '--ignore-scripts', '--pack-destination', work], stage),
  ) as Array<{
    filename: string;
    files: Array<{ path: string }>;
  }>;
  const files = packed[0].files.map((f) => f.path);
  expect(files).toEqual(
    expect.arrayContaining([
      'package.json',
      'binding.gyp',
      'dist/lib/index.js',
      'dist/lib/index.d.ts',
      'native/addon.cc',
      'native/crc32c.h',
      `prebuilds/${platformDir}/${prebuild}`,
    ]),
  );
  // Nothing from the development tree: no build output, tests, sources of the TS, node_modules, or the demo
  // (compiled or not: it is the repository's `npm start`, not part of the library).
  expect(files.filter((f) => /^(build|test|lib|demo|dist\/demo|node_modules|build-[^/]*)\//.test(f))).toEqual([]);
  const tarball = path.join(work, packed[0].filename);

  const consumer = path.join(work, 'consumer');
  fs.mkdirSync(consumer);
  fs.writeFileSync(
    path.join(consumer, 'package.json'),
    JSON.stringify({ name: 'pack-consumer', version: '1.0.0', private: true }),
  );
  run(
    npm,
    ['install', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', tarball, '@tensorflow/tfjs@4.22.0'],
    consumer,
  );
  const installed = path.join(consumer, 'node_modules', manifest.name);
  expect(fs.existsSync(path.join(installed, 'build'))).toBe(false); // so native can only be the prebuild

  const script = `
    const assert = require('node:assert');
    const path = require('node:path');
    const tf = require('@tensorflow/tfjs');
    const ckpt = require('tfjs-checkpoint');
    (async () => {
      const file = path.join(${JSON.stringify(consumer)}, 'ckpt', 'weights.safetensors');
      await ckpt.saveTensors(file, {
        'dense/kernel': { dtype: 'float32', shape: [2, 2], data: new Float32Array([1.5, -2, 3, 4]) },
        'dense/bias': { dtype: 'int32', shape: [3], data: new Int32Array([7, -8, 9]) },
      }, { metadata: { epoch: '4' } });
      const loaded = await ckpt.loadTensors(file);
      const verify = await ckpt.verifyCheckpoint(file);
      process.stdout.write(JSON.stringify({
        backend: ckpt.backend,
        loadError: ckpt.nativeLoadError() ? String(ckpt.nativeLoadError()) : null,
        resolved: require.resolve('tfjs-checkpoint'),
        kernel: Array.from(loaded.tensors['dense/kernel'].data),
        kernelShape: loaded.tensors['dense/kernel'].shape,
        bias: Array.from(loaded.tensors['dense/bias'].data),
        epoch: loaded.metadata.epoch,
        verifiedTensors: verify.tensors,
        tfVersion: tf.version.tfjs,
      }));
    })().catch((e) => { console.error(e); process.exit(1); });
  `;
  const env = { ...process.env };
  delete env.TFJS_CHECKPOINT_NATIVE;
  const result = JSON.parse(run(process.execPath, ['-e', script], consumer, env)) as Record<string, unknown>;
  expect(result).toEqual({
    backend: 'native',
    loadError: null,
    resolved: path.join(installed, 'dist', 'lib', 'index.js'),
    kernel: [1.5, -2, 3, 4],
    kernelShape: [2, 2],
    bias: [7, -8, 9],
    epoch: '4',
    verifiedTensors: 2,
    tfVersion: '4.22.0',
  });
});
