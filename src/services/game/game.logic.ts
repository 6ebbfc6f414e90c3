import { aborted, failedPrecondition, invalidArgument, permissionDenied } from "../../platform/errors.js";
import type { GameRow, GameState, GameTx, NewGame, RatingRow } from "./game.repository.js";
import { afterGame } from "./rating.js";
import { moveProblem, outcome, play, turnAfter, type Mark } from "./rules.js";

/**
 * What players can do to a game, as edits of its locked state (the
 * repository's `change` saves them in one transaction). Every refusal throws
 * before anything is edited, so bad input changes nothing.
 */

export interface Actor {
  id: string;
  name: string;
}

const deadline = (now: Date, seconds: number) => new Date(now.getTime() + seconds * 1000);

/** The caller's mark; PERMISSION_DENIED for anyone but the two players. */
export function markOf(game: GameRow, userId: string): Mark {
  if (userId === game.x_id) return "X";
  if (userId === game.o_id) return "O";
  throw permissionDenied("NOT_A_PLAYER", `only the two players of game ${game.id} can do this`, { game_id: game.id });
}

function assertActive(game: GameRow): void {
  if (game.status === "active") return;
  throw failedPrecondition("GAME_NOT_ACTIVE", `game ${game.id} is ${game.status}, not being played`, {
    type: "GAME_STATUS",
    subject: game.id,
    description: `the game is ${game.status}`,
  });
}

/**
 * A game whose turn clock ran out by `now` ends: the player to move loses,
 * or, before both players have moved, the game is aborted. True when it ended.
 */
export function timeoutIfDue(state: GameState, gtx: GameTx, now: Date): boolean {
  const g = state.game;
  if (g.status !== "active" || !g.turn_deadline || g.turn_deadline.getTime() > now.getTime()) return false;
  if (g.move_count < 2) abort(g, g.turn_deadline);
  else finish(g, gtx, turnAfter(g.move_count) === "X" ? "o" : "x", "timeout", g.turn_deadline);
  gtx.keep = true;
  return true;
}

function abort(g: GameRow, now: Date): void {
  Object.assign(g, { status: "aborted", end_reason: "aborted", turn_deadline: null, draw_offered_by: null, ended_at: now, updated_at: now });
}

/** Ends the game with a result; a rated game updates both ratings in the same transaction. */
function finish(g: GameRow, gtx: GameTx, result: "x" | "o" | "draw", reason: string, now: Date): void {
  Object.assign(g, { status: "finished", result, end_reason: reason, turn_deadline: null, draw_offered_by: null, ended_at: now, updated_at: now });
  if (!g.rated) return;
  const scoreX = result === "x" ? 1 : result === "o" ? 0 : 0.5;
  gtx.ratings = (x, o) => {
    const [nx, no] = afterGame(x, o, scoreX);
    return { x: record({ ...x, ...nx }, scoreX), o: record({ ...o, ...no }, 1 - scoreX) };
  };
}

/** Counts a result in a player's record: games, wins/losses/draws and the streak. */
function record(r: RatingRow, score: number): RatingRow {
  const next = { ...r, games: r.games + 1 };
  if (score === 1) return { ...next, wins: r.wins + 1, streak: r.streak > 0 ? r.streak + 1 : 1 };
  if (score === 0) return { ...next, losses: r.losses + 1, streak: r.streak < 0 ? r.streak - 1 : -1 };
  return { ...next, draws: r.draws + 1, streak: 0 };
}

/**
 * Plays `cell` as move `number`. A resend of a move already played (same
 * number, player and cell) returns the game unchanged; any other number is
 * stale (ABORTED, with the expected number).
 */
export function move(state: GameState, gtx: GameTx, userId: string, cell: number, number: number, now: Date): void {
  const g = state.game;
  const mark = markOf(g, userId);
  const earlier = state.moves[number - 1];
  if (earlier && earlier.user_id === userId && earlier.cell === cell) return;
  timeoutIfDue(state, gtx, now);
  assertActive(g);
  const expected = g.move_count + 1;
  if (number !== expected) {
    throw aborted("STALE_MOVE", `move ${number} is stale: game ${g.id} expects move ${expected}; re-read the game`, {
      expected_move_number: String(expected),
      game_id: g.id,
    });
  }
  if (turnAfter(g.move_count) !== mark) {
    throw failedPrecondition("NOT_YOUR_TURN", `it is ${turnAfter(g.move_count)}'s turn, you play ${mark}`, {
      type: "TURN",
      subject: g.id,
      description: `${turnAfter(g.move_count)} to move`,
    });
  }
  const problem = moveProblem(g.board, cell);
  if (problem === "CELL_OUT_OF_RANGE") throw invalidArgument([{ field: "cell", description: "must be 0 to 8", reason: problem }]);
  if (problem) {
    throw failedPrecondition(problem, `cell ${cell} is taken`, { type: "CELL", subject: String(cell), description: `cell ${cell} holds ${g.board[cell]}` });
  }
  state.moves.push({ game_id: g.id, number, cell, mark, user_id: userId, created_at: now });
  g.board = play(g.board, cell, mark);
  g.move_count = number;
  g.updated_at = now;
  // A move declines a draw the opponent offered.
  if (g.draw_offered_by && g.draw_offered_by !== userId) g.draw_offered_by = null;
  const end = outcome(g.board);
  if (!end) g.turn_deadline = deadline(now, g.turn_seconds);
  else if ("winner" in end) finish(g, gtx, end.winner === "X" ? "x" : "o", "line", now);
  else finish(g, gtx, "draw", "board_full", now);
}

/** The caller loses; before both players have moved, the game is aborted instead. */
export function resign(state: GameState, gtx: GameTx, userId: string, now: Date): void {
  const g = state.game;
  const mark = markOf(g, userId);
  timeoutIfDue(state, gtx, now);
  assertActive(g);
  if (g.move_count < 2) abort(g, now);
  else finish(g, gtx, mark === "X" ? "o" : "x", "resignation", now);
}

export function offerDraw(state: GameState, gtx: GameTx, userId: string, now: Date): void {
  const g = state.game;
  markOf(g, userId);
  timeoutIfDue(state, gtx, now);
  assertActive(g);
  if (g.draw_offered_by === userId) return;
  if (g.draw_offered_by) {
    finish(g, gtx, "draw", "agreement", now); // both offered: agreed
    return;
  }
  g.draw_offered_by = userId;
  g.updated_at = now;
}

export function acceptDraw(state: GameState, gtx: GameTx, userId: string, now: Date): void {
  const g = state.game;
  markOf(g, userId);
  timeoutIfDue(state, gtx, now);
  assertActive(g);
  if (!g.draw_offered_by || g.draw_offered_by === userId) {
    throw failedPrecondition("NO_DRAW_OFFER", "your opponent has not offered a draw", { type: "DRAW_OFFER", subject: g.id, description: "no draw offer stands" });
  }
  finish(g, gtx, "draw", "agreement", now);
}

function assertOver(g: GameRow): void {
  if (g.status === "finished" || g.status === "aborted") return;
  throw failedPrecondition("GAME_NOT_OVER", `a rematch follows a game that ended; game ${g.id} is ${g.status}`, {
    type: "GAME_STATUS",
    subject: g.id,
    description: `the game is ${g.status}`,
  });
}

export function offerRematch(state: GameState, userId: string, now: Date): void {
  const g = state.game;
  markOf(g, userId);
  assertOver(g);
  if (g.rematch_game_id) throw failedPrecondition("REMATCH_EXISTS", "the rematch was already accepted", { type: "REMATCH", subject: g.id, description: `rematch ${g.rematch_game_id}` });
  if (g.rematch_offered_by === userId) return;
  g.rematch_offered_by = userId;
  g.updated_at = now;
}

/** Starts the rematch (marks swapped, same settings); accepting twice returns the same rematch. */
export async function acceptRematch(state: GameState, gtx: GameTx, userId: string, now: Date): Promise<GameState | undefined> {
  const g = state.game;
  markOf(g, userId);
  assertOver(g);
  if (g.rematch_game_id) return undefined;
  if (!g.rematch_offered_by || g.rematch_offered_by === userId) {
    throw failedPrecondition("NO_REMATCH_OFFER", "your opponent has not offered a rematch", { type: "REMATCH", subject: g.id, description: "no rematch offer stands" });
  }
  const x = { id: g.o_id, name: g.o_name };
  const o = { id: g.x_id, name: g.x_name };
  const rematch = await gtx.createGame(await started(gtx, x, o, { turn_seconds: g.turn_seconds, rated: g.rated, challenger_id: null, request_id: "" }, now));
  g.rematch_game_id = rematch.game.id;
  g.updated_at = now;
  return rematch;
}

/** A new active game between x and o with their current ratings, X's clock running. */
export async function started(
  gtx: GameTx,
  x: Actor,
  o: Actor,
  settings: Pick<NewGame, "turn_seconds" | "rated" | "challenger_id" | "request_id">,
  now: Date,
): Promise<NewGame> {
  const ratings = await gtx.ratingsOf([x, o], now);
  return {
    ...settings,
    status: "active",
    x_id: x.id,
    x_name: x.name,
    o_id: o.id,
    o_name: o.name,
    x_rating: ratings.get(x.id)!.rating,
    o_rating: ratings.get(o.id)!.rating,
    turn_deadline: deadline(now, settings.turn_seconds),
    created_at: now,
  };
}

/** The invited player starts a challenge: names and ratings fill in, X's clock starts. */
export async function acceptChallenge(state: GameState, gtx: GameTx, user: Actor, now: Date): Promise<void> {
  const g = state.game;
  assertInvited(g, user.id);
  if (g.status === "active") return; // accepted already (a resend)
  assertChallenge(g);
  const x = g.x_id === user.id ? user : { id: g.x_id, name: g.x_name };
  const o = g.o_id === user.id ? user : { id: g.o_id, name: g.o_name };
  const ratings = await gtx.ratingsOf([x, o], now);
  Object.assign(g, {
    status: "active",
    x_name: x.name,
    o_name: o.name,
    x_rating: ratings.get(x.id)!.rating,
    o_rating: ratings.get(o.id)!.rating,
    turn_deadline: deadline(now, g.turn_seconds),
    updated_at: now,
  });
}

/** The invited player declines, or the challenger withdraws. */
export function declineChallenge(state: GameState, userId: string, now: Date): void {
  const g = state.game;
  markOf(g, userId);
  if (g.status === "declined") return;
  assertChallenge(g);
  Object.assign(g, { status: "declined", end_reason: userId === g.challenger_id ? "withdrawn" : "declined", ended_at: now, updated_at: now });
}

function assertInvited(g: GameRow, userId: string): void {
  markOf(g, userId);
  if (userId === g.challenger_id) {
    throw permissionDenied("NOT_INVITED", "only the invited player can accept a challenge", { game_id: g.id });
  }
}

function assertChallenge(g: GameRow): void {
  if (g.status === "challenge") return;
  throw failedPrecondition("NOT_A_CHALLENGE", `game ${g.id} is ${g.status}, not a challenge waiting for an answer`, {
    type: "GAME_STATUS",
    subject: g.id,
    description: `the game is ${g.status}`,
  });
}
