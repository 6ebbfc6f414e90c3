import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Role, UserProfileSchema, UserSchema as UserMessageSchema, type User, type UserProfile } from "../../../gen/agora/identity/v1/identity_pb.js";
import type { RoleName } from "../../platform/auth.js";
import type { UserEntity } from "./user.entity.js";

export const roleToProto = (role: RoleName): Role => (role === "admin" ? Role.ADMIN : Role.USER);
export const roleFromProto = (role: Role): RoleName => (role === Role.ADMIN ? "admin" : "user");

export function toUser(u: UserEntity): User {
  return create(UserMessageSchema, {
    id: u.id,
    username: u.username,
    displayName: u.displayName,
    email: u.email,
    role: roleToProto(u.role),
    disabled: u.disabled,
    createTime: timestampFromDate(u.createdAt),
  });
}

export function toUserProfile(u: UserEntity): UserProfile {
  return create(UserProfileSchema, { id: u.id, username: u.username, displayName: u.displayName });
}
