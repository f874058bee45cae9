/**
 * The object-storage section (`--only s3`; part of the default run): saves and loads of the benchmark layouts
 * through s3:// against a local Ceph RADOS Gateway (scripts/ceph-gateway.sh: one monitor, one memstore OSD, radosgw
 * on 127.0.0.1), side by side with a plain `@aws-sdk/lib-storage` Upload of the same bytes from one Buffer and plain
 * GETs. A gateway the caller names with CEPH_GATEWAY_PORT / CEPH_GATEWAY_DIR that runs (`scripts/ceph-gateway.sh
 * env` answers) is used and left running;
 * otherwise the bench starts one on a free port in its work directory and stops it (its daemons only) at the end.
 * Without Ceph installed the section says in one line how to install it and its rows are left out.
 *
 * Repetition r runs every contender once, in an order rotated by r, each in a fresh child (s3-child.ts), after one
 * untimed warm-up save on the fresh gateway. After every save the object is deleted and the gateway's garbage
 * collection run to completion (`radosgw-admin gc process --include-all`, untimed), so no run pays for another's
 * deletion and memstore never fills up.
 */
import { execFile, spawnSync } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { findPackageRoot } from '../lib/backend/native-backend';
import { loadSdk, s3Client, s3Settings } from '../lib/s3/client';
import type { Job, OpResult, S3LoadContender, S3SaveContender } from './jobs';
import { MiB, fixed, markdownTable, median, mibps, sizeLabel, spread } from './stats';
import { UPLOAD_PART_SIZE, UPLOAD_QUEUE_SIZE } from './s3-child';

type RunChild = <T>(job: Job) => Promise<T>;

/** The library's default ranged reads (lib/s3/client.ts s3Settings, objects.ts loadSpans), which the plain ranged
 * row copies. */
const RANGES = `${s3Settings().concurrency} spans of at least ${s3Settings().rangeSize / MiB} MiB`;

export const S3_SAVES: { id: S3SaveContender; label: string }[] = [
  { id: 's3-native', label: 'tfjs-checkpoint saveTensors to s3:// (native backend)' },
  { id: 's3-js', label: 'tfjs-checkpoint saveTensors to s3:// (JS fallback)' },
  {
    id: 's3-upload',
    label: `plain @aws-sdk/lib-storage Upload of one pre-concatenated Buffer (${UPLOAD_PART_SIZE / MiB} MiB parts x${UPLOAD_QUEUE_SIZE})`,
  },
];
export const S3_LOADS: { id: S3LoadContender; label: string }[] = [
  { id: 's3-native-verify', label: 'tfjs-checkpoint loadTensors from s3:// (native, CRC verified)' },
  { id: 's3-js-verify', label: 'tfjs-checkpoint loadTensors from s3:// (JS fallback, CRC verified)' },
  { id: 's3-get', label: 'plain GetObject of the whole object into one buffer (no checks)' },
  {
    id: 's3-get-ranged',
    label: `plain parallel ranged GETs (${RANGES}, as ours) into one buffer per tensor (no checks)`,
  },
];

export interface S3Row {
  section: 'save' | 'load';
  bytes: number;
  id: string;
  label: string;
  ms: number[];
  peakExtraKiB: number[];
  errors: string[];
}

export interface S3Target {
  target: string;
  measured: string;
  status: 'met' | 'missed' | 'not measured';
  bound?: string;
}

export interface S3Summary {
  /** Which gateway ran, or why the section did not run (with the install line). */
  note: string;
  /** Load average (1, 5, 15 min) at the start and the end of the section. */
  loadavg: { start: number[]; end: number[] };
  rows: S3Row[];
  roundtrips: { bytes: number; backend: 'native' | 'js'; ok: boolean; detail: string }[];
}

export const S3_INSTALL =
  'object-storage section: Ceph is not installed; `apt-get install -y radosgw ceph-mon ceph-osd` (about 72 s) enables it';
const SCRIPT = path.join(findPackageRoot(__dirname) ?? process.cwd(), 'scripts', 'ceph-gateway.sh');
/** memstore holds every object in RAM, at most 4 GiB (scripts/ceph-gateway.sh): larger state dicts are left out. */
export const S3_MAX_BYTES = 1024 * MiB;
const BUCKET = 'tfjs-checkpoint-bench';

function cephInstalled(): boolean {
  return spawnSync('sh', ['-c', 'command -v radosgw && command -v ceph-mon && command -v ceph-osd']).status === 0;
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

async function freePortPair(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 20000);
    if ((await isFree(port)) && (await isFree(port + 1))) return port;
  }
}

const parseEnv = (out: string): Record<string, string> =>
  Object.fromEntries(
    out
      .split('\n')
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );

interface Gateway {
  vars: Record<string, string>;
  /** Set when this bench started the gateway (and so stops it). */
  stop?: () => Promise<void>;
}

/** The caller's running gateway, or one started here in `work`; undefined (and a log line) when none can run. */
async function gateway(work: string, log: (m: string) => void): Promise<Gateway | string> {
  const run = promisify(execFile);
  // A gateway the caller names (CEPH_GATEWAY_PORT or CEPH_GATEWAY_DIR, as for scripts/ceph-gateway.sh) is reused;
  // never one it did not name (another user's, on the default port).
  if (process.env.CEPH_GATEWAY_PORT || process.env.CEPH_GATEWAY_DIR) {
    const running = spawnSync(SCRIPT, ['env'], { encoding: 'utf8' });
    if (running.status === 0) return { vars: parseEnv(running.stdout) };
  }
  if (!cephInstalled()) return S3_INSTALL;
  const port = await freePortPair();
  const env = { ...process.env, CEPH_GATEWAY_PORT: String(port), CEPH_GATEWAY_DIR: path.join(work, 'ceph') };
  const stop = async (): Promise<void> => {
    await run(SCRIPT, ['stop'], { env, timeout: 60_000 });
  };
  log(`s3: starting a Ceph gateway on 127.0.0.1:${port} (about 15 s)`);
  try {
    const { stdout } = await run(SCRIPT, ['start'], { env, timeout: 180_000 });
    return { vars: parseEnv(stdout), stop };
  } catch (e) {
    await stop().catch(() => undefined);
    return `object-storage section: the Ceph gateway did not start: ${(e as Error).message.split('\n').slice(0, 3).join(' ')}`;
  }
}

/** Runs the gateway's garbage collection to completion, so that deleted objects leave memstore now. */
function collectGarbage(vars: Record<string, string>, log: (m: string) => void): void {
  const dir = vars.CEPH_GATEWAY_DIR;
  if (!dir) return;
  const conf = path.join(dir, 'ceph.conf');
  const r = spawnSync('radosgw-admin', ['-c', conf, '-n', 'client.rgw.a', 'gc', 'process', '--include-all'], {
    timeout: 120_000,
    encoding: 'utf8',
  });
  if (r.status !== 0) log(`s3: radosgw-admin gc process failed: ${(r.stderr ?? '').trim().slice(0, 200)}`);
}

function rotate<T>(xs: T[], by: number): T[] {
  const k = by % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

const loadavg = (): number[] => require('node:os').loadavg() as number[];

export async function benchS3(
  sizes: number[],
  reps: number,
  contenders: Set<string> | undefined,
  work: string,
  runChild: RunChild,
  log: (m: string) => void,
): Promise<S3Summary> {
  sizes = sizes.filter((b) => b <= S3_MAX_BYTES);
  const saves = S3_SAVES.filter((c) => !contenders || contenders.has(c.id));
  const loads = S3_LOADS.filter((c) => !contenders || contenders.has(c.id));
  const summary: S3Summary = { note: '', loadavg: { start: loadavg(), end: [] }, rows: [], roundtrips: [] };
  if (!saves.length && !loads.length) {
    summary.note = 'object-storage section: no s3 contender selected (--contenders)';
    return summary;
  }
  const gw = await gateway(work, log);
  if (typeof gw === 'string') {
    log(gw);
    summary.note = gw;
    return summary;
  }
  const endpoint = gw.vars.AWS_ENDPOINT_URL;
  summary.note =
    `Ceph RADOS Gateway (${spawnSync('radosgw', ['--version'], { encoding: 'utf8' }).stdout.trim().split(' ').slice(0, 3).join(' ')}` +
    `, memstore OSD) on ${endpoint}, ${gw.stop ? 'started by the bench' : 'already running (left running)'}`;
  log(`s3: ${summary.note}`);
  // The children inherit the gateway's address and keys through the SDK's usual variables.
  Object.assign(process.env, {
    AWS_ENDPOINT_URL: endpoint,
    AWS_ACCESS_KEY_ID: gw.vars.AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY: gw.vars.AWS_SECRET_ACCESS_KEY,
    AWS_REGION: gw.vars.AWS_REGION ?? 'us-east-1',
  });
  const sdk = loadSdk();
  const client = s3Client();
  const remove = async (key: string): Promise<void> => {
    await client.send(new sdk.DeleteObjectCommand({ Bucket: BUCKET, Key: key })).catch(() => undefined);
    collectGarbage(gw.vars, log);
  };
  try {
    await client.send(new sdk.CreateBucketCommand({ Bucket: BUCKET })).catch((e: { name?: string }) => {
      if (e?.name !== 'BucketAlreadyOwnedByYou' && e?.name !== 'BucketAlreadyExists') throw e;
    });
    if (saves.length) {
      // One untimed save first: the first multipart upload on a freshly started gateway is seconds slower (memstore
      // and radosgw warming up), and would land on whichever contender repetition 1 runs first.
      const key = `bench/warm-up-${sizes[0]}.safetensors`;
      await runChild({ op: 's3-save', contender: 's3-upload', bytes: sizes[0], url: `s3://${BUCKET}/${key}` }).catch(
        (e: Error) => log(`s3: the warm-up save failed: ${e.message.slice(0, 200)}`),
      );
      await remove(key);
    }
    for (const bytes of sizes) {
      const mine = saves.map((c): S3Row => ({ section: 'save', bytes, ...c, ms: [], peakExtraKiB: [], errors: [] }));
      summary.rows.push(...mine);
      for (let rep = 0; rep < reps; rep++) {
        for (const c of rotate(saves, rep)) {
          const row = mine.find((r) => r.id === c.id) as S3Row;
          const key = `bench/${c.id}-${bytes}-${rep}.safetensors`;
          const r = await runChild<OpResult>({ op: 's3-save', contender: c.id, bytes, url: `s3://${BUCKET}/${key}` })
            .then((x) => x as OpResult | { error: string })
            .catch((e: Error) => ({ error: e.message }));
          log(`s3 save ${sizeLabel(bytes)} ${c.id} rep ${rep + 1}: ${record(row, r)}`);
          await remove(key);
        }
      }
      if (!loads.length) continue;
      const key = `bench/load-${bytes}.safetensors`;
      const url = `s3://${BUCKET}/${key}`;
      await runChild({ op: 's3-create', bytes, url });
      for (const backend of ['native', 'js'] as const) {
        const r = await runChild<{ ok: boolean; detail: string }>({ op: 's3-roundtrip', backend, bytes, url }).catch(
          (e: Error) => ({ ok: false, detail: e.message }),
        );
        summary.roundtrips.push({ bytes, backend, ...r });
        log(`s3 round trip ${sizeLabel(bytes)} ${backend}: ${r.ok ? 'ok' : 'FAILED'} (${r.detail})`);
      }
      const rows = loads.map((c): S3Row => ({ section: 'load', bytes, ...c, ms: [], peakExtraKiB: [], errors: [] }));
      summary.rows.push(...rows);
      for (let rep = 0; rep < reps; rep++) {
        for (const c of rotate(loads, rep)) {
          const row = rows.find((x) => x.id === c.id) as S3Row;
          const r = await runChild<OpResult>({ op: 's3-load', contender: c.id, bytes, url })
            .then((x) => x as OpResult | { error: string })
            .catch((e: Error) => ({ error: e.message }));
          log(`s3 load ${sizeLabel(bytes)} ${c.id} rep ${rep + 1}: ${record(row, r)}`);
        }
      }
      await remove(key);
    }
  } finally {
    client.destroy();
    summary.loadavg.end = loadavg();
    if (gw.stop) await gw.stop().catch((e: Error) => log(`s3: stopping the gateway failed: ${e.message}`));
  }
  return summary;
}

function record(row: S3Row, r: OpResult | { error: string }): string {
  if ('error' in r) {
    row.errors.push(r.error);
    return `failed: ${r.error.slice(0, 200)}`;
  }
  row.ms.push(r.ms);
  if (r.peakExtraKiB !== undefined) row.peakExtraKiB.push(r.peakExtraKiB);
  return (
    `${(r.ms / 1000).toFixed(2)} s, ${mibps(row.bytes, r.ms).toFixed(0)} MiB/s` +
    (r.peakExtraKiB !== undefined ? `, peak +${(r.peakExtraKiB / 1024).toFixed(0)} MiB` : '')
  );
}

const rate = (r: S3Row | undefined): number => (r && r.ms.length ? mibps(r.bytes, median(r.ms)) : NaN);
const find = (s: S3Summary, section: S3Row['section'], bytes: number, id: string): S3Row | undefined =>
  s.rows.find((r) => r.section === section && r.bytes === bytes && r.id === id);

/** The memory target of a save: 64 MiB (concurrency x partSize at the defaults) + 5% of the state dict. */
export const saveMemoryLimitKiB = (bytes: number): number => (64 * MiB + 0.05 * bytes) / 1024;

const BOUND =
  'the gateway (radosgw, the OSD) runs on the same 2 cores as the client and competes with it for CPU; memstore ' +
  'keeps every byte in RAM, so no disk is involved';

const JS_SAVE_BOUND =
  "CPU: the JS fallback's CRC32C (slicing-by-16, about 1 GB/s: ~1 s of CPU per GiB the plain Upload does not " +
  'spend) runs on the JS thread beside the SHA-256 that signs every part, on 2 cores the gateway keeps busy';
const JS_LOAD_BOUND =
  'the JS thread: receiving the responses (HTTP parsing, the copies into the buffers) keeps it busy in the plain ' +
  "GETs already, and the JS fallback's CRC32C (slicing-by-16, about 1 GB/s) adds ~1 s per GiB there";
const RANGED_BOUND =
  'parallel ranged GETs: the same ranges without any check (the plain ranged row) are as slow as ours, so the gap is ' +
  'the gateway serving parallel ranged streams against one whole-object stream, on cores it shares with the client';

export function s3Targets(s: S3Summary, sizes: number[]): S3Target[] {
  const out: S3Target[] = [];
  const ratio = (target: string, ours?: S3Row, theirs?: S3Row, bound = BOUND, factor = 0.9): void => {
    if (!ours?.ms.length || !theirs?.ms.length) {
      if (ours || theirs) out.push({ target, measured: 'a row failed or did not run', status: 'not measured' });
      return;
    }
    const x = rate(ours) / rate(theirs);
    out.push({
      target,
      measured: `${x.toFixed(2)}x (${fixed(rate(ours))} vs ${fixed(rate(theirs))} MiB/s)`,
      status: x >= factor ? 'met' : 'missed',
      ...(x < factor ? { bound } : {}),
    });
  };
  for (const bytes of sizes) {
    const z = sizeLabel(bytes);
    const upload = find(s, 'save', bytes, 's3-upload');
    for (const id of ['s3-native', 's3-js']) {
      const ours = find(s, 'save', bytes, id);
      const backend = id === 's3-native' ? 'native' : 'JS';
      ratio(
        `${z}: s3 save (${backend}) >= 0.9x the plain lib-storage Upload`,
        ours,
        upload,
        id === 's3-js' ? JS_SAVE_BOUND : BOUND,
      );
      if (ours?.peakExtraKiB.length) {
        const peak = median(ours.peakExtraKiB);
        const limit = saveMemoryLimitKiB(bytes);
        out.push({
          target: `${z}: s3 save (${backend}) peak extra memory <= 64 MiB + 5% (${fixed(limit / 1024)} MiB)`,
          measured: `${fixed(peak / 1024)} MiB`,
          status: peak <= limit ? 'met' : 'missed',
        });
      }
    }
    const get = find(s, 'load', bytes, 's3-get');
    const ranged = find(s, 'load', bytes, 's3-get-ranged');
    for (const id of ['s3-native-verify', 's3-js-verify']) {
      const ours = find(s, 'load', bytes, id);
      const backend = id === 's3-native-verify' ? 'native' : 'JS';
      const js = id === 's3-js-verify';
      ratio(
        `${z}: s3 load with verification (${backend}) >= 0.9x the plain GetObject`,
        ours,
        get,
        js ? JS_LOAD_BOUND : RANGED_BOUND,
      );
      ratio(
        `${z}: s3 load with verification (${backend}) >= 0.9x the plain ranged GETs`,
        ours,
        ranged,
        js ? JS_LOAD_BOUND : BOUND,
      );
    }
  }
  return out;
}

export function s3Report(s: S3Summary): string {
  const parts = ['## Object storage (local Ceph gateway, memstore)'];
  const la = (xs: number[]): string => xs.map((x) => x.toFixed(2)).join(' / ');
  parts.push(
    `${s.note}. Load average (1/5/15 min) ${la(s.loadavg.start)} at the start of the section, ` +
      `${la(s.loadavg.end)} at its end, on ${require('node:os').availableParallelism()} cores shared by the client ` +
      'and the gateway. MiB/s of tensor data; each figure the median of the runs, contenders interleaved, each in a ' +
      "fresh child; peak extra memory as for the file rows (the child's peak RSS minus its RSS with the weights, " +
      'and for the plain Upload its concatenated Buffer, allocated; loads exclude the loaded bytes). Before the ' +
      'clock every child makes one HeadBucket (connection, credentials) and ours its once-per-bucket checksum probe. ',
  );
  if (!s.rows.length) return parts.join('\n\n') + '\n';
  const ref = (r: S3Row): S3Row | undefined =>
    find(s, r.section, r.bytes, r.section === 'save' ? 's3-upload' : 's3-get');
  parts.push(
    markdownTable(
      ['size', 'op', 'contender', 'MiB/s', 'x plain', 'time s (min–max)', 'peak extra MiB', 'runs'],
      s.rows.map((r) => {
        if (!r.ms.length)
          return [
            sizeLabel(r.bytes),
            r.section,
            r.label,
            `failed: ${r.errors[0] ?? '?'}`.slice(0, 160),
            '',
            '',
            '',
            '0',
          ];
        return [
          sizeLabel(r.bytes),
          r.section,
          r.label,
          fixed(rate(r)),
          fixed(rate(r) / rate(ref(r)), 2),
          spread(
            r.ms.map((x) => x / 1000),
            2,
          ),
          r.peakExtraKiB.length ? fixed(median(r.peakExtraKiB) / 1024) : '—',
          `${r.ms.length}${r.errors.length ? ` (${r.errors.length} failed)` : ''}`,
        ];
      }),
    ),
  );
  parts.push(
    '"x plain": saves against the plain Upload, loads against the plain whole-object GetObject. Round trips ' +
      '(the load object saved natively, loaded with verification, every byte compared):\n' +
      s.roundtrips
        .map((r) => `- ${sizeLabel(r.bytes)}, ${r.backend} load: ${r.ok ? 'ok' : 'FAILED'} (${r.detail})`)
        .join('\n'),
  );
  return parts.join('\n\n') + '\n';
}
