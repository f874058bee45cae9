/**
 * Observing node's fsyncs in-process: spies on fsp.open (remembering each handle's path and flags) and on
 * FileHandle.sync, for the suites that check which files and directories a write fsyncs (durability/durable-dirs,
 * cli/layers-export). Installed for the whole test file (beforeAll/afterAll of the caller's scope).
 */
import { promises as fsp } from 'node:fs';

/** Called before each real fsync with the handle's path and open flags; throw to make that fsync fail. */
export type OnSync = (p: string, flags: unknown) => void;

export function spyOnFsyncs(onSync: OnSync): void {
  const restore: (() => void)[] = [];
  beforeAll(async () => {
    const probe = await fsp.open(__filename, 'r');
    const proto = Object.getPrototypeOf(probe) as { sync(): Promise<void> };
    await probe.close();
    const opened = new WeakMap<object, { path: string; flags: unknown }>();
    const realOpen = fsp.open.bind(fsp);
    const realSync = proto.sync;
    const open = jest.spyOn(fsp, 'open').mockImplementation(async (...args: Parameters<typeof fsp.open>) => {
      const handle = await realOpen(...args);
      opened.set(handle, { path: String(args[0]), flags: args[1] });
      return handle;
    });
    const sync = jest.spyOn(proto, 'sync').mockImplementation(async function (this: object) {
      const h = opened.get(this);
      if (h !== undefined) onSync(h.path, h.flags);
      return realSync.call(this);
    });
    restore.push(
      () => open.mockRestore(),
      () => sync.mockRestore(),
    );
  });
  afterAll(() => restore.splice(0).forEach((r) => r()));
}
