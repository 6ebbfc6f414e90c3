import fs from "node:fs";
import path from "node:path";
import v8 from "node:v8";
import { ConfigError, loadConfig } from "./config.js";
import { assertReachable, startEmbeddedPostgres, StartupError, type EmbeddedDatabase } from "./platform/db.js";
import { createLogger } from "./platform/logging.js";
import { startServer } from "./server.js";

// V8 starts a full collection when the old generation plus the ArrayBuffer memory allocated since the last one
// pass a limit it sets at 1.1-4× the live heap. Bulk transfers allocate and drop a buffer per chunk (grpc-js
// frames each message in a new one), and V8 then kept the limit near 1.65× the ~40 MB live heap: a full
// collection every 25 MB transferred, half of an upload's CPU. At 3× (this setting; V8 reads it at every
// collection) uploads ran 118 → 185 MiB/s and downloads 265 → 509, for some 15-20 MB more peak RSS
// (docs/request-path.md, item 5).
v8.setFlagsFromString("--heap-growing-percent=200");

/** Composition root: config -> logger -> database -> server, and a clean stop on SIGTERM/SIGINT. */
async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.logLevel);
  let embedded: EmbeddedDatabase | undefined;
  const urlFile = path.join(config.dataDir, "postgres.url");
  if (!config.databaseUrl) {
    embedded = await startEmbeddedPostgres(config.dataDir, config.embeddedPostgresPort, log);
    // Lets `npm run admin` reach this server's embedded database while it runs.
    fs.writeFileSync(urlFile, `${embedded.url}\n`, { mode: 0o600 });
    const stopEmbedded = embedded.stop;
    embedded.stop = async () => {
      fs.rmSync(urlFile, { force: true });
      await stopEmbedded();
    };
  }
  const databaseUrl = config.databaseUrl ?? embedded!.url;
  try {
    await assertReachable(databaseUrl);
    const server = await startServer({ config, databaseUrl, log });
    let firstSignalAt = 0;
    const stop = (signal: NodeJS.Signals) => {
      if (firstSignalAt) {
        // `npm start` wrappers relay the terminal's Ctrl-C, so duplicates arrive at once: only a later one forces.
        if (Date.now() - firstSignalAt < 1000) return;
        log.warn({ signal }, "second signal: exiting without draining");
        void Promise.race([embedded?.stop(), new Promise((r) => setTimeout(r, 3000))]).finally(() => process.exit(1));
        return;
      }
      firstSignalAt = Date.now();
      log.info({ signal }, "stop requested");
      server
        .shutdown()
        .then(() => embedded?.stop())
        .then(
          () => process.exit(0),
          (err) => {
            log.error({ err }, "shutdown failed");
            process.exit(1);
          },
        );
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  } catch (err) {
    await embedded?.stop().catch(() => undefined);
    throw err;
  }
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError || err instanceof StartupError) {
    console.error(`agora: ${err.message}`);
  } else if ((err as NodeJS.ErrnoException)?.code === "EADDRINUSE") {
    const e = err as NodeJS.ErrnoException & { port?: number };
    console.error(`agora: port ${e.port ?? ""} is already in use (set PORT to another port)`);
  } else if ((err as NodeJS.ErrnoException)?.code === "EACCES") {
    console.error(`agora: not allowed to listen on that port (${(err as Error).message})`);
  } else {
    console.error(`agora: failed to start: ${err instanceof Error ? err.message : String(err)}`);
  }
  process.exit(1);
});
