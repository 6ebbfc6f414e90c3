import pg from "pg";
import pino from "pino";
import { startEmbeddedPostgres } from "../../src/platform/db.js";
const db = await startEmbeddedPostgres("/tmp/occdb", 0, pino({ level: "silent" }));
const c = new pg.Client(db.adminUrl); await c.connect();
await c.query(`CREATE EXTENSION IF NOT EXISTS btree_gist`);
await c.query(`DROP TABLE IF EXISTS r; CREATE TABLE r (id serial primary key, res int, s int, e int, status text, during int4range GENERATED ALWAYS AS (int4range(s,e)) STORED,
  CONSTRAINT no_overlap EXCLUDE USING gist (res WITH =, during WITH &&) WHERE (status IN ('pending','confirmed')))`);
await c.query(`INSERT INTO r (res,s,e,status) VALUES (1,0,10,'confirmed'), (1,20,30,'cancelled')`);
console.log((await c.query(`INSERT INTO r (res,s,e,status) VALUES (1,5,15,'confirmed') ON CONFLICT DO NOTHING RETURNING id`)).rowCount, "expect 0");
console.log((await c.query(`INSERT INTO r (res,s,e,status) VALUES (1,20,30,'confirmed') ON CONFLICT DO NOTHING RETURNING id`)).rowCount, "expect 1");
// concurrency: 16 clients inserting random overlapping ranges, no lock
const clients = await Promise.all(Array.from({ length: 16 }, async () => { const x = new pg.Client(db.adminUrl); await x.connect(); return x; }));
let ok = 0, skipped = 0, errors: Record<string, number> = {};
const t0 = Date.now();
await Promise.all(clients.map(async (x) => { for (let i = 0; i < 400; i++) { const s = 1000 + i * 5 + Math.floor(Math.random() * 4); try {
  const r = await x.query({ name: "ins", text: `INSERT INTO r (res,s,e,status) VALUES (2,$1,$2,'confirmed') ON CONFLICT DO NOTHING RETURNING id`, values: [s, s + 1 + Math.floor(Math.random() * 3)] });
  if (r.rowCount) ok++; else skipped++; } catch (e: any) { errors[e.code] = (errors[e.code] ?? 0) + 1; } } }));
console.log({ ok, skipped, errors, ms: Date.now() - t0 });
console.log((await c.query(`SELECT count(*) FROM r a JOIN r b ON a.res=b.res AND a.id<b.id AND a.during && b.during WHERE a.status IN ('pending','confirmed') AND b.status IN ('pending','confirmed')`)).rows, "overlaps");
console.log((await c.query(`SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`)).rows);
for (const x of clients) await x.end(); await c.end(); await db.stop();
