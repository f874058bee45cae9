/**
 * Which backend is in use. The native addon when it loads; the pure-TypeScript one when TFJS_CHECKPOINT_NATIVE=0 or
 * when no binary loads, and then never silently: the reason is emitted once as a process warning
 * (code TFJS_CHECKPOINT_NO_NATIVE). `setBackend` switches explicitly (benchmarks, tests).
 */
import type { Backend } from './backend';
import { CheckpointError, ErrorCode, invalidArgument } from '../errors';
import { jsBackend } from './js-backend';
import { loadNativeBackend } from './native-backend';

let nativeResult: ReturnType<typeof loadNativeBackend> | undefined;
let current: Backend | undefined;
let warned = false;

function native(): ReturnType<typeof loadNativeBackend> {
  if (!nativeResult) nativeResult = loadNativeBackend();
  return nativeResult;
}

/** The backend used by every operation of this package. */
export function getBackend(): Backend {
  if (current) return current;
  if (process.env.TFJS_CHECKPOINT_NATIVE === '0') {
    current = jsBackend;
    return current;
  }
  const loaded = native();
  if ('backend' in loaded) {
    current = loaded.backend;
  } else {
    current = jsBackend;
    if (!warned) {
      warned = true;
      // On Windows binding.gyp builds nothing (the native sources are POSIX): no reinstall can help there.
      const hint =
        process.platform === 'win32'
          ? 'The addon is built on POSIX systems only; set TFJS_CHECKPOINT_NATIVE=0 to choose the JS backend silently.'
          : 'Reinstall with scripts enabled to build it, or set TFJS_CHECKPOINT_NATIVE=0 to choose the JS backend.';
      process.emitWarning(
        `tfjs-checkpoint: the native addon did not load, using the slower pure-JS backend: ${loaded.error.message}. ` +
          hint,
        { code: 'TFJS_CHECKPOINT_NO_NATIVE' },
      );
    }
  }
  return current as Backend;
}

/** 'native' or 'js': the backend in use. */
export function backendName(): 'native' | 'js' {
  return getBackend().name;
}

/** Why the native backend is unavailable, or undefined when it loads. */
export function nativeLoadError(): Error | undefined {
  const loaded = native();
  return 'error' in loaded ? loaded.error : undefined;
}

/** Switches backend. 'native' throws (with the load error) when the addon is unavailable. */
export function setBackend(name: 'native' | 'js'): void {
  if (name === 'js') {
    current = jsBackend;
    return;
  }
  if (name !== 'native') invalidArgument('backend', "'native' or 'js'", name);
  const loaded = native();
  if ('error' in loaded) {
    throw new CheckpointError(
      ErrorCode.INVALID_ARGUMENT,
      `The native backend is unavailable: ${loaded.error.message}`,
      {
        cause: loaded.error,
      },
    );
  }
  current = loaded.backend;
}
