import type { EntityManager } from "@mikro-orm/postgresql";

export interface ThrottleLimit {
  key: string;
  maxFailures: number;
}

/**
 * Counts failed logins per key ("user:<name>", "addr:<ip>") in fixed windows,
 * in PostgreSQL so every instance shares the same counts.
 */
export class LoginThrottleRepository {
  constructor(
    private readonly em: EntityManager,
    private readonly windowSeconds: number,
  ) {}

  /** Milliseconds until the caller may try again, or 0 when no limit is reached. */
  async retryAfterMs(limits: ThrottleLimit[], now: Date): Promise<number> {
    const rows = await this.em.fork().execute<{ key: string; window_start: Date; failures: number }[]>(
      `SELECT key, window_start, failures FROM "identity".login_throttle WHERE key IN (${limits.map(() => "?").join(", ")})`,
      limits.map((l) => l.key),
    );
    let wait = 0;
    for (const row of rows) {
      const limit = limits.find((l) => l.key === row.key)!;
      const windowEnd = new Date(row.window_start).getTime() + this.windowSeconds * 1000;
      if (row.failures >= limit.maxFailures && windowEnd > now.getTime()) wait = Math.max(wait, windowEnd - now.getTime());
    }
    return wait;
  }

  async recordFailure(keys: string[], now: Date): Promise<void> {
    const windowStartBefore = new Date(now.getTime() - this.windowSeconds * 1000);
    const em = this.em.fork();
    for (const key of keys) {
      await em.execute(
        `INSERT INTO "identity".login_throttle AS t (key, window_start, failures) VALUES (?, ?, 1)
         ON CONFLICT (key) DO UPDATE SET
           failures = CASE WHEN t.window_start <= ? THEN 1 ELSE t.failures + 1 END,
           window_start = CASE WHEN t.window_start <= ? THEN excluded.window_start ELSE t.window_start END`,
        [key, now, windowStartBefore, windowStartBefore],
      );
    }
  }

  async reset(key: string): Promise<void> {
    await this.em.fork().execute(`DELETE FROM "identity".login_throttle WHERE key = ?`, [key]);
  }
}
