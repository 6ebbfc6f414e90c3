import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
  QuotaFailureSchema,
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

export function invalidArgument(violations: FieldViolation[], message?: string): ConnectError {
  const text = message ?? violations.map((v) => `${v.field}: ${v.description}`).join("; ");
  return new ConnectError(text, Code.InvalidArgument, undefined, [
    {
      desc: BadRequestSchema,
      value: create(BadRequestSchema, {
        fieldViolations: violations.map((v) => ({ field: v.field, description: v.description, reason: v.reason ?? "" })),
      }),
    },
    errorInfo("INVALID_ARGUMENT"),
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

/** A stale etag or version: the caller should re-read and try again. */
export function aborted(reason: string, message: string, metadata: Record<string, string> = {}): ConnectError {
  return new ConnectError(message, Code.Aborted, undefined, [errorInfo(reason, metadata)]);
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
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  return new ConnectError(message, Code.ResourceExhausted, undefined, [
    { desc: RetryInfoSchema, value: create(RetryInfoSchema, { retryDelay: { seconds: BigInt(seconds) } }) },
    errorInfo(reason, { retry_after_seconds: String(seconds) }),
  ]);
}
