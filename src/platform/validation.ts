import { clone, create, createFileRegistry, getOption, ScalarType, setExtension, type DescField, type DescMessage, type MessageShape, type Registry } from "@bufbuild/protobuf";
import { isReflectMessage, pathToString, reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { createValidator, type Violation } from "@bufbuild/protovalidate";
import { RE2JS } from "@bufbuild/re2";
import type { Interceptor } from "@connectrpc/connect";
import { file_agora_type_v1_rules, in_range } from "../../gen/agora/type/v1/rules_pb.js";
import { file_buf_validate_validate, predefined, PredefinedRulesSchema } from "../../gen/buf/validate/validate_pb.js";
import { invalidArgument, type FieldViolation } from "./errors.js";

/**
 * Per pattern (they come from the protos, so there are few): the compiled RE2 and its recent answers,
 * since requests repeat the same names (a metrics report's metric and label names) thousands of times.
 */
const patterns = new Map<string, { re: RE2JS; answers: Map<string, boolean> }>();
let remembered = 0;
const MAX_REMEMBERED = 4096;
const MAX_REMEMBERED_LENGTH = 128;

/**
 * protovalidate's default matcher (RE2, its documented contract) with recent
 * answers remembered. Matching in RE2's JavaScript port costs about a
 * microsecond, which a 10,000-sample report paid twice per sample.
 */
function regexMatch(pattern: string, text: string): boolean {
  let p = patterns.get(pattern);
  if (p === undefined) patterns.set(pattern, (p = { re: RE2JS.compile(pattern), answers: new Map() }));
  const known = p.answers.get(text);
  if (known !== undefined) return known;
  const matched = p.re.test(text);
  if (text.length <= MAX_REMEMBERED_LENGTH) {
    if (remembered >= MAX_REMEMBERED) {
      for (const q of patterns.values()) q.answers.clear();
      remembered = 0;
    }
    p.answers.set(text, matched);
    remembered++;
  }
  return matched;
}

/** The timestamp range rule as the contract states it: its id and message are what checkStorable reports. */
const IN_RANGE = getOption(in_range, predefined).cel[0]!;

/**
 * Agora's shared rules (proto/agora/type/v1/rules.proto), registered so protos can use them, with `in_range`'s
 * CEL left out: checkStorable checks every Timestamp against the same range and reports a violation with the
 * rule's id and message, so the answer is the same. protovalidate-es took 8 µs per field to evaluate the CEL
 * (half of a metrics sample's validation); the check costs two comparisons. A copy of the file is changed, not
 * the generated one, which reflection serves as the contract.
 */
function sharedRules(): Registry {
  const file = clone(FileDescriptorProtoSchema, file_agora_type_v1_rules.proto);
  const ext = file.extension.find((e) => e.number === in_range.number)!;
  setExtension(ext.options!, predefined, create(PredefinedRulesSchema));
  return createFileRegistry(file, (name) => (name === file_buf_validate_validate.proto.name ? file_buf_validate_validate : undefined));
}

// One validator for the process: it compiles and caches the rules of each message type.
const validator = createValidator({ registry: sharedRules(), regexMatch });

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
  // A rule that cannot be evaluated is a bug in the proto, not the caller's fault.
  if (result.kind === "error") throw result.error;
  const violations = result.kind === "invalid" ? result.violations.map((v) => toFieldViolation(v, prefix)) : [];
  const storable: FieldViolation[] = [];
  checkStorable(reflect(schema, message), prefix ? [prefix.replace(/\.$/, "")] : [], storable);
  // The proto's own rule on a field (e.g. a tighter timestamp range) already said it.
  violations.push(...storable.filter((s) => !violations.some((v) => v.field === s.field)));
  if (violations.length > 0) throw invalidArgument(violations);
}

// The ranges google/protobuf/timestamp.proto and duration.proto define (years 1 to 9999, ±10,000 years).
const MIN_TIMESTAMP_SECONDS = -62_135_596_800n;
const MAX_TIMESTAMP_SECONDS = 253_402_300_799n;
const MAX_DURATION_SECONDS = 315_576_000_000n;

/**
 * The rules every request obeys whatever its proto says, so no field can be
 * forgotten: strings hold no NUL, the one character PostgreSQL cannot store
 * (unpaired surrogates cannot get this far: the binary format decodes invalid
 * UTF-8 to U+FFFD and the JSON format refuses them), and every Timestamp
 * and Duration is within the range its well-known type defines (beyond it no
 * date can be computed; a Timestamp's seconds are the contract's `in_range`).
 * Paths are written as protovalidate writes them, and only for a violation:
 * this runs on every element of every request (a metrics report carries
 * thousands).
 */
function checkStorable(m: ReflectMessage, path: PathSegment[], out: FieldViolation[]): void {
  const type = m.desc.typeName;
  if (type === "google.protobuf.Timestamp" || type === "google.protobuf.Duration") {
    const seconds = m.get(m.desc.fields[0]!) as bigint;
    const nanos = m.get(m.desc.fields[1]!) as number;
    if (type === "google.protobuf.Duration") {
      if (seconds < -MAX_DURATION_SECONDS || seconds > MAX_DURATION_SECONDS || Math.abs(nanos) > 999_999_999) {
        out.push({ field: pathText(path), description: "must be within ±10,000 years", reason: "OUT_OF_RANGE" });
      }
    } else if (seconds < MIN_TIMESTAMP_SECONDS || seconds > MAX_TIMESTAMP_SECONDS) {
      // The contract's in_range rule, which the validator leaves to this check (sharedRules).
      out.push({ field: pathText(path), description: IN_RANGE.message, reason: IN_RANGE.id });
    } else if (nanos < 0 || nanos > 999_999_999) {
      out.push({ field: pathText(path), description: IN_RANGE.message, reason: "OUT_OF_RANGE" });
    }
    return;
  }
  const check = (value: unknown) => {
    if (typeof value === "string") {
      if (value.includes("\0")) out.push({ field: pathText(path), description: "must not contain the NUL character", reason: "UNSTORABLE_TEXT" });
    } else if (isReflectMessage(value)) {
      checkStorable(value, path, out);
    }
  };
  for (const field of fieldsToCheck(m.desc)) {
    if (!m.isSet(field)) continue;
    path.push(field.name);
    if (field.fieldKind === "list") {
      let i = 0;
      for (const v of m.get(field)) {
        path.push(i++);
        check(v);
        path.pop();
      }
    } else if (field.fieldKind === "map") {
      for (const [k, v] of m.get(field)) {
        path.push({ key: k });
        check(k);
        check(v);
        path.pop();
      }
    } else {
      check(m.get(field));
    }
    path.pop();
  }
}

/** A field's name, a list index, or a map key. */
type PathSegment = string | number | { key: unknown };

function pathText(path: PathSegment[]): string {
  let text = "";
  for (const s of path) {
    if (typeof s === "string") text += text ? `.${s}` : s;
    else text += typeof s === "number" ? `[${s}]` : `[${typeof s.key === "bigint" ? s.key.toString() : JSON.stringify(s.key)}]`;
  }
  return text;
}

/** Per message type, the fields that can hold a string, Timestamp or Duration at any depth: checkStorable reads only these. */
const checkedFields = new Map<DescMessage, DescField[]>();

function fieldsToCheck(desc: DescMessage): DescField[] {
  let fields = checkedFields.get(desc);
  if (fields === undefined) {
    fields = desc.fields.filter((f) => mayHoldUnstorable(f, new Set()));
    checkedFields.set(desc, fields);
  }
  return fields;
}

function mayHoldUnstorable(field: DescField, seen: Set<DescMessage>): boolean {
  const scalar = field.fieldKind === "scalar" || field.fieldKind === "list" || field.fieldKind === "map" ? field.scalar : undefined;
  if (scalar === ScalarType.STRING || (field.fieldKind === "map" && field.mapKey === ScalarType.STRING)) return true;
  const message = field.message;
  if (message === undefined || seen.has(message)) return false;
  if (message.typeName === "google.protobuf.Timestamp" || message.typeName === "google.protobuf.Duration") return true;
  seen.add(message);
  return message.fields.some((f) => mayHoldUnstorable(f, seen));
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
