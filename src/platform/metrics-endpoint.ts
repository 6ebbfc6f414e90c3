import { timingSafeEqual, createHash } from "node:crypto";
import http from "node:http";
import type http2 from "node:http2";
import type { ServerMetrics } from "./metrics.js";

export interface MetricsAccess {
  /** "loopback": only clients on this machine (the socket's peer, never X-Forwarded-For); "any": everyone. */
  allow: "any" | "loopback";
  /** When set, scrapers send `authorization: Bearer <token>`. */
  token: string | undefined;
  /** When set, /metrics is served on this port (on METRICS_HOST) and not on the service port. */
  port: number | undefined;
  host: string;
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;
const digest = (s: string) => createHash("sha256").update(s).digest();

/** Answers GET /metrics when the caller may read it: 403 off loopback, 401 without the token. */
export function serveMetrics(
  metrics: ServerMetrics,
  access: MetricsAccess,
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: { writeHead(status: number, headers?: Record<string, string>): unknown; end(text: string): unknown },
): void {
  const deny = (status: number, text: string, headers: Record<string, string> = {}) => {
    res.writeHead(status, { "content-type": "text/plain", ...headers });
    res.end(`${text}\n`);
  };
  if (access.allow === "loopback" && !LOOPBACK.test(req.socket.remoteAddress ?? "")) return deny(403, "metrics are readable from this machine only");
  if (access.token !== undefined) {
    const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1] ?? "";
    if (!timingSafeEqual(digest(given), digest(access.token))) return deny(401, "metrics need a bearer token", { "www-authenticate": "Bearer" });
  }
  metrics.registry.metrics().then(
    (text) => {
      res.writeHead(200, { "content-type": metrics.registry.contentType });
      res.end(text);
    },
    () => deny(500, "metrics are unavailable"),
  );
}

/** A plain HTTP server for /metrics alone (METRICS_PORT). */
export async function startMetricsServer(metrics: ServerMetrics, access: MetricsAccess & { port: number }): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer({ requestTimeout: 10_000, headersTimeout: 5_000 }, (req, res) => {
    if (req.method === "GET" && req.url === "/metrics") return serveMetrics(metrics, access, req, res);
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found\n");
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(access.port, access.host, () => resolve());
  });
  return {
    port: (server.address() as import("node:net").AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
