// Clients for every Agora service over the Connect protocol on the page's own origin,
// and the signed-in session: tokens kept in localStorage, the access token refreshed
// before it expires (so calls and streams never see an expired one).
import type { DescService } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { signal } from "./state";
import { IdentityService, Role, type Tokens, type User } from "../../gen/agora/identity/v1/identity_pb.js";

interface Session {
  accessToken: string;
  accessExpireMs: number;
  accessIssuedMs: number;
  refreshToken: string;
  user: { id: string; username: string; displayName: string; admin: boolean };
}

const STORE = "agora.session";
const PUBLIC = new Set(["Register", "Login", "Refresh"]);

function load(): Session | null {
  try {
    return JSON.parse(localStorage.getItem(STORE) ?? "null") as Session | null;
  } catch {
    return null;
  }
}

export const session = signal<Session | null>(load());
session.subscribe((s) => (s ? localStorage.setItem(STORE, JSON.stringify(s)) : localStorage.removeItem(STORE)));
// Another tab signed in or out.
addEventListener("storage", (e) => {
  if (e.key === STORE) session.set(load());
});

let refreshing: Promise<string> | null = null;

/** A valid access token: refreshed (once, shared by concurrent callers) in the last quarter of its life. */
async function accessToken(): Promise<string | undefined> {
  const s = session.get();
  if (!s) return undefined;
  const margin = (s.accessExpireMs - s.accessIssuedMs) / 4;
  if (Date.now() < s.accessExpireMs - margin) return s.accessToken;
  refreshing ??= (async () => {
    try {
      const { tokens } = await identity.refresh({ refreshToken: s.refreshToken });
      session.set({ ...s, ...tokenFields(tokens!) });
      return tokens!.accessToken;
    } catch (err) {
      if (ConnectError.from(err).code === Code.Unauthenticated) session.set(null);
      throw err;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

// Refresh ahead of time even when the page is idle, so an open stream that reconnects has a valid token.
let timer: ReturnType<typeof setTimeout> | undefined;
function scheduleRefresh(s: Session | null) {
  clearTimeout(timer);
  if (!s) return;
  const due = s.accessExpireMs - (s.accessExpireMs - s.accessIssuedMs) / 4;
  timer = setTimeout(() => void accessToken().catch(() => undefined), Math.max(0, due - Date.now()) + 50);
}
session.subscribe(scheduleRefresh);

const auth: Interceptor = (next) => async (req) => {
  if (!(req.service.typeName === IdentityService.typeName && PUBLIC.has(req.method.name))) {
    const token = await accessToken();
    if (token) req.header.set("authorization", `Bearer ${token}`);
  }
  try {
    return await next(req);
  } catch (err) {
    // The server no longer knows this session (signed out elsewhere, user disabled).
    if (ConnectError.from(err).code === Code.Unauthenticated && session.get() && !PUBLIC.has(req.method.name)) session.set(null);
    throw err;
  }
};

const transport = createConnectTransport({ baseUrl: location.origin, interceptors: [auth] });

export function client<S extends DescService>(service: S): Client<S> {
  return createClient(service, transport);
}

export const identity = client(IdentityService);
scheduleRefresh(session.get());

function tokenFields(t: Tokens) {
  return {
    accessToken: t.accessToken,
    accessExpireMs: t.accessTokenExpireTime ? timestampMs(t.accessTokenExpireTime) : Date.now() + 60_000,
    accessIssuedMs: Date.now(),
    refreshToken: t.refreshToken,
  };
}

export async function signIn(username: string, password: string): Promise<void> {
  const { tokens, user } = await identity.login({ username, password });
  session.set({ ...tokenFields(tokens!), user: userFields(user!) });
}

export function userFields(u: User) {
  return { id: u.id, username: u.username, displayName: u.displayName, admin: u.role === Role.ADMIN };
}

export async function signOut(): Promise<void> {
  try {
    const s = session.get();
    if (s) await identity.logout({ refreshToken: s.refreshToken });
  } catch {
    // Signed out locally in any case.
  }
  session.set(null);
}

/** A person-readable message for a failed call: the server's message plus field violations. */
export function describe(err: unknown): string {
  const e = ConnectError.from(err);
  return e.rawMessage || Code[e.code];
}

/** Runs `open` for as long as `signal` is not aborted, reconnecting after failures with backoff. */
export async function keepStreaming(signal: AbortSignal, open: (signal: AbortSignal) => Promise<void>, onState?: (live: boolean) => void) {
  let delay = 250;
  while (!signal.aborted) {
    try {
      onState?.(true);
      await open(signal);
      delay = 250;
    } catch (err) {
      if (signal.aborted) return;
      onState?.(false);
      if (ConnectError.from(err).code === Code.Unauthenticated && !session.get()) return;
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 5000);
  }
}

type WatchResponse<E> = { kind: { case: "event"; value: E } | { case: "heartbeat"; value: { cursor: string } } | { case: undefined; value?: undefined } };

/**
 * Follows a `Watch*` stream for a page that also reads a list. The stream starts "from now", so `resync` runs when
 * its first heartbeat says it is live (a list read then misses no change made before it opened); events and
 * heartbeats move the cursor, from which a reconnect resumes.
 */
export function followWatch<E extends { cursor: string }>(
  signal: AbortSignal,
  open: (afterCursor: string, signal: AbortSignal) => AsyncIterable<WatchResponse<E>>,
  on: { event(e: E): void; resync(): void },
  onState?: (live: boolean) => void,
): void {
  let cursor = "";
  void keepStreaming(
    signal,
    async (s) => {
      for await (const { kind } of open(cursor, s)) {
        if (kind.case === "heartbeat") {
          if (!cursor) on.resync();
          cursor = kind.value.cursor;
        } else if (kind.case === "event") {
          cursor = kind.value.cursor;
          on.event(kind.value);
        }
      }
    },
    onState,
  );
}
