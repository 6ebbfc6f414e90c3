/**
 * 5. Files: one large file uploaded with the Upload client stream (1 MiB
 * chunks, content unique per run so deduplication never short-cuts it) and
 * downloaded with the Download server stream, directly and through Envoy. The
 * client hashes what it sends and receives and checks both against the
 * server's SHA-256. Throughput is MiB/s of payload; peak RSS is Agora's (and
 * Envoy's) high-water mark during the transfer.
 *
 * The client is Connect-node's with the receive windows a bulk client sets
 * (1 MiB per stream, 4 MiB per connection; Node's defaults are 64 KiB). It accepts gzip; the file service
 * does not compress (file content rarely compresses, and gzipping every chunk
 * cost six times the throughput).
 */
import { createHash, randomBytes } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { FileService, type UploadRequestSchema } from "../../gen/agora/files/v1/files_pb.js";
import type { Client } from "@connectrpc/connect";
import { startAgora } from "../lib/agora.js";
import type { BenchContext, Row, Scenario } from "../lib/context.js";
import { measure, type Watched } from "../lib/measure.js";
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
  ],
  async run(ctx: BenchContext) {
    const mib = ctx.settings.files.megabytes;
    const agora = await startAgora(ctx, "files", { envoy: true });
    try {
      const [user] = await agora.users("files-user", 1);
      const base = randomBytes(MIB);
      const results = new Map<string, Record<string, number>[]>();
      const record = (name: string, m: Record<string, number>) => results.set(name, [...(results.get(name) ?? []), m]);
      // No compression offered: the file's bytes travel as they are.

      const upload = async (client: Client<typeof FileService>, watched: Watched[], tag: string) => {
        const sent = createHash("sha256");
        async function* requests(): AsyncGenerator<MessageInitShape<typeof UploadRequestSchema>> {
          yield { part: { case: "metadata", value: { target: { case: "path", value: `bench/${tag}.bin` }, comment: "bench" } } };
          for (let i = 0; i < mib; i++) {
            const chunk = Buffer.from(base);
            // Unique content per run and chunk: nothing is deduplicated.
            chunk.write(`${tag}:${i}:`, 0, "latin1");
            sent.update(chunk);
            yield { part: { case: "chunk", value: chunk } };
          }
        }
        const { result, usage } = await measure(watched, ctx.pinning, () => client.upload(requests()));
        if (result.version!.sha256 !== sent.digest("hex") || Number(result.version!.size) !== mib * MIB) {
          throw new Error(`upload ${tag}: the server stored ${result.version!.size} bytes with another SHA-256`);
        }
        return { fileId: result.file!.id, sha256: result.version!.sha256, metrics: transferMetrics(mib, usage) };
      };
      const download = async (client: Client<typeof FileService>, watched: Watched[], fileId: string, sha256: string) => {
        const { result, usage } = await measure(watched, ctx.pinning, async () => {
          const received = createHash("sha256");
          let bytes = 0;
          for await (const res of client.download({ fileId })) {
            if (res.part.case === "chunk") {
              bytes += res.part.value.length;
              received.update(res.part.value);
            }
          }
          return { bytes, sha256: received.digest("hex") };
        });
        if (result.bytes !== mib * MIB || result.sha256 !== sha256) throw new Error(`download of ${fileId}: received ${result.bytes} bytes with another SHA-256`);
        return transferMetrics(mib, usage);
      };

      for (const via of ["direct", "envoy"] as const) {
        const client = agora.client(FileService, user!.token, via, true);
        const watched = agora.watched(via === "envoy");
        for (let run = 0; run < ctx.settings.runs; run++) {
          const up = await upload(client, watched, `${via}-${run}-${Date.now()}`);
          record(`upload ${via}`, up.metrics);
          const down = await download(client, watched, up.fileId, up.sha256);
          record(`download ${via}`, down);
          ctx.log(`  ${via} ${run + 1}/${ctx.settings.runs}: upload ${up.metrics.mibPerSecond!.toFixed(1)} MiB/s, download ${down.mibPerSecond!.toFixed(1)} MiB/s`);
        }
      }
      const order = ["upload direct", "upload envoy", "download direct", "download envoy"];
      const rows: Row[] = order.map((name) => ({ name, metrics: medians(results.get(name)!) }));
      return { status: "ok" as const, rows, details: { mebibytes: mib, runs: Object.fromEntries(results) } };
    } finally {
      await agora.stop();
    }
  },
};

function transferMetrics(mib: number, usage: { seconds: number; cpuMs: Record<string, number>; peakRssMB: Record<string, number> }): Record<string, number> {
  const m: Record<string, number> = { mibPerSecond: mib / usage.seconds, seconds: usage.seconds };
  for (const [name, ms] of Object.entries(usage.cpuMs)) m[`cpuMsPerMiB_${name}`] = ms / mib;
  for (const [name, mb] of Object.entries(usage.peakRssMB)) m[`peakRssMB_${name}`] = mb;
  return m;
}

function medians(runs: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(runs[0]!)) out[k] = median(runs.map((r) => r[k]!));
  return out;
}
