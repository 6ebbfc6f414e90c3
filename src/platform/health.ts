// Standard grpc.health.v1.Health service (Check, Watch, List) backed by an in-memory registry.
// Spec: https://github.com/grpc/grpc/blob/master/doc/health-checking.md
import { EventEmitter, on } from "node:events";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { notFound } from "./errors.js";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
  type HealthCheckRequest,
} from "../../gen/grpc/health/v1/health_pb.js";

/** Serving status per service name; "" is the overall server. */
export class HealthRegistry {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly changes = new EventEmitter();
  private readonly watchers = new Set<AbortController>();
  private closed = false;
  private isDraining = false;

  constructor(services: string[] = [], initial: ServingStatus = ServingStatus.SERVING) {
    // Any number of concurrent Watch streams is normal, not a leak.
    this.changes.setMaxListeners(0);
    for (const name of ["", ...services]) this.statuses.set(name, initial);
  }

  get draining(): boolean {
    return this.isDraining;
  }

  /** Number of open Watch streams (lets tests assert nothing leaks). */
  get watcherCount(): number {
    return this.watchers.size;
  }

  get(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  entries(): [string, ServingStatus][] {
    return [...this.statuses];
  }

  setStatus(service: string, status: ServingStatus): void {
    // While draining, nothing may report SERVING again (e.g. a DB recovery mid-shutdown).
    if (this.isDraining) status = ServingStatus.NOT_SERVING;
    if (this.statuses.get(service) === status) return; // Watch sends changes only
    this.statuses.set(service, status);
    this.changes.emit(eventName(service), status);
  }

  /** Sets every registered name, including "". */
  setAll(status: ServingStatus): void {
    for (const name of [...this.statuses.keys()]) this.setStatus(name, status);
  }

  /** Pins every service at NOT_SERVING for the rest of the process (graceful shutdown). */
  markDraining(): void {
    this.isDraining = true;
    this.setAll(ServingStatus.NOT_SERVING);
  }

  /** Ends all open Watch streams (already-queued updates are still delivered); later Watches end after the first message. */
  close(): void {
    this.closed = true;
    for (const ac of this.watchers) ac.abort();
    this.watchers.clear();
  }

  /** Current status (SERVICE_UNKNOWN if unknown), then every change, until `signal` aborts or close(). */
  async *watch(service: string, signal: AbortSignal): AsyncGenerator<ServingStatus> {
    const current = () => this.statuses.get(service) ?? ServingStatus.SERVICE_UNKNOWN;
    if (this.closed || signal.aborted) {
      yield current();
      return;
    }
    const ac = new AbortController();
    const abort = () => ac.abort();
    signal.addEventListener("abort", abort, { once: true });
    this.watchers.add(ac);
    // Subscribe before the first yield so a change made while the client reads it is not lost.
    const updates = on(this.changes, eventName(service), { signal: ac.signal });
    try {
      yield current();
      for await (const [status] of updates) yield status as ServingStatus;
    } catch (err) {
      if (!ac.signal.aborted) throw err; // abort = cancel/close: end the stream normally
    } finally {
      signal.removeEventListener("abort", abort);
      this.watchers.delete(ac);
      await updates.return?.();
    }
  }
}

// Prefixed so a service name can never collide with EventEmitter's special "error" event.
const eventName = (service: string) => `status:${service}`;

export function registerHealth(router: ConnectRouter, registry: HealthRegistry): void {
  router.service(Health, {
    check(req: HealthCheckRequest) {
      const status = registry.get(req.service);
      if (status === undefined) throw notFound("service", req.service);
      return { status };
    },
    async *watch(req: HealthCheckRequest, ctx: HandlerContext) {
      for await (const status of registry.watch(req.service, ctx.signal)) yield { status };
    },
    list() {
      return { statuses: Object.fromEntries(registry.entries().map(([name, status]) => [name, { status }])) };
    },
  });
}

/**
 * Pings the database every `intervalMs` (never overlapping) and mirrors the result into `services` and "":
 * NOT_SERVING on failure or timeout, SERVING on success (setStatus keeps it NOT_SERVING once draining).
 */
export function watchDatabase(
  registry: HealthRegistry,
  services: string[],
  ping: () => Promise<void>,
  intervalMs: number,
  timeoutMs = Math.max(intervalMs, 1000),
): { stop(): void } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const names = ["", ...services];
  const tick = async () => {
    let ok = true;
    let timeout: NodeJS.Timeout | undefined;
    try {
      // A hung connection must count as down, otherwise the loop would stall on it forever.
      await Promise.race([
        ping(),
        new Promise<never>((_, reject) => {
          timeout = setTimeout(() => reject(new Error("database ping timed out")), timeoutMs);
        }),
      ]);
    } catch {
      ok = false;
    } finally {
      clearTimeout(timeout);
    }
    if (stopped) return;
    for (const name of names) registry.setStatus(name, ok ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
    timer = setTimeout(tick, intervalMs);
    timer.unref(); // health polling alone must not keep the process alive
  };
  void tick();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
