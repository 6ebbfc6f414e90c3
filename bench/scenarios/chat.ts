/**
 * 3. Chat fan-out: one public room, N Subscribe streams (the server stream
 * browsers use; the bidi Chat stream delivers through the same hub), one sender
 * posting with SendMessage. Each message carries its send time in its text;
 * every stream records the end-to-end latency of every message it receives.
 *
 * The sender keeps `window` messages in flight: a message is complete once
 * every stream has it, and only then is the next one sent. That measures the
 * delivery rate the server sustains without letting queues grow (a stream that
 * falls 1,000 events behind would be ended as too slow), and its latency.
 *
 * Streams belong to `users` distinct users round robin (registering 1,000 users
 * would cost 2,000 argon2 hashes for no extra insight: delivery is per stream).
 * The per-user send limit is raised so the single sender is not throttled.
 * Then, in a server of its own (so that what the fan-out runs left on the heap
 * is not counted), `holdStreams` streams stay open for `holdSeconds` with one
 * message a second, while the server's RSS is sampled from before they open.
 */
import type { Client } from "@connectrpc/connect";
import { ChatService, RoomVisibility } from "../../gen/agora/chat/v1/chat_pb.js";
import { startAgora, type Agora } from "../lib/agora.js";
import { pool, sleep } from "../lib/clients.js";
import type { BenchContext, Row, Scenario } from "../lib/context.js";
import { measure, perThousand } from "../lib/measure.js";
import { Loadgen } from "../lib/loadgen.js";
import { rssMB } from "../lib/proc.js";
import { LatencyHistogram, median, round } from "../lib/stats.js";

const STREAMS_PER_CONNECTION = 100;
/** Wall-clock milliseconds, the clock the subscribers (another process) stamp receipts with. */
const unixMs = () => performance.timeOrigin + performance.now();

type OnText = (text: string, receivedAt: number, stream: number) => void;

/**
 * N Subscribe streams spread over users and HTTP/2 connections, read by the Go
 * load generator (bench/loadgen/chat.go): one Node process reading 1,000
 * streams spent some 80 µs of CPU per message, more than the server, and
 * capped the scenario at what it could read.
 */
class Subscribers {
  onText: OnText = () => {};
  readonly errors: string[] = [];
  private readonly loadgen: Loadgen;

  constructor(ctx: BenchContext, agora: Agora, users: { token: string }[], readonly count: number) {
    const settings = { url: agora.url, tokens: users.map((u) => u.token), count, perConnection: STREAMS_PER_CONNECTION };
    this.loadgen = new Loadgen("chat-subscribers", settings, (line) => {
      if (line.startsWith("m ")) {
        const a = line.indexOf(" ", 2);
        const b = line.indexOf(" ", a + 1);
        this.onText(line.slice(b + 1), Number(line.slice(a + 1, b)), Number(line.slice(2, a)));
      } else if (line.startsWith("e ")) this.errors.push(line.slice(line.indexOf(" ", 2) + 1));
    }, ctx.log);
  }

  get pid(): number {
    return this.loadgen.pid;
  }

  /** Ends every stream. */
  close(): Promise<void> {
    return this.loadgen.close();
  }
}

interface RunResult {
  delivered: number;
  completed: number;
  incomplete: number;
  seconds: number;
  latency: LatencyHistogram;
}

/**
 * Posts for `seconds` with `window` messages in flight, each waiting until all
 * `subs.count` streams have it (or `timeoutMs`), then sends the next.
 */
async function fanOut(
  chat: Client<typeof ChatService>,
  roomId: string,
  subs: Subscribers,
  { window, seconds, maxMessages = Infinity, timeoutMs = 15_000 }: { window: number; seconds: number; maxMessages?: number; timeoutMs?: number },
): Promise<RunResult> {
  const runId = Math.random().toString(36).slice(2, 10);
  const pending = new Map<number, { count: number; done: () => void }>();
  const latency = new LatencyHistogram();
  let delivered = 0;
  let completed = 0;
  let incomplete = 0;
  let lastCompletion = 0;
  subs.onText = (text, at) => {
    const [tag, id, seq, sentAt] = text.split("|");
    if (tag !== "bench" || id !== runId) return;
    latency.record(at - Number(sentAt));
    delivered++;
    const entry = pending.get(Number(seq));
    if (entry && ++entry.count === subs.count) {
      pending.delete(Number(seq));
      lastCompletion = at;
      completed++;
      entry.done();
    }
  };
  let next = 0;
  const start = unixMs();
  const deadline = start + seconds * 1000;
  await Promise.all(
    Array.from({ length: window }, async () => {
      while (unixMs() < deadline && next < maxMessages) {
        const seq = next++;
        let timer: NodeJS.Timeout | undefined;
        const done = new Promise<boolean>((resolve) => {
          pending.set(seq, { count: 0, done: () => resolve(true) });
          timer = setTimeout(() => resolve(false), timeoutMs);
        });
        const sentAt = unixMs();
        await chat.sendMessage({ message: { to: { target: { case: "roomId", value: roomId } }, clientId: `${runId}-${seq}`, text: `bench|${runId}|${seq}|${sentAt}` } });
        const ok = await done;
        clearTimeout(timer);
        if (!ok) {
          pending.delete(seq);
          incomplete++;
        }
      }
    }),
  );
  subs.onText = () => {};
  return { delivered, completed, incomplete, seconds: ((lastCompletion || unixMs()) - start) / 1000, latency };
}

/**
 * Waits until every stream follows the room: a stream opened without cursors
 * follows it from the moment the server has set it up, which the client cannot
 * see, so markers are sent until every stream has received one.
 */
async function ready(chat: Client<typeof ChatService>, roomId: string, subs: Subscribers, timeoutMs: number): Promise<void> {
  const seen = new Set<number>();
  subs.onText = (text, _at, stream) => {
    if (text.startsWith("ready|")) seen.add(stream);
  };
  const deadline = performance.now() + timeoutMs;
  try {
    for (let i = 0; seen.size < subs.count; i++) {
      if (performance.now() > deadline) {
        throw new Error(`${subs.count - seen.size} of ${subs.count} streams received nothing within ${timeoutMs} ms (${subs.errors.length} stream errors: ${subs.errors.slice(0, 3).join("; ")})`);
      }
      await chat.sendMessage({ message: { to: { target: { case: "roomId", value: roomId } }, clientId: `ready-${subs.count}-${i}-${Date.now()}`, text: `ready|${i}` } });
      await sleep(250);
    }
    await sleep(500); // the last markers drain
  } finally {
    subs.onText = () => {};
  }
}

export const chat: Scenario = {
  name: "chat",
  title: "Chat fan-out",
  description:
    "One room, N Subscribe streams, one sender (SendMessage) keeping a fixed number of messages in flight, each complete when every stream has it. " +
    "delivered/s = messages received over all streams per second; msgs/s = messages sent (and fully delivered) per second; " +
    "p50/p99 = send to receipt, per delivery; CPU ms per 1k deliveries (Agora); hold = streams held open with one message a second, RSS sampled.",
  rowLabel: "streams",
  columns: [
    { key: "deliveredPerSecond", label: "delivered/s", digits: 0 },
    { key: "messagesPerSecond", label: "msgs/s", digits: 1 },
    { key: "p50Ms", label: "p50 ms", digits: 1 },
    { key: "p99Ms", label: "p99 ms", digits: 1 },
    { key: "cpuMsPer1k_agora", label: "CPU ms/1k deliveries", digits: 1 },
    { key: "peakRssMB_agora", label: "peak RSS MB", digits: 0 },
    { key: "rssIdleMB", label: "RSS idle MB", digits: 0 },
    { key: "rssStartMB", label: "RSS start MB", digits: 0 },
    { key: "rssEndMB", label: "RSS end MB", digits: 0 },
    { key: "streamErrors", label: "stream errors", digits: 0 },
  ],
  async run(ctx: BenchContext) {
    const s = ctx.settings.chat;
    const rows: Row[] = [];
    const details: Record<string, unknown> = { users: s.users, window: s.window };
    await withRoom(ctx, "chat", async ({ agora, senderChat, roomId, users }) => {
      for (const n of s.subscribers) {
        const subs = new Subscribers(ctx, agora, users, n);
        try {
          await ready(senderChat, roomId, subs, 60_000);
          ctx.log(`  ${n} streams: warm-up ${ctx.settings.warmupSeconds}s`);
          await fanOut(senderChat, roomId, subs, { window: s.window, seconds: ctx.settings.warmupSeconds });
          const runs: { r: RunResult; cpu: Record<string, number>; rss: number; loadgen: number }[] = [];
          for (let i = 0; i < ctx.settings.runs; i++) {
            const watched = [...agora.watched(), { name: "subscribers", pid: subs.pid, loadgen: true }];
            const { result: r, usage } = await measure(watched, ctx.pinning, () => fanOut(senderChat, roomId, subs, { window: s.window, seconds: s.runSeconds }));
            runs.push({ r, cpu: usage.cpuMs, rss: usage.peakRssMB.agora ?? Number.NaN, loadgen: usage.loadgenCpuMs / 1000 / usage.seconds });
            ctx.log(
              `  ${n} streams: run ${i + 1}/${ctx.settings.runs}: ${Math.round(r.delivered / r.seconds)} delivered/s, ` +
                `p99 ${r.latency.percentile(99).toFixed(1)} ms, ${r.incomplete} incomplete, ${subs.errors.length} stream errors`,
            );
          }
          const metrics: Record<string, number> = {
            deliveredPerSecond: median(runs.map((x) => x.r.delivered / x.r.seconds)),
            messagesPerSecond: median(runs.map((x) => x.r.completed / x.r.seconds)),
            p50Ms: median(runs.map((x) => x.r.latency.percentile(50))),
            p99Ms: median(runs.map((x) => x.r.latency.percentile(99))),
            cpuMsPer1k_agora: median(runs.map((x) => perThousand(x.cpu.agora ?? 0, x.r.delivered))),
            cpuMsPer1k_postgres: median(runs.map((x) => perThousand(x.cpu.postgres ?? 0, x.r.delivered))),
            peakRssMB_agora: median(runs.map((x) => x.rss)),
            loadgenCores: median(runs.map((x) => x.loadgen)),
            incompleteMessages: runs.reduce((a, x) => a + x.r.incomplete, 0),
            streamErrors: subs.errors.length,
          };
          const notes: string[] = [];
          if (metrics.loadgenCores! > 0.9) notes.push("load generator saturated: the server may be faster than shown");
          if (metrics.incompleteMessages! > 0) notes.push(`${metrics.incompleteMessages} messages did not reach every stream`);
          rows.push({ name: String(n), metrics, notes });
          details[`streams${n}`] = runs.map((x) => ({ delivered: x.r.delivered, completed: x.r.completed, seconds: x.r.seconds, incomplete: x.r.incomplete }));
          if (subs.errors.length) details[`streamErrors${n}`] = subs.errors.slice(0, 10);
        } finally {
          await subs.close();
        }
      }
    });
    // Held streams in a server of their own: what the fan-out runs left on the heap is not the held streams' memory.
    await withRoom(ctx, "chat-hold", async ({ agora, senderChat, roomId, users }) => {
      const rssIdle = rssMB(agora.pid) ?? Number.NaN;
      const subs = new Subscribers(ctx, agora, users, s.holdStreams);
      try {
        await ready(senderChat, roomId, subs, 60_000);
        rows.push(await hold(ctx, agora, senderChat, roomId, subs, rssIdle, details));
        if (subs.errors.length) details.streamErrorsHeld = subs.errors.slice(0, 10);
      } finally {
        await subs.close();
      }
    });
    const hold_ = details.hold as { rssIdleMB: number; rssStartMB: number; rssEndMB: number; rssPeakMB: number; kbPerStream: number } | undefined;
    const big = rows.find((r) => r.name === String(Math.max(...s.subscribers)));
    details.summaryLine =
      `With ${big?.name} streams: ${Math.round(big?.metrics.deliveredPerSecond ?? 0)} deliveries/s, p99 ${big?.metrics.p99Ms?.toFixed(1)} ms. ` +
      (hold_ ? `Holding ${s.holdStreams} streams for ${s.holdSeconds} s (a server of their own): RSS ${Math.round(hold_.rssStartMB)} → ${Math.round(hold_.rssEndMB)} MB (peak ${Math.round(hold_.rssPeakMB)} MB; ` +
          `${Math.round(hold_.rssIdleMB)} MB before the streams opened: peak − idle = ${Math.round(hold_.rssPeakMB - hold_.rssIdleMB)} MB, ` +
          `${Math.round(hold_.kbPerStream)} KB per held stream).` : "");
    return { status: "ok" as const, rows, details };
  },
};

interface Room {
  agora: Agora;
  senderChat: Client<typeof ChatService>;
  roomId: string;
  users: { token: string }[];
}

/** An Agora with a sender, `users` users and one public room they have all joined, for `work`. */
async function withRoom(ctx: BenchContext, name: string, work: (room: Room) => Promise<void>): Promise<void> {
  const s = ctx.settings.chat;
  const agora = await startAgora(ctx, name, { env: { CHAT_MESSAGES_PER_SECOND: "10000" } });
  try {
    ctx.log(`  registering ${s.users} users`);
    const [sender] = await agora.users("chat-sender", 1);
    const users = await agora.users("chat-user", s.users);
    const chatAs = (token: string) => agora.client(ChatService, token);
    const senderChat = chatAs(sender!.token);
    const { room } = await senderChat.createRoom({ name: "bench-fanout", visibility: RoomVisibility.PUBLIC });
    await pool(users.length, 8, async (i) => void (await chatAs(users[i]!.token).joinRoom({ roomId: room!.id })));
    await work({ agora, senderChat, roomId: room!.id, users });
  } finally {
    await agora.stop();
  }
}

/** Keeps the streams open for holdSeconds, one message a second, sampling the server's RSS. */
async function hold(
  ctx: BenchContext,
  agora: Agora,
  chat: Client<typeof ChatService>,
  roomId: string,
  subs: Subscribers,
  rssIdleMB: number,
  details: Record<string, unknown>,
): Promise<Row> {
  const s = ctx.settings.chat;
  ctx.log(`  holding ${subs.count} streams for ${s.holdSeconds}s`);
  const series: { t: number; rssMB: number }[] = [];
  const every = Math.max(1, Math.round(s.holdSeconds / 60)) * 1000;
  const t0 = performance.now();
  const sample = () => series.push({ t: Math.round((performance.now() - t0) / 1000), rssMB: round(rssMB(agora.pid) ?? Number.NaN, 1) });
  sample();
  const errorsBefore = subs.errors.length;
  let delivered = 0;
  let sent = 0;
  const latency = new LatencyHistogram();
  const { usage } = await measure(agora.watched(), ctx.pinning, async () => {
    const timer = setInterval(sample, every);
    subs.onText = (text, at) => {
      const [tag, id, , sentAt] = text.split("|");
      if (tag !== "bench" || id !== "hold") return;
      delivered++;
      latency.record(at - Number(sentAt));
    };
    try {
      while (performance.now() - t0 < s.holdSeconds * 1000) {
        const seq = sent++;
        await chat.sendMessage({ message: { to: { target: { case: "roomId", value: roomId } }, clientId: `hold-${seq}`, text: `bench|hold|${seq}|${unixMs()}` } });
        await sleep(1000);
      }
      await sleep(1000); // the last message reaches everyone
    } finally {
      clearInterval(timer);
      subs.onText = () => {};
    }
  });
  sample();
  const rss = series.map((x) => x.rssMB).filter(Number.isFinite);
  const summary = {
    streams: subs.count,
    seconds: s.holdSeconds,
    rssIdleMB,
    rssStartMB: rss[0]!,
    rssEndMB: rss.at(-1)!,
    rssPeakMB: Math.max(...rss),
    kbPerStream: ((Math.max(...rss) - rssIdleMB) * 1024) / subs.count,
    messagesSent: sent,
    deliveries: delivered,
    expectedDeliveries: sent * subs.count,
    cpuMsPerSecond: (usage.cpuMs.agora ?? 0) / usage.seconds,
    series,
  };
  details.hold = summary;
  const notes = [`${s.holdSeconds} s, ${sent} messages`];
  if (delivered !== sent * subs.count) notes.push(`${sent * subs.count - delivered} deliveries missing`);
  return {
    name: `${subs.count} held`,
    metrics: {
      deliveredPerSecond: delivered / usage.seconds,
      p50Ms: latency.percentile(50),
      p99Ms: latency.percentile(99),
      cpuMsPer1k_agora: perThousand(usage.cpuMs.agora ?? 0, delivered),
      peakRssMB_agora: summary.rssPeakMB,
      rssIdleMB: summary.rssIdleMB,
      rssStartMB: summary.rssStartMB,
      rssEndMB: summary.rssEndMB,
      streamErrors: subs.errors.length - errorsBefore,
    },
    notes,
  };
}
