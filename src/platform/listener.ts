import http from "node:http";
import http2 from "node:http2";
import net from "node:net";

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

// Every HTTP/2 cleartext connection with prior knowledge opens with this preface.
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export interface ListenerOptions {
  maxConcurrentStreams: number;
  /** Bytes a single header block may take. */
  maxHeaderBytes?: number;
  /** Sees every HTTP/2 stream first and returns true for those it serves itself (native gRPC: grpc-js-adapter.ts). */
  takeStream?: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;
}

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
  private closing = false;

  constructor(handler: Handler, options: ListenerOptions) {
    this.h1 = http.createServer({ maxHeaderSize: options.maxHeaderBytes ?? 16 * 1024 }, handler);
    this.h1.keepAliveTimeout = 65_000;
    // This server never listen()s itself, so Node's own idle-connection tracking is not set up:
    // a socket timeout bounds idle and slow clients, and in-flight requests are counted here.
    this.h1.timeout = 120_000;
    this.h1.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
      const socket = req.socket;
      this.h1InFlight.set(socket, (this.h1InFlight.get(socket) ?? 0) + 1);
      if (this.closing) res.setHeader("connection", "close");
      res.once("close", () => {
        const left = (this.h1InFlight.get(socket) ?? 1) - 1;
        this.h1InFlight.set(socket, left);
        if (this.closing && left === 0) socket.end();
      });
    });
    this.h2 = http2.createServer(
      {
        settings: { maxConcurrentStreams: options.maxConcurrentStreams, maxHeaderListSize: options.maxHeaderBytes ?? 16 * 1024 },
        maxSessionInvalidFrames: 100,
        maxSessionRejectedStreams: 100,
      },
      handler,
    );
    if (options.takeStream) routeStreams(this.h2, options.takeStream);
    this.h2.on("session", (session) => {
      this.sessions.add(session);
      session.on("close", () => this.sessions.delete(session));
    });
    this.tcp = net.createServer((socket) => this.route(socket));
  }

  private route(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => {
      this.sockets.delete(socket);
      this.h1InFlight.delete(socket);
    });
    socket.on("error", () => socket.destroy());
    socket.once("data", (first: Buffer) => {
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
        this.h1.emit("connection", socket);
        socket.resume();
      }
    });
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.tcp.once("error", onError);
      this.tcp.listen(port, host, () => {
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
