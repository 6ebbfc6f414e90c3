import { createHash } from "node:crypto";
import { toBinary, type DescMessage, type DescMethod, type MessageShape } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { invalidArgument } from "./errors.js";

/**
 * The request header that carries a call's `request_id` where Envoy can see it.
 * The gateway re-sends a call after a hung or failed attempt only when repeating
 * it cannot apply a change twice: its method is idempotent, or the call carries
 * this header (the service deduplicates its request_id). The body alone is not
 * enough: Envoy routes on headers, and a type with a request_id field says
 * nothing about whether the call filled it.
 */
export const IDEMPOTENCY_KEY_HEADER = "idempotency-key";

const bodyRequestId = (message: unknown): string | undefined => {
  const id = (message as { requestId?: unknown }).requestId;
  return typeof id === "string" ? id : undefined;
};

const hasRequestId = (method: DescMethod) => method.input.fields.some((f) => f.name === "request_id");

/** Client side: sends a unary call's non-empty `request_id` also as the idempotency-key header. */
export function sendIdempotencyKey(): Interceptor {
  return (next) => (req) => {
    if (!req.stream) {
      const id = bodyRequestId(req.message);
      if (id) req.header.set(IDEMPOTENCY_KEY_HEADER, id);
    }
    return next(req);
  };
}

/**
 * Server side: a call that carries the header (and so may have been re-sent by
 * the gateway) must carry the same `request_id` in its body, or the service would
 * not recognise the repeat. INVALID_ARGUMENT otherwise; a call without the header
 * is not checked.
 */
export function checkIdempotencyKey(): Interceptor {
  return (next) => (req) => {
    const key = req.header.get(IDEMPOTENCY_KEY_HEADER);
    if (key === null) return next(req);
    if (req.stream || !hasRequestId(req.method)) {
      throw invalidArgument([
        { field: IDEMPOTENCY_KEY_HEADER, description: `${req.method.name} takes no idempotency key: remove the header`, reason: "IDEMPOTENCY_KEY_UNEXPECTED" },
      ]);
    }
    if (bodyRequestId(req.message) !== key) {
      throw invalidArgument([
        { field: "request_id", description: `must equal the ${IDEMPOTENCY_KEY_HEADER} header`, reason: "IDEMPOTENCY_KEY_MISMATCH" },
      ]);
    }
    return next(req);
  };
}

/** The ErrorInfo reason of a request_id sent again with another request (the chat service uses it too). */
export const REQUEST_ID_REUSED = "REQUEST_ID_REUSED";

/**
 * What a repeat of a request_id must match: the SHA-256 (hex) of the request's
 * binary encoding with request_id cleared. Stored next to the request_id when
 * the request first changes something. A request without a request_id is never
 * compared: it gets "" without the copy, encoding and hash.
 */
export function requestFingerprint<Desc extends DescMessage>(schema: Desc, request: MessageShape<Desc>): string {
  if (!bodyRequestId(request)) return "";
  // A shallow copy is enough: the encoding only reads it (a deep clone per request cost as much as the hash).
  const copy = { ...request, requestId: "" } as MessageShape<Desc>;
  return createHash("sha256").update(toBinary(schema, copy)).digest("hex");
}

/**
 * A request_id answers with its first result only for the same request (the rule
 * Stripe applies to idempotency keys): the same id with another body is a client
 * bug that silently returning the first result would hide. Rows stored before
 * fingerprints existed (null) are not compared.
 */
export function assertSameRequest(stored: string | null | undefined, fingerprint: string): void {
  if (stored && stored !== fingerprint) {
    throw invalidArgument(
      [{ field: "request_id", description: "was already used for a different request: use a new request_id for each new request", reason: REQUEST_ID_REUSED }],
      undefined,
      REQUEST_ID_REUSED,
    );
  }
}
