import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  EndReason,
  GameResult,
  GameSchema,
  GameStatus,
  Mark,
  PlayerStatsSchema,
  TicketSchema,
  TicketStatus,
  type Game,
  type Move,
  type PlayerStats,
  type Ticket,
} from "../../../gen/agora/game/v1/game_pb.js";
import type { GameRow, GameState, MoveRow, RatingRow, TicketRow } from "./game.repository.js";
import { isProvisional, NEW_PLAYER } from "./rating.js";
import { turnAfter } from "./rules.js";

const STATUS: Record<GameRow["status"], GameStatus> = {
  challenge: GameStatus.CHALLENGE,
  active: GameStatus.ACTIVE,
  finished: GameStatus.FINISHED,
  aborted: GameStatus.ABORTED,
  declined: GameStatus.DECLINED,
};

const RESULT: Record<string, GameResult> = { x: GameResult.X_WON, o: GameResult.O_WON, draw: GameResult.DRAW };

const REASON: Record<string, EndReason> = {
  line: EndReason.LINE,
  board_full: EndReason.BOARD_FULL,
  resignation: EndReason.RESIGNATION,
  timeout: EndReason.TIMEOUT,
  agreement: EndReason.AGREEMENT,
  aborted: EndReason.ABORTED,
  declined: EndReason.DECLINED,
  withdrawn: EndReason.WITHDRAWN,
};

export function statusFromProto(s: GameStatus): GameRow["status"] {
  return (Object.entries(STATUS).find(([, v]) => v === s)?.[0] ?? "active") as GameRow["status"];
}

const markOf = (m: "X" | "O") => (m === "X" ? Mark.X : Mark.O);
const ts = (d: Date | null) => (d ? timestampFromDate(new Date(d)) : undefined);

export function toMove(m: MoveRow): Move {
  return { $typeName: "agora.game.v1.Move", number: m.number, mark: markOf(m.mark), cell: m.cell, userId: m.user_id, createTime: ts(m.created_at) };
}

export function toGame({ game: g, moves }: GameState): Game {
  return create(GameSchema, {
    id: g.id,
    status: STATUS[g.status],
    result: g.result ? RESULT[g.result] : GameResult.UNSPECIFIED,
    endReason: g.end_reason ? REASON[g.end_reason] : EndReason.UNSPECIFIED,
    x: { userId: g.x_id, username: g.x_name, mark: Mark.X, rating: g.x_rating, ratingChange: g.x_change },
    o: { userId: g.o_id, username: g.o_name, mark: Mark.O, rating: g.o_rating, ratingChange: g.o_change },
    board: g.board,
    moves: moves.map(toMove),
    turn: g.status === "active" ? markOf(turnAfter(g.move_count)) : Mark.UNSPECIFIED,
    nextMoveNumber: g.move_count + 1,
    turnSeconds: g.turn_seconds,
    turnDeadline: ts(g.turn_deadline),
    rated: g.rated,
    drawOfferedBy: g.draw_offered_by ?? "",
    rematchOfferedBy: g.rematch_offered_by ?? "",
    rematchGameId: g.rematch_game_id ?? "",
    invitedUserId: g.status === "challenge" ? (g.challenger_id === g.x_id ? g.o_id : g.x_id) : "",
    version: BigInt(g.version),
    createTime: ts(g.created_at),
    updateTime: ts(g.updated_at),
    endTime: ts(g.ended_at),
  });
}

export function toPlayerStats(r: RatingRow | undefined, userId: string, username = ""): PlayerStats {
  const row = r ?? { ...NEW_PLAYER, user_id: userId, username, games: 0, wins: 0, losses: 0, draws: 0, streak: 0, rank: 0 };
  return create(PlayerStatsSchema, {
    userId: row.user_id,
    username: row.username,
    rating: row.rating,
    deviation: row.deviation,
    volatility: row.volatility,
    provisional: isProvisional(row),
    games: row.games,
    wins: row.wins,
    losses: row.losses,
    draws: row.draws,
    streak: row.streak,
    rank: row.rank ?? 0,
  });
}

const TICKET_STATUS = { searching: TicketStatus.SEARCHING, matched: TicketStatus.MATCHED, cancelled: TicketStatus.CANCELLED };

export function toTicket(t: TicketRow, window: number, now: Date): Ticket {
  return create(TicketSchema, {
    id: t.id,
    status: TICKET_STATUS[t.status],
    rating: t.rating,
    deviation: t.deviation,
    ratingWindow: Math.round(window),
    waitedSeconds: Math.max(0, Math.floor((now.getTime() - new Date(t.created_at).getTime()) / 1000)),
    gameId: t.game_id ?? "",
    createTime: ts(t.created_at),
  });
}
