import { randomUUID } from "node:crypto";
import type { EntityManager } from "@mikro-orm/postgresql";
import type { RoleName } from "../../platform/auth.js";
import { alreadyExists, failedPrecondition, notFound } from "../../platform/errors.js";
import { RefreshTokenSchema, SCHEMA, UserSchema, type UserEntity } from "./user.entity.js";
import { insertEntity, isUniqueViolation, lockForTransaction, transaction, updateEntity } from "../../platform/db.js";

export interface NewUser {
  username: string;
  displayName: string;
  email: string;
  passwordHash: string;
  role: RoleName;
}

/** Owns every query on users. */
export class UserRepository {
  constructor(private readonly em: EntityManager) {}

  async create(user: NewUser, now: Date): Promise<UserEntity> {
    try {
      return await insertEntity(this.em.fork(), UserSchema, { ...user, id: randomUUID(), disabled: false, version: 1, createdAt: now, updatedAt: now });
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw alreadyExists("user", `the username "${user.username}" is taken`, { field: "username" });
      }
      throw err;
    }
  }

  /** The user with this username (any case) and its password hash, or undefined. */
  async findForLogin(username: string): Promise<UserEntity | undefined> {
    const em = this.em.fork();
    const [row] = await em.execute(`SELECT * FROM "${SCHEMA}".users WHERE lower(username) = ?`, [username.toLowerCase()]);
    return row ? em.map(UserSchema, row) : undefined;
  }

  async get(id: string): Promise<UserEntity> {
    const user = await this.em.fork().findOne(UserSchema, { id });
    if (!user) throw notFound("user", id);
    return user;
  }

  /** Users ordered by lower-cased username, after `afterKey` (a lower-cased username). */
  async list(afterKey: string | undefined, limit: number): Promise<UserEntity[]> {
    const em = this.em.fork();
    const rows = await em.execute(
      `SELECT * FROM "${SCHEMA}".users WHERE lower(username) > ? ORDER BY lower(username) LIMIT ?`,
      [afterKey ?? "", limit],
    );
    return rows.map((r) => em.map(UserSchema, r));
  }

  /** Makes an account an admin (used for the first administrator); creates nothing. */
  async promote(id: string): Promise<void> {
    await this.em.fork().nativeUpdate(UserSchema, { id }, { role: "admin" });
  }

  async setRole(id: string, role: RoleName): Promise<UserEntity> {
    return this.changeKeepingAnAdmin(id, (user) => {
      user.role = role;
    });
  }

  /** Disables the user and revokes every refresh token they hold. */
  async disable(id: string, now: Date): Promise<UserEntity> {
    return this.changeKeepingAnAdmin(id, (user) => {
      user.disabled = true;
    }, async (em) => {
      await em.nativeUpdate(RefreshTokenSchema, { userId: id, revokedAt: null }, { revokedAt: now });
    });
  }

  /**
   * Applies a change that may remove an active admin, refusing it when none
   * would be left. Admin changes are serialised by an advisory lock so two
   * admins demoting each other at once cannot both succeed.
   */
  private async changeKeepingAnAdmin(
    id: string,
    change: (user: UserEntity) => void,
    also?: (em: EntityManager) => Promise<void>,
  ): Promise<UserEntity> {
    return transaction(this.em, async (em) => {
      await lockForTransaction(em, "agora.identity.admins");
      const user = await em.findOne(UserSchema, { id });
      if (!user) throw notFound("user", id);
      await updateEntity(em, user, change);
      const admins = await em.count(UserSchema, { role: "admin", disabled: false });
      if (admins === 0) {
        throw failedPrecondition("LAST_ADMIN", "this would leave no active admin", {
          type: "ADMIN",
          subject: `users/${id}`,
          description: "at least one active admin must remain",
        });
      }
      await also?.(em);
      return user;
    });
  }
}
