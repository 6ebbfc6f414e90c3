import { ChatService, Presence } from "../../../gen/agora/chat/v1/chat_pb.js";
import { closeServiceDatabase, openServiceDatabase, ping } from "../../platform/db.js";
import { every } from "../../platform/periodic.js";
import type { ServiceModule } from "../../platform/service-module.js";
import { ChatHub } from "./chat.hub.js";
import { ChatRepository, SCHEMA } from "./chat.repository.js";
import { chatHandlers } from "./chat.service.js";
import { Migration20261121300000 } from "./migrations/Migration20261121300000.js";
import { Migration20261125170000 } from "./migrations/Migration20261125170000.js";
import { Migration20261125210000 } from "./migrations/Migration20261125210000.js";
import { Migration20261127120000 } from "./migrations/Migration20261127120000.js";
import { Migration20261127140000 } from "./migrations/Migration20261127140000.js";
import { PresenceRepository } from "./presence.repository.js";

export const chatModule: ServiceModule = {
  name: "chat",
  services: [ChatService],
  validatesOwnStream: [`${ChatService.typeName}/${ChatService.method.chat.name}`],
  async start({ config, databaseUrl, log, pubsub, clock, selfUrl, pageTokens }) {
    const orm = await openServiceDatabase({
      url: databaseUrl,
      schema: SCHEMA,
      entities: [],
      migrations: [Migration20261121300000, Migration20261125170000, Migration20261125210000, Migration20261127120000, Migration20261127140000],
      poolSize: config.dbPoolSize,
      log,
    });
    const repo = new ChatRepository(orm.em);
    // A session whose instance stopped heart-beating for three intervals is gone.
    const presence = new PresenceRepository(orm.em, config.chat.awayAfterSeconds * 1000, 3 * config.heartbeatIntervalMs);
    const hub = new ChatHub(repo, pubsub, log);
    await hub.start();
    const handlers = chatHandlers({
      pageTokens,
      log,
      repo,
      presence,
      hub,
      clock,
      filesUrl: () => config.chat.filesUrl ?? (config.services.includes("files") ? selfUrl() : undefined),
      identityUrl: () => config.chat.identityUrl ?? (config.services.includes("identity") ? selfUrl() : undefined),
      settings: { messagesPerSecond: config.chat.messagesPerSecond, maxRoomsPerUser: config.chat.maxRoomsPerUser, streamBuffer: config.chat.streamBuffer, heartbeatMs: config.heartbeatIntervalMs },
    });
    // Keeps this instance's sessions fresh and reaps those of instances that stopped beating.
    const heartbeat = every(config.heartbeatIntervalMs, log, "chat presence heartbeat", async () => {
      const now = clock.now();
      await presence.heartbeat(hub.localSessionIds, now);
      for (const gone of await presence.reap(now)) {
        await hub.publishPresence({ userId: gone.user_id, username: gone.username, presence: Presence.OFFLINE, rooms: await repo.roomIdsOf(gone.user_id) });
      }
    });
    return {
      register: (router) => router.service(ChatService, handlers),
      ping: () => ping(orm),
      stop: async () => {
        await heartbeat.stop();
        hub.stop();
        await closeServiceDatabase(orm);
      },
    };
  },
};
