/**
 * The multipart layout (lib/s3/part-layout.ts planParts), no server needed: S3's rules hold for every object, parts
 * cover it once in order, part 1 holds the whole header, every part is partSize bytes but part 1 (max(partSize,
 * header)) and the last (what remains); partSize grows only when it would need more than 10000 parts.
 */
import { ErrorCode } from '../../lib';
import { PlannedPart, S3_PART_LIMITS, planParts } from '../../lib/s3/part-layout';
import { rng } from '../helpers/backends';

const MIB = 1024 * 1024;
const MIN = S3_PART_LIMITS.minPart;

/** Bytes of each part in the object (part 1 with the header). */
const lengths = (parts: PlannedPart[], header: number) => parts.map((p, i) => p.end - p.begin + (i === 0 ? header : 0));

/** The rules the layout promises that `parts` breaks (none: []), with `size` the part size it used. */
function brokenRules(parts: PlannedPart[], header: number, dataLength: number, size: number): string[] {
  const broken: string[] = [];
  const fail = (rule: string, i: number) => broken.push(`part ${i + 1}: ${rule}`);
  const len = lengths(parts, header);
  if (parts[0].begin !== 0) fail('part 1 does not start at the first data byte', 0);
  if (parts[parts.length - 1].end !== dataLength) fail('the last part does not end at the last byte', parts.length - 1);
  parts.forEach((p, i) => {
    if (i > 0 && p.begin !== parts[i - 1].end) fail('does not start where the part before ends', i);
    if (i > 0 && p.end <= p.begin) fail('is empty', i);
    // S3's rules.
    if (i < parts.length - 1 && len[i] < MIN) fail(`is ${len[i]} bytes, under 5 MiB, and not the last`, i);
    if (len[i] > S3_PART_LIMITS.maxPart) fail('is over 5 GiB', i);
    // The cut: part 1 max(size, header) bytes (or the whole object), then size each, the last what remains.
    const full = i === 0 ? Math.max(size, header) : size;
    if (i < parts.length - 1 && len[i] !== full) fail(`is ${len[i]} bytes, not ${full}`, i);
    if (i === parts.length - 1 && len[i] > full) fail(`is ${len[i]} bytes, over ${full}`, i);
  });
  if (parts.length > S3_PART_LIMITS.maxParts) broken.push(`${parts.length} parts, over 10000`);
  return broken;
}

/** planParts' layout, checked against every rule at `size` (partSize unless it must grow). */
function checkLayout(header: number, dataLength: number, partSize: number, size = partSize): PlannedPart[] {
  const parts = planParts(header, dataLength, partSize);
  expect(brokenRules(parts, header, dataLength, size)).toEqual([]);
  return parts;
}

describe('multipart layout (no server needed)', () => {
  test('random objects: parts cover the object once in order, part 1 holds the header, every part partSize bytes but part 1 (max(partSize, header)) and the last, S3 limits kept', () => {
    const r = rng(12);
    for (let trial = 0; trial < 300; trial++) {
      const partSize = [5 * MIB, 8 * MIB, 16 * MIB, 64 * MIB][trial % 4];
      const header = 8 + Math.floor(r() * (trial % 5 === 0 ? 20 * MIB : 100_000));
      const dataLength = Math.floor(r() * 2000 * MIB);
      if (header + dataLength <= partSize + header) continue; // a single PUT, no layout
      checkLayout(header, dataLength, partSize);
    }
  });

  test('exact multiples, one byte over and a header of exactly partSize: no empty part, the last part one byte when one byte is left', () => {
    expect(lengths(checkLayout(100, 3 * 16 * MIB - 100, 16 * MIB), 100)).toEqual([16 * MIB, 16 * MIB, 16 * MIB]);
    expect(lengths(checkLayout(100, 3 * 16 * MIB - 99, 16 * MIB), 100)).toEqual([16 * MIB, 16 * MIB, 16 * MIB, 1]);
    // A header of partSize or more is part 1 with no data; data follow in parts of partSize.
    expect(checkLayout(5 * MIB, 12 * MIB, 5 * MIB)).toEqual([
      { begin: 0, end: 0 },
      { begin: 0, end: 5 * MIB },
      { begin: 5 * MIB, end: 10 * MIB },
      { begin: 10 * MIB, end: 12 * MIB },
    ]);
    expect(lengths(checkLayout(6 * MIB, 11 * MIB, 5 * MIB), 6 * MIB)).toEqual([6 * MIB, 5 * MIB, 5 * MIB, MIB]);
  });

  test('an object needing more than 10000 parts of partSize gets the least larger size that fits; one that cannot fit 10000 parts of 5 GiB is ERR_CHECKPOINT_INVALID_ARGUMENT', () => {
    // 200 GiB (numbers only: nothing is allocated): 12800 parts of 16 MiB would be too many.
    const data = 200 * 1024 * MIB;
    const size = Math.ceil((data + 100) / 10000);
    const parts = checkLayout(100, data, 16 * MIB, size);
    expect(parts.length).toBe(10000);
    // One byte less per part would not fit.
    expect(Math.ceil((data + 100) / (size - 1))).toBeGreaterThan(10000);
    // A header larger than the grown size: the rest in 9999 parts.
    const big = checkLayout(600 * MIB, 100 * 1024 * MIB, 5 * MIB, Math.ceil((100 * 1024 * MIB) / 9999));
    expect(big.length).toBeLessThanOrEqual(10000);
    expect(() => planParts(100, 10001 * 5 * 1024 * MIB, 16 * MIB)).toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT, message: expect.stringContaining('10000 parts') }),
    );
  });
});

describe('the layout checker itself', () => {
  test('flags a layout that breaks the rules: a short middle part, a gap, a part 1 not of partSize, an overlong last part', () => {
    const broken = brokenRules(
      [
        { begin: 0, end: MIB }, // part 1: 1 MiB + header, under 5 MiB, not partSize
        { begin: MIB + 1, end: 17 * MIB + 1 }, // a gap of one byte
        { begin: 17 * MIB + 1, end: 40 * MIB }, // last: over partSize
      ],
      100,
      40 * MIB,
      16 * MIB,
    );
    expect(broken).toEqual([
      expect.stringContaining('under 5 MiB'),
      expect.stringContaining(`not ${16 * MIB}`),
      expect.stringContaining('does not start where'),
      expect.stringContaining('over'),
    ]);
  });
});
