/**
 * Temp file names (lib/fs/tempfiles.ts): their random part is drawn from a pool of random bytes refilled every 64
 * names, so the names must stay distinct, well-formed and registered as in flight across refills.
 */
import * as path from 'node:path';
import { TEMP_PATTERN, acquireTempPath, isStaleTemp, releaseTempPath } from '../../lib/fs/tempfiles';

test('acquireTempPath: 1,000 names in a row (several pool refills) are distinct, match TEMP_PATTERN, and are in flight until released', () => {
  const dir = path.resolve('/tmp/tfjs-ckpt-names');
  const names = Array.from({ length: 1000 }, () => acquireTempPath(dir));
  expect(new Set(names).size).toBe(names.length);
  const randomParts = new Set<string>();
  for (const p of names) {
    expect(path.dirname(p)).toBe(dir);
    const base = path.basename(p);
    expect(base).toMatch(TEMP_PATTERN);
    randomParts.add(base.slice(-16, -4));
    expect(isStaleTemp(dir, base)).toBe(false); // ours and in flight
  }
  expect(randomParts.size).toBe(names.length); // the 12 random hex digits alone differ
  for (const p of names) {
    releaseTempPath(p);
    expect(isStaleTemp(dir, path.basename(p))).toBe(true); // released: a leftover the next cleanup removes
  }
});
