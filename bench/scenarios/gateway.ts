/**
 * 2. GetProduct direct vs through Envoy. One Agora instance with Envoy in
 * front (the generated gateway configuration: jwt_authn, access log, retries,
 * health checks; only the whole-gateway rate limit is raised). First the
 * maximum throughput of each path (closed loop), then both paths at a fixed
 * rate of half the direct maximum (open loop), where the latency difference is
 * what Envoy adds when neither side is saturated. The `peer max` row is a bare
 * @grpc/grpc-js + pg server (bench/peers/grpcjs-product.ts) running the same
 * SELECT on the same database, as fast as it goes: the limit of a Node server;
 * `go peer max` is the same in Go (bench/peers/go-product, connect-go + pgx).
 * The `own CPU` rows repeat the Envoy rows with Envoy on the load generator's
 * CPU: what Envoy adds as a proxy when it takes no CPU from Agora and PostgreSQL.
 */
import type { BenchContext, Row, Scenario } from "../lib/context.js";
import { Category, InventoryService } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { startAgora } from "../lib/agora.js";
import { ghzLoad, ghzRun, interleavedLoads, loadNotes, pairedRatios, type LoadPlan, type LoadResult, type LoadSpec } from "../lib/load.js";
import { ensureGoProductPeer, PEERS, startPeer, type Peer } from "../lib/peers.js";
import { pin } from "../lib/proc.js";
import { round } from "../lib/stats.js";

export const gateway: Scenario = {
  name: "gateway",
  title: "GetProduct: direct vs through Envoy",
  description:
    "InventoryService/GetProduct (authenticated, one PostgreSQL read) against the instance directly and through Envoy. " +
    "max = closed loop, as fast as it goes; half = open loop at 50% of the direct maximum. " +
    "CPU ms per 1k calls for Agora, its PostgreSQL and Envoy; CPU 0 busy = the server CPU over the run (/proc/stat); " +
    "peer max = a bare @grpc/grpc-js + pg server running the same SELECT on the same database (no token check, log or metrics), as fast as it goes; go peer max = the same in Go (connect-go + pgx). " +
    "own CPU = the Envoy rows again with Envoy on the load generator's CPU (when the bench pins), off CPU 0. " +
    "ratio = throughput relative to direct max (half rows: achieved / target rate). " +
    "The max rows take turns run by run (run 1 of each, then run 2 of each, …), and so do the two half rows, so that their ratios compare runs made minutes apart at most.",
  rowLabel: "path",
  columns: [
    { key: "targetRps", label: "target/s", digits: 0 },
    { key: "rps", label: "calls/s", digits: 0 },
    { key: "p50Ms", label: "p50 ms", digits: 2 },
    { key: "p99Ms", label: "p99 ms", digits: 2 },
    { key: "cpuMsPer1k_agora", label: "CPU ms/1k server", digits: 1 },
    { key: "cpuMsPer1k_postgres", label: "PostgreSQL", digits: 1 },
    { key: "cpuMsPer1k_envoy", label: "Envoy", digits: 1 },
    { key: "peakRssMB_agora", label: "RSS MB Agora", digits: 0 },
    { key: "peakRssMB_envoy", label: "Envoy", digits: 0 },
    { key: "serverCpuBusyPercent", label: "CPU 0 busy %", digits: 0 },
    { key: "ratio", label: "ratio", digits: 2 },
  ],
  async run(ctx: BenchContext) {
    const agora = await startAgora(ctx, "gateway", { envoy: true });
    try {
      const inventory = agora.client(InventoryService, agora.adminToken);
      const { product } = await inventory.createProduct({
        product: {
          name: "Bench stapler",
          description: "A product read by the benchmark",
          category: Category.OFFICE,
          quantity: 100,
          unitPrice: { currencyCode: "EUR", units: 12n, nanos: 500_000_000 },
          lowStockThreshold: 5,
        },
        requestId: "bench-product-1",
      });
      const spec = (target: string): LoadSpec => ({
        target,
        call: "agora.inventory.v1.InventoryService/GetProduct",
        proto: "proto/agora/inventory/v1/inventory.proto",
        importPaths: ["proto", "third_party/proto"],
        data: { id: product!.id },
        metadata: { authorization: `Bearer ${agora.adminToken}` },
      });
      const rows: Row[] = [];
      const details: Record<string, unknown> = { productId: product!.id };
      const row = (name: string, load: LoadResult, rps?: number): Row => {
        const r: Row = { name, metrics: load.metrics, notes: loadNotes(ctx, load.metrics) };
        if (rps) r.metrics.targetRps = Math.round(rps);
        if (r.metrics.serverCpuBusy !== undefined) r.metrics.serverCpuBusyPercent = r.metrics.serverCpuBusy * 100;
        rows.push(r);
        details[name] = { runs: load.runs, errorSample: load.errorSample };
        return r;
      };
      const add = async (name: string, target: string, withEnvoy: boolean, rps?: number) =>
        row(name, await ghzLoad(ctx, name, agora.watched(withEnvoy), { ...spec(target), rps }), rps);
      // The maxima take turns (interleavedLoads), so their ratios compare runs made at the same speed of the VM.
      const peers: Peer[] = [];
      let peerRow: Row, direct: Row, viaEnvoy: Row;
      try {
        const [cmd, args] = PEERS["grpc-js-product"](agora.databaseUrl);
        peers.push(await startPeer("grpc-js-product", cmd, [...args], ctx.pinning.server));
        const goProblem = ensureGoProductPeer(ctx.log);
        if (goProblem) details.skipped = { "go peer max": goProblem };
        else {
          const [goCmd, goArgs] = PEERS["go-product"](agora.databaseUrl);
          peers.push(await startPeer("go-product", goCmd, [...goArgs], ctx.pinning.server));
        }
        // A peer's figures go in the Agora columns ("server").
        const peerPlan = (label: string, peer: Peer): LoadPlan => ({
          label,
          watched: [{ name: "agora", pid: peer.pid, rss: true }, { name: "postgres", pid: ctx.postgresPid, tree: true }],
          run: ghzRun(ctx, spec(peer.target)),
        });
        const maxima: LoadPlan[] = [
          peerPlan("peer max", peers[0]!),
          { label: "direct max", watched: agora.watched(false), run: ghzRun(ctx, spec(agora.target)) },
          { label: "envoy max", watched: agora.watched(true), run: ghzRun(ctx, spec(agora.gatewayTarget)) },
          ...(peers[1] ? [peerPlan("go peer max", peers[1])] : []),
        ];
        const loads = await interleavedLoads(ctx, maxima);
        [peerRow, direct, viaEnvoy] = loads.map((load, i) => row(maxima[i]!.label, load)) as [Row, Row, Row];
        details.directVsPeerByRun = pairedRatios(loads[1]!, loads[0]!);
        details.envoyVsDirectByRun = pairedRatios(loads[2]!, loads[1]!);
      } finally {
        for (const peer of peers) await peer.stop();
      }
      const half = direct.metrics.rps! / 2;
      const halves: LoadPlan[] = [
        { label: "direct half", watched: agora.watched(false), run: ghzRun(ctx, { ...spec(agora.target), rps: half }) },
        { label: "envoy half", watched: agora.watched(true), run: ghzRun(ctx, { ...spec(agora.gatewayTarget), rps: half }) },
      ];
      const [directHalf, envoyHalf] = (await interleavedLoads(ctx, halves)).map((load, i) => row(halves[i]!.label, load, half)) as [Row, Row];
      // The same with Envoy on the load generator's CPU instead of CPU 0, as a deployment gives a proxy cores of
      // its own: what Envoy adds as a proxy, apart from the CPU it takes from Agora and PostgreSQL above.
      let ownCpu: { max: Row; half: Row } | undefined;
      if (agora.envoyPid && ctx.pinning.loadgen && pin(agora.envoyPid, ctx.pinning.loadgen)) {
        try {
          ownCpu = { max: await add("envoy max, own CPU", agora.gatewayTarget, true), half: await add("envoy half, own CPU", agora.gatewayTarget, true, half) };
        } finally {
          pin(agora.envoyPid, ctx.pinning.server);
        }
      }
      for (const r of rows) r.metrics.ratio = round(r.metrics.rps! / (r.metrics.targetRps ? r.metrics.targetRps : direct.metrics.rps!), 3);
      details.summary = {
        envoyThroughputRatio: round(viaEnvoy.metrics.rps! / direct.metrics.rps!, 3),
        directVsPeer: round(direct.metrics.rps! / peerRow.metrics.rps!, 3),
        halfLoadRps: Math.round(half),
        directHalf: { p50Ms: directHalf.metrics.p50Ms, p99Ms: directHalf.metrics.p99Ms },
        envoyHalf: { p50Ms: envoyHalf.metrics.p50Ms, p99Ms: envoyHalf.metrics.p99Ms },
        envoyAddsP50Ms: round(envoyHalf.metrics.p50Ms! - directHalf.metrics.p50Ms!, 3),
        envoyAddsP99Ms: round(envoyHalf.metrics.p99Ms! - directHalf.metrics.p99Ms!, 3),
        ...(ownCpu && {
          envoyOwnCpuThroughputRatio: round(ownCpu.max.metrics.rps! / direct.metrics.rps!, 3),
          envoyOwnCpuAddsP50Ms: round(ownCpu.half.metrics.p50Ms! - directHalf.metrics.p50Ms!, 3),
          envoyOwnCpuAddsP99Ms: round(ownCpu.half.metrics.p99Ms! - directHalf.metrics.p99Ms!, 3),
        }),
      };
      const sum = details.summary as Record<string, number>;
      const change = (from: number, to: number) => `${from.toFixed(2)} → ${to.toFixed(2)} ms (${to >= from ? "+" : "−"}${Math.abs(to - from).toFixed(2)})`;
      /** A half-load row's latency against the direct one's. */
      const vsDirectHalf = (row: Row) =>
        `p50 ${change(directHalf.metrics.p50Ms!, row.metrics.p50Ms!)}, p99 ${change(directHalf.metrics.p99Ms!, row.metrics.p99Ms!)}`;
      details.summaryLine =
        `Direct: ${Math.round(sum.directVsPeer! * 100)}% of the bare grpc-js + pg peer. ` +
        `Through Envoy: ${Math.round(sum.envoyThroughputRatio! * 100)}% of the direct maximum. At half the direct maximum (${sum.halfLoadRps} calls/s), ` +
        `direct → through Envoy: ${vsDirectHalf(envoyHalf)}. ` +
        `Envoy shares CPU 0 with Agora and PostgreSQL, so that rate keeps CPU 0 busier through Envoy (see CPU 0 busy).` +
        (ownCpu
          ? ` With Envoy on the load generator's CPU (own CPU rows): ${Math.round(sum.envoyOwnCpuThroughputRatio! * 100)}% of the direct maximum; ` +
            `at half load ${vsDirectHalf(ownCpu.half)}.`
          : "");
      return { status: "ok" as const, rows, details };
    } finally {
      await agora.stop();
    }
  },
};
