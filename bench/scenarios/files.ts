/**
 * 5. Files: one large file uploaded with the Upload client stream (1 MiB
 * chunks, content unique per run so deduplication never short-cuts it) and
 * downloaded with the Download server stream, directly and through Envoy. The
 * client hashes what it sends and receives and checks both against the
 * server's SHA-256. Throughput is MiB/s of payload; peak RSS is Agora's (and
 * Envoy's) high-water mark during the transfer.
 *
 * The client is the Go load generator (bench/loadgen/files.go, connect-go over
 * native gRPC) with the receive windows a bulk client sets (4 MiB per stream,
 * 16 MiB per connection; Node's defaults are 64 KiB): Connect-node's client
 * spent 6 ms of CPU per MiB downloaded and was the limit of the row. The file
 * service does not compress (file content rarely compresses, and gzipping
 * every chunk cost six times the throughput).
 */
import { startAgora } from "../lib/agora.js";
import type { BenchContext, Row, Scenario } from "../lib/context.js";
import { Loadgen } from "../lib/loadgen.js";
import { measure, type Usage } from "../lib/measure.js";
import { median } from "../lib/stats.js";

const MIB = 1024 * 1024;

export const files: Scenario = {
  name: "files",
  title: "Files: upload and download",
  description:
    "One file of the configured size, uploaded (Upload client stream, 1 MiB chunks) and downloaded (Download server stream), " +
    "directly and through Envoy. MiB/s of payload; seconds per transfer; peak RSS of Agora and Envoy during the transfer; CPU ms per MiB (Agora).",
  rowLabel: "transfer",
  columns: [
    { key: "mibPerSecond", label: "MiB/s", digits: 1 },
    { key: "seconds", label: "seconds", digits: 2 },
    { key: "cpuMsPerMiB_agora", label: "CPU ms/MiB Agora", digits: 1 },
    { key: "cpuMsPerMiB_envoy", label: "Envoy", digits: 1 },
    { key: "peakRssMB_agora", label: "peak RSS MB Agora", digits: 0 },
    { key: "peakRssMB_envoy", label: "Envoy", digits: 0 },
    { key: "serverCpuBusyPercent", label: "CPU 0 busy %", digits: 0 },
    { key: "loadgenCores", label: "client cores", digits: 2 },
  ],
  async run(ctx: BenchContext) {
    const mib = ctx.settings.files.megabytes;
    const agora = await startAgora(ctx, "files", { envoy: true });
    try {
      const [user] = await agora.users("files-user", 1);
      const results = new Map<string, Record<string, number>[]>();
      const record = (name: string, m: Record<string, number>) => results.set(name, [...(results.get(name) ?? []), m]);

      // Direct and through Envoy alternate, run by run: on this VM a transfer's speed depends on the memory the
      // kernel hands out for the page cache (see docs/performance.md, Files), which changes over the scenario.
      const sides = (["direct", "envoy"] as const).map((via) => {
        const client = new FilesClient(ctx, via === "envoy" ? agora.gatewayUrl! : agora.url, user!.token);
        return { via, client, watched: [...agora.watched(via === "envoy"), { name: "client", pid: client.pid, loadgen: true }] };
      });
      try {
        for (let run = 0; run < ctx.settings.runs; run++) {
          for (const { via, client, watched } of sides) {
            const path = `bench/${via}-${run}-${Date.now()}.bin`;
            const up = await measure(watched, ctx.pinning, () => client.ask<Uploaded>(`upload ${path} ${mib}`));
            if (up.result.storedSha256 !== up.result.sha256 || up.result.size !== mib * MIB) {
              throw new Error(`upload ${path}: the server stored ${up.result.size} bytes with another SHA-256`);
            }
            record(`upload ${via}`, transferMetrics(mib, up.usage));
            const down = await measure(watched, ctx.pinning, () => client.ask<Downloaded>(`download ${up.result.fileId}`));
            if (down.result.bytes !== mib * MIB || down.result.sha256 !== up.result.sha256) {
              throw new Error(`download of ${up.result.fileId}: received ${down.result.bytes} bytes with another SHA-256`);
            }
            record(`download ${via}`, transferMetrics(mib, down.usage));
            ctx.log(`  ${via} ${run + 1}/${ctx.settings.runs}: upload ${(mib / up.usage.seconds).toFixed(1)} MiB/s, download ${(mib / down.usage.seconds).toFixed(1)} MiB/s`);
          }
        }
      } finally {
        await Promise.all(sides.map((s) => s.client.close()));
      }
      const order = ["upload direct", "upload envoy", "download direct", "download envoy"];
      const rows: Row[] = order.map((name) => ({ name, metrics: medians(results.get(name)!) }));
      return { status: "ok" as const, rows, details: { mebibytes: mib, runs: Object.fromEntries(results) } };
    } finally {
      await agora.stop();
    }
  },
};

interface Uploaded {
  fileId: string;
  sha256: string;
  size: number;
  storedSha256: string;
}
interface Downloaded {
  bytes: number;
  sha256: string;
}

/** The Go load generator's files command (bench/loadgen/files.go): one transfer at a time. */
class FilesClient {
  private readonly loadgen: Loadgen;
  private answer: ((line: string) => void) | undefined;

  constructor(ctx: BenchContext, url: string, token: string) {
    this.loadgen = new Loadgen("files", { url, token }, (line) => this.answer?.(line), ctx.log);
  }

  get pid(): number {
    return this.loadgen.pid;
  }

  ask<T>(command: string): Promise<T> {
    return new Promise((resolve, reject) => {
      this.answer = (line) => {
        this.answer = undefined;
        const answer = JSON.parse(line) as T & { error?: string };
        if (answer.error) reject(new Error(`${command}: ${answer.error}`));
        else resolve(answer);
      };
      this.loadgen.send(command);
    });
  }

  close(): Promise<void> {
    return this.loadgen.close();
  }
}

function transferMetrics(mib: number, usage: Usage): Record<string, number> {
  const m: Record<string, number> = { mibPerSecond: mib / usage.seconds, seconds: usage.seconds, loadgenCores: usage.loadgenCpuMs / 1000 / usage.seconds };
  if (usage.serverCpuBusy !== undefined) m.serverCpuBusyPercent = usage.serverCpuBusy * 100;
  for (const [name, ms] of Object.entries(usage.cpuMs)) m[`cpuMsPerMiB_${name}`] = ms / mib;
  for (const [name, mb] of Object.entries(usage.peakRssMB)) m[`peakRssMB_${name}`] = mb;
  return m;
}

function medians(runs: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(runs[0]!)) out[k] = median(runs.map((r) => r[k]!));
  return out;
}
