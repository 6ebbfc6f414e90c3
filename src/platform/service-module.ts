import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { JSONWebKeySet } from "jose";
import type { Config } from "../config.js";
import type { Clock } from "./clock.js";
import type { PageTokens } from "./paging.js";
import type { PubSub } from "./pubsub.js";

/** What the composition root hands every service when it starts. */
export interface ServiceDeps {
  config: Config;
  databaseUrl: string;
  log: Logger;
  pubsub: PubSub;
  clock: Clock;
  /** Issues and checks the page tokens of every List method. */
  pageTokens: PageTokens;
  /** This server's own address, once it listens (for services that call siblings in the same process). */
  selfUrl: () => string;
}

/** A started service: its routes, a health probe and a way to stop. */
export interface RunningService {
  register(router: ConnectRouter): void;
  /** Rejects when the service cannot reach its database. */
  ping(): Promise<void>;
  stop(): Promise<void>;
  /** The public keys of the tokens this service signs (identity only). */
  jwks?: JSONWebKeySet;
}

/** One folder under src/services: the gRPC services it serves and how to start it. */
export interface ServiceModule {
  name: string;
  services: DescService[];
  /** Methods callable without a token, as "package.Service/Method". */
  publicMethods?: string[];
  /** Methods only admins may call, as "package.Service/Method": refused before validation. */
  adminMethods?: string[];
  /** Streaming methods whose handlers validate each request message themselves. */
  validatesOwnStream?: string[];
  start(deps: ServiceDeps): Promise<RunningService>;
}
