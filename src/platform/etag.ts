import { aborted } from "./errors.js";

/** The etag of a versioned row: its version, quoted as HTTP etags are. */
export function etagOf(row: { version: number }): string {
  return `"${row.version}"`;
}

/** ABORTED (STALE_ETAG, with the current etag) unless `etag` is empty or still the row's. */
export function assertEtag(kind: string, row: { id: string; version: number }, etag: string): void {
  if (!etag || etag === etagOf(row)) return;
  const current = etagOf(row);
  throw aborted("STALE_ETAG", `${kind} ${row.id} has changed (etag is now ${current}): read it again and retry`, { current_etag: current });
}
