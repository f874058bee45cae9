/**
 * A faster Conv2DBackpropFilter kernel for tfjs's pure-JS `cpu` backend.
 *
 * The cpu backend computes a conv layer's filter gradient with `TensorBuffer.get(b, r, c, d)`, a variadic accessor,
 * in the innermost loop; profiling the demo's CNN shows 70-80% of the training time there. This kernel runs the same
 * loops in the same order, accumulating in the same double-precision variable and storing each result once as
 * float32, with flat indices instead of the accessor: the results are bit-identical (test/demo/demo.test.ts compares
 * them with the stock kernel) and training is several times faster. Installed by the demo and the examples only,
 * and only when the active backend is `cpu` (tfjs-node's native kernels are fast already).
 */
import type * as tfTypes from '@tensorflow/tfjs';

const KERNEL = 'Conv2DBackpropFilter';

interface CpuBackendLike {
  data: { get(dataId: object): { values: Float32Array } };
  makeTensorInfo(shape: number[], dtype: string, values: Float32Array): tfTypes.TensorInfo;
}

interface KernelArgs {
  inputs: { x: tfTypes.TensorInfo; dy: tfTypes.TensorInfo };
  backend: CpuBackendLike;
  attrs: {
    strides: [number, number] | number;
    pad: 'valid' | 'same' | number;
    dataFormat: 'NHWC' | 'NCHW';
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    filterShape: [number, number, number, number];
  };
}

/** The flat-index version of tfjs-backend-cpu's conv2DBackpropFilter (channels-last and channels-first). */
function makeKernel(tf: typeof tfTypes) {
  return (args: KernelArgs): tfTypes.TensorInfo => {
    const { x, dy } = args.inputs;
    const { strides, pad, dataFormat, dimRoundingMode, filterShape } = args.attrs;
    const format = tf.backend_util.convertConv2DDataFormat(dataFormat);
    const info = tf.backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      filterShape,
      strides,
      1,
      pad,
      dimRoundingMode,
      false,
      format,
    );
    const { strideHeight, strideWidth, filterHeight, filterWidth, inChannels, outChannels, batchSize } = info;
    const { inHeight, inWidth, outHeight, outWidth } = info;
    const channelsLast = info.dataFormat === 'channelsLast';
    const leftPad = info.padInfo.left;
    const topPad = info.padInfo.top;
    const xv = args.backend.data.get(x.dataId).values;
    const dyv = args.backend.data.get(dy.dataId).values;
    const dW = new Float32Array(filterHeight * filterWidth * inChannels * outChannels);
    // Strides of x and dy in elements: [b, row, col, channel] (channelsLast) or [b, channel, row, col].
    const xB = inHeight * inWidth * inChannels;
    const dyB = outHeight * outWidth * outChannels;
    const xR = channelsLast ? inWidth * inChannels : inWidth;
    const xC = channelsLast ? inChannels : 1;
    const xD = channelsLast ? 1 : inHeight * inWidth;
    const yR = channelsLast ? outWidth * outChannels : outWidth;
    const yC = channelsLast ? outChannels : 1;
    const yD = channelsLast ? 1 : outHeight * outWidth;
    for (let wR = 0; wR < filterHeight; ++wR) {
      const yRMin = Math.max(0, Math.ceil((topPad - wR) / strideHeight));
      const yRMax = Math.min(outHeight, (inHeight + topPad - wR) / strideHeight);
      for (let wC = 0; wC < filterWidth; ++wC) {
        const yCMin = Math.max(0, Math.ceil((leftPad - wC) / strideWidth));
        const yCMax = Math.min(outWidth, (inWidth + leftPad - wC) / strideWidth);
        for (let d1 = 0; d1 < inChannels; ++d1) {
          for (let d2 = 0; d2 < outChannels; ++d2) {
            let dotProd = 0;
            for (let b = 0; b < batchSize; ++b) {
              for (let r = yRMin; r < yRMax; ++r) {
                const xRow = wR + r * strideHeight - topPad;
                const xBase = b * xB + xRow * xR + d1 * xD;
                const yBase = b * dyB + r * yR + d2 * yD;
                for (let c = yCMin; c < yCMax; ++c) {
                  const xCol = wC + c * strideWidth - leftPad;
                  dotProd += xv[xBase + xCol * xC] * dyv[yBase + c * yC];
                }
              }
            }
            dW[((wR * filterWidth + wC) * inChannels + d1) * outChannels + d2] = dotProd;
          }
        }
      }
    }
    return args.backend.makeTensorInfo([filterHeight, filterWidth, inChannels, outChannels], 'float32', dW);
  };
}

/**
 * Replaces the cpu backend's Conv2DBackpropFilter kernel with the flat-index one. Returns a function restoring the
 * stock kernel. Does nothing (and returns a no-op) when the active backend is not `cpu`.
 */
export function installFastConvGrad(tf: typeof tfTypes): () => void {
  if (tf.getBackend() !== 'cpu') return () => undefined;
  const stock = tf.getKernel(KERNEL, 'cpu');
  if (!stock) return () => undefined;
  tf.unregisterKernel(KERNEL, 'cpu');
  tf.registerKernel({
    kernelName: KERNEL,
    backendName: 'cpu',
    kernelFunc: makeKernel(tf) as unknown as tfTypes.KernelFunc,
  });
  return () => {
    tf.unregisterKernel(KERNEL, 'cpu');
    tf.registerKernel(stock);
  };
}
