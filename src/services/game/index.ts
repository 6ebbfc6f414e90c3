import { GameService } from "../../../gen/agora/game/v1/game_pb.js";
import { closeServiceDatabase, openServiceDatabase, ping } from "../../platform/db.js";
import { serviceEventLog } from "../../platform/event-log.js";
import { every } from "../../platform/periodic.js";
import type { ServiceModule } from "../../platform/service-module.js";
import { GameRepository, SCHEMA, gameEventKeys, type GameEvent } from "./game.repository.js";
import { gameHandlers } from "./game.service.js";
import { timeoutIfDue } from "./game.logic.js";
import { pairTickets } from "./matchmaking.js";
import { Migration20261125000000 } from "./migrations/Migration20261125000000.js";
import { Migration20261125180000 } from "./migrations/Migration20261125180000.js";

// Events only say which game or tickets changed (readers load the state): JSON is enough.
const eventCodec = {
  encode: (e: GameEvent) => Buffer.from(JSON.stringify(e)),
  decode: (b: Uint8Array) => JSON.parse(Buffer.from(b).toString("utf8")) as GameEvent,
};

export const gameModule: ServiceModule = {
  name: "game",
  services: [GameService],
  validatesOwnStream: [`${GameService.typeName}/${GameService.method.play.name}`],
  async start({ config, databaseUrl, log, pubsub, clock, pageTokens }) {
    const orm = await openServiceDatabase({
      url: databaseUrl,
      schema: SCHEMA,
      entities: [],
      migrations: [Migration20261125000000, Migration20261125180000],
      poolSize: config.dbPoolSize,
      log,
    });
    const events = serviceEventLog({ config, pubsub, log, clock }, orm.em, SCHEMA, eventCodec, gameEventKeys);
    await events.start();
    const repo = new GameRepository(orm.em, events);
    const settings = config.game;

    // A ticket whose stream stopped refreshing it (its instance died) leaves the pool after ten ticks, and never
    // sooner than 15 s: with three ticks (3 s), 1,000 players queueing at once on a busy instance were refreshed
    // late and their live tickets cancelled, ending their FindMatch streams without a match.
    const staleSeconds = Math.max(15, Math.ceil((10 * settings.ticketTickMs) / 1000));
    const matchRound = async () => {
      const now = clock.now();
      await repo.matchRound(
        staleSeconds,
        (tickets) => pairTickets(tickets, now, settings.window),
        (a, b) => {
          const [x, o] = Math.random() < 0.5 ? [a, b] : [b, a];
          return {
            status: "active",
            x_id: x.user_id,
            x_name: x.username,
            o_id: o.user_id,
            o_name: o.username,
            challenger_id: null,
            x_rating: x.rating,
            o_rating: o.rating,
            turn_seconds: a.turn_seconds,
            turn_deadline: new Date(now.getTime() + a.turn_seconds * 1000),
            rated: true,
            request_id: "",
            created_at: now,
          };
        },
      );
    };
    // On a timer, and after a player queues: one round at a time per instance, one more if players queued during it.
    const matcher = every(settings.matchIntervalMs, log, "game matchmaking", matchRound);

    // Every instance sweeps; the game's row lock makes each timeout happen once, also against a racing move.
    const sweeper = every(settings.sweepIntervalMs, log, "game clock sweep", async () => {
      const now = clock.now();
      for (const id of await repo.overdue(now)) {
        await repo.change(id, (state, gtx) => void timeoutIfDue(state, gtx, now), { skipLocked: true });
      }
    });

    // The tickets of this instance's FindMatch streams, marked seen together every tick: one statement (and one
    // commit) per instance and tick, not one per waiting player (docs/game.md, Bench).
    const liveTickets = new Set<string>();
    const refresher = every(settings.ticketTickMs, log, "game ticket refresh", () => repo.refreshTickets([...liveTickets]));

    const handlers = gameHandlers({ repo, events, pageTokens, config: settings, clock, log, heartbeatMs: config.heartbeatIntervalMs, liveTickets, matchNow: () => matcher.now() });
    return {
      register: (router) => router.service(GameService, handlers),
      ping: () => ping(orm),
      stop: async () => {
        await matcher.stop();
        await refresher.stop();
        await sweeper.stop();
        events.stop();
        await closeServiceDatabase(orm);
      },
    };
  },
};
