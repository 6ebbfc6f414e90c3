import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import path from "node:path";
import { invalidArgument } from "./errors.js";
import { readOrCreateSecret } from "./secrets.js";

export const DEFAULT_PAGE_SIZE = 50;

export function pageSize(requested: number): number {
  return requested > 0 ? requested : DEFAULT_PAGE_SIZE;
}

/** A fingerprint of the request's filters: a token only continues the listing it came from. */
export function fingerprint(...parts: unknown[]): string {
  return createHash("sha256").update(JSON.stringify(parts)).digest("base64url").slice(0, 12);
}

/**
 * Issues and reads page tokens: base64url JSON of the position plus the
 * filters' fingerprint, then an HMAC-SHA256 of that text under a server-side
 * key. A client can neither read positions into a query nor build a token by
 * hand: anything not issued by an instance holding the key is INVALID_ARGUMENT
 * before it reaches a query. The key is `<DATA_DIR>/keys/page-token.key`,
 * created on first start and shared by every instance that shares DATA_DIR,
 * like the token signing key.
 */
export class PageTokens {
  constructor(private readonly key: Buffer) {}

  static forDataDir(dataDir: string): PageTokens {
    return new PageTokens(readOrCreateSecret(path.join(dataDir, "keys", "page-token.key"), () => randomBytes(32)));
  }

  encode(position: unknown, filters: string): string {
    const body = Buffer.from(JSON.stringify({ p: position, f: filters })).toString("base64url");
    return `${body}.${this.mac(body).toString("base64url")}`;
  }

  /** The position in `token`, or undefined for the first page; INVALID_ARGUMENT when it is not ours. */
  decode<P>(token: string, filters: string, isPosition: (p: unknown) => p is P): P | undefined {
    if (token === "") return undefined;
    const [body = "", mac = "", ...rest] = token.split(".");
    const given = Buffer.from(mac, "base64url");
    const expected = this.mac(body);
    if (rest.length > 0 || given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw badToken("page_token is not a token this service issued");
    }
    let parsed: { p?: unknown; f?: unknown };
    try {
      parsed = JSON.parse(Buffer.from(body, "base64url").toString("utf8"));
    } catch {
      throw badToken("page_token is not a token this service issued");
    }
    if (parsed?.f !== filters) throw badToken("page_token belongs to a listing with other filters or order");
    if (!isPosition(parsed.p)) throw badToken("page_token is not a token this service issued");
    return parsed.p;
  }

  /**
   * Splits the `limit + 1` rows a query fetched into the page and the token of
   * the next one (empty on the last page): the extra row only says "there is more".
   */
  pageOf<R>(rows: R[], limit: number, filters: string, positionOf: (last: R) => unknown): { page: R[]; nextPageToken: string } {
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    return { page, nextPageToken: rows.length > limit && last !== undefined ? this.encode(positionOf(last), filters) : "" };
  }

  private mac(body: string): Buffer {
    return createHmac("sha256", this.key).update(body).digest();
  }
}

function badToken(description: string) {
  return invalidArgument([{ field: "page_token", description, reason: "INVALID_PAGE_TOKEN" }]);
}

/** A keyset position: the sort value and id of a page's last row. */
export const isKeyset = (p: unknown): p is [string, string] =>
  Array.isArray(p) && p.length === 2 && typeof p[0] === "string" && typeof p[1] === "string";

/** A keyset position whose sort value may also be a number (e.g. a quantity). */
export const isNumericKeyset = (p: unknown): p is [string | number, string] =>
  Array.isArray(p) && p.length === 2 && (typeof p[0] === "string" || typeof p[0] === "number") && typeof p[1] === "string";

export const isStringPosition = (p: unknown): p is string => typeof p === "string";
