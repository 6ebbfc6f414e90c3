/**
 * 9. Catalog browsing: `clients` clients (one HTTP/2 connection each) read the
 * product catalog in closed loops, as a shop's pages do. Three calls in four
 * are ListProducts pages of 50, walking a listing to its end by its page tokens:
 * each walk picks an order (name, quantity or update time), a direction, and
 * half the time one category, one walk in eight only the products low on
 * stock. The fourth call is a SearchProducts page of 20 for a word of the
 * products' names. Nothing changes the catalog meanwhile, so a walk must list
 * exactly the products its filters select, each once, in its order: a walk
 * that does not is counted (walk errors, must be 0).
 */
import { ConnectError, type Client } from "@connectrpc/connect";
import { Category, InventoryService, ProductOrder, type Product } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { startAgora } from "../lib/agora.js";
import type { BenchContext, Row, Scenario } from "../lib/context.js";
import { closedLoops, countError, latencyMedians, measuredRuns, medianPerSecond, serverUsage, totalErrors } from "../lib/load.js";
import { LatencyHistogram, median } from "../lib/stats.js";

const LIST_PAGE = 50;
const SEARCH_PAGE = 20;
const CATEGORIES = [Category.ELECTRONICS, Category.CLOTHING, Category.FOOD, Category.OFFICE, Category.OTHER];
const WORDS = ["lamp", "desk", "cable", "jacket", "coffee", "paper", "kettle", "scarf", "charger", "notebook", "tea", "stapler"];
const ORDERS = [ProductOrder.NAME, ProductOrder.QUANTITY, ProductOrder.UPDATE_TIME];
const LOW_STOCK_THRESHOLD = 10;

interface Walk {
  category: Category;
  lowStockOnly: boolean;
  orderBy: ProductOrder;
  descending: boolean;
  pageToken: string;
  seen: Product[];
}

interface Tally {
  calls: number;
  lists: number;
  searches: number;
  /** Products the answers carried. */
  products: number;
  walks: number;
  walkErrors: number;
  errors: Record<string, number>;
  latency: LatencyHistogram;
}

/** The sort key of a product in a listing's order, comparable with `<`. */
function sortKey(p: Product, order: ProductOrder): [string | number | bigint, string] {
  if (order === ProductOrder.QUANTITY) return [p.quantity, p.id];
  if (order === ProductOrder.UPDATE_TIME) return [p.updateTime!.seconds * 1_000_000_000n + BigInt(p.updateTime!.nanos), p.id];
  return [p.name, p.id];
}

const before = (a: [string | number | bigint, string], b: [string | number | bigint, string]) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);

export const catalog: Scenario = {
  name: "catalog",
  title: "Catalog browsing",
  description:
    "ListProducts (pages of 50, walked to the end by page token: an order, a direction, half the time one category, 1 in 8 low stock only) " +
    "and SearchProducts (pages of 20, 1 call in 4) from N clients in closed loops over P products; calls/s, p50/p99 over all calls; " +
    "walk errors = walks that did not list exactly the products their filters select, each once, in order (must be 0); CPU ms per 1k calls.",
  rowLabel: "clients",
  columns: [
    { key: "callsPerSecond", label: "calls/s", digits: 0 },
    { key: "productsPerSecond", label: "products/s", digits: 0 },
    { key: "p50Ms", label: "p50 ms", digits: 1 },
    { key: "p99Ms", label: "p99 ms", digits: 1 },
    { key: "walkErrors", label: "walk errors", digits: 0 },
    { key: "cpuMsPer1k_agora", label: "CPU ms/1k Agora", digits: 0 },
    { key: "cpuMsPer1k_postgres", label: "PostgreSQL", digits: 0 },
    { key: "peakRssMB_agora", label: "peak RSS MB", digits: 0 },
    { key: "clientCores", label: "client cores", digits: 2 },
  ],
  async run(ctx: BenchContext) {
    const { clients, products: productCount, runSeconds } = ctx.settings.catalog;
    const agora = await startAgora(ctx, "catalog");
    try {
      const admin = agora.client(InventoryService, agora.adminToken);
      const stored: Product[] = [];
      for (let i = 0; i < productCount; i += 32) {
        const made = await Promise.all(
          Array.from({ length: Math.min(32, productCount - i) }, async (_, j) => {
            const n = i + j;
            const word = WORDS[n % WORDS.length]!;
            const { product } = await admin.createProduct({
              product: {
                name: `${word[0]!.toUpperCase()}${word.slice(1)} model ${n}`,
                description: `A ${word} the benchmark lists, number ${n}`,
                category: CATEGORIES[n % CATEGORIES.length]!,
                quantity: (n * 7919) % 500,
                unitPrice: { currencyCode: "EUR", units: BigInt(1 + (n % 90)), nanos: 0 },
                lowStockThreshold: LOW_STOCK_THRESHOLD,
              },
              requestId: `bench-catalog-${n}`,
            });
            return product!;
          }),
        );
        stored.push(...made);
      }
      const selected = (w: Walk) => stored.filter((p) => (!w.category || p.category === w.category) && (!w.lowStockOnly || p.lowStock)).length;

      const callers = Array.from({ length: clients }, () => agora.client(InventoryService, agora.adminToken));
      const walks: (Walk | undefined)[] = [];
      const newWalk = (): Walk => ({
        category: Math.random() < 0.5 ? CATEGORIES[Math.floor(Math.random() * CATEGORIES.length)]! : Category.UNSPECIFIED,
        lowStockOnly: Math.random() < 1 / 8,
        orderBy: ORDERS[Math.floor(Math.random() * ORDERS.length)]!,
        descending: Math.random() < 0.5,
        pageToken: "",
        seen: [],
      });
      /** Whether a finished walk listed what its filters select, each product once, in its order. */
      const walkedRight = (w: Walk) => {
        if (w.seen.length !== selected(w) || new Set(w.seen.map((p) => p.id)).size !== w.seen.length) return false;
        const keys = w.seen.map((p) => sortKey(p, w.orderBy));
        return keys.every((k, i) => i === 0 || (w.descending ? before(k, keys[i - 1]!) : before(keys[i - 1]!, k)));
      };

      const call = async (c: Client<typeof InventoryService>, client: number, k: number, t: Tally) => {
        const sentAt = performance.now();
        t.calls++;
        try {
          if (k % 4 === 3) {
            const word = WORDS[Math.floor(Math.random() * WORDS.length)]!;
            const res = await c.searchProducts({ query: word, pageSize: SEARCH_PAGE });
            t.searches++;
            t.products += res.products.length;
          } else {
            const w = (walks[client] ??= newWalk());
            const { seen, ...query } = w;
            const res = await c.listProducts({ ...query, pageSize: LIST_PAGE });
            t.lists++;
            t.products += res.products.length;
            seen.push(...res.products);
            w.pageToken = res.nextPageToken;
            if (!w.pageToken) {
              t.walks++;
              if (!walkedRight(w)) t.walkErrors++;
              walks[client] = undefined;
            }
          }
        } catch (err) {
          countError(t.errors, ConnectError.from(err));
          walks[client] = undefined;
        }
        t.latency.record(performance.now() - sentAt);
      };
      const load = async (seconds: number): Promise<Tally> => {
        const t: Tally = { calls: 0, lists: 0, searches: 0, products: 0, walks: 0, walkErrors: 0, errors: {}, latency: new LatencyHistogram() };
        await closedLoops(callers, seconds, (c, i, k) => call(c, i, k, t));
        return t;
      };

      ctx.log(`  ${clients} clients, ${productCount} products: warm-up ${ctx.settings.warmupSeconds}s`);
      await load(ctx.settings.warmupSeconds);
      await agora.query("ANALYZE");
      const runs = await measuredRuns(ctx, agora.watched(), runSeconds, load, (t, usage) =>
        `${Math.round(t.calls / usage.seconds)} calls/s (${t.lists} pages, ${t.searches} searches), ${t.walks} walks ended, ` +
        `p99 ${t.latency.percentile(99).toFixed(1)} ms, walk errors ${t.walkErrors}, errors ${JSON.stringify(t.errors)}`,
      );

      const walkErrors = runs.reduce((a, r) => a + r.result.walkErrors, 0);
      const errors = totalErrors(runs);
      const metrics: Record<string, number> = {
        callsPerSecond: medianPerSecond(runs, (t) => t.calls),
        productsPerSecond: medianPerSecond(runs, (t) => t.products),
        ...latencyMedians(runs, (t) => t.latency),
        ...serverUsage(runs, (t) => t.calls),
        clientCores: median(runs.map((r) => r.usage.selfCpuMs / 1000 / r.usage.seconds)),
        walkErrors,
        errors,
      };
      const notes: string[] = [];
      if (walkErrors > 0) notes.push(`WALK ERRORS: ${walkErrors} listings did not match the catalog`);
      if (errors > 0) notes.push(`${errors} unexpected errors`);
      if (metrics.clientCores! > 0.9) notes.push("load generator saturated: the server may be faster than shown");
      const rows: Row[] = [{ name: String(clients), metrics, notes }];
      const walked = runs.reduce((a, r) => a + r.result.walks, 0);
      return {
        status: "ok" as const,
        rows,
        details: {
          runs: runs.map((r) => ({ calls: r.result.calls, lists: r.result.lists, searches: r.result.searches, walks: r.result.walks, walkErrors: r.result.walkErrors, errors: r.result.errors, seconds: r.usage.seconds })),
          summaryLine: `${walked} listings walked to their end in the measured runs, ${walkErrors} of them not exactly the products their filters select, in order.`,
        },
      };
    } finally {
      await agora.stop();
    }
  },
};
