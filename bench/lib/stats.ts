/** Small statistics helpers: medians of runs and a log-bucketed latency histogram. */

export function median(values: number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** The run whose `key` is the median (for odd counts; the lower middle otherwise), so its numbers stay consistent. */
export function medianRun<T>(runs: T[], key: (r: T) => number): T {
  const sorted = [...runs].sort((a, b) => key(a) - key(b));
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

/** Median of each numeric field across runs. */
export function medianOf<T extends Record<string, number>>(runs: T[]): T {
  const out: Record<string, number> = {};
  for (const k of Object.keys(runs[0] ?? {})) out[k] = median(runs.map((r) => r[k]!));
  return out as T;
}

export const round = (x: number, digits = 2) => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};

/**
 * Latencies in milliseconds, kept as counts in buckets 1% wide (from 1 µs up),
 * so millions of samples cost a few kilobytes and percentiles are within 1%.
 */
export class LatencyHistogram {
  private static readonly GROWTH = Math.log(1.01);
  private readonly buckets = new Map<number, number>();
  count = 0;
  private sum = 0;
  private maxMs = 0;

  record(ms: number): void {
    const us = Math.max(1, ms * 1000);
    const b = Math.floor(Math.log(us) / LatencyHistogram.GROWTH);
    this.buckets.set(b, (this.buckets.get(b) ?? 0) + 1);
    this.count++;
    this.sum += ms;
    if (ms > this.maxMs) this.maxMs = ms;
  }

  merge(other: LatencyHistogram): void {
    for (const [b, n] of other.buckets) this.buckets.set(b, (this.buckets.get(b) ?? 0) + n);
    this.count += other.count;
    this.sum += other.sum;
    this.maxMs = Math.max(this.maxMs, other.maxMs);
  }

  /** The latency (ms) at or below which `p` percent of the samples fall (NaN when empty). */
  percentile(p: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (const b of [...this.buckets.keys()].sort((x, y) => x - y)) {
      seen += this.buckets.get(b)!;
      // The bucket's upper edge, in ms.
      if (seen >= rank) return Math.min(Math.exp((b + 1) * LatencyHistogram.GROWTH) / 1000, this.maxMs);
    }
    return this.maxMs;
  }

  get mean(): number {
    return this.count ? this.sum / this.count : Number.NaN;
  }

  get max(): number {
    return this.maxMs;
  }
}
