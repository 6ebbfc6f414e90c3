import { expect } from "chai";
import { afterGame, isProvisional, NEW_PLAYER, rated } from "../../src/services/game/rating.js";
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
