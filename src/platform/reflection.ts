// gRPC server reflection (grpc.reflection.v1 and v1alpha, which are wire-identical) from one implementation,
// so grpcurl / grpcui / Postman can discover services without local .proto files.
import { create, toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

// The request oneof, minus the version-specific $typeName so both versions fit.
type MessageRequest =
  | { case: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType" | "listServices"; value: string }
  | { case: "fileContainingExtension"; value: { containingType: string; extensionNumber: number } }
  | { case: undefined; value?: undefined };

// The response oneof as init shapes accepted by create() for either version.
type MessageResponse =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

const NOT_FOUND = 5; // grpc::StatusCode::NOT_FOUND
const INVALID_ARGUMENT = 3;

/** Index over the files of `services` and their transitive dependencies, built once. */
class DescriptorIndex {
  readonly files = new Map<string, DescFile>();
  readonly symbols = new Map<string, DescFile>();
  readonly extensions = new Map<string, Map<number, DescFile>>(); // extendee full name -> number -> file
  readonly serviceNames: string[];
  private readonly bytes = new Map<string, Uint8Array>();

  constructor(services: DescService[], extraFiles: DescFile[]) {
    this.serviceNames = [...new Set(services.map((s) => s.typeName))];
    for (const s of services) this.addFile(s.file);
    for (const f of extraFiles) this.addFile(f);
  }

  private addFile(file: DescFile): void {
    if (this.files.has(file.proto.name)) return;
    this.files.set(file.proto.name, file);
    this.bytes.set(file.proto.name, toBinary(FileDescriptorProtoSchema, file.proto));
    // nestedTypes() recurses into messages, so nested messages, enums and extensions are indexed too.
    for (const type of nestedTypes(file)) {
      this.symbols.set(type.typeName, file);
      if (type.kind === "service") for (const m of type.methods) this.symbols.set(`${type.typeName}.${m.name}`, file);
      if (type.kind === "extension") {
        const byNumber = this.extensions.get(type.extendee.typeName) ?? new Map<number, DescFile>();
        byNumber.set(type.number, file);
        this.extensions.set(type.extendee.typeName, byNumber);
      }
    }
    for (const dep of file.dependencies) this.addFile(dep);
  }

  /** `file` first (always, clients need it), then its transitive deps not yet in `sent`. */
  withDeps(file: DescFile, sent: Set<string>): Uint8Array[] {
    const out: Uint8Array[] = [];
    const visit = (f: DescFile, force: boolean) => {
      if (sent.has(f.proto.name) && !force) return;
      sent.add(f.proto.name);
      out.push(this.bytes.get(f.proto.name)!); // every reachable file was indexed in addFile
      for (const dep of f.dependencies) visit(dep, false);
    };
    visit(file, true);
    return out;
  }
}

function answer(index: DescriptorIndex, req: MessageRequest, sent: Set<string>): MessageResponse {
  const notFound = (what: string): MessageResponse => ({
    case: "errorResponse",
    value: { errorCode: NOT_FOUND, errorMessage: `${what} not found` },
  });
  const files = (file: DescFile | undefined, what: string): MessageResponse =>
    file
      ? { case: "fileDescriptorResponse", value: { fileDescriptorProto: index.withDeps(file, sent) } }
      : notFound(what);
  switch (req.case) {
    case "listServices":
      return { case: "listServicesResponse", value: { service: index.serviceNames.map((name) => ({ name })) } };
    case "fileByFilename":
      return files(index.files.get(req.value), `file "${req.value}"`);
    case "fileContainingSymbol":
      return files(index.symbols.get(req.value), `symbol "${req.value}"`);
    case "fileContainingExtension": {
      const { containingType, extensionNumber } = req.value;
      return files(
        index.extensions.get(containingType)?.get(extensionNumber),
        `extension ${extensionNumber} of "${containingType}"`,
      );
    }
    case "allExtensionNumbersOfType": {
      // Only messages we know count; an unknown type is NOT_FOUND rather than "no extensions".
      if (!index.symbols.has(req.value)) return notFound(`type "${req.value}"`);
      const numbers = [...(index.extensions.get(req.value)?.keys() ?? [])];
      return { case: "allExtensionNumbersResponse", value: { baseTypeName: req.value, extensionNumber: numbers } };
    }
    default:
      return { case: "errorResponse", value: { errorCode: INVALID_ARGUMENT, errorMessage: "empty message_request" } };
  }
}

/**
 * Serves reflection for `services` (pass every service the server exposes, Health included).
 * list_services returns those names plus the two reflection services. `extraFiles`
 * are served too: error detail types (google.rpc.*) no service file imports, so
 * that clients such as grpcurl can decode the details of an error.
 */
export function registerReflection(router: ConnectRouter, services: DescService[], extraFiles: DescFile[] = []): void {
  const index = new DescriptorIndex([...services, v1.ServerReflection, v1alpha.ServerReflection], extraFiles);

  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      const sent = new Set<string>(); // per stream: do not resend files (like grpc-go)
      for await (const req of requests) {
        const messageResponse = answer(index, req.messageRequest, sent);
        yield create(v1.ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse });
      }
    },
  });
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      const sent = new Set<string>();
      for await (const req of requests) {
        const messageResponse = answer(index, req.messageRequest, sent);
        yield create(v1alpha.ServerReflectionResponseSchema, {
          validHost: req.host,
          originalRequest: req,
          messageResponse,
        });
      }
    },
  });
}
