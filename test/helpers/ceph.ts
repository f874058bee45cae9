/**
 * A real S3 server for the object-storage suites: a single-node Ceph RADOS Gateway started by
 * scripts/ceph-gateway.sh on a free 127.0.0.1 port in a temp dir, stopped (its daemons only) after the suite.
 * Where Ceph is not installed the suite is skipped with one line saying how to install it; under CI=true it fails.
 */
import { execFile, execFileSync } from 'node:child_process';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const SCRIPT = path.join(__dirname, '..', '..', 'scripts', 'ceph-gateway.sh');
export const INSTALL_HINT =
  'object-storage suite: Ceph is not installed; run `apt-get install -y radosgw ceph-mon ceph-osd` (about 72 s) to enable it';

export function cephInstalled(): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v radosgw && command -v ceph-mon && command -v ceph-osd'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** describe() when Ceph is installed; else a one-line note and a skip, or under CI=true a failing test. */
export function describeWithGateway(name: string, body: () => void): void {
  if (cephInstalled()) {
    describe(name, body);
  } else if (process.env.CI === 'true') {
    describe(name, () => {
      test('needs a Ceph RADOS Gateway (CI=true: the object-storage suite must run)', () => {
        throw new Error(INSTALL_HINT);
      });
    });
  } else {
    console.warn(INSTALL_HINT);
    describe.skip(name, body);
  }
}

async function freePortPair(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const free = await Promise.all([port, port + 1].map(isFree));
    if (free.every(Boolean)) return port;
  }
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

export interface Gateway {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Restarts the gateway daemon only (scripts/ceph-gateway.sh restart): the cluster and its data stay. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** The environment a child process needs to reach `gw` through the AWS SDK's usual variables (and no Node warnings). */
export function gatewayEnv(gw: Gateway): NodeJS.ProcessEnv {
  return {
    ...process.env,
    NODE_NO_WARNINGS: '1',
    AWS_ENDPOINT_URL: gw.endpoint,
    AWS_ACCESS_KEY_ID: gw.accessKeyId,
    AWS_SECRET_ACCESS_KEY: gw.secretAccessKey,
    AWS_REGION: 'us-east-1',
  };
}

/** Starts a gateway (about 15 s) and returns its endpoint and keys; tries a second port if the first start fails. */
export async function startGateway(): Promise<Gateway> {
  try {
    return await startOnce();
  } catch (e) {
    console.warn(`the Ceph gateway did not start, trying another port: ${(e as Error).message.split('\n')[1]}`);
    return startOnce();
  }
}

async function startOnce(): Promise<Gateway> {
  const port = await freePortPair();
  const env = {
    ...process.env,
    CEPH_GATEWAY_PORT: String(port),
    CEPH_GATEWAY_DIR: path.join(os.tmpdir(), `tfjs-checkpoint-test-ceph-${process.pid}-${port}`),
  };
  const run = promisify(execFile);
  const stop = async () => {
    await run(SCRIPT, ['stop'], { env, timeout: 60_000 });
  };
  let out: string;
  try {
    ({ stdout: out } = await run(SCRIPT, ['start'], { env, timeout: 120_000 }));
  } catch (e) {
    await stop().catch(() => undefined);
    throw e;
  }
  const vars = Object.fromEntries(
    out
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  return {
    endpoint: vars.AWS_ENDPOINT_URL,
    accessKeyId: vars.AWS_ACCESS_KEY_ID,
    secretAccessKey: vars.AWS_SECRET_ACCESS_KEY,
    restart: async () => {
      await run(SCRIPT, ['restart'], { env, timeout: 120_000 });
    },
    stop,
  };
}

/**
 * In a describeWithGateway body: starts a gateway before the suite (configureS3 points at it, `bucket` is created)
 * and stops it after. Returns a getter for the running gateway.
 */
export function useGateway(bucket: string): () => Gateway {
  let gw: Gateway | undefined;
  beforeAll(async () => {
    const { configureS3 } = await import('../../lib');
    const { s3Client } = await import('../../lib/s3/client');
    const SDK = await import('@aws-sdk/client-s3');
    gw = await startGateway();
    configureS3({
      endpoint: gw.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: gw.accessKeyId, secretAccessKey: gw.secretAccessKey },
    });
    await s3Client().send(new SDK.CreateBucketCommand({ Bucket: bucket }));
  }, 180_000);
  afterAll(async () => {
    const { s3Client } = await import('../../lib/s3/client');
    s3Client().destroy();
    await gw?.stop();
  }, 60_000);
  return () => {
    if (!gw) throw new Error('the gateway is not running');
    return gw;
  };
}

/** A maker of s3:// URLs in `bucket` that no earlier call (nor another process's run) gave: name, process id, count. */
export function freshUrls(bucket: string): (name: string) => string {
  let n = 0;
  return (name) => `s3://${bucket}/${name}-${process.pid}-${n++}`;
}
