import { useEffect, useState } from "preact/hooks";

/** A value with subscribers: the session and the route are shared this way. */
export interface Signal<T> {
  get(): T;
  set(value: T): void;
  subscribe(fn: (value: T) => void): () => void;
}

export function signal<T>(initial: T): Signal<T> {
  let value = initial;
  const subscribers = new Set<(value: T) => void>();
  return {
    get: () => value,
    set(next) {
      if (Object.is(next, value)) return;
      value = next;
      for (const fn of subscribers) fn(value);
    },
    subscribe(fn) {
      subscribers.add(fn);
      return () => subscribers.delete(fn);
    },
  };
}

export function useSignal<T>(s: Signal<T>): T {
  const [value, setValue] = useState(s.get());
  useEffect(() => {
    setValue(s.get());
    return s.subscribe(setValue);
  }, [s]);
  return value;
}

/** The client-side route: the path of the page shown. */
export const route = signal(location.pathname);
addEventListener("popstate", () => route.set(location.pathname));

export function navigate(path: string): void {
  if (path === location.pathname) return;
  history.pushState(null, "", path);
  route.set(path);
}

/** An AbortSignal for an effect's lifetime: `useEffect(() => withAbort((signal) => ...), [])`. */
export function withAbort(run: (signal: AbortSignal) => void): () => void {
  const controller = new AbortController();
  run(controller.signal);
  return () => controller.abort();
}
