/**
 * Resident memory of the current process from /proc/self/status, and a reset of its peak (VmHWM) through
 * /proc/self/clear_refs (Linux >= 4.0), so that a benchmark child measures the peak of one operation only.
 */
import * as fs from 'node:fs';

export interface MemoryStatus {
  /** Current resident set, KiB. */
  rssKiB: number;
  /** Peak resident set since start or the last reset, KiB. */
  hwmKiB: number;
}

export function memoryStatus(): MemoryStatus {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status);
    if (!m) throw new Error(`/proc/self/status has no ${name}`);
    return Number(m[1]);
  };
  return { rssKiB: field('VmRSS'), hwmKiB: field('VmHWM') };
}

/** Resets VmHWM to the current RSS. Returns false where the kernel does not allow it. */
export function resetPeak(): boolean {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}
