/**
 * 8. Stock movements: `clients` clients (one HTTP/2 connection each) call
 * InventoryService/AdjustStock in closed loops over `products` products, half of
 * the calls on four hot ones, so movements of one product queue on its row all
 * the time. Each call adds or removes 1-5 units under a new request id; one in
 * 16 repeats the client's previous request (answered as replayed, applied once)
 * and one in 16 asks to remove more than there is (FAILED_PRECONDITION, nothing
 * applied). Afterwards PostgreSQL must hold, for every product, the starting
 * quantity plus the deltas the clients saw applied, and one movement per applied call.
 */
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { Category, InventoryService } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { startAgora } from "../lib/agora.js";
import type { BenchContext, Row, Scenario } from "../lib/context.js";
import { closedLoops, countError, latencyMedians, measuredRuns, medianPerSecond, serverUsage, totalErrors } from "../lib/load.js";
import { LatencyHistogram } from "../lib/stats.js";

const START_QUANTITY = 1_000_000;
const HOT_PRODUCTS = 4;

/** One AdjustStock request. */
interface Move {
  productId: string;
  delta: number;
  requestId: string;
}

interface Tally {
  calls: number;
  applied: number;
  replayed: number;
  refused: number;
  errors: Record<string, number>;
  latency: LatencyHistogram;
}

export const stock: Scenario = {
  name: "stock",
  title: "Stock movements under contention",
  description:
    "AdjustStock from N clients in closed loops over P products, half of the calls on 4 hot ones; 1 in 16 repeats the previous request id " +
    "(replayed), 1 in 16 removes more than there is (refused). calls/s, applied/s; p50/p99 over all calls; " +
    "lost or doubled = products whose stored quantity is not the start plus the deltas the clients saw applied, plus the difference between " +
    "stored movements and applied calls (must be 0); CPU ms per 1k calls.",
  rowLabel: "clients",
  columns: [
    { key: "callsPerSecond", label: "calls/s", digits: 0 },
    { key: "appliedPerSecond", label: "applied/s", digits: 0 },
    { key: "p50Ms", label: "p50 ms", digits: 1 },
    { key: "p99Ms", label: "p99 ms", digits: 1 },
    { key: "lostOrDoubled", label: "lost or doubled", digits: 0 },
    { key: "cpuMsPer1k_agora", label: "CPU ms/1k Agora", digits: 0 },
    { key: "cpuMsPer1k_postgres", label: "PostgreSQL", digits: 0 },
    { key: "peakRssMB_agora", label: "peak RSS MB", digits: 0 },
  ],
  async run(ctx: BenchContext) {
    const { clients, products: productCount, runSeconds } = ctx.settings.stock;
    const agora = await startAgora(ctx, "stock");
    try {
      const admin = agora.client(InventoryService, agora.adminToken);
      const products: string[] = [];
      for (let i = 0; i < productCount; i++) {
        const { product } = await admin.createProduct({
          product: {
            name: `Bench part ${i}`,
            description: "A product whose stock the benchmark moves",
            category: Category.OFFICE,
            quantity: START_QUANTITY,
            unitPrice: { currencyCode: "EUR", units: 3n, nanos: 0 },
            lowStockThreshold: 10,
          },
          requestId: `bench-part-${i}`,
        });
        products.push(product!.id);
      }
      const callers = Array.from({ length: clients }, () => agora.client(InventoryService, agora.adminToken));
      // Per product: the sum of the deltas the clients saw applied.
      const seen = new Map(products.map((id) => [id, 0]));
      let appliedSeen = 0;
      let seq = 0;

      // Each client's last request, which one call in 16 repeats.
      const last: (Move | undefined)[] = [];
      const call = async (c: Client<typeof InventoryService>, client: number, k: number, t: Tally) => {
        let req: Move;
        const previous = last[client];
        if (k % 16 === 15 && previous) req = previous;
        else {
          const productId = k % 2 === 0 ? products[Math.floor(Math.random() * HOT_PRODUCTS)]! : products[Math.floor(Math.random() * products.length)]!;
          const units = 1 + Math.floor(Math.random() * 5);
          const delta = k % 16 === 7 ? -2 * START_QUANTITY : Math.random() < 0.5 ? -units : units;
          req = { productId, delta, requestId: `bench-move-${seq++}` };
        }
        const sentAt = performance.now();
        t.calls++;
        try {
          const res = await c.adjustStock({ ...req, reason: "bench" });
          if (res.replayed) t.replayed++;
          else {
            t.applied++;
            appliedSeen++;
            seen.set(req.productId, seen.get(req.productId)! + req.delta);
          }
        } catch (err) {
          const e = ConnectError.from(err);
          if (e.code === Code.FailedPrecondition) t.refused++;
          else countError(t.errors, e);
        }
        t.latency.record(performance.now() - sentAt);
        last[client] = req;
      };
      const load = async (seconds: number): Promise<Tally> => {
        const t: Tally = { calls: 0, applied: 0, replayed: 0, refused: 0, errors: {}, latency: new LatencyHistogram() };
        await closedLoops(callers, seconds, (c, i, k) => call(c, i, k, t));
        return t;
      };

      ctx.log(`  ${clients} clients, ${productCount} products: warm-up ${ctx.settings.warmupSeconds}s`);
      await load(ctx.settings.warmupSeconds);
      await agora.query("ANALYZE");
      const runs = await measuredRuns(ctx, agora.watched(), runSeconds, load, (t, usage) =>
        `${Math.round(t.calls / usage.seconds)} calls/s, ${Math.round(t.applied / usage.seconds)} applied/s, ` +
        `p99 ${t.latency.percentile(99).toFixed(1)} ms, errors ${JSON.stringify(t.errors)}`,
      );

      const stored = await agora.query<{ id: string; quantity: number; movements: string; moved: string }>(
        `SELECT p.id, p.quantity, count(m.id) AS movements, coalesce(sum(m.delta), 0) AS moved
           FROM "inventory".products p LEFT JOIN "inventory".stock_movements m ON m.product_id = p.id GROUP BY p.id, p.quantity`,
      );
      const wrongProducts = stored.filter(
        (r) => r.quantity !== START_QUANTITY + seen.get(r.id)! || Number(r.moved) !== seen.get(r.id)!,
      ).length;
      const movements = stored.reduce((a, r) => a + Number(r.movements), 0);
      const lostOrDoubled = wrongProducts + Math.abs(movements - appliedSeen);
      const errors = totalErrors(runs);
      const metrics: Record<string, number> = {
        callsPerSecond: medianPerSecond(runs, (t) => t.calls),
        appliedPerSecond: medianPerSecond(runs, (t) => t.applied),
        ...latencyMedians(runs, (t) => t.latency),
        ...serverUsage(runs, (t) => t.calls),
        lostOrDoubled,
        errors,
        movements,
        appliedSeen,
      };
      const notes: string[] = [];
      if (lostOrDoubled > 0) notes.push(`LOST OR DOUBLED: ${wrongProducts} products wrong, ${movements} movements stored for ${appliedSeen} applied calls`);
      if (errors > 0) notes.push(`${errors} unexpected errors`);
      const rows: Row[] = [{ name: String(clients), metrics, notes }];
      return {
        status: "ok" as const,
        rows,
        details: {
          runs: runs.map((r) => ({ calls: r.result.calls, applied: r.result.applied, replayed: r.result.replayed, refused: r.result.refused, errors: r.result.errors, seconds: r.usage.seconds })),
          checks: { wrongProducts, movements, appliedSeen },
          summaryLine:
            `Stored afterwards: ${movements} movements for ${appliedSeen} calls the clients saw applied; ` +
            `${wrongProducts} of ${productCount} products off the start quantity plus those deltas.`,
        },
      };
    } finally {
      await agora.stop();
    }
  },
};
