import { randomBytes } from "node:crypto";
import { hash } from "@node-rs/argon2";
import { IdentityService } from "../../../gen/agora/identity/v1/identity_pb.js";
import { closeServiceDatabase, openServiceDatabase, ping } from "../../platform/db.js";
import type { ServiceModule } from "../../platform/service-module.js";
import { identityHandlers } from "./identity.service.js";
import { LoginThrottleRepository } from "./login-throttle.repository.js";
import { Migration20261121100000 } from "./migrations/Migration20261121100000.js";
import { Migration20261125140000 } from "./migrations/Migration20261125140000.js";
import { SessionRepository } from "./session.repository.js";
import { loadSigningKey } from "./signing-keys.js";
import { AccessTokenIssuer } from "./tokens.js";
import { RefreshTokenSchema, SCHEMA, UserSchema } from "./user.entity.js";
import { UserRepository } from "./user.repository.js";

export const identityModule: ServiceModule = {
  name: "identity",
  services: [IdentityService],
  adminMethods: ["ListUsers", "SetUserRole", "DisableUser"].map((m) => `${IdentityService.typeName}/${m}`),
  publicMethods: ["Register", "Login", "Refresh"].map((m) => `${IdentityService.typeName}/${m}`),
  async start({ config, databaseUrl, log, clock, pageTokens }) {
    const key = await loadSigningKey(config.auth.privateKeyFile, config.dataDir);
    const orm = await openServiceDatabase({
      url: databaseUrl,
      schema: SCHEMA,
      entities: [UserSchema, RefreshTokenSchema],
      migrations: [Migration20261121100000, Migration20261125140000],
      poolSize: config.dbPoolSize,
      log,
    });
    const users = new UserRepository(orm.em);
    const { adminUsername, adminPassword } = config.auth;
    if (adminUsername && adminPassword) await ensureAdmin(users, adminUsername, adminPassword, clock.now(), log);
    const handlers = identityHandlers({
      pageTokens,
      users,
      sessions: new SessionRepository(orm.em),
      throttle: new LoginThrottleRepository(orm.em, {
        maxAttemptsPerAddress: config.auth.loginMaxFailuresPerAddress,
        freeFailuresPerAccount: config.auth.loginMaxFailuresPerUser,
        maxDelaySeconds: config.auth.loginMaxDelaySeconds,
        windowSeconds: config.auth.loginWindowSeconds,
        knownClientSeconds: config.auth.refreshTokenTtlSeconds,
      }),
      accessTokens: new AccessTokenIssuer(
        key,
        { issuer: config.auth.issuer, audience: config.auth.audience, ttlSeconds: config.auth.accessTokenTtlSeconds },
        clock,
      ),
      auth: config.auth,
      clock,
      dummyHash: await hash(randomBytes(16).toString("hex")),
    });
    return {
      jwks: key.jwks,
      register: (router) => router.service(IdentityService, handlers),
      ping: () => ping(orm),
      stop: () => closeServiceDatabase(orm),
    };
  },
};

/** The first administrator from ADMIN_USERNAME / ADMIN_PASSWORD: created if missing, made admin if not. */
async function ensureAdmin(
  users: UserRepository,
  username: string,
  password: string,
  now: Date,
  log: { info(o: object, m: string): void },
): Promise<void> {
  const existing = await users.findForLogin(username);
  if (existing) {
    if (existing.role !== "admin") await users.promote(existing.id);
    return;
  }
  await users
    .create({ username, displayName: username, email: `${username.toLowerCase()}@localhost`, passwordHash: await hash(password), role: "admin" }, now)
    .catch(async (err) => {
      // Another instance created it at the same moment.
      if (!(await users.findForLogin(username))) throw err;
    });
  log.info({ username }, "first administrator created");
}
