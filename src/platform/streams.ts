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
