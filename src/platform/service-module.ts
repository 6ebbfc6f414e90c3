import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Config } from "../config.js";
import type { PubSub } from "./pubsub.js";

/** What the composition root hands every service when it starts. */
export interface ServiceDeps {
  config: Config;
  databaseUrl: string;
  log: Logger;
  pubsub: PubSub;
}

/** A started service: its routes, a health probe and a way to stop. */
export interface RunningService {
  register(router: ConnectRouter): void;
  /** Rejects when the service cannot reach its database. */
  ping(): Promise<void>;
  stop(): Promise<void>;
}

/** One folder under src/services: the gRPC services it serves and how to start it. */
export interface ServiceModule {
  name: string;
  services: DescService[];
  start(deps: ServiceDeps): Promise<RunningService>;
}
