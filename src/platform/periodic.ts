import type { Logger } from "pino";

export interface Periodic {
  /**
   * Runs the work now, unless a run is in progress: then once more after it, however many times this is
   * called meanwhile.
   */
  now(): void;
  /** Stops the timer and waits for a run in progress to finish. */
  stop(): Promise<void>;
}

/**
 * Runs `work` every `intervalMs`, never two runs at once; a failed run is
 * logged and the next one tries again. The timer does not keep the process alive.
 */
export function every(intervalMs: number, log: Logger, what: string, work: () => Promise<void>): Periodic {
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  const run = () => {
    running = (async () => {
      do {
        again = false;
        await work().catch((err) => log.warn({ err }, `${what} failed; will retry`));
      } while (again && !stopped);
    })().finally(() => (running = undefined));
  };
  const timer = setInterval(() => {
    if (!running) run();
  }, intervalMs);
  timer.unref();
  return {
    now() {
      if (stopped) return;
      if (running) again = true;
      else run();
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
