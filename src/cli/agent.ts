/**
 * Monitoring agent: reads this machine (CPU, memory, disks, network, load,
 * uptime) through systeminformation on an interval and streams the samples to
 * MonitoringService.ReportMetrics.
 *
 *   npm run agent -- --server http://127.0.0.1:8080 --username agent --password '...'
 *
 * Settings also come from AGORA_SERVER, AGORA_USERNAME, AGORA_PASSWORD,
 * AGENT_HOST (default: the hostname), AGENT_INTERVAL_MS (10000), AGENT_ACK_MS
 * (how long one stream stays open before the server confirms what it stored;
 * 30000) and AGENT_BACKLOG (samples kept while the server is unreachable; 100000).
 *
 * Samples wait in a bounded backlog until the server has confirmed them, so a
 * server restart or network outage leaves no gap: the agent reconnects and
 * sends what it missed (the server recognises re-sent samples). When the backlog
 * is full, the oldest samples are dropped first.
 */
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import si from "systeminformation";
import { MonitoringService, ReportMetricsRequestSchema, SampleSchema, type ReportMetricsRequest, type Sample } from "../../gen/agora/monitoring/v1/monitoring_pb.js";
import { Wakeup } from "../platform/streams.js";
import { Auth } from "./auth.js";

const MAX_SAMPLES_PER_MESSAGE = 5000;
const MIN_BACKOFF_MS = 200;
const MAX_BACKOFF_MS = 10_000;

/** One reading of the host as samples (network rates need a previous reading, so the first has none). */
export async function collect(now: Date): Promise<Sample[]> {
  const time = timestampFromDate(now);
  const samples: Sample[] = [];
  const add = (metric: string, value: number, labels: Record<string, string> = {}) => {
    if (Number.isFinite(value)) samples.push(create(SampleSchema, { metric, value, labels, time }));
  };
  const [load, mem, disks, nets] = await Promise.all([si.currentLoad(), si.mem(), si.fsSize(), si.networkStats("*")]);
  add("cpu.usage_percent", load.currentLoad);
  // "active" leaves out buffers and page cache, which the kernel gives back on demand.
  add("memory.used_bytes", mem.active);
  add("memory.total_bytes", mem.total);
  add("memory.usage_percent", mem.total > 0 ? (mem.active / mem.total) * 100 : NaN);
  const mounts = new Set<string>();
  for (const d of disks) {
    if (d.size <= 0 || mounts.has(d.mount)) continue;
    mounts.add(d.mount);
    add("disk.used_bytes", d.used, { mount: d.mount });
    add("disk.total_bytes", d.size, { mount: d.mount });
    add("disk.usage_percent", d.use, { mount: d.mount });
  }
  for (const n of nets) {
    if (typeof n.rx_sec === "number" && n.rx_sec >= 0) add("network.rx_bytes_per_second", n.rx_sec, { interface: n.iface });
    if (typeof n.tx_sec === "number" && n.tx_sec >= 0) add("network.tx_bytes_per_second", n.tx_sec, { interface: n.iface });
  }
  const [l1, l5, l15] = os.loadavg();
  add("load.1m", l1!);
  add("load.5m", l5!);
  add("load.15m", l15!);
  add("uptime_seconds", si.time().uptime);
  return samples;
}

/** Samples not yet confirmed by the server, oldest first, at most `limit` (the oldest go first when full). */
export class Backlog {
  private items: { seq: number; sample: Sample }[] = [];
  private nextSeq = 1;
  dropped = 0;
  readonly arrived = new Wakeup();

  constructor(private readonly limit: number) {}

  get size(): number {
    return this.items.length;
  }

  push(samples: Sample[]): void {
    for (const sample of samples) this.items.push({ seq: this.nextSeq++, sample });
    const excess = this.items.length - this.limit;
    if (excess > 0) {
      this.items.splice(0, excess);
      this.dropped += excess;
    }
    this.arrived.wake();
  }

  /** Up to `max` samples after sequence `after`, and the sequence of the last one. */
  after(after: number, max: number): { samples: Sample[]; last: number } {
    const start = this.items.findIndex((i) => i.seq > after);
    if (start < 0) return { samples: [], last: after };
    const slice = this.items.slice(start, start + max);
    return { samples: slice.map((i) => i.sample), last: slice.at(-1)!.seq };
  }

  /** Forgets everything up to and including `seq`: the server has it. */
  confirm(seq: number): void {
    const keep = this.items.findIndex((i) => i.seq > seq);
    this.items = keep < 0 ? [] : this.items.slice(keep);
  }
}

export interface AgentOptions {
  server: string;
  username: string;
  password: string;
  host: string;
  intervalMs: number;
  ackMs: number;
  backlog: number;
  log?: (line: string) => void;
}

/** Collects on a timer and keeps one ReportMetrics stream going, reconnecting after failures. */
export class Agent {
  readonly backlog: Backlog;
  private readonly auth: Auth;
  private readonly client: Client<typeof MonitoringService>;
  private stopped = false;
  private readonly stopping = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> | undefined;
  private readonly log: (line: string) => void;

  constructor(private readonly opts: AgentOptions) {
    this.backlog = new Backlog(opts.backlog);
    this.log = opts.log ?? ((line) => console.error(line));
    this.auth = new Auth((interceptors) => createGrpcTransport({ baseUrl: opts.server, interceptors }), opts.username, opts.password);
    this.client = createClient(MonitoringService, this.auth.transport);
  }

  start(): void {
    const tick = () => {
      collect(new Date())
        .then((samples) => this.backlog.push(samples))
        .catch((err) => this.log(`agent: reading the host failed: ${String(err)}`));
    };
    tick();
    this.timer = setInterval(tick, this.opts.intervalMs);
    this.sending = this.sendForever();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.stopping.abort();
    this.backlog.arrived.wake();
    await this.sending;
    await this.auth.logout();
  }

  private async sendForever(): Promise<void> {
    let backoff = MIN_BACKOFF_MS;
    let signedIn = false;
    while (!this.stopped) {
      try {
        if (!signedIn) {
          await this.auth.login();
          signedIn = true;
        }
        const stored = await this.streamOnce();
        if (stored > 0) backoff = MIN_BACKOFF_MS;
      } catch (err) {
        if (this.stopped) break;
        const e = ConnectError.from(err);
        if (e.code === Code.Unauthenticated) signedIn = false;
        this.log(`agent: ${e.code === Code.Unavailable ? "server unavailable" : e.message}; ${this.backlog.size} samples kept, retrying in ${backoff} ms`);
        await sleep(backoff, this.stopping.signal).catch(() => undefined);
        backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
      }
    }
  }

  /**
   * One ReportMetrics stream: the backlog first, then new samples as they are
   * read, for ackMs; the server's answer confirms everything sent.
   */
  private async streamOnce(): Promise<number> {
    let sentThrough = 0;
    const host = this.opts.host;
    const backlog = this.backlog;
    const closeAt = Date.now() + this.opts.ackMs;
    const stopping = this.stopping.signal;
    async function* messages(): AsyncGenerator<ReportMetricsRequest> {
      while (!stopping.aborted && Date.now() < closeAt) {
        const next = backlog.after(sentThrough, MAX_SAMPLES_PER_MESSAGE);
        if (next.samples.length > 0) {
          sentThrough = next.last;
          yield create(ReportMetricsRequestSchema, { host, samples: next.samples });
        } else {
          await backlog.arrived.wait(closeAt - Date.now());
        }
      }
    }
    const res = await this.client.reportMetrics(messages());
    this.backlog.confirm(sentThrough);
    if (this.backlog.dropped > 0) {
      this.log(`agent: the backlog was full; ${this.backlog.dropped} oldest samples were dropped`);
      this.backlog.dropped = 0;
    }
    return Number(res.acceptedSamples);
  }
}

function optionsFrom(argv: string[], env: NodeJS.ProcessEnv): AgentOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      server: { type: "string" },
      username: { type: "string" },
      password: { type: "string" },
      host: { type: "string" },
      interval: { type: "string" },
    },
  });
  const server = values.server ?? env.AGORA_SERVER ?? "http://127.0.0.1:8080";
  const username = values.username ?? env.AGORA_USERNAME;
  const password = values.password ?? env.AGORA_PASSWORD;
  if (!username || !password) throw new Error("agent: set --username and --password (or AGORA_USERNAME and AGORA_PASSWORD)");
  const number = (raw: string | undefined, fallback: number, name: string) => {
    if (raw === undefined || raw === "") return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`agent: ${name} must be a positive whole number, got "${raw}"`);
    return n;
  };
  return {
    server,
    username,
    password,
    host: values.host ?? env.AGENT_HOST ?? os.hostname(),
    intervalMs: number(values.interval ?? env.AGENT_INTERVAL_MS, 10_000, "the interval"),
    ackMs: number(env.AGENT_ACK_MS, 30_000, "AGENT_ACK_MS"),
    backlog: number(env.AGENT_BACKLOG, 100_000, "AGENT_BACKLOG"),
  };
}

async function main(): Promise<void> {
  let opts: AgentOptions;
  try {
    opts = optionsFrom(process.argv.slice(2), process.env);
  } catch (err) {
    console.error((err as Error).message);
    process.exit(2);
  }
  const agent = new Agent(opts);
  agent.start();
  console.error(`agent: reporting ${opts.host} to ${opts.server} every ${opts.intervalMs} ms`);
  const shutdown = () => {
    void agent.stop().then(() => process.exit(0));
  };
  process.once("SIGINT", shutdown);
  process.once("SIGTERM", shutdown);
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) void main();
