import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import {
  CreateGameRequestSchema,
  FindMatchResponseSchema,
  GameService,
  GameUpdateSchema,
  PlayRequestSchema,
  PlayResponseSchema,
  UpdateKind,
  type GameUpdate,
  type Heartbeat,
  type PlayRequest,
  type PlayResponse,
} from "../../../gen/agora/game/v1/game_pb.js";
import { ErrorInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import type { GameConfig } from "../../config.js";
import { callerOf, type Caller } from "../../platform/auth.js";
import type { Clock } from "../../platform/clock.js";
import { toConnectError, requestIdOf } from "../../platform/error-mapping.js";
import { failedPrecondition, invalidArgument, notFound, outOfRange } from "../../platform/errors.js";
import { requestFingerprint } from "../../platform/idempotency.js";
import type { EventLog } from "../../platform/event-log.js";
import { fingerprint, isKeyset, isNumericKeyset, pageSize, type PageTokens } from "../../platform/paging.js";
import { assertValid } from "../../platform/validation.js";
import * as logic from "./game.logic.js";
import { statusFromProto, toGame, toMove, toPlayerStats, toTicket } from "./game.mapper.js";
import type { GameEvent, GameRepository, GameState, GameTx, TicketRow } from "./game.repository.js";
import { ratingWindow } from "./matchmaking.js";

export interface GameDeps {
  repo: GameRepository;
  events: EventLog<GameEvent>;
  pageTokens: PageTokens;
  config: GameConfig;
  clock: Clock;
  log: Logger;
  heartbeatMs: number;
  /** The tickets this instance's FindMatch streams hold open: index.ts refreshes them together every tick. */
  liveTickets: Set<string>;
  /** Asks for a round of matchmaking soon (after a player queues). */
  matchNow: () => void;
}

const actor = (c: Caller) => ({ id: c.userId, name: c.username });

export function gameHandlers(d: GameDeps): ServiceImpl<typeof GameService> {
  /** Applies an action to a game under its lock and returns the game as saved. */
  async function change(id: string, action: (s: GameState, gtx: GameTx, now: Date) => unknown): Promise<GameState> {
    const done = await d.repo.change(id, (s, gtx) => action(s, gtx, d.clock.now()));
    return done!.state;
  }

  function heartbeat(state: GameState | undefined): Heartbeat {
    const due = state?.game.status === "active" ? state.game.turn_deadline : null;
    const left = due ? Math.max(0, Math.ceil((new Date(due).getTime() - d.clock.now().getTime()) / 1000)) : 0;
    return { $typeName: "agora.game.v1.Heartbeat", time: timestampNow(), turnSecondsLeft: left };
  }

  /**
   * A game's updates: the state now with the moves after `afterMove`, then the
   * state after every change (with the moves not sent yet), heartbeats while quiet.
   */
  async function* follow(gameId: string, afterMove: number, signal: AbortSignal): AsyncGenerator<{ update: GameUpdate; state: GameState } | { heartbeat: Heartbeat }> {
    // Subscribed first: changes committed before are in the state read next, later ones follow, and those in both
    // are skipped by their version.
    const feed = await d.events.live(signal, d.heartbeatMs, gameId);
    try {
      let state = await d.repo.get(gameId);
      if (afterMove > state.moves.length) {
        throw outOfRange("CURSOR_AHEAD", `after_move_number ${afterMove} is ahead of the game (${state.moves.length} moves)`, { moves: String(state.moves.length) });
      }
      let sent = afterMove;
      const update = (kind: UpdateKind) => {
        const u = create(GameUpdateSchema, { kind, game: toGame(state), newMoves: state.moves.slice(sent).map(toMove) });
        sent = state.moves.length;
        return { update: u, state };
      };
      yield update(UpdateKind.SNAPSHOT);
      for await (const item of feed) {
        if ("heartbeat" in item) {
          yield { heartbeat: heartbeat(state) };
        } else if ("game" in item.event && BigInt(item.event.version) > BigInt(state.game.version)) {
          state = await d.repo.get(gameId);
          yield update(UpdateKind.CHANGE);
        }
      }
    } finally {
      await feed.return(undefined);
    }
  }

  return {
    async *findMatch(req, ctx) {
      const caller = callerOf(ctx);
      const turnSeconds = req.turnSeconds || d.config.turnSeconds;
      const reply = async (t: TicketRow) => {
        const now = d.clock.now();
        const game = t.game_id ? toGame(await d.repo.get(t.game_id)) : undefined;
        return create(FindMatchResponseSchema, { ticket: toTicket(t, ratingWindow(t, now, d.config.window), now), game });
      };
      // Following the ticket's key before the ticket exists: every event about it arrives.
      const id = randomUUID();
      const feed = await d.events.live(ctx.signal, d.config.ticketTickMs, id);
      let ticket: TicketRow | undefined;
      try {
        ticket = await d.repo.enqueue(actor(caller), turnSeconds, d.clock.now(), id);
        d.liveTickets.add(id);
        yield await reply(ticket);
        d.matchNow();
        let lastSent = Date.now();
        for await (const item of feed) {
          if ("heartbeat" in item) {
            // Every change of the ticket is an event: a quiet tick sends it as it was, its window wider.
            if (Date.now() - lastSent < d.config.ticketTickMs) continue;
          } else {
            ticket = (await d.repo.ticket(id)) ?? { ...ticket, status: "cancelled" };
          }
          lastSent = Date.now();
          yield await reply(ticket);
          if (ticket.status !== "searching") return;
        }
      } finally {
        // The ticket ends with the stream.
        d.liveTickets.delete(id);
        await feed.return(undefined);
        if (ticket?.status === "searching") await d.repo.cancelTickets(caller.userId, id).catch((err) => d.log.warn({ err }, "ticket not withdrawn"));
      }
    },

    async cancelMatch(req, ctx) {
      return { cancelled: await d.repo.cancelTickets(callerOf(ctx).userId, req.ticketId || undefined) };
    },

    async createGame(req, ctx) {
      const caller = callerOf(ctx);
      if (req.opponentUserId === caller.userId) {
        throw invalidArgument([{ field: "opponent_user_id", description: "you cannot challenge yourself", reason: "SELF_CHALLENGE" }]);
      }
      const mark = req.mark === 0 ? (Math.random() < 0.5 ? 1 : 2) : req.mark;
      const me = actor(caller);
      const them = { id: req.opponentUserId, name: "" };
      const [x, o] = mark === 1 ? [me, them] : [them, me];
      const state = await d.repo.create({
        status: "challenge",
        x_id: x.id,
        x_name: x.name,
        o_id: o.id,
        o_name: o.name,
        challenger_id: caller.userId,
        x_rating: 0,
        o_rating: 0,
        turn_seconds: req.turnSeconds || d.config.turnSeconds,
        turn_deadline: null,
        rated: !req.casual,
        request_id: req.requestId,
        created_at: d.clock.now(),
      }, requestFingerprint(CreateGameRequestSchema, req));
      return { game: toGame(state) };
    },

    async acceptChallenge(req, ctx) {
      const caller = callerOf(ctx);
      return { game: toGame(await change(req.gameId, (s, gtx, now) => logic.acceptChallenge(s, gtx, actor(caller), now))) };
    },

    async declineChallenge(req, ctx) {
      const caller = callerOf(ctx);
      return { game: toGame(await change(req.gameId, (s, _gtx, now) => logic.declineChallenge(s, caller.userId, now))) };
    },

    async makeMove(req, ctx) {
      const caller = callerOf(ctx);
      return { game: toGame(await change(req.gameId, (s, gtx, now) => logic.move(s, gtx, caller.userId, req.cell, req.moveNumber, now))) };
    },

    async *watchGame(req, ctx) {
      callerOf(ctx);
      for await (const item of follow(req.gameId, req.afterMoveNumber, ctx.signal)) {
        yield "update" in item ? { kind: { case: "update", value: item.update } } : { kind: { case: "heartbeat", value: item.heartbeat } };
      }
    },

    async *play(requests, ctx) {
      const caller = callerOf(ctx);
      const out = new Outbox<PlayResponse>();
      let gameId: string | undefined;
      const watching = new AbortController();
      const stop = () => watching.abort(ctx.signal.reason ?? new ConnectError("the stream ended", Code.Canceled));
      ctx.signal.addEventListener("abort", stop);

      const watch = async (id: string, afterMove: number) => {
        for await (const item of follow(id, afterMove, watching.signal)) {
          out.push(create(PlayResponseSchema, "update" in item ? { kind: { case: "update", value: item.update } } : { kind: { case: "heartbeat", value: item.heartbeat } }));
        }
      };

      const act = async (req: PlayRequest) => {
        const action = req.action;
        if (action.case === "join") {
          if (gameId) throw failedPrecondition("ALREADY_JOINED", `this stream plays game ${gameId}`, { type: "STREAM", subject: gameId, description: "one game per stream" });
          await d.repo.get(action.value.gameId); // NOT_FOUND here, as an error event, not the end of the stream
          gameId = action.value.gameId;
          void watch(gameId, action.value.afterMoveNumber).catch((err) => {
            if (!watching.signal.aborted) out.fail(ConnectError.from(err));
          });
          return;
        }
        if (!gameId) throw failedPrecondition("NOT_JOINED", "send join with a game id first", { type: "STREAM", subject: "", description: "no game joined" });
        const id = gameId;
        switch (action.case) {
          case "move":
            await change(id, (s, gtx, now) => logic.move(s, gtx, caller.userId, action.value.cell, action.value.moveNumber, now));
            return;
          case "resign":
            await change(id, (s, gtx, now) => logic.resign(s, gtx, caller.userId, now));
            return;
          case "offerDraw":
            await change(id, (s, gtx, now) => logic.offerDraw(s, gtx, caller.userId, now));
            return;
          case "acceptDraw":
            await change(id, (s, gtx, now) => logic.acceptDraw(s, gtx, caller.userId, now));
            return;
          case "offerRematch":
            await change(id, (s, _gtx, now) => logic.offerRematch(s, caller.userId, now));
            return;
          case "acceptRematch": {
            const state = await change(id, (s, gtx, now) => logic.acceptRematch(s, gtx, caller.userId, now));
            out.push(create(PlayResponseSchema, { kind: { case: "rematch", value: toGame(await d.repo.get(state.game.rematch_game_id!)) } }));
            return;
          }
        }
      };

      void (async () => {
        for await (const req of requests) {
          try {
            assertValid(PlayRequestSchema, req);
            await act(req);
          } catch (err) {
            const e = toConnectError(err, requestIdOf(ctx.requestHeader), d.log);
            const reason = e.findDetails(ErrorInfoSchema)[0]?.reason ?? "";
            out.push(create(PlayResponseSchema, { kind: { case: "error", value: { ref: req.ref, code: e.code, message: e.rawMessage, reason } } }));
          }
        }
        out.end();
      })().catch((err) => out.fail(ConnectError.from(err)));

      try {
        yield* out.drain(ctx.signal);
      } finally {
        ctx.signal.removeEventListener("abort", stop);
        stop();
      }
    },

    async getGame(req, ctx) {
      callerOf(ctx);
      return { game: toGame(await d.repo.get(req.gameId)) };
    },

    async listGames(req, ctx) {
      const userId = req.userId || callerOf(ctx).userId;
      const limit = pageSize(req.pageSize);
      const statuses = req.statuses.map(statusFromProto);
      const filters = fingerprint("games", userId, statuses);
      const rows = await d.repo.list(userId, statuses, d.pageTokens.decode(req.pageToken, filters, isKeyset), limit + 1);
      const { page, nextPageToken } = d.pageTokens.pageOf(rows, limit, filters, (last) => [new Date(last.game.created_at).toISOString(), last.game.id]);
      return { games: page.map(toGame), nextPageToken };
    },

    async resign(req, ctx) {
      const caller = callerOf(ctx);
      return { game: toGame(await change(req.gameId, (s, gtx, now) => logic.resign(s, gtx, caller.userId, now))) };
    },

    async offerDraw(req, ctx) {
      const caller = callerOf(ctx);
      return { game: toGame(await change(req.gameId, (s, gtx, now) => logic.offerDraw(s, gtx, caller.userId, now))) };
    },

    async acceptDraw(req, ctx) {
      const caller = callerOf(ctx);
      return { game: toGame(await change(req.gameId, (s, gtx, now) => logic.acceptDraw(s, gtx, caller.userId, now))) };
    },

    async offerRematch(req, ctx) {
      const caller = callerOf(ctx);
      return { game: toGame(await change(req.gameId, (s, _gtx, now) => logic.offerRematch(s, caller.userId, now))) };
    },

    async acceptRematch(req, ctx) {
      const caller = callerOf(ctx);
      const state = await change(req.gameId, (s, gtx, now) => logic.acceptRematch(s, gtx, caller.userId, now));
      return { game: toGame(state), rematch: toGame(await d.repo.get(state.game.rematch_game_id!)) };
    },

    async getLeaderboard(req, ctx) {
      const caller = callerOf(ctx);
      if (req.aroundCaller) {
        const me = await d.repo.rating(caller.userId);
        if (!me || !me.rank) return { entries: [], nextPageToken: "" };
        const radius = req.pageSize > 0 ? Math.min(req.pageSize, 100) : 5;
        const rows = await d.repo.leaderboardAround(me.rank, radius);
        return { entries: rows.map((r) => toPlayerStats(r, r.user_id)), nextPageToken: "", caller: toPlayerStats(me, me.user_id) };
      }
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("leaderboard");
      const after = d.pageTokens.decode(req.pageToken, filters, isNumericKeyset);
      if (after && typeof after[0] !== "number") throw invalidArgument([{ field: "page_token", description: "page_token is not a token this service issued", reason: "INVALID_PAGE_TOKEN" }]);
      const rows = await d.repo.leaderboard(after as [number, string] | undefined, limit + 1);
      const { page, nextPageToken } = d.pageTokens.pageOf(rows, limit, filters, (last) => [last.rating, last.user_id]);
      return { entries: page.map((r) => toPlayerStats(r, r.user_id)), nextPageToken };
    },

    async getPlayerStats(req, ctx) {
      const caller = callerOf(ctx);
      const userId = req.userId || caller.userId;
      const row = await d.repo.rating(userId);
      // A player who never played has the starting rating; someone else's unknown id is not confirmed.
      if (!row && userId !== caller.userId) throw notFound("player", userId);
      return { stats: toPlayerStats(row, userId, caller.username) };
    },
  };
}

/** The messages a bidi stream sends, from several writers, to one reader; ends or fails once. */
class Outbox<T> {
  private readonly items: T[] = [];
  private ended = false;
  private failure: ConnectError | undefined;
  private wake: (() => void) | undefined;

  push(item: T): void {
    this.items.push(item);
    this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  fail(err: ConnectError): void {
    this.failure ??= err;
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  async *drain(signal: AbortSignal): AsyncGenerator<T> {
    const onAbort = () => this.notify();
    signal.addEventListener("abort", onAbort);
    try {
      for (;;) {
        const item = this.items.shift();
        if (item !== undefined) {
          yield item;
          continue;
        }
        if (this.failure) throw this.failure;
        if (this.ended) return;
        if (signal.aborted) throw signal.reason;
        await new Promise<void>((r) => (this.wake = r));
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }
}
