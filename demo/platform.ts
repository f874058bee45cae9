/**
 * Choosing the TensorFlow.js platform: the pure-JS `@tensorflow/tfjs` (always available: a peer dependency), or
 * `@tensorflow/tfjs-node` / `@tensorflow/tfjs-node-gpu` when the user has installed one. Those packages register a
 * native backend on the same `@tensorflow/tfjs` that this library uses, so everything else stays the same.
 */
import type * as tfTypes from '@tensorflow/tfjs';

export const PLATFORMS = ['tfjs', 'tfjs-node', 'tfjs-node-gpu'] as const;
export type Platform = (typeof PLATFORMS)[number];

/** A platform that is not installed or does not load; the message says what to do. */
export class PlatformError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PlatformError';
  }
}

export function isPlatform(name: string): name is Platform {
  return (PLATFORMS as readonly string[]).includes(name);
}

/** Loads the platform and resolves to `@tensorflow/tfjs` with the platform's backend ready. */
export async function loadPlatform(platform: Platform): Promise<typeof tfTypes> {
  if (platform !== 'tfjs') {
    const pkg = `@tensorflow/${platform}`;
    try {
      require.resolve(pkg);
    } catch (e) {
      throw new PlatformError(
        `--platform ${platform}: ${pkg} is not installed. Install it (npm install ${pkg}) or use --platform tfjs`,
        { cause: e },
      );
    }
    // libtensorflow's start-up banner (absl's "log messages before InitializeLog" and the CPU-features line) is noise
    // in a demo; the user's own setting wins.
    process.env.TF_CPP_MIN_LOG_LEVEL ??= '2';
    try {
      require(pkg);
    } catch (e) {
      const reason = (e as Error).message.split('\n')[0];
      throw new PlatformError(
        `--platform ${platform}: ${pkg} is installed but could not be loaded (${reason}). ` +
          'Its native library may be missing: in this project run `npm run setup:tfjs-node` (Linux x86_64, builds it ' +
          'from the TensorFlow CPU wheel), elsewhere reinstall it with install scripts enabled; or use --platform tfjs',
        { cause: e },
      );
    }
  }
  const tf = require('@tensorflow/tfjs') as typeof tfTypes;
  // PROD silences tfjs's console banner suggesting tfjs-node; the demo says which backend it runs on.
  tf.env().set('PROD', true);
  await tf.ready();
  if (platform !== 'tfjs' && tf.getBackend() !== 'tensorflow') {
    throw new PlatformError(
      `--platform ${platform}: loaded, but the active backend is ${tf.getBackend()}: ` +
        'it registered on another copy of @tensorflow/tfjs (deduplicate your node_modules)',
    );
  }
  return tf;
}
