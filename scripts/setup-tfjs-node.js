#!/usr/bin/env node
/**
 * `npm run setup:tfjs-node`: makes `require('@tensorflow/tfjs-node')` work without its install script, which
 * downloads libtensorflow from storage.googleapis.com (unreachable on many build machines; package.json's
 * `allowScripts` keeps `npm ci` from running it).
 *
 * libtensorflow's C API ships inside the TensorFlow CPU wheel, which pip can fetch from whatever index it is
 * configured with. The script:
 *   1. exits at once if the binding already loads and gives the `tensorflow` backend (idempotent);
 *   2. `pip download tensorflow-cpu==TF_VERSION --no-deps` into the cache (skipped when the cache already holds the
 *      extracted libraries; TFJS_NODE_WHEEL=<path to a tensorflow-cpu wheel> skips pip);
 *   3. extracts tensorflow/libtensorflow_cc.so.2, tensorflow/libtensorflow_framework.so.2 and tensorflow/include/
 *      into the cache, then deletes the wheel;
 *   4. links (hard link, else copy) both libraries into node_modules/@tensorflow/tfjs-node/deps/lib/, plus
 *      libtensorflow.so and libtensorflow.so.2 as symlinks to libtensorflow_cc.so.2 (the TF_* and TFE_* C API is
 *      exported there) and libtensorflow_framework.so for the linker; deps/include is a symlink to the cached
 *      headers (needed only to build);
 *   5. `node-gyp rebuild` of the binding into lib/napi-v8 (rpath $ORIGIN/../../deps/lib), then checks it loads.
 *
 * Cache: $TFJS_CHECKPOINT_CACHE, else $XDG_CACHE_HOME/tfjs-checkpoint, else ~/.cache/tfjs-checkpoint (about 1.1 GB:
 * the libraries are 850 MB). It lives outside the checkout: nothing here reaches git or the npm package, and every
 * checkout on the machine shares it. Verified on Linux x86_64 with tfjs-node 4.22 and TensorFlow 2.21.
 *
 * Exit codes: 0 tfjs-node loads; 1 a step failed (the message says which and what to do).
 */
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { tfjsNodeLoadError } = require('./tfjs-node-probe');

const TF_VERSION = process.env.TFJS_NODE_TF_VERSION ?? '2.21.0';
const root = path.join(__dirname, '..');
const LIBS = ['libtensorflow_cc.so.2', 'libtensorflow_framework.so.2'];
/** Symlinks the linker (-ltensorflow, -ltensorflow_framework) and the loader (the .so.2 sonames) look for. */
const ALIASES = {
  'libtensorflow.so': LIBS[0],
  'libtensorflow.so.2': LIBS[0],
  'libtensorflow_framework.so': LIBS[1],
};

function log(message) {
  console.log(`setup-tfjs-node: ${message}`);
}

class SetupError extends Error {}

/** Throws, so `finally` blocks remove partial downloads; main() prints the message and exits 1. */
function fail(message) {
  throw new SetupError(message);
}

const loadError = () => tfjsNodeLoadError(root);

function run(command, args, options = {}) {
  log(`${command} ${args.map((a) => (a.includes('\n') ? '<script>' : a)).join(' ')}`);
  const r = spawnSync(command, args, { stdio: 'inherit', ...options });
  if (r.error) return { ok: false, why: r.error.message };
  return { ok: r.status === 0, why: `exit status ${r.status}` };
}

function which(command) {
  const r = spawnSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function cacheRoot() {
  if (process.env.TFJS_CHECKPOINT_CACHE) return process.env.TFJS_CHECKPOINT_CACHE;
  const xdg = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(xdg, 'tfjs-checkpoint');
}

/** Fetches the wheel with pip (or takes TFJS_NODE_WHEEL) and extracts what the binding needs into `dir`. */
function populateCache(dir) {
  const python = which('python3') ?? which('python');
  if (!python) fail('python3 is not installed: it is needed to fetch and unpack the TensorFlow wheel');
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    let wheel = process.env.TFJS_NODE_WHEEL;
    if (wheel) {
      if (!fs.existsSync(wheel)) fail(`TFJS_NODE_WHEEL=${wheel}: no such file`);
    } else {
      if (spawnSync(python, ['-m', 'pip', '--version']).status !== 0)
        fail(
          `pip is not available for ${python}: install it (python3 -m ensurepip) or set TFJS_NODE_WHEEL ` +
            `to a downloaded tensorflow-cpu-${TF_VERSION} wheel`,
        );
      const dl = path.join(tmp, 'wheel');
      const r = run(python, [
        '-m',
        'pip',
        'download',
        `tensorflow-cpu==${TF_VERSION}`,
        '--no-deps',
        '--only-binary=:all:',
        '--disable-pip-version-check',
        '-d',
        dl,
      ]);
      const found = fs.existsSync(dl) ? fs.readdirSync(dl).filter((f) => f.endsWith('.whl')) : [];
      if (!r.ok || found.length !== 1)
        fail(
          `pip could not download tensorflow-cpu==${TF_VERSION} (${r.ok ? `${found.length} wheels` : r.why}): ` +
            'check `pip config list` points at an index that has it, or set TFJS_NODE_WHEEL to a downloaded wheel',
        );
      wheel = path.join(dl, found[0]);
    }
    log(`extracting the libraries and headers from ${path.basename(wheel)}`);
    const extract = [
      'import sys, zipfile',
      'z = zipfile.ZipFile(sys.argv[1])',
      "want = set(['tensorflow/' + n for n in sys.argv[3:]])",
      "names = [n for n in z.namelist() if n in want or n.startswith('tensorflow/include/')]",
      'missing = want - set(names)',
      "sys.exit('missing from the wheel: ' + ', '.join(sorted(missing))) if missing else None",
      'z.extractall(sys.argv[2], names)',
    ].join('\n');
    const x = run(python, ['-c', extract, wheel, tmp, ...LIBS]);
    if (!x.ok) fail(`could not extract ${wheel} (${x.why})`);
    fs.rmSync(path.join(tmp, 'wheel'), { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir); // complete or absent: an interrupted run never leaves a half cache
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function linkOrCopy(from, to) {
  fs.rmSync(to, { force: true });
  try {
    fs.linkSync(from, to);
  } catch {
    fs.copyFileSync(from, to);
  }
}

/**
 * node-gyp needs Node's headers: npm passes its `nodedir` setting to scripts it runs, but a direct
 * `node scripts/setup-tfjs-node.js` must ask npm, or node-gyp tries to download them.
 */
function nodedirArgs() {
  if (process.env.npm_config_nodedir) return [];
  const r = spawnSync('npm', ['config', 'get', 'nodedir'], { encoding: 'utf8' });
  const dir = r.status === 0 ? r.stdout.trim() : '';
  return dir && dir !== 'undefined' && dir !== 'null' ? [`--nodedir=${dir}`] : [];
}

function main() {
  const before = loadError();
  if (before === undefined) {
    log('@tensorflow/tfjs-node already loads with the tensorflow backend; nothing to do');
    return;
  }
  let pkgDir;
  try {
    pkgDir = path.dirname(require.resolve('@tensorflow/tfjs-node/package.json', { paths: [root] }));
  } catch {
    fail('@tensorflow/tfjs-node is not installed: run npm ci (or npm install) first');
  }
  if (process.platform !== 'linux' || process.arch !== 'x64')
    fail(
      `this script handles Linux x86_64 only (this is ${process.platform} ${process.arch}); elsewhere let ` +
        "tfjs-node's own install script download libtensorflow: npm rebuild @tensorflow/tfjs-node --ignore-scripts=false",
    );
  log(`@tensorflow/tfjs-node does not load yet (${before}); building it against TensorFlow ${TF_VERSION}`);

  const cache = path.join(cacheRoot(), `tensorflow-cpu-${TF_VERSION}`);
  const cachedLibs = LIBS.map((l) => path.join(cache, 'tensorflow', l));
  if (cachedLibs.every((l) => fs.existsSync(l))) log(`using the cached libraries in ${cache}`);
  else populateCache(cache);

  const deps = path.join(pkgDir, 'deps');
  const libDir = path.join(deps, 'lib');
  fs.mkdirSync(libDir, { recursive: true });
  for (const [i, lib] of LIBS.entries()) linkOrCopy(cachedLibs[i], path.join(libDir, lib));
  for (const [alias, target] of Object.entries(ALIASES)) {
    fs.rmSync(path.join(libDir, alias), { force: true });
    fs.symlinkSync(target, path.join(libDir, alias));
  }
  const include = path.join(deps, 'include');
  fs.rmSync(include, { recursive: true, force: true });
  fs.symlinkSync(path.join(cache, 'tensorflow', 'include'), include);

  let nodeGyp;
  try {
    nodeGyp = require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] });
  } catch {
    fail('node-gyp is not installed (a devDependency): run npm ci first');
  }
  const build = run(
    process.execPath,
    [
      nodeGyp,
      'rebuild',
      '--module_name=tfjs_binding',
      `--module_path=${path.join(pkgDir, 'lib', 'napi-v8')}`,
      '--napi_build_version=8',
      ...nodedirArgs(),
    ],
    { cwd: pkgDir },
  );
  if (!build.ok) fail(`building the tfjs-node binding failed (${build.why}); see the compiler output above`);

  const after = loadError();
  if (after !== undefined) fail(`built, but @tensorflow/tfjs-node still does not load: ${after}`);
  log(`done: @tensorflow/tfjs-node loads with the tensorflow backend (TensorFlow ${TF_VERSION})`);
}

try {
  main();
} catch (e) {
  if (!(e instanceof SetupError)) throw e;
  console.error(`setup-tfjs-node: ${e.message}`);
  process.exitCode = 1;
}
