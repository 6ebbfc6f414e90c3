import type http from "node:http";
import type http2 from "node:http2";
import { createContextKey } from "@connectrpc/connect";

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

/**
 * A call's end, for code that only needs to hear about it: what the call's
 * AbortSignal says, without one. The grpc-js adapter creates a call's
 * AbortSignal only when something asks for it (an AbortSignal and its abort
 * event cost more than the rest of a Health/Check's interceptors), and puts
 * this in the call's context values instead (`callAbortKey`).
 */
export interface CallAbort {
  /** Why the call ended or was aborted; undefined while it runs. */
  readonly reason: unknown;
  /** Calls `listener` once when the call is aborted; returns the way to stop listening. */
  onAbort(listener: () => void): () => void;
}

export const callAbortKey = createContextKey<CallAbort | undefined>(undefined, { description: "agora call abort" });

/** The same view of any AbortSignal (Connect-node's calls); a class, as V8 builds literals with getters slowly. */
class SignalAbort implements CallAbort {
  constructor(private readonly signal: AbortSignal) {}

  get reason(): unknown {
    return this.signal.aborted ? this.signal.reason : undefined;
  }

  onAbort(listener: () => void): () => void {
    this.signal.addEventListener("abort", listener, { once: true });
    return () => this.signal.removeEventListener("abort", listener);
  }
}

export function callAbortOf(signal: AbortSignal): CallAbort {
  return new SignalAbort(signal);
}
