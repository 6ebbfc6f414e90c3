/**
 * 5. Files: one large file uploaded with the Upload client stream (1 MiB
 * chunks, content unique per run so deduplication never short-cuts it) and
 * downloaded with the Download server stream, directly and through Envoy. The
 * client hashes what it sends and receives and checks both against the
 * server's SHA-256. Throughput is MiB/s of payload; peak RSS is Agora's (and
 * Envoy's) high-water mark during the transfer.
 */
import { createHash, randomBytes } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { FileService, type UploadRequestSchema } from "../../gen/agora/files/v1/files_pb.js";
import { startAgora } from "../lib/agora.js";
import type { BenchContext, Row, Scenario } from "../lib/context.js";
import { measure } from "../lib/measure.js";
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
      const rows: Row[] = [];
      const details: Record<string, unknown> = { mebibytes: mib };
      for (const via of ["direct", "envoy"] as const) {
        const fs = agora.client(FileService, user!.token, via);
        const watched = agora.watched(via === "envoy");
        const up: Record<string, number>[] = [];
        const down: Record<string, number>[] = [];
        for (let run = 0; run < ctx.settings.runs; run++) {
          const tag = `${via}-${run}-${Date.now()}`;
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
          const upload = await measure(watched, ctx.pinning, () => fs.upload(requests()));
          const { file, version } = upload.result;
          if (version!.sha256 !== sent.digest("hex") || Number(version!.size) !== mib * MIB) {
            throw new Error(`upload ${tag}: the server stored ${version!.size} bytes with another SHA-256`);
          }
          up.push(transferMetrics(mib, upload.usage));
          ctx.log(`  upload ${via} ${run + 1}/${ctx.settings.runs}: ${(mib / upload.usage.seconds).toFixed(1)} MiB/s`);

          const download = await measure(watched, ctx.pinning, async () => {
            const received = createHash("sha256");
            let bytes = 0;
            for await (const res of fs.download({ fileId: file!.id })) {
              if (res.part.case === "chunk") {
                bytes += res.part.value.length;
                received.update(res.part.value);
              }
            }
            return { bytes, sha256: received.digest("hex") };
          });
          if (download.result.bytes !== mib * MIB || download.result.sha256 !== version!.sha256) {
            throw new Error(`download ${tag}: received ${download.result.bytes} bytes with another SHA-256`);
          }
          down.push(transferMetrics(mib, download.usage));
          ctx.log(`  download ${via} ${run + 1}/${ctx.settings.runs}: ${(mib / download.usage.seconds).toFixed(1)} MiB/s`);
        }
        rows.push({ name: `upload ${via}`, metrics: medians(up) }, { name: `download ${via}`, metrics: medians(down) });
        details[via] = { upload: up, download: down };
      }
      return { status: "ok" as const, rows: [rows[0]!, rows[2]!, rows[1]!, rows[3]!], details };
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
