/**
 * Wraps an async iterable so that `map` sees whatever error it throws and `done`
 * runs once when it ends, however it ends (finished, failed, or abandoned).
 */
export async function* watchIterable<T>(
  source: AsyncIterable<T>,
  hooks: { mapError?: (err: unknown) => unknown; done?: (err: unknown) => void },
): AsyncGenerator<T> {
  let failure: unknown;
  try {
    yield* source;
  } catch (err) {
    failure = hooks.mapError ? hooks.mapError(err) : err;
    throw failure;
  } finally {
    hooks.done?.(failure);
  }
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
