import { EntitySchema } from "@mikro-orm/core";
import type { RoleName } from "../../platform/auth.js";

/** The service's PostgreSQL schema: its migrations create it; openServiceDatabase, the event log and every SQL statement name it from here. */
export const SCHEMA = "identity";

export class UserEntity {
  id!: string;
  username!: string;
  displayName!: string;
  email!: string;
  passwordHash!: string;
  role!: RoleName;
  disabled!: boolean;
  version!: number;
  createdAt!: Date;
  updatedAt!: Date;
}

export const UserSchema = new EntitySchema<UserEntity>({
  class: UserEntity,
  tableName: "users",
  properties: {
    id: { type: "uuid", primary: true },
    username: { type: "text" },
    displayName: { type: "text", fieldName: "display_name" },
    email: { type: "text" },
    passwordHash: { type: "text", fieldName: "password_hash", lazy: true },
    role: { type: "text" },
    disabled: { type: "boolean" },
    version: { type: "integer", version: true },
    createdAt: { type: "Date", fieldName: "created_at" },
    updatedAt: { type: "Date", fieldName: "updated_at", onUpdate: () => new Date() },
  },
});

/** One refresh token. Tokens rotated from one login form a family (`familyId`). */
export class RefreshTokenEntity {
  id!: string;
  userId!: string;
  familyId!: string;
  /** SHA-256 of the token: the token itself is never stored. */
  tokenHash!: string;
  createdAt!: Date;
  expiresAt!: Date;
  usedAt?: Date | null;
  revokedAt?: Date | null;
}

export const RefreshTokenSchema = new EntitySchema<RefreshTokenEntity>({
  class: RefreshTokenEntity,
  tableName: "refresh_tokens",
  properties: {
    id: { type: "uuid", primary: true },
    userId: { type: "uuid", fieldName: "user_id" },
    familyId: { type: "uuid", fieldName: "family_id" },
    tokenHash: { type: "text", fieldName: "token_hash" },
    createdAt: { type: "Date", fieldName: "created_at" },
    expiresAt: { type: "Date", fieldName: "expires_at" },
    usedAt: { type: "Date", fieldName: "used_at", nullable: true },
    revokedAt: { type: "Date", fieldName: "revoked_at", nullable: true },
  },
});
