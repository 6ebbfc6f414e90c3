import { createHash, randomBytes, randomUUID } from "node:crypto";
import type { EntityManager } from "@mikro-orm/postgresql";
import { RefreshTokenSchema, SCHEMA } from "./user.entity.js";

export interface IssuedRefreshToken {
  token: string;
  expiresAt: Date;
}

export type RotateResult =
  | { ok: true; userId: string; familyId: string }
  | { ok: false; reason: "unknown" | "expired" | "reused" };

const hash = (token: string) => createHash("sha256").update(token).digest("base64url");

/**
 * Owns refresh tokens. A token is 256 random bits shown to the client once and
 * stored only as its SHA-256 (a fast hash is enough for a secret that long).
 */
export class SessionRepository {
  constructor(private readonly em: EntityManager) {}

  async issue(userId: string, familyId: string | undefined, now: Date, ttlSeconds: number): Promise<IssuedRefreshToken> {
    const token = randomBytes(32).toString("base64url");
    const expiresAt = new Date(now.getTime() + ttlSeconds * 1000);
    const em = this.em.fork();
    await em.insert(RefreshTokenSchema, {
      id: randomUUID(),
      userId,
      familyId: familyId ?? randomUUID(),
      tokenHash: hash(token),
      createdAt: now,
      expiresAt,
      usedAt: null,
      revokedAt: null,
    });
    return { token, expiresAt };
  }

  /**
   * Marks a token used, once. A token presented again after it was used (or
   * after its family was revoked) means it leaked: the whole family is revoked.
   */
  async rotate(token: string, now: Date): Promise<RotateResult> {
    const em = this.em.fork();
    const used = await em.execute<{ user_id: string; family_id: string }[]>(
      `UPDATE "${SCHEMA}".refresh_tokens SET used_at = ?
        WHERE token_hash = ? AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?
        RETURNING user_id, family_id`,
      [now, hash(token), now],
    );
    if (used[0]) return { ok: true, userId: used[0].user_id, familyId: used[0].family_id };
    const stored = await em.findOne(RefreshTokenSchema, { tokenHash: hash(token) });
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
