import { createHash } from "node:crypto";
import { invalidArgument } from "./errors.js";

export const DEFAULT_PAGE_SIZE = 50;

export function pageSize(requested: number): number {
  return requested > 0 ? requested : DEFAULT_PAGE_SIZE;
}

/** A fingerprint of the request's filters: a token only continues the listing it came from. */
export function fingerprint(...parts: unknown[]): string {
  return createHash("sha256").update(JSON.stringify(parts)).digest("base64url").slice(0, 12);
}

/** Opaque page token: base64url JSON of the position plus the filters' fingerprint. */
export function encodePageToken(position: unknown, filters: string): string {
  return Buffer.from(JSON.stringify({ p: position, f: filters })).toString("base64url");
}

/** The position in `token`, or undefined for the first page; INVALID_ARGUMENT when it is not ours. */
export function decodePageToken<P>(token: string, filters: string, isPosition: (p: unknown) => p is P): P | undefined {
  if (token === "") return undefined;
  let parsed: { p?: unknown; f?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw badToken("page_token is not a token this service issued");
  }
  if (parsed?.f !== filters) throw badToken("page_token belongs to a listing with other filters or order");
  if (!isPosition(parsed.p)) throw badToken("page_token is not a token this service issued");
  return parsed.p;
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

/**
 * Splits the `limit + 1` rows a query fetched into the page and the token of
 * the next one (empty on the last page): the extra row only says "there is more".
 */
export function pageOf<R>(rows: R[], limit: number, filters: string, positionOf: (last: R) => unknown): { page: R[]; nextPageToken: string } {
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return { page, nextPageToken: rows.length > limit && last !== undefined ? encodePageToken(positionOf(last), filters) : "" };
}
