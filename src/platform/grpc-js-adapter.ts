/**
 * Native gRPC (HTTP/2, application/grpc) served by @grpc/grpc-js with the same
 * handlers and the same Connect interceptors as the Connect-node side.
 *
 * Connect-node stays the server of the HTTP/2 sessions (one port, one session
 * per connection) and of Connect and gRPC-Web; only streams whose content-type
 * is protobuf gRPC are handed to grpc-js, one stream at a time. Per stream, not
 * per connection: Envoy and Connect clients send Connect, gRPC-Web and gRPC
 * calls over the same upstream HTTP/2 connection.
 *
 * Every call runs through one interceptor chain built once per method (the
 * request id, access log, metrics, error mapping, deadline, auth and
 * validation interceptors of src/server.ts), and errors leave as Connect's own
 * gRPC protocol writes them: grpc-status, grpc-message and google.rpc.Status in
 * grpc-status-details-bin.
 */
import type http2 from "node:http2";
import { create, fromBinary, isMessage, ScalarType, toBinary, type DescMessage, type DescMethod, type DescService, type Message } from "@bufbuild/protobuf";
import { reflect } from "@bufbuild/protobuf/reflect";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { anyPack } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createContextKey,
  createContextValues,
  createServiceImplSpec,
  type ConnectRouter,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type ServiceImpl,
  type StreamRequest,
  type StreamResponse,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import type { UniversalHandlerOptions } from "@connectrpc/connect/protocol";
import * as grpc from "@grpc/grpc-js";
import { StatusSchema, type Status } from "../../gen/google/rpc/status_pb.js";
import { callAbortKey, type CallAbort } from "./deadline.js";
import { canceled, deadlineExceeded, unimplemented } from "./errors.js";
import { watchIterable } from "./streams.js";

type Fn = (req: UnaryRequest | StreamRequest) => Promise<UnaryResponse | StreamResponse>;

/** The services `routes` registers, recorded once so both servers share the same handler objects. */
export function recordRoutes(routes: (router: ConnectRouter) => void): {
  services: RecordedService[];
  replay: (router: ConnectRouter) => void;
} {
  const services: RecordedService[] = [];
  const recorder = {
    service(service: DescService, impl: Partial<ServiceImpl<DescService>>, options?: Partial<UniversalHandlerOptions>) {
      services.push({ service, impl, options });
      return recorder;
    },
    rpc() {
      throw new Error("recordRoutes: register whole services (router.service)");
    },
  } as unknown as ConnectRouter;
  routes(recorder);
  // Per-service options (the file service's compression settings) apply on replay too.
  return { services, replay: (router) => void services.forEach((s) => router.service(s.service, s.impl, s.options)) };
}

interface RecordedService {
  service: DescService;
  impl: Partial<ServiceImpl<DescService>>;
  options?: Partial<UniversalHandlerOptions>;
}

export interface GrpcJsAdapterOptions {
  services: RecordedService[];
  /** Outermost first, as connectNodeAdapter takes them. */
  interceptors: Interceptor[];
  shutdownSignal: AbortSignal;
  maxMessageBytes: number;
  contextValues: (call: { metadata: grpc.Metadata; peer: string }) => ContextValues;
}

type SurfaceCall = Pick<grpc.ServerUnaryCall<unknown, unknown>, "metadata" | "getPeer" | "getDeadline" | "sendMetadata"> & {
  once(event: "cancelled", listener: () => void): unknown;
};

/** Per call: what the innermost function of the prebuilt chain needs beyond the request. */
interface CallState {
  spec: MethodImplSpec;
  context: AdapterContext;
}
const callStateKey = createContextKey<CallState | undefined>(undefined, { description: "grpc-js adapter call" });

/** Content types grpc-js serves (binary protobuf gRPC); gRPC with JSON, gRPC-Web and Connect stay on Connect-node. */
const GRPC_PROTO = /^application\/grpc(\+proto)?(;|$)/i;
/** Response headers Connect sets that are grpc-js's own business on this side. */
const RESERVED = new Set(["content-type", "grpc-status", "grpc-message", "grpc-encoding", "grpc-accept-encoding"]);
/** Request encodings grpc-js decodes (it never compresses what it sends here). */
const GRPC_JS_ENCODINGS = ["identity", "gzip", "deflate"];
const CALL_ENDED = canceled("CALL_ENDED", "the call ended");
const CLIENT_CANCELED = canceled("CLIENT_GONE", "the client canceled the call");

export class GrpcJsAdapter {
  private readonly server: grpc.Server;
  private readonly streamHandler: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;

  /** Aborts the signal of every call in flight; one shutdown listener for all of them, not one per call. */
  private readonly inFlight = new Set<(reason: unknown) => void>();

  constructor(private readonly options: GrpcJsAdapterOptions) {
    options.shutdownSignal.addEventListener("abort", () => this.inFlight.forEach((abort) => abort(options.shutdownSignal.reason)), { once: true });
    this.server = new grpc.Server({
      "grpc.max_receive_message_length": options.maxMessageBytes,
      "grpc.max_send_message_length": -1,
      // No channelz bookkeeping per call; /metrics has the call counts.
      "grpc.enable_channelz": 0,
    });
    for (const { service, impl } of options.services) this.addService(service, impl);
    // grpc-js's handler of one incoming HTTP/2 stream: what its own listener and
    // createConnectionInjector run for each stream of the sessions they own.
    const handler = (this.server as unknown as { _streamHandler?: (...args: unknown[]) => void })._streamHandler;
    if (typeof handler !== "function") throw new Error("this @grpc/grpc-js has no per-stream handler: the adapter is written against 1.14 (GRPC_SERVER=connect serves gRPC without it)");
    this.streamHandler = handler.bind(this.server, []);
  }

  /** Takes the stream if it is a protobuf gRPC call; false leaves it to Connect-node. */
  handleStream = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): boolean => {
    const type = headers["content-type"];
    if (headers[":method"] !== "POST" || typeof type !== "string" || !GRPC_PROTO.test(type)) return false;
    const encoding = String(headers["grpc-encoding"] ?? "identity");
    if (!GRPC_JS_ENCODINGS.includes(encoding)) {
      // grpc-js would refuse it too, without saying what it takes.
      const message = `unknown compression "${encoding}": supported encodings are ${GRPC_JS_ENCODINGS.join(", ")}`;
      stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": String(Code.Unimplemented), "grpc-message": encodeURIComponent(message) }, { endStream: true });
      return true;
    }
    this.streamHandler(stream, headers);
    return true;
  };

  private addService(service: DescService, impl: Partial<ServiceImpl<DescService>>): void {
    const spec = createServiceImplSpec(service, impl);
    const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
    const implementation: grpc.UntypedServiceImplementation = {};
    for (const method of service.methods) {
      const m = spec.methods[method.localName]!;
      const responseStream = method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming";
      const encode = (message: unknown) => {
        const bytes = toBinary(method.output, message as never);
        return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      };
      // A streamed message object that several streams send (a chat message fanned out) is encoded once.
      const cached = responseStream ? encodeOnce(encode) : encode;
      const bulk = bulkEncoder(method.output);
      definition[method.localName] = {
        path: `/${service.typeName}/${method.name}`,
        requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
        responseStream,
        requestSerialize: (message: unknown) => Buffer.from(toBinary(method.input, message as never)),
        requestDeserialize: (bytes: Buffer) => fromBinary(method.input, bytes),
        responseSerialize: bulk ? (message: unknown) => bulk(message) ?? cached(message) : cached,
        responseDeserialize: (bytes: Buffer) => fromBinary(method.output, bytes),
        originalName: method.localName,
      };
      implementation[method.localName] = this.implement(m);
    }
    this.server.addService(definition, implementation);
  }

  /** One interceptor chain per method, built here once; each call finds its context in its context values. */
  private implement(spec: MethodImplSpec): grpc.UntypedHandleCall {
    const output = spec.method.output;
    const innermost: Fn = async (req) => {
      const { context } = req.contextValues.get(callStateKey)!;
      // The interceptors change the call's headers and values in place; only a replaced header object needs a copy.
      const ctx: HandlerContext = req.header === context.requestHeader ? context : context.withRequestHeader(req.header);
      switch (spec.kind) {
        case "unary":
          return responseOf(context, false, normalize(output, await spec.impl(req.message as never, ctx)));
        case "client_streaming":
          return responseOf(context, true, once(normalize(output, await spec.impl(req.message as never, ctx))));
        case "server_streaming":
          return responseOf(context, true, normalizeAll(output, spec.impl(await single(req.message as AsyncIterable<never>), ctx)));
        case "bidi_streaming":
          return responseOf(context, true, normalizeAll(output, spec.impl(req.message as never, ctx)));
      }
    };
    let next = innermost;
    for (const interceptor of [...this.options.interceptors].reverse()) next = interceptor(next as never) as Fn;
    const chain = next;

    switch (spec.kind) {
      case "unary":
        return (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          const c = this.startCall(spec, call);
          const req = c.requestOf(false, call.request) as UnaryRequest;
          chain(req).then(
            (res) => {
              c.sendHeader();
              callback(null, res.message, c.trailer());
              c.end();
            },
            (err: unknown) => {
              callback(c.status(err));
              c.end();
            },
          );
        };
      case "client_streaming":
        return (call: grpc.ServerReadableStream<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          const c = this.startCall(spec, call);
          const req = c.requestOf(true, messagesOf(call)) as StreamRequest;
          chain(req)
            .then(async (res) => {
              let message: unknown;
              for await (const m of res.message as AsyncIterable<unknown>) message = m;
              c.sendHeader();
              callback(null, message, c.trailer());
            })
            .catch((err: unknown) => callback(c.status(err)))
            .finally(() => c.end());
        };
      case "server_streaming":
      case "bidi_streaming":
        return (call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>) => {
          const c = this.startCall(spec, call);
          const input =
            spec.kind === "bidi_streaming"
              ? messagesOf(call as grpc.ServerDuplexStream<unknown, unknown>)
              : once((call as grpc.ServerWritableStream<unknown, unknown>).request);
          const req = c.requestOf(true, input) as StreamRequest;
          void (async () => {
            try {
              const res = (await chain(req)) as StreamResponse;
              const it = res.message[Symbol.asyncIterator]();
              // Ends the handler's generator with the reason (its finally blocks run; the access log says CANCELED or DEADLINE_EXCEEDED).
              c.onCancel = () => void it.throw?.(c.reason).catch(() => undefined);
              c.sendHeader();
              // One message at a time, each handed to HTTP/2 before the next is pulled (as Connect-node does):
              // a reader that does not keep up leaves its events in the handler's bounded queue, not in ours.
              for (let r = await it.next(); !r.done; r = await it.next()) {
                if (c.canceled) break;
                await new Promise<void>((resolve) => call.write(r.value, () => resolve()));
              }
              if (!c.canceled) call.end(c.trailer());
            } catch (err) {
              if (!c.canceled) call.emit("error", c.status(err));
            } finally {
              c.end();
            }
          })();
        };
    }
  }

  private startCall(spec: MethodImplSpec, call: SurfaceCall): AdapterCall {
    const values = this.options.contextValues({ metadata: call.metadata, peer: call.getPeer() });
    const c = new AdapterCall(spec, call, values, this.inFlight);
    const { shutdownSignal } = this.options;
    if (shutdownSignal.aborted) c.fire(shutdownSignal.reason);
    return c;
  }
}

/**
 * One call on the grpc-js side: its Connect HandlerContext, its CallAbort (the
 * reason it ended, and who to tell) and what the adapter does at its end.
 * Classes with getters on the prototype, not object literals with accessors:
 * V8 builds a literal with an accessor through the runtime, a few microseconds
 * each, and a call made three of them.
 */
class AdapterCall implements CallAbort {
  canceled = false;
  onCancel: (() => void) | undefined;
  readonly context: AdapterContext;
  readonly requestHeader = new Headers();
  private controller: AbortController | undefined;
  private abortReason: unknown;
  private listeners: (() => void)[] | undefined;
  private headerSent = false;
  private readonly deadlineMs: number;
  private readonly onShutdown = (why: unknown) => this.fire(why);

  constructor(
    spec: MethodImplSpec,
    private readonly call: SurfaceCall,
    values: ContextValues,
    private readonly inFlight: Set<(reason: unknown) => void>,
  ) {
    const deadline = call.getDeadline();
    this.deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
    const map = call.metadata.getMap();
    for (const key in map) {
      const value = map[key]!;
      this.requestHeader.set(key, typeof value === "string" ? value : value.toString("base64"));
    }
    values.set(callAbortKey, this);
    this.context = new AdapterContext(spec.method, this, values);
    values.set(callStateKey, { spec, context: this.context });
    inFlight.add(this.onShutdown);
    // grpc-js reports a passed deadline and a client's RST_STREAM alike as "cancelled".
    call.once("cancelled", () => {
      this.canceled = true;
      this.fire(Date.now() >= this.deadlineMs ? deadlineExceeded("the operation timed out") : CLIENT_CANCELED);
      this.onCancel?.();
    });
  }

  get reason(): unknown {
    return this.abortReason;
  }

  /** The call's AbortSignal, made only when asked for (most unary calls never do), aborted with the reason the call already has. */
  signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason !== undefined) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  timeoutMs(): number | undefined {
    return Number.isFinite(this.deadlineMs) ? this.deadlineMs - Date.now() : undefined;
  }

  onAbort(listener: () => void): () => void {
    (this.listeners ??= []).push(listener);
    return () => {
      const i = this.listeners!.indexOf(listener);
      if (i >= 0) this.listeners!.splice(i, 1);
    };
  }

  /** Ends the call with `why`, once: the signal (if made) is aborted and every onAbort listener told. */
  fire(why: unknown): void {
    if (this.abortReason !== undefined) return;
    this.abortReason = why;
    this.controller?.abort(why);
    for (const listener of this.listeners?.splice(0) ?? []) listener();
  }

  /** The request the interceptor chain gets (its signal, too, made when first read). */
  requestOf(stream: boolean, message: unknown): UnaryRequest | StreamRequest {
    return new AdapterRequest(this, stream, message) as unknown as UnaryRequest | StreamRequest;
  }

  sendHeader(): void {
    if (this.headerSent) return;
    this.headerSent = true;
    const md = toMetadata(this.context.responseHeader);
    if (md) this.call.sendMetadata(md);
  }

  trailer(): grpc.Metadata | undefined {
    return toMetadata(this.context.responseTrailer);
  }

  status(err: unknown): grpc.StatusObject {
    const error = err instanceof ConnectError ? err : new ConnectError("internal error", Code.Internal, undefined, undefined, err);
    this.sendHeader();
    return { code: error.code as number, details: error.rawMessage, metadata: errorTrailer(this.context.responseTrailer, error) };
  }

  end(): void {
    this.inFlight.delete(this.onShutdown);
    this.fire(CALL_ENDED);
  }
}

/** Connect's HandlerContext of an AdapterCall. */
class AdapterContext implements HandlerContext {
  readonly service: DescService;
  readonly requestMethod = "POST";
  readonly requestHeader: Headers;
  readonly responseHeader = new Headers();
  readonly responseTrailer = new Headers();
  readonly protocolName = "grpc";
  readonly url: string;

  constructor(
    readonly method: DescMethod,
    private readonly call: AdapterCall,
    readonly values: ContextValues,
  ) {
    this.service = method.parent;
    this.requestHeader = call.requestHeader;
    this.url = `/${method.parent.typeName}/${method.name}`;
  }

  get signal(): AbortSignal {
    return this.call.signal();
  }

  timeoutMs(): number | undefined {
    return this.call.timeoutMs();
  }

  /** This context with another request header object (an interceptor replaced it); everything else is shared. */
  withRequestHeader(requestHeader: Headers): HandlerContext {
    return Object.assign(Object.create(this) as AdapterContext, { requestHeader });
  }
}

/** The UnaryRequest or StreamRequest of an AdapterCall. */
class AdapterRequest {
  readonly service: DescService;
  readonly method: DescMethod;
  readonly requestMethod = "POST";
  readonly url: string;
  readonly header: Headers;
  readonly contextValues: ContextValues;

  constructor(
    private readonly call: AdapterCall,
    readonly stream: boolean,
    readonly message: unknown,
  ) {
    this.method = call.context.method;
    this.service = call.context.service;
    this.url = call.context.url;
    this.header = call.requestHeader;
    this.contextValues = call.context.values;
  }

  get signal(): AbortSignal {
    return this.call.signal();
  }
}

/**
 * Encodes each message object once, however many streams send it (grpc-js copies
 * the bytes into each frame). Streamed messages are not changed once yielded.
 */
function encodeOnce(encode: (message: unknown) => Buffer): (message: unknown) => Buffer {
  const encoded = new WeakMap<object, Buffer>();
  return (message) => {
    let bytes = encoded.get(message as object);
    if (!bytes) encoded.set(message as object, (bytes = encode(message)));
    return bytes;
  };
}

/** A bytes field at least this long is encoded by bulkEncoder. */
const BULK_BYTES = 64 * 1024;

/**
 * For a message type with bytes fields: encodes a message carrying a large one (a file's chunk) into one
 * buffer kept for the next message, instead of a new buffer per message. grpc-js copies the encoding into
 * its frame before it asks for the next one, so the buffer is free again by then (and such an encoding is
 * never cached). Without it a 1 MiB chunk took two new buffers (protobuf-es's and grpc-js's) and downloads
 * ran at less than half the speed, collecting garbage (docs/request-path.md, item 5). Returns undefined for
 * any other message.
 */
export function bulkEncoder(desc: DescMessage): ((message: unknown) => Buffer | undefined) | undefined {
  const fields = desc.fields.filter((f) => f.fieldKind === "scalar" && f.scalar === ScalarType.BYTES);
  if (fields.length === 0) return undefined;
  let buffer = Buffer.alloc(0);
  return (message) => {
    const r = reflect(desc, message as Message);
    const field = fields.find((f) => r.isSet(f) && (r.get(f) as Uint8Array).length >= BULK_BYTES);
    if (!field) return undefined;
    const bytes = r.get(field) as Uint8Array;
    // The other fields first (on the wire, fields may come in any order), then the large one's tag and length.
    const rest = reflect(desc, { ...(message as Message) });
    rest.clear(field);
    const head = new BinaryWriter().raw(toBinary(desc, rest.message)).tag(field.number, WireType.LengthDelimited).uint32(bytes.length).finish();
    const size = head.length + bytes.length;
    if (buffer.length < size) buffer = Buffer.allocUnsafe(size);
    buffer.set(head);
    buffer.set(bytes, head.length);
    return buffer.subarray(0, size);
  };
}

const STATUS_DETAILS = "grpc-status-details-bin";

/**
 * The google.rpc.Status of an error, as Connect's gRPC protocol writes it (setTrailerStatus). The adapter hands
 * grpc-js its bytes, which grpc-js spells in base64 itself: setTrailerStatus returns them in base64, spelled a
 * character at a time in JavaScript on Node 20 (some 20 KiB of strings for an ALREADY_EXISTS with its details),
 * which toMetadata then had to decode again.
 */
function statusOf(error: ConnectError): Status {
  return create(StatusSchema, {
    code: error.code,
    message: error.rawMessage,
    details: error.details.map((d) => ("desc" in d ? anyPack(d.desc, create(d.desc, d.value)) : { typeUrl: `type.googleapis.com/${d.type}`, value: d.value })),
  });
}

/** The trailers of a call that ends with `error`: the handler's, the error's metadata, and its details (grpc-js adds grpc-status and grpc-message). */
export function errorTrailer(responseTrailer: Headers, error: ConnectError): grpc.Metadata {
  const trailer = new Headers(responseTrailer);
  error.metadata.forEach((value, key) => trailer.append(key, value));
  const metadata = toMetadata(trailer) ?? new grpc.Metadata();
  if (error.details.length > 0) metadata.set(STATUS_DETAILS, Buffer.from(toBinary(StatusSchema, statusOf(error))));
  return metadata;
}

/** Connect headers as grpc-js metadata (binary values decoded), without the protocol's own fields; undefined when empty. */
function toMetadata(headers: Headers): grpc.Metadata | undefined {
  let md: grpc.Metadata | undefined;
  headers.forEach((value, key) => {
    if (RESERVED.has(key)) return;
    md ??= new grpc.Metadata();
    if (key.endsWith("-bin")) for (const v of value.split(/,\s*/)) md.add(key, Buffer.from(v, "base64"));
    else md.add(key, value);
  });
  return md;
}

/** The chain's response, built field by field: a spread of an object made before an await cost V8 ~10 µs per call. */
function responseOf(context: AdapterContext, stream: boolean, message: unknown): UnaryResponse | StreamResponse {
  const { method, service, responseHeader: header, responseTrailer: trailer } = context;
  return { service, method, header, trailer, stream, message } as UnaryResponse | StreamResponse;
}

function normalize(desc: DescMessage, message: unknown) {
  return isMessage(message, desc) ? message : create(desc, message as never);
}

function normalizeAll(desc: DescMessage, source: AsyncIterable<unknown>) {
  return watchIterable(source, { value: (m) => normalize(desc, m) });
}

/** The messages a client streams; a handler that stops reading early leaves the call (and its sending side) open. */
function messagesOf(call: grpc.ServerReadableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>): AsyncIterable<unknown> {
  return { [Symbol.asyncIterator]: () => call.iterator({ destroyOnReturn: false }) };
}

async function* once<T>(value: T) {
  yield value;
}

async function single<T>(source: AsyncIterable<T>): Promise<T> {
  for await (const m of source) return m;
  throw unimplemented("MISSING_MESSAGE", "protocol error: missing input message");
}
