import { pino, type Logger } from "pino";

export type { Logger };

/** JSON logs on stdout; one line per event, ready for any log shipper. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: "agora", pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}
