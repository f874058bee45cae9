/**
 * The multipart layout (lib/s3/part-layout.ts planParts), no server needed: S3's rules hold for every layout, parts
 * cover the object once in order, tensors of 10 MiB or more are sent as views (at most a 5 MiB top-up copied), and
 * gathered parts stay within partSize; over random state dicts and the edge cases (tensors around 5 MiB, a single
 * huge tensor, a header of partSize or more, more than 10000 parts).
 */
import { ErrorCode } from '../../lib';
import { PlannedPart, S3_PART_LIMITS, planParts } from '../../lib/s3/part-layout';
import { makeLayout } from '../../bench/layout';
import { rng } from '../helpers/backends';

const MIB = 1024 * 1024;
const MIN = S3_PART_LIMITS.minPart;

/** Bytes of each part in the object (part 1 with the header). */
const lengths = (parts: PlannedPart[], header: number) => parts.map((p, i) => p.end - p.begin + (i === 0 ? header : 0));

/** Per tensor: how many of its bytes are in gathered parts, and whether those are a prefix of it. */
function copiedBytes(parts: PlannedPart[], sizes: readonly number[]) {
  let at = 0;
  return sizes.map((size) => {
    const [b, e] = [at, at + size];
    at = e;
    let copied = 0;
    let prefixOnly = true;
    for (const p of parts) {
      if (p.kind !== 'copy' || p.end <= b || p.begin >= e) continue;
      copied += Math.min(e, p.end) - Math.max(b, p.begin);
      if (p.begin > b) prefixOnly = false;
    }
    return { size, copied, prefixOnly };
  });
}

/** The rules the layout promises that `parts` breaks (none: []). */
function brokenRules(parts: PlannedPart[], header: number, sizes: readonly number[], partSize: number): string[] {
  const broken: string[] = [];
  const fail = (rule: string, i: number) => broken.push(`part ${i + 1}: ${rule}`);
  const dataLength = sizes.reduce((a, b) => a + b, 0);
  const len = lengths(parts, header);
  // Cover [0, dataLength) exactly once, in order, no empty part.
  if (parts[0].begin !== 0) fail('part 1 does not start at the first data byte', 0);
  if (parts[parts.length - 1].end !== dataLength) fail('the last part does not end at the last byte', parts.length - 1);
  const starts = [0];
  for (const s of sizes) starts.push(starts[starts.length - 1] + s);
  let tensor = 0;
  parts.forEach((p, i) => {
    if (i > 0 && p.begin !== parts[i - 1].end) fail('does not start where the part before ends', i);
    if (len[i] <= 0) fail('is empty', i);
    // S3's rules.
    if (i < parts.length - 1 && len[i] < MIN) fail(`is ${len[i]} bytes, under 5 MiB, and not the last`, i);
    if (len[i] > S3_PART_LIMITS.maxPart) fail('is over 5 GiB', i);
    // Part 1 is gathered (the header first); a gathered part holds at most partSize (part 1: or the header alone).
    if (i === 0 && p.kind !== 'copy') fail('part 1 is not gathered', i);
    if (p.kind === 'copy' && len[i] > (i === 0 && header >= partSize ? header : partSize))
      fail('gathered > partSize', i);
    // A view lies within one tensor.
    while (tensor < sizes.length && starts[tensor + 1] <= p.begin) tensor++;
    if (p.kind === 'view' && p.end > starts[tensor + 1]) fail('a view spanning tensors', i);
  });
  if (parts.length > S3_PART_LIMITS.maxParts) broken.push(`${parts.length} parts, over 10000`);
  // A tensor of 10 MiB or more is copied at most 5 MiB, at its start (the top-up of the gathered part before it).
  copiedBytes(parts, sizes).forEach((c, t) => {
    if (c.size >= 2 * MIN && (c.copied > MIN || !c.prefixOnly)) broken.push(`tensor ${t}: ${c.copied} bytes copied`);
  });
  return broken;
}

/** planParts' layout, checked against every rule. */
function checkLayout(header: number, sizes: readonly number[], partSize: number): PlannedPart[] {
  const parts = planParts(header, sizes, partSize);
  expect(brokenRules(parts, header, sizes, partSize)).toEqual([]);
  return parts;
}

describe('multipart layout (no server needed)', () => {
  test('random state dicts: parts cover the object once in order, every part but the last >= 5 MiB and <= 5 GiB, gathered parts <= partSize, tensors >= 10 MiB copied at most a 5 MiB top-up at their start', () => {
    const r = rng(12);
    for (let trial = 0; trial < 300; trial++) {
      const partSize = [5 * MIB, 8 * MIB, 16 * MIB, 64 * MIB][trial % 4];
      const count = 1 + Math.floor(r() * 60);
      const sizes = Array.from({ length: count }, () => {
        const kind = r();
        if (kind < 0.1) return 0; // empty tensors
        if (kind < 0.6) return Math.floor(r() * 64 * 1024); // biases, norms
        if (kind < 0.8) return Math.floor(r() * 12 * MIB); // around the 5 MiB minimum
        return Math.floor(r() * 200 * MIB);
      });
      const header = 8 + Math.floor(r() * 100_000);
      if (header + sizes.reduce((a, b) => a + b, 0) <= partSize + header) continue; // a single PUT, no layout
      checkLayout(header, sizes, partSize);
    }
  });

  test('tensors just under, at and just over 5 MiB after small ones: each case keeps the rules, and one >= 10 MiB is a view after a top-up', () => {
    for (const size of [MIN - 1, MIN, MIN + 1, 2 * MIN - 1, 2 * MIN, 2 * MIN + 1]) {
      for (const before of [0, 1000, MIN - 1, MIN, MIN + 1]) {
        const sizes = [before, size, 4096, size, 3 * MIB];
        checkLayout(100, sizes, 16 * MIB);
        checkLayout(100, sizes, 5 * MIB);
      }
    }
    // A run of 1 KiB, then 20 MiB: part 1 = header + the run + a top-up to 5 MiB, then the rest of it in one view.
    const parts = planParts(100, [1024, 20 * MIB], 16 * MIB);
    expect(parts).toEqual([
      { begin: 0, end: MIN - 100, kind: 'copy' },
      { begin: MIN - 100, end: 1024 + 20 * MIB, kind: 'view' },
    ]);
  });

  test('many small tensors then a big one: the small ones are gathered into parts of partSize, the big one goes in views of partSize (the remainder under 5 MiB joining the last)', () => {
    const sizes = [...new Array<number>(100).fill(256 * 1024), 100 * MIB + 3 * MIB];
    const parts = checkLayout(1000, sizes, 8 * MIB);
    const copies = parts.filter((p) => p.kind === 'copy');
    // 25 MiB of small tensors: header + 8 MiB, then 8 MiB, 8 MiB, and the last ~1 MiB topped up to 5 MiB from the big one.
    expect(copies.map((p) => p.end - p.begin)).toEqual([8 * MIB - 1000, 8 * MIB, 8 * MIB, MIN]);
    const views = parts.filter((p) => p.kind === 'view').map((p) => p.end - p.begin);
    expect(views.slice(0, -1).every((n) => n === 8 * MIB)).toBe(true);
    expect(views[views.length - 1]).toBeGreaterThanOrEqual(MIN);
    expect(views[views.length - 1]).toBeLessThan(8 * MIB + MIN);
  });

  test('a single huge tensor: part 1 is the header and a 5 MiB top-up, everything else views of it', () => {
    const parts = checkLayout(200, [3000 * MIB], 16 * MIB);
    expect(parts[0]).toEqual({ begin: 0, end: MIN - 200, kind: 'copy' });
    expect(parts.slice(1).every((p) => p.kind === 'view')).toBe(true);
    expect(parts.length).toBe(1 + Math.floor((3000 * MIB - (MIN - 200)) / (16 * MIB)));
  });

  test('a header of partSize or more is part 1 alone, and data follow in their own parts', () => {
    const parts = checkLayout(6 * MIB, [100, 200, 30 * MIB, 100], 5 * MIB);
    expect(parts[0]).toEqual({ begin: 0, end: 0, kind: 'copy' });
    // The two small tensors before the big one need a top-up from it; it is a view after that.
    expect(parts[1]).toEqual({ begin: 0, end: MIN, kind: 'copy' });
    expect(parts[2].kind).toBe('view');
  });

  test('the bench state dicts (256 MiB, 1 GiB at 16 MiB parts) keep the rules and copy under a third of their bytes', () => {
    for (const bytes of [256 * MIB, 1024 * MIB]) {
      const sizes = makeLayout(bytes).tensors.map((t) => t.size * 4);
      const parts = checkLayout(40_000, sizes, 16 * MIB);
      const copied = parts.filter((p) => p.kind === 'copy').reduce((n, p) => n + p.end - p.begin, 0);
      expect(copied).toBeLessThan(bytes / 3);
    }
  });

  test('an object needing more than 10000 parts has larger views; one whose gathered parts alone need more is ERR_CHECKPOINT_INVALID_ARGUMENT naming partSize', () => {
    // 200 GiB in 1 GiB tensors (numbers only: nothing is allocated): 12800 views of 16 MiB would be too many.
    const sizes = new Array<number>(200).fill(1024 * MIB);
    const parts = checkLayout(100, sizes, 16 * MIB);
    expect(parts.length).toBeLessThanOrEqual(10000);
    expect(Math.max(...lengths(parts, 100))).toBeGreaterThan(16 * MIB + MIN);
    // 10001 x 5 MiB of 1 MiB tensors at partSize 5 MiB: every part gathered, no view to grow.
    const small = new Array<number>(5 * 10001).fill(MIB);
    expect(() => planParts(100, small, 5 * MIB)).toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT, message: expect.stringContaining('partSize') }),
    );
  });
});

describe('the layout checker itself', () => {
  test('flags a layout that breaks the rules: a short middle part, a gap, a view across tensors, a big tensor copied whole', () => {
    const sizes = [MIB, 20 * MIB];
    const broken = brokenRules(
      [
        { begin: 0, end: MIB, kind: 'copy' }, // under 5 MiB, not the last
        { begin: MIB + 1, end: 2 * MIB, kind: 'view' }, // a gap of one byte
        { begin: 2 * MIB, end: 21 * MIB, kind: 'copy' }, // 19 MiB of the 20 MiB tensor copied, > partSize
      ],
      100,
      sizes,
      16 * MIB,
    );
    expect(broken).toEqual([
      expect.stringContaining('under 5 MiB'),
      expect.stringContaining('does not start where'),
      expect.stringContaining('under 5 MiB'),
      expect.stringContaining('gathered > partSize'),
      expect.stringContaining('tensor 1'),
    ]);
    expect(brokenRules([{ begin: 0, end: 21 * MIB, kind: 'view' }], 100, sizes, 64 * MIB)).toEqual([
      'part 1: part 1 is not gathered',
      'part 1: a view spanning tensors',
    ]);
  });
});
