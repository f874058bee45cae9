/**
 * Builds and mounts test/native/power_loss_fs.cc (the FUSE filesystem that records a program's operations for the
 * power-loss test). Needs Linux, root (or a user allowed to mount FUSE), /dev/fuse, a C++ compiler and libfuse3's
 * development files; `powerLossFsUnavailable()` says which is missing and how to get it.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const SOURCE = path.join(__dirname, '..', 'native', 'power_loss_fs.cc');
const HOW =
  'as root on Linux with /dev/fuse: apt-get install -y libfuse3-dev fuse3 pkg-config (what .ci/run does), ' +
  'then npm run test:power-loss';

/** Why the filesystem cannot run here (one line, with how to enable it), or undefined when it can. */
export function powerLossFsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `power-loss: needs Linux FUSE, this is ${process.platform}`;
  if (process.getuid?.() !== 0) return `power-loss: needs root to mount FUSE; run ${HOW}`;
  if (!fs.existsSync('/dev/fuse'))
    return `power-loss: /dev/fuse is missing (modprobe fuse, or a container with --device /dev/fuse); ${HOW}`;
  const pc = spawnSync('pkg-config', ['--exists', 'fuse3']);
  if (pc.error || pc.status !== 0) return `power-loss: libfuse3 development files are missing; ${HOW}`;
  if (spawnSync('c++', ['--version']).error) return `power-loss: no C++ compiler (c++); ${HOW}`;
  return undefined;
}

/** Compiles the filesystem (warnings as errors) once per source version; returns the binary's path. */
export function buildPowerLossFs(): string {
  const source = fs.readFileSync(SOURCE);
  const hash = createHash('sha1').update(source).digest('hex').slice(0, 12);
  const bin = path.join(os.tmpdir(), `tfjs-ckpt-power-loss-fs-${hash}`);
  if (fs.existsSync(bin)) return bin;
  const flags = execFileSync('pkg-config', ['fuse3', '--cflags', '--libs'], { encoding: 'utf8' }).trim().split(/\s+/);
  const tmp = `${bin}.${process.pid}.tmp`;
  execFileSync('c++', ['-std=c++17', '-O1', '-Wall', '-Wextra', '-Werror', '-o', tmp, SOURCE, ...flags], {
    stdio: 'pipe',
  });
  fs.renameSync(tmp, bin);
  return bin;
}

export interface PowerLossMount {
  /** Where the program under test writes. */
  mountpoint: string;
  /** The op log the filesystem appends to. */
  opLog: string;
  unmount(): Promise<void>;
}

function mounted(mountpoint: string): boolean {
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === mountpoint);
}

/** Mounts a fresh, empty power_loss_fs under `root` (single-threaded: one operation at a time, in order). */
export async function mountPowerLossFs(bin: string, root: string): Promise<PowerLossMount> {
  const backing = path.join(root, 'backing');
  const mountpoint = path.join(root, 'mnt');
  const opLog = path.join(root, 'ops.log');
  fs.mkdirSync(backing, { recursive: true });
  fs.mkdirSync(mountpoint, { recursive: true });
  const daemon: ChildProcess = spawn(bin, [backing, opLog, mountpoint, '-f', '-s'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  daemon.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  daemon.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => daemon.on('exit', () => resolve()));
  for (let i = 0; !mounted(mountpoint); i++) {
    if (daemon.exitCode !== null || i > 1000) {
      daemon.kill();
      throw new Error(`power_loss_fs did not mount at ${mountpoint}: ${output}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return {
    mountpoint,
    opLog,
    async unmount() {
      execFileSync('umount', [mountpoint]);
      await exited;
    },
  };
}
