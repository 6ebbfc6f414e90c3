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
