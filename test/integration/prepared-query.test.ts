// preparedQuery asks PostgreSQL to describe a named statement's result once per connection (PreparedStatementQuery).
import type { MikroORM } from "@mikro-orm/core";
import type { PostgreSqlDriver } from "@mikro-orm/postgresql";
import { expect } from "chai";
import pg from "pg";
import { closeServiceDatabase, commitWith, openServiceDatabase, preparedQuery, sqlTransaction } from "../../src/platform/db.js";
import { Migration20261121000000 } from "../../src/services/inventory/migrations/Migration20261121000000.js";
import { freshDatabase, quietLog } from "../support/harness.js";

const SELECT = `SELECT * FROM "inventory".products WHERE id = $1`;
const ID = "7b0f3c1e-2a4d-4c5e-9f60-1a2b3c4d5e6f";

describe("preparedQuery: a named statement described once per connection", function () {
  this.timeout(60_000);
  let orm: MikroORM<PostgreSqlDriver>;
  let describes = 0;
  const wire = (pg as unknown as { Connection: { prototype: { describe(...a: unknown[]): void } } }).Connection.prototype;
  const original = wire.describe;

  before(async () => {
    // One connection, so that every statement runs where the one before it ran.
    orm = await openServiceDatabase({ url: await freshDatabase(), schema: "inventory", entities: [], migrations: [Migration20261121000000], poolSize: 1, log: quietLog });
    wire.describe = function (this: unknown, ...args: unknown[]) {
      describes++;
      return original.apply(this, args);
    };
    await preparedQuery(
      orm.em,
      "test.insert",
      `INSERT INTO "inventory".products (id, name, description, category, quantity, price_units, price_nanos, currency_code, low_stock_threshold, created_at, updated_at)
       VALUES ($1, 'Stapler', 'for the test', 3, 7, 12, 500000000, 'EUR', 5, $2, $2) RETURNING id`,
      [ID, new Date("2026-11-27T00:00:00Z")],
    );
  });
  after(async () => {
    wire.describe = original;
    await closeServiceDatabase(orm);
  });

  it("gives the same rows, with the same types, without describing the statement again", async () => {
    const before = describes;
    const first = await preparedQuery(orm.em, "test.select", SELECT, [ID]);
    const again = [await preparedQuery(orm.em, "test.select", SELECT, [ID]), await preparedQuery(orm.em, "test.select", SELECT, [ID])];
    expect(describes - before).to.equal(1);
    expect(first).to.have.length(1);
    expect(first[0]).to.include({ id: ID, name: "Stapler", quantity: 7, price_units: "12", currency_code: "EUR" });
    for (const rows of again) expect(rows).to.deep.equal(first);
  });

  it("sends dates, arrays and nulls as pg does on a described statement", async () => {
    const text = "SELECT $1::timestamptz AS t, $2::int[] AS a, $3::text AS n";
    const values = [new Date("2026-11-27T01:02:03.456Z"), [1, 2, 3], null];
    const first = await preparedQuery<{ t: unknown; a: number[]; n: null }>(orm.em, "test.values", text, values);
    const second = await preparedQuery<{ t: unknown; a: number[]; n: null }>(orm.em, "test.values", text, values);
    expect(second).to.deep.equal(first);
    expect(second[0]!.a).to.deep.equal([1, 2, 3]);
    expect(second[0]!.n).to.equal(null);
    expect(new Date(second[0]!.t as string).toISOString()).to.equal("2026-11-27T01:02:03.456Z");
  });

  it("fails a bad value with PostgreSQL's error and keeps the connection usable", async () => {
    await preparedQuery(orm.em, "test.select", SELECT, [ID]);
    const err = await preparedQuery(orm.em, "test.select", SELECT, ["not-a-uuid"]).then(
      () => undefined,
      (e: { code?: string }) => e,
    );
    expect(err?.code).to.equal("22P02");
    expect(await preparedQuery(orm.em, "test.select", SELECT, [ID])).to.have.length(1);
  });

  it("commitWith sends the last statement with its COMMIT; a statement that fails, or cannot be sent, rolls the whole transaction back", async () => {
    const insert = `INSERT INTO "inventory".products (id, name, description, category, quantity, price_units, price_nanos, currency_code, low_stock_threshold, created_at, updated_at)
       VALUES ($1, $2, '', 3, 1, 1, 0, 'EUR', 0, now(), now()) RETURNING name`;
    const ids = ["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002", "00000000-0000-4000-8000-000000000003"];
    const count = async () => Number((await preparedQuery<{ n: string }>(orm.em, "test.count", `SELECT count(*) AS n FROM "inventory".products`, []))[0]!.n);
    // Not inside the transaction that wrote (pool of one: the same connection): no transaction id is assigned yet.
    const idle = async () => (await preparedQuery<{ idle: boolean }>(orm.em, "test.idle", "SELECT pg_current_xact_id_if_assigned() IS NULL AS idle", []))[0]!.idle;
    const before = await count();
    const rows = await sqlTransaction(orm.em, async (tx) => {
      await preparedQuery(tx, "test.insert-named", insert, [ids[0], "first"]);
      return commitWith<{ name: string }>(tx, "test.insert-named", insert, [ids[1], "second"]);
    });
    expect(rows, "the statement's rows").to.deep.equal([{ name: "second" }]);
    expect(await count(), "both rows committed").to.equal(before + 2);
    expect(await idle(), "the connection is out of the transaction").to.equal(true);

    const failure = (work: Promise<unknown>) => work.then(() => undefined, (e: unknown) => e as { code?: string });
    const duplicate = await failure(sqlTransaction(orm.em, async (tx) => {
      await preparedQuery(tx, "test.insert-named", insert, [ids[2], "third"]);
      return commitWith(tx, "test.insert-named", insert, [ids[0], "again"]);
    }));
    expect(duplicate?.code, "PostgreSQL's error").to.equal("23505");
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    const unsendable = await failure(sqlTransaction(orm.em, async (tx) => {
      await preparedQuery(tx, "test.insert-named", insert, [ids[2], "third"]);
      return commitWith(tx, "test.insert-named", insert, [ids[1], circular]);
    }));
    expect(unsendable, "the value's error").to.be.instanceOf(TypeError);
    expect(await count(), "nothing of either transaction committed").to.equal(before + 2);
    expect(await idle(), "the connection is out of the transaction and usable").to.equal(true);
  });

  it("is refused by PostgreSQL, not read with the old description, once the table's columns change", async () => {
    await preparedQuery(orm.em, "test.select", SELECT, [ID]);
    await orm.em.getConnection().execute(`ALTER TABLE "inventory".products ADD COLUMN extra text NOT NULL DEFAULT 'x'`);
    const err = await preparedQuery(orm.em, "test.select", SELECT, [ID]).then(
      () => undefined,
      (e: { code?: string }) => e,
    );
    expect(err?.code).to.equal("0A000"); // cached plan must not change result type
  });
});
