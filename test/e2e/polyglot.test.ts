// Clients in other languages, generated from proto/ by scripts/generate-clients.sh the way the
// README tells users to, running against two instances behind a real Envoy (gRPC through the gateway).
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { REPO_ROOT, startCluster, type Cluster } from "../../scripts/cluster.js";
import { ADMIN, freshDatabase } from "../support/harness.js";

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to its end; never throws for a non-zero exit (the test asserts on it). */
function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      { cwd: options.cwd ?? REPO_ROOT, env: options.env ?? process.env, timeout: options.timeoutMs ?? 120_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : null) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

function describeRun(r: Run): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

async function mustRun(command: string, args: string[], options: { cwd?: string } = {}): Promise<Run> {
  const r = await run(command, args, { ...options, timeoutMs: 240_000 });
  if (r.code !== 0) throw new Error(`${command} ${args.join(" ")} failed: ${describeRun(r)}`);
  return r;
}

/** A digest of every file under `dir` (names and contents). */
function treeDigest(dir: string): string {
  const hash = createHash("sha256");
  const walk = (d: string) => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, entry.name);
      if (entry.isDirectory()) walk(p);
      else hash.update(path.relative(dir, p)).update("\0").update(fs.readFileSync(p)).update("\0");
    }
  };
  walk(dir);
  return hash.digest("hex");
}

const GO_DIR = path.join(REPO_ROOT, "examples", "go");
const PY_DIR = path.join(REPO_ROOT, "examples", "python");
const GENERATE = path.join(REPO_ROOT, "scripts", "generate-clients.sh");

describe("e2e: Go and Python clients generated from the protos, through Envoy", function () {
  this.timeout(300_000);
  let cluster: Cluster | undefined;
  let tmp: string;
  let goBinary: string;

  const exampleEnv = (): NodeJS.ProcessEnv => ({
    ...process.env,
    AGORA_SERVER: cluster!.gatewayUrl,
    AGORA_ADMIN_USERNAME: ADMIN.username,
    AGORA_ADMIN_PASSWORD: ADMIN.password,
  });
  const upstreamRequests = async (service: string) =>
    (await cluster!.stats(`cluster.${service}.upstream_rq_total`)).get(`cluster.${service}.upstream_rq_total`) ?? 0;

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "agora-polyglot-"));
    fs.chmodSync(tmp, 0o755);
    goBinary = path.join(tmp, "agora-go-example");
    // The generators and the Go build run while the cluster starts.
    const [clients, started] = await Promise.allSettled([
      (async () => {
        await mustRun("bash", [GENERATE]);
        await mustRun("go", ["build", "-o", goBinary, "."], { cwd: GO_DIR });
      })(),
      startCluster({
        dataDir: path.join(tmp, "cluster"),
        databaseUrl: await freshDatabase(),
        gatewayPort: 0,
        adminPort: 0,
        instances: 2,
        env: { ADMIN_USERNAME: ADMIN.username, ADMIN_PASSWORD: ADMIN.password },
        gateway: { healthCheckIntervalMs: 500 },
      }),
    ]);
    if (started.status === "fulfilled") cluster = started.value;
    if (clients.status === "rejected") throw clients.reason;
    if (started.status === "rejected") throw started.reason;
  });

  after(async () => {
    await cluster?.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("generates Go and Python stubs, identical on a second run", async () => {
    for (const file of [
      "examples/go/gen/agora/chat/v1/chatv1connect/chat.connect.go",
      "examples/go/gen/agora/inventory/v1/inventory.pb.go",
      "examples/go/gen/buf/validate/validate.pb.go",
      "examples/go/gen/google/type/money.pb.go",
      "examples/python/gen/agora/files/v1/files_pb2_grpc.py",
      "examples/python/gen/agora/reservation/v1/reservation_pb2.py",
      "examples/python/gen/buf/validate/validate_pb2.py",
    ]) {
      expect(fs.existsSync(path.join(REPO_ROOT, file)), file).to.equal(true);
    }
    // Python takes google/rpc and google/type from googleapis-common-protos (with grpcio-status), as Python programs do.
    expect(fs.existsSync(path.join(PY_DIR, "gen/google")), "examples/python/gen/google").to.equal(false);
    const before = [treeDigest(path.join(GO_DIR, "gen")), treeDigest(path.join(PY_DIR, "gen"))];
    await mustRun("bash", [GENERATE]);
    expect([treeDigest(path.join(GO_DIR, "gen")), treeDigest(path.join(PY_DIR, "gen"))]).to.deep.equal(before);
  });

  it("runs the Go example over gRPC: sign-in, inventory, two users talking over bidi Chat streams", async () => {
    const chatBefore = await upstreamRequests("chat");
    const r = await run(goBinary, ["-protocol", "grpc"], { env: exampleEnv() });
    expect(r.code, describeRun(r)).to.equal(0);
    const out = r.stdout;
    expect(out).to.match(/^ok {2}identity: signed in as admin over grpc at http:\/\/127\.0\.0\.1:\d+$/m);
    expect(out).to.match(/^ok {2}identity: registered and signed in alice-[0-9a-f]{8} and bob-[0-9a-f]{8}$/m);
    expect(out).to.match(/^ok {2}inventory: created "Go example stapler [0-9a-f]{8}" \([0-9a-f-]{36}\); a retry with the same request_id returned the same product$/m);
    expect(out).to.match(/^ok {2}inventory: alice-\w+ can read the product but not create one \(permission_denied\)$/m);
    expect(out).to.match(/^ok {2}inventory: updated description and price with the etag; the stale etag was refused \(aborted\)$/m);
    expect(out).to.match(/^ok {2}inventory: listed \d+ office products page by page, ours once$/m);
    expect(out).to.match(/^ok {2}inventory: sold 8 \(now 2, low stock\), the retry was not applied twice, overselling was refused with available_quantity=2$/m);
    expect(out).to.match(/^ok {2}inventory: deleted the product; reading it now gives not_found$/m);
    expect(out).to.match(/^ok {2}chat: bob-(\w+) saw alice-\1's message #\d+ "hello bob-\1, this is alice-\1"$/m);
    expect(out).to.match(/^ok {2}chat: alice-(\w+) saw bob-\1's message #\d+ "hi alice-\1, bob-\1 here"$/m);
    expect(out).to.match(/^ok {2}chat: both streams closed cleanly$/m);
    expect(out.trimEnd().split("\n").at(-1)).to.equal("go example: all checks passed");
    expect(r.stderr).to.equal("");
    // The Chat streams and room calls went through Envoy's chat cluster.
    expect(await upstreamRequests("chat")).to.be.greaterThan(chatBefore + 2);
  });

  it("runs the same Go client over the Connect protocol and gRPC-Web", async () => {
    for (const protocol of ["connect", "grpcweb"]) {
      const r = await run(goBinary, ["-protocol", protocol], { env: exampleEnv() });
      expect(r.code, `${protocol}: ${describeRun(r)}`).to.equal(0);
      expect(r.stdout, protocol).to.contain(`signed in as admin over ${protocol}`).and.contain("go example: all checks passed");
    }
  });

  it("runs the Python example over gRPC: reservation notifications streamed, file versions uploaded and downloaded", async () => {
    const filesBefore = await upstreamRequests("files");
    const r = await run("python3", [path.join(PY_DIR, "agora_example.py")], {
      env: { ...exampleEnv(), PYTHONPATH: path.join(REPO_ROOT, ".tools", "python") },
    });
    expect(r.code, describeRun(r)).to.equal(0);
    const out = r.stdout;
    expect(out).to.match(/^ok {2}identity: registered and signed in ana-[0-9a-f]{8} and ben-[0-9a-f]{8}$/m);
    expect(out).to.match(/^ok {2}reservation: admin created the room 'Python example room [0-9a-f]{8}' \(30-minute slots\)$/m);
    expect(out).to.match(/^ok {2}reservation: the room is free on .* for 4 people$/m);
    expect(out).to.match(/^ok {2}reservation: ana-\w+ booked it \([0-9a-f-]{36}, CONFIRMED\)$/m);
    expect(out).to.match(/^ok {2}reservation: ana-\w+ has the CONFIRMED notification; watching for more after cursor \d+$/m);
    expect(out).to.match(/^ok {2}reservation: ben-\w+ could not book the same slot \(ALREADY_EXISTS; ErrorInfo conflict_start \S+\)$/m);
    expect(out).to.match(/^ok {2}reservation: WatchNotifications delivered CANCELLED to ana-\w+: 'your reservation was cancelled: plans changed'$/m);
    expect(out).to.match(/^ok {2}reservation: ben-\w+ was told the slot is free again \(RESOURCE_AVAILABLE\)$/m);
    expect(out).to.match(/^ok {2}files: uploaded python-example\/[0-9a-f]{8}\/data\.bin version 1 \(2621440 bytes in 3 chunks\), sha256 [0-9a-f]{16}\.\.\. matches$/m);
    expect(out).to.match(/^ok {2}files: downloaded version 1, sha256 verified$/m);
    expect(out).to.match(/^ok {2}files: uploaded version 2 on top of version 1; an upload still based on version 1 was refused \(ABORTED\)$/m);
    expect(out).to.match(/^ok {2}files: versions \[2, 1\]; latest download is version 2, version 1 resumed at 1 MiB matches, sha256 verified$/m);
    expect(out.trimEnd().split("\n").at(-1)).to.equal("python example: all checks passed");
    expect(r.stderr).to.equal("");
    expect(await upstreamRequests("files")).to.be.greaterThan(filesBefore + 5);
  });

  it("exits non-zero with a clear message when a step fails (wrong administrator password)", async () => {
    const env = { ...exampleEnv(), AGORA_ADMIN_PASSWORD: "not-the-admin-password", PYTHONPATH: path.join(REPO_ROOT, ".tools", "python") };
    const go = await run(goBinary, [], { env });
    expect(go.code, describeRun(go)).to.equal(1);
    expect(go.stderr).to.match(/^FAILED: login as admin: unauthenticated: /m);
    const py = await run("python3", [path.join(PY_DIR, "agora_example.py")], { env });
    expect(py.code, describeRun(py)).to.equal(1);
    expect(py.stderr).to.match(/^FAILED: login as admin: UNAUTHENTICATED: /m);
  });
});
