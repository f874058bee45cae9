/**
 * Loads the native addon (native/, built by node-gyp or shipped in prebuilds/) and wraps it as a `Backend`.
 *
 * The binary is located with node-gyp-build from the package root: prebuilds/<platform>-<arch>/ first, then
 * build/Release. The root is found by walking up from this file to the package.json named tfjs-checkpoint, because
 * this module runs both compiled (dist/lib/native-backend.js) and from source (lib/backend/native-backend.ts under jest).
 * TFJS_CHECKPOINT_NATIVE_PATH=<file.node> loads that binary instead (development: e.g. a sanitizer build, see
 * scripts/test-native.js).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Backend, CommitQueue, ReadFunction, ReadIntoPlan, ReadPlan, WritePlan } from './backend';
import { asError } from '../errors';
import { type CommitExecutor, guardCommitQueue } from './commit-plan';
import { crc32cViewsChecked } from './crc-views';

const PACKAGE_NAME = 'tfjs-checkpoint';

/** The addon's exports (native/addon.cc). */
export interface NativeAddon {
  write(plan: WritePlan): Promise<void>;
  read: ReadFunction;
  /** CRC32C with the best implementation this CPU supports. */
  crc32c(data: ArrayBufferView, crc?: number): number;
  /** CRC32C with the portable table-driven implementation (for benchmarks and tests). */
  crc32cPortable(data: ArrayBufferView, crc?: number): number;
  /** The CRC32C of A followed by B from their CRCs and B's length (native/crc32c.h Crc32cCombine). */
  crc32cCombine(crcA: number, crcB: number, lengthB: number): number;
  /** Backend.crc32cViews on a libuv pool thread (native/crc_views.h); throws for a call breaking its contract. */
  crc32cViews(views: readonly ArrayBufferView[]): Promise<number[]>;
  /** Whether `crc32c` uses CRC32C CPU instructions (SSE4.2 on x86-64, the CRC extension on arm64). */
  crc32cHardware: boolean;
  /** A commit-plan executor with its own thread (native/commit_binding.cc). */
  CommitQueue: new () => NativeCommitQueue;
}

/** The addon's CommitQueue object: `close()` is synchronous and refuses while plans are pending (guardCommitQueue
 * calls it once they have settled). */
export type NativeCommitQueue = CommitExecutor;

/** The native backend, with the extras the benchmarks and tests use. */
export interface NativeBackend extends Backend {
  readonly name: 'native';
  /** Whether `crc32c` uses CRC32C CPU instructions. */
  readonly crc32cHardware: boolean;
  /** The portable table-driven CRC32C of the addon. */
  crc32cPortable(data: ArrayBufferView, crc?: number): number;
  /** Where the binary was loaded from. */
  readonly binaryPath: string;
}

export type NativeBackendResult = { backend: NativeBackend } | { error: Error };

/** The directory holding this package's package.json (name tfjs-checkpoint), searched upwards from `start`. */
export function findPackageRoot(start: string = __dirname): string | undefined {
  let dir = path.resolve(start);
  for (;;) {
    const manifest = path.join(dir, 'package.json');
    try {
      const parsed = JSON.parse(fs.readFileSync(manifest, 'utf8')) as { name?: unknown };
      if (parsed.name === PACKAGE_NAME) return dir;
    } catch {
      // no (readable) package.json here: keep walking up
    }
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

const REQUIRED_FUNCTIONS = [
  'write',
  'read',
  'crc32c',
  'crc32cPortable',
  'crc32cCombine',
  'crc32cViews',
  'CommitQueue',
] as const;

/**
 * Loads the addon and returns the backend, or the reason it could not be loaded. Never throws: the caller decides
 * whether to fall back to the TypeScript backend and how to report it.
 */
export function loadNativeBackend(): NativeBackendResult {
  const root = findPackageRoot();
  if (root === undefined) {
    return { error: new Error(`cannot find the ${PACKAGE_NAME} package root above ${__dirname}`) };
  }
  let binaryPath: string;
  let addon: NativeAddon;
  try {
    const override = process.env.TFJS_CHECKPOINT_NATIVE_PATH;
    if (override) {
      binaryPath = path.resolve(override);
    } else {
      const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
      binaryPath = nodeGypBuild.resolve(root);
    }
    addon = require(binaryPath) as NativeAddon;
  } catch (err) {
    return { error: asError(err) };
  }
  for (const name of REQUIRED_FUNCTIONS) {
    if (typeof addon[name] !== 'function') {
      return { error: new Error(`the native addon ${binaryPath} does not export ${name}(): a stale build?`) };
    }
  }
  return { backend: wrap(addon, binaryPath) };
}

function wrap(addon: NativeAddon, binaryPath: string): NativeBackend {
  return {
    name: 'native',
    crc32cHardware: addon.crc32cHardware === true,
    binaryPath,
    // The addon throws synchronously only for a plan that breaks the contract (a TypeError or RangeError): turn
    // that into a rejection, like every other failure. Rejections are passed on untouched (see BackendFailure).
    write(plan: WritePlan): Promise<void> {
      try {
        return addon.write(plan);
      } catch (err) {
        return Promise.reject(asError(err));
      }
    },
    read: ((plan: ReadPlan | ReadIntoPlan) => {
      try {
        return addon.read(plan);
      } catch (err) {
        return Promise.reject(asError(err));
      }
    }) as ReadFunction,
    crc32c(data: ArrayBufferView, crc?: number): number {
      return addon.crc32c(data, crc);
    },
    openCommitQueue(): CommitQueue {
      return guardCommitQueue(new addon.CommitQueue());
    },
    crc32cPortable(data: ArrayBufferView, crc?: number): number {
      return addon.crc32cPortable(data, crc);
    },
    crc32cCombine(crcA: number, crcB: number, lengthB: number): number {
      return addon.crc32cCombine(crcA, crcB, lengthB);
    },
    crc32cViews: (views: readonly ArrayBufferView[]): Promise<number[]> =>
      crc32cViewsChecked(views, (v) => addon.crc32cViews(v)),
  };
}
