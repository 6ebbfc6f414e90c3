import { expect } from "chai";
import { afterGame, isProvisional, NEW_PLAYER, rated } from "../../src/services/game/rating.js";
import type { TicketRow } from "../../src/services/game/game.repository.js";
import { pairTickets, ratingWindow } from "../../src/services/game/matchmaking.js";
import { EMPTY_BOARD, moveProblem, outcome, play, replay, turnAfter } from "../../src/services/game/rules.js";

describe("game rules", () => {
  it("X moves first and turns alternate", () => {
    expect([0, 1, 2, 3].map(turnAfter)).to.deep.equal(["X", "O", "X", "O"]);
    expect(play(EMPTY_BOARD, 4, "X")).to.equal("....X....");
  });

  it("finds every line of three, for either mark", () => {
    expect(outcome(replay([0, 3, 1, 4, 2]))).to.deep.equal({ winner: "X", line: [0, 1, 2] });
    expect(outcome(replay([0, 2, 1, 4, 8, 6]))).to.deep.equal({ winner: "O", line: [2, 4, 6] });
    expect(outcome(replay([1, 0, 2, 4, 3, 8]))).to.deep.equal({ winner: "O", line: [0, 4, 8] });
    expect(outcome(replay([0, 1, 3, 2, 6]))).to.deep.equal({ winner: "X", line: [0, 3, 6] });
  });

  it("a full board without a line is a draw; a win on the last move is a win", () => {
    expect(outcome(replay([0, 1, 2, 4, 3, 5, 7, 6, 8]))).to.deep.equal({ draw: true });
    expect(outcome(replay([0, 1, 2, 4, 3, 6, 5, 8]))).to.equal(undefined);
    expect(outcome(replay([0, 1, 2, 4, 3, 5, 7, 8, 6]))).to.deep.equal({ winner: "X", line: [0, 3, 6] });
  });

  it("refuses a taken cell, a cell off the board and a move after the end", () => {
    const board = replay([4]);
    expect(moveProblem(board, 4)).to.equal("CELL_TAKEN");
    expect(moveProblem(board, 9)).to.equal("CELL_OUT_OF_RANGE");
    expect(moveProblem(board, -1)).to.equal("CELL_OUT_OF_RANGE");
    expect(moveProblem(replay([0, 3, 1, 4, 2]), 8)).to.equal("GAME_OVER");
    expect(moveProblem(board, 0)).to.equal(undefined);
  });
});

describe("Glicko-2", () => {
  it("matches the worked example in Glickman's paper", () => {
    const next = rated({ rating: 1500, deviation: 200, volatility: 0.06 }, [
      { opponent: { rating: 1400, deviation: 30, volatility: 0.06 }, score: 1 },
      { opponent: { rating: 1550, deviation: 100, volatility: 0.06 }, score: 0 },
      { opponent: { rating: 1700, deviation: 300, volatility: 0.06 }, score: 0 },
    ]);
    // The paper rounds its intermediate steps and prints 1464.06 / 151.52 / 0.05999.
    expect(next.rating).to.be.closeTo(1464.06, 0.02);
    expect(next.deviation).to.be.closeTo(151.52, 0.01);
    expect(next.volatility).to.be.closeTo(0.05999, 0.00001);
  });

  it("a win moves two new players apart symmetrically, a draw leaves equal players equal", () => {
    const [winner, loser] = afterGame(NEW_PLAYER, NEW_PLAYER, 1);
    expect(winner.rating - 1500).to.be.greaterThan(100);
    expect(winner.rating - 1500).to.be.closeTo(1500 - loser.rating, 1e-9);
    expect(winner.deviation).to.be.lessThan(350);
    const [a, b] = afterGame(NEW_PLAYER, NEW_PLAYER, 0.5);
    expect(a.rating).to.be.closeTo(1500, 1e-9);
    expect(b.rating).to.be.closeTo(1500, 1e-9);
    expect(isProvisional(NEW_PLAYER)).to.equal(true);
    expect(isProvisional({ rating: 1500, deviation: 60, volatility: 0.06 })).to.equal(false);
  });
});

describe("matchmaking pairs", () => {
  const t0 = new Date("2030-01-01T00:00:00Z");
  const at = (s: number) => new Date(t0.getTime() + s * 1000);
  let n = 0;
  const ticket = (rating: number, deviation = 60, waitedFrom = 0, user = `u${++n}`, turnSeconds = 30): TicketRow => ({
    id: `t${++n}`, user_id: user, username: user, rating, deviation, turn_seconds: turnSeconds, status: "searching", game_id: null, created_at: at(waitedFrom),
  });
  const ids = (pairs: [TicketRow, TicketRow][]) => pairs.map(([a, b]) => [a.rating, b.rating]);

  it("the window widens with waiting time and starts wider for provisional players", () => {
    expect(ratingWindow(ticket(1500), at(0))).to.equal(100);
    expect(ratingWindow(ticket(1500), at(30))).to.equal(400);
    expect(ratingWindow(ticket(1500), at(3600))).to.equal(800);
    expect(ratingWindow(ticket(1500, 350), at(0))).to.equal(200);
  });

  it("pairs within both windows, closest first, never a player with themselves or another clock", () => {
    const a = ticket(1500);
    const far = ticket(1750);
    expect(pairTickets([a, far], at(0))).to.deep.equal([]);
    // After 20 s both accept a 250-point gap.
    expect(ids(pairTickets([a, far], at(20)))).to.deep.equal([[1500, 1750]]);
    // Provisional players (deviation 350) accept 200 at once.
    expect(ids(pairTickets([ticket(1500, 350), ticket(1680, 350)], at(0)))).to.deep.equal([[1500, 1680]]);
    // Closest rating wins; the oldest ticket chooses first.
    expect(ids(pairTickets([ticket(1500), ticket(1590, 60, 1), ticket(1520, 60, 2)], at(2)))).to.deep.equal([[1500, 1520]]);
    expect(pairTickets([ticket(1500, 60, 0, "same"), ticket(1500, 60, 0, "same")], at(0))).to.deep.equal([]);
    expect(pairTickets([ticket(1500, 60, 0, "p", 30), ticket(1500, 60, 0, "q", 60)], at(0))).to.deep.equal([]);
  });
});
