/**
 * The TensorFlow.js platform the current jest project runs on (jest.config.js: `tfjs` or `tfjs-node`), for the few
 * assertions that differ between them. Test code is otherwise the same on both.
 */
declare const TFJS_CKPT_PLATFORM: string | undefined;

export type TestPlatform = 'tfjs' | 'tfjs-node';

/** The platform of this jest project; `tfjs` when run outside the projects (a fixture loaded by a child). */
export const PLATFORM: TestPlatform =
  typeof TFJS_CKPT_PLATFORM !== 'undefined' && TFJS_CKPT_PLATFORM === 'tfjs-node' ? 'tfjs-node' : 'tfjs';

/** The tfjs backend the platform trains on: tfjs's pure-JS `cpu`, or tfjs-node's `tensorflow` (libtensorflow). */
export const TF_BACKEND = PLATFORM === 'tfjs-node' ? 'tensorflow' : 'cpu';

/**
 * Whether `tensor.data()` resolves to the backend's own backing array. On `cpu` it does (a snapshot is free and must
 * hold that very array); on `tensorflow` every read copies out of the TensorFlow tensor (a snapshot is a copy).
 */
export const DATA_IS_BACKING_ARRAY = TF_BACKEND === 'cpu';
