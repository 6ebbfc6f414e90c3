import { randomUUID } from "node:crypto";
import type { EntityManager } from "@mikro-orm/postgresql";
import { isUniqueViolation, lockForTransaction, transaction } from "../../platform/db.js";
import { aborted, failedPrecondition, notFound, quotaExceeded } from "../../platform/errors.js";
import type { EventLog } from "../../platform/event-log.js";
import type { FileEvent } from "../../../gen/agora/files/v1/files_pb.js";

/** The service's PostgreSQL schema: its migrations create it; openServiceDatabase, the event log and every SQL statement name it from here. */
export const SCHEMA = "files";

export type RoleName = "owner" | "editor" | "reader";

export interface FileRow {
  id: string;
  owner_id: string;
  path: string;
  latest_version: string;
  size: string;
  sha256: string;
  deleted_at: Date | null;
  lock_holder_id: string | null;
  lock_holder_name: string | null;
  lock_token: string | null;
  lock_expires_at: Date | null;
  created_at: Date;
  updated_at: Date;
  /** The caller's role, when read for a caller. */
  role?: RoleName;
}

export interface VersionRow {
  file_id: string;
  version: string;
  size: string;
  sha256: string;
  author_id: string;
  author_name: string;
  comment: string;
  restored_from: string;
  created_at: Date;
}

export interface NewVersion {
  sha256: string;
  size: number;
  authorId: string;
  authorName: string;
  comment: string;
  restoredFrom?: bigint;
}

/** A user's files would take more than `max` bytes. */
export function storageQuotaExceeded(ownerId: string, max: number) {
  return quotaExceeded(
    `user:${ownerId}`,
    `the owner's files may take at most ${max} bytes (each distinct content of every version counts, deleted files until they are purged): delete files to make room`,
    max,
  );
}

const ROLE_RANK: Record<RoleName, number> = { reader: 1, editor: 2, owner: 3 };

/** Whether a lock still counts: expired locks stop counting by themselves, no cleanup needed. */
export const lockHeld = (f: FileRow, now: Date) => Boolean(f.lock_holder_id && f.lock_expires_at && new Date(f.lock_expires_at) > now);

/** Owns every query on files, versions, shares and staged uploads, and the events they emit. */
export class FilesRepository {
  constructor(
    private readonly em: EntityManager,
    private readonly events: EventLog<FileEvent>,
  ) {}

  private get db() {
    return this.em.fork();
  }

  /**
   * The file as `userId` sees it, or NOT_FOUND when they have no access (or it
   * is deleted and they are not its owner): ids of others' files are never confirmed.
   */
  async visible(fileId: string, userId: string, isAdmin = false): Promise<FileRow & { role: RoleName }> {
    const [row] = await this.db.execute<(FileRow & { share_role: string | null })[]>(
      `SELECT f.*, s.role AS share_role FROM "${SCHEMA}".files f
         LEFT JOIN "${SCHEMA}".shares s ON s.file_id = f.id AND s.user_id = ?
        WHERE f.id = ?`,
      [userId, fileId],
    );
    if (!row) throw notFound("file", fileId);
    const role: RoleName | undefined = row.owner_id === userId ? "owner" : (row.share_role as RoleName | null) ?? (isAdmin ? "reader" : undefined);
    if (!role || (row.deleted_at && role !== "owner" && !isAdmin)) throw notFound("file", fileId);
    return { ...row, role };
  }

  hasRole(file: { role: RoleName }, needed: RoleName): boolean {
    return ROLE_RANK[file.role] >= ROLE_RANK[needed];
  }

  async byPath(ownerId: string, path: string): Promise<FileRow | undefined> {
    const [row] = await this.db.execute<FileRow[]>(`SELECT * FROM "${SCHEMA}".files WHERE owner_id = ? AND path = ? AND deleted_at IS NULL`, [ownerId, path]);
    return row;
  }

  /** Users who can see a file (owner and shares): the audience of its events. */
  async audience(fileId: string): Promise<string[]> {
    const rows = await this.db.execute<{ user_id: string }[]>(
      `SELECT owner_id AS user_id FROM "${SCHEMA}".files WHERE id = ? UNION SELECT user_id FROM "${SCHEMA}".shares WHERE file_id = ?`,
      [fileId, fileId],
    );
    return rows.map((r) => r.user_id);
  }

  /** Creates a file with its first version; a live file already at that path means the caller is behind: ABORTED. */
  async create(
    ownerId: string,
    path: string,
    v: NewVersion,
    now: Date,
    maxStoredBytes: number,
    event: (f: FileRow, v: VersionRow) => FileEvent,
  ): Promise<{ file: FileRow; version: VersionRow }> {
    try {
      return await transaction(this.em, async (tx) => {
        await this.lockStorage(tx, ownerId);
        const id = randomUUID();
        const [file] = await tx.execute<FileRow[]>(
          `INSERT INTO "${SCHEMA}".files (id, owner_id, path, latest_version, size, sha256, created_at, updated_at)
           VALUES (?, ?, ?, 1, ?, ?, ?, ?) RETURNING *`,
          [id, ownerId, path, v.size, v.sha256, now, now],
        );
        const version = await this.insertVersion(tx, id, 1n, v, now);
        await this.checkStorage(tx, ownerId, maxStoredBytes);
        await this.events.append(tx, [event(file!, version)]);
        return { file: file!, version };
      });
    } catch (err) {
      if (isUniqueViolation(err)) {
        const existing = await this.byPath(ownerId, path);
        throw aborted("FILE_EXISTS", `${path} already exists at version ${existing?.latest_version ?? "?"}: upload with its id and base_version`, {
          latest_version: existing?.latest_version ?? "",
          file_id: existing?.id ?? "",
        });
      }
      throw err;
    }
  }

  /**
   * Adds a version on top of `baseVersion`, atomically: if someone else's version
   * got there first, nothing changes and the caller gets ABORTED. A lock held by
   * another user refuses it too, and so does a new content that would take the
   * owner past `maxStoredBytes` (RESOURCE_EXHAUSTED).
   */
  async addVersion(
    fileId: string,
    baseVersion: bigint,
    v: NewVersion,
    now: Date,
    lockToken: string,
    maxStoredBytes: number,
    event: (f: FileRow, v: VersionRow) => FileEvent,
  ): Promise<{ file: FileRow; version: VersionRow }> {
    return transaction(this.em, async (tx) => {
      const [current] = await tx.execute<FileRow[]>(`SELECT * FROM "${SCHEMA}".files WHERE id = ? FOR UPDATE`, [fileId]);
      if (!current || current.deleted_at) throw notFound("file", fileId);
      assertCanWrite(current, v.authorId, lockToken, now);
      if (BigInt(current.latest_version) !== baseVersion) {
        throw aborted("STALE_BASE_VERSION", `the latest version is ${current.latest_version}, not ${baseVersion}: fetch it and merge first`, {
          latest_version: current.latest_version,
        });
      }
      await this.lockStorage(tx, current.owner_id);
      const next = baseVersion + 1n;
      const [file] = await tx.execute<FileRow[]>(
        `UPDATE "${SCHEMA}".files SET latest_version = ?, size = ?, sha256 = ?, updated_at = ? WHERE id = ? RETURNING *`,
        [next.toString(), v.size, v.sha256, now, fileId],
      );
      const version = await this.insertVersion(tx, fileId, next, v, now);
      await this.checkStorage(tx, current.owner_id, maxStoredBytes);
      await this.events.append(tx, [event(file!, version)]);
      return { file: file!, version };
    });
  }

  /**
   * Bytes a user's files take: each distinct content (SHA-256) among all versions
   * of the files they own, deleted files included until they are purged (they can
   * be undeleted, so their bytes are still kept). Restoring a version or storing
   * content the user already has adds nothing.
   */
  async storedBytes(ownerId: string, em: EntityManager = this.db): Promise<number> {
    const [row] = await em.execute<{ n: string }[]>(
      `SELECT coalesce(sum(size), 0) AS n FROM (
         SELECT DISTINCT ON (v.sha256) v.size FROM "${SCHEMA}".versions v JOIN "${SCHEMA}".files f ON f.id = v.file_id WHERE f.owner_id = ?
       ) contents`,
      [ownerId],
    );
    return Number(row?.n ?? 0);
  }

  /** One user's new versions are recorded one at a time, so parallel uploads cannot pass the storage quota together. */
  private lockStorage(tx: EntityManager, ownerId: string) {
    return lockForTransaction(tx, `files.storage.${ownerId}`);
  }

  /** After the version is inserted, under lockStorage: over the quota rolls the whole transaction back. */
  private async checkStorage(tx: EntityManager, ownerId: string, max: number) {
    if ((await this.storedBytes(ownerId, tx)) > max) throw storageQuotaExceeded(ownerId, max);
  }

  private async insertVersion(tx: EntityManager, fileId: string, version: bigint, v: NewVersion, now: Date): Promise<VersionRow> {
    const [row] = await tx.execute<VersionRow[]>(
      `INSERT INTO "${SCHEMA}".versions (file_id, version, size, sha256, author_id, author_name, comment, restored_from, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *`,
      [fileId, version.toString(), v.size, v.sha256, v.authorId, v.authorName, v.comment, (v.restoredFrom ?? 0n).toString(), now],
    );
    return row!;
  }

  async version(fileId: string, version: bigint): Promise<VersionRow> {
    const [row] = await this.db.execute<VersionRow[]>(
      version === 0n
        ? `SELECT v.* FROM "${SCHEMA}".versions v JOIN "${SCHEMA}".files f ON f.id = v.file_id AND v.version = f.latest_version WHERE v.file_id = ?`
        : `SELECT * FROM "${SCHEMA}".versions WHERE file_id = ? AND version = ?`,
      version === 0n ? [fileId] : [fileId, version.toString()],
    );
    if (!row) throw notFound("version", `${fileId}@${version}`);
    return row;
  }

  async versions(fileId: string, before: bigint | undefined, limit: number): Promise<VersionRow[]> {
    return this.db.execute<VersionRow[]>(
      `SELECT * FROM "${SCHEMA}".versions WHERE file_id = ? AND (?::bigint IS NULL OR version < ?::bigint) ORDER BY version DESC LIMIT ?`,
      [fileId, before?.toString() ?? null, before?.toString() ?? null, limit],
    );
  }

  /**
   * The caller's files and those shared with them, by path: a page of each, through files_by_owner_path and
   * shares_by_user, merged. As one query whose condition spans the two tables (owner, or shared), PostgreSQL could
   * only test it after joining every file of every user (docs/scaling.md).
   */
  async list(userId: string, prefix: string, includeDeleted: boolean, after: [string, string] | undefined, limit: number) {
    const [path, id] = after ?? ["", "00000000-0000-0000-0000-000000000000"];
    return this.db.execute<FileRow[]>(
      `(SELECT f.*, 'owner' AS role FROM "${SCHEMA}".files f
         WHERE f.owner_id = ? AND starts_with(f.path, ?) AND (f.deleted_at IS NULL OR ?) AND (f.path, f.id) > (?, ?::uuid)
         ORDER BY f.path, f.id LIMIT ?)
       UNION ALL
       (SELECT f.*, s.role FROM "${SCHEMA}".shares s JOIN "${SCHEMA}".files f ON f.id = s.file_id
         WHERE s.user_id = ? AND f.owner_id <> ? AND starts_with(f.path, ?) AND f.deleted_at IS NULL AND (f.path, f.id) > (?, ?::uuid)
         ORDER BY f.path, f.id LIMIT ?)
       ORDER BY path, id LIMIT ?`,
      [userId, prefix, includeDeleted, path, id, limit, userId, userId, prefix, path, id, limit, limit],
    );
  }

  async setDeleted(fileId: string, deleted: boolean, now: Date, event: (f: FileRow) => FileEvent): Promise<FileRow> {
    try {
      return await transaction(this.em, async (tx) => {
        const [file] = await tx.execute<FileRow[]>(
          `UPDATE "${SCHEMA}".files SET deleted_at = ?, updated_at = ? WHERE id = ? AND (deleted_at IS NULL) = ? RETURNING *`,
          [deleted ? now : null, now, fileId, deleted],
        );
        if (!file) {
          throw failedPrecondition("STATE", `the file is ${deleted ? "already deleted" : "not deleted"}`, {
            type: "STATE",
            subject: `files/${fileId}`,
            description: deleted ? "already deleted" : "not deleted",
          });
        }
        await this.events.append(tx, [event(file)]);
        return file;
      });
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw aborted("PATH_TAKEN", "another file now has this path: rename or delete it first");
      }
      throw err;
    }
  }

  /** Takes (or, for its holder, extends) the lock; refuses while someone else holds it. */
  async lock(fileId: string, holder: { id: string; name: string }, ttlSeconds: number, now: Date, event: (f: FileRow) => FileEvent): Promise<FileRow> {
    return transaction(this.em, async (tx) => {
      const [current] = await tx.execute<FileRow[]>(`SELECT * FROM "${SCHEMA}".files WHERE id = ? FOR UPDATE`, [fileId]);
      if (!current) throw notFound("file", fileId);
      if (lockHeld(current, now) && current.lock_holder_id !== holder.id) throw lockedBy(current);
      const token = lockHeld(current, now) ? current.lock_token! : randomUUID();
      const [file] = await tx.execute<FileRow[]>(
        `UPDATE "${SCHEMA}".files SET lock_holder_id = ?, lock_holder_name = ?, lock_token = ?, lock_expires_at = ? WHERE id = ? RETURNING *`,
        [holder.id, holder.name, token, new Date(now.getTime() + ttlSeconds * 1000), fileId],
      );
      await this.events.append(tx, [event(file!)]);
      return file!;
    });
  }

  async refreshLock(fileId: string, token: string, ttlSeconds: number, now: Date): Promise<FileRow> {
    const [file] = await this.db.execute<FileRow[]>(
      `UPDATE "${SCHEMA}".files SET lock_expires_at = ? WHERE id = ? AND lock_token = ? AND lock_expires_at > ? RETURNING *`,
      [new Date(now.getTime() + ttlSeconds * 1000), fileId, token, now],
    );
    if (!file) throw noSuchLock(fileId);
    return file;
  }

  /** Releases the lock: with its token, or any lock when `force`. */
  async unlock(fileId: string, token: string, force: boolean, now: Date, event: (f: FileRow) => FileEvent): Promise<void> {
    await transaction(this.em, async (tx) => {
      const [file] = await tx.execute<FileRow[]>(
        `UPDATE "${SCHEMA}".files SET lock_holder_id = NULL, lock_holder_name = NULL, lock_token = NULL, lock_expires_at = NULL
          WHERE id = ? AND lock_expires_at > ? AND (? OR lock_token = ?) RETURNING *`,
        [fileId, now, force, token],
      );
      if (!file) throw noSuchLock(fileId);
      await this.events.append(tx, [event(file)]);
    });
  }

  async share(fileId: string, userId: string, role: "reader" | "editor" | "none"): Promise<void> {
    if (role === "none") {
      await this.db.execute(`DELETE FROM "${SCHEMA}".shares WHERE file_id = ? AND user_id = ?`, [fileId, userId]);
    } else {
      await this.db.execute(
        `INSERT INTO "${SCHEMA}".shares (file_id, user_id, role) VALUES (?, ?, ?) ON CONFLICT (file_id, user_id) DO UPDATE SET role = excluded.role`,
        [fileId, userId, role],
      );
    }
  }

  /** Gives READER access to users who have none (never reduces anyone's access). */
  async grantRead(fileId: string, ownerId: string, userIds: string[]): Promise<void> {
    const others = [...new Set(userIds)].filter((u) => u !== ownerId);
    if (others.length === 0) return;
    await this.db.execute(
      `INSERT INTO "${SCHEMA}".shares (file_id, user_id, role) SELECT ?, unnest(?::uuid[]), 'reader' ON CONFLICT DO NOTHING`,
      [fileId, `{${others.join(",")}}`],
    );
  }

  // --- unary uploads ---

  /** Stages an upload unless the user already has `maxOpen` unfinished ones (false then). */
  async beginUpload(id: string, user: { id: string; name: string }, metadata: Uint8Array, expiresAt: Date, now: Date, maxOpen: number): Promise<boolean> {
    return transaction(this.em, async (tx) => {
      // One user's uploads begin one at a time, so concurrent calls cannot pass the quota together.
      await lockForTransaction(tx, `files.uploads.${user.id}`);
      const [{ n }] = await tx.execute<{ n: number }[]>(`SELECT count(*)::int AS n FROM "${SCHEMA}".uploads WHERE user_id = ? AND expires_at > ?`, [user.id, now]);
      if (n! >= maxOpen) return false;
      await tx.execute(
        `INSERT INTO "${SCHEMA}".uploads (id, user_id, username, metadata, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
        [id, user.id, user.name, Buffer.from(metadata), expiresAt, now],
      );
      return true;
    });
  }

  async upload(id: string, userId: string, now: Date) {
    const [row] = await this.db.execute<{ id: string; metadata: Buffer; received: string; expires_at: Date; username: string }[]>(
      `SELECT * FROM "${SCHEMA}".uploads WHERE id = ? AND user_id = ? AND expires_at > ?`,
      [id, userId, now],
    );
    if (!row) throw notFound("upload", id);
    return row;
  }

  async setReceived(id: string, received: number): Promise<void> {
    await this.db.execute(`UPDATE "${SCHEMA}".uploads SET received = ? WHERE id = ?`, [received, id]);
  }

  async endUpload(id: string): Promise<void> {
    await this.db.execute(`DELETE FROM "${SCHEMA}".uploads WHERE id = ?`, [id]);
  }

  /** Unary uploads nobody finished in time: their rows go, and the caller removes their staged bytes. */
  async expiredUploads(now: Date): Promise<string[]> {
    const rows = await this.db.execute<{ id: string }[]>(`DELETE FROM "${SCHEMA}".uploads WHERE expires_at <= ? RETURNING id`, [now]);
    return rows.map((r) => r.id);
  }

  async uploadExists(id: string): Promise<boolean> {
    const rows = await this.db.execute(`SELECT 1 FROM "${SCHEMA}".uploads WHERE id = ?`, [id]);
    return rows.length > 0;
  }

  // --- retention and collection ---

  async purgeDeleted(before: Date): Promise<number> {
    const rows = await this.db.execute(`DELETE FROM "${SCHEMA}".files WHERE deleted_at IS NOT NULL AND deleted_at <= ? RETURNING 1`, [before]);
    return rows.length;
  }

  async isReferenced(sha256: string): Promise<boolean> {
    const rows = await this.db.execute(`SELECT 1 FROM "${SCHEMA}".versions WHERE sha256 = ? LIMIT 1`, [sha256]);
    return rows.length > 0;
  }
}

function assertCanWrite(file: FileRow, userId: string, lockToken: string, now: Date): void {
  if (!lockHeld(file, now)) return;
  if (file.lock_holder_id !== userId) throw lockedBy(file);
  if (lockToken && lockToken !== file.lock_token) throw noSuchLock(file.id);
}

export function lockedBy(file: FileRow) {
  const expires = new Date(file.lock_expires_at!).toISOString();
  return failedPrecondition(
    "FILE_LOCKED",
    `${file.path} is locked by ${file.lock_holder_name} until ${expires}`,
    { type: "LOCK", subject: `files/${file.id}`, description: `locked by ${file.lock_holder_name} until ${expires}` },
    { lock_holder_id: file.lock_holder_id ?? "", lock_holder_name: file.lock_holder_name ?? "", lock_expire_time: expires },
  );
}

function noSuchLock(fileId: string) {
  return failedPrecondition("NO_SUCH_LOCK", "that lock is not held (wrong token, or it expired)", {
    type: "LOCK",
    subject: `files/${fileId}`,
    description: "no lock with this token",
  });
}
