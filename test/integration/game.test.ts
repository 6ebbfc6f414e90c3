import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, type Client, type ConnectError } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { expect } from "chai";
import {
  EndReason,
  GameResult,
  GameService,
  GameStatus,
  Mark,
  PlayRequestSchema,
  TicketStatus,
  UpdateKind,
  type FindMatchResponse,
  type Game,
  type PlayRequest,
  type PlayResponse,
  type WatchGameResponse,
} from "../../gen/agora/game/v1/game_pb.js";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import { client, connectionsClosed, eventually, freshDatabase, PROTOCOLS, rowsRead, rpcError, signUp, sql, startTestServer, tableReads, type TestServer } from "../support/harness.js";

type Games = Client<typeof GameService>;

const ENV = {
  SERVICES: "identity,game",
  GAME_SWEEP_INTERVAL_MS: "50",
  GAME_MATCH_INTERVAL_MS: "50",
  GAME_TICKET_TICK_MS: "100",
  HEARTBEAT_INTERVAL_MS: "200",
  ACCESS_TOKEN_TTL_SECONDS: "86400",
};

interface Player {
  name: string;
  id: string;
  token: string;
  games: Games;
}

async function player(server: TestServer, name: string, protocol: (typeof PROTOCOLS)[number] = "grpc"): Promise<Player> {
  const token = await signUp(server.url, name);
  const id = (await client(IdentityService, server.url, "grpc", token).getMe({})).user!.id;
  return { name, id, token, games: client(GameService, server.url, protocol, token) };
}

const reason = (err: ConnectError) => err.findDetails(ErrorInfoSchema)[0]?.reason;
const metadata = (err: ConnectError) => err.findDetails(ErrorInfoSchema)[0]?.metadata ?? {};

/** A started game between a (X) and b (O). */
async function started(a: Player, b: Player, turnSeconds = 30, casual = false): Promise<Game> {
  const { game } = await a.games.createGame({ opponentUserId: b.id, mark: Mark.X, turnSeconds, casual });
  return (await b.games.acceptChallenge({ gameId: game!.id })).game!;
}

/** Plays cells alternately from the game's next move on; returns the game after the last. */
async function playCells(game: Game, x: Player, o: Player, cells: number[]): Promise<Game> {
  let g = game;
  for (const cell of cells) {
    const mover = g.turn === Mark.X ? x : o;
    g = (await mover.games.makeMove({ gameId: g.id, cell, moveNumber: g.nextMoveNumber })).game!;
  }
  return g;
}

describe("game service", function () {
  this.timeout(120_000);
  const clock = new ManualClock(new Date("2030-01-01T00:00:00Z"));
  let server: TestServer;
  let second: TestServer;

  before(async () => {
    const url = await freshDatabase();
    server = await startTestServer(ENV, url, undefined, clock);
    second = await startTestServer(ENV, url, undefined, clock);
  });
  after(async () => {
    await second?.shutdown();
    await server?.shutdown();
  });

  it("plays a challenge to a win: moves, result, both ratings updated once, the move list kept", async () => {
    const [ann, bob, eve] = await Promise.all(["g_ann", "g_bob", "g_eve"].map((n) => player(server, n)));
    const { game: challenge } = await ann.games.createGame({ opponentUserId: bob.id, mark: Mark.X });
    expect(challenge!.status).to.equal(GameStatus.CHALLENGE);
    expect(challenge!.invitedUserId).to.equal(bob.id);
    expect((await rpcError(ann.games.acceptChallenge({ gameId: challenge!.id }))).code).to.equal(Code.PermissionDenied);
    const game = (await bob.games.acceptChallenge({ gameId: challenge!.id })).game!;
    expect(game.status).to.equal(GameStatus.ACTIVE);
    expect(game.o!.username).to.equal("g_bob");
    expect(game.turn).to.equal(Mark.X);
    expect(game.turnDeadline).to.not.equal(undefined);

    const end = await playCells(game, ann, bob, [0, 3, 1, 4, 2]);
    expect(end.status).to.equal(GameStatus.FINISHED);
    expect(end.result).to.equal(GameResult.X_WON);
    expect(end.endReason).to.equal(EndReason.LINE);
    expect(end.board).to.equal("XXXOO....");
    expect(end.moves.map((m) => m.cell)).to.deep.equal([0, 3, 1, 4, 2]);
    expect(end.x!.ratingChange).to.be.greaterThan(0);
    expect(end.o!.ratingChange).to.be.lessThan(0);

    // Anyone signed in reads it, on every protocol.
    for (const protocol of PROTOCOLS) {
      const read = (await client(GameService, server.url, protocol, eve.token).getGame({ gameId: end.id })).game!;
      expect(read.moves).to.have.length(5);
    }
    const annStats = (await ann.games.getPlayerStats({})).stats!;
    expect([annStats.wins, annStats.losses, annStats.games, annStats.streak]).to.deep.equal([1, 0, 1, 1]);
    expect(annStats.rating).to.be.closeTo(1500 + end.x!.ratingChange, 1e-6);
    expect(annStats.provisional).to.equal(true);
    const bobStats = (await eve.games.getPlayerStats({ userId: bob.id })).stats!;
    expect([bobStats.wins, bobStats.losses, bobStats.streak]).to.deep.equal([0, 1, -1]);
    // eve never played: her own stats are the starting ones; an unknown id is NOT_FOUND.
    const eveStats = (await eve.games.getPlayerStats({})).stats!;
    expect([eveStats.rating, eveStats.deviation, eveStats.games, eveStats.rank]).to.deep.equal([1500, 350, 0, 0]);
    expect((await rpcError(eve.games.getPlayerStats({ userId: "00000000-0000-4000-8000-000000000000" }))).code).to.equal(Code.NotFound);

    const list = await ann.games.listGames({});
    expect(list.games.map((g) => g.id)).to.include(end.id);
  });

  it("refuses bad moves with clear codes and details, and changes nothing", async () => {
    const [x, o, eve] = await Promise.all(["b_x", "b_o", "b_eve"].map((n) => player(server, n)));
    expect((await rpcError(x.games.createGame({ opponentUserId: x.id }))).code).to.equal(Code.InvalidArgument);
    const game = await playCells(await started(x, o), x, o, [4]);
    const version = game.version;

    const offBoard = await rpcError(o.games.makeMove({ gameId: game.id, cell: 9, moveNumber: 2 }));
    expect(offBoard.code).to.equal(Code.InvalidArgument);
    expect(offBoard.findDetails(BadRequestSchema)[0]!.fieldViolations.map((v) => v.field)).to.include("cell");

    const outOfTurn = await rpcError(x.games.makeMove({ gameId: game.id, cell: 0, moveNumber: 2 }));
    expect([outOfTurn.code, reason(outOfTurn)]).to.deep.equal([Code.FailedPrecondition, "NOT_YOUR_TURN"]);

    const taken = await rpcError(o.games.makeMove({ gameId: game.id, cell: 4, moveNumber: 2 }));
    expect([taken.code, reason(taken)]).to.deep.equal([Code.FailedPrecondition, "CELL_TAKEN"]);

    const stale = await rpcError(o.games.makeMove({ gameId: game.id, cell: 0, moveNumber: 3 }));
    expect([stale.code, reason(stale), metadata(stale).expected_move_number]).to.deep.equal([Code.Aborted, "STALE_MOVE", "2"]);

    const stranger = await rpcError(eve.games.makeMove({ gameId: game.id, cell: 0, moveNumber: 2 }));
    expect([stranger.code, reason(stranger)]).to.deep.equal([Code.PermissionDenied, "NOT_A_PLAYER"]);
    expect((await rpcError(eve.games.resign({ gameId: game.id }))).code).to.equal(Code.PermissionDenied);
    expect((await rpcError(eve.games.offerDraw({ gameId: game.id }))).code).to.equal(Code.PermissionDenied);

    const missing = await rpcError(x.games.makeMove({ gameId: "00000000-0000-4000-8000-000000000000", cell: 0, moveNumber: 1 }));
    expect(missing.code).to.equal(Code.NotFound);
    expect((await rpcError(x.games.getGame({ gameId: "not-a-uuid" }))).code).to.equal(Code.InvalidArgument);
    expect((await rpcError(o.games.acceptDraw({ gameId: game.id }))).code).to.equal(Code.FailedPrecondition);

    // A resend of the move already played is harmless: the same game, unchanged.
    const resent = (await x.games.makeMove({ gameId: game.id, cell: 4, moveNumber: 1 })).game!;
    expect(resent.version).to.equal(version);
    expect((await x.games.getGame({ gameId: game.id })).game!.version).to.equal(version);
    expect((await x.games.getGame({ gameId: game.id })).game!.board).to.equal("....X....");
  });

  it("two moves at the same moment produce exactly one result", async () => {
    const [x, o] = await Promise.all(["r_x", "r_o"].map((n) => player(server, n)));
    const game = await started(x, o);
    const other = client(GameService, second.url, "grpc", x.token);
    const attempts = await Promise.allSettled(
      [0, 1, 2, 3, 5, 6, 7, 8].map((cell, i) => (i % 2 ? other : x.games).makeMove({ gameId: game.id, cell, moveNumber: 1 })),
    );
    const ok = attempts.filter((a) => a.status === "fulfilled");
    const refused = attempts.filter((a): a is PromiseRejectedResult => a.status === "rejected").map((a) => (a.reason as ConnectError).code);
    console.log(`      racing first moves: ${ok.length} accepted, ${refused.length} refused (${[...new Set(refused)].map((c) => Code[c]).join(", ")})`);
    expect(ok).to.have.length(1);
    expect(new Set(refused)).to.deep.equal(new Set([Code.Aborted]));
    const [row] = await sql<{ n: number }>(server.databaseUrl, `SELECT count(*)::int AS n FROM "game".moves WHERE game_id = $1`, [game.id]);
    expect(row!.n).to.equal(1);
  });

  it("a player whose clock runs out loses; before both moved the game is aborted without rating change", async () => {
    const [x, o] = await Promise.all(["c_x", "c_o"].map((n) => player(server, n)));
    const early = await playCells(await started(x, o, 10), x, o, [0]);
    clock.advance(11_000);
    await eventually(async () => (await x.games.getGame({ gameId: early.id })).game!.status === GameStatus.ABORTED, "the abort");
    const aborted = (await x.games.getGame({ gameId: early.id })).game!;
    expect(aborted.endReason).to.equal(EndReason.ABORTED);
    expect((await x.games.getPlayerStats({})).stats!.games).to.equal(0);

    const game = await playCells(await started(x, o, 10), x, o, [0, 4]);
    clock.advance(10_000);
    await eventually(async () => (await x.games.getGame({ gameId: game.id })).game!.status === GameStatus.FINISHED, "the timeout");
    const lost = (await o.games.getGame({ gameId: game.id })).game!;
    expect([lost.result, lost.endReason]).to.deep.equal([GameResult.O_WON, EndReason.TIMEOUT]);
    expect((await x.games.getPlayerStats({})).stats!.losses).to.equal(1);
    // A move after the clock ran out is refused.
    const late = await rpcError(x.games.makeMove({ gameId: game.id, cell: 8, moveNumber: 3 }));
    expect([late.code, reason(late)]).to.deep.equal([Code.FailedPrecondition, "GAME_NOT_ACTIVE"]);
  });

  it("a timeout racing the last move gives one result and one rating update", async () => {
    const [x, o] = await Promise.all(["t_x", "t_o"].map((n) => player(server, n)));
    const rounds = 5;
    for (let i = 0; i < rounds; i++) {
      // X wins with cell 2 unless the clock, which ran out at the same moment, is seen first.
      const game = await playCells(await started(x, o, 5), x, o, [0, 3, 1, 4]);
      clock.advance(5_000);
      await Promise.allSettled([
        x.games.makeMove({ gameId: game.id, cell: 2, moveNumber: 5 }),
        client(GameService, second.url, "grpc", x.token).makeMove({ gameId: game.id, cell: 2, moveNumber: 5 }),
      ]);
      await eventually(async () => (await x.games.getGame({ gameId: game.id })).game!.status === GameStatus.FINISHED, "the result");
    }
    const rows = await sql<{ games: number; wins: number; losses: number }>(
      server.databaseUrl,
      `SELECT games, wins, losses FROM "game".ratings WHERE user_id = ANY($1::uuid[]) ORDER BY user_id`,
      [[x.id, o.id]],
    );
    console.log(`      timeout vs last move, ${rounds} rounds: ${JSON.stringify(rows)}`);
    expect(rows.map((r) => r.games)).to.deep.equal([rounds, rounds]);
    const [finished] = await sql<{ n: number }>(server.databaseUrl, `SELECT count(*)::int AS n FROM "game".games WHERE (x_id = $1 OR o_id = $1) AND status = 'finished'`, [x.id]);
    expect(finished!.n).to.equal(rounds);
  });

  it("resign, draw by agreement, a drawn board, rematch with marks swapped", async () => {
    const [x, o] = await Promise.all(["d_x", "d_o"].map((n) => player(server, n)));
    const early = await started(x, o);
    expect((await x.games.resign({ gameId: early.id })).game!.status).to.equal(GameStatus.ABORTED);

    const game = await playCells(await started(x, o), x, o, [0, 4]);
    const resigned = (await o.games.resign({ gameId: game.id })).game!;
    expect([resigned.result, resigned.endReason]).to.deep.equal([GameResult.X_WON, EndReason.RESIGNATION]);
    expect((await rpcError(o.games.resign({ gameId: game.id }))).code).to.equal(Code.FailedPrecondition);

    const offered = (await x.games.offerDraw({ gameId: (await playCells(await started(x, o), x, o, [0, 4])).id })).game!;
    expect(offered.drawOfferedBy).to.equal(x.id);
    expect((await rpcError(x.games.acceptDraw({ gameId: offered.id }))).code).to.equal(Code.FailedPrecondition);
    const drawn = (await o.games.acceptDraw({ gameId: offered.id })).game!;
    expect([drawn.result, drawn.endReason]).to.deep.equal([GameResult.DRAW, EndReason.AGREEMENT]);

    const full = await playCells(await started(x, o), x, o, [0, 1, 2, 4, 3, 5, 7, 6, 8]);
    expect([full.result, full.endReason]).to.deep.equal([GameResult.DRAW, EndReason.BOARD_FULL]);

    expect((await rpcError(o.games.acceptRematch({ gameId: full.id }))).code).to.equal(Code.FailedPrecondition);
    await o.games.offerRematch({ gameId: full.id });
    const { game: original, rematch } = await x.games.acceptRematch({ gameId: full.id });
    expect(original!.rematchGameId).to.equal(rematch!.id);
    expect([rematch!.x!.userId, rematch!.o!.userId, rematch!.status]).to.deep.equal([o.id, x.id, GameStatus.ACTIVE]);
    // Accepting again returns the same rematch.
    expect((await x.games.acceptRematch({ gameId: full.id })).rematch!.id).to.equal(rematch!.id);

    const declined = await x.games.createGame({ opponentUserId: o.id });
    expect((await o.games.declineChallenge({ gameId: declined.game!.id })).game!.endReason).to.equal(EndReason.DECLINED);
    const withdrawn = await x.games.createGame({ opponentUserId: o.id, requestId: "w-1" });
    expect((await x.games.createGame({ opponentUserId: o.id, requestId: "w-1" })).game!.id).to.equal(withdrawn.game!.id);
    expect((await x.games.declineChallenge({ gameId: withdrawn.game!.id })).game!.endReason).to.equal(EndReason.WITHDRAWN);
    expect((await rpcError(o.games.acceptChallenge({ gameId: withdrawn.game!.id }))).code).to.equal(Code.FailedPrecondition);
  });

  it("WatchGame resumes by move number and follows moves made on another instance", async () => {
    const [x, o, fan] = await Promise.all(["w_x", "w_o", "w_fan"].map((n) => player(server, n)));
    const game = await playCells(await started(x, o), x, o, [0, 4, 8]);
    const abort = new AbortController();
    const seen: WatchGameResponse[] = [];
    const watching = (async () => {
      for await (const m of fan.games.watchGame({ gameId: game.id, afterMoveNumber: 1 }, { signal: abort.signal })) seen.push(m);
    })().catch(() => undefined);
    await eventually(() => seen.length > 0, "the snapshot");
    const first = seen[0]!.kind;
    expect(first.case).to.equal("update");
    if (first.case === "update") {
      expect(first.value.kind).to.equal(UpdateKind.SNAPSHOT);
      expect(first.value.newMoves.map((m) => m.number)).to.deep.equal([2, 3]);
    }
    await client(GameService, second.url, "connect", o.token).makeMove({ gameId: game.id, cell: 2, moveNumber: 4 });
    await eventually(() => seen.some((m) => m.kind.case === "update" && m.kind.value.kind === UpdateKind.CHANGE), "the move");
    const change = seen.find((m) => m.kind.case === "update" && m.kind.value.kind === UpdateKind.CHANGE)!.kind;
    if (change.case === "update") expect(change.value.newMoves.map((m) => [m.number, m.cell])).to.deep.equal([[4, 2]]);
    abort.abort();
    await watching;
    const ahead = (async () => {
      for await (const _ of fan.games.watchGame({ gameId: game.id, afterMoveNumber: 9 })) break;
    })();
    expect((await rpcError(ahead)).code).to.equal(Code.OutOfRange);
  });

  it("Play: one stream carries moves in and the game out; refused moves are error events", async () => {
    const [x, o] = await Promise.all(["p_x", "p_o"].map((n) => player(server, n)));
    const game = await started(x, o);
    const inbox: PlayRequest[] = [];
    let wake: (() => void) | undefined;
    let closed = false;
    const send = (r: MessageInitShape<typeof PlayRequestSchema>) => {
      inbox.push(create(PlayRequestSchema, r));
      wake?.();
    };
    async function* requests() {
      for (;;) {
        const next = inbox.shift();
        if (next) yield next;
        else if (closed) return;
        else await new Promise<void>((r) => (wake = r));
      }
    }
    const got: PlayResponse[] = [];
    const reading = (async () => {
      for await (const m of x.games.play(requests())) got.push(m);
    })();
    send({ ref: "j", action: { case: "join", value: { gameId: game.id } } });
    await eventually(() => got.some((m) => m.kind.case === "update"), "the snapshot");
    send({ ref: "m1", action: { case: "move", value: { cell: 4, moveNumber: 1 } } });
    send({ ref: "bad", action: { case: "move", value: { cell: 0, moveNumber: 2 } } });
    await eventually(() => got.some((m) => m.kind.case === "error"), "the refusal");
    const error = got.find((m) => m.kind.case === "error")!.kind;
    if (error.case === "error") expect([error.value.ref, error.value.reason]).to.deep.equal(["bad", "NOT_YOUR_TURN"]);
    // The opponent's move (over unary, another instance) comes down the stream.
    await client(GameService, second.url, "grpc", o.token).makeMove({ gameId: game.id, cell: 0, moveNumber: 2 });
    await eventually(() => got.some((m) => m.kind.case === "update" && m.kind.value.game!.moves.length === 2), "the opponent's move");
    closed = true;
    wake?.();
    await reading;
  });

  it("FindMatch pairs players queued on different instances exactly once", async () => {
    const players = await Promise.all(["m_a", "m_b", "m_c", "m_d"].map((n) => player(server, n)));
    const abort = new AbortController();
    const results = players.map((p, i) => {
      const c = client(GameService, i % 2 ? second.url : server.url, "grpc", p.token);
      return (async () => {
        const updates: FindMatchResponse[] = [];
        for await (const m of c.findMatch({}, { signal: abort.signal })) updates.push(m);
        return updates;
      })();
    });
    const all = await Promise.all(results);
    const games = all.map((u) => u.at(-1)!);
    for (const g of games) expect(g.ticket!.status).to.equal(TicketStatus.MATCHED);
    const ids = games.map((g) => g.ticket!.gameId);
    expect(new Set(ids).size).to.equal(2);
    for (const [i, p] of players.entries()) {
      const g = games[i]!.game!;
      expect([g.x!.userId, g.o!.userId]).to.include(p.id);
      expect(g.rated).to.equal(true);
    }
    const [row] = await sql<{ n: number }>(server.databaseUrl, `SELECT count(*)::int AS n FROM "game".games WHERE x_id = ANY($1::uuid[])`, [players.map((p) => p.id)]);
    expect(row!.n).to.equal(2);
  });

  it("CancelMatch and the stream's end take the ticket out of the pool", async () => {
    const lone = await player(server, "q_lone");
    const abort = new AbortController();
    const updates: FindMatchResponse[] = [];
    const stream = (async () => {
      for await (const m of lone.games.findMatch({ turnSeconds: 777 }, { signal: abort.signal })) updates.push(m);
    })();
    await eventually(() => updates.length > 0, "the ticket");
    expect(updates[0]!.ticket!.status).to.equal(TicketStatus.SEARCHING);
    expect(updates[0]!.ticket!.ratingWindow).to.equal(200); // provisional: twice the base window
    // While it waits, its instance marks the ticket seen every tick (a ticket nobody refreshes leaves the pool),
    // and the stream sends it every tick.
    const seen = async () => (await sql<{ seen: string }>(server.databaseUrl, `SELECT seen_at::text AS seen FROM "game".tickets WHERE id = $1`, [updates[0]!.ticket!.id]))[0]!.seen;
    const first = await seen();
    await eventually(async () => (await seen()) !== first, "the ticket refreshed");
    await eventually(() => updates.length >= 3, "a quiet tick's update");
    expect(updates.map((u) => u.ticket!.status), "waiting").to.deep.equal(updates.map(() => TicketStatus.SEARCHING));
    expect((await lone.games.cancelMatch({})).cancelled).to.equal(1);
    await stream;
    expect(updates.at(-1)!.ticket!.status).to.equal(TicketStatus.CANCELLED);
    expect((await lone.games.cancelMatch({})).cancelled).to.equal(0);
  });

  it("the leaderboard orders by rating, pages, and shows the caller among neighbours", async () => {
    const url = await freshDatabase();
    const solo = await startTestServer(ENV, url, undefined, clock);
    try {
      const ps = await Promise.all(["l_a", "l_b", "l_c", "l_d"].map((n) => player(solo, n)));
      const [a, b, c, d] = ps as [Player, Player, Player, Player];
      await playCells(await started(a, b), a, b, [0, 3, 1, 4, 2]); // a beats b
      await playCells(await started(c, d), c, d, [0, 1, 2, 4, 3, 5, 7, 6, 8]); // draw
      const top = await a.games.getLeaderboard({ pageSize: 2 });
      expect(top.entries.map((e) => [e.username, e.rank])).to.deep.equal([["l_a", 1], [top.entries[1]!.username, 2]]);
      const rest = await a.games.getLeaderboard({ pageSize: 2, pageToken: top.nextPageToken });
      const order = [...top.entries, ...rest.entries];
      expect(order.map((e) => e.rank)).to.deep.equal([1, 2, 3, 4]);
      for (let i = 1; i < order.length; i++) {
        const [p, q] = [order[i - 1]!, order[i]!];
        expect(p.rating > q.rating || (p.rating === q.rating && p.userId < q.userId), "rating desc, then user id").to.equal(true);
      }
      expect(order.at(-1)!.username).to.equal("l_b");
      const around = await b.games.getLeaderboard({ aroundCaller: true, pageSize: 1 });
      expect(around.caller!.rank).to.equal(4);
      expect(around.entries.map((e) => e.rank)).to.deep.equal([3, 4]);
      expect((await rpcError(a.games.getLeaderboard({ pageToken: "garbage" }))).code).to.equal(Code.InvalidArgument);
    } finally {
      await solo.shutdown();
    }
  });

  it("pages a player's 4,000 games without reading all of them for each page", async () => {
    const GAMES = 4_000;
    const PAGE = 20;
    const url = await freshDatabase();
    const reads = () => rowsRead(url, "game", "games");
    let solo = await startTestServer(ENV, url, undefined, clock);
    try {
      const me = await player(solo, "busy_player");
      // Finished games, one a minute, X and O in turns, against a different opponent each time.
      await sql(
        url,
        `INSERT INTO "game".games (id, status, result, x_id, x_name, o_id, o_name, turn_seconds, rated, created_at, updated_at)
         SELECT gen_random_uuid(), 'finished', 'draw', CASE WHEN i % 2 = 0 THEN $1::uuid ELSE o END, 'a',
                CASE WHEN i % 2 = 0 THEN o ELSE $1::uuid END, 'b', 30, false, t, t
           FROM generate_series(1, $2::int) i, LATERAL (SELECT gen_random_uuid() AS o, timestamptz '2030-01-01' + i * interval '1 minute' AS t) s`,
        [me.id, GAMES],
      );
      await sql(url, `ANALYZE "game".games`);
      await eventually(async () => (await tableReads(url, "game", "games")).inserted === GAMES, "the games' statistics");
      const before = await reads();
      const seen: string[] = [];
      let pageToken = "";
      for (let page = 0; page < 3; page++) {
        const listed = await me.games.listGames({ pageSize: PAGE, pageToken });
        seen.push(...listed.games.map((g) => timestampDate(g.createTime!).toISOString()));
        pageToken = listed.nextPageToken;
      }
      // Newest first, alternating sides, each once.
      const expected = Array.from({ length: 3 * PAGE }, (_, i) => new Date(Date.parse("2030-01-01T00:00:00Z") + (GAMES - i) * 60_000).toISOString());
      expect(seen).to.deep.equal(expected);
      await solo.shutdown();
      await connectionsClosed(url);
      // Each page reads a page's worth from either side's index (and the tie-breaking row), not the player's 4,000 games.
      expect(await reads() - before, "games read for three pages").to.be.below(3 * 3 * (PAGE + 1));
    } finally {
      await solo.shutdown();
    }
  });

  it("pages a leaderboard of 5,000 players without ranking every player for each row, and finds the caller among them", async () => {
    // Counters are read once the server has shut down (every connection reports its own as it closes).
    const PLAYERS = 5_000;
    const PAGE = 100;
    const url = await freshDatabase();
    const reads = () => rowsRead(url, "game", "ratings");
    let solo = await startTestServer(ENV, url, undefined, clock);
    const me = await player(solo, "deep_caller");
    // Ratings 1000 to 1498 in steps of 0.5, about five players each (ties ordered by user id); the caller at 1450.25.
    await sql(
      url,
      `INSERT INTO "game".ratings (user_id, username, rating, deviation, volatility, games, wins, updated_at)
       SELECT gen_random_uuid(), 'p' || i, 1000 + (i % 997) * 0.5, 60, 0.06, 1, 1, now() FROM generate_series(1, $1::int) i
       UNION ALL SELECT $2::uuid, 'deep_caller', 1450.25, 60, 0.06, 1, 1, now()`,
      [PLAYERS, me.id],
    );
    await sql(url, `ANALYZE "game".ratings`);
    await eventually(async () => (await tableReads(url, "game", "ratings")).inserted === PLAYERS + 1, "the ratings' statistics");
    try {
      const before = await reads();
      const entries = [];
      let pageToken = "";
      let pages = 0;
      do {
        const page = await me.games.getLeaderboard({ pageSize: PAGE, pageToken });
        entries.push(...page.entries);
        pageToken = page.nextPageToken;
        pages++;
      } while (pageToken && pages < 100);
      expect(entries.map((e) => e.rank)).to.deep.equal(Array.from({ length: PLAYERS + 1 }, (_, i) => i + 1));
      for (let i = 1; i < entries.length; i++) {
        const [p, q] = [entries[i - 1]!, entries[i]!];
        expect(p.rating > q.rating || (p.rating === q.rating && p.userId < q.userId), `rating desc, then user id, at ${i}`).to.equal(true);
      }
      await solo.shutdown();
      await connectionsClosed(url);
      // Each page counts the players before it once (through ratings_board or, on a table this small, by reading it):
      // at most the board once per page. Counting them for each row read a hundred times that.
      expect(await reads() - before, "ratings read to page the board").to.be.below(2 * (PLAYERS + 1) * pages);
      const around = await client(GameService, (solo = await startTestServer(ENV, url, undefined, clock)).url, "grpc", me.token).getLeaderboard({ aroundCaller: true, pageSize: 5 });
      const rank = entries.find((e) => e.userId === me.id)!.rank;
      expect(around.caller!.rank).to.equal(rank);
      expect(around.entries.map((e) => e.rank)).to.deep.equal(Array.from({ length: 11 }, (_, i) => rank - 5 + i));
    } finally {
      await solo.shutdown();
    }
  });
});
