import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import {
  ChatResponseSchema,
  MessageKind,
  type ChatResponse,
  type Presence,
  type PresenceChange,
  type TypingNotice,
} from "../../../gen/agora/chat/v1/chat_pb.js";
import type { Clock } from "../../platform/clock.js";
import type { PubSub, Unsubscribe } from "../../platform/pubsub.js";
import { Wakeup } from "../../platform/streams.js";
import { MESSAGES_CHANNEL, type ChatRepository, type MessageAnnouncement, type MessageRow } from "./chat.repository.js";
import { toMessage } from "./chat.mapper.js";
import { aborted } from "../../platform/errors.js";

const PRESENCE_CHANNEL = "chat_presence";
const TYPING_CHANNEL = "chat_typing";
const PAGE = 500;

type Item = { message: MessageRow } | { catchUp: string } | { event: ChatResponse };

/**
 * One open Chat or Subscribe stream: the conversations it follows with the last
 * sequence it delivered in each, and a bounded queue. Delivery per
 * conversation is gap-free and duplicate-free whatever order messages arrive
 * in: a message past a gap first pulls the gap from the database.
 */
export class ChatSession {
  /** conversation id -> last sequence delivered. */
  readonly last = new Map<string, bigint>();
  /** Rooms the user is in (for presence routing). */
  readonly rooms = new Set<string>();
  private readonly queue: Item[] = [];
  private readonly wakeup = new Wakeup();
  private failure: ConnectError | undefined;
  private ended = false;

  constructor(
    readonly id: string,
    readonly userId: string,
    readonly username: string,
    private readonly repo: ChatRepository,
    private readonly maxQueue: number,
    private readonly clock: Clock,
  ) {}

  /** Starts following a conversation: from `after` (catching up) or from its current end. */
  async follow(conversationId: string, after?: bigint): Promise<void> {
    if (after === undefined) {
      if (!this.last.has(conversationId)) this.last.set(conversationId, await this.repo.lastSequence(conversationId));
      return;
    }
    this.last.set(conversationId, after);
    this.push({ catchUp: conversationId });
  }

  unfollow(conversationId: string): void {
    this.last.delete(conversationId);
  }

  follows(conversationId: string): boolean {
    return this.last.has(conversationId);
  }

  send(event: ChatResponse): void {
    this.push({ event });
  }

  offer(message: MessageRow): void {
    // Already delivered (a catch-up got there first): not worth a place in the queue.
    const last = this.last.get(message.conversation_id);
    if (last !== undefined && BigInt(message.sequence) <= last) return;
    this.push({ message });
  }

  /** Ends the stream normally (the client closed its side). */
  end(): void {
    this.ended = true;
    this.wake();
  }

  fail(err: ConnectError): void {
    this.failure ??= err;
    this.wake();
  }

  private push(item: Item): void {
    if (this.failure) return;
    if (this.queue.length >= this.maxQueue) {
      // A slow reader must not hold memory or stall anyone: it reconnects with its cursors instead.
      this.fail(aborted("STREAM_TOO_SLOW", "this stream fell too far behind: reconnect and resume from your last sequences", {}, 0));
      return;
    }
    this.queue.push(item);
    this.wake();
  }

  private wake(): void {
    this.wakeup.wake();
  }

  /** The events to send, in order; a heartbeat after `heartbeatMs` of quiet. */
  async *events(signal: AbortSignal, heartbeatMs: number): AsyncGenerator<ChatResponse> {
    const onAbort = () => this.wake();
    signal.addEventListener("abort", onAbort);
    try {
      while (!signal.aborted) {
        if (this.failure) throw this.failure;
        const item = this.queue.shift();
        if (!item) {
          if (this.ended) return;
          const woken = await this.wakeup.wait(heartbeatMs);
          if (!woken && !signal.aborted) yield create(ChatResponseSchema, { event: { case: "heartbeat", value: { time: timestampFromDate(this.clock.now()) } } });
          continue;
        }
        if ("event" in item) yield item.event;
        else if ("catchUp" in item) yield* this.catchUp(item.catchUp, undefined);
        else {
          // Delivered here, not by a nested generator: most messages are the next in order, and each
          // generator level costs every delivery its own resumption and awaits.
          const m = item.message;
          const sequence = this.accept(m);
          if (sequence === undefined) continue;
          if (sequence > this.last.get(m.conversation_id)! + 1n) yield* this.catchUp(m.conversation_id, sequence - 1n);
          if (sequence === (this.last.get(m.conversation_id) ?? 0n) + 1n) yield this.emit(m);
        }
      }
      throw signal.reason;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** The sequence of a message this stream should deliver (after the messages it may first need to catch up), or undefined. */
  private accept(m: MessageRow): bigint | undefined {
    let last = this.last.get(m.conversation_id);
    if (last === undefined) {
      // The user joined this room elsewhere (another stream, JoinRoom): follow it from here on.
      if (m.kind !== MessageKind.JOINED || m.sender_id !== this.userId) return undefined;
      last = BigInt(m.sequence) - 1n;
      this.last.set(m.conversation_id, last);
      this.rooms.add(m.conversation_id);
    }
    const sequence = BigInt(m.sequence);
    return sequence > last ? sequence : undefined;
  }

  /** Delivers stored messages after the last delivered one, up to `until` (or the end). */
  private async *catchUp(conversationId: string, until: bigint | undefined): AsyncGenerator<ChatResponse> {
    for (;;) {
      const from = this.last.get(conversationId);
      if (from === undefined || (until !== undefined && from >= until)) return;
      const page = await this.repo.after(conversationId, from, PAGE);
      for (const m of page) {
        if (until !== undefined && BigInt(m.sequence) > until) return;
        yield this.emit(m);
      }
      if (page.length < PAGE) return;
    }
  }

  /** Marks a message delivered and returns its event. */
  private emit(m: MessageRow): ChatResponse {
    this.last.set(m.conversation_id, BigInt(m.sequence));
    // Leaving through another stream or call changes what this stream follows.
    if (m.sender_id === this.userId && m.kind === MessageKind.LEFT) {
      this.rooms.delete(m.conversation_id);
      this.unfollow(m.conversation_id);
    }
    return messageEvent(m);
  }
}

/**
 * The event of a stored message, made once per row: the hub offers the same row
 * to every stream that follows its conversation, so they all send the same
 * (immutable) event object, which the gRPC path encodes once (grpc-js-adapter.ts).
 */
const messageEvents = new WeakMap<MessageRow, ChatResponse>();
function messageEvent(m: MessageRow): ChatResponse {
  let event = messageEvents.get(m);
  if (!event) messageEvents.set(m, (event = create(ChatResponseSchema, { event: { case: "message", value: toMessage(m) } })));
  return event;
}

/**
 * Per-instance fan-out. A stored message is announced with NOTIFY on
 * MESSAGES_CHANNEL (a JSON MessageAnnouncement: conversation, sequence, the two
 * users of a direct conversation, the joiner of a JOINED); the hub reads it once for the whole
 * instance and offers it to the streams that follow its conversation. Presence
 * and typing are ephemeral and travel in the NOTIFY payload itself.
 */
export class ChatHub {
  private readonly sessions = new Set<ChatSession>();
  private readonly fetched = new Map<string, bigint>();
  private readonly fetching = new Map<string, Promise<void>>();
  private unsubscribes: Unsubscribe[] = [];

  constructor(
    private readonly repo: ChatRepository,
    private readonly pubsub: PubSub,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    this.unsubscribes = [
      await this.pubsub.subscribe(MESSAGES_CHANNEL, (p) => this.onMessage(p)),
      await this.pubsub.subscribe(PRESENCE_CHANNEL, (p) => p && this.onPresence(p)),
      await this.pubsub.subscribe(TYPING_CHANNEL, (p) => p && this.onTyping(p)),
    ];
  }

  stop(): void {
    for (const u of this.unsubscribes) u();
  }

  add(session: ChatSession): void {
    this.sessions.add(session);
  }

  remove(session: ChatSession): void {
    this.sessions.delete(session);
  }

  get localSessionIds(): string[] {
    return [...this.sessions].map((s) => s.id);
  }

  async publishPresence(change: { userId: string; username: string; presence: Presence; rooms: string[] }): Promise<void> {
    await this.pubsub.publish(PRESENCE_CHANNEL, JSON.stringify(change));
  }

  async publishTyping(notice: { conversationId: string; userId: string; username: string }): Promise<void> {
    await this.pubsub.publish(TYPING_CHANNEL, JSON.stringify(notice));
  }

  private onMessage(payload: string | undefined): void {
    if (payload === undefined) {
      // Signals may have been lost: every stream catches up on what it follows.
      for (const s of this.sessions) for (const c of s.last.keys()) void s.follow(c, s.last.get(c));
      return;
    }
    const { c: conversationId, s: sequence, u: users, j: joiner } = JSON.parse(payload) as MessageAnnouncement;
    const previous = BigInt(sequence) - 1n;
    // New direct conversations are followed by their two users' streams from their first message.
    if (users) {
      for (const s of this.sessions) if (users.includes(s.userId) && !s.follows(conversationId)) void s.follow(conversationId, previous);
    }
    const interested = [...this.sessions].some((s) => s.follows(conversationId) || s.userId === joiner);
    if (!interested) {
      // Nobody here reads it: forget where we were, so a later reader does not get a backlog offered.
      this.fetched.delete(conversationId);
      return;
    }
    if (!this.fetched.has(conversationId)) this.fetched.set(conversationId, previous);
    void this.fetch(conversationId);
  }

  /** Reads new messages of a conversation once for all local streams (one read at a time per conversation). */
  private fetch(conversationId: string): Promise<void> {
    const running = this.fetching.get(conversationId);
    if (running) return running.then(() => this.fetch(conversationId));
    const work = (async () => {
      for (;;) {
        const from = this.fetched.get(conversationId) ?? 0n;
        const page = await this.repo.after(conversationId, from, PAGE);
        for (const m of page) {
          this.fetched.set(conversationId, BigInt(m.sequence));
          for (const s of this.sessions) if (s.follows(conversationId) || (m.kind === MessageKind.JOINED && m.sender_id === s.userId)) s.offer(m);
        }
        if (page.length < PAGE) return;
      }
    })()
      .catch((err) => this.log.warn({ err, conversationId }, "chat fan-out read failed; streams catch up on the next message"))
      .finally(() => this.fetching.delete(conversationId));
    this.fetching.set(conversationId, work);
    return work;
  }

  private onPresence(payload: string): void {
    const change = JSON.parse(payload) as { userId: string; username: string; presence: Presence; rooms: string[] };
    const event = create(ChatResponseSchema, {
      event: { case: "presence", value: { userId: change.userId, username: change.username, presence: change.presence } satisfies Partial<PresenceChange> },
    });
    for (const s of this.sessions) if (change.rooms.some((r) => s.rooms.has(r))) s.send(event);
  }

  private onTyping(payload: string): void {
    const notice = JSON.parse(payload) as { conversationId: string; userId: string; username: string };
    const event = create(ChatResponseSchema, { event: { case: "typing", value: notice satisfies Partial<TypingNotice> } });
    for (const s of this.sessions) if (s.userId !== notice.userId && s.follows(notice.conversationId)) s.send(event);
  }
}
