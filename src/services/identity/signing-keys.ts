import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { exportJWK, type JSONWebKeySet } from "jose";
import { TOKEN_ALGORITHM } from "../../platform/auth.js";
import { StartupError } from "../../platform/db.js";
import { readOrCreateSecret } from "../../platform/secrets.js";

export interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  jwks: JSONWebKeySet;
}

/**
 * The ES256 key that signs access tokens: from JWT_PRIVATE_KEY_FILE when set,
 * else `<dataDir>/keys/jwt-es256.pem`, created on first start (atomically, so
 * instances sharing a data directory agree on one key). The key id is derived
 * from the public key, so every instance names it the same way.
 */
export async function loadSigningKey(privateKeyFile: string | undefined, dataDir: string): Promise<SigningKey> {
  const file = privateKeyFile ?? path.join(dataDir, "keys", "jwt-es256.pem");
  let privateKey: KeyObject;
  try {
    const pem = privateKeyFile
      ? fs.readFileSync(file)
      : readOrCreateSecret(file, () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }));
    privateKey = createPrivateKey(pem);
  } catch (err) {
    throw new StartupError(`cannot read the token signing key ${file}: ${(err as Error).message}`);
  }
  if (privateKey.asymmetricKeyType !== "ec" || privateKey.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw new StartupError(`the token signing key ${file} must be an EC P-256 private key (ES256)`);
  }
  const publicKey = createPublicKey(privateKey);
  const der = publicKey.export({ type: "spki", format: "der" });
  const kid = createHash("sha256").update(der).digest("base64url").slice(0, 16);
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: TOKEN_ALGORITHM, use: "sig" };
  return { kid, privateKey, jwks: { keys: [jwk] } };
}
