import { createHash, randomBytes, randomUUID } from "node:crypto";
import type { EntityManager } from "@mikro-orm/postgresql";
import { preparedQuery } from "../../platform/db.js";
import type { RoleName } from "../../platform/auth.js";
import type { TokenSubject } from "./tokens.js";
import { RefreshTokenSchema, SCHEMA } from "./user.entity.js";

export interface IssuedRefreshToken {
  token: string;
  expiresAt: Date;
}

export type RotateResult =
  | { ok: true; user: TokenSubject; familyId: string; refresh: IssuedRefreshToken }
  | { ok: false; reason: "inactive"; familyId: string }
  | { ok: false; reason: "unknown" | "expired" | "reused" };

/**
 * At time $1, token $2 (its hash) marked used if it still may be, and in its place token $3 (hash $4, expiring at
 * $5) of the same family, when its user is active: one row (the user, the family, `active`) when the token was
 * usable, none otherwise.
 */
const ROTATE = `WITH used AS (
      UPDATE "${SCHEMA}".refresh_tokens SET used_at = $1
       WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1
      RETURNING user_id, family_id),
    holder AS (SELECT u.id, u.username, u.role FROM "${SCHEMA}".users u JOIN used ON u.id = used.user_id WHERE NOT u.disabled),
    issued AS (
      INSERT INTO "${SCHEMA}".refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at)
      SELECT $3, holder.id, used.family_id, $4, $1, $5 FROM used, holder)
  SELECT used.user_id, used.family_id, holder.username, holder.role, holder.id IS NOT NULL AS active
    FROM used LEFT JOIN holder ON true`;

const hash = (token: string) => createHash("sha256").update(token).digest("base64url");

/** 256 random bits, valid for `ttlSeconds` from `now`. */
const newToken = (now: Date, ttlSeconds: number): IssuedRefreshToken => ({
  token: randomBytes(32).toString("base64url"),
  expiresAt: new Date(now.getTime() + ttlSeconds * 1000),
});

/**
 * Owns refresh tokens. A token is 256 random bits shown to the client once and
 * stored only as its SHA-256 (a fast hash is enough for a secret that long).
 */
export class SessionRepository {
  constructor(private readonly em: EntityManager) {}

  /** A new token starting a family of its own (a login). */
  async issue(userId: string, now: Date, ttlSeconds: number): Promise<IssuedRefreshToken> {
    const issued = newToken(now, ttlSeconds);
    await this.em.fork().insert(RefreshTokenSchema, {
      id: randomUUID(),
      userId,
      familyId: randomUUID(),
      tokenHash: hash(issued.token),
      createdAt: now,
      expiresAt: issued.expiresAt,
      usedAt: null,
      revokedAt: null,
    });
    return issued;
  }

  /**
   * Exchanges a refresh token for a new one of its family, once, in one statement: the old token is marked used
   * and the new one stored together, or neither is (a failure leaves the old token valid for a retry, instead of
   * spent and then taken for a leak). Only for an active user: a disabled or deleted one gets no new token, and
   * the caller revokes the family. A token presented again after it was used (or after its family was revoked)
   * means it leaked: the whole family is revoked.
   */
  async rotate(token: string, now: Date, ttlSeconds: number): Promise<RotateResult> {
    const next = newToken(now, ttlSeconds);
    const [row] = await preparedQuery<{ user_id: string; family_id: string; username: string | null; role: RoleName | null; active: boolean }>(
      this.em,
      "identity.rotate-refresh-token",
      ROTATE,
      [now, hash(token), randomUUID(), hash(next.token), next.expiresAt],
    );
    if (row) {
      if (!row.active) return { ok: false, reason: "inactive", familyId: row.family_id };
      return { ok: true, user: { id: row.user_id, username: row.username!, role: row.role! }, familyId: row.family_id, refresh: next };
    }
    const stored = await this.em.fork().findOne(RefreshTokenSchema, { tokenHash: hash(token) });
    if (!stored) return { ok: false, reason: "unknown" };
    if (stored.usedAt || stored.revokedAt) {
      await this.revokeFamily(stored.familyId, now);
      return { ok: false, reason: "reused" };
    }
    return { ok: false, reason: "expired" };
  }

  async revokeFamily(familyId: string, now: Date): Promise<void> {
    await this.em.fork().nativeUpdate(RefreshTokenSchema, { familyId, revokedAt: null }, { revokedAt: now });
  }

  /** Revokes the family of `token` if it belongs to `userId`; returns whether it did. */
  async revokeByToken(token: string, userId: string, now: Date): Promise<boolean> {
    const stored = await this.em.fork().findOne(RefreshTokenSchema, { tokenHash: hash(token), userId });
    if (!stored) return false;
    await this.revokeFamily(stored.familyId, now);
    return true;
  }

  async revokeAll(userId: string, now: Date): Promise<void> {
    await this.em.fork().nativeUpdate(RefreshTokenSchema, { userId, revokedAt: null }, { revokedAt: now });
  }
}
