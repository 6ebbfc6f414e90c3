import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { createValidator, type Violation } from "@bufbuild/protovalidate";
import type { Interceptor } from "@connectrpc/connect";
import { invalidArgument, type FieldViolation } from "./errors.js";

// One validator for the process: it compiles and caches the rules of each message type.
const validator = createValidator();

function toFieldViolation(v: Violation, prefix: string): FieldViolation {
  const field = pathToString(v.field);
  return { field: prefix + field, description: v.message, reason: v.ruleId };
}

/**
 * Checks a message against the buf.validate rules in its proto and throws
 * INVALID_ARGUMENT with google.rpc.BadRequest field violations. `prefix` names the
 * field the message sits in when a handler validates a nested message itself.
 */
export function assertValid<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>, prefix = ""): void {
  const result = validator.validate(schema, message);
  if (result.kind === "valid") return;
  if (result.kind === "invalid") {
    throw invalidArgument(result.violations.map((v) => toFieldViolation(v, prefix)));
  }
  // A rule that cannot be evaluated is a bug in the proto, not the caller's fault.
  throw result.error;
}

/**
 * Enforces the proto's buf.validate rules on every request message, unary and
 * streamed alike, so clients in every language meet the same rules.
 * `perMessage` names streaming methods ("pkg.Service/Method") whose handlers
 * validate each message themselves, because one bad command must not end the
 * stream (a chat client's typo is an error event, not a disconnect).
 *
 * @connectrpc/validate exists but reports buf.validate.Violations only; Agora's
 * contract promises google.rpc.BadRequest, which every gRPC client understands.
 */
export const validationInterceptor = (perMessage: Set<string> = new Set()): Interceptor => (next) => async (req) => {
  if (!req.stream) {
    assertValid(req.method.input, req.message);
    return next(req);
  }
  if (perMessage.has(`${req.service.typeName}/${req.method.name}`)) return next(req);
  const input = req.message;
  const schema = req.method.input;
  async function* checked() {
    for await (const message of input) {
      assertValid(schema, message);
      yield message;
    }
  }
  return next({ ...req, message: checked() });
};

/**
 * INVALID_ARGUMENT on update_mask unless it names at least one field and only
 * fields among `updatable` (the proto field names an Update method may change).
 */
export function assertUpdateMask(paths: string[], updatable: Iterable<string>): void {
  const allowed = [...updatable];
  const unknown = paths.filter((p) => !allowed.includes(p));
  if (paths.length > 0 && unknown.length === 0) return;
  throw invalidArgument([
    {
      field: "update_mask",
      description:
        paths.length === 0
          ? `name at least one field to update (${allowed.join(", ")})`
          : `cannot update ${unknown.join(", ")}; updatable fields: ${allowed.join(", ")}`,
      reason: "INVALID_UPDATE_MASK",
    },
  ]);
}
