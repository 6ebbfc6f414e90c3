import type { TicketRow } from "./game.repository.js";
import { PROVISIONAL_DEVIATION } from "./rating.js";

/**
 * Pairing rules for the pool, pure. After Lichess's pool: a ticket accepts
 * opponents within a rating window that starts narrow and widens with the
 * time waited; a provisional player (deviation above 110) starts twice as
 * wide, since their rating says little yet.
 */
export interface WindowSettings {
  /** Window of a player who just queued. */
  base: number;
  /** Added for every second waited. */
  perSecond: number;
  max: number;
}

export const DEFAULT_WINDOW: WindowSettings = { base: 100, perSecond: 10, max: 800 };

export function ratingWindow(t: Pick<TicketRow, "deviation" | "created_at">, now: Date, s: WindowSettings = DEFAULT_WINDOW): number {
  const waited = Math.max(0, (now.getTime() - new Date(t.created_at).getTime()) / 1000);
  const base = t.deviation > PROVISIONAL_DEVIATION ? 2 * s.base : s.base;
  return Math.min(s.max, base + waited * s.perSecond);
}

/**
 * Pairs the waiting tickets, longest waiting first: each takes the closest
 * rating among the others it accepts and that accept it (the difference
 * within both windows), with the same turn clock, never the same player.
 */
export function pairTickets(tickets: TicketRow[], now: Date, s: WindowSettings = DEFAULT_WINDOW): [TicketRow, TicketRow][] {
  const waiting = [...tickets].sort((a, b) => new Date(a.created_at).getTime() - new Date(b.created_at).getTime());
  const taken = new Set<string>();
  const pairs: [TicketRow, TicketRow][] = [];
  for (const a of waiting) {
    if (taken.has(a.id)) continue;
    let best: TicketRow | undefined;
    for (const b of waiting) {
      if (b === a || taken.has(b.id) || b.user_id === a.user_id || b.turn_seconds !== a.turn_seconds) continue;
      const diff = Math.abs(a.rating - b.rating);
      if (diff > ratingWindow(a, now, s) || diff > ratingWindow(b, now, s)) continue;
      if (!best || diff < Math.abs(a.rating - best.rating)) best = b;
    }
    if (best) {
      taken.add(a.id).add(best.id);
      pairs.push([a, best]);
    }
  }
  return pairs;
}
