import { fromBinary, toBinary, type Message } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import { timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { EntityManager } from "@mikro-orm/postgresql";
import type { Logger } from "pino";
import type { Clock } from "./clock.js";
import { commitWith, preparedQuery, type Queryable, type SqlTransaction } from "./db.js";
import type { ServiceDeps } from "./service-module.js";
import { failedPrecondition, outOfRange } from "./errors.js";
import type { PubSub, Unsubscribe } from "./pubsub.js";
import { Wakeup } from "./streams.js";

/** One committed event: its position in the log and its decoded payload. */
export interface LoggedEvent<T> {
  id: bigint;
  event: T;
}

/** A heartbeat says where the feed stands: every event up to `cursor` was delivered (or filtered). */
export type FeedItem<T> = LoggedEvent<T> | { heartbeat: true; cursor: bigint };

/** How a Watch handler wraps what it streams: a heartbeat, and each event the caller may see. */
export interface WatchWrapper<T, R> {
  heartbeat(value: { time: Timestamp; cursor: string }): R;
  /** The response carrying `event`, or undefined when this caller must not see it. */
  event(event: T, cursor: string): R | undefined;
}

/**
 * A write in the same statement as an append (EventLog.append's `then`): `sql`
 * is an INSERT, UPDATE or DELETE that reads the new events as `appended(id, n)`,
 * n being the event's position in the appended list (from 1); its parameters
 * are `values`, numbered from $4. `name` names the prepared statement.
 */
export interface FollowingWrite {
  name: string;
  sql: string;
  values: unknown[];
}

/** How events are stored in the log's bytea column. */
export interface EventCodec<T> {
  encode(event: T): Uint8Array;
  decode(bytes: Uint8Array): T;
}

/** The codec of a service whose events are protobuf messages (the binary encoding). */
export function protobufCodec<T extends Message>(type: GenMessage<T>): EventCodec<T> {
  return { encode: (event) => toBinary(type, event), decode: (bytes) => fromBinary(type, bytes) };
}

export interface EventLogOptions<T> {
  em: EntityManager;
  /** The service's schema: the log is `<schema>.events`. */
  schema: string;
  pubsub: PubSub;
  /** How an event is stored: `protobufCodec(SomeEventSchema)` for protobuf events. */
  codec: EventCodec<T>;
  log: Logger;
  /** Events older than this are deleted (the newest is always kept, so cursors stay checkable). */
  retentionMs: number;
  /** A quiet Watch stream gets a heartbeat this often. */
  heartbeatMs: number;
  clock: Clock;
  /** Events a subscriber may have waiting before it drops them and catches up from the table. */
  maxQueue?: number;
  /**
   * The keys an event concerns (a game, a ticket): a stream that follows one key (`follow`'s `key`) is handed
   * only the events naming it, so an event wakes the streams it concerns and not every stream of the instance.
   */
  keysOf?: (event: T) => readonly string[];
}

const PAGE = 500;

const ids = (rows: { id: string }[]): bigint[] => rows.map((r) => BigInt(r.id)).sort((a, b) => (a < b ? -1 : 1));

/** A service's event log on `<schema>.events`, with the settings every service shares (retention, heartbeats, clock). */
export function serviceEventLog<T>(
  deps: Pick<ServiceDeps, "config" | "pubsub" | "log" | "clock">,
  em: EntityManager,
  schema: string,
  codec: EventCodec<T>,
  keysOf?: (event: T) => readonly string[],
): EventLog<T> {
  const { config, pubsub, log, clock } = deps;
  return new EventLog({
    keysOf,
    em,
    schema,
    pubsub,
    codec,
    log,
    retentionMs: config.eventRetentionHours * 3_600_000,
    heartbeatMs: config.heartbeatIntervalMs,
    clock,
  });
}

/**
 * A service's ordered, durable event log: a `<schema>.events` table written in
 * the same transaction as the change it describes (a transactional outbox), with
 * a NOTIFY that wakes every instance once the transaction commits.
 *
 * Writers take a transaction-scoped advisory lock just before appending, so ids
 * become visible in id order: a reader that has seen id N never later meets a
 * smaller id committing late. That makes `id` a resumable cursor.
 */
export class EventLog<T> {
  /** The streams following each key (keysOf), and under `undefined` those following every event. */
  private readonly followers = new Map<string | undefined, Set<Subscriber<T>>>();
  private head = 0n;
  private unsubscribe: Unsubscribe | undefined;
  private pumping: Promise<void> | undefined;
  private pumpAgain = false;

  private readonly em: EntityManager;
  private readonly schema: string;
  private readonly pubsub: PubSub;
  private readonly codec: EventCodec<T>;
  private readonly log: Logger;
  private readonly retentionMs: number;
  private readonly heartbeatMs: number;
  private readonly clock: Clock;
  private readonly maxQueue: number;
  private readonly keysOf: ((event: T) => readonly string[]) | undefined;
  /** The two statements every commit costs (prepared per connection): the append, and the read of each instance someone watches. */
  private readonly appendSql: string;
  /** The append followed by a caller's write, by the write's statement name. */
  private readonly appendWithSql = new Map<string, string>();
  private readonly readSql: string;

  constructor(o: EventLogOptions<T>) {
    this.em = o.em;
    this.schema = o.schema;
    this.pubsub = o.pubsub;
    this.codec = o.codec;
    this.log = o.log;
    this.retentionMs = o.retentionMs;
    this.heartbeatMs = o.heartbeatMs;
    this.clock = o.clock;
    this.maxQueue = o.maxQueue ?? 1000;
    this.keysOf = o.keysOf;
    this.appendSql = this.appendWith(undefined);
    this.readSql = `SELECT id, payload FROM ${this.table} WHERE id > $1 ORDER BY id LIMIT $2`;
  }

  private pruneTimer: NodeJS.Timeout | undefined;

  private get table(): string {
    return `"${this.schema}".events`;
  }

  private get channel(): string {
    return `${this.schema}_events`;
  }

  /**
   * Appends events inside the caller's transaction; returns their ids, in the
   * order of `events`, with one statement (appendSql). A write that needs the
   * new ids (a row per event that names it) can ride in the same statement as
   * `then`: one round trip instead of two.
   */
  async append(tx: Queryable, events: T[], then?: FollowingWrite): Promise<bigint[]> {
    if (events.length === 0) return [];
    return ids(await preparedQuery<{ id: string }>(tx, ...this.appendStatement(events, then)));
  }

  /**
   * `append` as the last statement of a sqlTransaction(), sent with its COMMIT (commitWith): the log's lock is
   * held for PostgreSQL's time alone. With no events it sends nothing, and sqlTransaction commits as usual.
   */
  async appendAndCommit(tx: SqlTransaction, events: T[], then?: FollowingWrite): Promise<bigint[]> {
    if (events.length === 0) return [];
    return ids(await commitWith<{ id: string }>(tx, ...this.appendStatement(events, then)));
  }

  private appendStatement(events: T[], then: FollowingWrite | undefined): [name: string, text: string, values: unknown[]] {
    const name = then ? `${this.schema}.append-events+${then.name}` : `${this.schema}.append-events`;
    let text = then ? this.appendWithSql.get(name) : this.appendSql;
    if (text === undefined) this.appendWithSql.set(name, (text = this.appendWith(then!.sql)));
    return [name, text, [...this.appendValues(events), ...(then?.values ?? [])]];
  }

  /**
   * The append as CTEs for a caller's own statement, which lists them in its WITH after its own: `locked`, `added`,
   * `told`, `appended` and, with `then` (a FollowingWrite's SQL), `followed`; parameters $`p` to $`p`+2
   * (appendValues). With `gate`, the name of one of the caller's CTEs, the events are appended once per row it
   * yields (none or one), and only after that row exists: a statement whose write decides whether anything
   * happened appends only when it did, and takes the log's lock after its write, never before (the lock order of
   * `append`). The statement must read `told`, which sends the NOTIFY and, being a SELECT, runs only when read.
   */
  appendCtes(p: number, gate?: string, then?: string): string {
    return `locked AS (SELECT pg_advisory_xact_lock(hashtext($${p}))${gate ? ` FROM ${gate}` : ""}),
      added AS (INSERT INTO ${this.table} (payload)
                SELECT payload FROM locked, unnest($${p + 1}::bytea[]) WITH ORDINALITY AS e(payload, n) ORDER BY n RETURNING id),
      told AS (SELECT pg_notify($${p + 2}, (SELECT max(id) FROM added)::text) FROM locked),
      appended AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM added)${then ? `,
      followed AS (${then})` : ""}`;
  }

  /**
   * A caller's write and its append as one statement: the caller's CTEs `ctes`, one of which, `gate`, yields the
   * row written (the append is gated on it: appendCtes), then the append from $`p`; it answers `gate`'s row.
   */
  afterWrite(ctes: string, gate: string, p: number): string {
    return `WITH ${ctes},
      ${this.appendCtes(p, gate)}
    SELECT ${gate}.* FROM ${gate}, told`;
  }

  /** The parameters of appendCtes: the lock's key, the encoded events, the NOTIFY channel. */
  appendValues(events: T[]): unknown[] {
    return [`agora.events.${this.schema}`, events.map((e) => Buffer.from(this.codec.encode(e))), this.channel];
  }

  /**
   * The append: the lock, the rows (ids drawn in order, after the lock) and the
   * NOTIFY, which PostgreSQL sends at commit with the newest id; then the
   * caller's write, if any, which PostgreSQL always runs (a data-modifying WITH
   * query).
   */
  private appendWith(then: string | undefined): string {
    return `WITH ${this.appendCtes(1, undefined, then)}
      SELECT added.id FROM added, told`;
  }

  async start(): Promise<void> {
    const [row] = await this.em.fork().execute<{ head: string }[]>(`SELECT coalesce(max(id), 0) AS head FROM ${this.table}`);
    this.head = BigInt(row?.head ?? 0);
    this.unsubscribe = await this.pubsub.subscribe(this.channel, (payload) => this.signalled(payload));
    this.pruneTimer = setInterval(() => {
      this.prune(new Date(Date.now() - this.retentionMs)).catch((err) => this.log.warn({ err }, "event pruning failed"));
    }, Math.min(this.retentionMs, 10 * 60_000));
    this.pruneTimer.unref();
  }

  stop(): void {
    clearInterval(this.pruneTimer);
    this.unsubscribe?.();
    for (const set of this.followers.values()) for (const s of set) s.wake();
  }

  /** The id of the newest event this instance has seen. */
  get position(): bigint {
    return this.head;
  }

  /** Reads committed events after `afterId`, oldest first. */
  async read(afterId: bigint, limit = PAGE): Promise<LoggedEvent<T>[]> {
    const rows = await preparedQuery<{ id: string; payload: Buffer }>(this.em, `${this.schema}.read-events`, this.readSql, [afterId.toString(), limit]);
    return rows.map((r) => ({ id: BigInt(r.id), event: this.codec.decode(r.payload) }));
  }

  /** Deletes events committed before `before`, except the newest one. */
  async prune(before: Date): Promise<number> {
    const [row] = await this.em.fork().execute<{ n: number }[]>(
      `WITH gone AS (DELETE FROM ${this.table} WHERE created_at < ? AND id < (SELECT max(id) FROM ${this.table}) RETURNING 1)
       SELECT count(*)::int AS n FROM gone`,
      [before],
    );
    return row?.n ?? 0;
  }

  /**
   * Checks that a client may resume after `afterId`: OUT_OF_RANGE for a cursor
   * no instance has handed out yet, FAILED_PRECONDITION when events after it
   * were pruned (the client re-reads instead of silently missing them).
   */
  async assertResumable(afterId: bigint): Promise<void> {
    // This instance may not have seen the newest events yet: only the table can say a cursor is from the future.
    if (afterId > this.head) {
      if (afterId > (await this.newest())) throw outOfRange("CURSOR_AHEAD", `cursor ${afterId} is ahead of the newest event`, { cursor: String(afterId) });
    }
    const oldest = await this.oldest();
    if (oldest !== undefined && afterId < oldest - 1n) {
      throw failedPrecondition(
        "CURSOR_EXPIRED",
        `events after cursor ${afterId} are no longer kept (the oldest is ${oldest}): read the current state, then watch from now`,
        { type: "CURSOR", subject: String(afterId), description: `oldest retained event is ${oldest}` },
      );
    }
  }

  /** The id of the newest committed event (0 when the log is empty). */
  private async newest(): Promise<bigint> {
    const [row] = await this.em.fork().execute<{ id: string | null }[]>(`SELECT max(id) AS id FROM ${this.table}`);
    return BigInt(row?.id ?? 0);
  }

  /** The oldest id still stored, or undefined when the log is empty. */
  async oldest(): Promise<bigint | undefined> {
    const [row] = await this.em.fork().execute<{ id: string | null }[]>(`SELECT min(id) AS id FROM ${this.table}`);
    return row?.id ? BigInt(row.id) : undefined;
  }

  /**
   * `follow` from a client's resume cursor: "" means from now on, that is after
   * every event committed before the call (read from the table: this instance
   * may not have been told of the newest yet); a cursor from the future or one
   * whose events were pruned is refused (assertResumable).
   */
  async *followCursor(afterCursor: string, signal: AbortSignal, heartbeatMs: number): AsyncGenerator<FeedItem<T>> {
    const after = afterCursor === "" ? await this.newest() : BigInt(afterCursor);
    if (afterCursor !== "") await this.assertResumable(after);
    yield* this.follow(after, signal, heartbeatMs);
  }

  /**
   * The shape every Watch handler shares: `followCursor` from the request's cursor, with
   * heartbeats (time from the clock, and the cursor) and each event the caller may see.
   */
  async *watch<R>(afterCursor: string, signal: AbortSignal, wrap: WatchWrapper<T, R>): AsyncGenerator<R> {
    for await (const item of this.followCursor(afterCursor, signal, this.heartbeatMs)) {
      if ("heartbeat" in item) {
        yield wrap.heartbeat({ time: timestampFromDate(this.clock.now()), cursor: item.cursor.toString() });
        continue;
      }
      const response = wrap.event(item.event, item.id.toString());
      if (response !== undefined) yield response;
    }
  }

  /**
   * `follow` from now on, subscribed once this resolves: a caller that then reads the state the events describe
   * misses nothing committed after that read, and has nothing to read back from the log. The feed's first item
   * (it is live) is consumed here; the caller return()s the feed when done.
   */
  async live(signal: AbortSignal, heartbeatMs: number, key?: string): Promise<AsyncGenerator<FeedItem<T>>> {
    const feed = this.follow(undefined, signal, heartbeatMs, key);
    await feed.next();
    return feed;
  }

  /**
   * Every event after `afterId` (or, without it, from now on), then live ones,
   * each exactly once and in order; a heartbeat after `heartbeatMs` of quiet.
   * Memory per subscriber stays bounded: one that falls too far behind drops its
   * queue and catches up from the table. With `key` (the log needs `keysOf`),
   * only the events naming that key, and only those wake the stream.
   */
  async *follow(afterId: bigint | undefined, signal: AbortSignal, heartbeatMs: number, key?: string): AsyncGenerator<FeedItem<T>> {
    const sub = new Subscriber<T>(this.maxQueue);
    const wanted = key === undefined ? undefined : this.keyFilter(key);
    this.subscribe(sub, key);
    const onAbort = () => sub.wake();
    signal.addEventListener("abort", onAbort);
    try {
      let last = afterId ?? this.head;
      let catchUp = afterId !== undefined;
      let live = false;
      while (!signal.aborted) {
        if (catchUp || sub.lagging) {
          sub.lagging = false;
          sub.queue.length = 0;
          for (;;) {
            const page = await this.read(last);
            for (const item of page) {
              if (!wanted || wanted(item.event)) yield item;
              last = item.id;
            }
            if (page.length < PAGE || signal.aborted) break;
          }
          catchUp = false;
          continue;
        }
        if (!live) {
          // Caught up: the client learns the stream is live, and from where.
          live = true;
          yield { heartbeat: true, cursor: last };
          continue; // events may have arrived (or overflowed the queue) meanwhile
        }
        const item = sub.queue.shift();
        if (item) {
          if (item.id > last) {
            yield item;
            last = item.id;
          }
          continue;
        }
        const woken = await sub.wait(heartbeatMs);
        if (!woken && !signal.aborted) yield { heartbeat: true, cursor: last };
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      this.unsubscribeFrom(sub, key);
    }
    throw signal.reason;
  }

  private keyFilter(key: string): (event: T) => boolean {
    const keysOf = this.keysOf;
    if (!keysOf) throw new Error(`the ${this.schema} event log has no keysOf: it cannot follow a key`);
    return (event) => keysOf(event).includes(key);
  }

  private subscribe(sub: Subscriber<T>, key: string | undefined): void {
    let set = this.followers.get(key);
    if (!set) this.followers.set(key, (set = new Set()));
    set.add(sub);
  }

  private unsubscribeFrom(sub: Subscriber<T>, key: string | undefined): void {
    const set = this.followers.get(key);
    if (set?.delete(sub) && set.size === 0) this.followers.delete(key);
  }

  /**
   * A commit's NOTIFY names its newest event. Every event up to it is settled
   * then (ids are drawn under the log's lock, in commit order), so with nobody
   * following, the instance moves its position without reading the events.
   * No id (signals may have been missed) or someone following: read.
   */
  private signalled(payload: string | undefined): void {
    if (this.followers.size === 0 && !this.pumping && payload && /^[0-9]{1,19}$/.test(payload)) {
      const id = BigInt(payload);
      if (id > this.head) this.head = id;
      return;
    }
    this.pump();
  }

  /** Fetches newly committed events once for the whole instance and hands them to subscribers. */
  private pump(): void {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = (async () => {
      do {
        this.pumpAgain = false;
        for (;;) {
          const page = await this.read(this.head);
          for (const item of page) {
            this.head = item.id;
            for (const s of this.followers.get(undefined) ?? []) s.push(item);
            for (const key of this.keysOf?.(item.event) ?? []) for (const s of this.followers.get(key) ?? []) s.push(item);
          }
          if (page.length < PAGE) break;
        }
      } while (this.pumpAgain);
    })()
      .catch((err) => {
        this.log.warn({ err, schema: this.schema }, "event log read failed; will retry on the next signal");
        setTimeout(() => this.pump(), 1000).unref();
      })
      .finally(() => (this.pumping = undefined));
  }
}

class Subscriber<T> {
  readonly queue: LoggedEvent<T>[] = [];
  lagging = false;
  private readonly wakeup = new Wakeup();

  constructor(private readonly maxQueue: number) {}

  push(item: LoggedEvent<T>): void {
    if (this.lagging) return;
    if (this.queue.length >= this.maxQueue) {
      this.lagging = true;
      this.queue.length = 0;
    } else {
      this.queue.push(item);
    }
    this.wake();
  }

  wake(): void {
    this.wakeup.wake();
  }

  wait(ms: number): Promise<boolean> {
    return this.wakeup.wait(ms);
  }
}
