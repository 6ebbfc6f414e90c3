import { timestampMs } from "@bufbuild/protobuf/wkt";
import { useEffect, useState } from "preact/hooks";
import { identity, session } from "../api";
import { useSignal } from "../state";
import { ErrorText, Pager, formatTime, useAction } from "../ui";
import { Role, type User } from "../../../gen/agora/identity/v1/identity_pb.js";

const PAGE_SIZE = 50;

export function Admin() {
  const me = useSignal(session)!.user;
  const [pages, setPages] = useState<string[]>([""]);
  const [users, setUsers] = useState<User[]>([]);
  const [next, setNext] = useState("");
  const { busy, error, run } = useAction();
  const token = pages[pages.length - 1]!;

  useEffect(() => {
    void run(async () => {
      const res = await identity.listUsers({ pageSize: PAGE_SIZE, pageToken: token });
      setUsers(res.users);
      setNext(res.nextPageToken);
    });
  }, [token]);

  const replace = (user: User | undefined) => user && setUsers((all) => all.map((u) => (u.id === user.id ? user : u)));

  return (
    <section aria-labelledby="admin-title">
      <div class="page-head">
        <h1 id="admin-title">Users</h1>
      </div>
      <ErrorText error={error} />
      <table class="grid" aria-busy={busy}>
        <caption class="sr-only">Users, their roles and whether they may sign in</caption>
        <thead>
          <tr>
            <th scope="col">Username</th>
            <th scope="col">Display name</th>
            <th scope="col">Email</th>
            <th scope="col">Role</th>
            <th scope="col">Status</th>
            <th scope="col">Joined</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {users.map((u) => (
            <tr key={u.id}>
              <td>{u.username}</td>
              <td>{u.displayName}</td>
              <td>{u.email}</td>
              <td>
                <select
                  aria-label={`Role of ${u.username}`}
                  value={u.role}
                  disabled={busy || u.disabled}
                  onChange={(e) => {
                    const role = Number(e.currentTarget.value) as Role;
                    void run(async () => replace((await identity.setUserRole({ userId: u.id, role })).user));
                  }}
                >
                  <option value={Role.USER}>user</option>
                  <option value={Role.ADMIN}>admin</option>
                </select>
              </td>
              <td>{u.disabled ? <span class="badge bad">Disabled</span> : <span class="badge ok">Active</span>}</td>
              <td>{u.createTime ? formatTime(timestampMs(u.createTime)) : ""}</td>
              <td>
                {!u.disabled && u.id !== me.id && (
                  <button
                    type="button"
                    class="danger"
                    aria-label={`Disable ${u.username}`}
                    disabled={busy}
                    onClick={() => {
                      if (confirm(`Disable ${u.username}? They are signed out and cannot sign in again.`))
                        void run(async () => replace((await identity.disableUser({ userId: u.id })).user));
                    }}
                  >
                    Disable
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Pager label="Pages of users" pages={pages} next={next} onChange={setPages} />
    </section>
  );
}
