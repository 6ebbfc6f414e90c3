// Real server processes, started like a user does: start-up errors, persistence
// across restarts, two instances sharing one database, and graceful shutdown.
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { expect } from "chai";
import {
  Category,
  InventoryService,
  ProductEventType,
  type WatchProductsRequestSchema,
} from "../../gen/agora/inventory/v1/inventory_pb.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { IdentityService, Role } from "../../gen/agora/identity/v1/identity_pb.js";
import { client, eventually, freshDatabase, login } from "../support/harness.js";
import { StreamRecorder } from "../support/stream-recorder.js";
import {
  adminToken,
  cleanupProcesses,
  REPO_ROOT,
  killAll,
  runToExit,
  startProcess,
  tempDataDir,
  type ListeningProcess,
} from "../support/processes.js";

const STACK_FRAME = /^\s+at /;

function newProduct(name: string, quantity = 10) {
  return {
    product: {
      name,
      description: `${name} for the e2e tests`,
      category: Category.OFFICE,
      quantity,
      unitPrice: { currencyCode: "EUR", units: 3n, nanos: 250_000_000 },
      lowStockThreshold: 2,
    },
  };
}

/** Reads a WatchProducts stream in the background and keeps what arrived. */
const watchProducts = (inventory: Client<typeof InventoryService>, req: MessageInitShape<typeof WatchProductsRequestSchema> = {}) =>
  new StreamRecorder((signal) => inventory.watchProducts(req, { signal }));
type ProductWatcher = ReturnType<typeof watchProducts>;

describe("e2e: server processes", function () {
  this.timeout(180_000);

  afterEach(async () => {
    await killAll();
  });

  after(async () => {
    await cleanupProcesses();
  });

  describe("start-up errors are one clear line on stderr", () => {
    async function expectOneLineError(env: Record<string, string>, pattern: RegExp): Promise<string> {
      const { exit, stderr, proc } = await runToExit(env);
      const lines = proc.stderrLines();
      expect(exit.code, `exit code\n${proc.describe()}`).to.be.a("number").and.not.equal(0);
      expect(lines, `stderr lines\n${stderr}`).to.have.length(1);
      expect(lines[0]).to.match(/^agora: /);
      expect(lines[0]).to.match(pattern);
      expect(stderr.split("\n").filter((l) => STACK_FRAME.test(l)), "stack frames on stderr").to.deep.equal([]);
      expect(proc.stdoutLines.filter((l) => STACK_FRAME.test(l)), "stack frames on stdout").to.deep.equal([]);
      return lines[0]!;
    }

    it("PORT=abc", async () => {
      await expectOneLineError({ PORT: "abc" }, /PORT must be a whole number, got "abc"/);
    });

    it("PORT=70000", async () => {
      await expectOneLineError({ PORT: "70000" }, /PORT must be between 0 and 65535, got 70000/);
    });

    it("SERVICES=nope", async () => {
      const line = await expectOneLineError({ SERVICES: "nope" }, /SERVICES names unknown service\(s\) nope; known: /);
      expect(line).to.contain("inventory");
    });

    it("SERVICES=inventory without the identity service or JWKS_URL", async () => {
      await expectOneLineError({ SERVICES: "inventory" }, /without the identity service in SERVICES, set JWKS_URL/);
    });

    it("an unreachable DATABASE_URL (and the password is not printed)", async () => {
      const line = await expectOneLineError(
        { DATABASE_URL: "postgres://u:p@127.0.0.1:1/db" },
        /cannot reach the database at postgres:\/\/u:\*\*\*@127\.0\.0\.1:1\/db/,
      );
      expect(line).not.to.contain("u:p@");
    });

    it("a port already in use", async () => {
      const blocker = net.createServer();
      await new Promise<void>((resolve, reject) => {
        blocker.once("error", reject);
        blocker.listen(0, "127.0.0.1", () => resolve());
      });
      try {
        const port = (blocker.address() as net.AddressInfo).port;
        const databaseUrl = await freshDatabase();
        await expectOneLineError(
          { PORT: String(port), DATABASE_URL: databaseUrl },
          new RegExp(`port ${port} is already in use \\(set PORT to another port\\)`),
        );
      } finally {
        await new Promise<void>((resolve) => blocker.close(() => resolve()));
      }
    });
  });

  describe("persistence with the embedded PostgreSQL (DATA_DIR)", () => {
    let dataDir: string;

    before(() => {
      // Mode 0755: PostgreSQL runs as the `postgres` user when we are root and must enter it.
      dataDir = tempDataDir("agora-e2e-data-");
    });

    it("keeps products across a SIGTERM and a restart on the same DATA_DIR", async () => {
      const env = { DATA_DIR: dataDir };
      const first = await startProcess(env, 150_000);
      expect(fs.existsSync(path.join(dataDir, "postgres", "PG_VERSION")), "cluster created in DATA_DIR/postgres").to.equal(true);
      const token = await adminToken(first.url);
      const inventory = client(InventoryService, first.url, "connect", token);
      const created = [];
      for (const name of ["Stapler", "Paper clips", "Desk lamp"]) {
        created.push((await inventory.createProduct(newProduct(name, name.length))).product!);
      }
      await inventory.adjustStock({ productId: created[0]!.id, delta: 4, reason: "delivery", requestId: "r-1" });

      const exit = await first.proc.stop();
      expect(exit, first.proc.describe()).to.deep.equal({ code: 0, signal: null });
      expect(first.proc.logs().some((l) => l.msg === "stopped"), "a \"stopped\" log line").to.equal(true);

      const second = await startProcess(env, 150_000);
      // The cluster is reused, not created again.
      expect(second.proc.logs().some((l) => /creating the embedded PostgreSQL cluster/.test(String(l.msg)))).to.equal(false);
      // The signing key lives in DATA_DIR/keys too: a token from before the restart is still good.
      const again = client(InventoryService, second.url, "connect", token);
      const listed = (await again.listProducts({ pageSize: 100 })).products;
      expect(listed.map((p) => p.id).sort()).to.deep.equal(created.map((p) => p.id).sort());
      for (const p of created) {
        const back = (await again.getProduct({ id: p.id })).product!;
        expect(back.name).to.equal(p.name);
        expect(back.description).to.equal(p.description);
        expect(back.unitPrice?.units).to.equal(3n);
        expect(back.unitPrice?.nanos).to.equal(250_000_000);
        expect(back.quantity).to.equal(p.id === created[0]!.id ? p.quantity + 4 : p.quantity);
      }
      const movements = await again.listStockMovements({ productId: created[0]!.id });
      expect(movements.movements.map((m) => [m.delta, m.requestId])).to.deep.equal([[4, "r-1"]]);

      expect((await adminToken(second.url)).length, "the administrator can still sign in").to.be.greaterThan(0);

      // `npm run admin -- create-admin` reaches the running server's embedded database.
      const cli = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn(process.execPath, ["--import", "tsx", "src/cli/admin.ts", "create-admin", "boss"], {
          cwd: REPO_ROOT,
          env: { PATH: process.env.PATH, DATA_DIR: dataDir, AGORA_ADMIN_PASSWORD: "boss password 123" },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        child.stdout.on("data", (d) => (out += d));
        child.stderr.on("data", (d) => (out += d));
        child.on("exit", (code) => resolve({ code, out }));
      });
      expect(cli, cli.out).to.include({ code: 0 });
      expect(cli.out).to.contain("admin boss created");
      const boss = await login(second.url, "boss", "boss password 123");
      const me = await client(IdentityService, second.url, "grpc", boss.accessToken).getMe({});
      expect(me.user!.role).to.equal(Role.ADMIN);

      const exit2 = await second.proc.stop();
      expect(exit2, second.proc.describe()).to.deep.equal({ code: 0, signal: null });
    });
  });

  describe("two processes on one database", () => {
    let a: ListeningProcess;
    let b: ListeningProcess;
    const watchers: ProductWatcher[] = [];

    before(async () => {
      const databaseUrl = await freshDatabase();
      // A shared DATA_DIR gives both instances the same token signing key (DATA_DIR/keys).
      const env = {
        DATABASE_URL: databaseUrl,
        DATA_DIR: tempDataDir(),
        HEARTBEAT_INTERVAL_MS: "200",
        SHUTDOWN_GRACE_MS: "3000",
      };
      [a, b] = await Promise.all([startProcess(env), startProcess(env)]);
    });

    after(async () => {
      await Promise.all(watchers.map((w) => w.close()));
      await killAll();
    });

    it("a watcher on A sees changes made through B, in order, and resumes from a cursor", async () => {
      // Signed in through B, used on both: one key, one user table.
      const token = await adminToken(b.url);
      const onA = client(InventoryService, a.url, "grpc", token);
      const onB = client(InventoryService, b.url, "grpc", token);
      const live = watchProducts(onA);
      watchers.push(live);
      await live.ready(15_000);

      const created = (await onB.createProduct(newProduct("Shared widget", 10))).product!;
      const adjusted = await onB.adjustStock({ productId: created.id, delta: 5, reason: "delivery", requestId: "adj-1" });
      expect(adjusted.product?.quantity).to.equal(15);

      await eventually(() => live.items.length >= 2 || live.ended, "two events on A's watcher", 15_000);
      expect(live.error, "watcher error").to.equal(undefined);
      const [first, second] = live.items;
      expect(live.items.map((e) => ProductEventType[e.type])).to.deep.equal(["CREATED", "STOCK_ADJUSTED"]);
      expect(first!.product?.id).to.equal(created.id);
      expect(second!.product?.id).to.equal(created.id);
      expect(second!.product?.quantity).to.equal(15);
      expect(second!.movement?.delta).to.equal(5);
      expect(BigInt(second!.cursor) > BigInt(first!.cursor), `cursors ${first!.cursor} < ${second!.cursor}`).to.equal(true);

      const resumed = watchProducts(onA, { afterCursor: first!.cursor });
      watchers.push(resumed);
      await eventually(() => resumed.items.some((e) => e.cursor === second!.cursor) || resumed.ended, "the resumed event");
      // A heartbeat after the catch-up means the backlog is exhausted and the stream is quiet.
      const heartbeatsAfter = resumed.heartbeats;
      await eventually(() => resumed.heartbeats > heartbeatsAfter || resumed.ended, "a heartbeat after the catch-up");
      expect(resumed.error, "resumed watcher error").to.equal(undefined);
      expect(resumed.items.map((e) => [ProductEventType[e.type], e.cursor, e.product?.id])).to.deep.equal([
        ["STOCK_ADJUSTED", second!.cursor, created.id],
      ]);
    });
  });

  describe("graceful shutdown", () => {
    let server: ListeningProcess;
    let watcher: ProductWatcher | undefined;

    before(async () => {
      server = await startProcess({ DATABASE_URL: await freshDatabase(), HEARTBEAT_INTERVAL_MS: "200", SHUTDOWN_GRACE_MS: "5000" });
    });

    after(async () => {
      await watcher?.close();
      await killAll();
    });

    it("SIGTERM: the health Watch turns NOT_SERVING, WatchProducts ends UNAVAILABLE, the process exits 0", async () => {
      const health = client(Health, server.url, "grpc");
      const inventory = client(InventoryService, server.url, "grpc", await adminToken(server.url));
      watcher = watchProducts(inventory);
      await watcher.ready(15_000);

      const statuses: ServingStatus[] = [];
      let healthError: unknown;
      let healthEnded = false;
      const ac = new AbortController();
      const healthDone = (async () => {
        try {
          for await (const res of health.watch({ service: "" }, { signal: ac.signal })) statuses.push(res.status);
        } catch (err) {
          healthError = err;
        } finally {
          healthEnded = true;
        }
      })();
      try {
        await eventually(() => statuses.length > 0 || healthEnded, "the first health status");
        expect(statuses, String(healthError)).to.deep.equal([ServingStatus.SERVING]);

        server.proc.signal("SIGTERM");

        await eventually(() => healthEnded, "the health Watch to end", 20_000);
        expect(statuses.map((s) => ServingStatus[s])).to.deep.equal(["SERVING", "NOT_SERVING"]);
        // HealthRegistry.close() ends Watch streams normally (status OK), after the queued NOT_SERVING.
        expect(healthError, "the health Watch ends without an error").to.equal(undefined);

        await eventually(() => watcher!.ended, "WatchProducts to end", 20_000);
        expect(watcher!.error, "WatchProducts ends with an error").to.be.instanceOf(ConnectError);
        expect(Code[(watcher!.error as ConnectError).code]).to.equal("Unavailable");

        const exit = await server.proc.exited;
        expect(exit, server.proc.describe()).to.deep.equal({ code: 0, signal: null });
        const messages = server.proc.logs().map((l) => l.msg);
        expect(messages).to.include.members(["stop requested", "shutting down: draining", "stopped"]);
        expect(messages, "no forced close").not.to.include("grace period over: closing the remaining connections");
      } finally {
        ac.abort();
        await healthDone;
      }
    });
  });
});
