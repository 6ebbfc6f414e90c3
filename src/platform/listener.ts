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

  constructor(handler: Handler, options: ListenerOptions) {
    this.h1 = http.createServer({ maxHeaderSize: options.maxHeaderBytes ?? 16 * 1024 }, handler);
    this.h1.keepAliveTimeout = 65_000;
    this.h2 = http2.createServer(
      {
        settings: { maxConcurrentStreams: options.maxConcurrentStreams, maxHeaderListSize: options.maxHeaderBytes ?? 16 * 1024 },
        maxSessionInvalidFrames: 100,
        maxSessionRejectedStreams: 100,
      },
      handler,
    );
    this.h2.on("session", (session) => {
      this.sessions.add(session);
      session.on("close", () => this.sessions.delete(session));
    });
    this.tcp = net.createServer((socket) => this.route(socket));
  }

  private route(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    socket.once("data", (first: Buffer) => {
      socket.pause();
      socket.unshift(first);
      const n = Math.min(first.length, H2_PREFACE.length);
      const isH2 = first.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (isH2) {
        // The HTTP/2 session reads the socket itself, including what was unshifted;
        // resuming the JS stream here would steal its bytes.
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

  /** Stops accepting connections and asks open ones to finish (HTTP/2 GOAWAY, HTTP/1 keep-alive off). */
  stopAccepting(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.tcp.close(() => resolve()));
    for (const session of this.sessions) session.close();
    this.h1.closeIdleConnections();
    // Idle keep-alive connections that become idle later are closed as their responses end.
    this.h1.on("request", (_req, res) => res.setHeader("connection", "close"));
    return closed;
  }

  /** Whether any connection is still open. */
  get busy(): boolean {
    return this.sockets.size > 0;
  }

  /** Resolves when every connection has closed, or after `ms`; returns whether all closed. */
  async drained(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (this.busy && Date.now() < deadline) {
      this.h1.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 25));
    }
    return !this.busy;
  }

  /** Cuts every remaining connection. */
  destroyAll(): void {
    for (const session of this.sessions) session.destroy();
    for (const socket of this.sockets) socket.destroy();
  }
}
