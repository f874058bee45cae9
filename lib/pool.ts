/** Bounded concurrency for the library's fan-outs (a shard set's shards, an S3 upload's parts, a load's ranged GETs). */

/**
 * Runs `fn` over `items`, at most `limit` at a time, started in order. After a failure launches nothing more, waits
 * for the running ones, and rejects with the first failure. Resolves with the results in the items' order.
 */
export async function pool<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i], i);
      } catch (e) {
        failure ??= { error: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.error;
  return results;
}
