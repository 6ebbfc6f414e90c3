import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { EventEmitter } from "node:events";
import type { Readable } from "node:stream";

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

// Every HTTP/2 cleartext connection with prior knowledge opens with this preface.
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** HTTP/2 receive windows per stream and per connection (what a client may send ahead of our reads), as Envoy's. */
const STREAM_WINDOW = 4 * 1024 * 1024;
const CONNECTION_WINDOW = 16 * 1024 * 1024;

export interface ListenerOptions {
  maxConcurrentStreams: number;
  /** Bytes a single header block may take. */
  maxHeaderBytes?: number;
  timeouts: ConnectionTimeouts;
  /** Paths (`/package.Service/Method`) whose request body is a stream (client streaming, bidi): not bound by `requestBodyMs`. */
  streamingRequestPaths?: ReadonlySet<string>;
  /** Sees every HTTP/2 stream first and returns true for those it serves itself (native gRPC: grpc-js-adapter.ts). */
  takeStream?: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;
}

/** Bounds on connections that never send a complete request (each in milliseconds). */
export interface ConnectionTimeouts {
  /** From accept to the first bytes (the protocol sniff). */
  firstBytesMs: number;
  /** From the first bytes to a complete request head: HTTP/1.1 headers, or an HTTP/2 connection's first stream. */
  headersMs: number;
  /** From a request's head to the end of its body, for requests that are one message (unary and server streaming). */
  requestBodyMs: number;
  /** A connection with no request in flight is closed after this (HTTP/1.1 keep-alive, HTTP/2 with no open stream). */
  idleMs: number;
}

/**
 * Connections the kernel may hold for the listener before it accepts them. With Node's default, 511, a burst of
 * 1,000 connections arriving while the event loop is busy (a reconnect storm after a restart; the game bench opens
 * 1,000 at once) overflows the queue: Linux drops the SYN of a connection that finds it full, and its client tries
 * again 1 s later, then 3 s. Linux caps this at net.core.somaxconn (4096 by default since 5.4).
 */
const LISTEN_BACKLOG = 4096;

/**
 * One TCP port for every protocol: HTTP/2 with prior knowledge (gRPC, as
 * `grpcurl -plaintext` speaks it) and HTTP/1.1 (Connect with JSON from curl,
 * gRPC-Web). Node's http2 server falls back to HTTP/1 only under TLS (ALPN), so
 * the first bytes of each connection are sniffed and the socket is handed to the
 * matching server.
 */
export class DualProtocolListener {
  readonly tcp: net.Server;
  private readonly h1: http.Server;
  private readonly h2: http2.Http2Server;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly sockets = new Set<net.Socket>();
  /** HTTP/1 requests in flight per socket: an idle keep-alive socket can be closed at once. */
  private readonly h1InFlight = new Map<net.Socket, number>();
  private readonly h2Sockets = new WeakSet<net.Socket>();
  /** One timer per connection while it owes us something: its first bytes, a request head, or a request while idle. */
  private readonly waiting = new Map<net.Socket | http2.ServerHttp2Session, NodeJS.Timeout>();
  private closing = false;

  constructor(handler: Handler, private readonly options: ListenerOptions) {
    const t = options.timeouts;
    this.h1 = http.createServer({ maxHeaderSize: options.maxHeaderBytes ?? 16 * 1024, requestTimeout: 0 }, handler);
    // This server never listen()s itself, so Node's headersTimeout/requestTimeout checks (started by
    // 'listening') never run: the head, the body and idle keep-alive time are bounded here instead.
    // A socket timeout still bounds a request in flight that moves no byte either way.
    this.h1.keepAliveTimeout = t.idleMs;
    this.h1.timeout = Math.max(t.idleMs, t.requestBodyMs);
    this.h1.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
      const socket = req.socket;
      this.clearWait(socket);
      this.h1InFlight.set(socket, (this.h1InFlight.get(socket) ?? 0) + 1);
      if (!req.complete) this.boundBody(req.url, req, res, () => socket.destroy());
      if (this.closing) res.setHeader("connection", "close");
      res.once("close", () => {
        const left = (this.h1InFlight.get(socket) ?? 1) - 1;
        this.h1InFlight.set(socket, left);
        if (this.closing && left === 0) socket.end();
        // Keep-alive: the next request's head must arrive within the idle bound.
        else if (left === 0 && !socket.destroyed) this.wait(socket, t.idleMs, () => socket.destroy());
      });
    });
    this.h2 = http2.createServer(
      {
        settings: {
          maxConcurrentStreams: options.maxConcurrentStreams,
          maxHeaderListSize: options.maxHeaderBytes ?? 16 * 1024,
          // Bulk transfers (file uploads) need more than HTTP/2's 64 KiB in flight: the same windows as the gateway's.
          initialWindowSize: STREAM_WINDOW,
        },
        maxSessionInvalidFrames: 100,
        maxSessionRejectedStreams: 100,
      },
      handler,
    );
    if (options.takeStream) routeStreams(this.h2, options.takeStream);
    this.h2.on("session", (session) => {
      this.sessions.add(session);
      session.setLocalWindowSize(CONNECTION_WINDOW);
      let open = 0;
      // Closing an idle connection races the peer's next request (Envoy keeps idle upstream connections
      // and may send one at that moment): a plain GOAWAY would leave that request refused or cut mid-way.
      // So the shutdown notice first (GOAWAY with the largest stream id: nothing refused, the peer opens
      // no new stream), then a PING round trip, after which every stream the peer sent before the notice
      // has arrived; then the real GOAWAY, which lets those streams finish (as grpc-go does). Node's own
      // client closes on the notice without answering the PING: the 1 s fallback covers it.
      const idle = () => {
        if (open > 0 || session.closed || session.destroyed) return;
        session.goaway(http2.constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
        let timer: NodeJS.Timeout | undefined;
        const close = () => {
          clearTimeout(timer);
          if (!session.closed && !session.destroyed) session.close();
        };
        // A peer that does not answer the PING is closed all the same, shortly after.
        timer = setTimeout(close, 1000).unref();
        if (!session.ping(close)) close();
      };
      // A session that only sent its preface (or a head that never completes) must open a stream in time.
      this.wait(session, t.headersMs, idle);
      session.on("stream", (stream, headers) => {
        open++;
        this.clearWait(session);
        // Here rather than on 'request': streams taken by grpc-js never reach the compatibility layer.
        if (!stream.endAfterHeaders) this.boundBody(headers[":path"], stream, stream, () => stream.close(http2.constants.NGHTTP2_CANCEL));
        // A stream that moves no frame either way for this long while the client owes us something is
        // cancelled: a request body that stopped coming, or a client that stopped reading (its flow
        // control holds our writes back). A quiet stream with nothing pending (Health.Watch) stays.
        stream.setTimeout(t.idleMs, () => {
          if (!stream.readableEnded || stream.writableLength > 0) stream.close(http2.constants.NGHTTP2_CANCEL);
        });
        stream.once("close", () => {
          if (--open === 0 && !session.closed && !session.destroyed) this.wait(session, t.idleMs, idle);
        });
      });
      session.on("close", () => {
        this.clearWait(session);
        this.sessions.delete(session);
      });
    });
    this.tcp = net.createServer((socket) => this.route(socket));
  }

  /** Calls `expire` after `ms` unless the connection delivers what it owes first (clearWait). */
  private wait(key: net.Socket | http2.ServerHttp2Session, ms: number, expire: () => void): void {
    this.clearWait(key);
    const timer = setTimeout(() => {
      this.waiting.delete(key);
      expire();
    }, ms);
    timer.unref();
    this.waiting.set(key, timer);
  }

  private clearWait(key: net.Socket | http2.ServerHttp2Session): void {
    clearTimeout(this.waiting.get(key));
    this.waiting.delete(key);
  }

  /**
   * A request that is one message must finish sending it in time; a streaming
   * request (client streaming, bidi: a long upload) may take as long as it keeps
   * moving, which the socket and stream idle bounds cover.
   */
  private boundBody(url: string | undefined, body: Readable, done: EventEmitter, cut: () => void): void {
    if (this.options.streamingRequestPaths?.has((url ?? "").split("?")[0])) return;
    const timer = setTimeout(cut, this.options.timeouts.requestBodyMs);
    timer.unref();
    const clear = () => clearTimeout(timer);
    body.once("end", clear);
    done.once("close", clear);
  }

  private route(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => {
      this.sockets.delete(socket);
      this.h1InFlight.delete(socket);
      this.clearWait(socket);
    });
    socket.on("error", () => socket.destroy());
    this.wait(socket, this.options.timeouts.firstBytesMs, () => socket.destroy());
    socket.once("data", (first: Buffer) => {
      this.clearWait(socket);
      socket.pause();
      socket.unshift(first);
      const n = Math.min(first.length, H2_PREFACE.length);
      const isH2 = first.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (isH2) {
        // The HTTP/2 session reads the socket itself, including what was unshifted;
        // resuming the JS stream here would steal its bytes.
        this.h2Sockets.add(socket);
        this.h2.emit("connection", socket);
      } else {
        this.wait(socket, this.options.timeouts.headersMs, () => socket.destroy());
        this.h1.emit("connection", socket);
        socket.resume();
      }
    });
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.tcp.once("error", onError);
      this.tcp.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
        this.tcp.off("error", onError);
        resolve((this.tcp.address() as net.AddressInfo).port);
      });
    });
  }

  /**
   * Stops accepting, asks open connections to finish (HTTP/2 GOAWAY, HTTP/1
   * keep-alive off), waits up to `graceMs` for them to close, then cuts the rest.
   * Resolves true when everything closed in time.
   */
  async close(graceMs: number): Promise<boolean> {
    this.closing = true;
    this.tcp.close();
    for (const session of this.sessions) session.close();
    // Idle HTTP/1 keep-alive sockets (and ones that never sent a byte) end now; busy ones after their response.
    for (const socket of this.sockets) {
      if (!this.h2Sockets.has(socket) && !this.h1InFlight.get(socket)) socket.end();
    }
    const deadline = Date.now() + graceMs;
    while (this.sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    const drained = this.sockets.size === 0;
    for (const session of this.sessions) session.destroy();
    for (const socket of this.sockets) socket.destroy();
    return drained;
  }
}

/** Puts `take` in front of the server's own stream listener (Node's compatibility layer, which runs `handler`). */
function routeStreams(server: http2.Http2Server, take: NonNullable<ListenerOptions["takeStream"]>): void {
  const compat = server.listeners("stream") as ((...args: unknown[]) => void)[];
  server.removeAllListeners("stream");
  server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
    if (take(stream, headers)) return;
    for (const listener of compat) listener.call(server, stream, headers, ...rest);
  });
}
