import type { Logger } from "pino";

export interface Periodic {
  /** Stops the timer and waits for a run in progress to finish. */
  stop(): Promise<void>;
}

/**
 * Runs `work` every `intervalMs`, never two runs at once; a failed run is
 * logged and the next one tries again. The timer does not keep the process alive.
 */
export function every(intervalMs: number, log: Logger, what: string, work: () => Promise<void>): Periodic {
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (running) return;
    running = work()
      .catch((err) => log.warn({ err }, `${what} failed; will retry`))
      .finally(() => (running = undefined));
  }, intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
