/**
 * 1. Baselines: the same unary call, grpc.health.v1.Health/Check with an empty
 * request, under the same ghz settings against a bare Connect-node server, a
 * bare @grpc/grpc-js server, the same doing Agora's per-call work in its
 * handler (bench/peers/grpcjs-health.ts --features), a bare grpc-go server
 * (grpc-go's own health server) and Agora (all services, every interceptor, access log at the
 * default level; once as it runs, with native gRPC through grpc-js, and once
 * with GRPC_SERVER=connect). Health/Check is Agora's lightest RPC and the one call all
 * four serve unchanged, so the rows differ only in the server stack. Connect-node
 * and Agora are also called over the Connect protocol and gRPC-Web (HTTP/2 without
 * TLS, the Go load generator with ghz's workers and connections), which both serve
 * through Connect-node.
 */
import type { BenchContext, Row, Scenario } from "../lib/context.js";
import { startAgora } from "../lib/agora.js";
import { ghzRun, interleavedLoads, loadNotes, pairedRatios, type LoadPlan, type LoadSpec } from "../lib/load.js";
import { unaryLoad } from "../lib/loadgen.js";
import type { Watched } from "../lib/measure.js";
import { ensureGoPeer, PEERS, startPeer } from "../lib/peers.js";
import { round } from "../lib/stats.js";

const HEALTH_CHECK = {
  call: "grpc.health.v1.Health/Check",
  proto: "third_party/proto/grpc/health/v1/health.proto",
  importPaths: ["third_party/proto"],
  data: {},
} satisfies Omit<LoadSpec, "target">;

export const baselines: Scenario = {
  name: "baselines",
  title: "Baselines: Health/Check on bare servers and on Agora",
  description:
    "grpc.health.v1.Health/Check (empty request) at maximum throughput (ghz, closed loop) against each server, one at a time on the server CPU (the others idle there), in turns: run 1 of every row, then run 2 of every row, and so on. " +
    "rps = OK calls per second; p50/p99 latency seen by ghz; CPU ms per 1k calls and peak RSS of the server process; " +
    "CPU 0 busy = the server CPU over the run, every process on it included (/proc/stat); ratio = throughput relative to grpc-go. " +
    "Rows named \"…, Connect\" and \"…, gRPC-Web\" make the same call over those protocols (HTTP/2 without TLS) from the Go load generator (bench/loadgen/unary.go).",
  rowLabel: "server",
  columns: [
    { key: "rps", label: "calls/s", digits: 0 },
    { key: "p50Ms", label: "p50 ms", digits: 2 },
    { key: "p99Ms", label: "p99 ms", digits: 2 },
    { key: "cpuMsPer1k", label: "CPU ms/1k", digits: 1 },
    { key: "peakRssMB", label: "peak RSS MB", digits: 0 },
    { key: "serverCpuBusyPercent", label: "CPU 0 busy %", digits: 0 },
    { key: "ratio", label: "ratio", digits: 2 },
  ],
  async run(ctx: BenchContext) {
    const rows: Row[] = [];
    const details: Record<string, unknown> = { call: HEALTH_CHECK.call };
    const skipped: Record<string, string> = {};
    const goProblem = ensureGoPeer(ctx.log);
    // Every server runs for the whole scenario (the idle ones on CPU 0 too), and their loads take turns
    // (interleavedLoads): the ratios between rows compare runs minutes apart at most, not the first row's
    // against the last's.
    const stops: (() => Promise<void>)[] = [];
    try {
      const plans: LoadPlan[] = [];
      const serve = (name: string, target: string, watched: Watched[], otherProtocols: boolean) => {
        plans.push({ label: name, watched, run: ghzRun(ctx, { ...HEALTH_CHECK, target }) });
        if (!otherProtocols) return;
        for (const protocol of OTHER_PROTOCOLS) {
          const settings = { url: `http://${target}`, protocol: protocol.name, workers: ctx.settings.ghzConcurrency, connections: ctx.settings.ghzConnections };
          plans.push({ label: `${name}, ${protocol.label}`, watched, run: (seconds) => unaryLoad({ ...settings, seconds }, ctx.log) });
        }
      };
      for (const name of ["connect-node", "grpc-js", "grpc-js with features", "grpc-go"] as const) {
        if (name === "grpc-go" && goProblem) {
          skipped[name] = goProblem;
          continue;
        }
        const [cmd, args] = PEERS[name]();
        const peer = await startPeer(name, cmd, [...args], ctx.pinning.server);
        stops.push(() => peer.stop());
        serve(name, peer.target, [{ name: "server", pid: peer.pid, rss: true }], name === "connect-node");
      }
      // Agora as it runs (native gRPC through grpc-js), then with GRPC_SERVER=connect (every protocol on Connect-node).
      for (const [name, env] of [["agora", {}], ["agora, gRPC on connect-node", { GRPC_SERVER: "connect" }]] as const) {
        const agora = await startAgora(ctx, `baselines-${env.GRPC_SERVER ?? "grpc-js"}`, { env });
        stops.push(() => agora.stop());
        const watched = agora.watched().filter((w) => w.name === "agora").map((w) => ({ ...w, name: "server" }));
        // Connect and gRPC-Web take the same path whoever serves native gRPC.
        serve(name, agora.target, watched, !env.GRPC_SERVER);
      }
      const loads = await interleavedLoads(ctx, plans);
      for (const [i, load] of loads.entries()) {
        const name = plans[i]!.label;
        rows.push({ name, metrics: rename(load.metrics), notes: loadNotes(ctx, load.metrics) });
        details[name] = { runs: load.runs, errorSample: load.errorSample };
      }
      const agoraLoad = loads[plans.findIndex((p) => p.label === "agora")];
      const grpcJsLoad = loads[plans.findIndex((p) => p.label === "grpc-js")];
      const featuresLoad = loads[plans.findIndex((p) => p.label === "grpc-js with features")];
      if (agoraLoad && grpcJsLoad) details.agoraVsGrpcJsByRun = pairedRatios(agoraLoad, grpcJsLoad);
      if (featuresLoad && grpcJsLoad) details.featuresVsGrpcJsByRun = pairedRatios(featuresLoad, grpcJsLoad);
    } finally {
      for (const stop of stops.reverse()) await stop();
    }
    const reference = rows.find((r) => r.name === "grpc-go") ?? rows.find((r) => r.name === "connect-node");
    for (const r of rows) if (reference) r.metrics.ratio = round(r.metrics.rps! / reference.metrics.rps!, 3);
    const connect = rows.find((r) => r.name === "connect-node");
    const agoraRow = rows.find((r) => r.name === "agora");
    const grpcJs = rows.find((r) => r.name === "grpc-js");
    if (connect && agoraRow) details.agoraVsConnect = round(agoraRow.metrics.rps! / connect.metrics.rps!, 3);
    const overOtherProtocols: string[] = [];
    for (const protocol of OTHER_PROTOCOLS) {
      const bare = rows.find((r) => r.name === `connect-node, ${protocol.label}`);
      const ours = rows.find((r) => r.name === `agora, ${protocol.label}`);
      if (!bare || !ours) continue;
      const ratio = round(ours.metrics.rps! / bare.metrics.rps!, 3);
      details[`agoraVsConnect_${protocol.name}`] = ratio;
      overOtherProtocols.push(` Over ${protocol.label}: ${Math.round(ratio * 100)}% of bare Connect-node's.`);
    }
    if (grpcJs && agoraRow) {
      details.agoraVsGrpcJs = round(agoraRow.metrics.rps! / grpcJs.metrics.rps!, 3);
      details.agoraCpuVsGrpcJs = round(agoraRow.metrics.cpuMsPer1k! / grpcJs.metrics.cpuMsPer1k!, 3);
    }
    const features = rows.find((r) => r.name === "grpc-js with features");
    if (grpcJs && features) details.featuresVsGrpcJs = round(features.metrics.rps! / grpcJs.metrics.rps!, 3);
    details.ratioReference = reference?.name;
    if (details.agoraVsConnect !== undefined) {
      details.summaryLine =
        `Agora serves ${Math.round(Number(details.agoraVsConnect) * 100)}% of bare Connect-node's and ${Math.round(Number(details.agoraVsGrpcJs) * 100)}% of bare grpc-js's Health/Check throughput, ` +
        `at ${details.agoraCpuVsGrpcJs}× grpc-js's CPU per call (ratios in the table relative to ${reference?.name}).` +
        (details.featuresVsGrpcJs !== undefined ? ` grpc-js doing Agora's per-call work in its handler: ${Math.round(Number(details.featuresVsGrpcJs) * 100)}% of bare grpc-js's.` : "") +
        overOtherProtocols.join("");
    }
    if (Object.keys(skipped).length) details.skipped = skipped;
    return { status: "ok" as const, rows, details };
  },
};

/** The protocols ghz does not speak, driven by the Go load generator (bench/loadgen/unary.go) with ghz's workers and connections. */
const OTHER_PROTOCOLS = [
  { name: "connect", label: "Connect" },
  { name: "grpc-web", label: "gRPC-Web" },
] as const;

/** The server process is called "server" in every row; the table wants plain names. */
function rename(m: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) out[k.replace(/_server$/, "")] = v;
  if (out.serverCpuBusy !== undefined) out.serverCpuBusyPercent = out.serverCpuBusy * 100;
  return out;
}
