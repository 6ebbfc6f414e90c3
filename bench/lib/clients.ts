/** Client helpers for the TypeScript load harnesses (Connect-node, gRPC protocol over HTTP/2). */
import type { Interceptor } from "@connectrpc/connect";

/** Sends `authorization: Bearer <token>` with every call. */
export function bearerInterceptor(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/** Runs `worker(i)` for i in 0..count-1, at most `parallel` at a time. */
export async function pool(count: number, parallel: number, worker: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, count) }, async () => {
      while (next < count) await worker(next++);
    }),
  );
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
