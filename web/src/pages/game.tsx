import { timestampMs } from "@bufbuild/protobuf/wkt";
import { useEffect, useRef, useState } from "preact/hooks";
import { client, keepStreaming, session } from "../api";
import { navigate, route, useSignal, withAbort } from "../state";
import { ErrorText, Field, useAction } from "../ui";
import {
  EndReason,
  GameResult,
  GameService,
  GameStatus,
  Mark,
  TicketStatus,
  type Game as GameState,
  type Player,
  type PlayerStats,
  type Ticket,
} from "../../../gen/agora/game/v1/game_pb.js";

const game = client(GameService);

const ENDINGS: Record<number, string> = {
  [EndReason.LINE]: "three in a row",
  [EndReason.BOARD_FULL]: "the board is full",
  [EndReason.RESIGNATION]: "by resignation",
  [EndReason.TIMEOUT]: "on time",
  [EndReason.AGREEMENT]: "by agreement",
  [EndReason.ABORTED]: "aborted before both players moved: no result, no rating change",
  [EndReason.DECLINED]: "the challenge was declined",
  [EndReason.WITHDRAWN]: "the challenge was withdrawn",
};

const signed = (n: number) => `${n >= 0 ? "+" : "−"}${Math.abs(n).toFixed(1)}`;

/** The game page: the lobby (queue, challenges, recent games) at /game, a game at /game/<id>; the leaderboard beside. */
export function Game() {
  const path = useSignal(route);
  const gameId = path.startsWith("/game/") ? path.slice("/game/".length) : "";
  // Bumped when a game ends: the leaderboard and the stats reload.
  const [results, setResults] = useState(0);
  return (
    <section aria-labelledby="game-title">
      <div class="page-head">
        <h1 id="game-title">Game</h1>
        {gameId && (
          <button type="button" class="push" onClick={() => navigate("/game")}>
            ← Lobby
          </button>
        )}
      </div>
      <div class="two wide-right">
        <div>{gameId ? <Board key={gameId} id={gameId} onEnded={() => setResults((n) => n + 1)} /> : <Lobby />}</div>
        <aside>
          <Leaderboard reloads={results} />
        </aside>
      </div>
    </section>
  );
}

function Lobby() {
  const me = useSignal(session)!.user;
  const [ticket, setTicket] = useState<Ticket | null>(null);
  const [challenges, setChallenges] = useState<GameState[]>([]);
  const [recent, setRecent] = useState<GameState[]>([]);
  const [opponents, setOpponents] = useState<{ id: string; name: string }[]>([]);
  const [opponent, setOpponent] = useState("");
  const [casual, setCasual] = useState(false);
  const queue = useRef<AbortController | null>(null);
  const { busy, error, run } = useAction();

  // Challenges to and from the caller (no stream announces them: looked up every few seconds), recent games,
  // and the people to challenge (from the leaderboard and past games).
  useEffect(
    () =>
      withAbort((signal) => {
        const challenges = async () => setChallenges((await game.listGames({ statuses: [GameStatus.CHALLENGE], pageSize: 20 }, { signal })).games);
        void run(async () => {
          const [mine, board] = await Promise.all([game.listGames({ pageSize: 10 }, { signal }), game.getLeaderboard({ pageSize: 50 }, { signal }), challenges()]);
          setRecent(mine.games.filter((g) => g.status !== GameStatus.CHALLENGE));
          const people = new Map<string, string>();
          for (const e of board.entries) people.set(e.userId, e.username);
          for (const g of mine.games) for (const p of [g.x, g.o]) if (p?.userId && p.username) people.set(p.userId, p.username);
          people.delete(me.id);
          setOpponents([...people].map(([id, name]) => ({ id, name })));
        });
        const timer = setInterval(() => void challenges().catch(() => undefined), 3000);
        signal.addEventListener("abort", () => clearInterval(timer));
      }),
    [],
  );
  useEffect(() => () => queue.current?.abort(), []);

  const findMatch = () =>
    void run(async () => {
      const c = (queue.current = new AbortController());
      try {
        for await (const res of game.findMatch({}, { signal: c.signal })) {
          setTicket(res.ticket ?? null);
          if (res.ticket?.status === TicketStatus.MATCHED) return navigate(`/game/${res.ticket.gameId}`);
          if (res.ticket?.status === TicketStatus.CANCELLED) break;
        }
      } catch (err) {
        if (!c.signal.aborted) throw err;
      } finally {
        setTicket(null);
      }
    });

  const cancel = () => {
    queue.current?.abort();
    void run(() => game.cancelMatch({ ticketId: ticket?.id ?? "" }));
  };

  const challenge = () =>
    void run(async () => {
      const res = await game.createGame({ opponentUserId: opponent, casual, requestId: crypto.randomUUID() });
      navigate(`/game/${res.game!.id}`);
    });

  const accept = (g: GameState) =>
    void run(async () => {
      await game.acceptChallenge({ gameId: g.id });
      navigate(`/game/${g.id}`);
    });

  const decline = (g: GameState) =>
    void run(async () => {
      await game.declineChallenge({ gameId: g.id });
      setChallenges((all) => all.filter((c) => c.id !== g.id));
    });

  return (
    <>
      <ErrorText error={error} />
      <h2>Play</h2>
      {ticket ? (
        <p aria-live="polite">
          Searching for an opponent… {ticket.waitedSeconds} s waited, ratings within ±{Math.round(ticket.ratingWindow)} of your {Math.round(ticket.rating)}.{" "}
          <button type="button" onClick={cancel}>
            Cancel search
          </button>
        </p>
      ) : (
        <div class="buttons">
          <button type="button" class="primary" disabled={busy} onClick={findMatch}>
            Find a rated match
          </button>
        </div>
      )}
      <form
        class="toolbar admin-block"
        onSubmit={(e) => {
          e.preventDefault();
          challenge();
        }}
      >
        <Field label="Challenge a player">
          <select value={opponent} required onChange={(e) => setOpponent(e.currentTarget.value)}>
            <option value="">{opponents.length ? "Choose a player" : "No players known yet"}</option>
            {opponents.map((p) => (
              <option key={p.id} value={p.id}>
                {p.name}
              </option>
            ))}
          </select>
        </Field>
        <label class="check">
          <input type="checkbox" checked={casual} onChange={(e) => setCasual(e.currentTarget.checked)} /> Casual (unrated)
        </label>
        <button type="submit" disabled={busy || !opponent}>
          Challenge
        </button>
      </form>
      <h2>Challenges</h2>
      {challenges.length === 0 ? (
        <p class="muted">No open challenges.</p>
      ) : (
        <ul class="plain" aria-label="Challenges">
          {challenges.map((g) => {
            const challenger = g.x?.userId === g.invitedUserId ? g.o : g.x;
            const mine = g.invitedUserId === me.id;
            return (
              <li key={g.id}>
                <span>
                  {mine ? `${challenger?.username} challenges you` : "You challenged a player"}
                  {g.rated ? "" : " (casual)"}
                </span>
                <span class="buttons">
                  {mine && (
                    <button type="button" class="primary" disabled={busy} aria-label={`Accept the challenge of ${challenger?.username}`} onClick={() => accept(g)}>
                      Accept
                    </button>
                  )}
                  <button
                    type="button"
                    disabled={busy}
                    aria-label={mine ? `Decline the challenge of ${challenger?.username}` : "Withdraw the challenge"}
                    onClick={() => decline(g)}
                  >
                    {mine ? "Decline" : "Withdraw"}
                  </button>
                </span>
              </li>
            );
          })}
        </ul>
      )}
      <h2>Your recent games</h2>
      {recent.length === 0 ? (
        <p class="muted">No games yet.</p>
      ) : (
        <ul class="plain" aria-label="Your recent games">
          {recent.map((g) => (
            <li key={g.id}>
              <span>
                {g.x?.username} (X) vs {g.o?.username} (O): {outcome(g, me.id)}
              </span>
              <button type="button" class="link" onClick={() => navigate(`/game/${g.id}`)}>
                Open
              </button>
            </li>
          ))}
        </ul>
      )}
    </>
  );
}

/** The outcome of a game in words, from the viewer's side. */
function outcome(g: GameState, me: string): string {
  const ending = ENDINGS[g.endReason] ?? "";
  if (g.status === GameStatus.ACTIVE) return "in progress";
  if (g.status === GameStatus.CHALLENGE) return "waiting for the invited player to accept";
  if (g.status !== GameStatus.FINISHED) return ending;
  if (g.result === GameResult.DRAW) return `draw (${ending})`;
  const winner = g.result === GameResult.X_WON ? g.x : g.o;
  return `${winner?.userId === me ? "you won" : `${winner?.username} won`} (${ending})`;
}

function Board(props: { id: string; onEnded: () => void }) {
  const me = useSignal(session)!.user;
  const [state, setState] = useState<GameState | null>(null);
  const [live, setLive] = useState(false);
  const [deadline, setDeadline] = useState(0);
  const [, tick] = useState(0);
  const { busy, error, run } = useAction();
  const current = useRef<GameState | null>(null);

  /** Keeps the newest state (updates from the stream and from replies may arrive in either order). */
  const take = (g: GameState | undefined) => {
    if (!g || (current.current && current.current.id === g.id && g.version < current.current.version)) return;
    const before = current.current;
    current.current = g;
    setState(g);
    setDeadline(g.status === GameStatus.ACTIVE && g.turnDeadline ? timestampMs(g.turnDeadline) : 0);
    if (before && before.status === GameStatus.ACTIVE && g.status !== GameStatus.ACTIVE) props.onEnded();
    // A rematch accepted while watching: both players move on to it (an old game opened later stays).
    if (before && !before.rematchGameId && g.rematchGameId) navigate(`/game/${g.rematchGameId}`);
  };

  // The game live, resumed after a dropped connection from the last move seen.
  useEffect(
    () =>
      withAbort((signal) => {
        void keepStreaming(
          signal,
          async (s) => {
            const after = current.current?.moves.length ?? 0;
            for await (const res of game.watchGame({ gameId: props.id, afterMoveNumber: after }, { signal: s })) {
              if (res.kind.case === "update") take(res.kind.value.game);
              else if (res.kind.case === "heartbeat" && current.current?.status === GameStatus.ACTIVE) setDeadline(Date.now() + res.kind.value.turnSecondsLeft * 1000);
            }
          },
          setLive,
        );
        const timer = setInterval(() => tick((n) => n + 1), 250);
        signal.addEventListener("abort", () => clearInterval(timer));
      }),
    [props.id],
  );

  if (!state)
    return (
      <>
        <ErrorText error={error} />
        <p aria-busy="true">Loading the game…</p>
      </>
    );
  const mine = state.x?.userId === me.id ? state.x : state.o?.userId === me.id ? state.o : undefined;
  const them = mine === state.x ? state.o : state.x;
  const active = state.status === GameStatus.ACTIVE;
  const toMove = state.turn === Mark.X ? state.x : state.o;
  const myTurn = active && !!mine && state.turn === mine.mark;
  const secondsLeft = deadline ? Math.max(0, Math.ceil((deadline - Date.now()) / 1000)) : 0;
  const name = (p: Player | undefined) => (p?.userId === me.id ? "you" : p?.username || "the invited player");
  const act = (fn: () => Promise<{ game?: GameState }>) => () => void run(async () => take((await fn()).game));

  return (
    <div>
      <p>
        <strong>{state.x?.username || "?"}</strong> (X) vs <strong>{state.o?.username || "the invited player"}</strong> (O)
        {state.rated ? "" : " · casual"} · <span class={`live ${live ? "on" : ""}`}>{live ? "● Live" : "○ Reconnecting…"}</span>
      </p>
      <ErrorText error={error} />
      <p class="status" aria-live="polite">
        {active ? (
          myTurn ? (
            <strong>Your turn ({Mark[mine!.mark]})</strong>
          ) : (
            `${toMove?.username}'s turn (${Mark[state.turn]})`
          )
        ) : state.status === GameStatus.CHALLENGE ? (
          `Waiting for ${name(them)} to accept the challenge.`
        ) : (
          <strong>{capitalise(outcome(state, me.id))}</strong>
        )}
      </p>
      {active && (
        <p class="clock">
          Clock: <span>{secondsLeft} s left for {name(toMove)}</span>
          {secondsLeft <= 10 && <span class="badge warn"> ⚠ hurry</span>}
        </p>
      )}
      <div class="board" role="group" aria-label="Board">
        {[...state.board].map((c, cell) => {
          const label = `row ${Math.floor(cell / 3) + 1} column ${(cell % 3) + 1}, ${c === "." ? "empty" : c}`;
          return (
            <button
              type="button"
              key={cell}
              aria-label={label}
              disabled={busy || !myTurn || c !== "."}
              onClick={act(() => game.makeMove({ gameId: state.id, cell, moveNumber: state.nextMoveNumber }))}
            >
              {c === "." ? "" : c}
            </button>
          );
        })}
      </div>
      {state.status === GameStatus.FINISHED && state.rated && mine && (
        <p>
          Your rating: {Math.round(mine.rating)} → {Math.round(mine.rating + mine.ratingChange)} ({signed(mine.ratingChange)});{" "}
          {them?.username}: {Math.round(them!.rating)} → {Math.round(them!.rating + them!.ratingChange)} ({signed(them!.ratingChange)})
        </p>
      )}
      {mine && (
        <div class="buttons wrap">
          {active && (
            <>
              <button type="button" class="danger" disabled={busy} onClick={act(() => game.resign({ gameId: state.id }))}>
                Resign
              </button>
              {state.drawOfferedBy && state.drawOfferedBy !== me.id ? (
                <button type="button" disabled={busy} onClick={act(() => game.acceptDraw({ gameId: state.id }))}>
                  Accept the draw offer
                </button>
              ) : (
                <button type="button" disabled={busy || !!state.drawOfferedBy} onClick={act(() => game.offerDraw({ gameId: state.id }))}>
                  {state.drawOfferedBy ? "Draw offered" : "Offer a draw"}
                </button>
              )}
            </>
          )}
          {state.status === GameStatus.FINISHED &&
            !state.rematchGameId &&
            (state.rematchOfferedBy && state.rematchOfferedBy !== me.id ? (
              <button type="button" class="primary" disabled={busy} onClick={act(() => game.acceptRematch({ gameId: state.id }))}>
                Accept the rematch
              </button>
            ) : (
              <button type="button" disabled={busy || !!state.rematchOfferedBy} onClick={act(() => game.offerRematch({ gameId: state.id }))}>
                {state.rematchOfferedBy ? "Rematch offered" : "Offer a rematch"}
              </button>
            ))}
          {state.status === GameStatus.CHALLENGE && (
            <button type="button" disabled={busy} onClick={act(() => game.declineChallenge({ gameId: state.id }))}>
              {state.invitedUserId === me.id ? "Decline" : "Withdraw the challenge"}
            </button>
          )}
        </div>
      )}
    </div>
  );
}

const capitalise = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

function Leaderboard(props: { reloads: number }) {
  const [entries, setEntries] = useState<PlayerStats[]>([]);
  const [mine, setMine] = useState<PlayerStats | null>(null);
  const { error, run } = useAction();
  useEffect(() => {
    void run(async () => {
      const [board, stats] = await Promise.all([game.getLeaderboard({ pageSize: 20 }), game.getPlayerStats({})]);
      setEntries(board.entries);
      setMine(stats.stats ?? null);
    });
  }, [props.reloads]);
  return (
    <>
      <h2>Leaderboard</h2>
      <ErrorText error={error} />
      {mine && (
        <p class="muted">
          You: {Math.round(mine.rating)}
          {mine.provisional ? " (provisional)" : ""}, {mine.wins} won, {mine.losses} lost, {mine.draws} drawn
          {mine.rank ? `, rank ${mine.rank}` : ""}
        </p>
      )}
      <table class="grid">
        <caption class="sr-only">Players by rating</caption>
        <thead>
          <tr>
            <th scope="col">#</th>
            <th scope="col">Player</th>
            <th scope="col">Rating</th>
            <th scope="col">W/L/D</th>
          </tr>
        </thead>
        <tbody>
          {entries.map((e) => (
            <tr key={e.userId}>
              <td class="num">{e.rank}</td>
              <td>{e.username}</td>
              <td class="num">
                {Math.round(e.rating)}
                {e.provisional && <span class="muted"> provisional</span>}
              </td>
              <td class="num">{`${e.wins}/${e.losses}/${e.draws}`}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {entries.length === 0 && <p class="muted">No rated games yet.</p>}
    </>
  );
}
