import { spawn } from "node:child_process";
import { createCipheriv, createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { expect } from "chai";
import pg from "pg";
import {
  FileEventType,
  FileService,
  Role,
  type File,
  type FileEvent,
  type FileVersion,
  type UploadMetadataSchema,
  type UploadRequestSchema,
} from "../../gen/agora/files/v1/files_pb.js";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import {
  client,
  eventually,
  freshDatabase,
  login,
  PROTOCOLS,
  rpcError,
  signUp,
  startTestServer,
  tableReads,
  type ProtocolName,
  type TestServer,
} from "../support/harness.js";
import { StreamRecorder } from "../support/stream-recorder.js";

type Files = Client<typeof FileService>;
type Meta = Omit<MessageInitShape<typeof UploadMetadataSchema>, "$typeName">;
type Part = MessageInitShape<typeof UploadRequestSchema>;

const KiB = 1024;
const MiB = 1024 * KiB;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

/** Settings shared by every server here: fast sweeps and heartbeats, tokens that survive clock jumps. */
const ENV = {
  ACCESS_TOKEN_TTL_SECONDS: "86400",
  HEARTBEAT_INTERVAL_MS: "200",
  FILES_SWEEP_INTERVAL_MS: "100",
};

// ---------------------------------------------------------------------------------------------
// Helpers

/** Temp roots made here (removed at the end). */
const roots: string[] = [];

/**
 * A fresh DATA_DIR nested three levels below its own temp root, so that a name like
 * "../../etc/passwd" resolved against <DATA_DIR>/blobs would still land inside the root, where we look.
 */
function newDataDir(): { root: string; dataDir: string } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "agora-files-"));
  fs.chmodSync(root, 0o755);
  roots.push(root);
  const dataDir = path.join(root, "x", "y", "data");
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o755 });
  return { root, dataDir };
}

async function startFiles(env: Record<string, string>, clock: ManualClock, dataDir: string, databaseUrl?: string): Promise<TestServer> {
  return startTestServer({ ...ENV, DATA_DIR: dataDir, ...env }, databaseUrl, undefined, clock);
}

interface User {
  name: string;
  id: string;
  token: string;
  files: Files;
}

async function newUser(server: TestServer, name: string, protocol: ProtocolName = "grpc"): Promise<User> {
  const token = await signUp(server.url, name);
  const id = (await client(IdentityService, server.url, "grpc", token).getMe({})).user!.id;
  return { name, id, token, files: client(FileService, server.url, protocol, token) };
}

/** After a clock jump past the token lifetime: a new token for the same user. */
async function relogin(server: TestServer, user: User): Promise<User> {
  const token = (await login(server.url, user.name, `password-of-${user.name}`)).accessToken;
  return { ...user, token, files: client(FileService, server.url, "grpc", token) };
}

const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

const byPath = (p: string, baseVersion = 0n, extra: Partial<Meta> = {}): Meta => ({ target: { case: "path", value: p }, baseVersion, ...extra });
const byId = (id: string, baseVersion: bigint, extra: Partial<Meta> = {}): Meta => ({ target: { case: "fileId", value: id }, baseVersion, ...extra });

const metaPart = (m: Meta): Part => ({ part: { case: "metadata", value: m } });
const chunkPart = (b: Uint8Array): Part => ({ part: { case: "chunk", value: b } });

async function* partsOf(m: Meta, data: Uint8Array, chunkSize = 256 * KiB): AsyncGenerator<Part> {
  yield metaPart(m);
  for (let o = 0; o < data.length; o += chunkSize) yield chunkPart(data.subarray(o, Math.min(o + chunkSize, data.length)));
}

async function* listOf(parts: Part[]): AsyncGenerator<Part> {
  for (const p of parts) yield p;
}

function upload(c: Files, m: Meta, data: Uint8Array, chunkSize?: number) {
  return c.upload(partsOf(m, data, chunkSize));
}

/** Downloads a whole version (small files only); checks the stream's shape. */
async function download(c: Files, fileId: string, version = 0n, offset = 0n): Promise<{ version: FileVersion; data: Buffer }> {
  let head: FileVersion | undefined;
  const chunks: Buffer[] = [];
  let first = true;
  for await (const msg of c.download({ fileId, version, offset })) {
    if (first) {
      expect(msg.part.case, "the first message of Download").to.equal("version");
      head = msg.part.value as FileVersion;
      first = false;
      continue;
    }
    expect(msg.part.case, "messages after the first").to.equal("chunk");
    chunks.push(Buffer.from(msg.part.value as Uint8Array));
  }
  expect(head, "a version message").to.not.equal(undefined);
  return { version: head!, data: Buffer.concat(chunks) };
}

function violations(err: ConnectError) {
  return err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
}

function expectInvalid(err: ConnectError, field?: string): void {
  expect(err.code, err.message).to.equal(Code.InvalidArgument);
  if (field) expect(violations(err).map((v) => v.field), err.message).to.include(field);
}

function errorMetadata(err: ConnectError): Record<string, string> {
  return err.findDetails(ErrorInfoSchema)[0]?.metadata ?? {};
}

function expectCode(err: ConnectError, code: Code, what: string): void {
  expect(Code[err.code], `${what}: ${err.message}`).to.equal(Code[code]);
}

/** Every non-directory entry below `dir`, relative, with "/" separators. */
function walk(dir: string, prefix = ""): string[] {
  if (!fs.existsSync(dir)) return [];
  const out: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...walk(path.join(dir, entry.name), rel));
    else out.push(rel);
  }
  return out;
}

const blobRoot = (dataDir: string) => path.join(dataDir, "blobs", "sha256");
const tmpRoot = (dataDir: string) => path.join(dataDir, "blobs", "tmp");

/** hex -> relative paths of blob files with that name. */
function blobFiles(dataDir: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const rel of walk(blobRoot(dataDir))) {
    const hex = path.posix.basename(rel);
    out.set(hex, [...(out.get(hex) ?? []), rel]);
  }
  return out;
}

function blobPath(dataDir: string, hex: string): string {
  return path.join(blobRoot(dataDir), hex.slice(0, 2), hex.slice(2, 4), hex);
}

async function allFiles(c: Files, query: { prefix?: string; includeDeleted?: boolean; pageSize?: number } = {}): Promise<File[]> {
  const out: File[] = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await c.listFiles({ pageSize: 1000, ...query, pageToken });
    out.push(...page.files);
    pageToken = page.nextPageToken;
  } while (pageToken && ++pages < 1000);
  return out;
}

async function allVersions(c: Files, fileId: string, pageSize = 1000): Promise<FileVersion[]> {
  const out: FileVersion[] = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await c.listVersions({ fileId, pageSize, pageToken });
    out.push(...page.versions);
    pageToken = page.nextPageToken;
  } while (pageToken && ++pages < 1000);
  return out;
}

/** The sha256 of every version of every file these users can see (deleted ones included). */
async function referencedShas(users: Files[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (const c of users) {
    for (const f of await allFiles(c, { includeDeleted: true })) {
      for (const v of await allVersions(c, f.id)) out.add(v.sha256);
    }
  }
  return out;
}

/** Blobs on disk that no version references, and temp files; both must settle at none. */
async function expectNoOrphans(dataDir: string, users: Files[], what: string, timeoutMs = 10_000): Promise<void> {
  let last = "";
  try {
    await eventually(
      async () => {
        const refs = await referencedShas(users);
        const orphans = [...blobFiles(dataDir).keys()].filter((h) => !refs.has(h));
        const tmp = walk(tmpRoot(dataDir));
        const missing = [...refs].filter((h) => !fs.existsSync(blobPath(dataDir, h)));
        last = `orphan blobs ${JSON.stringify(orphans)}, temp files ${JSON.stringify(tmp)}, missing blobs ${JSON.stringify(missing)}`;
        return orphans.length === 0 && tmp.length === 0 && missing.length === 0;
      },
      what,
      timeoutMs,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}: ${last}`);
  }
}

/** file: URL of a file in the repository's node_modules (the child script lives outside the repository). */
function moduleUrl(rel: string): string {
  const file = path.resolve("node_modules", rel);
  if (!fs.existsSync(file)) throw new Error(`missing ${file}`);
  return pathToFileURL(file).href;
}

/** True once `call` fails with NOT_FOUND; false while it succeeds (other errors propagate). */
async function isNotFound(call: Promise<unknown>): Promise<boolean> {
  try {
    await call;
    return false;
  } catch (err) {
    const e = ConnectError.from(err);
    if (e.code === Code.NotFound) return true;
    throw e;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A deterministic pseudo-random byte stream (AES-CTR keystream), produced chunk by chunk. */
function* keystream(seed: string, size: number, chunkSize: number): Generator<Buffer> {
  const key = createHash("sha256").update(seed).digest().subarray(0, 16);
  const cipher = createCipheriv("aes-128-ctr", key, Buffer.alloc(16));
  const zeros = Buffer.alloc(chunkSize);
  for (let sent = 0; sent < size; sent += chunkSize) {
    const n = Math.min(chunkSize, size - sent);
    yield cipher.update(n === chunkSize ? zeros : zeros.subarray(0, n));
  }
}

/**
 * A clock that runs with real time plus whatever it was advanced by: for servers whose blob GC compares
 * file mtimes (real time) with the injected clock, so that GC with grace 0 really collects fresh files.
 */
class LiveClock extends ManualClock {
  private offset = 0;
  override now(): Date {
    return new Date(Date.now() + this.offset);
  }
  override advance(ms: number): void {
    this.offset += ms;
  }
}

/** Reads a WatchFiles stream in the background. */
const watch = (c: Files, afterCursor = "") => new StreamRecorder((signal) => c.watchFiles({ afterCursor }, { signal }));
const line = (e: FileEvent) => `${FileEventType[e.type]} ${e.path} v${e.version?.version ?? ""}`;
const summary = (events: FileEvent[]) => events.map(line);

// ---------------------------------------------------------------------------------------------

describe("files service", function () {
  this.timeout(120_000);

  after(() => {
    for (const r of roots) fs.rmSync(r, { recursive: true, force: true });
  });

  describe("on one instance", () => {
    const clock = new ManualClock();
    let server: TestServer;
    let root: string;
    let dataDir: string;
    let alice: User;
    let bob: User;
    let carol: User;
    let dave: User;
    let erin: User;

    before(async () => {
      ({ root, dataDir } = newDataDir());
      server = await startFiles({}, clock, dataDir);
      alice = await newUser(server, "alice");
      bob = await newUser(server, "bob");
      carol = await newUser(server, "carol");
      dave = await newUser(server, "dave");
      erin = await newUser(server, "erin");
    });
    after(() => server?.shutdown());

    for (const protocol of PROTOCOLS) {
      it(`uploads versions, lists them newest first, downloads each byte for byte, restores, deletes and undeletes (unary over ${protocol})`, async () => {
        const p = client(FileService, server.url, protocol, alice.token);
        const datas = [randomBytes(300 * KiB), randomBytes(1536 * KiB + 7), Buffer.from(`small third version over ${protocol}`)];
        const filePath = `life/${protocol}/report.bin`;
        const first = await upload(alice.files, byPath(filePath, 0n, { comment: "first" }), datas[0]!);
        expect(first.version!.version).to.equal(1n);
        expect(first.file!.path).to.equal(filePath);
        expect(first.file!.ownerId).to.equal(alice.id);
        expect(first.file!.role).to.equal(Role.OWNER);
        const id = first.file!.id;
        expect(id).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
        // By path (v2) and by id (v3), each on the latest version.
        const second = await upload(alice.files, byPath(filePath, 1n, { comment: "second" }), datas[1]!, 1 * MiB);
        expect(second.file!.id).to.equal(id);
        expect(second.version!.version).to.equal(2n);
        const third = await upload(alice.files, byId(id, 2n, { comment: "third" }), datas[2]!);
        expect(third.version!.version).to.equal(3n);
        expect(third.file!.latestVersion).to.equal(3n);
        expect(third.file!.size).to.equal(BigInt(datas[2]!.length));
        expect(third.file!.sha256).to.equal(sha(datas[2]!));

        const versions = await allVersions(p, id);
        expect(versions.map((v) => v.version)).to.deep.equal([3n, 2n, 1n]);
        expect(versions.map((v) => v.comment)).to.deep.equal(["third", "second", "first"]);
        for (const v of versions) {
          const data = datas[Number(v.version) - 1]!;
          expect(v.fileId).to.equal(id);
          expect(v.size).to.equal(BigInt(data.length));
          expect(v.sha256).to.equal(sha(data));
          expect(v.authorId).to.equal(alice.id);
          expect(v.authorName).to.equal("alice");
          expect(v.restoredFrom).to.equal(0n);
          const got = await download(p, id, v.version);
          expect(got.version.version).to.equal(v.version);
          expect(got.version.sha256).to.equal(v.sha256);
          expect(sha(got.data), `content of version ${v.version}`).to.equal(v.sha256);
          expect(got.data.equals(data)).to.equal(true);
        }
        // Paging of versions.
        expect((await allVersions(p, id, 2)).map((v) => v.version)).to.deep.equal([3n, 2n, 1n]);
        // Version 0 is the latest; offsets resume; past the end is OUT_OF_RANGE.
        expect((await download(p, id, 0n)).version.version).to.equal(3n);
        expect((await download(p, id, 2n, 1000n)).data.equals(datas[1]!.subarray(1000))).to.equal(true);
        const atEnd = await download(p, id, 1n, BigInt(datas[0]!.length));
        expect(atEnd.data.length).to.equal(0);
        expectCode(await rpcError(download(p, id, 1n, BigInt(datas[0]!.length + 1))), Code.OutOfRange, "offset past the end");
        expectCode(await rpcError(download(p, id, 9n)), Code.NotFound, "a version that does not exist");

        // Restore version 1: a new version 4 with v1's content.
        const restored = await p.restoreVersion({ fileId: id, version: 1n, baseVersion: 3n, comment: "back to one" });
        expect(restored.version!.version).to.equal(4n);
        expect(restored.version!.restoredFrom).to.equal(1n);
        expect(restored.version!.sha256).to.equal(sha(datas[0]!));
        expect(restored.file!.latestVersion).to.equal(4n);
        expect(restored.file!.size).to.equal(BigInt(datas[0]!.length));
        const v4 = await download(p, id, 0n);
        expect(v4.version.version).to.equal(4n);
        expect(v4.data.equals(datas[0]!)).to.equal(true);
        const stale = await rpcError(p.restoreVersion({ fileId: id, version: 2n, baseVersion: 3n }));
        expectCode(stale, Code.Aborted, "restore on a stale base");
        expect(errorMetadata(stale).latest_version).to.equal("4");
        expect((await allVersions(p, id)).map((v) => v.version)).to.deep.equal([4n, 3n, 2n, 1n]);

        // Soft delete and undelete.
        const deleted = await p.deleteFile({ fileId: id });
        expect(deleted.file!.deleted).to.equal(true);
        expect(deleted.file!.deleteTime).to.not.equal(undefined);
        const seen = (await p.getFile({ fileId: id })).file!;
        expect(seen.deleted).to.equal(true);
        expect(timestampDate(seen.deleteTime!).getTime()).to.be.closeTo(clock.now().getTime(), 5000);
        expect((await allFiles(p, { prefix: `life/${protocol}/` })).map((f) => f.path)).to.deep.equal([]);
        expect((await allFiles(p, { prefix: `life/${protocol}/`, includeDeleted: true })).map((f) => f.path)).to.deep.equal([filePath]);
        const back = await p.undeleteFile({ fileId: id });
        expect(back.file!.deleted).to.equal(false);
        expect(back.file!.latestVersion).to.equal(4n);
        expect((await allFiles(p, { prefix: `life/${protocol}/` })).map((f) => f.id)).to.deep.equal([id]);
        expect((await download(p, id)).data.equals(datas[0]!)).to.equal(true);
        // GetFile agrees over the three protocols.
        const views = await Promise.all(PROTOCOLS.map(async (q) => (await client(FileService, server.url, q, alice.token).getFile({ fileId: id })).file));
        expect(views[1]).to.deep.equal(views[0]);
        expect(views[2]).to.deep.equal(views[0]);
      });
    }

    it("refuses malformed upload streams, stale bases and wrong checksums, storing nothing", async () => {
      const data = randomBytes(64 * KiB);
      // Chunk before metadata, a second metadata, an empty stream.
      expectInvalid(await rpcError(alice.files.upload(listOf([chunkPart(data), metaPart(byPath("err/first-chunk"))]))));
      expectInvalid(await rpcError(alice.files.upload(listOf([metaPart(byPath("err/two-meta")), chunkPart(data), metaPart(byPath("err/two-meta"))]))));
      expectInvalid(await rpcError(alice.files.upload(listOf([]))));
      // A chunk over 1 MiB.
      expectInvalid(await rpcError(alice.files.upload(listOf([metaPart(byPath("err/big-chunk")), chunkPart(randomBytes(MiB + 1))]))));
      // Checksum mismatch on a new path: no file.
      const wrong = await rpcError(upload(alice.files, byPath("err/checksum", 0n, { expectedSha256: sha(Buffer.from("something else")) }), data));
      expectInvalid(wrong);
      expect((await allFiles(alice.files, { prefix: "err/", includeDeleted: true })).map((f) => f.path)).to.deep.equal([]);

      const { file } = await upload(alice.files, byPath("err/checksum", 0n, { expectedSha256: sha(data) }), data);
      expect(file!.latestVersion).to.equal(1n);
      // Checksum mismatch on an existing file: no new version.
      expectInvalid(await rpcError(upload(alice.files, byId(file!.id, 1n, { expectedSha256: "0".repeat(64) }), randomBytes(100))));
      // Creating at a taken path; stale and future bases.
      expectCode(await rpcError(upload(alice.files, byPath("err/checksum", 0n), data)), Code.Aborted, "base 0 at an existing path");
      await upload(alice.files, byId(file!.id, 1n), randomBytes(10));
      for (const base of [1n, 5n]) {
        const stale = await rpcError(upload(alice.files, byId(file!.id, base), randomBytes(10)));
        expectCode(stale, Code.Aborted, `base ${base} when the latest is 2`);
        expect(errorMetadata(stale).latest_version, "ErrorInfo latest_version").to.equal("2");
        const staleByPath = await rpcError(upload(alice.files, byPath("err/checksum", base), randomBytes(10)));
        expectCode(staleByPath, Code.Aborted, `base ${base} by path`);
        expect(errorMetadata(staleByPath).latest_version).to.equal("2");
      }
      expect((await allVersions(alice.files, file!.id)).map((v) => v.version)).to.deep.equal([2n, 1n]);
      // Unknown file id.
      expectCode(await rpcError(upload(alice.files, byId("00000000-0000-4000-8000-000000000000", 1n), data)), Code.NotFound, "unknown file id");
      // Empty content is a valid version.
      const empty = await upload(alice.files, byPath("err/empty"), new Uint8Array(0));
      expect(empty.version!.size).to.equal(0n);
      expect(empty.version!.sha256).to.equal(sha(new Uint8Array(0)));
      expect((await download(alice.files, empty.file!.id)).data.length).to.equal(0);
      // Paths live in each owner's space: bob's "err/checksum" is another file.
      const bobs = await upload(bob.files, byPath("err/checksum"), data);
      expect(bobs.file!.id).to.not.equal(file!.id);
      expect(bobs.file!.ownerId).to.equal(bob.id);
    });

    it("lets a deleted file's path be used again, and does not let two live files share a path", async () => {
      const a = await upload(alice.files, byPath("reuse/doc.txt"), Buffer.from("old"));
      await alice.files.deleteFile({ fileId: a.file!.id });
      const b = await upload(alice.files, byPath("reuse/doc.txt", 0n), Buffer.from("new"));
      expect(b.file!.id).to.not.equal(a.file!.id);
      expect(b.version!.version).to.equal(1n);
      const undelete = await rpcError(alice.files.undeleteFile({ fileId: a.file!.id }));
      expect(undelete.code, "undeleting onto a path now taken must fail").to.be.oneOf([Code.AlreadyExists, Code.Aborted, Code.FailedPrecondition]);
      expect((await allFiles(alice.files, { prefix: "reuse/" })).map((f) => f.id)).to.deep.equal([b.file!.id]);
    });

    it("lists own and shared files by path with a prefix filter and pages, deleted ones only on request", async () => {
      const frank = await newUser(server, "frank");
      const mk = async (u: User, p: string) => (await upload(u.files, byPath(p), Buffer.from(p))).file!;
      const a = await mk(alice, "list/a");
      const b = await mk(alice, "list/b");
      const cd = await mk(alice, "list/c/d");
      const e = await mk(alice, "list/e");
      await mk(alice, "other/x");
      const shared = await mk(frank, "list/f-shared");
      await mk(frank, "list/g-not-shared");
      await frank.files.shareFile({ fileId: shared.id, userId: alice.id, role: Role.READER });
      await alice.files.deleteFile({ fileId: e.id });

      const listed = await allFiles(alice.files, { prefix: "list/" });
      expect(listed.map((f) => f.path)).to.deep.equal(["list/a", "list/b", "list/c/d", "list/f-shared"]);
      expect(listed.map((f) => f.role)).to.deep.equal([Role.OWNER, Role.OWNER, Role.OWNER, Role.READER]);
      expect(listed[3]!.ownerId).to.equal(frank.id);
      expect(listed.map((f) => f.id)).to.deep.equal([a.id, b.id, cd.id, shared.id]);
      expect((await allFiles(alice.files, { prefix: "list/", includeDeleted: true })).map((f) => f.path)).to.deep.equal([
        "list/a",
        "list/b",
        "list/c/d",
        "list/e",
        "list/f-shared",
      ]);
      expect((await allFiles(alice.files, { prefix: "list/c" })).map((f) => f.path)).to.deep.equal(["list/c/d"]);
      // Pages of two, without gaps or repeats.
      const pages: string[][] = [];
      let pageToken = "";
      do {
        const page = await alice.files.listFiles({ prefix: "list/", pageSize: 2, pageToken });
        pages.push(page.files.map((f) => f.path));
        pageToken = page.nextPageToken;
      } while (pageToken && pages.length < 10);
      expect(pages.flat()).to.deep.equal(["list/a", "list/b", "list/c/d", "list/f-shared"]);
      expect(pages.length).to.be.within(2, 3);
      expect(pages[0]).to.have.length(2);
      // Others do not see alice's files.
      expect((await allFiles(frank.files, { prefix: "list/" })).map((f) => f.path)).to.deep.equal(["list/f-shared", "list/g-not-shared"]);
    });

    it("runs two uploads on the same base at once: exactly one wins, the other is ABORTED (and the same for a new path)", async () => {
      const { file } = await upload(alice.files, byPath("race/shared.txt"), Buffer.from("v1"));
      await alice.files.shareFile({ fileId: file!.id, userId: dave.id, role: Role.EDITOR });
      const editors = [alice.files, client(FileService, server.url, "grpc", dave.token)];

      /** Both uploads send metadata and data, then end their streams together; the winner's content must be what is stored. */
      async function race(racers: Files[], metaFor: () => Meta): Promise<{ winner: string; failed: ConnectError[]; wins: number }> {
        let open!: () => void;
        const gate = new Promise<void>((r) => (open = r));
        let ready = 0;
        const datas = racers.map(() => randomBytes(200 * KiB));
        async function* parts(i: number): AsyncGenerator<Part> {
          yield metaPart(metaFor());
          yield chunkPart(datas[i]!);
          ready++;
          await gate;
        }
        const calls = racers.map((c, i) => c.upload(parts(i)));
        await eventually(() => ready === racers.length, "both uploads to have sent their data");
        await sleep(50);
        open();
        const results = await Promise.allSettled(calls);
        const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => ConnectError.from(r.reason));
        const won = results.findIndex((r) => r.status === "fulfilled");
        return { winner: won >= 0 ? sha(datas[won]!) : "", failed, wins: results.length - failed.length };
      }

      for (let round = 1; round <= 5; round++) {
        const { winner, failed, wins } = await race(editors, () => byId(file!.id, BigInt(round)));
        expect(wins, `round ${round}: ${failed.map((e) => e.message).join("; ")}`).to.equal(1);
        expect(failed.map((e) => Code[e.code])).to.deep.equal(["Aborted"]);
        const versions = await allVersions(alice.files, file!.id);
        expect(versions.map((v) => v.version)).to.deep.equal(Array.from({ length: round + 1 }, (_, i) => BigInt(round + 1 - i)));
        expect(versions[0]!.sha256, "the stored content is the winner's").to.equal(winner);
      }
      // Creating the same new path twice at once (one user: paths are per owner).
      const twice = [alice.files, client(FileService, server.url, "grpc", alice.token)];
      for (let round = 1; round <= 3; round++) {
        const p = `race/new-${round}.txt`;
        const { winner, failed, wins } = await race(twice, () => byPath(p, 0n));
        expect(wins, `creating ${p}: ${failed.map((e) => e.message).join("; ")}`).to.equal(1);
        expect(failed.map((e) => Code[e.code])).to.deep.equal(["Aborted"]);
        const created = await allFiles(alice.files, { prefix: p, includeDeleted: true });
        expect(created.map((f) => [f.latestVersion, f.sha256])).to.deep.equal([[1n, winner]]);
      }
    });

    it("locks: contention, holder named in errors, token only for the holder, refresh, expiry by the clock, plain and forced unlock", async () => {
      const { file } = await upload(alice.files, byPath("locks/plan.txt"), Buffer.from("plan v1"));
      const id = file!.id;
      await alice.files.shareFile({ fileId: id, userId: dave.id, role: Role.EDITOR });
      await alice.files.shareFile({ fileId: id, userId: erin.id, role: Role.EDITOR });

      const { lock } = await dave.files.lockFile({ fileId: id, ttlSeconds: 120 });
      expect(lock!.holderId).to.equal(dave.id);
      expect(lock!.holderName).to.equal("dave");
      expect(lock!.token).to.not.equal("");
      expect(timestampDate(lock!.expireTime!).getTime()).to.be.closeTo(clock.now().getTime() + 120_000, 2000);
      const ownerView = (await alice.files.getFile({ fileId: id })).file!;
      expect(ownerView.lock?.holderId).to.equal(dave.id);
      expect(ownerView.lock?.token, "the token is only shown to the holder").to.equal("");
      expect((await dave.files.getFile({ fileId: id })).file!.lock?.token, "the holder sees the token").to.equal(lock!.token);
      expect((await erin.files.getFile({ fileId: id })).file!.lock?.token ?? "").to.equal("");
      expect((await allFiles(erin.files, { prefix: "locks/" }))[0]!.lock?.token ?? "").to.equal("");

      // Contention: another editor, and the owner, can neither lock nor upload.
      const contended = await rpcError(erin.files.lockFile({ fileId: id, ttlSeconds: 60 }));
      expectCode(contended, Code.FailedPrecondition, "locking a locked file");
      expect(errorMetadata(contended).lock_holder_id).to.equal(dave.id);
      for (const u of [erin, alice]) {
        const blocked = await rpcError(upload(u.files, byId(id, 1n), Buffer.from(`${u.name} was here`)));
        expectCode(blocked, Code.FailedPrecondition, `${u.name} uploading to a file dave holds`);
        const md = errorMetadata(blocked);
        expect(md.lock_holder_id).to.equal(dave.id);
        expect(md.lock_holder_name).to.equal("dave");
        expect(Math.abs(Date.parse(md.lock_expire_time ?? "") - timestampDate(lock!.expireTime!).getTime()), `lock_expire_time ${md.lock_expire_time}`).to.be.below(1001);
        expect(md.lock_token, "the holder's token must not leak").to.equal(undefined);
      }
      const restoreBlocked = await rpcError(erin.files.restoreVersion({ fileId: id, version: 1n, baseVersion: 1n }));
      expectCode(restoreBlocked, Code.FailedPrecondition, "restoring a file dave holds");
      // The holder uploads with or without the token, not with a wrong one.
      await upload(dave.files, byId(id, 1n, { lockToken: lock!.token }), Buffer.from("dave v2"));
      await upload(dave.files, byId(id, 2n), Buffer.from("dave v3"));
      const wrongToken = await rpcError(upload(dave.files, byId(id, 3n, { lockToken: "not-the-token" }), Buffer.from("dave v4?")));
      expectCode(wrongToken, Code.FailedPrecondition, "the holder uploading with a wrong token");
      expect((await allVersions(alice.files, id)).map((v) => v.version)).to.deep.equal([3n, 2n, 1n]);

      // Refresh needs the token.
      expectCode(await rpcError(dave.files.refreshLock({ fileId: id, token: "wrong", ttlSeconds: 300 })), Code.FailedPrecondition, "refresh with a wrong token");
      expectCode(await rpcError(erin.files.refreshLock({ fileId: id, token: "wrong", ttlSeconds: 300 })), Code.FailedPrecondition, "refresh by a non-holder");
      clock.advance(60_000);
      const refreshed = (await dave.files.refreshLock({ fileId: id, token: lock!.token, ttlSeconds: 300 })).lock!;
      expect(timestampDate(refreshed.expireTime!).getTime()).to.be.closeTo(clock.now().getTime() + 300_000, 2000);
      // Past the original expiry (120 s) but within the refreshed one: still held.
      clock.advance(90_000);
      expectCode(await rpcError(erin.files.lockFile({ fileId: id })), Code.FailedPrecondition, "locking after a refresh");

      // Expiry by the clock: erin can lock and upload; dave's token is worthless.
      clock.advance(300_000);
      expect((await alice.files.getFile({ fileId: id })).file!.lock, "an expired lock is not shown").to.equal(undefined);
      const erinLock = (await erin.files.lockFile({ fileId: id, ttlSeconds: 60 })).lock!;
      expect(erinLock.holderId).to.equal(erin.id);
      expect(erinLock.token).to.not.equal(lock!.token);
      await upload(erin.files, byId(id, 3n, { lockToken: erinLock.token }), Buffer.from("erin v4"));
      expectCode(await rpcError(dave.files.refreshLock({ fileId: id, token: lock!.token })), Code.FailedPrecondition, "refreshing an expired lock");
      const daveBlocked = await rpcError(upload(dave.files, byId(id, 4n), Buffer.from("dave v5?")));
      expectCode(daveBlocked, Code.FailedPrecondition, "dave uploading after erin took the lock");
      expect(errorMetadata(daveBlocked).lock_holder_id).to.equal(erin.id);
      // Unlock: not by a non-holder's token, yes by the holder's.
      expectCode(await rpcError(dave.files.unlockFile({ fileId: id, token: lock!.token })), Code.FailedPrecondition, "unlocking with a stale token");
      await erin.files.unlockFile({ fileId: id, token: erinLock.token });
      expect((await alice.files.getFile({ fileId: id })).file!.lock).to.equal(undefined);

      // Forced unlock: an editor who is not the owner may not; the owner and an admin may.
      const again = (await dave.files.lockFile({ fileId: id, ttlSeconds: 600 })).lock!;
      expectCode(await rpcError(erin.files.unlockFile({ fileId: id, force: true })), Code.PermissionDenied, "force unlock by an editor");
      expect((await alice.files.getFile({ fileId: id })).file!.lock?.holderId).to.equal(dave.id);
      await alice.files.unlockFile({ fileId: id, force: true });
      expect((await alice.files.getFile({ fileId: id })).file!.lock).to.equal(undefined);
      expectCode(await rpcError(dave.files.refreshLock({ fileId: id, token: again.token })), Code.FailedPrecondition, "refresh after a forced unlock");
      await dave.files.lockFile({ fileId: id, ttlSeconds: 600 });
      await client(FileService, server.url, "grpc", server.adminToken).unlockFile({ fileId: id, force: true });
      expect((await alice.files.getFile({ fileId: id })).file!.lock).to.equal(undefined);
      // Unlocked: erin uploads freely.
      await upload(erin.files, byId(id, 4n), Buffer.from("erin v5"));
      expect((await alice.files.getFile({ fileId: id })).file!.latestVersion).to.equal(5n);
    });

    it("streams a 200 MB file up and down intact, and resumes an interrupted download from its offset", async function () {
      this.timeout(180_000);
      const size = 200 * MiB;
      const seed = "big-file";
      const up = createHash("sha256");
      let peakRss = 0;
      const baseRss = process.memoryUsage().rss;
      const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 50);
      try {
        async function* parts(): AsyncGenerator<Part> {
          yield metaPart(byPath("big/200mb.bin"));
          for (const chunk of keystream(seed, size, MiB)) {
            up.update(chunk);
            yield chunkPart(chunk);
          }
        }
        const { file, version } = await alice.files.upload(parts());
        const expected = up.digest("hex");
        expect(version!.size).to.equal(BigInt(size));
        expect(version!.sha256).to.equal(expected);
        expect(file!.sha256).to.equal(expected);

        // Full download, hashed while streaming.
        const down = createHash("sha256");
        let got = 0;
        for await (const msg of alice.files.download({ fileId: file!.id })) {
          if (msg.part.case === "chunk") {
            down.update(msg.part.value);
            got += msg.part.value.length;
          }
        }
        expect(got).to.equal(size);
        expect(down.digest("hex")).to.equal(expected);

        // Interrupted after ~50 MB, then resumed from what arrived.
        const resumed = createHash("sha256");
        let received = 0;
        const abort = new AbortController();
        const stopped = await rpcError(
          (async () => {
            for await (const msg of alice.files.download({ fileId: file!.id, version: 1n }, { signal: abort.signal })) {
              if (msg.part.case === "chunk") {
                resumed.update(msg.part.value);
                received += msg.part.value.length;
                if (received >= 50 * MiB) abort.abort();
              }
            }
          })(),
        );
        expect(stopped.code).to.equal(Code.Canceled);
        expect(received).to.be.within(50 * MiB, size - 1);
        let head: FileVersion | undefined;
        for await (const msg of alice.files.download({ fileId: file!.id, version: 1n, offset: BigInt(received) })) {
          if (msg.part.case === "version") head = msg.part.value;
          else if (msg.part.case === "chunk") {
            resumed.update(msg.part.value);
            received += msg.part.value.length;
          }
        }
        expect(head?.sha256).to.equal(expected);
        expect(received).to.equal(size);
        expect(resumed.digest("hex")).to.equal(expected);
        // The blob on disk is the content, named by its hash.
        expect(fs.statSync(blobPath(dataDir, expected)).size).to.equal(size);
      } finally {
        clearInterval(sampler);
      }
      if (process.env.FILES_TEST_VERBOSE) console.log(`RSS growth during 200 MB up/download: ${Math.round((peakRss - baseRss) / MiB)} MiB`);
      // The whole file must never be held in memory (the server runs in this process).
      expect(peakRss - baseRss, `RSS grew by ${Math.round((peakRss - baseRss) / MiB)} MiB`).to.be.below(120 * MiB);
    });

    it("resumes a unary chunked upload after an interruption and commits it", async () => {
      const data = randomBytes(3 * MiB + 12345);
      const piece = 512 * KiB;
      const begin = await alice.files.beginUpload({ metadata: byPath("unary/resume.bin", 0n, { comment: "unary", expectedSha256: sha(data) }) });
      expect(begin.uploadId).to.match(/^[0-9a-f-]{36}$/);
      expect(timestampDate(begin.expireTime!).getTime()).to.be.closeTo(clock.now().getTime() + 60 * MINUTE, 5000);
      let received = 0n;
      for (let o = 0; o < 4 * piece; o += piece) {
        received = (await alice.files.appendChunk({ uploadId: begin.uploadId, offset: BigInt(o), data: data.subarray(o, o + piece) })).received;
        expect(received).to.equal(BigInt(o + piece));
      }
      // "Interruption": a new client over another protocol asks where it stands.
      const resumed = client(FileService, server.url, "grpcweb", alice.token);
      const state = await resumed.getUpload({ uploadId: begin.uploadId });
      expect(state.received).to.equal(BigInt(4 * piece));
      // A repeat of a received range is acknowledged without change.
      const repeat = await resumed.appendChunk({ uploadId: begin.uploadId, offset: BigInt(piece), data: data.subarray(piece, 2 * piece) });
      expect(repeat.received).to.equal(BigInt(4 * piece));
      // A gap is refused with the received count.
      const gap = await rpcError(resumed.appendChunk({ uploadId: begin.uploadId, offset: BigInt(5 * piece), data: data.subarray(5 * piece, 6 * piece) }));
      expect(gap.code, gap.message).to.be.oneOf([Code.FailedPrecondition, Code.OutOfRange]);
      expect(`${gap.message} ${JSON.stringify(errorMetadata(gap))}`).to.include(String(4 * piece));
      expect((await resumed.getUpload({ uploadId: begin.uploadId })).received).to.equal(BigInt(4 * piece));
      // Other users cannot see or touch it.
      expectCode(await rpcError(bob.files.getUpload({ uploadId: begin.uploadId })), Code.NotFound, "another user's GetUpload");
      expectCode(
        await rpcError(bob.files.appendChunk({ uploadId: begin.uploadId, offset: BigInt(4 * piece), data: data.subarray(4 * piece, 5 * piece) })),
        Code.NotFound,
        "another user's AppendChunk",
      );
      expectCode(await rpcError(bob.files.commitUpload({ uploadId: begin.uploadId })), Code.NotFound, "another user's CommitUpload");
      expectCode(await rpcError(alice.files.getUpload({ uploadId: "00000000-0000-4000-8000-000000000000" })), Code.NotFound, "an unknown upload");
      // Continue and commit.
      for (let o = 4 * piece; o < data.length; o += piece) {
        received = (await resumed.appendChunk({ uploadId: begin.uploadId, offset: BigInt(o), data: data.subarray(o, o + piece) })).received;
      }
      expect(received).to.equal(BigInt(data.length));
      const committed = await resumed.commitUpload({ uploadId: begin.uploadId });
      expect(committed.version!.version).to.equal(1n);
      expect(committed.version!.sha256).to.equal(sha(data));
      expect(committed.version!.comment).to.equal("unary");
      expect(committed.file!.path).to.equal("unary/resume.bin");
      const got = await download(alice.files, committed.file!.id);
      expect(got.data.equals(data)).to.equal(true);
      // Committing again creates nothing more.
      await rpcError(resumed.commitUpload({ uploadId: begin.uploadId })).catch(() => undefined);
      expect((await allVersions(alice.files, committed.file!.id)).map((v) => v.version)).to.deep.equal([1n]);

      // A unary upload whose base went stale meanwhile is ABORTED at commit; a checksum mismatch stores nothing.
      const next = await alice.files.beginUpload({ metadata: byId(committed.file!.id, 1n) });
      await alice.files.appendChunk({ uploadId: next.uploadId, offset: 0n, data: Buffer.from("unary v2") });
      await upload(alice.files, byId(committed.file!.id, 1n), Buffer.from("streamed v2"));
      const staleCommit = await rpcError(alice.files.commitUpload({ uploadId: next.uploadId }));
      expectCode(staleCommit, Code.Aborted, "commit on a stale base");
      expect(errorMetadata(staleCommit).latest_version).to.equal("2");
      const bad = await alice.files.beginUpload({ metadata: byId(committed.file!.id, 2n, { expectedSha256: "1".repeat(64) }) });
      await alice.files.appendChunk({ uploadId: bad.uploadId, offset: 0n, data: Buffer.from("does not match") });
      expectInvalid(await rpcError(alice.files.commitUpload({ uploadId: bad.uploadId })));
      expect((await allVersions(alice.files, committed.file!.id)).map((v) => v.version)).to.deep.equal([2n, 1n]);
    });

    it("rejects hostile names with INVALID_ARGUMENT, keeps odd but valid names verbatim, and never writes outside blobs/", async () => {
      const hostile = [
        "../../etc/passwd",
        "../../../../../../etc/passwd",
        "/abs",
        "/etc/passwd",
        "a\u0000b",
        "a//b",
        "./x",
        "x/./y",
        "x/../../y",
        "..",
        ".",
        "dir/",
        "a\nb",
        "new\nline/etc/passwd",
        "tab\there",
        "cr\rhere",
        "esc\u001bhere",
        "del\u007fhere",
        "a".repeat(2000),
        "a/".repeat(512) + "b",
        "",
      ];
      for (const name of hostile) {
        const what = JSON.stringify(name.slice(0, 40));
        const streamed = await rpcError(upload(alice.files, byPath(name), Buffer.from("pwned")));
        expect(streamed.code, `Upload ${what}: ${streamed.message}`).to.equal(Code.InvalidArgument);
        expect(violations(streamed).map((v) => v.field), `Upload ${what}`).to.include("metadata.path");
        const begun = await rpcError(alice.files.beginUpload({ metadata: byPath(name) }));
        expect(begun.code, `BeginUpload ${what}: ${begun.message}`).to.equal(Code.InvalidArgument);
        expect(violations(begun).map((v) => v.field), `BeginUpload ${what}`).to.include("metadata.path");
      }
      const valid = [
        "weird/My Documents/résumé 2030 (final).pdf",
        "weird/back\\slash\\..\\..\\name.txt",
        "weird/C:\\Windows\\system32",
        "weird/日本語/ファイル.txt",
        "weird/emoji 🎉.txt",
        "weird/cafe\u0301.txt",
        "weird/..hidden/...three",
        "weird/%2e%2e/%2f",
        "weird/ leading and trailing ",
        "weird/" + "z".repeat(1018),
      ];
      const ids: string[] = [];
      for (const name of valid) {
        const content = Buffer.from(`content of ${name}`);
        const { file } = await upload(alice.files, byPath(name), content);
        expect(file!.path, "stored verbatim").to.equal(name);
        expect((await alice.files.getFile({ fileId: file!.id })).file!.path).to.equal(name);
        expect((await download(alice.files, file!.id)).data.equals(content)).to.equal(true);
        ids.push(file!.id);
      }
      expect((await allFiles(alice.files, { prefix: "weird/" })).map((f) => f.path).sort()).to.deep.equal([...valid].sort());

      // Nothing outside <DATA_DIR>/{blobs,keys}, nothing named after the hostile paths, no file containing "pwned".
      const everything = walk(root);
      const rel = path.relative(root, dataDir).split(path.sep).join("/");
      const outside = everything.filter((f) => !f.startsWith(`${rel}/blobs/`) && !f.startsWith(`${rel}/keys/`));
      expect(outside, "files outside blobs/ and keys/").to.deep.equal([]);
      expect(everything.filter((f) => /passwd|etc|abs|pwned|weird|résumé/.test(f)), "files named after paths").to.deep.equal([]);
      const blobNames = walk(path.join(dataDir, "blobs"));
      for (const f of blobNames) {
        expect(f, "blob store layout").to.match(/^(sha256\/[0-9a-f]{2}\/[0-9a-f]{2}\/[0-9a-f]{64}|tmp\/.+)$/);
        if (f.startsWith("sha256/")) expect(f.slice(7, 9) + f.slice(10, 12)).to.equal(path.posix.basename(f).slice(0, 4));
      }
      expect(fs.existsSync(blobPath(dataDir, sha(Buffer.from("pwned")))), "content of a refused upload stored").to.equal(false);
    });

    it("gives no access without a share, read access to readers, upload and lock to editors, and takes it away again", async () => {
      const content = Buffer.from("secret plans");
      const { file } = await upload(alice.files, byPath("acl/secret.txt"), content);
      const id = file!.id;
      const stranger = await newUser(server, "stranger");
      const reader = await newUser(server, "reader");
      const editor = await newUser(server, "editor");
      await alice.files.shareFile({ fileId: id, userId: reader.id, role: Role.READER });
      await alice.files.shareFile({ fileId: id, userId: editor.id, role: Role.EDITOR });

      const nf = async (u: User, what: string, call: Promise<unknown>) => expectCode(await rpcError(call), Code.NotFound, `${u.name}: ${what}`);
      const noAccess = async (u: User) => {
        await nf(u, "GetFile", u.files.getFile({ fileId: id }));
        await nf(u, "Download", download(u.files, id));
        await nf(u, "ListVersions", u.files.listVersions({ fileId: id }));
        await nf(u, "Upload by id", upload(u.files, byId(id, 1n), Buffer.from("x")));
        await nf(u, "BeginUpload by id", u.files.beginUpload({ metadata: byId(id, 1n) }));
        await nf(u, "LockFile", u.files.lockFile({ fileId: id }));
        await nf(u, "RestoreVersion", u.files.restoreVersion({ fileId: id, version: 1n, baseVersion: 1n }));
        await nf(u, "DeleteFile", u.files.deleteFile({ fileId: id }));
        await nf(u, "ShareFile", u.files.shareFile({ fileId: id, userId: u.id, role: Role.EDITOR }));
        expect((await allFiles(u.files)).map((f) => f.id)).to.not.include(id);
      };
      await noAccess(stranger);

      // Reader: read, download, versions; no upload, lock, restore, delete, share.
      const asReader = (await reader.files.getFile({ fileId: id })).file!;
      expect(asReader.role).to.equal(Role.READER);
      expect(asReader.path).to.equal("acl/secret.txt");
      expect((await download(reader.files, id)).data.equals(content)).to.equal(true);
      expect((await allVersions(reader.files, id)).map((v) => v.version)).to.deep.equal([1n]);
      expect((await allFiles(reader.files)).map((f) => f.id)).to.include(id);
      const pd = async (u: User, what: string, call: Promise<unknown>) => expectCode(await rpcError(call), Code.PermissionDenied, `${u.name}: ${what}`);
      await pd(reader, "Upload", upload(reader.files, byId(id, 1n), Buffer.from("reader edit")));
      await pd(reader, "BeginUpload", reader.files.beginUpload({ metadata: byId(id, 1n) }));
      await pd(reader, "LockFile", reader.files.lockFile({ fileId: id }));
      await pd(reader, "RestoreVersion", reader.files.restoreVersion({ fileId: id, version: 1n, baseVersion: 1n }));
      await pd(reader, "DeleteFile", reader.files.deleteFile({ fileId: id }));
      await pd(reader, "UndeleteFile", reader.files.undeleteFile({ fileId: id }));
      await pd(reader, "ShareFile", reader.files.shareFile({ fileId: id, userId: stranger.id, role: Role.READER }));

      // Editor: upload, restore and lock; no delete or share.
      expect((await editor.files.getFile({ fileId: id })).file!.role).to.equal(Role.EDITOR);
      const edited = await upload(editor.files, byId(id, 1n), Buffer.from("edited"));
      expect(edited.version!.authorId).to.equal(editor.id);
      expect(edited.file!.ownerId).to.equal(alice.id);
      const unary = await editor.files.beginUpload({ metadata: byId(id, 2n) });
      await editor.files.appendChunk({ uploadId: unary.uploadId, offset: 0n, data: Buffer.from("edited twice") });
      expect((await editor.files.commitUpload({ uploadId: unary.uploadId })).version!.version).to.equal(3n);
      expect((await editor.files.restoreVersion({ fileId: id, version: 1n, baseVersion: 3n })).version!.version).to.equal(4n);
      const { lock } = await editor.files.lockFile({ fileId: id, ttlSeconds: 60 });
      await editor.files.unlockFile({ fileId: id, token: lock!.token });
      await pd(editor, "DeleteFile", editor.files.deleteFile({ fileId: id }));
      await pd(editor, "ShareFile", editor.files.shareFile({ fileId: id, userId: stranger.id, role: Role.READER }));
      await noAccess(stranger); // nobody shared it with the stranger meanwhile

      // Deleted: only the owner sees it.
      await alice.files.deleteFile({ fileId: id });
      await nf(reader, "GetFile of a deleted file", reader.files.getFile({ fileId: id }));
      await nf(editor, "Download of a deleted file", download(editor.files, id));
      expect((await allFiles(reader.files, { includeDeleted: true })).map((f) => f.id)).to.not.include(id);
      await nf(editor, "UndeleteFile", editor.files.undeleteFile({ fileId: id }));
      await alice.files.undeleteFile({ fileId: id });

      // Unsharing removes access.
      await alice.files.shareFile({ fileId: id, userId: reader.id, role: Role.NONE });
      await alice.files.shareFile({ fileId: id, userId: editor.id, role: Role.NONE });
      await noAccess(reader);
      await noAccess(editor);
      // Sharing is idempotent, and upgrades/downgrades.
      await alice.files.shareFile({ fileId: id, userId: reader.id, role: Role.EDITOR });
      await alice.files.shareFile({ fileId: id, userId: reader.id, role: Role.EDITOR });
      expect((await reader.files.getFile({ fileId: id })).file!.role).to.equal(Role.EDITOR);
      await alice.files.shareFile({ fileId: id, userId: reader.id, role: Role.READER });
      await pd(reader, "Upload after downgrade", upload(reader.files, byId(id, 4n), Buffer.from("no")));
    });

    it("stores identical content once", async () => {
      const content = randomBytes(700 * KiB);
      const hex = sha(content);
      expect(fs.existsSync(blobPath(dataDir, hex))).to.equal(false);
      const before = walk(blobRoot(dataDir)).length;
      const a = await upload(alice.files, byPath("dedup/one.bin"), content);
      const b = await upload(bob.files, byPath("dedup/two.bin"), content, 100 * KiB);
      const c = await alice.files.beginUpload({ metadata: byPath("dedup/three.bin") });
      await alice.files.appendChunk({ uploadId: c.uploadId, offset: 0n, data: content });
      await alice.files.commitUpload({ uploadId: c.uploadId });
      expect(a.version!.sha256).to.equal(hex);
      expect(b.version!.sha256).to.equal(hex);
      expect(blobFiles(dataDir).get(hex), "blob files for the shared content").to.deep.equal([`${hex.slice(0, 2)}/${hex.slice(2, 4)}/${hex}`]);
      expect(walk(blobRoot(dataDir)).length).to.equal(before + 1);
      expect(sha(fs.readFileSync(blobPath(dataDir, hex)))).to.equal(hex);
      expect((await download(bob.files, b.file!.id)).data.equals(content)).to.equal(true);
    });

    it("sends two large downloads at once over native gRPC, each byte for byte (the server encodes their chunks into one buffer)", async () => {
      const contents = [randomBytes(3 * MiB + 5), randomBytes(2 * MiB + 77)];
      const ids = await Promise.all(contents.map(async (c, i) => (await upload(alice.files, byPath(`concurrent/${i}.bin`), c)).file!.id));
      // Both streams are open at once, so the server's reads and encodings of their chunks interleave.
      const received = await Promise.all(
        ids.map(async (fileId) => {
          const parts: Buffer[] = [];
          for await (const m of alice.files.download({ fileId })) if (m.part.case === "chunk") parts.push(Buffer.from(m.part.value));
          return Buffer.concat(parts);
        }),
      );
      contents.forEach((c, i) => expect(received[i]!.equals(c), `download ${i}`).to.equal(true));
    });
  });

  describe("among many users' files", () => {
    // 20,000 files of other users, fresh statistics, one connection (so that the delete at the end reports its
    // counters with the listings').
    const OTHERS = 20_000;
    let server: TestServer;

    before(async () => {
      server = await startFiles({ DB_POOL_SIZE: "1" }, new ManualClock(), newDataDir().dataDir);
      const db = new pg.Client({ connectionString: server.databaseUrl });
      await db.connect();
      try {
        await db.query(
          `INSERT INTO "files".files (id, owner_id, path, latest_version, size, sha256, created_at, updated_at)
           SELECT gen_random_uuid(), gen_random_uuid(), 'list/' || i, 1, 1, 'x', now(), now() FROM generate_series(1, $1::int) i`,
          [OTHERS],
        );
        await db.query(`ANALYZE "files".files`);
      } finally {
        await db.end();
      }
      await eventually(async () => (await tableReads(server.databaseUrl, "files", "files")).inserted === OTHERS, "the files' statistics");
    });
    after(() => server?.shutdown());

    it("lists a user's own and shared files without reading everyone's", async () => {
      const [owner, sharer] = [await newUser(server, "many-owner"), await newUser(server, "many-sharer")];
      const mine = [];
      for (const p of ["list/a", "list/b", "list/c"]) mine.push((await upload(owner.files, byPath(p), Buffer.from(p))).file!);
      const shared = (await upload(sharer.files, byPath("list/bb"), Buffer.from("shared"))).file!;
      await sharer.files.shareFile({ fileId: shared.id, userId: owner.id, role: Role.READER });
      const before = await tableReads(server.databaseUrl, "files", "files");
      const listed = await allFiles(owner.files, { prefix: "list/", pageSize: 2 });
      expect(listed.map((f) => f.path)).to.deep.equal(["list/a", "list/b", "list/bb", "list/c"]);
      // A write on the same connection: once it is counted, so are the listings' reads.
      await owner.files.deleteFile({ fileId: mine[0]!.id });
      await eventually(async () => (await tableReads(server.databaseUrl, "files", "files")).updated > before.updated, "the listings' statistics");
      const after = await tableReads(server.databaseUrl, "files", "files");
      expect(after.seq - before.seq, "files read by sequential scans").to.equal(0);
      const throughIndexes = Object.keys(after).filter((k) => k.startsWith("files_")).reduce((n, k) => n + after[k]! - before[k]!, 0);
      expect(throughIndexes, "files read through indexes").to.be.below(50);
    });
  });

  describe("watching across instances", () => {
    const clock = new ManualClock();
    let a: TestServer;
    let b: TestServer;
    let alice: User;
    let carol: User;
    let dave: User;

    before(async () => {
      const { dataDir } = newDataDir();
      const url = await freshDatabase();
      a = await startFiles({}, clock, dataDir, url);
      b = await startFiles({}, clock, dataDir, url);
      alice = await newUser(a, "w-alice");
      carol = await newUser(a, "w-carol");
      dave = await newUser(a, "w-dave");
    });
    after(async () => {
      await a?.shutdown();
      await b?.shutdown();
    });

    it("delivers events of shared files only (including on another instance), without the audience, and resumes after a cursor", async () => {
      const shared = (await upload(alice.files, byPath("watch/shared.txt"), Buffer.from("s1"))).file!;
      const secret = (await upload(alice.files, byPath("watch/secret.txt"), Buffer.from("x1"))).file!;
      await alice.files.shareFile({ fileId: shared.id, userId: carol.id, role: Role.READER });
      await alice.files.shareFile({ fileId: shared.id, userId: dave.id, role: Role.EDITOR });

      const carolOnB = client(FileService, b.url, "grpc", carol.token);
      const watcher = watch(carolOnB);
      const owner = watch(client(FileService, b.url, "connect", alice.token));
      try {
        await watcher.ready();
        await owner.ready();
        await upload(alice.files, byId(secret.id, 1n), Buffer.from("x2"));
        const v2 = await upload(alice.files, byId(shared.id, 1n, { comment: "for carol" }), Buffer.from("s2"));
        const { lock } = await dave.files.lockFile({ fileId: shared.id, ttlSeconds: 60 });
        await dave.files.unlockFile({ fileId: shared.id, token: lock!.token });
        await alice.files.deleteFile({ fileId: shared.id });
        await alice.files.undeleteFile({ fileId: shared.id });
        const types = [
          FileEventType.VERSION_CREATED,
          FileEventType.LOCKED,
          FileEventType.UNLOCKED,
          FileEventType.DELETED,
          FileEventType.UNDELETED,
        ];
        await watcher.waitFor((es) => es.length >= types.length, "carol's five events", line);
        await owner.waitFor((es) => es.filter((e) => e.fileId === secret.id).length >= 1 && es.length >= 6, "alice's six events", line);
        await sleep(300);
        expect(watcher.items.map((e) => e.fileId), summary(watcher.items).join(", ")).to.deep.equal(types.map(() => shared.id));
        expect(watcher.items.map((e) => e.type)).to.deep.equal(types);
        const created = watcher.items[0]!;
        expect(created.path).to.equal("watch/shared.txt");
        expect(created.version?.version).to.equal(2n);
        expect(created.version?.sha256).to.equal(v2.version!.sha256);
        expect(created.version?.comment).to.equal("for carol");
        expect(created.eventTime).to.not.equal(undefined);
        for (const e of [...watcher.items, ...owner.items]) expect(e.audience, "audience is not sent to clients").to.deep.equal([]);
        const cursors = watcher.items.map((e) => BigInt(e.cursor));
        for (let i = 1; i < cursors.length; i++) expect(cursors[i]! > cursors[i - 1]!, "cursors increase").to.equal(true);
        expect(owner.items.map((e) => e.fileId)).to.include(secret.id);

        // Resume after the second event: exactly the rest.
        const resumed = watch(carolOnB, watcher.items[1]!.cursor);
        try {
          await resumed.waitFor((es) => es.length >= 3, "the resumed events", line);
          await sleep(300);
          expect(resumed.items.map((e) => e.cursor)).to.deep.equal(watcher.items.slice(2).map((e) => e.cursor));
        } finally {
          await resumed.close();
        }

        // After unsharing, carol no longer hears about the file; after sharing the other one, she does.
        await alice.files.shareFile({ fileId: shared.id, userId: carol.id, role: Role.NONE });
        await upload(alice.files, byId(shared.id, 2n), Buffer.from("s3"));
        await alice.files.shareFile({ fileId: secret.id, userId: carol.id, role: Role.READER });
        await upload(alice.files, byId(secret.id, 2n), Buffer.from("x3"));
        await watcher.waitFor((es) => es.some((e) => e.fileId === secret.id), "the event of the newly shared file", line);
        await sleep(200);
        expect(summary(watcher.items).slice(types.length)).to.deep.equal(["VERSION_CREATED watch/secret.txt v3"]);
      } finally {
        await Promise.all([watcher.close(), owner.close()]);
      }
    });
  });

  describe("interrupted uploads (GC grace 0)", () => {
    const clock = new LiveClock();
    let server: TestServer;
    let dataDir: string;
    let alice: User;

    before(async () => {
      ({ dataDir } = newDataDir());
      server = await startFiles({ FILES_GC_GRACE_SECONDS: "0" }, clock, dataDir);
      alice = await newUser(server, "k-alice");
    });
    after(() => server?.shutdown());

    let script: string;
    before(() => {
      script = path.join(os.tmpdir(), `agora-files-uploader-${process.pid}.mts`);
      const gen = pathToFileURL(path.resolve("gen/agora/files/v1/files_pb.ts")).href;
        fs.writeFileSync(
          script,
          `
import { createClient } from ${JSON.stringify(moduleUrl("@connectrpc/connect/dist/esm/index.js"))};
import { createGrpcTransport } from ${JSON.stringify(moduleUrl("@connectrpc/connect-node/dist/esm/index.js"))};
import { FileService } from ${JSON.stringify(gen)};
import { randomBytes } from "node:crypto";
const { AGORA_URL, AGORA_TOKEN, AGORA_META, AGORA_SIZE } = process.env;
const transport = createGrpcTransport({
  baseUrl: AGORA_URL!,
  interceptors: [(next) => (req) => { req.header.set("authorization", "Bearer " + AGORA_TOKEN); return next(req); }],
});
const files = createClient(FileService, transport);
const meta = JSON.parse(AGORA_META!);
meta.baseVersion = BigInt(meta.baseVersion);
const size = Number(AGORA_SIZE);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function* parts() {
  yield { part: { case: "metadata" as const, value: meta } };
  console.log("meta");
  for (let sent = 0; sent < size; ) {
    const n = Math.min(64 * 1024, size - sent);
    yield { part: { case: "chunk" as const, value: randomBytes(n) } };
    sent += n;
    console.log("sent " + sent);
    await sleep(8);
  }
  console.log("all-sent");
  await sleep(60_000);
}
await files.upload(parts());
console.log("done");
`,
      );
    });
    after(() => fs.rmSync(script, { force: true }));

    /** A child process uploading slowly; `killAt` picks when it is SIGKILLed from its progress lines. */
    async function killedUpload(target: Meta, size: number, killAt: (line: string) => boolean): Promise<string[]> {
      const child = spawn(process.execPath, ["--import", moduleUrl("tsx/dist/loader.mjs"), script], {
        cwd: process.cwd(),
        env: {
          ...process.env,
          AGORA_URL: server.url,
          AGORA_TOKEN: alice.token,
          AGORA_META: JSON.stringify(target, (_k, v) => (typeof v === "bigint" ? v.toString() : v)),
          AGORA_SIZE: String(size),
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      const lines: string[] = [];
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += String(d)));
      const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
      let buffer = "";
      child.stdout.on("data", (d) => {
        buffer += String(d);
        let nl: number;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          lines.push(line);
          if (child.exitCode === null && !child.killed && killAt(line)) child.kill("SIGKILL");
        }
      });
      await Promise.race([exited, sleep(30_000)]);
      if (child.exitCode === null && !child.killed) child.kill("SIGKILL");
      await exited;
      expect(lines, `the uploader never reached its kill point; stderr: ${stderr}`).to.not.include("done");
      expect(child.signalCode, `stderr: ${stderr}`).to.equal("SIGKILL");
      return lines;
    }

    it("leaves no version, no temp file and no orphan blob when the uploading process is killed at random points", async function () {
      this.timeout(150_000);
      const existing = await upload(alice.files, byPath("kill/target.bin"), randomBytes(100 * KiB));
      const id = existing.file!.id;
      const size = 3 * MiB;
      const problems: string[] = [];
      /** After an interrupted upload: nothing may have been created. */
      async function check(what: string, latest: bigint, newPath: string | undefined): Promise<bigint> {
        await sleep(300);
        const versions = await allVersions(alice.files, id);
        for (const v of versions.filter((v) => v.version > latest)) problems.push(`${what}: created version ${v.version} of ${v.size} bytes`);
        if (newPath) {
          for (const f of await allFiles(alice.files, { prefix: newPath, includeDeleted: true })) {
            problems.push(`${what}: created file ${f.path} (${f.size} bytes)`);
          }
        }
        return versions[0]!.version;
      }
      let latest = 1n;
      // Kill points: after the metadata, at random chunks, and after everything but the stream's end.
      const plan = ["meta", "all-sent", ...Array.from({ length: 6 }, () => `sent ${Math.floor(Math.random() * (size / (64 * KiB)) + 1) * 64 * KiB}`)];
      for (const [i, point] of plan.entries()) {
        const newPath = i % 3 === 2 ? `kill/new-${i}.bin` : undefined;
        const lines = await killedUpload(newPath ? byPath(newPath, 0n) : byId(id, latest), size, (line) => line === point);
        expect(lines, "the uploader reached its kill point").to.include(point);
        latest = await check(`SIGKILL at "${point}"${newPath ? " creating a file" : ""}`, latest, newPath);
      }
      // In-process cancellation at random moments too (a weaker variant).
      for (let i = 0; i < 4; i++) {
        const abort = new AbortController();
        const stopAfter = 1 + Math.floor(Math.random() * 40);
        let sent = 0;
        async function* parts(base: bigint): AsyncGenerator<Part> {
          yield metaPart(byId(id, base));
          for (let n = 0; n < 48; n++) {
            yield chunkPart(randomBytes(64 * KiB));
            if (++sent >= stopAfter) abort.abort();
            await sleep(5);
          }
          await sleep(60_000);
        }
        const err = await rpcError(alice.files.upload(parts(latest), { signal: abort.signal }));
        expect(err.code).to.equal(Code.Canceled);
        latest = await check(`AbortController after ${stopAfter} chunks`, latest, undefined);
      }
      expect(problems, "interrupted uploads must leave nothing").to.deep.equal([]);
      expect((await allFiles(alice.files, { prefix: "kill/", includeDeleted: true })).map((f) => f.path)).to.deep.equal(["kill/target.bin"]);
      await expectNoOrphans(dataDir, [alice.files], "no temp files and no unreferenced blobs after the kills");

      // The base version was not used up: the next upload on it is version 2.
      const next = await upload(alice.files, byId(id, 1n), randomBytes(2 * MiB));
      expect(next.version!.version).to.equal(2n);
      expect(fs.existsSync(blobPath(dataDir, next.version!.sha256))).to.equal(true);
    });

    it("does not collect what live uploads and fresh versions still need, even with grace 0", async () => {
      // A unary upload spanning several sweeps.
      const data = randomBytes(1536 * KiB);
      const begin = await alice.files.beginUpload({ metadata: byPath("gc/unary.bin") });
      await alice.files.appendChunk({ uploadId: begin.uploadId, offset: 0n, data: data.subarray(0, 768 * KiB) });
      await sleep(600);
      expect((await alice.files.getUpload({ uploadId: begin.uploadId })).received).to.equal(BigInt(768 * KiB));
      await alice.files.appendChunk({ uploadId: begin.uploadId, offset: BigInt(768 * KiB), data: data.subarray(768 * KiB) });
      await sleep(300);
      const committed = await alice.files.commitUpload({ uploadId: begin.uploadId });
      expect((await download(alice.files, committed.file!.id)).data.equals(data)).to.equal(true);
      // A slow streaming upload spanning several sweeps.
      const slow = randomBytes(20 * 64 * KiB);
      async function* parts(): AsyncGenerator<Part> {
        yield metaPart(byPath("gc/slow.bin"));
        for (let o = 0; o < slow.length; o += 64 * KiB) {
          yield chunkPart(slow.subarray(o, o + 64 * KiB));
          await sleep(40);
        }
      }
      const streamed = await alice.files.upload(parts());
      expect(streamed.version!.sha256).to.equal(sha(slow));
      // Many small uploads while the sweep runs: every committed version keeps its blob.
      const made: { id: string; data: Buffer }[] = [];
      for (let i = 0; i < 20; i++) {
        const d = randomBytes(10 * KiB);
        made.push({ id: (await upload(alice.files, byPath(`gc/many-${i}.bin`), d)).file!.id, data: d });
      }
      await sleep(400);
      for (const m of made) expect((await download(alice.files, m.id)).data.equals(m.data)).to.equal(true);
      expect((await download(alice.files, streamed.file!.id)).data.equals(slow)).to.equal(true);
      await expectNoOrphans(dataDir, [alice.files], "a consistent blob store");
    });
  });

  describe("limits", () => {
    const clock = new LiveClock();
    let server: TestServer;
    let dataDir: string;
    let alice: User;

    before(async () => {
      ({ dataDir } = newDataDir());
      server = await startFiles({ FILES_MAX_BYTES: "1048576" }, clock, dataDir);
      alice = await newUser(server, "l-alice");
    });
    after(() => server?.shutdown());

    it("refuses content over FILES_MAX_BYTES with RESOURCE_EXHAUSTED and stores nothing; exactly the limit is fine", async () => {
      const big = randomBytes(2 * MiB);
      expectCode(await rpcError(upload(alice.files, byPath("limit/big.bin"), big)), Code.ResourceExhausted, "a 2 MiB streamed upload");
      const begin = await alice.files.beginUpload({ metadata: byPath("limit/big-unary.bin") });
      await alice.files.appendChunk({ uploadId: begin.uploadId, offset: 0n, data: big.subarray(0, MiB) });
      expectCode(
        await rpcError(alice.files.appendChunk({ uploadId: begin.uploadId, offset: BigInt(MiB), data: big.subarray(MiB, MiB + 1) })),
        Code.ResourceExhausted,
        "a unary upload going past the limit",
      );
      expect(await allFiles(alice.files, { includeDeleted: true })).to.deep.equal([]);
      expect(fs.existsSync(blobPath(dataDir, sha(big)))).to.equal(false);
      const exact = randomBytes(MiB);
      const ok = await upload(alice.files, byPath("limit/exact.bin"), exact);
      expect(ok.version!.size).to.equal(BigInt(MiB));
      expect((await allFiles(alice.files)).map((f) => f.path)).to.deep.equal(["limit/exact.bin"]);
      // Only the exact-size content is on disk, once the refused unary upload has expired and the GC grace has passed.
      clock.advance(2 * HOUR);
      alice = await relogin(server, alice);
      await expectNoOrphans(dataDir, [alice.files], "nothing left of the refused uploads");
      expect([...blobFiles(dataDir).keys()]).to.deep.equal([sha(exact)]);
    });
  });

  describe("retention, purge and expiry (ManualClock)", () => {
    const clock = new ManualClock();
    let server: TestServer;
    let dataDir: string;
    let alice: User;
    let bob: User;

    before(async () => {
      ({ dataDir } = newDataDir());
      server = await startFiles({}, clock, dataDir);
      alice = await newUser(server, "r-alice");
      bob = await newUser(server, "r-bob");
    });
    after(() => server?.shutdown());

    it("expires an abandoned unary upload after FILES_UPLOAD_TTL_MINUTES and removes its temp file", async () => {
      const begin = await alice.files.beginUpload({ metadata: byPath("expire/abandoned.bin") });
      await alice.files.appendChunk({ uploadId: begin.uploadId, offset: 0n, data: randomBytes(300 * KiB) });
      await sleep(300);
      expect(walk(tmpRoot(dataDir)).length, "the upload's temp file").to.be.at.least(1);
      clock.advance(59 * MINUTE);
      await sleep(300);
      expect((await alice.files.getUpload({ uploadId: begin.uploadId })).received).to.equal(BigInt(300 * KiB));
      clock.advance(2 * MINUTE);
      await eventually(() => isNotFound(alice.files.getUpload({ uploadId: begin.uploadId })), "the upload to expire");
      await rpcError(alice.files.commitUpload({ uploadId: begin.uploadId }));
      await eventually(() => walk(tmpRoot(dataDir)).length === 0, "the temp file to be removed");
      expect(await allFiles(alice.files, { includeDeleted: true })).to.deep.equal([]);
    });

    it("keeps deleted files for FILES_RETENTION_HOURS, then purges them and collects blobs nothing else references", async () => {
      const common = randomBytes(200 * KiB);
      const only1 = randomBytes(150 * KiB);
      const only2 = randomBytes(160 * KiB);
      const x = (await upload(alice.files, byPath("ret/x.bin"), only1)).file!;
      await upload(alice.files, byId(x.id, 1n), only2);
      const y = (await upload(alice.files, byPath("ret/y.bin"), common)).file!;
      const z = (await upload(alice.files, byPath("ret/z.bin"), common)).file!;
      await alice.files.shareFile({ fileId: y.id, userId: bob.id, role: Role.READER });
      for (const h of [only1, only2, common].map(sha)) expect(fs.existsSync(blobPath(dataDir, h)), h).to.equal(true);

      await alice.files.deleteFile({ fileId: x.id });
      await alice.files.deleteFile({ fileId: y.id });
      expectCode(await rpcError(bob.files.getFile({ fileId: y.id })), Code.NotFound, "a reader's view of a deleted file");

      clock.advance(719 * HOUR);
      alice = await relogin(server, alice);
      bob = await relogin(server, bob);
      await sleep(400);
      expect((await alice.files.getFile({ fileId: x.id })).file!.deleted, "still within retention").to.equal(true);
      expect(fs.existsSync(blobPath(dataDir, sha(only1)))).to.equal(true);
      // Undelete y and delete it again: its retention starts over.
      await alice.files.undeleteFile({ fileId: y.id });
      expect((await bob.files.getFile({ fileId: y.id })).file!.deleted).to.equal(false);
      await alice.files.deleteFile({ fileId: y.id });

      clock.advance(2 * HOUR);
      await eventually(() => isNotFound(alice.files.getFile({ fileId: x.id })), "x to be purged");
      expect((await allFiles(alice.files, { includeDeleted: true })).map((f) => f.path)).to.deep.equal(["ret/y.bin", "ret/z.bin"]);
      expectCode(await rpcError(alice.files.undeleteFile({ fileId: x.id })), Code.NotFound, "undeleting a purged file");
      expectCode(await rpcError(alice.files.listVersions({ fileId: x.id })), Code.NotFound, "versions of a purged file");
      await eventually(() => !fs.existsSync(blobPath(dataDir, sha(only1))) && !fs.existsSync(blobPath(dataDir, sha(only2))), "x's blobs to be collected");
      expect((await alice.files.getFile({ fileId: y.id })).file!.deleted).to.equal(true);
      expect(fs.existsSync(blobPath(dataDir, sha(common)))).to.equal(true);

      clock.advance(720 * HOUR);
      alice = await relogin(server, alice);
      await eventually(() => isNotFound(alice.files.getFile({ fileId: y.id })), "y to be purged");
      await sleep(400);
      // z still references the shared content.
      expect(fs.existsSync(blobPath(dataDir, sha(common))), "a blob another file still uses").to.equal(true);
      expect((await download(alice.files, z.id)).data.equals(common)).to.equal(true);
      await expectNoOrphans(dataDir, [alice.files], "only z's blob left");
      expect([...blobFiles(dataDir).keys()]).to.deep.equal([sha(common)]);
    });
  });
});
