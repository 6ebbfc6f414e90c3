import { createHash, randomUUID } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";

/** A blob being written: content goes in, its SHA-256 and size come out. */
export interface BlobWriter {
  write(chunk: Uint8Array): Promise<void>;
  readonly size: number;
  /**
   * Closes and hashes the bytes (durably synced) and returns the hex SHA-256;
   * with `expected`, a different hash throws the bytes away and fails instead.
   */
  seal(expected?: string): Promise<string>;
  /** Puts the sealed bytes in place under their hash (or drops them when that content is already stored). */
  publish(): Promise<void>;
  /** Closes the file without committing (a staged upload continues later). */
  close(): Promise<void>;
  /** Throws the written bytes away (the upload failed). */
  abort(): Promise<void>;
}

/**
 * Content-addressed storage. The local disk implementation serves one host; an
 * S3-compatible store can implement the same interface when several hosts
 * serve files.
 */
export interface BlobStore {
  /** A new blob writer; its temp file is called `tempName` (so the caller can protect it before it exists). */
  writer(tempName: string): Promise<BlobWriter>;
  newTempName(): string;
  stagedName(id: string): string;
  /** A writer that continues a staged upload kept under `id` (unary uploads) at byte `at`. */
  staged(id: string, at: number): Promise<BlobWriter>;
  /** Deletes a staged upload's bytes (the upload expired or was committed elsewhere). */
  removeStaged(id: string): Promise<void>;
  /**
   * The blob's bytes from `offset`, `chunkSize` at a time, read into one buffer:
   * a chunk is valid until the next one is asked for, so send (serialize) or
   * copy it first. Breaking off the loop closes the file.
   */
  read(sha256: string, offset: number, chunkSize: number): AsyncIterable<Uint8Array>;
  size(sha256: string): Promise<number>;
  /** Hashes of stored blobs last written before `before`. */
  list(before: Date): AsyncIterable<string>;
  remove(sha256: string): Promise<void>;
  /** Deletes temporary files older than `before` (writers that never finished), except those `keep` names. */
  removeStaleTemp(before: Date, keep: (name: string) => boolean | Promise<boolean>): Promise<number>;
}

const HEX = /^[0-9a-f]{64}$/;

/** The content is not what the client said it would be. */
export class ChecksumMismatch extends Error {
  constructor(readonly actual: string) {
    super(`content SHA-256 is ${actual}`);
  }
}

/**
 * Blobs under `<root>/sha256/ab/cd/<hex>`. Writes go to `<root>/tmp`, are
 * synced, then renamed into place, so a blob is either complete or absent.
 * Only hashes name files: user-chosen names never reach the filesystem.
 */
export class LocalBlobStore implements BlobStore {
  private readonly tmp: string;

  constructor(private readonly root: string) {
    this.tmp = path.join(root, "tmp");
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.tmp, { recursive: true });
    await fsp.mkdir(path.join(this.root, "sha256"), { recursive: true });
  }

  private blobPath(sha256: string): string {
    if (!HEX.test(sha256)) throw new Error(`not a SHA-256: ${sha256}`);
    return path.join(this.root, "sha256", sha256.slice(0, 2), sha256.slice(2, 4), sha256);
  }

  newTempName(): string {
    return `${randomUUID()}.part`;
  }

  async writer(tempName: string): Promise<BlobWriter> {
    if (!/^[0-9a-f-]{36}\.part$/.test(tempName)) throw new Error("bad temp name");
    return this.open(path.join(this.tmp, tempName), 0);
  }

  /** The temp file name a staged upload uses. */
  stagedName(id: string): string {
    return `upload-${id}.part`;
  }

  async staged(id: string, at: number): Promise<BlobWriter> {
    if (!/^[0-9a-f-]{36}$/.test(id)) throw new Error("bad upload id");
    const file = path.join(this.tmp, this.stagedName(id));
    const exists = await fsp.stat(file).then(() => true, () => false);
    return this.open(file, at, exists);
  }

  private async open(file: string, start: number, exists = false): Promise<BlobWriter> {
    const handle = await fsp.open(file, exists ? "r+" : "w", 0o600);
    let size = start;
    let sealed: string | undefined;
    // Written from the first byte by this writer: hashed as it is written. Reading the file back
    // after the sync would read the page cache, the same bytes, so it would prove nothing more.
    // A staged upload continued here (start > 0) is hashed from the file when sealed.
    const hash = start === 0 ? createHash("sha256") : undefined;
    const store = this;
    return {
      get size() {
        return size;
      },
      async write(chunk) {
        hash?.update(chunk);
        const { bytesWritten } = await handle.write(chunk, 0, chunk.length, size);
        if (bytesWritten !== chunk.length) throw new Error(`short write: ${bytesWritten} of ${chunk.length} bytes`);
        size += chunk.length;
      },
      async seal(expected) {
        await handle.truncate(size); // exactly what was written, nothing a crashed earlier attempt left
        await handle.sync();
        await handle.close();
        sealed = hash ? hash.digest("hex") : await hashFile(file);
        if (expected && expected !== sealed) {
          await fsp.rm(file, { force: true });
          throw new ChecksumMismatch(sealed);
        }
        return sealed;
      },
      async publish() {
        if (!sealed) throw new Error("seal before publishing");
        const target = store.blobPath(sealed);
        await fsp.mkdir(path.dirname(target), { recursive: true });
        if (fs.existsSync(target)) {
          await fsp.rm(file, { force: true }); // identical content is stored once
          await fsp.utimes(target, new Date(), new Date());
        } else {
          await fsp.rename(file, target);
        }
      },
      async abort() {
        await handle.close().catch(() => undefined);
        await fsp.rm(file, { force: true });
      },
      async close() {
        await handle.close();
      },
    };
  }

  async removeStaged(id: string): Promise<void> {
    if (!/^[0-9a-f-]{36}$/.test(id)) return;
    await fsp.rm(path.join(this.tmp, this.stagedName(id)), { force: true });
  }

  async *read(sha256: string, offset: number, chunkSize: number): AsyncIterable<Uint8Array> {
    const handle = await fsp.open(this.blobPath(sha256), "r");
    // One buffer for the whole download: a fresh one per chunk costs page faults and garbage collections.
    const buffer = Buffer.allocUnsafe(chunkSize);
    try {
      for (let position = offset; ; ) {
        const { bytesRead } = await handle.read(buffer, 0, chunkSize, position);
        if (bytesRead === 0) return;
        position += bytesRead;
        yield buffer.subarray(0, bytesRead);
      }
    } finally {
      await handle.close();
    }
  }

  async size(sha256: string): Promise<number> {
    return (await fsp.stat(this.blobPath(sha256))).size;
  }

  async *list(before: Date): AsyncIterable<string> {
    const base = path.join(this.root, "sha256");
    for (const a of await fsp.readdir(base).catch(() => [])) {
      for (const b of await fsp.readdir(path.join(base, a)).catch(() => [])) {
        for (const name of await fsp.readdir(path.join(base, a, b)).catch(() => [])) {
          if (!HEX.test(name)) continue;
          const stat = await fsp.stat(path.join(base, a, b, name)).catch(() => undefined);
          if (stat && stat.mtime < before) yield name;
        }
      }
    }
  }

  async remove(sha256: string): Promise<void> {
    await fsp.rm(this.blobPath(sha256), { force: true });
  }

  async removeStaleTemp(before: Date, keep: (name: string) => boolean | Promise<boolean>): Promise<number> {
    let removed = 0;
    for (const name of await fsp.readdir(this.tmp).catch(() => [])) {
      const file = path.join(this.tmp, name);
      const stat = await fsp.stat(file).catch(() => undefined);
      // Asked at the last moment: a writer that started during this sweep is protected too.
      if (stat && stat.mtime < before && !(await keep(name))) {
        await fsp.rm(file, { force: true });
        removed++;
      }
    }
    return removed;
  }
}

async function hashFile(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const c of fs.createReadStream(file, { highWaterMark: 1024 * 1024 })) hash.update(c as Buffer);
  return hash.digest("hex");
}
