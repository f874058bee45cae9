/**
 * A procedurally generated image-classification dataset: 16x16 grayscale images of four shapes (circle, square,
 * triangle, cross) drawn at a random position and size, with a random intensity, Gaussian pixel noise and a few
 * random speckles. Everything comes from one seeded RNG, so the same seed gives the same bytes on every machine.
 */

export const SHAPE_CLASSES = ['circle', 'square', 'triangle', 'cross'] as const;
export type ShapeClass = (typeof SHAPE_CLASSES)[number];

export interface ShapesDatasetArgs {
  /** Number of images. Required. */
  count: number;
  /** Image side in pixels. Default: 16. */
  size?: number;
  /** RNG seed. Default: 42. */
  seed?: number;
  /** Standard deviation of the Gaussian pixel noise (pixel values are in [0, 1] before noise). Default: 0.2. */
  noise?: number;
}

export interface ShapesDataset {
  /** `count * size * size` pixels, row-major, image after image. */
  images: Float32Array;
  /** Class index per image (into SHAPE_CLASSES). */
  labels: Int32Array;
  count: number;
  size: number;
}

/** mulberry32: a small, fast, seedable 32-bit PRNG. Returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A standard normal sample (Box-Muller) from a uniform RNG. */
function gaussian(rand: () => number): number {
  const u = 1 - rand();
  const v = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Whether pixel (x, y) (its center) is inside the shape of class `cls` centered at (cx, cy) with half-size r. */
function inside(cls: ShapeClass, x: number, y: number, cx: number, cy: number, r: number): boolean {
  const dx = x + 0.5 - cx;
  const dy = y + 0.5 - cy;
  switch (cls) {
    case 'circle':
      return dx * dx + dy * dy <= r * r;
    case 'square':
      return Math.abs(dx) <= r * 0.85 && Math.abs(dy) <= r * 0.85;
    case 'triangle': {
      // Apex up: the half-width grows linearly from 0 at the top (dy = -r) to r at the bottom (dy = r).
      if (dy < -r || dy > r) return false;
      return Math.abs(dx) <= (dy + r) / 2;
    }
    case 'cross': {
      const arm = Math.max(0.75, r * 0.3);
      return (Math.abs(dx) <= arm && Math.abs(dy) <= r) || (Math.abs(dy) <= arm && Math.abs(dx) <= r);
    }
  }
}

/** Generates the dataset; classes are balanced in expectation (drawn uniformly). */
export function generateShapes(args: ShapesDatasetArgs): ShapesDataset {
  const { count } = args;
  const size = args.size ?? 16;
  const noise = args.noise ?? 0.2;
  if (!Number.isSafeInteger(count) || count <= 0)
    throw new RangeError(`Expected count to be a positive integer, got ${count}`);
  if (!Number.isSafeInteger(size) || size < 8) throw new RangeError(`Expected size to be an integer >= 8, got ${size}`);
  const rand = mulberry32(args.seed ?? 42);
  const images = new Float32Array(count * size * size);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const cls = Math.floor(rand() * SHAPE_CLASSES.length);
    labels[i] = cls;
    const r = size * (0.17 + rand() * 0.16); // half-size: 2.7 .. 5.3 px on 16x16
    const cx = r + rand() * (size - 2 * r);
    const cy = r + rand() * (size - 2 * r);
    const intensity = 0.6 + rand() * 0.4;
    const base = i * size * size;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const on = inside(SHAPE_CLASSES[cls], x, y, cx, cy, r) ? intensity : 0;
        images[base + y * size + x] = on + noise * gaussian(rand);
      }
    }
    // Speckles: a few random bright pixels, so that no single pixel gives the class away.
    const speckles = Math.floor(rand() * 4);
    for (let s = 0; s < speckles; s++) {
      images[base + Math.floor(rand() * size * size)] = 0.6 + rand() * 0.4;
    }
  }
  return { images, labels, count, size };
}

/** Splits off the last `fraction` of the images (already in random order) as the validation set. */
export function splitDataset(
  data: ShapesDataset,
  fraction: number,
): { train: ShapesDataset; validation: ShapesDataset } {
  if (!(fraction > 0 && fraction < 1)) throw new RangeError(`Expected fraction in (0, 1), got ${fraction}`);
  const nVal = Math.max(1, Math.round(data.count * fraction));
  const nTrain = data.count - nVal;
  const px = data.size * data.size;
  const part = (from: number, n: number): ShapesDataset => ({
    images: data.images.slice(from * px, (from + n) * px),
    labels: data.labels.slice(from, from + n),
    count: n,
    size: data.size,
  });
  return { train: part(0, nTrain), validation: part(nTrain, nVal) };
}
