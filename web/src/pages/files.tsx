import { timestampMs } from "@bufbuild/protobuf/wkt";
import { useEffect, useState } from "preact/hooks";
import { followWatch } from "../api";
import { withAbort } from "../state";
import { download, files, upload as store } from "../transfer";
import { ErrorText, formatBytes, formatTime, useAction } from "../ui";
import { Role, type File as StoredFile, type FileVersion } from "../../../gen/agora/files/v1/files_pb.js";

/** Lock tokens of the locks this page took (the server shows a token only to its holder, once). */
const lockTokens = new Map<string, string>();

export function Files() {
  const [prefix, setPrefix] = useState("");
  const [showDeleted, setShowDeleted] = useState(false);
  const [list, setList] = useState<StoredFile[]>([]);
  // Which folder `list` shows: until the first answer for this one, it says "Loading…" (not "empty").
  const [listed, setListed] = useState<string | null>(null);
  const folder = `${prefix}|${showDeleted}`;
  const [selected, setSelected] = useState<string | null>(null);
  const [reloads, setReloads] = useState(0);
  const [progress, setProgress] = useState<{ name: string; sent: number; total: number } | null>(null);
  const action = useAction();
  const reload = () => setReloads((n) => n + 1);

  useEffect(() => {
    void action.run(async () => {
      const res = await files.listFiles({ prefix, includeDeleted: showDeleted, pageSize: 1000 });
      setList(res.files);
      setListed(folder);
    });
  }, [prefix, showDeleted, reloads]);

  // Live: any version, lock or delete event reloads the folder.
  useEffect(
    () =>
      withAbort((signal) => followWatch(signal, (afterCursor, s) => files.watchFiles({ afterCursor }, { signal: s }), { event: reload, resync: reload })),
    [],
  );

  // Folders are the next path segment below the prefix; files are the rest.
  const shown = listed === folder ? list : [];
  const folders = [...new Set(shown.map((f) => f.path.slice(prefix.length)).filter((rest) => rest.includes("/")).map((rest) => rest.split("/")[0]!))].sort();
  const here = shown.filter((f) => !f.path.slice(prefix.length).includes("/"));
  const crumbs = prefix.split("/").filter(Boolean);
  const file = list.find((f) => f.id === selected);

  const upload = (chosen: globalThis.File) =>
    void action.run(async () => {
      const path = prefix + chosen.name;
      const existing = list.find((f) => f.path === path && !f.deleted);
      const data = new Uint8Array(await chosen.arrayBuffer());
      setProgress({ name: chosen.name, sent: 0, total: data.length });
      const target = existing ? { case: "fileId" as const, value: existing.id } : { case: "path" as const, value: path };
      const file = await store(
        data,
        { target, baseVersion: existing?.latestVersion ?? 0n, lockToken: existing ? (lockTokens.get(existing.id) ?? "") : "" },
        (sent) => setProgress({ name: chosen.name, sent, total: data.length }),
      );
      setSelected(file.id);
      reload();
    });

  return (
    <section aria-labelledby="files-title">
      <div class="page-head">
        <h1 id="files-title">Files</h1>
      </div>
      <nav aria-label="Folder" class="crumbs">
        <button type="button" onClick={() => setPrefix("")} aria-current={prefix === "" ? "location" : undefined}>
          My files
        </button>
        {crumbs.map((c, i) => (
          <>
            <span aria-hidden="true"> / </span>
            <button type="button" onClick={() => setPrefix(`${crumbs.slice(0, i + 1).join("/")}/`)} aria-current={i === crumbs.length - 1 ? "location" : undefined}>
              {c}
            </button>
          </>
        ))}
      </nav>
      <div class="toolbar">
        <label class="field">
          <span>Upload into {prefix || "My files"}</span>
          <input
            type="file"
            onChange={(e) => {
              const chosen = e.currentTarget.files?.[0];
              if (chosen) upload(chosen);
              e.currentTarget.value = "";
            }}
          />
        </label>
        <label class="check">
          <input type="checkbox" checked={showDeleted} onChange={(e) => setShowDeleted(e.currentTarget.checked)} /> Show deleted
        </label>
        {progress && (
          <div class="progress">
            <label>
              Uploading {progress.name}: {Math.round((progress.sent / Math.max(1, progress.total)) * 100)}%
              <progress max={progress.total} value={progress.sent} />
            </label>
          </div>
        )}
      </div>
      <ErrorText error={action.error} />
      <div class="two wide-right">
        <table class="grid">
          <caption class="sr-only">Files in {prefix || "My files"}</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Size</th>
              <th scope="col">Version</th>
              <th scope="col">Updated</th>
              <th scope="col">State</th>
            </tr>
          </thead>
          <tbody>
            {folders.map((name) => (
              <tr key={`d:${name}`}>
                <td colSpan={5}>
                  <button type="button" class="link" onClick={() => setPrefix(`${prefix}${name}/`)}>
                    📁 {name}/
                  </button>
                </td>
              </tr>
            ))}
            {here.map((f) => (
              <tr key={f.id} aria-selected={f.id === selected}>
                <td>
                  <button type="button" class="link" onClick={() => setSelected(f.id)}>
                    📄 {f.path.slice(prefix.length)}
                  </button>
                </td>
                <td class="num">{formatBytes(Number(f.size))}</td>
                <td class="num">v{String(f.latestVersion)}</td>
                <td>{f.updateTime ? formatTime(timestampMs(f.updateTime)) : ""}</td>
                <td>
                  {f.deleted && <span class="badge bad">Deleted</span>}
                  {f.lock && <span class="badge warn">🔒 Locked by {f.lock.holderName}</span>}
                </td>
              </tr>
            ))}
            {folders.length + here.length === 0 && (
              <tr>
                <td colSpan={5}>{listed === folder ? "This folder is empty." : "Loading…"}</td>
              </tr>
            )}
          </tbody>
        </table>
        {file ? <Details file={file} onChange={reload} /> : <p class="muted">Choose a file to see its versions.</p>}
      </div>
    </section>
  );
}

function Details(props: { file: StoredFile; onChange: () => void }) {
  const f = props.file;
  const [versions, setVersions] = useState<FileVersion[]>([]);
  const { busy, error, run } = useAction();
  useEffect(() => {
    void run(async () => setVersions((await files.listVersions({ fileId: f.id, pageSize: 100 })).versions));
  }, [f.id, String(f.latestVersion)]);
  const act = (fn: () => Promise<unknown>) =>
    void run(async () => {
      await fn();
      props.onChange();
    });
  const name = f.path.split("/").pop()!;
  const token = lockTokens.get(f.id);
  const canEdit = f.role === Role.EDITOR || f.role === Role.OWNER;
  return (
    <aside aria-labelledby="file-title" class="details">
      <h2 id="file-title">{f.path}</h2>
      <p class="muted">
        {formatBytes(Number(f.size))} · SHA-256 {f.sha256.slice(0, 12)}… · you are {Role[f.role]!.toLowerCase()}
      </p>
      {f.lock ? (
        <p>
          🔒 Locked by <strong>{f.lock.holderName}</strong>
          {f.lock.expireTime && ` until ${formatTime(timestampMs(f.lock.expireTime))}`}
        </p>
      ) : (
        <p>Not locked.</p>
      )}
      <div class="buttons wrap">
        {!f.lock && canEdit && !f.deleted && (
          <button
            type="button"
            disabled={busy}
            onClick={() =>
              act(async () => {
                const { lock } = await files.lockFile({ fileId: f.id, ttlSeconds: 900 });
                lockTokens.set(f.id, lock!.token);
              })
            }
          >
            Lock
          </button>
        )}
        {f.lock && (token || f.role === Role.OWNER) && (
          <button
            type="button"
            disabled={busy}
            onClick={() =>
              act(async () => {
                await files.unlockFile({ fileId: f.id, token: token ?? "", force: !token });
                lockTokens.delete(f.id);
              })
            }
          >
            Unlock
          </button>
        )}
        {f.role === Role.OWNER &&
          (f.deleted ? (
            <button type="button" disabled={busy} onClick={() => act(() => files.undeleteFile({ fileId: f.id }))}>
              Undelete
            </button>
          ) : (
            <button type="button" class="danger" disabled={busy} onClick={() => act(() => files.deleteFile({ fileId: f.id }))}>
              Delete
            </button>
          ))}
      </div>
      <ErrorText error={error} />
      <h3>Versions</h3>
      <ol class="versions" aria-label={`Versions of ${name}`}>
        {versions.map((v) => (
          <li key={String(v.version)}>
            <span>
              <strong>v{String(v.version)}</strong> {formatBytes(Number(v.size))} by {v.authorName}
              {v.restoredFrom > 0n && ` (restored from v${v.restoredFrom})`}
              <br />
              <small class="muted">{v.createTime ? formatTime(timestampMs(v.createTime)) : ""}</small>
            </span>
            <span class="buttons">
              <button type="button" onClick={() => void run(() => download(f.id, v.version, name))} aria-label={`Download v${v.version}`}>
                Download
              </button>
              {canEdit && v.version !== f.latestVersion && !f.deleted && (
                <button
                  type="button"
                  aria-label={`Restore v${v.version}`}
                  disabled={busy}
                  onClick={() => act(() => files.restoreVersion({ fileId: f.id, version: v.version, baseVersion: f.latestVersion, lockToken: token ?? "" }))}
                >
                  Restore
                </button>
              )}
            </span>
          </li>
        ))}
      </ol>
    </aside>
  );
}
