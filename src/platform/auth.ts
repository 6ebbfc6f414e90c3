import { createContextKey, type ConnectError, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { createLocalJWKSet, createRemoteJWKSet, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from "jose";
import type { Clock } from "./clock.js";
import { notFound, permissionDenied, unauthenticated, unavailable } from "./errors.js";

export type RoleName = "user" | "admin";

/** The authenticated caller, as the access token says. */
export interface Caller {
  userId: string;
  username: string;
  role: RoleName;
}

/** The caller of the current call (undefined on public methods). */
export const callerKey = createContextKey<Caller | undefined>(undefined, { description: "agora caller" });

/** The client's network address, for per-address limits. */
export const peerAddressKey = createContextKey<string>("", { description: "agora peer address" });

export interface TokenSettings {
  issuer: string;
  audience: string;
}

/** The only algorithm accepted: it pins verification to our asymmetric keys (no `none`, no HMAC confusion). */
export const TOKEN_ALGORITHM = "ES256";

export type TokenVerifier = (token: string) => Promise<Caller>;

/** Seconds of clock skew allowed on `exp` and `nbf`. */
const CLOCK_TOLERANCE = 5;

/**
 * Tokens that passed verification, by their exact text (signature included),
 * so a client's repeated calls do not each pay for an ECDSA verification
 * (about 0.2 ms of CPU). Only successes are kept; `exp` and `nbf` are checked
 * again on every hit against the clock, with jose's own rule, and an entry
 * lives at most `ttlMs` (a key withdrawn from a remote JWKS stops counting
 * within that time). Bounded: the oldest entries go first.
 */
class VerifiedTokens {
  private readonly entries = new Map<string, { caller: Caller; exp: number; nbf: number | undefined; until: number }>();

  constructor(
    private readonly maxEntries = 10_000,
    private readonly ttlMs = 60_000,
  ) {}

  get(token: string, now: Date): Caller | undefined {
    const hit = this.entries.get(token);
    if (!hit) return undefined;
    const seconds = Math.floor(now.getTime() / 1000);
    if (now.getTime() >= hit.until || hit.exp <= seconds - CLOCK_TOLERANCE || (hit.nbf !== undefined && hit.nbf > seconds + CLOCK_TOLERANCE)) {
      this.entries.delete(token);
      return undefined;
    }
    return hit.caller;
  }

  set(token: string, caller: Caller, claims: { exp: number; nbf: number | undefined }, now: Date): void {
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(token, { caller, ...claims, until: now.getTime() + this.ttlMs });
  }
}

/**
 * Verifies access tokens against a key set: the identity service's own keys
 * when it runs in this process, or its published JWKS (fetched, cached, and
 * refetched when an unknown `kid` shows up) when it runs elsewhere.
 */
export function createTokenVerifier(keys: JSONWebKeySet | URL, settings: TokenSettings, clock: Clock): TokenVerifier {
  const getKey: JWTVerifyGetKey = keys instanceof URL ? createRemoteJWKSet(keys, { cooldownDuration: 30_000 }) : createLocalJWKSet(keys);
  const verified = new VerifiedTokens();
  return async (token) => {
    const now = clock.now();
    const known = verified.get(token, now);
    if (known) return known;
    const { payload } = await jwtVerify(token, getKey, {
      algorithms: [TOKEN_ALGORITHM],
      issuer: settings.issuer,
      audience: settings.audience,
      requiredClaims: ["exp", "iat", "sub"],
      currentDate: now,
      clockTolerance: CLOCK_TOLERANCE,
    });
    const role = payload.role;
    if (typeof payload.sub !== "string" || (role !== "user" && role !== "admin") || typeof payload.name !== "string") {
      throw new joseErrors.JWTClaimValidationFailed("unexpected claims", payload);
    }
    const caller: Caller = Object.freeze({ userId: payload.sub, username: payload.name, role });
    verified.set(token, caller, { exp: payload.exp!, nbf: payload.nbf }, now);
    return caller;
  };
}

const BEARER = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)$/;

function badToken(expired = false): ConnectError {
  // One message for every bad token: nothing tells an attacker which check failed.
  return expired
    ? unauthenticated("TOKEN_EXPIRED", "access token expired: refresh it")
    : unauthenticated("INVALID_TOKEN", "missing or invalid access token");
}

/**
 * Requires a valid bearer token on every method except `publicMethods`
 * ("package.Service/Method" or a whole "package.Service"), and puts the caller
 * into the call's context for handlers, unary and streaming alike. Methods in
 * `adminMethods` need the admin role: anyone else gets PERMISSION_DENIED here,
 * before the request is validated, so no answer tells a non-admin anything
 * about what an admin method would accept.
 */
export function authInterceptor(verify: TokenVerifier, publicMethods: Set<string>, adminMethods: Set<string> = new Set()): Interceptor {
  return (next) => async (req) => {
    const service = req.service.typeName;
    const method = `${service}/${req.method.name}`;
    if (publicMethods.has(service) || publicMethods.has(method)) return next(req);
    const match = BEARER.exec(req.header.get("authorization") ?? "");
    if (!match) throw badToken();
    let caller: Caller;
    try {
      caller = await verify(match[1]!);
    } catch (err) {
      // A key set we cannot fetch or read is our problem, not the caller's.
      if (!(err instanceof joseErrors.JOSEError) || err instanceof joseErrors.JWKSTimeout || err instanceof joseErrors.JWKSInvalid) {
        throw unavailable("KEYS_UNAVAILABLE", "cannot verify access tokens right now: retry");
      }
      throw badToken(err instanceof joseErrors.JWTExpired);
    }
    if (adminMethods.has(method) && caller.role !== "admin") throw permissionDenied("ADMIN_ROLE_REQUIRED", "this needs the admin role");
    req.contextValues.set(callerKey, caller);
    return next(req);
  };
}

/** The signed-in caller; only undefined on public methods, where handlers must not ask. */
export function callerOf(ctx: HandlerContext): Caller {
  const caller = ctx.values.get(callerKey);
  if (!caller) throw badToken();
  return caller;
}

/**
 * The rule for private objects, the same in every service: only the owner
 * (and, where the service allows it, an admin) sees or changes them. Anyone
 * else gets NOT_FOUND, so ids of other users' objects are never confirmed.
 */
export function assertOwner(
  caller: Caller,
  ownerId: string,
  resource: { type: string; id: string },
  options: { adminMay: boolean } = { adminMay: true },
): void {
  if (caller.userId === ownerId) return;
  if (options.adminMay && caller.role === "admin") return;
  throw notFound(resource.type, resource.id);
}
