import type { EntityManager } from "@mikro-orm/postgresql";
import { SCHEMA } from "./user.entity.js";
import { transaction } from "../../platform/db.js";

export interface ThrottleSettings {
  /** Attempts one client address may make per window (successful ones are given back). */
  maxAttemptsPerAddress: number;
  /** Failed attempts on one account before each further attempt waits. */
  freeFailuresPerAccount: number;
  /** The longest wait between two attempts on one account. */
  maxDelaySeconds: number;
  windowSeconds: number;
  /** How long an address an account signed in from stays a known client of that account. */
  knownClientSeconds: number;
}

const TABLE = `"${SCHEMA}".login_throttle`;

/**
 * The login throttle, in PostgreSQL so every instance shares it. Each attempt
 * is reserved by one statement that counts it and says whether it may go on,
 * before the password is checked: parallel guesses queue on the row's lock and
 * cannot all slip through between a read and a write.
 *
 * - Per client address ("addr:<ip>"): at most `maxAttemptsPerAddress` attempts
 *   per fixed window; a successful sign-in gives its attempt back.
 * - Per account ("user:<name>"): no lockout, but growing delays. After
 *   `freeFailuresPerAccount` failures, the next attempt may come 1 s later, then
 *   2 s, 4 s... up to `maxDelaySeconds`; the count starts over after a window
 *   without attempts, or a successful sign-in.
 * - Known clients ("known:<name>:<ip>"): an address the account signed in from
 *   recently skips the account's delay (not the address limit), so a stranger
 *   guessing elsewhere cannot keep the owner out.
 */
export class LoginThrottleRepository {
  constructor(
    private readonly em: EntityManager,
    private readonly settings: ThrottleSettings,
  ) {}

  /** Reserves an attempt for `address`: 0, or the milliseconds until its window ends. */
  async reserveAddress(address: string, now: Date): Promise<number> {
    const windowMs = this.settings.windowSeconds * 1000;
    const [row] = await this.em.fork().execute<{ failures: number; window_start: Date }[]>(
      `INSERT INTO ${TABLE} AS t (key, window_start, failures) VALUES (?, ?, 1)
       ON CONFLICT (key) DO UPDATE SET
         failures = CASE WHEN t.window_start <= ? THEN 1 ELSE t.failures + 1 END,
         window_start = CASE WHEN t.window_start <= ? THEN excluded.window_start ELSE t.window_start END
       RETURNING failures, window_start`,
      [`addr:${address}`, now, new Date(now.getTime() - windowMs), new Date(now.getTime() - windowMs)],
    );
    if (row!.failures <= this.settings.maxAttemptsPerAddress) return 0;
    return Math.max(1, new Date(row!.window_start).getTime() + windowMs - now.getTime());
  }

  /**
   * Reserves the account's next attempt, counted as a failure until `succeeded`:
   * 0, or the milliseconds until the account's delay is over.
   */
  async reserveAccount(username: string, now: Date): Promise<number> {
    const { freeFailuresPerAccount: free, maxDelaySeconds, windowSeconds } = this.settings;
    const quietSince = new Date(now.getTime() - windowSeconds * 1000);
    const failures = `CASE WHEN t.window_start <= ? THEN 1 ELSE t.failures + 1 END`;
    const delay = (n: string) => `make_interval(secs => CASE WHEN ${n} >= ? THEN LEAST(?, power(2, ${n} - ?)) ELSE 0 END)`;
    const em = this.em.fork();
    const key = `user:${username.toLowerCase()}`;
    // window_start is the last attempt here: the count starts over after a quiet window.
    const reserved = await em.execute<{ failures: number }[]>(
      `INSERT INTO ${TABLE} AS t (key, window_start, failures, next_at) VALUES (?, ?, 1, ?::timestamptz + ${delay("1")})
       ON CONFLICT (key) DO UPDATE SET
         failures = ${failures},
         window_start = excluded.window_start,
         next_at = excluded.window_start + ${delay(`(${failures})`)}
       WHERE t.next_at <= excluded.window_start
       RETURNING failures`,
      [key, now, now, free, maxDelaySeconds, free, quietSince, quietSince, free, maxDelaySeconds, quietSince, free],
    );
    if (reserved.length > 0) return 0;
    const [row] = await em.execute<{ next_at: Date }[]>(`SELECT next_at FROM ${TABLE} WHERE key = ?`, [key]);
    return Math.max(1, new Date(row?.next_at ?? now).getTime() - now.getTime());
  }

  /** Whether the account signed in successfully from `address` recently. */
  async isKnownClient(username: string, address: string, now: Date): Promise<boolean> {
    const rows = await this.em
      .fork()
      .execute(`SELECT 1 FROM ${TABLE} WHERE key = ? AND window_start > ?`, [
        knownKey(username, address),
        new Date(now.getTime() - this.settings.knownClientSeconds * 1000),
      ]);
    return rows.length > 0;
  }

  /** A successful sign-in: the account starts over, the address gets its attempt back and becomes known. */
  async succeeded(username: string, address: string, now: Date): Promise<void> {
    await transaction(this.em, async (em) => {
      await em.execute(`DELETE FROM ${TABLE} WHERE key = ?`, [`user:${username.toLowerCase()}`]);
      if (!address) return;
      await em.execute(`UPDATE ${TABLE} SET failures = GREATEST(failures - 1, 0) WHERE key = ?`, [`addr:${address}`]);
      await em.execute(
        `INSERT INTO ${TABLE} (key, window_start, failures) VALUES (?, ?, 0) ON CONFLICT (key) DO UPDATE SET window_start = excluded.window_start`,
        [knownKey(username, address), now],
      );
    });
  }
}

const knownKey = (username: string, address: string) => `known:${username.toLowerCase()}:${address}`;
