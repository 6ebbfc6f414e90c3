/**
 * Terminal tic-tac-toe client.
 *
 *   npm run game -- --server http://127.0.0.1:8080 --username alice --password '...'
 *
 * Settings also come from AGORA_SERVER, AGORA_USERNAME and AGORA_PASSWORD. It
 * signs in, then reads commands line by line from stdin (a terminal or a pipe):
 * /queue for a rated opponent, /challenge <user id>, a digit 1-9 to play a
 * cell. A game is played over one GameService.Play stream that reconnects with
 * back-off when it breaks and resumes from the last move shown (the server
 * keeps the seat while the clock runs). /help lists the commands.
 */
import readline from "node:readline";
import type { Readable, Writable } from "node:stream";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { EndReason, GameResult, GameService, GameStatus, Mark, PlayRequestSchema, TicketStatus, type Game, type PlayResponse } from "../../gen/agora/game/v1/game_pb.js";
import { Auth, runIfMain, signInSettings } from "./auth.js";
import { Outbox } from "./chat.js";

const HELP = [
  "commands:",
  "  /queue                 find a rated opponent (matchmaking)",
  "  /cancel                leave the queue",
  "  /challenge <user id>   invite a user; /accept <game id>, /decline <game id>",
  "  /join <game id>        play (or watch) a game",
  "  1-9                    play that cell (1 2 3 / 4 5 6 / 7 8 9)",
  "  /resign, /draw (offer or accept), /rematch (offer or accept)",
  "  /games, /stats, /top   your games, your rating, the leaderboard",
  "  /help, /quit",
];

const RETRYABLE = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Unknown, Code.Internal, Code.Aborted]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mark = (m: Mark) => (m === Mark.X ? "X" : m === Mark.O ? "O" : "?");

export function drawBoard(board: string): string[] {
  const rows = [0, 3, 6].map((i) => ` ${[...board.slice(i, i + 3)].map((c, j) => (c === "." ? String(i + j + 1) : c)).join(" | ")}`);
  return [rows[0]!, "---+---+---", rows[1]!, "---+---+---", rows[2]!];
}

export function describe(game: Game, me: string): string {
  const x = game.x?.username || "?";
  const o = game.o?.username || "?";
  const head = `${x} (X) vs ${o} (O)`;
  switch (game.status) {
    case GameStatus.CHALLENGE:
      return `${head}: challenge waiting for an answer (game ${game.id})`;
    case GameStatus.ACTIVE: {
      const mover = game.turn === Mark.X ? game.x : game.o;
      const left = game.turnDeadline ? Math.max(0, Math.round((timestampMs(game.turnDeadline) - Date.now()) / 1000)) : 0;
      const offer = game.drawOfferedBy ? (game.drawOfferedBy === me ? ", you offered a draw" : ", a draw is offered: /draw accepts") : "";
      return `${head}: ${mover?.userId === me ? "your move" : `${mover?.username}'s move`} (${mark(game.turn)}, ${left} s)${offer}`;
    }
    case GameStatus.FINISHED: {
      const reason = EndReason[game.endReason]?.toLowerCase().replace(/_/g, " ") ?? "";
      const result = game.result === GameResult.DRAW ? "draw" : `${game.result === GameResult.X_WON ? x : o} won`;
      const mine = game.x?.userId === me ? game.x : game.o?.userId === me ? game.o : undefined;
      const rating = mine && game.rated ? `, your rating ${mine.ratingChange >= 0 ? "+" : ""}${mine.ratingChange.toFixed(1)}` : "";
      const rematch = game.rematchOfferedBy && game.rematchOfferedBy !== me && !game.rematchGameId ? "a rematch is offered: /rematch accepts" : "/rematch for another";
      return `${head}: ${result} (${reason})${rating}. ${rematch}`;
    }
    case GameStatus.ABORTED:
      return `${head}: aborted (no result)`;
    default:
      return `${head}: challenge declined`;
  }
}

export interface GameClientOptions {
  server: string;
  username: string;
  password: string;
  input: Readable;
  output: Writable;
}

/** One signed-in player: commands in, board and events out. */
export class GameClient {
  private readonly auth: Auth;
  private readonly games: Client<typeof GameService>;
  private gameId: string | undefined;
  private game: Game | undefined;
  private outbox: Outbox<MessageInitShape<typeof PlayRequestSchema>> | undefined;
  private playing: AbortController | undefined;
  private queueing: AbortController | undefined;
  private quitting = false;

  constructor(private readonly o: GameClientOptions) {
    this.auth = new Auth((interceptors) => createGrpcTransport({ baseUrl: o.server, interceptors }), o.username, o.password);
    this.games = createClient(GameService, this.auth.transport);
  }

  private print(...lines: string[]): void {
    for (const line of lines) this.o.output.write(`${line}\n`);
  }

  async run(): Promise<number> {
    await this.auth.login();
    this.print(`signed in as ${this.o.username} (id ${this.auth.userId}); /help for commands`);
    const rl = readline.createInterface({ input: this.o.input, terminal: false });
    for await (const line of rl) {
      try {
        await this.command(line.trim());
      } catch (err) {
        const e = ConnectError.from(err);
        this.print(`error: ${e.rawMessage} (${Code[e.code]})`);
      }
      if (this.quitting) break;
    }
    await this.quit();
    return 0;
  }

  async quit(): Promise<void> {
    this.quitting = true;
    this.queueing?.abort();
    this.playing?.abort();
    await this.auth.logout();
  }

  private async command(line: string): Promise<void> {
    if (line === "") return;
    const [cmd, arg = ""] = line.split(/\s+/, 2);
    if (/^[1-9]$/.test(line)) return this.send({ action: { case: "move", value: { cell: Number(line) - 1, moveNumber: this.game?.nextMoveNumber ?? 1 } } });
    switch (cmd) {
      case "/help":
        return this.print(...HELP);
      case "/quit":
        this.quitting = true;
        return;
      case "/queue":
        return void this.queue();
      case "/cancel":
        this.queueing?.abort();
        await this.games.cancelMatch({});
        return this.print("left the queue");
      case "/challenge": {
        const { game } = await this.games.createGame({ opponentUserId: arg });
        this.print(`challenge sent: game ${game!.id}`);
        return this.join(game!.id);
      }
      case "/accept": {
        const { game } = await this.games.acceptChallenge({ gameId: arg });
        return this.join(game!.id);
      }
      case "/decline":
        await this.games.declineChallenge({ gameId: arg });
        return this.print("declined");
      case "/join":
        return this.join(arg);
      case "/resign":
        return this.send({ action: { case: "resign", value: true } });
      case "/draw":
        return this.send({ action: { case: this.game?.drawOfferedBy && this.game.drawOfferedBy !== this.auth.userId ? "acceptDraw" : "offerDraw", value: true } });
      case "/rematch":
        return this.send({ action: { case: this.game?.rematchOfferedBy && this.game.rematchOfferedBy !== this.auth.userId ? "acceptRematch" : "offerRematch", value: true } });
      case "/games": {
        const { games } = await this.games.listGames({ pageSize: 10 });
        return this.print(...games.map((g) => `${g.id}  ${describe(g, this.auth.userId)}`));
      }
      case "/stats": {
        const s = (await this.games.getPlayerStats({})).stats!;
        return this.print(
          `rating ${s.rating.toFixed(0)} ±${(2 * s.deviation).toFixed(0)}${s.provisional ? " (provisional)" : ""}, ` +
            `${s.wins} won, ${s.losses} lost, ${s.draws} drawn, streak ${s.streak}${s.rank ? `, rank ${s.rank}` : ""}`,
        );
      }
      case "/top": {
        const { entries } = await this.games.getLeaderboard({ pageSize: 10 });
        return this.print(...entries.map((e) => `${String(e.rank).padStart(3)}. ${e.username.padEnd(20)} ${e.rating.toFixed(0)}${e.provisional ? "?" : ""}`));
      }
      default:
        return this.print(`unknown command ${cmd}; /help lists them`);
    }
  }

  private send(req: MessageInitShape<typeof PlayRequestSchema>): void {
    if (!this.outbox) return this.print("no game: /queue, /challenge or /join first");
    this.outbox.push(req);
  }

  private async queue(): Promise<void> {
    this.queueing?.abort();
    const abort = (this.queueing = new AbortController());
    try {
      let shown = false;
      for await (const res of this.games.findMatch({}, { signal: abort.signal })) {
        const t = res.ticket!;
        if (!shown) this.print(`searching for an opponent near ${t.rating.toFixed(0)}...`);
        shown = true;
        if (t.status === TicketStatus.MATCHED) {
          this.print("opponent found");
          return this.join(t.gameId);
        }
        if (t.status === TicketStatus.CANCELLED) return this.print("left the queue");
      }
    } catch (err) {
      if (!abort.signal.aborted) this.print(`matchmaking failed: ${ConnectError.from(err).rawMessage}`);
    }
  }

  /** Plays `gameId` over a Play stream, reconnecting and resuming after the last move shown. */
  private async join(gameId: string): Promise<void> {
    this.playing?.abort();
    const abort = (this.playing = new AbortController());
    this.gameId = gameId;
    this.game = undefined;
    void (async () => {
      let backoff = 100;
      while (!abort.signal.aborted) {
        const outbox = (this.outbox = new Outbox());
        outbox.push({ action: { case: "join", value: { gameId, afterMoveNumber: this.game?.moves.length ?? 0 } } });
        try {
          for await (const res of this.games.play(outbox, { signal: abort.signal })) {
            backoff = 100;
            this.show(res);
          }
          return;
        } catch (err) {
          if (abort.signal.aborted) return;
          const e = ConnectError.from(err);
          if (!RETRYABLE.has(e.code)) return this.print(`game stream ended: ${e.rawMessage}`);
          this.print(`connection lost (${Code[e.code]}); reconnecting in ${backoff} ms`);
          await sleep(backoff);
          backoff = Math.min(5_000, backoff * 2);
        } finally {
          outbox.close();
        }
      }
    })();
  }

  private show(res: PlayResponse): void {
    switch (res.kind.case) {
      case "update": {
        const game = res.kind.value.game!;
        const before = this.game;
        this.game = game;
        this.print(...drawBoard(game.board), describe(game, this.auth.userId));
        if (game.rematchGameId && !before?.rematchGameId) {
          this.print("rematch accepted: joining it");
          void this.join(game.rematchGameId);
        }
        return;
      }
      case "heartbeat":
        if (this.game?.status === GameStatus.ACTIVE) this.print(`clock: ${res.kind.value.turnSecondsLeft} s left`);
        return;
      case "error":
        return this.print(`refused: ${res.kind.value.message}`);
      case "rematch":
        return; // the update with rematch_game_id follows
    }
  }
}

async function main(): Promise<number> {
  const settings = await signInSettings("usage: npm run game -- --server <url> --username <name> [--password <password>]", HELP);
  if (!settings) return 0;
  const { server, username, password } = settings;
  const client = new GameClient({ server, username, password, input: process.stdin, output: process.stdout });
  process.once("SIGINT", () => void client.quit().then(() => process.exit(0)));
  return client.run();
}

runIfMain(import.meta.url, main);
