import { timestampMs } from "@bufbuild/protobuf/wkt";
import { useEffect, useRef, useState } from "preact/hooks";
import { client, keepStreaming, session } from "../api";
import { useSignal, withAbort } from "../state";
import { download, upload } from "../transfer";
import { ErrorText, Field, formatBytes, useAction } from "../ui";
import {
  ChatService,
  MessageKind,
  Presence,
  RoomVisibility,
  type ChatResponse,
  type Destination,
  type Message,
  type Room,
} from "../../../gen/agora/chat/v1/chat_pb.js";

const chat = client(ChatService);
const PAGE = 30;
/** While keys are pressed, "typing" is sent at most this often (others show it for TYPING_SHOWN_MS). */
const TYPING_EVERY_MS = 3000;
const TYPING_SHOWN_MS = 4000;

interface Conversation {
  id: string;
  title: string;
  to: Destination["target"];
  messages: Message[];
  unread: number;
  more: boolean;
}

const PRESENCE: Record<number, [string, string]> = {
  [Presence.ONLINE]: ["Online", "●"],
  [Presence.AWAY]: ["Away", "◐"],
  [Presence.BUSY]: ["Busy", "⊘"],
  [Presence.OFFLINE]: ["Offline", "○"],
};

export function PresenceDot(props: { presence: Presence }) {
  const [label, mark] = PRESENCE[props.presence] ?? PRESENCE[Presence.OFFLINE]!;
  return (
    <span class={`presence p${props.presence}`} title={label}>
      <span aria-hidden="true">{mark}</span> <span class="sr-label">{label}</span>
    </span>
  );
}

export function Chat() {
  const me = useSignal(session)!.user;
  const [rooms, setRooms] = useState<Room[]>([]);
  const [memberOf, setMemberOf] = useState<Set<string>>(new Set());
  const [online, setOnline] = useState<{ userId: string; username: string; presence: Presence }[]>([]);
  const [myPresence, setMyPresence] = useState(Presence.ONLINE);
  const [typing, setTyping] = useState<Record<string, { userId: string; username: string; until: number }>>({});
  const [live, setLive] = useState(false);
  const [, bump] = useState(0);
  // Conversations by id, and the last sequence seen in each (the cursors Subscribe resumes from).
  const convs = useRef(new Map<string, Conversation>()).current;
  const cursors = useRef(new Map<string, bigint>()).current;
  const [active, setActive] = useState<string | null>(null);
  const activeRef = useRef(active);
  activeRef.current = active;
  const actions = useAction();

  const refresh = () => bump((n) => n + 1);

  /**
   * Adds messages once each (by sequence), in order; counts unread ones outside the open tab.
   * The cursor moves to the newest, except for the answer to an own send (`own`), which may
   * arrive ahead of others' messages still on the stream: it moves only over a gap-free run.
   */
  function take(conv: Conversation, messages: Message[], fromLive: boolean, own = false) {
    const seen = new Set(conv.messages.map((m) => m.sequence));
    const fresh = messages.filter((m) => !seen.has(m.sequence));
    if (fresh.length === 0) return;
    conv.messages = [...conv.messages, ...fresh].sort((a, b) => Number(a.sequence - b.sequence));
    const newest = conv.messages[conv.messages.length - 1]!.sequence;
    let cursor = cursors.get(conv.id) ?? 0n;
    if (!own && newest > cursor) cursor = newest;
    if (own) for (const m of conv.messages) if (m.sequence === cursor + 1n) cursor = m.sequence;
    if (cursor > 0n) cursors.set(conv.id, cursor);
    if (fromLive && conv.id !== activeRef.current) conv.unread += fresh.filter((m) => m.senderId !== me.id).length;
  }

  async function open(to: Destination["target"], title: string): Promise<string> {
    const res = await chat.getHistory({ conversation: { target: to }, pageSize: PAGE });
    // A direct conversation nobody wrote in yet has no id (reading creates none): a provisional one until the first message.
    const id = res.conversationId || provisionalId(to.value!);
    let conv = convs.get(id);
    if (!conv) {
      conv = { id, title, to, messages: [], unread: 0, more: res.more };
      convs.set(conv.id, conv);
    }
    conv.more = res.more && conv.messages.length === 0 ? true : conv.more;
    take(conv, res.messages, false);
    return conv.id;
  }

  async function loadRooms() {
    const { rooms } = await chat.listRooms({ pageSize: 100 });
    setRooms(rooms);
    const mine = new Set<string>();
    for (const room of rooms) {
      const { members } = await chat.listMembers({ roomId: room.id });
      if (members.some((m) => m.userId === me.id)) {
        mine.add(room.id);
        if (!convs.has(room.id)) await open({ case: "roomId", value: room.id }, `# ${room.name}`);
      }
    }
    setMemberOf(mine);
    if (!activeRef.current && mine.size > 0) setActive([...mine][0]!);
    refresh();
  }

  const loadOnline = async () => setOnline((await chat.listOnlineUsers({ pageSize: 100 })).users);

  // Load rooms, then stay live: every conversation's messages, presence and typing,
  // resumed from the cursors after a dropped connection (no loss, no duplicates). One stream for
  // the page's life: the server makes it follow rooms joined and direct conversations begun since
  // it opened (resubscribing instead would leave a gap in which typing and presence are lost).
  useEffect(
    () =>
      withAbort((signal) => {
        void (async () => {
          await actions.run(async () => {
            await chat.setPresence({ presence: Presence.ONLINE });
            await Promise.all([loadRooms(), loadOnline()]);
          });
          await keepStreaming(
            signal,
            async (live) => {
              const from = [...cursors].map(([conversationId, afterSequence]) => ({ conversationId, afterSequence }));
              for await (const res of chat.subscribe({ cursors: from }, { signal: live })) if (res.event) handle(res.event);
            },
            setLive,
          );
        })();
      }),
    [],
  );

  /** A message from the stream, or the answer to this page's own send (which may beat a reconnecting stream). */
  function receive(m: Message, own = false) {
    let conv = convs.get(m.conversationId);
    const other = m.senderId === me.id ? m.recipientId : m.senderId;
    const provisional = m.recipientId ? convs.get(provisionalId(other)) : undefined;
    if (!conv && provisional) {
      // The first message of a direct conversation opened before it existed: the tab takes its real id.
      convs.delete(provisional.id);
      if (activeRef.current === provisional.id) setActive(m.conversationId);
      conv = Object.assign(provisional, { id: m.conversationId });
      convs.set(conv.id, conv);
    }
    if (!conv) {
      if (!m.recipientId) return; // a room this page has not opened yet
      conv = { id: m.conversationId, title: `@ ${m.senderId === me.id ? other : m.senderName}`, to: { case: "userId", value: other }, messages: [], unread: 0, more: m.sequence > 1n };
      convs.set(conv.id, conv);
    }
    take(conv, [m], true, own);
    // The message the typing notice announced has arrived.
    setTyping((all) => (all[m.conversationId]?.userId === m.senderId ? { ...all, [m.conversationId]: { ...all[m.conversationId]!, until: 0 } } : all));
    refresh();
  }

  function handle(event: ChatResponse) {
    const e = event.event;
    if (e.case === "message") {
      receive(e.value);
    } else if (e.case === "presence") {
      const p = e.value;
      setOnline((list) => [...list.filter((u) => u.userId !== p.userId), ...(p.presence === Presence.OFFLINE ? [] : [{ userId: p.userId, username: p.username, presence: p.presence }])]);
    } else if (e.case === "typing" && e.value.userId !== me.id) {
      const t = e.value;
      setTyping((all) => ({ ...all, [t.conversationId]: { userId: t.userId, username: t.username, until: Date.now() + TYPING_SHOWN_MS } }));
      setTimeout(() => setTyping((all) => ({ ...all })), TYPING_SHOWN_MS + 100);
    }
  }

  const conv = active ? convs.get(active) : undefined;
  useEffect(() => {
    if (conv && conv.unread) {
      conv.unread = 0;
      refresh();
    }
  }, [active, conv?.messages.length]);

  const earlier = () =>
    void actions.run(async () => {
      if (!conv) return;
      const first = conv.messages[0]?.sequence ?? 0n;
      const res = await chat.getHistory({ conversation: { target: conv.to }, beforeSequence: first, pageSize: PAGE });
      conv.more = res.more;
      take(conv, res.messages, false);
      refresh();
    });

  const join = (room: Room) =>
    void actions.run(async () => {
      await chat.joinRoom({ roomId: room.id });
      const id = await open({ case: "roomId", value: room.id }, `# ${room.name}`);
      setMemberOf(new Set([...memberOf, room.id]));
      setActive(id);
    });

  const leave = (room: Room) =>
    void actions.run(async () => {
      await chat.leaveRoom({ roomId: room.id });
      convs.delete(room.id);
      cursors.delete(room.id);
      setMemberOf(new Set([...memberOf].filter((id) => id !== room.id)));
      setActive(null);
    });

  const message = (userId: string, username: string) =>
    void actions.run(async () => {
      setActive(await open({ case: "userId", value: userId }, `@ ${username}`));
    });

  const typingHere = conv && typing[conv.id] && typing[conv.id]!.until > Date.now() ? typing[conv.id]!.username : null;

  return (
    <section aria-labelledby="chat-title" class="chat">
      <div class="page-head">
        <h1 id="chat-title">Chat</h1>
        <span class={`live ${live ? "on" : ""}`}>{live ? "● Live" : "○ Reconnecting…"}</span>
        <label class="check push">
          My status
          <select
            aria-label="My status"
            value={myPresence}
            onChange={(e) => {
              const presence = Number(e.currentTarget.value) as Presence;
              setMyPresence(presence);
              void actions.run(() => chat.setPresence({ presence }));
            }}
          >
            <option value={Presence.ONLINE}>Online</option>
            <option value={Presence.AWAY}>Away</option>
            <option value={Presence.BUSY}>Busy</option>
          </select>
        </label>
      </div>
      <ErrorText error={actions.error} />
      <div class="two">
        <aside>
          <h2>Rooms</h2>
          <ul class="plain">
            {rooms.map((room) => (
              <li key={room.id}>
                <span>
                  # {room.name} {room.visibility === RoomVisibility.PRIVATE && <span class="tag">private</span>}
                </span>
                {memberOf.has(room.id) ? (
                  <button type="button" onClick={() => leave(room)} aria-label={`Leave ${room.name}`}>
                    Leave
                  </button>
                ) : (
                  <button type="button" onClick={() => join(room)} aria-label={`Join ${room.name}`}>
                    Join
                  </button>
                )}
              </li>
            ))}
          </ul>
          <NewRoom onCreated={() => void actions.run(loadRooms)} />
          <h2>People online</h2>
          <ul class="plain" aria-label="People online">
            {online
              .filter((u) => u.userId !== me.id)
              .map((u) => (
                <li key={u.userId}>
                  <span>
                    <PresenceDot presence={u.presence} /> {u.username}
                  </span>
                  <button type="button" onClick={() => message(u.userId, u.username)} aria-label={`Message ${u.username}`}>
                    Message
                  </button>
                </li>
              ))}
          </ul>
        </aside>
        <div>
          <div role="tablist" aria-label="Conversations" class="tabs">
            {[...convs.values()].map((c) => (
              <button type="button" role="tab" key={c.id} aria-selected={c.id === active} onClick={() => setActive(c.id)}>
                {c.title}
                {/* The open tab's messages are read: its badge goes in the same render that shows them. */}
                {c.unread > 0 && c.id !== active && <span class="badge bad"> {c.unread} unread</span>}
              </button>
            ))}
          </div>
          {conv ? (
            <div role="tabpanel" aria-label={conv.title}>
              {conv.more && (
                <button type="button" onClick={earlier}>
                  Load earlier messages
                </button>
              )}
              <Messages messages={conv.messages} me={me.id} />
              <p class="muted typing" aria-live="polite">
                {typingHere ? `${typingHere} is typing…` : " "}
              </p>
              <Composer conv={conv} onSent={(m) => receive(m, true)} />
            </div>
          ) : (
            <p>Join a room or message someone to start.</p>
          )}
        </div>
      </div>
    </section>
  );
}

function Messages(props: { messages: Message[]; me: string }) {
  const end = useRef<HTMLLIElement>(null);
  const { error, run } = useAction();
  useEffect(() => end.current?.scrollIntoView({ block: "nearest" }), [props.messages.length]);
  return (
    <>
      <ErrorText error={error} />
      <ol class="messages" aria-label="Messages" aria-live="polite">
        {props.messages.map((m) => (
          <li key={String(m.sequence)} class={m.senderId === props.me ? "mine" : ""}>
            {m.kind === MessageKind.TEXT ? (
              <>
                <strong>{m.senderName}</strong> <time class="muted">{m.sendTime ? new Date(timestampMs(m.sendTime)).toLocaleTimeString() : ""}</time>
                <div class="text">{m.text}</div>
                {m.attachments.map((a) => (
                  <div key={a.fileId}>
                    <button type="button" class="link" aria-label={`Download ${a.name}`} onClick={() => void run(() => download(a.fileId, a.version, a.name))}>
                      📎 {a.name}
                    </button>
                  </div>
                ))}
              </>
            ) : (
              <em class="muted">
                {m.senderName} {m.kind === MessageKind.JOINED ? "joined" : "left"}
              </em>
            )}
          </li>
        ))}
        <li ref={end} class="end" aria-hidden="true" />
      </ol>
    </>
  );
}

function Composer(props: { conv: Conversation; onSent: (m: Message) => void }) {
  const [text, setText] = useState("");
  const [attached, setAttached] = useState<{ fileId: string; version: bigint; name: string; size: number }[]>([]);
  const [progress, setProgress] = useState<{ name: string; percent: number } | null>(null);
  const { busy, error, run } = useAction();
  // When "typing" was last sent, and where: at most one every TYPING_EVERY_MS, never awaited (a lost one does not matter).
  const typed = useRef({ to: "", at: 0 });
  const to = { target: props.conv.to };
  const typing = () => {
    const now = Date.now();
    if (typed.current.to === props.conv.id && now - typed.current.at < TYPING_EVERY_MS) return;
    typed.current = { to: props.conv.id, at: now };
    void chat.sendTyping({ to }).catch(() => undefined);
  };
  const attach = (chosen: globalThis.File) =>
    void run(async () => {
      const data = new Uint8Array(await chosen.arrayBuffer());
      setProgress({ name: chosen.name, percent: 0 });
      try {
        // Each attachment in a folder of its own: names never collide, and the name stays the file's.
        const path = `chat/${crypto.randomUUID().slice(0, 8)}/${chosen.name}`;
        const file = await upload(data, { target: { case: "path", value: path } }, (sent) =>
          setProgress({ name: chosen.name, percent: Math.round((sent / Math.max(1, data.length)) * 100) }),
        );
        setAttached((list) => [...list, { fileId: file.id, version: file.latestVersion, name: chosen.name, size: data.length }]);
      } finally {
        setProgress(null);
      }
    });
  const send = () => {
    const body = text.trim();
    if (!body && attached.length === 0) return;
    void run(async () => {
      // The client id makes a retried send idempotent.
      const attachments = attached.map(({ fileId, version, name }) => ({ fileId, version, name }));
      const { message } = await chat.sendMessage({ message: { to, clientId: crypto.randomUUID(), text: body, attachments } });
      props.onSent(message!);
      setText("");
      setAttached([]);
    });
  };
  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault();
        send();
      }}
    >
      <Field label={`Message ${props.conv.title}`} hint="Enter sends, Shift+Enter adds a line.">
        <textarea
          value={text}
          maxLength={4000}
          onInput={(e) => {
            setText(e.currentTarget.value);
            if (e.currentTarget.value) typing();
          }}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey) {
              e.preventDefault();
              send();
            }
          }}
        />
      </Field>
      {attached.length > 0 && (
        <ul class="plain attachments" aria-label="Attached files">
          {attached.map((a) => (
            <li key={a.fileId}>
              <span>
                📎 {a.name} <span class="muted">({formatBytes(a.size)})</span>
              </span>
              <button type="button" aria-label={`Remove ${a.name}`} onClick={() => setAttached((list) => list.filter((x) => x !== a))}>
                Remove
              </button>
            </li>
          ))}
        </ul>
      )}
      {progress && (
        <label>
          Uploading {progress.name}: {progress.percent}%
          <progress max={100} value={progress.percent} />
        </label>
      )}
      <ErrorText error={error} />
      <div class="buttons">
        <label class="attach">
          <span>Attach a file</span>
          <input
            type="file"
            disabled={busy || attached.length >= 10}
            onChange={(e) => {
              const chosen = e.currentTarget.files?.[0];
              if (chosen) attach(chosen);
              e.currentTarget.value = "";
            }}
          />
        </label>
        <button type="submit" class="primary" disabled={busy || (!text.trim() && attached.length === 0)}>
          Send
        </button>
      </div>
    </form>
  );
}

function NewRoom(props: { onCreated: () => void }) {
  const [name, setName] = useState("");
  const [priv, setPriv] = useState(false);
  const { busy, error, run } = useAction();
  return (
    <form
      class="new-room"
      onSubmit={(e) => {
        e.preventDefault();
        void run(async () => {
          await chat.createRoom({ name, visibility: priv ? RoomVisibility.PRIVATE : RoomVisibility.PUBLIC });
          setName("");
          props.onCreated();
        });
      }}
    >
      <Field label="New room name">
        <input value={name} required maxLength={100} onInput={(e) => setName(e.currentTarget.value)} />
      </Field>
      <label class="check">
        <input type="checkbox" checked={priv} onChange={(e) => setPriv(e.currentTarget.checked)} /> Private
      </label>
      <ErrorText error={error} />
      <button type="submit" disabled={busy}>
        Create room
      </button>
    </form>
  );
}

/** The key of a direct conversation's tab before its first message gives it an id. */
function provisionalId(userId: string): string {
  return `user:${userId}`;
}
