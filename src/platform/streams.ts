/**
 * Wraps an async iterable so that `map` sees whatever error it throws and `done`
 * runs once when it ends, however it ends (finished, failed, or abandoned with
 * return() or throw()); `value` maps each value on the way.
 *
 * A plain iterator rather than an async generator: every streamed message passes
 * through several of these (the interceptors, the adapter), and one `then` per
 * message costs far less than a generator's resumption and the awaits of `yield*`.
 */
export function watchIterable<T, U = T>(
  source: AsyncIterable<T>,
  hooks: { value?: (value: T) => U; mapError?: (err: unknown) => unknown; done?: (err: unknown) => void },
): AsyncIterableIterator<U> {
  return new WatchedIterator(source[Symbol.asyncIterator](), hooks);
}

class WatchedIterator<T, U> implements AsyncIterableIterator<U> {
  private ended = false;

  constructor(
    private readonly source: AsyncIterator<T>,
    private readonly hooks: { value?: (value: T) => U; mapError?: (err: unknown) => unknown; done?: (err: unknown) => void },
  ) {}

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<U>> {
    return this.settle(this.source.next());
  }

  return(value?: unknown): Promise<IteratorResult<U>> {
    return this.settle(this.source.return ? this.source.return(value) : Promise.resolve({ done: true, value: undefined }));
  }

  throw(err?: unknown): Promise<IteratorResult<U>> {
    return this.settle(this.source.throw ? this.source.throw(err) : Promise.reject(err));
  }

  private settle(result: Promise<IteratorResult<T>>): Promise<IteratorResult<U>> {
    return result.then(
      (r) => {
        if (r.done) {
          this.finish(undefined);
          return { done: true, value: undefined };
        }
        return this.hooks.value ? { done: false, value: this.hooks.value(r.value) } : (r as unknown as IteratorResult<U>);
      },
      (err: unknown) => {
        const failure = this.hooks.mapError ? this.hooks.mapError(err) : err;
        this.finish(failure);
        throw failure;
      },
    );
  }

  private finish(failure: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.hooks.done?.(failure);
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
