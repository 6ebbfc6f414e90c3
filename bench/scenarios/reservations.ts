/**
 * 4. Reservations under contention: `clients` users (one HTTP/2 connection
 * each) call CreateReservation in closed loops. Every other request of each
 * client competes for one "hot" resource: it picks a random start and length
 * (30 or 60 minutes) inside the current 2.5-hour window, and the window moves
 * on after every 16 such requests, so overlapping bookings race all the time
 * and some of them win. The other half book the client's own resource, slot
 * after slot, and never conflict. Afterwards PostgreSQL is asked for
 * overlapping active reservations of one resource: there must be none, and the
 * number of stored reservations must equal the commits the clients saw.
 */
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ReservationService } from "../../gen/agora/reservation/v1/reservation_pb.js";
import { startAgora } from "../lib/agora.js";
import type { BenchContext, Row, Scenario } from "../lib/context.js";
import { closedLoops, countError, latencyMedians, measuredRuns, medianPerSecond, serverUsage } from "../lib/load.js";
import { LatencyHistogram, median } from "../lib/stats.js";

const SLOT = 30 * 60_000;
const HOT_WINDOW_REQUESTS = 16;
const HOT_WINDOW = 3 * 3_600_000;

interface Tally {
  attempts: number;
  commits: number;
  conflicts: number;
  errors: Record<string, number>;
  all: LatencyHistogram;
  committed: LatencyHistogram;
}

export const reservations: Scenario = {
  name: "reservations",
  title: "Reservations under contention",
  description:
    "CreateReservation from N clients in closed loops, half of the requests racing for overlapping slots of one resource; the database analysed after the warm-up. " +
    "attempts/s, commits/s (reservations created), conflicts/s (ALREADY_EXISTS); p50/p99 over all attempts; " +
    "double bookings = overlapping active reservations of one resource found in PostgreSQL afterwards (must be 0); " +
    "deadlocks = those PostgreSQL detected and broke (pg_stat_database); CPU ms per 1k attempts.",
  rowLabel: "clients",
  columns: [
    { key: "attemptsPerSecond", label: "attempts/s", digits: 0 },
    { key: "commitsPerSecond", label: "commits/s", digits: 0 },
    { key: "conflictsPerSecond", label: "conflicts/s", digits: 0 },
    { key: "p50Ms", label: "p50 ms", digits: 1 },
    { key: "p99Ms", label: "p99 ms", digits: 1 },
    { key: "doubleBookings", label: "double bookings", digits: 0 },
    { key: "deadlocks", label: "deadlocks", digits: 0 },
    { key: "cpuMsPer1k_agora", label: "CPU ms/1k Agora", digits: 0 },
    { key: "cpuMsPer1k_postgres", label: "PostgreSQL", digits: 0 },
    { key: "peakRssMB_agora", label: "peak RSS MB", digits: 0 },
  ],
  async run(ctx: BenchContext) {
    const { clients, runSeconds } = ctx.settings.reservations;
    const agora = await startAgora(ctx, "reservations");
    try {
      const admin = agora.client(ReservationService, agora.adminToken);
      const resource = async (name: string) =>
        (await admin.createResource({ resource: { name, type: "room", capacity: 10, active: true } })).resource!.id;
      const hot = await resource("hot room");
      const own: string[] = [];
      for (let i = 0; i < clients; i++) own.push(await resource(`room ${i}`));
      ctx.log(`  registering ${clients} users`);
      const users = await agora.users("booker", clients);
      const callers = users.map((u) => agora.client(ReservationService, u.token));
      // Slots start tomorrow (UTC midnight), far enough for any run.
      const base = Math.ceil(Date.now() / 86_400_000) * 86_400_000 + 86_400_000;
      let hotRequests = 0;
      const ownNext = new Array<number>(clients).fill(0);
      let seq = 0;
      let commitsSeen = 0;

      const book = async (c: Client<typeof ReservationService>, client: number, contended: boolean, t: Tally) => {
        let resourceId: string;
        let start: number;
        let slots: number;
        if (contended) {
          const window = Math.floor(hotRequests++ / HOT_WINDOW_REQUESTS);
          resourceId = hot;
          start = base + window * HOT_WINDOW + Math.floor(Math.random() * 4) * SLOT;
          slots = 1 + Math.floor(Math.random() * 2);
        } else {
          // The client's own resource, in a separate range of days from the hot one's windows.
          resourceId = own[client]!;
          start = base + 365 * 86_400_000 + ownNext[client]!++ * SLOT;
          slots = 1;
        }
        const sentAt = performance.now();
        t.attempts++;
        try {
          await c.createReservation({
            resourceId,
            startTime: timestampFromDate(new Date(start)),
            endTime: timestampFromDate(new Date(start + slots * SLOT)),
            partySize: 2,
            requestId: `bench-${seq++}`,
          });
          const ms = performance.now() - sentAt;
          t.commits++;
          commitsSeen++;
          t.all.record(ms);
          t.committed.record(ms);
        } catch (err) {
          const ms = performance.now() - sentAt;
          t.all.record(ms);
          const e = ConnectError.from(err);
          if (e.code === Code.AlreadyExists) t.conflicts++;
          else countError(t.errors, e);
        }
      };
      const load = async (seconds: number): Promise<Tally> => {
        const t: Tally = { attempts: 0, commits: 0, conflicts: 0, errors: {}, all: new LatencyHistogram(), committed: new LatencyHistogram() };
        await closedLoops(callers, seconds, (c, i, k) => book(c, i, k % 2 === 0, t));
        return t;
      };

      ctx.log(`  ${clients} clients: warm-up ${ctx.settings.warmupSeconds}s`);
      await load(ctx.settings.warmupSeconds);
      // Measured as a running deployment books: with table statistics. Autovacuum analyses a table once a tenth of
      // it changed, looking once a minute; this scenario lasts some 35 s on a new database, so it analyses after the
      // warm-up instead: the plans made while the tables were nearly empty look a repeated request up through
      // reservations_by_user, reading all of the user's reservations, and last until an ANALYZE (performance.md).
      await agora.query("ANALYZE");
      const runs = await measuredRuns(ctx, agora.watched(), runSeconds, load, (t, usage) =>
        `${Math.round(t.attempts / usage.seconds)} attempts/s, ${Math.round(t.commits / usage.seconds)} commits/s, ` +
        `p99 ${t.all.percentile(99).toFixed(1)} ms, errors ${JSON.stringify(t.errors)}`,
      );

      const [overlaps] = await agora.query<{ n: string }>(
        `SELECT count(*) AS n FROM "reservation".reservations a JOIN "reservation".reservations b
           ON a.resource_id = b.resource_id AND a.id < b.id
          AND tstzrange(a.start_time, a.end_time) && tstzrange(b.start_time, b.end_time)
        WHERE a.status IN ('pending', 'confirmed') AND b.status IN ('pending', 'confirmed')`,
      );
      const [stored] = await agora.query<{ n: string }>(`SELECT count(*) AS n FROM "reservation".reservations WHERE status IN ('pending', 'confirmed')`);
      // Deadlocks PostgreSQL detected (and broke) in this database during the scenario.
      const [deadlocks] = await agora.query<{ n: string }>(`SELECT deadlocks AS n FROM pg_stat_database WHERE datname = current_database()`);
      const doubleBookings = Number(overlaps!.n);
      const storedActive = Number(stored!.n);
      const count = (match: (name: string) => boolean) =>
        runs.reduce((a, r) => a + Object.entries(r.result.errors).filter(([name]) => match(name)).reduce((x, [, n]) => x + n, 0), 0);
      // ABORTED asks the client to retry (a deadlock or lock timeout the server's own retries did not get past).
      const aborted = count((name) => name.startsWith("Aborted"));
      const errors = count((name) => !name.startsWith("Aborted"));
      const metrics: Record<string, number> = {
        attemptsPerSecond: medianPerSecond(runs, (t) => t.attempts),
        commitsPerSecond: medianPerSecond(runs, (t) => t.commits),
        conflictsPerSecond: medianPerSecond(runs, (t) => t.conflicts),
        ...latencyMedians(runs, (t) => t.all),
        p99CommitMs: median(runs.map((r) => r.result.committed.percentile(99))),
        ...serverUsage(runs, (t) => t.attempts),
        errors,
        aborted,
        deadlocks: Number(deadlocks!.n),
        doubleBookings,
        storedActive,
        commitsSeen,
      };
      const notes: string[] = [];
      if (doubleBookings > 0) notes.push(`DOUBLE BOOKINGS: ${doubleBookings}`);
      if (storedActive !== commitsSeen) notes.push(`stored ${storedActive} active reservations, clients saw ${commitsSeen} commits`);
      if (aborted > 0) notes.push(`${aborted} ABORTED (retryable)`);
      if (errors > 0) notes.push(`${errors} unexpected errors`);
      const rows: Row[] = [{ name: String(clients), metrics, notes }];
      return {
        status: "ok" as const,
        rows,
        details: {
          runs: runs.map((r) => ({ attempts: r.result.attempts, commits: r.result.commits, conflicts: r.result.conflicts, errors: r.result.errors, seconds: r.usage.seconds })),
          checks: { doubleBookings, storedActive, commitsSeen },
          summaryLine:
            `Double bookings found in PostgreSQL afterwards: ${doubleBookings} (${storedActive} active reservations stored, ${commitsSeen} commits seen by the clients); ` +
            `PostgreSQL broke ${deadlocks!.n} deadlocks.`,
        },
      };
    } finally {
      await agora.stop();
    }
  },
};
