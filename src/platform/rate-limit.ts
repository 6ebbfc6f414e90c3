import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import type { Interceptor } from "@connectrpc/connect";
import { callerKey, peerAddressKey } from "./auth.js";
import { resourceExhausted } from "./errors.js";

export interface RateLimitConfig {
  /** Calls per second (and burst) to methods that write, per user; 0: no limit. */
  userWritesPerSecond: number;
  userWritesBurst: number;
  /** The same per client address (authenticated or not). */
  addressWritesPerSecond: number;
  addressWritesBurst: number;
  /** Registrations per address per hour (also the burst); 0: no limit. */
  registrationsPerHour: number;
}

/**
 * Token buckets in memory, one per key, refilled continuously. Bounded: past
 * `maxKeys` the longest-unused keys are forgotten (a forgotten key starts full).
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perMs: number,
    private readonly capacity: number,
    private readonly maxKeys = 100_000,
  ) {}

  /** Milliseconds until `key` has a token (0: now). */
  wait(key: string, now: number): number {
    const tokens = this.level(key, now);
    return tokens >= 1 ? 0 : Math.ceil((1 - tokens) / this.perMs);
  }

  take(key: string, now: number): void {
    const tokens = this.level(key, now) - 1;
    this.buckets.delete(key); // re-inserted last: Map order is least recently used first
    this.buckets.set(key, { tokens, at: now });
    if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
  }

  private level(key: string, now: number): number {
    const b = this.buckets.get(key);
    return b ? Math.min(this.capacity, b.tokens + (now - b.at) * this.perMs) : this.capacity;
  }
}

/** The one method whose own bucket is tighter than the write buckets. */
const REGISTER = "agora.identity.v1.IdentityService/Register";

/**
 * Whether a call may write: Agora's methods unless their descriptor says
 * NO_SIDE_EFFECTS. The platform's own services (grpc.health, grpc.reflection)
 * write nothing; their protos cannot say so, and a health check refused for
 * sharing the gateway's address budget would take a healthy instance out.
 */
function writes(req: { service: { typeName: string }; method: { idempotency: MethodOptions_IdempotencyLevel } }): boolean {
  return req.method.idempotency !== MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS && !req.service.typeName.startsWith("grpc.");
}

/**
 * Rate limits on every method that writes (`writes`), per user and per client address, and on Register per
 * address: RESOURCE_EXHAUSTED with RetryInfo. Per instance and in memory
 * (docs/security.md: why). Administrators are not limited.
 */
export function rateLimitInterceptor(config: RateLimitConfig, now: () => number = () => performance.now()): Interceptor {
  const bucket = (perSecond: number, burst: number) => (perSecond > 0 ? new TokenBuckets(perSecond / 1000, Math.max(1, burst)) : undefined);
  const user = bucket(config.userWritesPerSecond, config.userWritesBurst);
  const address = bucket(config.addressWritesPerSecond, config.addressWritesBurst);
  const register = bucket(config.registrationsPerHour / 3600, config.registrationsPerHour);
  return (next) => async (req) => {
    if (!writes(req)) return next(req);
    const caller = req.contextValues.get(callerKey);
    if (caller?.role === "admin") return next(req);
    const peer = req.contextValues.get(peerAddressKey);
    const checks: [TokenBuckets | undefined, string, string][] = [
      [address, peer, "RATE_LIMITED_ADDRESS"],
      [caller ? user : undefined, caller?.userId ?? "", "RATE_LIMITED_USER"],
    ];
    if (`${req.service.typeName}/${req.method.name}` === REGISTER) checks.push([register, peer, "REGISTRATIONS_LIMITED"]);
    const t = now();
    for (const [buckets, key, reason] of checks) {
      const wait = buckets?.wait(key, t) ?? 0;
      if (wait > 0) throw resourceExhausted(reason, `too many requests: retry in ${Math.ceil(wait / 1000)} s`, wait);
    }
    for (const [buckets, key] of checks) buckets?.take(key, t);
    return next(req);
  };
}
