import { pino, type Logger } from "pino";

export type { Logger };

/** Bytes of log lines that may wait for stdout; beyond that, lines are dropped (and counted), never the process blocked. */
const MAX_PENDING_BYTES = 16 * 1024 * 1024;
/** Lines are written in batches of this many bytes, or after FLUSH_MS at the latest. */
const BATCH_BYTES = 8 * 1024;
const FLUSH_MS = 100;

/**
 * JSON logs on stdout; one line per event, ready for any log shipper.
 * Written asynchronously and in batches (a per-call access-log line must not
 * cost each call a write of its own: one write per 8 KiB or 100 ms), bounded,
 * and flushed when the process exits: after a drained shutdown, on
 * process.exit and on an uncaught exception.
 */
export function createLogger(level: string): Logger {
  // Lines wait as buffers, joined once per write. In its default (string) mode sonic-boom appends each line to the
  // pending string and measures that string's UTF-8 length, which flattens it: every line copied the whole batch
  // waiting so far (4 KiB a call on average under load, and the garbage to collect).
  const destination = pino.destination({
    dest: 1,
    sync: false,
    contentMode: "buffer",
    minLength: BATCH_BYTES,
    periodicFlush: FLUSH_MS,
    maxLength: MAX_PENDING_BYTES,
  });
  // sonic-boom's types know only string writes; in buffer mode it takes (and needs) buffers.
  const writeBuffer = destination.write.bind(destination) as unknown as (chunk: Buffer) => boolean;
  const lines = { write: (line: string) => writeBuffer(Buffer.from(line)) };
  let dropped = 0;
  destination.on("drop", () => void dropped++);
  process.once("exit", () => {
    if (dropped > 0) lines.write(`${JSON.stringify({ level: "warn", msg: "log lines dropped: stdout could not keep up", dropped })}\n`);
    try {
      destination.flushSync();
    } catch {
      // stdout already closed: nothing left to write to
    }
  });
  return pino(
    {
      level,
      base: { service: "agora", pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    lines,
  );
}
