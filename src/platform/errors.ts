import { create } from "@bufbuild/protobuf";
import { anyPack, AnySchema, type Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
  QuotaFailureSchema,
  RequestInfoSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
} from "../../gen/google/rpc/error_details_pb.js";

/** google.rpc.ErrorInfo domain of every error Agora raises. */
export const ERROR_DOMAIN = "agora.dev";

export interface FieldViolation {
  field: string;
  description: string;
  reason?: string;
}

function errorInfo(reason: string, metadata: Record<string, string> = {}) {
  return { desc: ErrorInfoSchema, value: create(ErrorInfoSchema, { reason, domain: ERROR_DOMAIN, metadata }) };
}

/** Bad input: BadRequest names each field; ErrorInfo's reason is INVALID_ARGUMENT unless a more precise one helps clients. */
export function invalidArgument(violations: FieldViolation[], message?: string, reason = "INVALID_ARGUMENT"): ConnectError {
  const text = message ?? violations.map((v) => `${v.field}: ${v.description}`).join("; ");
  return new ConnectError(text, Code.InvalidArgument, undefined, [
    {
      desc: BadRequestSchema,
      value: create(BadRequestSchema, {
        fieldViolations: violations.map((v) => ({ field: v.field, description: v.description, reason: v.reason ?? "" })),
      }),
    },
    errorInfo(reason),
  ]);
}

export function notFound(resourceType: string, resourceName: string): ConnectError {
  return new ConnectError(`${resourceType} ${resourceName} not found`, Code.NotFound, undefined, [
    { desc: ResourceInfoSchema, value: create(ResourceInfoSchema, { resourceType, resourceName }) },
    errorInfo("NOT_FOUND"),
  ]);
}

export function alreadyExists(resourceType: string, description: string, metadata: Record<string, string> = {}) {
  return new ConnectError(description, Code.AlreadyExists, undefined, [
    { desc: ResourceInfoSchema, value: create(ResourceInfoSchema, { resourceType, description }) },
    errorInfo("ALREADY_EXISTS", metadata),
  ]);
}

export function failedPrecondition(
  reason: string,
  message: string,
  violation: { type: string; subject: string; description: string },
  metadata: Record<string, string> = {},
): ConnectError {
  return new ConnectError(message, Code.FailedPrecondition, undefined, [
    { desc: PreconditionFailureSchema, value: create(PreconditionFailureSchema, { violations: [violation] }) },
    errorInfo(reason, metadata),
  ]);
}

/** A stale etag or version, or a conflict with a concurrent call: the caller should re-read and try again. */
export function aborted(reason: string, message: string, metadata: Record<string, string> = {}, retryAfterMs?: number): ConnectError {
  return withErrorInfo(Code.Aborted, reason, message, metadata, retryAfterMs);
}

/** A quota is used up (retrying soon will not help): QuotaFailure names it. */
export function quotaExceeded(subject: string, description: string, limit: number): ConnectError {
  return new ConnectError(description, Code.ResourceExhausted, undefined, [
    { desc: QuotaFailureSchema, value: create(QuotaFailureSchema, { violations: [{ subject, description }] }) },
    errorInfo("QUOTA_EXCEEDED", { subject, limit: String(limit) }),
  ]);
}

/** A limit was hit; RetryInfo tells well-behaved clients when to come back. */
export function resourceExhausted(reason: string, message: string, retryAfterMs: number): ConnectError {
  return withErrorInfo(Code.ResourceExhausted, reason, message, {}, retryAfterMs);
}

export function permissionDenied(reason: string, message: string, metadata: Record<string, string> = {}): ConnectError {
  return withErrorInfo(Code.PermissionDenied, reason, message, metadata);
}

export function unauthenticated(reason: string, message: string): ConnectError {
  return withErrorInfo(Code.Unauthenticated, reason, message);
}

/** A position (offset, cursor) past what exists: the caller may ask again later or from elsewhere. */
export function outOfRange(reason: string, message: string, metadata: Record<string, string> = {}): ConnectError {
  return withErrorInfo(Code.OutOfRange, reason, message, metadata);
}

/** Our side cannot serve the call right now; RetryInfo says when to try again. */
export function unavailable(reason: string, message: string, retryAfterMs = 1000): ConnectError {
  return withErrorInfo(Code.Unavailable, reason, message, {}, retryAfterMs);
}

export function canceled(reason: string, message: string): ConnectError {
  return withErrorInfo(Code.Canceled, reason, message);
}

export function deadlineExceeded(message: string): ConnectError {
  return withErrorInfo(Code.DeadlineExceeded, "DEADLINE_EXCEEDED", message);
}

export function unimplemented(reason: string, message: string, metadata: Record<string, string> = {}): ConnectError {
  return withErrorInfo(Code.Unimplemented, reason, message, metadata);
}

/** Something failed on our side: the text and the RequestInfo name only the request id (no SQL, no stack). */
export function internalError(requestId: string): ConnectError {
  return new ConnectError(`internal error (request id ${requestId})`, Code.Internal, undefined, [
    { desc: RequestInfoSchema, value: create(RequestInfoSchema, { requestId }) },
    errorInfo("INTERNAL", { request_id: requestId }),
  ]);
}

function withErrorInfo(
  code: Code,
  reason: string,
  message: string,
  metadata: Record<string, string> = {},
  retryAfterMs?: number,
): ConnectError {
  if (retryAfterMs === undefined) return new ConnectError(message, code, undefined, [errorInfo(reason, metadata)]);
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  return new ConnectError(message, code, undefined, [
    { desc: RetryInfoSchema, value: create(RetryInfoSchema, { retryDelay: { seconds: BigInt(seconds) } }) },
    errorInfo(reason, { ...metadata, retry_after_seconds: String(seconds) }),
  ]);
}

/** An error's google.rpc details as google.protobuf.Any, for errors reported inside a message (a stream event). */
export function detailsAsAny(err: ConnectError): Any[] {
  return err.details.map((d) =>
    "desc" in d
      ? anyPack(d.desc, create(d.desc, d.value))
      : create(AnySchema, { typeUrl: `type.googleapis.com/${d.type}`, value: d.value }),
  );
}

/** The lower_snake_case name of a gRPC code ("permission_denied"), as error events spell it. */
export function codeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}
