import path from "node:path";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import { FileEventSchema, FileService } from "../../../gen/agora/files/v1/files_pb.js";
import { closeServiceDatabase, openServiceDatabase, ping } from "../../platform/db.js";
import { protobufCodec, serviceEventLog } from "../../platform/event-log.js";
import { every } from "../../platform/periodic.js";
import type { ServiceModule } from "../../platform/service-module.js";
import { LocalBlobStore } from "./blob-store.js";
import { KeyedLock } from "./keyed-lock.js";
import { FilesRepository, SCHEMA } from "./files.repository.js";
import { filesHandlers } from "./files.service.js";
import { Migration20261121400000 } from "./migrations/Migration20261121400000.js";
import { Migration20261125180000 } from "./migrations/Migration20261125180000.js";
import { Migration20261127130000 } from "./migrations/Migration20261127130000.js";

export const filesModule: ServiceModule = {
  name: "files",
  services: [FileService],
  async start({ config, databaseUrl, log, pubsub, clock, pageTokens }) {
    const orm = await openServiceDatabase({
      url: databaseUrl,
      schema: SCHEMA,
      entities: [],
      migrations: [Migration20261121400000, Migration20261125180000, Migration20261127130000],
      poolSize: config.dbPoolSize,
      log,
    });
    const blobs = new LocalBlobStore(path.join(config.dataDir, "blobs"));
    await blobs.init();
    const events = serviceEventLog({ config, pubsub, log, clock }, orm.em, SCHEMA, protobufCodec(FileEventSchema));
    await events.start();
    const repo = new FilesRepository(orm.em, events);
    const inUse = { temp: new Set<string>(), hashes: new Set<string>() };
    const blobLocks = new KeyedLock();
    const handlers = filesHandlers({
      pageTokens,
      repo,
      blobs,
      events,
      clock,
      settings: {
        maxBytes: config.files.maxBytes,
        uploadTtlMinutes: config.files.uploadTtlMinutes,
        maxOpenUploadsPerUser: config.files.maxOpenUploadsPerUser,
        maxBytesPerUser: config.files.maxBytesPerUser,
      },
      inUse,
      blobLocks,
    });

    /**
     * Retention and collection, on every instance (each deletes only what nothing
     * references): purge files deleted longer ago than the retention, drop unary
     * uploads nobody finished, and remove blobs and temp files no version or live
     * upload needs once they are older than the grace time.
     */
    const sweeper = every(config.files.sweepIntervalMs, log, "files sweep", async () => {
      const now = clock.now();
      await repo.purgeDeleted(new Date(now.getTime() - config.files.retentionHours * 3_600_000));
      // An expired upload's bytes go with it, whatever the grace time.
      for (const id of await repo.expiredUploads(now)) await blobs.removeStaged(id);
      const graceStart = new Date(now.getTime() - config.files.gcGraceSeconds * 1000);
      // Streaming uploads in flight are in inUse; a staged unary upload is kept while its row exists.
      await blobs.removeStaleTemp(graceStart, async (name) => {
        if (inUse.temp.has(name)) return true;
        const staged = /^upload-([0-9a-f-]{36})\.part$/.exec(name);
        return staged ? repo.uploadExists(staged[1]!) : false;
      });
      for await (const sha256 of blobs.list(graceStart)) {
        await blobLocks.run(sha256, async () => {
          if (!inUse.hashes.has(sha256) && !(await repo.isReferenced(sha256))) await blobs.remove(sha256);
        });
      }
    });

    return {
      // File content is mostly compressed already (or binary): gzipping every download chunk for clients that merely
      // accept gzip cost six times the throughput in the benchmark for nothing. Responses go as they are (no message
      // reaches compressMinBytes); compressed requests are still read, so clients whose channel compresses work.
      register: (router) =>
        router.service(FileService, handlers, {
          acceptCompression: [compressionGzip, compressionBrotli],
          compressMinBytes: Number.MAX_SAFE_INTEGER,
        }),
      ping: () => ping(orm),
      stop: async () => {
        await sweeper.stop();
        events.stop();
        await closeServiceDatabase(orm);
      },
    };
  },
};
