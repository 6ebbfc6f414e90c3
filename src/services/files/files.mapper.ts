import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { FileSchema, FileVersionSchema, Role, type File, type FileVersion } from "../../../gen/agora/files/v1/files_pb.js";
import { lockHeld, type FileRow, type RoleName, type VersionRow } from "./files.repository.js";

const ROLE: Record<RoleName, Role> = { owner: Role.OWNER, editor: Role.EDITOR, reader: Role.READER };
export const roleToProto = (r: RoleName | undefined) => (r ? ROLE[r] : Role.UNSPECIFIED);

/** The file as `viewerId` may see it: the lock token only for its holder. */
export function toFile(f: FileRow, viewerId: string, now: Date): File {
  return create(FileSchema, {
    id: f.id,
    ownerId: f.owner_id,
    path: f.path,
    latestVersion: BigInt(f.latest_version),
    size: BigInt(f.size),
    sha256: f.sha256,
    deleted: f.deleted_at !== null,
    deleteTime: f.deleted_at ? timestampFromDate(new Date(f.deleted_at)) : undefined,
    lock: lockHeld(f, now)
      ? {
          holderId: f.lock_holder_id!,
          holderName: f.lock_holder_name ?? "",
          expireTime: timestampFromDate(new Date(f.lock_expires_at!)),
          token: f.lock_holder_id === viewerId ? (f.lock_token ?? "") : "",
        }
      : undefined,
    role: roleToProto(f.role),
    createTime: timestampFromDate(new Date(f.created_at)),
    updateTime: timestampFromDate(new Date(f.updated_at)),
  });
}

export function toVersion(v: VersionRow): FileVersion {
  return create(FileVersionSchema, {
    fileId: v.file_id,
    version: BigInt(v.version),
    size: BigInt(v.size),
    sha256: v.sha256,
    authorId: v.author_id,
    authorName: v.author_name,
    comment: v.comment,
    restoredFrom: BigInt(v.restored_from),
    createTime: timestampFromDate(new Date(v.created_at)),
  });
}
