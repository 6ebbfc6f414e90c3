import { randomUUID } from "node:crypto";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { REQUEST_ID_HEADER } from "./error-mapping.js";
import type { MethodSeries, ServerMetrics } from "./metrics.js";
import { watchIterable } from "./streams.js";

const GRPC_TYPE = {
  unary: "unary",
  server_streaming: "server_stream",
  client_streaming: "client_stream",
  bidi_streaming: "bidi_stream",
} as const;

const REQUEST_ID_PATTERN = /^[\w.:-]{1,128}$/;

/** A call's request id: the caller's x-request-id when it is sane, else a new one. */
export function requestIdFrom(given: string | null | undefined): string {
  return given && REQUEST_ID_PATTERN.test(given) ? given : randomUUID();
}

function codeName(err: unknown): string {
  if (err === undefined) return "OK";
  const code = err instanceof ConnectError ? err.code : Code.Unknown;
  return Code[code];
}

/**
 * The calls begun and not yet ended. A stream ends once its handler has
 * finished, cleanup included (a chat stream closing its presence), so a
 * shutdown can wait for them before it closes the database under them.
 */
export class CallsInFlight {
  private count = 0;
  private waiters: (() => void)[] = [];

  begin(): void {
    this.count++;
  }

  end(): void {
    if (--this.count > 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves true once no call is in flight, false if some still are after `ms`. */
  settled(ms: number): Promise<boolean> {
    if (this.count === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  get size(): number {
    return this.count;
  }
}

/**
 * Outermost interceptor: gives every call a request id (the caller's
 * x-request-id when it is sane, else a new one; echoed in the response header),
 * then writes one access-log line and the Prometheus series when the call ends,
 * and counts it in `calls` meanwhile.
 */
export function observeInterceptor(log: Logger, metrics: ServerMetrics, calls: CallsInFlight): Interceptor {
  // Each method's series (with its access-log name), looked up once.
  const methods = new Map<DescMethod, MethodSeries>();
  const methodOf = (method: DescMethod) => {
    let m = methods.get(method);
    if (!m) {
      m = metrics.method({ grpc_type: GRPC_TYPE[method.methodKind], grpc_service: method.parent.typeName, grpc_method: method.name });
      methods.set(method, m);
    }
    return m;
  };
  return (next) => async (req) => {
    const requestId = requestIdFrom(req.header.get(REQUEST_ID_HEADER));
    req.header.set(REQUEST_ID_HEADER, requestId);
    const method = methodOf(req.method);
    method.started++;
    const startedAt = process.hrtime.bigint();
    calls.begin();
    const finish = (err: unknown) => {
      calls.end();
      const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
      const code = codeName(err);
      method.end(code, seconds);
      const entry = {
        requestId,
        method: method.name,
        code,
        durationMs: Math.round(seconds * 1e6) / 1e3,
        ...(err instanceof ConnectError && code !== "OK" ? { error: err.rawMessage } : {}),
      };
      log.info(entry, "rpc");
    };
    let res;
    try {
      res = await next(req);
    } catch (err) {
      finish(err);
      throw err;
    }
    res.header.set(REQUEST_ID_HEADER, requestId);
    if (!res.stream) {
      finish(undefined);
      return res;
    }
    return { ...res, message: watchIterable(res.message, { done: finish }) };
  };
}
