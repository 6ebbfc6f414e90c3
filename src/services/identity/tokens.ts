import { randomUUID } from "node:crypto";
import { SignJWT } from "jose";
import { TOKEN_ALGORITHM, type RoleName } from "../../platform/auth.js";
import type { Clock } from "../../platform/clock.js";
import type { SigningKey } from "./signing-keys.js";

export interface TokenSubject {
  id: string;
  username: string;
  role: RoleName;
}

/** Signs short-lived access tokens: iss, aud, sub, iat, exp, jti, name, role, and the key id. */
export class AccessTokenIssuer {
  constructor(
    private readonly key: SigningKey,
    private readonly settings: { issuer: string; audience: string; ttlSeconds: number },
    private readonly clock: Clock,
  ) {}

  async issue(user: TokenSubject): Promise<{ token: string; expiresAt: Date }> {
    const issuedAt = Math.floor(this.clock.now().getTime() / 1000);
    const expiresAt = issuedAt + this.settings.ttlSeconds;
    const token = await new SignJWT({ role: user.role, name: user.username })
      .setProtectedHeader({ alg: TOKEN_ALGORITHM, kid: this.key.kid, typ: "JWT" })
      .setIssuer(this.settings.issuer)
      .setAudience(this.settings.audience)
      .setSubject(user.id)
      .setIssuedAt(issuedAt)
      .setExpirationTime(expiresAt)
      .setJti(randomUUID())
      .sign(this.key.privateKey);
    return { token, expiresAt: new Date(expiresAt * 1000) };
  }
}
