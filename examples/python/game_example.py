"""A Python client that plays a whole game of tic-tac-toe on Agora's
GameService, with stubs generated from the protos (bash
scripts/generate-clients.sh writes ./gen next to this file).

Two players registered on the way: ana challenges ben, ben accepts; ana plays
over the bidirectional Play stream, ben with unary MakeMove calls, while a
spectator follows the game with WatchGame (server stream) on a thread. On the
way a stale move is refused (ABORTED, google.rpc.ErrorInfo STALE_MOVE with the
expected move number) and a resent move is answered with the game unchanged.
At the end, both ratings have moved and the spectator has seen every move.

    PYTHONPATH=.tools/python python3 examples/python/game_example.py --server http://localhost:8080

Every step prints one "ok" line; the first unexpected result prints
"FAILED: ..." and exits 1.
"""

import argparse
import os
import queue
import secrets
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402

from agora.game.v1 import game_pb2, game_pb2_grpc  # noqa: E402
from agora.identity.v1 import identity_pb2, identity_pb2_grpc  # noqa: E402
from agora_example import TIMEOUT, Bearer, Failure, error_info, expect, expect_code, ok  # noqa: E402

# X takes the top row while O plays the middle row: X wins with its third move.
X_CELLS = [0, 1, 2]
O_CELLS = [3, 4]


class Player:
    """A user registered and signed in, with the GameService stub carrying their token."""

    def __init__(self, channel, name):
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        password = f"{name}'s long passphrase"
        identity.Register(identity_pb2.RegisterRequest(username=name, password=password, display_name=name, email=f"{name}@example.com"), timeout=TIMEOUT)
        login = identity.Login(identity_pb2.LoginRequest(username=name, password=password), timeout=TIMEOUT)
        self.name = name
        self.id = login.user.id
        self.games = game_pb2_grpc.GameServiceStub(grpc.intercept_channel(channel, Bearer(login.tokens.access_token)))


def play(channel, suffix):
    ana, ben, fan = (Player(channel, f"{name}-{suffix}") for name in ("ana", "ben", "fan"))
    ok(f"identity: registered and signed in {ana.name}, {ben.name} and {fan.name}")
    games = {u.name: u.games for u in (ana, ben, fan)}

    game = games[ana.name].CreateGame(game_pb2.CreateGameRequest(opponent_user_id=ben.id, mark=game_pb2.MARK_X), timeout=TIMEOUT).game
    expect(game.status == game_pb2.GAME_STATUS_CHALLENGE, f"a new challenge, got {game.status}")
    expect_code(lambda: games[ana.name].CreateGame(game_pb2.CreateGameRequest(opponent_user_id=ana.id), timeout=TIMEOUT),
                grpc.StatusCode.INVALID_ARGUMENT, "a challenge to oneself")
    game = games[ben.name].AcceptChallenge(game_pb2.AcceptChallengeRequest(game_id=game.id), timeout=TIMEOUT).game
    expect(game.status == game_pb2.GAME_STATUS_ACTIVE, "the accepted challenge is active")
    ok(f"game: {ana.name} challenged {ben.name}, who accepted; {ana.name} plays X with {game.turn_seconds} s a move")

    # The spectator's stream, read on a thread: every update, until the game ends.
    seen = queue.Queue()
    watch = games[fan.name].WatchGame(game_pb2.WatchGameRequest(game_id=game.id), timeout=60)

    def spectate():
        try:
            for msg in watch:
                if msg.HasField("update"):
                    seen.put(msg.update)
                    if msg.update.game.status == game_pb2.GAME_STATUS_FINISHED:
                        return
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                seen.put(err)

    spectator = threading.Thread(target=spectate, daemon=True)
    spectator.start()

    # ana's moves go in on the Play stream; its responses are read on this thread.
    requests = queue.Queue()

    def outgoing():
        while True:
            item = requests.get()
            if item is None:
                return
            yield item

    requests.put(game_pb2.PlayRequest(ref="join", join=game_pb2.WatchGameRequest(game_id=game.id)))
    stream = games[ana.name].Play(outgoing(), timeout=60)

    def next_state(predicate, what):
        for msg in stream:
            if msg.HasField("error"):
                raise Failure(f"{what}: the server refused {msg.error.ref}: {msg.error.message}")
            if msg.HasField("update") and predicate(msg.update.game):
                return msg.update.game
        raise Failure(f"{what}: the Play stream ended")

    state = next_state(lambda g: True, "the snapshot")
    for i, cell in enumerate(X_CELLS):
        requests.put(game_pb2.PlayRequest(ref=f"x{i}", move=game_pb2.PlayMove(cell=cell, move_number=state.next_move_number)))
        state = next_state(lambda g, n=state.next_move_number: len(g.moves) >= n, f"X's move {i + 1}")
        if state.status != game_pb2.GAME_STATUS_ACTIVE:
            break
        number = state.next_move_number
        if i == 0:
            err = expect_code(lambda: games[ben.name].MakeMove(game_pb2.MakeMoveRequest(game_id=game.id, cell=O_CELLS[i], move_number=number + 1), timeout=TIMEOUT),
                              grpc.StatusCode.ABORTED, "a stale move")
            info = error_info(err)
            expect(info is not None and info.reason == "STALE_MOVE" and info.metadata["expected_move_number"] == str(number),
                   f"STALE_MOVE with the expected number, got {info}")
            ok(f"game: a stale move was refused (aborted, STALE_MOVE, expected_move_number={number})")
        moved = games[ben.name].MakeMove(game_pb2.MakeMoveRequest(game_id=game.id, cell=O_CELLS[i], move_number=number), timeout=TIMEOUT).game
        again = games[ben.name].MakeMove(game_pb2.MakeMoveRequest(game_id=game.id, cell=O_CELLS[i], move_number=number), timeout=TIMEOUT).game
        expect(again.version == moved.version, "a resent move changes nothing")
        state = next_state(lambda g, n=number: len(g.moves) >= n, f"O's move {i + 1} on ana's stream")
    requests.put(None)
    expect(state.status == game_pb2.GAME_STATUS_FINISHED and state.result == game_pb2.GAME_RESULT_X_WON, f"X won, got {state.status}/{state.result}")
    expect(state.board == "XXXOO....", f"the final board, got {state.board}")
    ok(f"game: {ana.name} won with a line after {len(state.moves)} moves; rating change X {state.x.rating_change:+.1f}, O {state.o.rating_change:+.1f}")

    spectator.join(TIMEOUT)
    moves = []
    while not seen.empty():
        item = seen.get()
        if isinstance(item, Exception):
            raise Failure(f"the spectator's stream failed: {item}")
        moves.extend(m.cell for m in item.new_moves)
    expect(moves == [0, 3, 1, 4, 2], f"the spectator saw every move once, in order, got {moves}")
    watch.cancel()
    ok(f"game: {fan.name} watched every move once, in order: {moves}")

    stats = games[ana.name].GetPlayerStats(game_pb2.GetPlayerStatsRequest(), timeout=TIMEOUT).stats
    expect(stats.wins == 1 and stats.games == 1 and stats.rating > 1500, f"ana's record, got {stats}")
    board = games[fan.name].GetLeaderboard(game_pb2.GetLeaderboardRequest(around_caller=False, page_size=1000), timeout=TIMEOUT).entries
    expect(any(e.user_id == ana.id for e in board), "ana is on the leaderboard")
    ok(f"game: {ana.name} is rated {stats.rating:.0f} (deviation {stats.deviation:.0f}, provisional {stats.provisional}), rank {stats.rank}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("AGORA_SERVER", "http://localhost:8080"))
    args = parser.parse_args()
    target = args.server.split("://", 1)[-1].rstrip("/")
    channel = grpc.secure_channel(target, grpc.ssl_channel_credentials()) if args.server.startswith("https://") else grpc.insecure_channel(target)
    try:
        with channel:
            play(channel, secrets.token_hex(4))
    except Failure as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    except grpc.RpcError as err:
        print(f"FAILED: unexpected {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    print("python game example: all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
