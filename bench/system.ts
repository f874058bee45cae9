/** The machine the benchmark runs on, page-cache control, and the external reference program dd. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';

export interface MachineInfo {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  /** Filesystem and device of the benchmark directory (from findmnt). */
  filesystem: string;
  crc32cHardware?: boolean;
  /** Whether `echo 3 > /proc/sys/vm/drop_caches` works (root on Linux). */
  dropCaches: boolean;
  /** Which Python peers run (bench/peers.ts), in one line. */
  peers: string;
}

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : '';
}

/** `sync`, then drop the page cache. Returns false when the drop is not permitted. */
export function dropCaches(): boolean {
  spawnSync('sync');
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

/** Flushes dirty pages to disk (so that one run's writeback does not land in the next run's time). */
export function syncAll(): void {
  spawnSync('sync');
}

export function machineInfo(dir: string, dropCachesWorks: boolean, peers: string): MachineInfo {
  const cpu = os.cpus()[0]?.model ?? 'unknown';
  const fsInfo = run('findmnt', ['-n', '-o', 'SOURCE,FSTYPE,OPTIONS', '-T', dir]);
  return {
    cpu,
    cores: os.cpus().length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    filesystem: fsInfo || 'unknown',
    dropCaches: dropCachesWorks,
    peers,
  };
}

export interface ExternalRun {
  ms: number;
  /** Peak RSS of the program, KiB, when /usr/bin/time is available. */
  maxRssKiB?: number;
  error?: string;
}

const GNU_TIME = '/usr/bin/time';

/** Runs a program and times it (wall clock, including its start-up of a few milliseconds). */
export function timeProgram(cmd: string, args: string[]): ExternalRun {
  const useTime = fs.existsSync(GNU_TIME);
  const argv = useTime ? ['-f', '__maxrss=%M', cmd, ...args] : args;
  const t0 = process.hrtime.bigint();
  const r = spawnSync(useTime ? GNU_TIME : cmd, argv, { encoding: 'utf8', maxBuffer: 16 << 20 });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.error) return { ms, error: r.error.message };
  if (r.status !== 0) return { ms, error: `${cmd} exited with ${r.status}: ${r.stderr.trim().slice(-300)}` };
  const m = /__maxrss=(\d+)/.exec(r.stderr);
  return { ms, ...(m ? { maxRssKiB: Number(m[1]) } : {}) };
}

/**
 * dd writing `bytes` bytes of zeros to `file` in 8 MiB blocks: into the page cache (`none`), then fsync'd
 * (`fsync`: conv=fsync), or with O_DIRECT and a final fsync (`direct`: oflag=direct conv=fsync, the device's
 * sequential write bandwidth, the physical limit of a durable save; filesystems without O_DIRECT, such as tmpfs,
 * make it fail).
 */
export function ddWrite(file: string, bytes: number, mode: 'none' | 'fsync' | 'direct'): ExternalRun {
  return timeProgram('dd', [
    'if=/dev/zero',
    `of=${file}`,
    'bs=8M',
    `count=${bytes}`,
    'iflag=count_bytes',
    ...(mode === 'direct' ? ['oflag=direct'] : []),
    ...(mode === 'none' ? [] : ['conv=fsync']),
    'status=none',
  ]);
}

/** dd reading `file` into /dev/null in 8 MiB blocks. */
export function ddRead(file: string): ExternalRun {
  return timeProgram('dd', [`if=${file}`, 'of=/dev/null', 'bs=8M', 'status=none']);
}
