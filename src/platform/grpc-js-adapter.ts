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
import { create, fromBinary, isMessage, toBinary, type DescMessage, type DescService } from "@bufbuild/protobuf";
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
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import * as grpc from "@grpc/grpc-js";
import { callAbortKey, type CallAbort } from "./deadline.js";
import { canceled, deadlineExceeded, unimplemented } from "./errors.js";

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
  context: HandlerContext;
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
      definition[method.localName] = {
        path: `/${service.typeName}/${method.name}`,
        requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
        responseStream,
        requestSerialize: (message: unknown) => Buffer.from(toBinary(method.input, message as never)),
        requestDeserialize: (bytes: Buffer) => fromBinary(method.input, bytes),
        // A streamed message object that several streams send (a chat message fanned out) is encoded once.
        responseSerialize: responseStream ? encodeOnce(encode) : encode,
        responseDeserialize: (bytes: Buffer) => fromBinary(method.output, bytes),
        originalName: method.localName,
      };
      implementation[method.localName] = this.implement(m);
    }
    this.server.addService(definition, implementation);
  }

  /** One interceptor chain per method, built here once; each call finds its context in its context values. */
  private implement(spec: MethodImplSpec): grpc.UntypedHandleCall {
    const { method } = spec;
    const output = method.output;
    const innermost: Fn = async (req) => {
      const { context } = req.contextValues.get(callStateKey)!;
      // The interceptors change the call's headers and values in place; only a replaced header object needs a copy
      // (the copy reads the signal, which creates it).
      const ctx: HandlerContext = req.header === context.requestHeader ? context : { ...context, requestHeader: req.header };
      const common = { service: method.parent, header: context.responseHeader, trailer: context.responseTrailer };
      switch (spec.kind) {
        case "unary":
          return { ...common, stream: false, method, message: normalize(output, await spec.impl(req.message as never, ctx)) } as UnaryResponse;
        case "client_streaming":
          return { ...common, stream: true, method, message: once(normalize(output, await spec.impl(req.message as never, ctx))) } as StreamResponse;
        case "server_streaming":
          return { ...common, stream: true, method, message: normalizeAll(output, spec.impl(await single(req.message as AsyncIterable<never>), ctx)) } as StreamResponse;
        case "bidi_streaming":
          return { ...common, stream: true, method, message: normalizeAll(output, spec.impl(req.message as never, ctx)) } as StreamResponse;
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
              c.onCancel = () => void it.throw?.(c.abort.reason).catch(() => undefined);
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

  private startCall(spec: MethodImplSpec, call: SurfaceCall) {
    const { shutdownSignal } = this.options;
    const { method } = spec;
    const deadline = call.getDeadline();
    const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
    const requestHeader = new Headers();
    for (const [key, value] of Object.entries(call.metadata.getMap())) {
      requestHeader.set(key, typeof value === "string" ? value : (value as Buffer).toString("base64"));
    }
    const values = this.options.contextValues({ metadata: call.metadata, peer: call.getPeer() });
    // The call's AbortSignal is made only when asked for (most unary calls never do), then aborted with the
    // reason the call already has; everything else hears about the end through `abort` (CallAbort).
    let controller: AbortController | undefined;
    let reason: unknown;
    let listeners: (() => void)[] | undefined;
    const signal = () => {
      if (!controller) {
        controller = new AbortController();
        if (reason !== undefined) controller.abort(reason);
      }
      return controller.signal;
    };
    const abort: CallAbort & { fire(why: unknown): void } = {
      get reason() {
        return reason;
      },
      onAbort(listener) {
        (listeners ??= []).push(listener);
        return () => {
          const i = listeners!.indexOf(listener);
          if (i >= 0) listeners!.splice(i, 1);
        };
      },
      fire(why) {
        if (reason !== undefined) return;
        reason = why;
        controller?.abort(why);
        for (const listener of listeners?.splice(0) ?? []) listener();
      },
    };
    values.set(callAbortKey, abort);
    const url = `/${method.parent.typeName}/${method.name}`;
    const context: HandlerContext = {
      method,
      service: method.parent,
      get signal() {
        return signal();
      },
      timeoutMs: () => (Number.isFinite(deadlineMs) ? deadlineMs - Date.now() : undefined),
      requestMethod: "POST",
      requestHeader,
      responseHeader: new Headers(),
      responseTrailer: new Headers(),
      protocolName: "grpc",
      values,
      url,
    };
    values.set(callStateKey, { spec, context });
    let headerSent = false;
    const inFlight = this.inFlight;
    const onShutdown = (why: unknown) => abort.fire(why);
    if (shutdownSignal.aborted) onShutdown(shutdownSignal.reason);
    else inFlight.add(onShutdown);
    const state = {
      canceled: false,
      onCancel: undefined as (() => void) | undefined,
      abort,
      /** The request the interceptor chain gets (its signal, too, made when first read). */
      requestOf(stream: boolean, message: unknown) {
        return {
          stream,
          service: method.parent,
          method,
          requestMethod: "POST",
          url,
          get signal() {
            return signal();
          },
          header: requestHeader,
          contextValues: values,
          message,
        };
      },
      sendHeader() {
        if (headerSent) return;
        headerSent = true;
        const md = toMetadata(context.responseHeader);
        if (md) call.sendMetadata(md);
      },
      trailer: () => toMetadata(context.responseTrailer),
      status(err: unknown): grpc.StatusObject {
        const error = err instanceof ConnectError ? err : new ConnectError("internal error", Code.Internal, undefined, undefined, err);
        state.sendHeader();
        const trailer = setTrailerStatus(new Headers(context.responseTrailer), error);
        return { code: error.code as number, details: error.rawMessage, metadata: toMetadata(trailer) ?? new grpc.Metadata() };
      },
      end() {
        inFlight.delete(onShutdown);
        abort.fire(CALL_ENDED);
      },
    };
    // grpc-js reports a passed deadline and a client's RST_STREAM alike as "cancelled".
    call.once("cancelled", () => {
      state.canceled = true;
      abort.fire(Date.now() >= deadlineMs ? deadlineExceeded("the operation timed out") : CLIENT_CANCELED);
      state.onCancel?.();
    });
    return state;
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

function normalize(desc: DescMessage, message: unknown) {
  return isMessage(message, desc) ? message : create(desc, message as never);
}

async function* normalizeAll(desc: DescMessage, source: AsyncIterable<unknown>) {
  for await (const m of source) yield normalize(desc, m);
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
