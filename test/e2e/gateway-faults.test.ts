// Faults through the gateway (issue 14): Envoy in front of two real instances, one of them drained,
// frozen or killed under load. Each test prints its figures, so a reader sees the margin.
import net from "node:net";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { expect } from "chai";
import pg from "pg";
import { Category, InventoryService, type Product } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { ReservationService } from "../../gen/agora/reservation/v1/reservation_pb.js";
import type { Cluster, Instance } from "../../scripts/cluster.js";
import { drainDelayMs, PER_TRY_TIMEOUT_MS } from "../../scripts/envoy-config.js";
import { SESSION_TIMEOUTS } from "../../src/platform/db.js";
import { startTestCluster, type TestCluster } from "../support/cluster.js";
import { client, eventually } from "../support/harness.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const product = (name: string) => ({ name, category: Category.OTHER, quantity: 1, unitPrice: { currencyCode: "EUR", units: 1n } });
const codeOf = (err: unknown) => (err === undefined ? "OK" : Code[ConnectError.from(err).code]);

/** Whether something accepts TCP connections on the port. */
const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });

/** Counts results by a key: { "OK": 120, "Unavailable": 2 }. */
function tally(values: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}

/** Lines at level error or fatal an instance wrote after byte `from` of its log. */
function errorLines(instance: Instance, from: number): string[] {
  return instance
    .log()
    .slice(from)
    .split("\n")
    .filter((l) => /"level":"(error|fatal)"/.test(l));
}

describe("e2e: faults through the gateway (drain, freeze, lock holder, kill -9)", function () {
  this.timeout(170_000);
  let testCluster: TestCluster;
  let cluster: Cluster;
  let token: string;
  let db: pg.Client;

  before(async () => {
    testCluster = await startTestCluster("agora-faults-", { LOG_LEVEL: "warn" }, { accessLog: false });
    ({ cluster, adminToken: token } = testCluster);
    db = new pg.Client({ connectionString: testCluster.databaseUrl });
    await db.connect();
  });
  after(async () => {
    await db?.end();
    await testCluster?.stop();
  });

  const gateway = <S extends typeof InventoryService | typeof ReservationService>(service: S): Client<S> => client(service, cluster.gatewayUrl, "grpc", token);
  const address = (i: Instance) => `127.0.0.1:${i.port}`;

  // First: the gateway is seconds old here, the window in which Envoy used to skip health checks for 60 s.
  it("drains an instance on SIGTERM under UpdateProduct load: out of rotation before its listener closes, 0 failed calls, traffic back after a restart", async () => {
    const uptime = ((await (await fetch(`${cluster.adminUrl}/server_info`)).json()) as { uptime_current_epoch: string }).uptime_current_epoch;
    const inv = gateway(InventoryService);
    const products: Product[] = [];
    for (let i = 0; i < 8; i++) products.push((await inv.createProduct({ product: product(`drain-${i}`) })).product!);
    let stop = false;
    let ok = 0;
    const failed: ConnectError[] = [];
    // UpdateProduct is never re-sent after it reached an instance: every call that lands on a closing listener fails.
    const loaders = products.map(async (p) => {
      const c = gateway(InventoryService);
      let etag = p.etag;
      for (let n = 0; !stop; n++) {
        try {
          etag = (await c.updateProduct({ id: p.id, product: { description: `update ${n}` }, updateMask: { paths: ["description"] }, etag })).product!.etag;
          ok++;
        } catch (err) {
          failed.push(ConnectError.from(err));
          etag = (await c.getProduct({ id: p.id })).product!.etag;
        }
      }
    });
    await eventually(() => ok >= 50, "UpdateProduct load to run", 30_000);

    const victim = cluster.instances[0]!;
    const sigterm = Date.now();
    const stopping = victim.stop("SIGTERM");
    let outOfRotation: number | undefined;
    let listenerClosed: number | undefined;
    while (outOfRotation === undefined || listenerClosed === undefined) {
      if (outOfRotation === undefined && !(await cluster.hosts("inventory")).get(address(victim))?.healthy) outOfRotation = Date.now() - sigterm;
      if (listenerClosed === undefined && !(await listening(victim.port))) listenerClosed = Date.now() - sigterm;
      if (Date.now() - sigterm > 30_000) break;
      await sleep(10);
    }
    await stopping;
    const okAtExit = ok;
    await eventually(() => ok >= okAtExit + 50, "load to carry on after the exit", 30_000);
    stop = true;
    await Promise.all(loaders);
    console.log(
      `      drain: gateway up ${uptime}; ${ok} UpdateProduct calls, ${failed.length} failed; ` +
        `out of rotation ${outOfRotation} ms after SIGTERM, listener closed after ${listenerClosed} ms (SHUTDOWN_DELAY_MS ${drainDelayMs(500)})`,
    );
    expect(failed.map((e) => e.message)).to.deep.equal([]);
    expect(outOfRotation, "left the rotation").to.be.a("number");
    expect(outOfRotation!, "out of rotation before the listener closed").to.be.lessThan(listenerClosed!);
    expect([victim.child!.exitCode, victim.child!.signalCode], victim.log().slice(-3000)).to.deep.equal([0, null]);
    // Restarted, it is back in rotation and gets traffic again.
    await victim.up();
    await cluster.allHealthy();
    const before = (await cluster.hosts("inventory")).get(address(victim))!.total;
    await eventually(async () => {
      await inv.getProduct({ id: products[0]!.id });
      return (await cluster.hosts("inventory")).get(address(victim))!.total > before;
    }, "traffic to reach the restarted instance", 30_000);
  });

  it(`freezes an instance for longer than the per-try timeout under creates with and without request_id: nothing stored twice`, async () => {
    const hung = cluster.instances[1]!;
    const logFrom = cluster.instances.map((i) => i.log().length);
    const retriesBefore = await cluster.stats("upstream_rq_retry");
    type Outcome = { kind: "product" | "resource"; keyed: boolean; name: string; code: string };
    const outcomes: Outcome[] = [];
    let stop = false;
    const loaders = Array.from({ length: 12 }, async (_, c) => {
      const kind = c % 2 === 0 ? "product" : "resource";
      const keyed = c % 4 < 2;
      const inv = gateway(InventoryService);
      const res = gateway(ReservationService);
      for (let i = 0; !stop; i++) {
        const name = `freeze-${c}-${i}`;
        const requestId = keyed ? name : "";
        const call =
          kind === "product"
            ? inv.createProduct({ product: product(name), requestId })
            : res.createResource({ resource: { name, type: "room", capacity: 2, active: true }, requestId });
        outcomes.push({ kind, keyed, name, code: await call.then(() => "OK", codeOf) });
      }
    });
    await eventually(() => outcomes.length >= 50, "create load to run", 30_000);
    const freezeMs = 2 * PER_TRY_TIMEOUT_MS;
    hung.pause();
    await sleep(freezeMs);
    hung.resume();
    const atResume = outcomes.length;
    await eventually(() => outcomes.length >= atResume + 50, "load to carry on after the freeze", 30_000);
    stop = true;
    await Promise.all(loaders);

    const stored = new Map<string, number>();
    for (const table of ["inventory.products", "reservation.resources"]) {
      const { rows } = await db.query<{ name: string; n: number }>(`SELECT name, count(*)::int AS n FROM ${table} WHERE name LIKE 'freeze-%' GROUP BY name`);
      for (const r of rows) stored.set(r.name, r.n);
    }
    const duplicates = [...stored].filter(([, n]) => n > 1).map(([name]) => name);
    const okNotOnce = outcomes.filter((o) => o.code === "OK" && stored.get(o.name) !== 1).map((o) => o.name);
    const retriesAfter = await cluster.stats("upstream_rq_retry");
    const retried = (cl: string) => (retriesAfter.get(`cluster.${cl}.upstream_rq_retry`) ?? 0) - (retriesBefore.get(`cluster.${cl}.upstream_rq_retry`) ?? 0);
    for (const kind of ["product", "resource"] as const) {
      for (const keyed of [true, false]) {
        const mine = outcomes.filter((o) => o.kind === kind && o.keyed === keyed);
        console.log(`      freeze ${freezeMs} ms: create ${kind} ${keyed ? "with" : "without"} request_id: ${JSON.stringify(tally(mine.map((o) => o.code)))}`);
      }
    }
    console.log(`      freeze: ${outcomes.length} creates, ${duplicates.length} stored twice, gateway retries inventory ${retried("inventory")} reservation ${retried("reservation")}`);
    expect(duplicates, "stored twice").to.deep.equal([]);
    expect(okNotOnce, "answered OK but not stored exactly once").to.deep.equal([]);
    expect(outcomes.filter((o) => o.code === "AlreadyExists").map((o) => o.name), "ALREADY_EXISTS for a caller's only call").to.deep.equal([]);
    for (const keyed of [true, false]) expect(outcomes.some((o) => o.keyed === keyed && o.code === "OK")).to.equal(true);
    // Calls the gateway gave up on (per-try timeout) end on the frozen instance as CANCELED, not as internal errors.
    expect(cluster.instances.flatMap((i, n) => errorLines(i, logFrom[n]!)), "error-level log lines").to.deep.equal([]);
    await cluster.allHealthy();
  });

  /**
   * Parks `call` on `holder` until its statement waits for `table`, which this test holds in `mode`, then freezes
   * the holder and lets the statement go on: returns the waiting session's pid and the call's answer to come.
   */
  async function parkAndFreeze(holder: Instance, table: string, mode: string, call: () => Promise<unknown>): Promise<{ pid: number; answer: Promise<string> }> {
    await db.query("BEGIN");
    await db.query(`LOCK TABLE ${table} IN ${mode} MODE`);
    const answer = call().then(() => "OK", codeOf);
    let pid = 0;
    try {
      await eventually(async () => {
        const { rows } = await db.query<{ pid: number }>(
          // By the lock it waits for, not by its query text: a statement already prepared on that connection takes
          // its locks at Bind, before pg_stat_activity shows its text (seen as "BEGIN;" in 2 of 6 runs).
          `SELECT pid FROM pg_locks WHERE NOT granted AND relation = $1::regclass AND pid <> pg_backend_pid()`,
          [table],
        );
        pid = rows[0]?.pid ?? 0;
        return pid !== 0;
      }, `the holder's statement to wait for ${table}`, 10_000);
      holder.pause();
    } finally {
      await db.query("ROLLBACK");
    }
    return { pid, answer };
  }

  it("freezes an instance in the middle of a CreateProduct: its statement commits without it, holding no lock", async () => {
    const [holder, other] = cluster.instances as [Instance, Instance];
    const direct = (i: Instance) => client(InventoryService, `http://127.0.0.1:${i.port}`, "grpc", token);
    // The holder's one statement (the row, then the event-log lock and the event) waits for the log's table.
    const { pid, answer } = await parkAndFreeze(holder, `"inventory".events`, "SHARE ROW EXCLUSIVE", () =>
      direct(holder).createProduct({ product: product("frozen-creator") }),
    );
    const writes = await Promise.all(
      Array.from({ length: 8 }, (_, i) => direct(other).createProduct({ product: product(`unblocked-${i}`) }).then(() => "OK", codeOf)),
    );
    // PostgreSQL finished the statement and committed it on its own: the session is not left in a transaction.
    await eventually(async () => (await db.query("SELECT state FROM pg_stat_activity WHERE pid = $1", [pid])).rows[0]?.state === "idle", "the holder's session to be idle");
    holder.resume();
    const { rows: stored } = await db.query<{ name: string }>(`SELECT name FROM "inventory".products WHERE name = 'frozen-creator' OR name LIKE 'unblocked-%'`);
    console.log(`      creator frozen mid-statement: ${JSON.stringify(tally(writes))} through the other instance; its session idle, its caller got ${await answer}`);
    expect(writes).to.deep.equal(writes.map(() => "OK"));
    expect(await answer).to.equal("OK");
    expect(stored.map((r) => r.name)).to.include("frozen-creator");
    await cluster.allHealthy();
  });

  it("freezes an instance while it holds a product's lock: updates through the other instance finish within the bound, nothing half-applied", async () => {
    const [holder, other] = cluster.instances as [Instance, Instance];
    const direct = (i: Instance) => client(InventoryService, `http://127.0.0.1:${i.port}`, "grpc", token);
    const { product: p } = await direct(other).createProduct({ product: product("lock-target") });
    const setDescription = (c: Client<typeof InventoryService>, text: string) =>
      c.updateProduct({ id: p!.id, product: { description: text }, updateMask: { paths: ["description"] } });
    // The holder's UpdateProduct locks the row, then its process freezes before it sends the write and the COMMIT.
    const { pid, answer } = await parkAndFreeze(holder, `"inventory".products`, "EXCLUSIVE", () => setDescription(direct(holder), "by the frozen holder"));
    await eventually(
      async () => (await db.query("SELECT state FROM pg_stat_activity WHERE pid = $1", [pid])).rows[0]?.state === "idle in transaction",
      "the holder to sit in its transaction with the row locked",
    );
    const started = Date.now();
    const writes = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const t = Date.now();
        const err = await setDescription(direct(other), `update ${i}`).then(() => undefined, (e: unknown) => ConnectError.from(e));
        return { err, ms: Date.now() - t };
      }),
    );
    const allDone = Date.now() - started;
    const { rows: session } = await db.query("SELECT state FROM pg_stat_activity WHERE pid = $1", [pid]);
    holder.resume();
    const holderAnswer = await answer;
    const { product: after } = await direct(other).getProduct({ id: p!.id });
    console.log(
      `      lock holder frozen: ${writes.filter((w) => !w.err).length}/${writes.length} updates through the other instance OK, ` +
        `slowest ${Math.max(...writes.map((w) => w.ms))} ms, all done in ${allDone} ms ` +
        `(idle_in_transaction_session_timeout ${SESSION_TIMEOUTS.idle_in_transaction_session_timeout} ms, lock_timeout ${SESSION_TIMEOUTS.lock_timeout} ms); ` +
        `holder's session ${session.length ? "still open" : "ended by PostgreSQL"}; holder's caller got ${holderAnswer}`,
    );
    // PostgreSQL cut the hung holder off (idle-in-transaction timeout) long before the writers' lock_timeout backstop.
    expect(writes.map((w) => w.err?.message ?? "OK")).to.deep.equal(writes.map(() => "OK"));
    expect(Math.max(...writes.map((w) => w.ms)), "slowest write (ms)").to.be.lessThan(SESSION_TIMEOUTS.lock_timeout);
    expect(session, "the frozen holder's session was ended").to.deep.equal([]);
    // The holder's own update was rolled back with its session: not half-applied, and its caller told so.
    expect(holderAnswer).to.equal("Unavailable");
    expect(after!.description).to.match(/^update \d$/);
    expect(after!.etag).to.equal('"9"');
    await cluster.allHealthy();
  });

  it("survives kill -9 of one instance under load: every call started after the kill succeeds", async () => {
    const inv = gateway(InventoryService);
    const { product: p } = await inv.createProduct({ product: product("kill-target") });
    const calls: { start: number; end: number; code: string }[] = [];
    let stop = false;
    const loaders = Array.from({ length: 8 }, async () => {
      const c = gateway(InventoryService);
      while (!stop) {
        const start = Date.now();
        const code = await c.getProduct({ id: p!.id }, { timeoutMs: 5000 }).then(() => "OK", codeOf);
        calls.push({ start, end: Date.now(), code });
      }
    });
    await eventually(() => calls.length >= 100, "GetProduct load to run", 60_000);
    const victim = cluster.instances[0]!;
    const killedAt = Date.now();
    victim.crash();
    await eventually(async () => !(await cluster.hosts("inventory")).get(address(victim))?.healthy, "Envoy to take the dead instance out", 30_000);
    const atOut = calls.length;
    await eventually(() => calls.length >= atOut + 200, "load to carry on after the kill", 60_000);
    stop = true;
    await Promise.all(loaders);
    const after = calls.filter((c) => c.start > killedAt);
    const failed = calls.filter((c) => c.code !== "OK");
    const inFlight = calls.filter((c) => c.start <= killedAt && c.end >= killedAt);
    const rate = (calls.length - failed.length) / calls.length;
    console.log(
      `      kill -9: ${calls.length} GetProduct calls, ${(rate * 100).toFixed(2)}% OK; started after the kill: ${after.length}, ` +
        `${JSON.stringify(tally(after.map((c) => c.code)))}; in flight at the kill: ${inFlight.length}, ${JSON.stringify(tally(inFlight.map((c) => c.code)))}`,
    );
    expect(after.filter((c) => c.code !== "OK"), "calls started after the kill that failed").to.deep.equal([]);
    // Only a call whose answer the killed process had begun to send can fail: Envoy cannot re-send it.
    expect(failed.filter((c) => !inFlight.includes(c)), "failed calls that were not in flight at the kill").to.deep.equal([]);
    expect((await cluster.stats("cluster.inventory.")).get("cluster.inventory.outlier_detection.ejections_enforced_total"), "outlier ejections").to.be.greaterThan(0);
  });
});
