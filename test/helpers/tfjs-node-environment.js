/**
 * The jest test environment of the `tfjs-node` project (jest.config.js): jest's node environment, whose typed-array
 * constructors are made the outer realm's. tfjs-node's binding is a native addon, so the arrays it returns (every
 * `data()` on the tensorflow backend) belong to the outer realm, while jest gives each test file a realm of its own:
 * there `x instanceof Float32Array` is false for them, and tfjs-core's own checks (`concatenateTypedArrays` in
 * `model.save`) throw "Unsupported TypedArray subtype". In a plain Node process there is one realm and no such issue.
 */
const { TestEnvironment } = require('jest-environment-node');

const SHARED = [
  'ArrayBuffer',
  'SharedArrayBuffer',
  'DataView',
  'Int8Array',
  'Uint8Array',
  'Uint8ClampedArray',
  'Int16Array',
  'Uint16Array',
  'Int32Array',
  'Uint32Array',
  'Float32Array',
  'Float64Array',
  'BigInt64Array',
  'BigUint64Array',
];

class TfjsNodeEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const name of SHARED) this.global[name] = globalThis[name];
  }
}

module.exports = TfjsNodeEnvironment;
