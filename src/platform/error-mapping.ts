import {
  ConnectionException,
  DeadlockException,
  ForeignKeyConstraintViolationException,
  LockWaitTimeoutException,
  NotFoundError,
  OptimisticLockError,
  ValidationError as OrmValidationError,
} from "@mikro-orm/core";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { isUniqueViolation, sqlState } from "./db.js";
import { callAbortKey, callAbortOf } from "./deadline.js";
import { aborted, alreadyExists, canceled, deadlineExceeded, failedPrecondition, internalError, invalidArgument, notFound, unavailable, withDetails } from "./errors.js";
import { watchIterable } from "./streams.js";

/** Request header clients may set (and response header the server echoes) to correlate logs. */
export const REQUEST_ID_HEADER = "x-request-id";

/**
 * Turns whatever a handler throws into a gRPC error the caller can act on.
 * Known ORM and database conditions get their proper codes; anything else is an
 * INTERNAL error whose text names only the request id: no SQL, no stack trace.
 */
export function toConnectError(err: unknown, requestId: string, log: Logger): ConnectError {
  if (err instanceof ConnectError) {
    if (err.code !== Code.Unknown && err.code !== Code.Internal) {
      if (err.details.length > 0) return err;
      log.warn({ requestId, code: Code[err.code], message: err.rawMessage }, "an error without google.rpc details: one is added");
      return withDetails(err);
    }
    // Connect's own protocol errors (bad framing, unparsable bodies) reach us as
    // ConnectErrors too; those with a proper code were returned above.
    log.error({ err, requestId }, "internal error");
    return internalError(requestId);
  }
  if (isClientGone(err)) return canceled("CLIENT_GONE", "the client closed the call");
  if (err instanceof NotFoundError) return notFound("entity", "requested");
  if (err instanceof OptimisticLockError) {
    return aborted("STALE_ETAG", "the resource was changed by someone else: read it again and retry with its new etag");
  }
  if (isUniqueViolation(err)) {
    return alreadyExists("entity", "a resource with the same unique key already exists");
  }
  if (err instanceof ForeignKeyConstraintViolationException) {
    return failedPrecondition("REFERENCE_CONFLICT", "a referenced resource does not exist or is still in use", {
      type: "REFERENCE",
      subject: "",
      description: "a referenced resource does not exist or is still in use",
    });
  }
  if (err instanceof DeadlockException) return aborted("CONCURRENT_CONFLICT", "the request conflicted with a concurrent one: retry", {}, 0);
  if (err instanceof LockWaitTimeoutException || sqlState(err) === "55P03") {
    // lock_timeout (SESSION_TIMEOUTS in db.ts): another session held what this one needed; nothing was applied.
    return aborted("LOCK_TIMEOUT", "the data is locked by another request: nothing was changed, retry shortly", {}, 1000);
  }
  if (isUnstorableText(err)) {
    // Validation refuses such text in every request; this is the last line, should a path miss it.
    return invalidArgument([{ field: "", description: "text with characters PostgreSQL cannot store (NUL)", reason: "UNSTORABLE_TEXT" }]);
  }
  if (err instanceof ConnectionException || isConnectionFailure(err)) {
    log.warn({ err, requestId }, "database unavailable");
    return unavailable("DATABASE_UNAVAILABLE", "the database is unavailable: retry later");
  }
  if (err instanceof OrmValidationError) {
    log.error({ err, requestId }, "ORM validation error");
    return internalError(requestId);
  }
  log.error({ err, requestId }, "unhandled error");
  return internalError(requestId);
}

/** The caller hung up (closed its stream or reset it): nothing failed on our side. */
function isClientGone(err: unknown): boolean {
  const e = err as { code?: unknown; name?: unknown } | undefined;
  return e?.code === "ERR_STREAM_PREMATURE_CLOSE" || e?.code === "ERR_HTTP2_INVALID_STREAM" || e?.name === "AbortError";
}

const UNAVAILABLE_ERRNO = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH"]);
// SQLSTATEs that mean "the database cannot serve you right now", not "your request is wrong"
// (25P03: this instance hung inside a transaction and PostgreSQL ended its session).
const UNAVAILABLE_SQLSTATE = new Set(["57P01", "57P02", "57P03", "53300", "53400", "25P03"]);

// SQLSTATEs of text the database cannot store: the request is wrong, the database is fine.
const UNSTORABLE_SQLSTATE = new Set(["22021", "22P05"]); // invalid byte sequence (NUL), unsupported Unicode escape

function isUnstorableText(err: unknown): boolean {
  return UNSTORABLE_SQLSTATE.has(sqlState(err) ?? "");
}

function isConnectionFailure(err: unknown): boolean {
  for (let e = err as { code?: unknown; sqlState?: unknown; message?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    const code = typeof e.sqlState === "string" ? e.sqlState : e.code;
    if (typeof code !== "string") continue;
    // 08P01 (protocol violation) is a malformed message from us, e.g. a NUL inlined into SQL text: not an outage.
    if (UNAVAILABLE_ERRNO.has(code) || UNAVAILABLE_SQLSTATE.has(code) || (code.startsWith("08") && code !== "08P01")) return true;
    if (code === "55000" && /accepting connections/.test(String(e.message))) return true;
  }
  // "not queryable": node-pg's answer on a connection the server has ended (e.g. 25P03 after a hang).
  return /Connection terminated|Connection ended unexpectedly|timeout exceeded when trying to connect|not queryable/i.test(
    String((err as Error | undefined)?.message),
  );
}

/** The id of the current request, as set by the observability interceptor. */
export function requestIdOf(header: Headers): string {
  return header.get(REQUEST_ID_HEADER) ?? "unknown";
}

export function errorMappingInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    const requestId = requestIdOf(req.header);
    const map = (err: unknown) => {
      const proper = err instanceof ConnectError && err.code !== Code.Unknown && err.code !== Code.Internal;
      if (req.signal.aborted && !proper) {
        // Whatever broke once the caller had gone (Envoy's per-try timeout, a client that hung up)
        // follows from its cancellation: not a server error.
        log.info({ err, requestId }, "call ended after the client went away");
        return req.signal.reason instanceof ConnectError ? req.signal.reason : canceled("CLIENT_GONE", "the client closed the call");
      }
      return toConnectError(err, requestId, log);
    };
    let res;
    try {
      res = await next(req);
    } catch (err) {
      throw map(err);
    }
    if (!res.stream) return res;
    return { ...res, message: watchIterable(res.message, { mapError: map }) };
  };
}

/**
 * Makes a unary call end with DEADLINE_EXCEEDED as soon as its deadline passes
 * (or its caller goes away), even if the handler is still waiting on the
 * database. Server shutdown also aborts handler signals, but in-flight unary
 * calls are allowed to finish then, so that abort is ignored here. Streams watch
 * their signal themselves.
 */
export function deadlineInterceptor(shutdown: AbortSignal): Interceptor {
  return (next) => async (req) => {
    if (req.stream) return next(req);
    // Through the call's own view when it has one (grpc-js), so that no AbortSignal is made just to be watched.
    const call = req.contextValues.get(callAbortKey) ?? callAbortOf(req.signal);
    const isShutdown = () => shutdown.aborted && call.reason === shutdown.reason;
    if (call.reason !== undefined && !isShutdown()) throw abortError(call.reason);
    let stop: (() => void) | undefined;
    const abortedPromise = new Promise<never>((_, reject) => {
      stop = call.onAbort(() => {
        if (!isShutdown()) reject(abortError(call.reason));
      });
    });
    try {
      return await Promise.race([next(req), abortedPromise]);
    } finally {
      stop?.();
    }
  };
}

/** Why a unary call was aborted: its deadline (with details), or whatever else aborted it, as it was. */
function abortError(reason: unknown): ConnectError {
  if (reason instanceof ConnectError && reason.code !== Code.DeadlineExceeded) return reason;
  return deadlineExceeded(reason instanceof ConnectError ? reason.rawMessage : "the deadline passed");
}
