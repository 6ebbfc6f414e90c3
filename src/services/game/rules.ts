/**
 * Tic-tac-toe rules, pure: a board is nine cells, row by row from the top
 * left, each "X", "O" or "."; X moves first.
 */
export type Mark = "X" | "O";
export type Outcome = { winner: Mark; line: number[] } | { draw: true } | undefined;

export const EMPTY_BOARD = ".........";

const LINES = [
  [0, 1, 2], [3, 4, 5], [6, 7, 8],
  [0, 3, 6], [1, 4, 7], [2, 5, 8],
  [0, 4, 8], [2, 4, 6],
];

/** Whose turn it is after `moveCount` moves. */
export function turnAfter(moveCount: number): Mark {
  return moveCount % 2 === 0 ? "X" : "O";
}

export type MoveProblem = "CELL_OUT_OF_RANGE" | "CELL_TAKEN" | "GAME_OVER";

/** Why `cell` cannot be played on `board` (undefined: it can). */
export function moveProblem(board: string, cell: number): MoveProblem | undefined {
  if (!Number.isInteger(cell) || cell < 0 || cell > 8) return "CELL_OUT_OF_RANGE";
  if (outcome(board)) return "GAME_OVER";
  if (board[cell] !== ".") return "CELL_TAKEN";
  return undefined;
}

/** The board after `mark` plays `cell` (the caller checked moveProblem). */
export function play(board: string, cell: number, mark: Mark): string {
  return board.slice(0, cell) + mark + board.slice(cell + 1);
}

/** A line of three wins; a full board without one is a draw; otherwise the game goes on. */
export function outcome(board: string): Outcome {
  for (const line of LINES) {
    const [a, b, c] = line as [number, number, number];
    const m = board[a];
    if (m !== "." && m === board[b] && m === board[c]) return { winner: m as Mark, line };
  }
  return board.includes(".") ? undefined : { draw: true };
}

/** The board after playing `cells` in order from the empty board. */
export function replay(cells: number[]): string {
  return cells.reduce((board, cell, i) => play(board, cell, turnAfter(i)), EMPTY_BOARD);
}
