import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { hash, verify } from "@node-rs/argon2";
import { IdentityService, TokensSchema, type Tokens } from "../../../gen/agora/identity/v1/identity_pb.js";
import type { AuthConfig } from "../../config.js";
import { callerOf, peerAddressKey } from "../../platform/auth.js";
import type { Clock } from "../../platform/clock.js";
import { invalidArgument, resourceExhausted, unauthenticated } from "../../platform/errors.js";
import { fingerprint, isStringPosition, pageSize, type PageTokens } from "../../platform/paging.js";
import { roleFromProto, toUser, toUserProfile } from "./identity.mapper.js";
import type { LoginThrottleRepository } from "./login-throttle.repository.js";
import type { IssuedRefreshToken, SessionRepository } from "./session.repository.js";
import type { AccessTokenIssuer, TokenSubject } from "./tokens.js";
import type { UserRepository } from "./user.repository.js";

const BAD_CREDENTIALS = "invalid username or password";

export interface IdentityDeps {
  pageTokens: PageTokens;
  users: UserRepository;
  sessions: SessionRepository;
  throttle: LoginThrottleRepository;
  accessTokens: AccessTokenIssuer;
  auth: AuthConfig;
  clock: Clock;
  /** A real argon2id hash of a random secret: verified against when the user does not exist, so timing tells nothing. */
  dummyHash: string;
}

export function identityHandlers(d: IdentityDeps): ServiceImpl<typeof IdentityService> {
  const pages = d.pageTokens;
  async function tokensFor(user: TokenSubject): Promise<Tokens> {
    const access = await d.accessTokens.issue(user);
    return tokensOf(access, await d.sessions.issue(user.id, d.clock.now(), d.auth.refreshTokenTtlSeconds));
  }
  function tokensOf(access: { token: string; expiresAt: Date }, refresh: IssuedRefreshToken): Tokens {
    return create(TokensSchema, {
      accessToken: access.token,
      accessTokenExpireTime: timestampFromDate(access.expiresAt),
      refreshToken: refresh.token,
      refreshTokenExpireTime: timestampFromDate(refresh.expiresAt),
      tokenType: "Bearer",
    });
  }

  return {
    async register(req) {
      if (req.password.toLowerCase() === req.username.toLowerCase()) {
        throw invalidArgument([{ field: "password", description: "password must not be the username", reason: "PASSWORD_POLICY" }]);
      }
      const user = await d.users.create(
        { username: req.username, displayName: req.displayName, email: req.email, passwordHash: await hash(req.password), role: "user" },
        d.clock.now(),
      );
      return { user: toUser(user) };
    },

    async login(req, ctx) {
      // Each attempt is reserved before the password is checked (see LoginThrottleRepository):
      // the address's budget first, so a blocked stranger does not even slow the account down.
      const now = d.clock.now();
      const address = ctx.values.get(peerAddressKey);
      const addressWait = address ? await d.throttle.reserveAddress(address, now) : 0;
      if (addressWait > 0) throw resourceExhausted("LOGIN_THROTTLED", "too many sign-in attempts from this address: try again later", addressWait);
      const accountWait = await d.throttle.reserveAccount(req.username, now);
      if (accountWait > 0 && !(address && (await d.throttle.isKnownClient(req.username, address, now)))) {
        throw resourceExhausted("LOGIN_THROTTLED", "too many failed sign-in attempts on this account: wait and try again", accountWait);
      }

      const user = await d.users.findForLogin(req.username);
      const passwordOk = await verify(user?.passwordHash ?? d.dummyHash, req.password).catch(() => false);
      if (!user || !passwordOk || user.disabled) throw unauthenticated("BAD_CREDENTIALS", BAD_CREDENTIALS);
      await d.throttle.succeeded(req.username, address, now);
      return { user: toUser(user), tokens: await tokensFor({ id: user.id, username: user.username, role: user.role }) };
    },

    async refresh(req) {
      const rotated = await d.sessions.rotate(req.refreshToken, d.clock.now(), d.auth.refreshTokenTtlSeconds);
      if (!rotated.ok) {
        if (rotated.reason === "inactive") await d.sessions.revokeFamily(rotated.familyId, d.clock.now());
        throw invalidRefreshToken();
      }
      return { tokens: tokensOf(await d.accessTokens.issue(rotated.user), rotated.refresh) };
    },

    async logout(req, ctx) {
      const caller = callerOf(ctx);
      if (req.allSessions) {
        await d.sessions.revokeAll(caller.userId, d.clock.now());
      } else if (req.refreshToken) {
        // Unknown or someone else's token: nothing to do, and nothing to reveal.
        await d.sessions.revokeByToken(req.refreshToken, caller.userId, d.clock.now());
      } else {
        throw invalidArgument([{ field: "refresh_token", description: "give the refresh token to revoke, or set all_sessions" }]);
      }
      return {};
    },

    async getMe(_req, ctx) {
      return { user: toUser(await d.users.get(callerOf(ctx).userId)) };
    },

    async getUserProfile(req) {
      return { profile: toUserProfile(await d.users.get(req.userId)) };
    },

    async listUsers(req) {
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("users");
      const rows = await d.users.list(pages.decode(req.pageToken, filters, isStringPosition), limit + 1);
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => last.username.toLowerCase());
      return { users: page.map(toUser), nextPageToken };
    },

    async setUserRole(req) {
      return { user: toUser(await d.users.setRole(req.userId, roleFromProto(req.role))) };
    },

    async disableUser(req) {
      return { user: toUser(await d.users.disable(req.userId, d.clock.now())) };
    },
  };
}

function invalidRefreshToken() {
  return unauthenticated("INVALID_REFRESH_TOKEN", "invalid refresh token: sign in again");
}
