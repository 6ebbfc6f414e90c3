import { randomUUID } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  FileEventSchema,
  FileEventType,
  FileService,
  Role,
  UploadMetadataSchema,
  WatchFilesResponseSchema,
  type FileEvent,
  type UploadMetadata,
} from "../../../gen/agora/files/v1/files_pb.js";
import { callerOf, type Caller } from "../../platform/auth.js";
import type { Clock } from "../../platform/clock.js";
import { canceled, invalidArgument, notFound, outOfRange, permissionDenied, quotaExceeded, resourceExhausted } from "../../platform/errors.js";
import type { EventLog } from "../../platform/event-log.js";
import { fingerprint, isKeyset, isStringPosition, pageSize, type PageTokens } from "../../platform/paging.js";
import { ChecksumMismatch, type BlobStore, type BlobWriter } from "./blob-store.js";
import type { KeyedLock } from "./keyed-lock.js";
import { toFile, toVersion } from "./files.mapper.js";
import { storageQuotaExceeded, type FileRow, type FilesRepository, type RoleName, type VersionRow } from "./files.repository.js";

export interface FilesSettings {
  maxBytes: number;
  uploadTtlMinutes: number;
  /** Unary uploads one user may have begun and not finished. */
  maxOpenUploadsPerUser: number;
  /** Bytes one user's files may take (FilesRepository.storedBytes counts them). */
  maxBytesPerUser: number;
}

export interface FilesDeps {
  pageTokens: PageTokens;
  repo: FilesRepository;
  blobs: BlobStore;
  events: EventLog<FileEvent>;
  clock: Clock;
  settings: FilesSettings;
  /** Temp files and hashes in use on this instance: the collector leaves them alone. */
  inUse: { temp: Set<string>; hashes: Set<string> };
  /** Serialises publishing a blob and collecting it, per hash. */
  blobLocks: KeyedLock;
}

/** Whose storage an upload takes, and how many bytes are left of their quota. */
interface Room {
  ownerId: string;
  bytes: number;
}

/**
 * As large as an uploaded chunk may be. With 64 KiB chunks a download through Envoy ran at 51-76 MiB/s against
 * 83-153 with 1 MiB (the same session, alternating runs; docs/performance.md), and direct ones were no faster on average.
 */
const DOWNLOAD_CHUNK = 1024 * 1024;
const DEFAULT_LOCK_TTL = 300;

/**
 * A path is a name in its owner's space, never a filesystem path: segments
 * separated by '/', none empty, '.' or '..', no control characters. Content is
 * stored by hash, so even an accepted name never reaches the disk.
 */
function pathViolation(path: string): string | undefined {
  if (/[\u0000-\u001f\u007f]/.test(path)) return "must not contain control characters";
  if (path.startsWith("/")) return "must be relative to your space (no leading '/')";
  if (path.endsWith("/")) return "must name a file (no trailing '/')";
  const segments = path.split("/");
  if (segments.some((s) => s === "")) return "must not contain empty segments ('//')";
  if (segments.some((s) => s === "." || s === "..")) return "must not contain '.' or '..' segments";
  return undefined;
}

function fileEvent(type: FileEventType, f: FileRow, audience: string[], now: Date, version?: VersionRow): FileEvent {
  return create(FileEventSchema, {
    type,
    fileId: f.id,
    path: f.path,
    version: version ? toVersion(version) : undefined,
    eventTime: timestampFromDate(now),
    audience,
  });
}

export function filesHandlers(d: FilesDeps): ServiceImpl<typeof FileService> {
  const pages = d.pageTokens;
  const { repo, clock } = d;
  const me = (c: Caller) => ({ id: c.userId, name: c.username });

  async function accessible(ctx: HandlerContext, fileId: string, needed: RoleName) {
    const caller = callerOf(ctx);
    const file = await repo.visible(fileId, caller.userId, caller.role === "admin");
    if (!repo.hasRole(file, needed)) {
      throw permissionDenied("ROLE_REQUIRED", `this needs the ${needed} role on ${file.path}; you are ${file.role}`, { needed, role: file.role });
    }
    return { caller, file };
  }

  /**
   * Checks what can be checked before any byte is received (path, access, the
   * declared size) and returns the owner whose storage the upload takes and how
   * many bytes it may have before it would take them past their quota.
   */
  async function precheck(caller: Caller, meta: UploadMetadata): Promise<Room> {
    let ownerId = caller.userId;
    if (meta.target.case === "path") {
      const problem = pathViolation(meta.target.value);
      if (problem) throw invalidArgument([{ field: "metadata.path", description: problem, reason: "INVALID_PATH" }]);
    } else {
      const file = await repo.visible(meta.target.value!, caller.userId);
      if (!repo.hasRole(file, "editor")) throw readersCannotUpload(file.role);
      ownerId = file.owner_id;
    }
    const max = d.settings.maxBytesPerUser;
    const room = max - (await repo.storedBytes(ownerId));
    if (meta.size !== undefined) {
      if (meta.size > BigInt(d.settings.maxBytes)) throw tooBig();
      if (meta.size > BigInt(room)) throw storageQuotaExceeded(ownerId, max);
    }
    return { ownerId, bytes: room };
  }

  /** Refuses bytes past the owner's quota as they come (the commit checks again, under the owner's lock). */
  function checkRoom(size: number, room: Room) {
    if (size > room.bytes) throw storageQuotaExceeded(room.ownerId, d.settings.maxBytesPerUser);
  }

  /** Records the stored blob as a new version (or a new file). */
  async function finish(caller: Caller, meta: UploadMetadata, sha256: string, size: number) {
    const now = clock.now();
    const v = { sha256, size, authorId: caller.userId, authorName: caller.username, comment: meta.comment };
    const onVersion = (f: FileRow, ver: VersionRow) => fileEvent(FileEventType.VERSION_CREATED, f, [], now, ver);
    let fileId: string;
    if (meta.target.case === "path") {
      const existing = await repo.byPath(caller.userId, meta.target.value);
      if (!existing || meta.baseVersion === 0n) {
        if (meta.baseVersion !== 0n) throw notFound("file", meta.target.value);
        const created = await repo.create(caller.userId, meta.target.value, v, now, d.settings.maxBytesPerUser, (f, ver) => fileEvent(FileEventType.VERSION_CREATED, f, [caller.userId], now, ver));
        return created;
      }
      fileId = existing.id;
    } else {
      fileId = meta.target.value!;
      const file = await repo.visible(fileId, caller.userId);
      if (!repo.hasRole(file, "editor")) throw readersCannotUpload(file.role);
    }
    const audience = await repo.audience(fileId);
    return repo.addVersion(fileId, meta.baseVersion, v, now, meta.lockToken, d.settings.maxBytesPerUser, (f, ver) => ({ ...onVersion(f, ver), audience }));
  }

  /** Commits a writer's bytes as a blob, keeping its hash safe from the collector until the version row exists. */
  async function store(writer: BlobWriter, meta: UploadMetadata, caller: Caller, signal: AbortSignal) {
    let sha256: string;
    try {
      sha256 = await writer.seal(meta.expectedSha256 || undefined);
    } catch (err) {
      if (err instanceof ChecksumMismatch) {
        throw invalidArgument([
          { field: "metadata.expected_sha256", description: `the content's SHA-256 is ${err.actual}`, reason: "CHECKSUM_MISMATCH" },
        ]);
      }
      throw err;
    }
    try {
      // Under the hash's lock the collector either finished with it or will see it in use.
      await d.blobLocks.run(sha256, async () => {
        d.inUse.hashes.add(sha256);
        await writer.publish();
      });
      if (signal.aborted) throw cancelled(signal);
      const result = await finish(caller, meta, sha256, writer.size);
      return { file: toFile({ ...result.file, role: "owner" }, caller.userId, clock.now()), version: toVersion(result.version) };
    } finally {
      d.inUse.hashes.delete(sha256);
    }
  }

  /** Why an upload's signal fired: the server's shutdown or a deadline say so themselves; otherwise the client left. */
  function cancelled(signal: AbortSignal): ConnectError {
    if (signal.reason instanceof ConnectError) return signal.reason;
    return canceled("UPLOAD_CANCELLED", "the upload was cancelled: nothing was stored");
  }

  /** Content of another size than UploadMetadata.size declared is refused before it is stored. */
  function checkDeclaredSize(meta: UploadMetadata, received: number) {
    if (meta.size !== undefined && BigInt(received) !== meta.size) {
      throw invalidArgument([{ field: "metadata.size", description: `declared ${meta.size} bytes, received ${received}`, reason: "SIZE_MISMATCH" }]);
    }
  }

  function readersCannotUpload(role: string): ConnectError {
    return permissionDenied("ROLE_REQUIRED", "readers cannot upload", { needed: "editor", role });
  }

  function tooBig(): ConnectError {
    return resourceExhausted("FILE_TOO_LARGE", `files may be at most ${d.settings.maxBytes} bytes`, 0);
  }

  return {
    async upload(requests, ctx) {
      const caller = callerOf(ctx);
      let meta: UploadMetadata | undefined;
      let writer: BlobWriter | undefined;
      let tempName: string | undefined;
      let room: Room = { ownerId: caller.userId, bytes: 0 };
      try {
        for await (const req of requests) {
          if (req.part.case === "metadata") {
            if (meta) throw invalidArgument([{ field: "metadata", description: "send the metadata once, first" }]);
            meta = req.part.value;
            room = await precheck(caller, meta);
            // Protected from the collector before the file even exists.
            tempName = d.blobs.newTempName();
            d.inUse.temp.add(tempName);
            writer = await d.blobs.writer(tempName);
          } else if (req.part.case === "chunk") {
            if (!writer) throw invalidArgument([{ field: "metadata", description: "the metadata must come before the first chunk" }]);
            if (writer.size + req.part.value.length > d.settings.maxBytes) throw tooBig();
            checkRoom(writer.size + req.part.value.length, room);
            await writer.write(req.part.value);
          }
        }
        // A client that resets its stream (RST_STREAM) looks like a normal end of input here: it is not.
        if (ctx.signal.aborted) throw cancelled(ctx.signal);
        if (!meta || !writer) throw invalidArgument([{ field: "metadata", description: "an upload starts with its metadata" }]);
        checkDeclaredSize(meta, writer.size);
        const result = await store(writer, meta, caller, ctx.signal);
        writer = undefined;
        return result;
      } catch (err) {
        // A failed, cut or cancelled upload leaves nothing behind.
        await writer?.abort();
        throw err;
      } finally {
        if (tempName) d.inUse.temp.delete(tempName);
      }
    },

    async beginUpload(req, ctx) {
      const caller = callerOf(ctx);
      await precheck(caller, req.metadata!);
      const id = randomUUID();
      const expires = new Date(clock.now().getTime() + d.settings.uploadTtlMinutes * 60_000);
      const max = d.settings.maxOpenUploadsPerUser;
      if (!(await repo.beginUpload(id, me(caller), toBinary(UploadMetadataSchema, req.metadata!), expires, clock.now(), max))) {
        throw quotaExceeded(`user:${caller.userId}`, `you have ${max} unfinished uploads, the most one user may: commit or let some expire`, max);
      }
      return { uploadId: id, expireTime: timestampFromDate(expires) };
    },

    async appendChunk(req, ctx) {
      const caller = callerOf(ctx);
      const upload = await repo.upload(req.uploadId, caller.userId, clock.now());
      const received = Number(upload.received);
      const offset = Number(req.offset);
      // A repeat of bytes already received (a retry after a lost answer) changes nothing.
      if (offset + req.data.length <= received) return { received: BigInt(received) };
      if (offset !== received) {
        throw outOfRange("UNEXPECTED_OFFSET", `expected offset ${received}, got ${offset}: continue from ${received}`, { received: String(received) });
      }
      if (received + req.data.length > d.settings.maxBytes) throw tooBig();
      checkRoom(received + req.data.length, await precheck(caller, fromBinary(UploadMetadataSchema, upload.metadata)));
      // Writes at the recorded count: bytes a crashed append left past it are overwritten (or cut at commit).
      const writer = await d.blobs.staged(req.uploadId, received);
      try {
        await writer.write(req.data);
      } finally {
        await writer.close().catch(() => undefined);
      }
      await repo.setReceived(req.uploadId, received + req.data.length);
      return { received: BigInt(received + req.data.length) };
    },

    async getUpload(req, ctx) {
      const upload = await repo.upload(req.uploadId, callerOf(ctx).userId, clock.now());
      return { received: BigInt(upload.received), expireTime: timestampFromDate(new Date(upload.expires_at)) };
    },

    async commitUpload(req, ctx) {
      const caller = callerOf(ctx);
      const upload = await repo.upload(req.uploadId, caller.userId, clock.now());
      const meta = fromBinary(UploadMetadataSchema, upload.metadata);
      checkDeclaredSize(meta, Number(upload.received)); // the upload stays open: the client may send the rest
      const writer = await d.blobs.staged(req.uploadId, Number(upload.received));
      const result = await store(writer, meta, caller, ctx.signal);
      await repo.endUpload(req.uploadId);
      return result;
    },

    async *download(req, ctx) {
      const { file } = await accessible(ctx, req.fileId, "reader");
      if (file.deleted_at) throw notFound("file", req.fileId);
      const version = await repo.version(req.fileId, req.version);
      const size = BigInt(version.size);
      if (req.offset > size) throw outOfRange("OFFSET_PAST_END", `offset ${req.offset} is past the end (${size} bytes)`, { size: String(size) });
      yield { part: { case: "version", value: toVersion(version) } };
      if (req.offset === size) return;
      // One buffer, reused: memory stays flat whatever the file size. Every server path serializes a
      // message before it asks for the next one, which is when the buffer is read into again.
      for await (const chunk of d.blobs.read(version.sha256, Number(req.offset), DOWNLOAD_CHUNK)) {
        if (ctx.signal.aborted) break;
        yield { part: { case: "chunk", value: chunk } };
      }
    },

    async getFile(req, ctx) {
      const { caller, file } = await accessible(ctx, req.fileId, "reader");
      return { file: toFile(file, caller.userId, clock.now()) };
    },

    async listFiles(req, ctx) {
      const caller = callerOf(ctx);
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("files", caller.userId, req.prefix, req.includeDeleted);
      const rows = await repo.list(caller.userId, req.prefix, req.includeDeleted, pages.decode(req.pageToken, filters, isKeyset), limit + 1);
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => [last.path, last.id]);
      const now = clock.now();
      return { files: page.map((f) => toFile(f, caller.userId, now)), nextPageToken };
    },

    async listVersions(req, ctx) {
      await accessible(ctx, req.fileId, "reader");
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("versions", req.fileId);
      const before = pages.decode(req.pageToken, filters, isStringPosition);
      const rows = await repo.versions(req.fileId, before === undefined ? undefined : BigInt(before), limit + 1);
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => last.version);
      return { versions: page.map(toVersion), nextPageToken };
    },

    async restoreVersion(req, ctx) {
      const { caller, file } = await accessible(ctx, req.fileId, "editor");
      const old = await repo.version(req.fileId, req.version);
      const now = clock.now();
      const audience = await repo.audience(file.id);
      const result = await repo.addVersion(
        file.id,
        req.baseVersion,
        { sha256: old.sha256, size: Number(old.size), authorId: caller.userId, authorName: caller.username, comment: req.comment || `restored version ${req.version}`, restoredFrom: req.version },
        now,
        req.lockToken,
        d.settings.maxBytesPerUser,
        (f, v) => fileEvent(FileEventType.VERSION_CREATED, f, audience, now, v),
      );
      return { file: toFile({ ...result.file, role: file.role }, caller.userId, now), version: toVersion(result.version) };
    },

    async deleteFile(req, ctx) {
      const { caller, file } = await accessible(ctx, req.fileId, "owner");
      const now = clock.now();
      const audience = await repo.audience(file.id);
      const deleted = await repo.setDeleted(file.id, true, now, (f) => fileEvent(FileEventType.DELETED, f, audience, now));
      return { file: toFile({ ...deleted, role: "owner" }, caller.userId, now) };
    },

    async undeleteFile(req, ctx) {
      const { caller, file } = await accessible(ctx, req.fileId, "owner");
      const now = clock.now();
      const audience = await repo.audience(file.id);
      const restored = await repo.setDeleted(file.id, false, now, (f) => fileEvent(FileEventType.UNDELETED, f, audience, now));
      return { file: toFile({ ...restored, role: "owner" }, caller.userId, now) };
    },

    async lockFile(req, ctx) {
      const { caller, file } = await accessible(ctx, req.fileId, "editor");
      const now = clock.now();
      const audience = await repo.audience(file.id);
      const locked = await repo.lock(file.id, me(caller), req.ttlSeconds || DEFAULT_LOCK_TTL, now, (f) => fileEvent(FileEventType.LOCKED, f, audience, now));
      return { lock: toFile(locked, caller.userId, now).lock };
    },

    async refreshLock(req, ctx) {
      const { caller, file } = await accessible(ctx, req.fileId, "editor");
      const now = clock.now();
      const refreshed = await repo.refreshLock(file.id, req.token, req.ttlSeconds || DEFAULT_LOCK_TTL, now);
      return { lock: toFile(refreshed, caller.userId, now).lock };
    },

    async unlockFile(req, ctx) {
      const { caller, file } = await accessible(ctx, req.fileId, "reader");
      if (req.force && file.role !== "owner" && caller.role !== "admin") {
        throw permissionDenied("FORCE_UNLOCK_DENIED", "only the owner or an admin may force a lock open");
      }
      if (!req.force && !req.token) throw invalidArgument([{ field: "token", description: "give the lock token, or force" }]);
      const now = clock.now();
      const audience = await repo.audience(file.id);
      await repo.unlock(file.id, req.token, req.force, now, (f) => fileEvent(FileEventType.UNLOCKED, f, audience, now));
      return {};
    },

    async shareFile(req, ctx) {
      const { caller, file } = await accessible(ctx, req.fileId, "owner");
      if (req.userId === caller.userId) throw invalidArgument([{ field: "user_id", description: "the owner always has access" }]);
      await repo.share(file.id, req.userId, req.role === Role.EDITOR ? "editor" : req.role === Role.READER ? "reader" : "none");
      return {};
    },

    async grantAttachmentAccess(req, ctx) {
      const { file } = await accessible(ctx, req.fileId, "reader");
      if (file.deleted_at) throw notFound("file", req.fileId);
      const version = await repo.version(file.id, req.version);
      await repo.grantRead(file.id, file.owner_id, req.userIds);
      return { version: toVersion(version) };
    },

    async *watchFiles(req, ctx) {
      const caller = callerOf(ctx);
      yield* d.events.watch(req.afterCursor, ctx.signal, {
        heartbeat: (value) => create(WatchFilesResponseSchema, { kind: { case: "heartbeat", value } }),
        event: (e, cursor) =>
          e.audience.includes(caller.userId) ? create(WatchFilesResponseSchema, { kind: { case: "event", value: { ...e, audience: [], cursor } } }) : undefined,
      });
    },
  };
}
