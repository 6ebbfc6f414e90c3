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

/** A single waiter that can be woken early: the core of every stream loop with a heartbeat. */
export class Wakeup {
  private waiter: (() => void) | undefined;

  wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Resolves true when woken, false when `ms` passed first. */
  wait(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        resolve(false);
      }, ms);
      this.waiter = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });
  }
}
