import type http from "node:http";
import type http2 from "node:http2";

/** Node's timers hold at most 2^31 - 1 ms (about 24.8 days); a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const GRPC_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000_001 };

/**
 * Drops a deadline header (`grpc-timeout`, `connect-timeout-ms`) too long for a
 * timer, before Connect parses it: such a deadline means "no practical
 * deadline", and a timer armed with it would overflow and end the call at once.
 * Malformed values are left for Connect to refuse.
 */
export function dropOverlongDeadline(headers: http.IncomingHttpHeaders | http2.IncomingHttpHeaders): void {
  const grpc = /^(\d{1,8})([HMSmun])$/.exec(String(headers["grpc-timeout"] ?? ""));
  if (grpc && Number(grpc[1]) * GRPC_UNIT_MS[grpc[2]!]! > MAX_TIMER_MS) delete headers["grpc-timeout"];
  const connect = /^\d{1,10}$/.exec(String(headers["connect-timeout-ms"] ?? ""));
  if (connect && Number(connect[0]) > MAX_TIMER_MS) delete headers["connect-timeout-ms"];
}
