import { randomUUID } from "node:crypto";
import type { EntityManager } from "@mikro-orm/postgresql";
import { commitWith, preparedQuery, retryTransaction, sqlTransaction, transaction, type Queryable } from "../../platform/db.js";
import { alreadyExists, notFound } from "../../platform/errors.js";
import type { EventLog } from "../../platform/event-log.js";
import { assertSameRequest } from "../../platform/idempotency.js";
import { NEW_PLAYER, type Rating } from "./rating.js";

/** The service's PostgreSQL schema: its migrations create it; openServiceDatabase, the event log and every SQL statement name it from here. */
export const SCHEMA = "game";

export type GameStatus = "challenge" | "active" | "finished" | "aborted" | "declined";

export interface GameRow {
  id: string;
  status: GameStatus;
  result: "x" | "o" | "draw" | null;
  end_reason: string | null;
  x_id: string;
  x_name: string;
  o_id: string;
  o_name: string;
  challenger_id: string | null;
  x_rating: number;
  o_rating: number;
  x_change: number;
  o_change: number;
  board: string;
  move_count: number;
  turn_seconds: number;
  turn_deadline: Date | null;
  rated: boolean;
  draw_offered_by: string | null;
  rematch_offered_by: string | null;
  rematch_game_id: string | null;
  request_id: string;
  version: string;
  created_at: Date;
  updated_at: Date;
  ended_at: Date | null;
}

export interface MoveRow {
  game_id: string;
  number: number;
  cell: number;
  mark: "X" | "O";
  user_id: string;
  created_at: Date;
}

export interface RatingRow extends Rating {
  user_id: string;
  username: string;
  games: number;
  wins: number;
  losses: number;
  draws: number;
  streak: number;
  rank?: number;
}

export interface TicketRow {
  id: string;
  user_id: string;
  username: string;
  rating: number;
  deviation: number;
  turn_seconds: number;
  status: "searching" | "matched" | "cancelled";
  game_id: string | null;
  created_at: Date;
}

/** The fields a new game is created with. */
export type NewGame = Pick<
  GameRow,
  "status" | "x_id" | "x_name" | "o_id" | "o_name" | "challenger_id" | "x_rating" | "o_rating" | "turn_seconds" | "turn_deadline" | "rated" | "request_id" | "created_at"
>;

/** What the event log carries: which game (or which tickets) changed; readers load the state. */
export type GameEvent = { game: string; version: string } | { tickets: string[] };

/** The ids an event concerns (game and ticket ids are both UUIDs): a stream follows its game's or its ticket's. */
export const gameEventKeys = (e: GameEvent): readonly string[] => ("game" in e ? [e.game] : e.tickets);

/** A game with its moves, as loaded (and locked) in a transaction. */
export interface GameState {
  game: GameRow;
  moves: MoveRow[];
}

/** Ratings change with a game's result: the caller says how, inside the game's transaction. */
export type RatingChange = (x: RatingRow, o: RatingRow) => { x: RatingRow; o: RatingRow };

const MUTABLE = [
  "status", "result", "end_reason", "o_name", "x_name", "x_rating", "o_rating", "x_change", "o_change", "board", "move_count",
  "turn_deadline", "draw_offered_by", "rematch_offered_by", "rematch_game_id", "updated_at", "ended_at",
] as const;

const UNIQUE_VIOLATION = "23505";

/** A game's columns and its moves as JSON, in one statement so that both come from one snapshot. */
const WITH_MOVES = `g.*, (SELECT coalesce(json_agg(m ORDER BY m.number), '[]'::json) FROM "${SCHEMA}".moves m WHERE m.game_id = g.id) AS moves`;

const GET_GAME = `SELECT ${WITH_MOVES} FROM "${SCHEMA}".games g WHERE g.id = $1`;
/** The game with its moves, its row locked (the moves as the statement's snapshot saw them: see change()). */
const LOCK_GAME = `${GET_GAME} FOR UPDATE OF g`;
const MOVES = `SELECT * FROM "${SCHEMA}".moves WHERE game_id = $1 ORDER BY number`;

const move = (m: MoveRow): MoveRow => ({ ...m, created_at: new Date(m.created_at) });

function withMoves({ moves, ...game }: GameRow & { moves: MoveRow[] }): GameState {
  return { game: numbers(game), moves: moves.map(move) };
}

const date = (d: Date | string | null) => (d === null ? null : new Date(d));

/** A game row with numbers and dates as such (the driver may hand back strings). */
const numbers = (g: GameRow): GameRow => ({
  ...g,
  x_rating: Number(g.x_rating),
  o_rating: Number(g.o_rating),
  x_change: Number(g.x_change),
  o_change: Number(g.o_change),
  turn_deadline: date(g.turn_deadline),
  created_at: date(g.created_at)!,
  updated_at: date(g.updated_at)!,
  ended_at: date(g.ended_at),
});

/** change()'s write: $1 the game, $2-$6 the new moves' columns, then MUTABLE's values, then the event log's append. */
function saveGameSql(events: EventLog<GameEvent>): string {
  return events.afterWrite(
    `added_moves AS (INSERT INTO "${SCHEMA}".moves (game_id, number, cell, mark, user_id, created_at)
                     SELECT $1::uuid, * FROM unnest($2::int[], $3::int[], $4::text[], $5::uuid[], $6::timestamptz[])),
     saved AS (UPDATE "${SCHEMA}".games SET ${MUTABLE.map((k, i) => `${k} = $${i + 7}`).join(", ")}, version = version + 1 WHERE id = $1 RETURNING *)`,
    "saved",
    MUTABLE.length + 7,
  );
}

/**
 * Players' rating rows, made with the starting rating the first time (the name kept current), returned: $1 their
 * ids, $2 their names, $3 the time, $4-$6 the starting rating (ensureRatingsValues).
 */
const ENSURE_RATINGS = `INSERT INTO "${SCHEMA}".ratings (user_id, username, rating, deviation, volatility, updated_at)
  SELECT id, name, $4::float8, $5::float8, $6::float8, $3::timestamptz FROM unnest($1::uuid[], $2::text[]) AS p(id, name)
  ON CONFLICT (user_id) DO UPDATE SET username = excluded.username RETURNING *`;

const ensureRatingsValues = (players: { id: string; name: string }[], now: Date): unknown[] => [
  players.map((p) => p.id),
  players.map((p) => p.name),
  now,
  NEW_PLAYER.rating,
  NEW_PLAYER.deviation,
  NEW_PLAYER.volatility,
];

/** Owns every query on games, moves, ratings and tickets. */
export class GameRepository {
  private readonly saveSql: string;

  constructor(
    private readonly em: EntityManager,
    private readonly events: EventLog<GameEvent>,
  ) {
    this.saveSql = saveGameSql(events);
  }

  private get db() {
    return this.em.fork();
  }

  /** A game with its moves, read in one statement (one snapshot: never a move list newer than the game row). */
  async get(id: string): Promise<GameState> {
    const [row] = await preparedQuery<GameRow & { moves: MoveRow[] }>(this.em, "game.get-game", GET_GAME, [id]);
    if (!row) throw notFound("game", id);
    return withMoves(row);
  }

  /**
   * A challenge or a matched game; with request_id, a repeat of the same request
   * returns the first game (INVALID_ARGUMENT when `fingerprint` differs from the first request's).
   */
  async create(game: NewGame, fingerprint: string | null = null): Promise<GameState> {
    if (game.request_id !== "" && game.challenger_id) {
      const earlier = await this.byRequest(game.challenger_id, game.request_id, fingerprint);
      if (earlier) return earlier;
    }
    try {
      return await transaction(this.em, async (tx) => this.insertGame(tx, game, fingerprint));
    } catch (err) {
      if ((err as { code?: string }).code === UNIQUE_VIOLATION && game.challenger_id) {
        const earlier = await this.byRequest(game.challenger_id, game.request_id, fingerprint);
        if (earlier) return earlier;
        throw alreadyExists("game", "a game with this request_id exists");
      }
      throw err;
    }
  }

  /** Inserts a game inside the caller's transaction, with its event. */
  async insertGame(tx: Queryable, game: NewGame, fingerprint: string | null = null): Promise<GameState> {
    const [state] = await this.insertGames(tx, [game], fingerprint);
    await this.events.append(tx, [{ game: state!.game.id, version: "1" }]);
    return state!;
  }

  /** Inserts games in one statement inside the caller's transaction, in the order given; their events are the caller's to append. */
  private async insertGames(tx: Queryable, games: NewGame[], fingerprint: string | null = null): Promise<GameState[]> {
    const ids = games.map(() => randomUUID());
    const column = <K extends keyof NewGame>(k: K) => games.map((g) => g[k]);
    const rows = await preparedQuery<GameRow>(
      tx,
      "game.insert-games",
      `INSERT INTO "${SCHEMA}".games (id, status, x_id, x_name, o_id, o_name, challenger_id, x_rating, o_rating, turn_seconds, turn_deadline, rated, request_id, request_fingerprint, created_at, updated_at)
       SELECT *, created_at FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::uuid[], $6::text[], $7::uuid[], $8::float8[], $9::float8[], $10::int[],
                            $11::timestamptz[], $12::bool[], $13::text[], $14::text[], $15::timestamptz[])
         AS g(id, status, x_id, x_name, o_id, o_name, challenger_id, x_rating, o_rating, turn_seconds, turn_deadline, rated, request_id, request_fingerprint, created_at)
       RETURNING *`,
      [ids, column("status"), column("x_id"), column("x_name"), column("o_id"), column("o_name"), column("challenger_id"), column("x_rating"),
        column("o_rating"), column("turn_seconds"), column("turn_deadline"), column("rated"), column("request_id"),
        games.map((g) => (g.request_id ? fingerprint : null)), column("created_at")],
    );
    const byId = new Map(rows.map((r) => [r.id, r]));
    return ids.map((id) => ({ game: numbers(byId.get(id)!), moves: [] }));
  }

  private async byRequest(challengerId: string, requestId: string, fingerprint: string | null): Promise<GameState | undefined> {
    const [row] = await this.db.execute<{ id: string; request_fingerprint: string | null }[]>(
      `SELECT id, request_fingerprint FROM "${SCHEMA}".games WHERE challenger_id = ? AND request_id = ?`,
      [challengerId, requestId],
    );
    if (row && fingerprint) assertSameRequest(row.request_fingerprint, fingerprint);
    return row ? this.get(row.id) : undefined;
  }

  /**
   * Changes one game under its row lock: `change` edits the state it is given
   * (and may return a new game to create, for rematches); new moves, the new
   * version, the ratings (when `ratings` is returned) and the event are written
   * in one transaction. With skipLocked, a game locked by someone else is left
   * alone (undefined). An error thrown by `change` after `keep` marked the state
   * (a timeout that was due) still commits that state, then is rethrown.
   */
  async change<T>(
    id: string,
    change: (state: GameState, tx: GameTx) => Promise<T> | T,
    options: { skipLocked?: boolean } = {},
  ): Promise<{ state: GameState; value: T } | undefined> {
    let failure: unknown;
    const done = await retryTransaction(() =>
      sqlTransaction(this.em, async (tx) => {
        failure = undefined;
        const [row] = options.skipLocked
          ? await preparedQuery<GameRow & { moves: MoveRow[] }>(tx, "game.lock-game-skip-locked", `${LOCK_GAME} SKIP LOCKED`, [id])
          : await preparedQuery<GameRow & { moves: MoveRow[] }>(tx, "game.lock-game", LOCK_GAME, [id]);
        if (!row) {
          if (options.skipLocked) return undefined;
          throw notFound("game", id);
        }
        const locked = withMoves(row);
        // The moves come from the snapshot the statement took before it waited for the lock: when the game row
        // (read after the wait) counts more, a move was committed meanwhile, and a new statement sees it.
        if (locked.moves.length !== locked.game.move_count) locked.moves = (await preparedQuery<MoveRow>(tx, "game.moves", MOVES, [id])).map(move);
        const before = locked.game;
        const state: GameState = { game: { ...before }, moves: locked.moves };
        const known = state.moves.length;
        const gtx = new GameTx(tx, this);
        let value: T | undefined;
        try {
          value = await change(state, gtx);
        } catch (err) {
          if (!gtx.keep) throw err;
          failure = err;
        }
        if (!MUTABLE.some((k) => String(state.game[k]) !== String(before[k])) && state.moves.length === known && !gtx.ratings) {
          return { state, value: value as T };
        }
        if (gtx.ratings) await this.rate(tx, state.game, gtx.ratings);
        // The new moves, the game and its event in one statement (the version it bumps is the one the event names),
        // sent with the COMMIT: the event log's lock is held for PostgreSQL's time alone.
        const added = state.moves.slice(known);
        const events = [{ game: id, version: String(BigInt(before.version) + 1n) }, ...gtx.extraEvents];
        const [saved] = await commitWith<GameRow>(tx, "game.save-game", this.saveSql, [
          id,
          added.map((m) => m.number),
          added.map((m) => m.cell),
          added.map((m) => m.mark),
          added.map((m) => m.user_id),
          added.map((m) => m.created_at),
          ...MUTABLE.map((k) => state.game[k]),
          ...this.events.appendValues(events),
        ]);
        state.game = numbers(saved!);
        return { state, value: value as T };
      }),
    );
    if (failure) throw failure;
    return done;
  }

  /** Locks both players' ratings (in user id order: no deadlock), applies the change, records it on the game. */
  private async rate(tx: Queryable, game: GameRow, change: RatingChange): Promise<void> {
    await this.ensureRatings(tx, [
      { id: game.x_id, name: game.x_name },
      { id: game.o_id, name: game.o_name },
    ], game.updated_at);
    const rows = await preparedQuery<RatingRow>(tx, "game.lock-ratings", `SELECT * FROM "${SCHEMA}".ratings WHERE user_id = ANY($1::uuid[]) ORDER BY user_id FOR UPDATE`, [
      [game.x_id, game.o_id],
    ]);
    const x = rows.find((r) => r.user_id === game.x_id)!;
    const o = rows.find((r) => r.user_id === game.o_id)!;
    const next = change(x, o);
    for (const r of [next.x, next.o]) {
      await preparedQuery(
        tx,
        "game.update-rating",
        `UPDATE "${SCHEMA}".ratings SET rating = $1, deviation = $2, volatility = $3, games = $4, wins = $5, losses = $6, draws = $7, streak = $8, updated_at = $9 WHERE user_id = $10`,
        [r.rating, r.deviation, r.volatility, r.games, r.wins, r.losses, r.draws, r.streak, game.updated_at, r.user_id],
      );
    }
    game.x_change = next.x.rating - x.rating;
    game.o_change = next.o.rating - o.rating;
  }

  async ensureRatings(db: Queryable, players: { id: string; name: string }[], now: Date): Promise<void> {
    await preparedQuery(db, "game.ensure-ratings", ENSURE_RATINGS, ensureRatingsValues(players, now));
  }

  /** A player's rating row with their rank among players with a rated game (undefined: never rated). */
  async rating(userId: string): Promise<RatingRow | undefined> {
    const [row] = await this.db.execute<RatingRow[]>(
      `SELECT r.*, CASE WHEN r.games > 0 THEN (SELECT count(*)::int + 1 FROM "${SCHEMA}".ratings b
                 WHERE b.games > 0 AND (b.rating > r.rating OR (b.rating = r.rating AND b.user_id < r.user_id))) ELSE 0 END AS rank
         FROM "${SCHEMA}".ratings r WHERE r.user_id = ?`,
      [userId],
    );
    return row ? ratingNumbers(row) : undefined;
  }

  /**
   * Rated players best first, after the keyset [rating, user_id], with their ranks: the page read from ratings_board
   * from the keyset on, and the players before it counted once, each row's rank that count plus its place in the
   * page (the order is total, so ranks are consecutive). Counting the players above each row, and testing the
   * keyset as a filter from the top of the board, cost a page of n rows at depth d some n × d (docs/scaling.md).
   */
  async leaderboard(after: [number, string] | undefined, limit: number): Promise<RatingRow[]> {
    const [rating, userId] = after ?? ["Infinity", "00000000-0000-0000-0000-000000000000"];
    const rows = await this.db.execute<RatingRow[]>(
      `SELECT r.*, (SELECT count(*)::int FROM "${SCHEMA}".ratings b
                     WHERE b.games > 0 AND (b.rating > ?::float8 OR (b.rating = ?::float8 AND b.user_id <= ?::uuid)))
                   + (row_number() OVER (ORDER BY r.rating DESC, r.user_id))::int AS rank
         FROM (SELECT * FROM "${SCHEMA}".ratings
                WHERE games > 0 AND rating <= ?::float8 AND (rating < ?::float8 OR user_id > ?::uuid)
                ORDER BY rating DESC, user_id LIMIT ?) r
        ORDER BY r.rating DESC, r.user_id`,
      [rating, rating, userId, rating, rating, userId, limit],
    );
    return rows.map(ratingNumbers);
  }

  /** The entries ranked within `radius` of `rank`. */
  async leaderboardAround(rank: number, radius: number): Promise<RatingRow[]> {
    const rows = await this.db.execute<RatingRow[]>(
      `SELECT * FROM (SELECT r.*, (row_number() OVER (ORDER BY r.rating DESC, r.user_id))::int AS rank FROM "${SCHEMA}".ratings r WHERE r.games > 0) ranked
        WHERE rank BETWEEN ? AND ? ORDER BY rank`,
      [rank - radius, rank + radius],
    );
    return rows.map(ratingNumbers);
  }

  /**
   * A player's games newest first, after the keyset [created_at, id]: a page of those they played as X and a page of
   * those as O, each from its index in order (games_by_x, games_by_o), merged. As one query on `x_id = $1 OR o_id = $1`,
   * PostgreSQL read and sorted all of the player's games for every page (docs/scaling.md).
   */
  async list(userId: string, statuses: GameStatus[], after: [string, string] | undefined, limit: number): Promise<GameState[]> {
    const side = (column: string) => `(SELECT * FROM "${SCHEMA}".games WHERE ${column} = ? AND (cardinality(?::text[]) = 0 OR status = ANY(?::text[]))
          AND (created_at, id) < (?::timestamptz, ?::uuid) ORDER BY created_at DESC, id DESC LIMIT ?)`;
    const [createdAt, id] = after ?? ["infinity", "ffffffff-ffff-ffff-ffff-ffffffffffff"];
    const values = [userId, pgArray(statuses), pgArray(statuses), createdAt, id, limit];
    const rows = await this.db.execute<(GameRow & { moves: MoveRow[] })[]>(
      `SELECT ${WITH_MOVES} FROM (${side("x_id")} UNION ALL ${side("o_id")}) g ORDER BY g.created_at DESC, g.id DESC LIMIT ?`,
      [...values, ...values, limit],
    );
    return rows.map(withMoves);
  }

  /** Active games whose turn clock ran out by `now`. */
  async overdue(now: Date, limit = 100): Promise<string[]> {
    const rows = await this.db.execute<{ id: string }[]>(
      `SELECT id FROM "${SCHEMA}".games WHERE status = 'active' AND turn_deadline <= ? ORDER BY turn_deadline LIMIT ?`,
      [now, limit],
    );
    return rows.map((r) => r.id);
  }

  // ---- matchmaking pool ----

  /** Puts the player in the pool as ticket `id`, replacing a waiting ticket they had (that stream then ends). */
  async enqueue(user: { id: string; name: string }, turnSeconds: number, now: Date, id: string): Promise<TicketRow> {
    return retryTransaction(() =>
      sqlTransaction(this.em, async (tx) => {
        const replaced = await preparedQuery<{ id: string }>(
          tx,
          "game.replace-ticket",
          `UPDATE "${SCHEMA}".tickets SET status = 'cancelled' WHERE user_id = $1 AND status = 'searching' RETURNING id`,
          [user.id],
        );
        // The player's rating row (ensureRatings) and the ticket that carries it, in one statement.
        const [ticket] = await preparedQuery<TicketRow>(
          tx,
          "game.insert-ticket",
          `WITH rated AS (${ENSURE_RATINGS})
           INSERT INTO "${SCHEMA}".tickets (id, user_id, username, rating, deviation, turn_seconds, status, created_at)
           SELECT $7::uuid, user_id, username, rating, deviation, $8::int, 'searching', $3::timestamptz FROM rated RETURNING *`,
          [...ensureRatingsValues([user], now), id, turnSeconds],
        );
        await this.events.appendAndCommit(tx, replaced.length > 0 ? [{ tickets: replaced.map((r) => r.id) }] : []);
        return ticketNumbers(ticket!);
      }),
    );
  }

  /** A ticket as stored. */
  async ticket(id: string): Promise<TicketRow | undefined> {
    const [row] = await preparedQuery<TicketRow>(this.em, "game.ticket", `SELECT * FROM "${SCHEMA}".tickets WHERE id = $1`, [id]);
    return row ? ticketNumbers(row) : undefined;
  }

  /**
   * Marks waiting tickets seen (database time), in one statement: every instance does so for its open FindMatch
   * streams every tick, and a ticket nobody refreshes (its instance died) is dropped from the pool (matchRound).
   */
  async refreshTickets(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await preparedQuery(this.em, "game.refresh-tickets", `UPDATE "${SCHEMA}".tickets SET seen_at = now() WHERE id = ANY($1::uuid[]) AND status = 'searching'`, [ids]);
  }

  /** Withdraws the user's waiting tickets (one, or all); returns how many. */
  async cancelTickets(userId: string, ticketId?: string): Promise<number> {
    return sqlTransaction(this.em, async (tx) => {
      const rows = await preparedQuery<{ id: string }>(
        tx,
        "game.cancel-tickets",
        `UPDATE "${SCHEMA}".tickets SET status = 'cancelled' WHERE user_id = $1 AND status = 'searching' AND ($2::uuid IS NULL OR id = $2::uuid) RETURNING id`,
        [userId, ticketId ?? null],
      );
      await this.events.appendAndCommit(tx, rows.length > 0 ? [{ tickets: rows.map((r) => r.id) }] : []);
      return rows.length;
    });
  }

  /**
   * One round of matchmaking, by one instance at a time (a transaction-scoped
   * advisory lock; the others skip the round): locks the waiting tickets that
   * are still watched (SKIP LOCKED: a ticket being cancelled sits this round
   * out), lets `pair` choose the pairs, creates their games and marks both
   * tickets MATCHED, all in one transaction. Stale tickets leave the pool.
   */
  async matchRound(
    staleSeconds: number,
    pair: (tickets: TicketRow[]) => [TicketRow, TicketRow][],
    newGame: (a: TicketRow, b: TicketRow) => NewGame,
  ): Promise<number> {
    return sqlTransaction(this.em, async (tx) => {
      const [lock] = await preparedQuery<{ ok: boolean }>(tx, "game.matchmaker-lock", `SELECT pg_try_advisory_xact_lock(hashtext('agora.game.matchmaker')) AS ok`, []);
      if (!lock?.ok) return 0;
      const stale = await preparedQuery<{ id: string }>(
        tx,
        "game.drop-stale-tickets",
        `UPDATE "${SCHEMA}".tickets SET status = 'cancelled' WHERE status = 'searching' AND seen_at < now() - make_interval(secs => $1) RETURNING id`,
        [staleSeconds],
      );
      const waiting = (
        await preparedQuery<TicketRow>(tx, "game.waiting-tickets", `SELECT * FROM "${SCHEMA}".tickets WHERE status = 'searching' ORDER BY created_at, id FOR UPDATE SKIP LOCKED`, [])
      ).map(ticketNumbers);
      const pairs = pair(waiting);
      // Every pair's game in one statement, both tickets of every pair in another, all events in the last.
      const games = await this.insertGames(tx, pairs.map(([a, b]) => newGame(a, b)));
      const matched = pairs.flatMap(([a, b], i) => [{ ticket: a.id, game: games[i]!.game.id }, { ticket: b.id, game: games[i]!.game.id }]);
      if (matched.length > 0) {
        await preparedQuery(
          tx,
          "game.match-tickets",
          `UPDATE "${SCHEMA}".tickets t SET status = 'matched', game_id = m.game FROM unnest($1::uuid[], $2::uuid[]) AS m(ticket, game) WHERE t.id = m.ticket`,
          [matched.map((m) => m.ticket), matched.map((m) => m.game)],
        );
      }
      const changed = [...stale.map((s) => s.id), ...matched.map((m) => m.ticket)];
      await this.events.appendAndCommit(tx, [
        ...games.map(({ game }): GameEvent => ({ game: game.id, version: "1" })),
        ...(changed.length > 0 ? [{ tickets: changed }] : []),
      ]);
      return pairs.length;
    });
  }
}

/** A game's transaction, for `change` callbacks that need more than the game's row. */
export class GameTx {
  /** Set: the state as changed so far is saved even if the change then fails. */
  keep = false;
  ratings: RatingChange | undefined;
  readonly extraEvents: GameEvent[] = [];

  constructor(
    readonly tx: Queryable,
    private readonly repo: GameRepository,
  ) {}

  /** Current ratings of players (new players get the starting rating). */
  async ratingsOf(players: { id: string; name: string }[], now: Date): Promise<Map<string, RatingRow>> {
    await this.repo.ensureRatings(this.tx, players, now);
    const rows = await preparedQuery<RatingRow>(this.tx, "game.ratings", `SELECT * FROM "${SCHEMA}".ratings WHERE user_id = ANY($1::uuid[])`, [players.map((p) => p.id)]);
    return new Map(rows.map((r) => [r.user_id, ratingNumbers(r)]));
  }

  /** Creates another game in this transaction (a rematch). */
  async createGame(game: NewGame): Promise<GameState> {
    return this.repo.insertGame(this.tx, game);
  }
}

/** A PostgreSQL array literal (the query builder would expand a JS array into a list). */
const pgArray = (items: string[]) => `{${items.join(",")}}`;

function ratingNumbers(r: RatingRow): RatingRow {
  return { ...r, rating: Number(r.rating), deviation: Number(r.deviation), volatility: Number(r.volatility) };
}

function ticketNumbers(t: TicketRow): TicketRow {
  return { ...t, rating: Number(t.rating), deviation: Number(t.deviation) };
}
