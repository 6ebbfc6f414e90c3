import { Code, ConnectError } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/core";
import type { PostgreSqlDriver } from "@mikro-orm/postgresql";
import { create } from "@bufbuild/protobuf";
import { StringValueSchema, type StringValue } from "@bufbuild/protobuf/wkt";
import { expect } from "chai";
import { closeServiceDatabase, openServiceDatabase } from "../../src/platform/db.js";
import { EventLog, protobufCodec, type FeedItem } from "../../src/platform/event-log.js";
import { PgPubSub } from "../../src/platform/pubsub.js";
import { systemClock } from "../../src/platform/clock.js";
import { Migration20261121000000 } from "../../src/services/inventory/migrations/Migration20261121000000.js";
import { freshDatabase, quietLog } from "../support/harness.js";


describe("event log", () => {
  let orm: MikroORM<PostgreSqlDriver>;
  let pubsub: PgPubSub;
  let log: EventLog<StringValue>;

  beforeEach(async () => {
    const url = await freshDatabase();
    orm = await openServiceDatabase({ url, schema: "inventory", entities: [], migrations: [Migration20261121000000], poolSize: 4, log: quietLog });
    pubsub = new PgPubSub(url, quietLog);
    log = new EventLog({
      em: orm.em,
      schema: "inventory",
      pubsub,
      codec: protobufCodec(StringValueSchema),
      log: quietLog,
      retentionMs: 3_600_000,
      heartbeatMs: 60_000,
      clock: systemClock,
      maxQueue: 5,
      // "key:rest" events concern "key" (follow's key).
      keysOf: (e) => [e.value.split(":")[0]!],
    });
    await log.start();
  });
  afterEach(async () => {
    log.stop();
    await pubsub.close();
    await closeServiceDatabase(orm);
  });

  const append = (values: string[]) =>
    orm.em.fork().transactional((tx) => log.append(tx, values.map((value) => create(StringValueSchema, { value }))));

  it("gives a subscriber that falls behind every event, in order, from the table", async () => {
    const abort = new AbortController();
    const feed = log.follow(0n, abort.signal, 60_000);
    // The subscriber registers, catches up (nothing yet) and says it is live.
    const first = await feed.next();
    expect(first.value, "the first item says the feed is live, and where").to.deep.equal({ heartbeat: true, cursor: 0n });
    // 20 events while the reader is not reading: far more than its queue of 5.
    for (let i = 0; i < 4; i++) await append([0, 1, 2, 3, 4].map((j) => `e${i * 5 + j}`));
    const seen: string[] = [];
    while (seen.length < 20) {
      const next = await feed.next();
      if (next.done) break;
      if ("event" in next.value) seen.push(next.value.event.value);
    }
    abort.abort();
    expect(seen).to.deep.equal(Array.from({ length: 20 }, (_, i) => `e${i}`));
  });

  it("moves an unwatched instance's position from the NOTIFY alone, and a later follower still gets every event after its cursor", async () => {
    let reads = 0;
    const read = log.read.bind(log);
    log.read = (afterId, limit) => (reads++, read(afterId, limit));
    const ids = await append(["a", "b", "c"]);
    await append(["d"]);
    const deadline = Date.now() + 5_000;
    while (log.position < ids[2]! + 1n && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
    expect(log.position, "the position after the NOTIFY of d").to.equal(ids[2]! + 1n);
    expect(reads, "events read with nobody following").to.equal(0);

    const abort = new AbortController();
    const feed = log.follow(ids[0]!, abort.signal, 60_000);
    const seen: string[] = [];
    for (;;) {
      const next = await feed.next();
      if (next.done || "heartbeat" in next.value) break;
      seen.push(next.value.event.value);
    }
    await append(["e"]);
    const live = await feed.next();
    abort.abort();
    expect(seen, "caught up from the table").to.deep.equal(["b", "c", "d"]);
    expect(!live.done && "event" in live.value && live.value.event.value, "then live").to.equal("e");
  });

  it("hands a stream that follows a key only the events naming it, from the table and live, in order, also after falling behind", async () => {
    await append(["a:1", "b:1", "a:2"]);
    const abort = new AbortController();
    const a = log.follow(0n, abort.signal, 60_000, "a");
    const b = log.follow(0n, abort.signal, 60_000, "b");
    const events = async (feed: AsyncGenerator<FeedItem<StringValue>>, n: number) => {
      const seen: string[] = [];
      while (seen.length < n) {
        const next = await feed.next();
        if (next.done) break;
        if ("event" in next.value) seen.push(next.value.event.value);
      }
      return seen;
    };
    expect(await events(a, 2), "a's events from the table").to.deep.equal(["a:1", "a:2"]);
    expect(await events(b, 1), "b's").to.deep.equal(["b:1"]);
    // Live: twelve events of b among twelve of c while b reads nothing: b's queue (5) overflows and it catches up from the table.
    await append(Array.from({ length: 12 }, (_, i) => [`b:${i + 2}`, `c:${i + 2}`]).flat());
    await append(["a:3", "c:1", "a:4"]);
    const [fromA, fromB] = await Promise.all([events(a, 2), events(b, 12)]);
    abort.abort();
    expect(fromA, "a's live events, none of b's or c's").to.deep.equal(["a:3", "a:4"]);
    expect(fromB, "b's, after falling behind").to.deep.equal(Array.from({ length: 12 }, (_, i) => `b:${i + 2}`));
  });

  it("refuses to follow a key on a log that cannot say which keys an event concerns", async () => {
    const plain = new EventLog({ em: orm.em, schema: "inventory", pubsub, codec: protobufCodec(StringValueSchema), log: quietLog, retentionMs: 3_600_000, heartbeatMs: 60_000, clock: systemClock });
    let error: unknown;
    try {
      await plain.follow(0n, new AbortController().signal, 60_000, "a").next();
    } catch (err) {
      error = err;
    }
    expect(String(error)).to.contain("no keysOf");
  });

  it("prunes old events but keeps the newest, and refuses cursors whose events are gone", async () => {
    const ids = await append(["a", "b", "c"]);
    expect(await log.prune(new Date(Date.now() + 60_000))).to.equal(2);
    await log.assertResumable(ids[1]!); // everything after b is still there
    const err = await log.assertResumable(ids[0]! - 1n).then(
      () => undefined,
      (e) => ConnectError.from(e),
    );
    expect(err?.code).to.equal(Code.FailedPrecondition);
    expect((await log.read(0n)).map((e) => e.event.value)).to.deep.equal(["c"]);
  });
});
