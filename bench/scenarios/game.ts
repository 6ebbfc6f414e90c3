/**
 * 7. Game: `games` x 2 players queue for a match at once (FindMatch), half on
 * each of two instances sharing one PostgreSQL, then every matched game is
 * played to its end at the same time with random legal moves: each player
 * moves with MakeMove on their own instance and follows the game with
 * WatchGame there, so a move made on one instance reaches the opponent on the
 * other through PostgreSQL. Reported: matchmaking time (queued -> MATCHED on
 * the player's stream), moves/s, move-to-opponent latency (MakeMove sent ->
 * the opponent's stream shows it), and two checks: every player matched
 * exactly once, and every finished game counted once in both players' ratings.
 */
import path from "node:path";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { GameService, GameStatus, Mark, TicketStatus, type Game } from "../../gen/agora/game/v1/game_pb.js";
import { DIST_ENTRY, Instance } from "../../scripts/cluster.js";
import { freePort } from "../../src/platform/ports.js";
import type { BenchContext, Row, Scenario } from "../lib/context.js";
import { ADMIN, NO_RATE_LIMITS, startAgora } from "../lib/agora.js";
import { measure, perThousand } from "../lib/measure.js";
import { LatencyHistogram } from "../lib/stats.js";
import { trackPid } from "../lib/children.js";
import { bearerInterceptor } from "../lib/clients.js";
import { pin } from "../lib/proc.js";

type Games = Client<typeof GameService>;

/** Resolves once `game` shows `moves` moves or has ended (read from a WatchGame stream). */
class Follower {
  game: Game | undefined;
  private waiters: (() => void)[] = [];
  readonly abort = new AbortController();

  constructor(games: Games, id: string) {
    void (async () => {
      for await (const m of games.watchGame({ gameId: id }, { signal: this.abort.signal })) {
        if (m.kind.case !== "update") continue;
        this.game = m.kind.value.game;
        for (const w of this.waiters.splice(0)) w();
      }
    })().catch(() => undefined);
  }

  async until(moves: number): Promise<Game> {
    while (!this.game || (this.game.moves.length < moves && this.game.status === GameStatus.ACTIVE)) {
      await new Promise<void>((r) => this.waiters.push(r));
    }
    return this.game;
  }
}

export const game: Scenario = {
  name: "game",
  title: "Game: matchmaking and concurrent play across two instances",
  description:
    "Players queue at once (half on each of two instances), then every matched game is played to its end with random legal moves. " +
    "match p50/p99 = queued -> MATCHED; moves/s over all games; p50/p99 move -> opponent = MakeMove sent on one instance -> the opponent's WatchGame " +
    "on the other shows it; double results = finished games not counted exactly once in both ratings (must be 0).",
  rowLabel: "games",
  columns: [
    { key: "players", label: "players", digits: 0 },
    { key: "matchP50Ms", label: "match p50 ms", digits: 0 },
    { key: "matchP99Ms", label: "match p99 ms", digits: 0 },
    { key: "movesPerSecond", label: "moves/s", digits: 0 },
    { key: "moveP50Ms", label: "p50 ms move->opponent", digits: 1 },
    { key: "moveP99Ms", label: "p99 ms", digits: 1 },
    { key: "cpuMsPer1k_agora", label: "CPU ms/1k moves Agora", digits: 0 },
    { key: "doubleResults", label: "double results", digits: 0 },
  ],
  async run(ctx: BenchContext) {
    const { games: count } = ctx.settings.game;
    const agora = await startAgora(ctx, "game");
    // A second instance on the same database and keys (tokens verify on both).
    const port = await freePort();
    const second = new Instance(2, port, {
      ...process.env,
      HOST: "127.0.0.1",
      DATABASE_URL: agora.databaseUrl,
      DATA_DIR: path.join(ctx.runDir, "game"),
      ADMIN_USERNAME: ADMIN.username,
      ADMIN_PASSWORD: ADMIN.password,
      ACCESS_TOKEN_TTL_SECONDS: "7200",
      ...NO_RATE_LIMITS,
    }, path.join(ctx.runDir, "game", "agora-2.log"), DIST_ENTRY);
    try {
      await second.up();
      trackPid(second.child!.pid!);
      pin(second.child!.pid!, ctx.pinning.server);
      const secondUrl = `http://127.0.0.1:${port}`;
      ctx.log(`  registering ${2 * count} players`);
      const users = await agora.users("player", 2 * count);
      const clients = users.map((u, i) => (i % 2 ? createClient(GameService, createGrpcTransport({ baseUrl: secondUrl, interceptors: [bearerInterceptor(u.token)] })) : agora.client(GameService, u.token)));
      const byUser = new Map(users.map((u, i) => [u.id, clients[i]!]));

      const { result, usage } = await measure(
        [...agora.watched(), { name: "agora2", pid: second.child!.pid!, rss: true }],
        ctx.pinning,
        async () => {
          // Matchmaking: everyone queues at once.
          const matchMs = new LatencyHistogram();
          const start = performance.now();
          const gameOf = await Promise.all(
            clients.map(async (c) => {
              for await (const m of c.findMatch({})) {
                if (m.ticket?.status === TicketStatus.MATCHED) {
                  matchMs.record(performance.now() - start);
                  return m.ticket.gameId;
                }
              }
              throw new ConnectError("FindMatch ended without a match", Code.Internal);
            }),
          );
          const ids = [...new Set(gameOf)];
          ctx.log(`  ${clients.length} players matched into ${ids.length} games in ${Math.round(performance.now() - start)} ms`);

          // Play: every game at once, random legal moves.
          const moveMs = new LatencyHistogram();
          let moves = 0;
          const playStart = performance.now();
          await Promise.all(
            ids.map(async (id) => {
              const first = (await clients[gameOf.indexOf(id)]!.getGame({ gameId: id })).game!;
              const x = byUser.get(first.x!.userId)!;
              const o = byUser.get(first.o!.userId)!;
              const followers = new Map([[Mark.X, new Follower(x, id)], [Mark.O, new Follower(o, id)]]);
              try {
                let g = first;
                while (g.status === GameStatus.ACTIVE) {
                  const free = [...g.board].flatMap((c, i) => (c === "." ? [i] : []));
                  const cell = free[Math.floor(Math.random() * free.length)]!;
                  const mover = g.turn === Mark.X ? x : o;
                  const opponent = followers.get(g.turn === Mark.X ? Mark.O : Mark.X)!;
                  const sent = performance.now();
                  await mover.makeMove({ gameId: id, cell, moveNumber: g.nextMoveNumber });
                  g = await opponent.until(g.nextMoveNumber);
                  moveMs.record(performance.now() - sent);
                  moves++;
                }
              } finally {
                for (const f of followers.values()) f.abort.abort();
              }
            }),
          );
          return { matchMs, moveMs, moves, games: ids.length, playSeconds: (performance.now() - playStart) / 1000, matchedOnce: gameOf.length === clients.length && ids.length * 2 === clients.length };
        },
      );
      const [check] = await agora.query<{ finished: string; counted: string }>(
        `SELECT (SELECT count(*) FROM "game".games WHERE status = 'finished') AS finished, (SELECT coalesce(sum(games), 0) FROM "game".ratings) AS counted`,
      );
      const doubleResults = Math.abs(2 * Number(check!.finished) - Number(check!.counted)) / 2;
      const row: Row = {
        name: String(result.games),
        metrics: {
          players: clients.length,
          matchP50Ms: result.matchMs.percentile(50),
          matchP99Ms: result.matchMs.percentile(99),
          movesPerSecond: result.moves / result.playSeconds,
          moveP50Ms: result.moveMs.percentile(50),
          moveP99Ms: result.moveMs.percentile(99),
          cpuMsPer1k_agora: perThousand((usage.cpuMs.agora ?? 0) + (usage.cpuMs.agora2 ?? 0), result.moves),
          doubleResults,
          matchedOnce: result.matchedOnce ? 1 : 0,
        },
        notes: [...(doubleResults > 0 ? [`${doubleResults} games not counted exactly once`] : []), ...(result.matchedOnce ? [] : ["a player was matched twice or not at all"])],
      };
      if (doubleResults > 0 || !result.matchedOnce) return { status: "failed" as const, reason: row.notes!.join("; "), rows: [row], details: {} };
      return { status: "ok" as const, rows: [row], details: { games: count, moves: result.moves } };
    } finally {
      await second.stop();
      await agora.stop();
    }
  },
};
