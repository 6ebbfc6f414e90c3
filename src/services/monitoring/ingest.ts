import type { Clock } from "../../platform/clock.js";
import type { IncomingSample, MetricsRepository } from "./metrics.repository.js";

export interface IngestResult {
  accepted: number;
  duplicates: number;
}

interface Pending {
  samples: IncomingSample[];
  resolve(result: IngestResult): void;
  reject(err: unknown): void;
}

/** Most samples one transaction writes; a larger backlog is written in several. */
const MAX_BATCH_SAMPLES = 20_000;

/**
 * Group commit for reports: while one write is in flight, reports arriving from
 * other agents queue up and go to the database together in the next one. A
 * lone report is written at once; under load, one transaction carries many.
 * Each report is answered once the transaction holding all of it commits.
 */
export class Ingestor {
  private queue: Pending[] = [];
  private writing = false;

  constructor(
    private readonly metrics: MetricsRepository,
    private readonly clock: Clock,
  ) {}

  submit(samples: IncomingSample[]): Promise<IngestResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ samples, resolve, reject });
      if (!this.writing) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.writing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.take();
        try {
          // The first report carrying a sample gets the credit for storing it.
          const notStored = await this.metrics.store(
            batch.flatMap((p) => p.samples),
            this.clock.now(),
          );
          let offset = 0;
          for (const p of batch) {
            let duplicates = 0;
            for (let i = 0; notStored.size > 0 && i < p.samples.length; i++) if (notStored.has(offset + i)) duplicates++;
            offset += p.samples.length;
            p.resolve({ accepted: p.samples.length - duplicates, duplicates });
          }
        } catch (err) {
          for (const p of batch) p.reject(err);
        }
      }
    } finally {
      this.writing = false;
    }
  }

  /** Whole reports from the head of the queue, up to MAX_BATCH_SAMPLES (at least one report). */
  private take(): Pending[] {
    let total = 0;
    let n = 0;
    while (n < this.queue.length && (n === 0 || total + this.queue[n]!.samples.length <= MAX_BATCH_SAMPLES)) {
      total += this.queue[n]!.samples.length;
      n++;
    }
    return this.queue.splice(0, n);
  }
}
