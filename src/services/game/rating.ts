import rate from "glicko2-lite";

/**
 * Glicko-2 (Glickman, "Example of the Glicko-2 system") through the
 * maintained `glicko2-lite` package. Every rated game is one rating period
 * with one opponent, as Lichess does; the system constant tau is 0.5.
 */
export interface Rating {
  rating: number;
  deviation: number;
  volatility: number;
}

export const NEW_PLAYER: Rating = { rating: 1500, deviation: 350, volatility: 0.06 };

/** Above this deviation a rating is provisional (Lichess's threshold). */
export const PROVISIONAL_DEVIATION = 110;

export const isProvisional = (r: Rating) => r.deviation > PROVISIONAL_DEVIATION;

/** A player's new rating after one period against `results` (score 1 win, 0.5 draw, 0 loss). */
export function rated(player: Rating, results: { opponent: Rating; score: number }[]): Rating {
  const next = rate(
    player.rating,
    player.deviation,
    player.volatility,
    results.map((r) => [r.opponent.rating, r.opponent.deviation, r.score] as [number, number, number]),
    { tau: 0.5 },
  );
  return { rating: next.rating, deviation: next.rd, volatility: next.vol };
}

/** Both players' new ratings after a game between them; `scoreA` is A's score. */
export function afterGame(a: Rating, b: Rating, scoreA: number): [Rating, Rating] {
  return [rated(a, [{ opponent: b, score: scoreA }]), rated(b, [{ opponent: a, score: 1 - scoreA }])];
}
