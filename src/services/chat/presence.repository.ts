import { randomUUID } from "node:crypto";
import type { EntityManager } from "@mikro-orm/postgresql";
import { SCHEMA } from "./chat.repository.js";
import { preparedQuery, sqlTransaction } from "../../platform/db.js";

export type PresenceName = "online" | "away" | "busy" | "offline";

export interface PresenceRow {
  user_id: string;
  username: string;
  presence: PresenceName;
}

const LIVE_SESSIONS = `SELECT 1 FROM "${SCHEMA}".sessions WHERE user_id = $1 AND last_seen > $2`;
const OPEN_SESSION = `INSERT INTO "${SCHEMA}".sessions (id, user_id, username, last_seen) VALUES ($1, $2, $3, $4)`;
/** Deletes session $1 and returns the user's ($2) other live sessions, in one round trip. */
const CLOSE_SESSION = `WITH gone AS (DELETE FROM "${SCHEMA}".sessions WHERE id = $1)
  SELECT 1 FROM "${SCHEMA}".sessions WHERE user_id = $2 AND last_seen > $3 AND id <> $1`;
const SEEN_USER = `INSERT INTO "${SCHEMA}".user_status (user_id, username, chosen, last_active) VALUES ($1, $2, NULL, $3)
  ON CONFLICT (user_id) DO UPDATE SET username = excluded.username, last_active = excluded.last_active`;

/**
 * Presence lives in PostgreSQL so every instance agrees: a row per open stream
 * (kept fresh by its instance's heartbeat) and the user's chosen status and
 * last activity. A user is OFFLINE without a fresh session, else BUSY/AWAY when
 * chosen, AWAY when idle, ONLINE otherwise.
 */
export class PresenceRepository {
  constructor(
    private readonly em: EntityManager,
    private readonly awayAfterMs: number,
    private readonly staleAfterMs: number,
  ) {}

  private get db() {
    return this.em.fork();
  }

  /** Opens a session; returns its id and whether the user was offline before. */
  async open(userId: string, username: string, now: Date): Promise<{ id: string; wasOffline: boolean }> {
    const id = randomUUID();
    // Thousands of streams may open at once (clients reconnecting after a deploy): prepared statements.
    return sqlTransaction(this.em, async (tx) => {
      const live = await preparedQuery(tx, "chat.live-sessions", LIVE_SESSIONS, [userId, this.staleBefore(now)]);
      await preparedQuery(tx, "chat.open-session", OPEN_SESSION, [id, userId, username, now]);
      await preparedQuery(tx, "chat.seen-user", SEEN_USER, [userId, username, now]);
      return { id, wasOffline: live.length === 0 };
    });
  }

  /** Closes a session; returns whether it was the user's last one. */
  async close(sessionId: string, userId: string, now: Date): Promise<boolean> {
    const live = await preparedQuery(this.em, "chat.close-session", CLOSE_SESSION, [sessionId, userId, this.staleBefore(now)]);
    return live.length === 0;
  }

  async heartbeat(sessionIds: string[], now: Date): Promise<void> {
    if (sessionIds.length === 0) return;
    await this.db.execute(`UPDATE "${SCHEMA}".sessions SET last_seen = ? WHERE id = ANY(?::uuid[])`, [now, `{${sessionIds.join(",")}}`]);
  }

  async active(userId: string, now: Date): Promise<void> {
    await this.db.execute(`UPDATE "${SCHEMA}".user_status SET last_active = ? WHERE user_id = ?`, [now, userId]);
  }

  async choose(userId: string, username: string, chosen: "away" | "busy" | null, now: Date): Promise<void> {
    await this.db.execute(
      `INSERT INTO "${SCHEMA}".user_status (user_id, username, chosen, last_active) VALUES (?, ?, ?, ?)
       ON CONFLICT (user_id) DO UPDATE SET chosen = excluded.chosen, last_active = excluded.last_active`,
      [userId, username, chosen, now],
    );
  }

  /** Sessions of crashed instances: removed; returns the users left with none. */
  async reap(now: Date): Promise<{ user_id: string; username: string }[]> {
    return this.db.execute(
      `WITH gone AS (DELETE FROM "${SCHEMA}".sessions WHERE last_seen <= ? RETURNING user_id, username)
       SELECT DISTINCT g.user_id, g.username FROM gone g
        WHERE NOT EXISTS (SELECT 1 FROM "${SCHEMA}".sessions s WHERE s.user_id = g.user_id)`,
      [this.staleBefore(now)],
    );
  }

  /** Presence of these users (OFFLINE for users never seen). */
  async of(userIds: string[], now: Date): Promise<Map<string, PresenceName>> {
    const result = new Map<string, PresenceName>(userIds.map((id) => [id, "offline"]));
    if (userIds.length === 0) return result;
    for (const row of await this.query(`AND s.user_id = ANY(?::uuid[])`, [`{${userIds.join(",")}}`], now, 10_000)) {
      result.set(row.user_id, row.presence);
    }
    return result;
  }

  async online(now: Date, limit: number): Promise<PresenceRow[]> {
    return this.query("", [], now, limit);
  }

  private staleBefore(now: Date): Date {
    return new Date(now.getTime() - this.staleAfterMs);
  }

  private async query(filter: string, params: unknown[], now: Date, limit: number): Promise<PresenceRow[]> {
    return this.db.execute<PresenceRow[]>(
      `SELECT s.user_id, max(s.username) AS username,
              CASE WHEN max(u.chosen) IS NOT NULL THEN max(u.chosen)
                   WHEN max(u.last_active) < ? THEN 'away' ELSE 'online' END AS presence
         FROM "${SCHEMA}".sessions s LEFT JOIN "${SCHEMA}".user_status u ON u.user_id = s.user_id
        WHERE s.last_seen > ? ${filter}
        GROUP BY s.user_id ORDER BY max(s.username) LIMIT ?`,
      [new Date(now.getTime() - this.awayAfterMs), this.staleBefore(now), ...params, limit],
    );
  }
}
