import pg from "pg";
import type { Logger } from "pino";

export type Unsubscribe = () => void;

/**
 * Cross-instance signals. The PostgreSQL implementation uses LISTEN/NOTIFY; a
 * NATS or Redis one can replace it behind this interface. Payloads are hints
 * (wake-ups), never the only copy of data: subscribers read what they need
 * from the database, so a lost or coalesced signal costs latency, not data.
 */
export interface PubSub {
  publish(channel: string, payload: string): Promise<void>;
  /** `handler(undefined)` means signals may have been missed (after a reconnect): re-read. */
  subscribe(channel: string, handler: (payload: string | undefined) => void): Promise<Unsubscribe>;
  close(): Promise<void>;
}

const CHANNEL = /^[a-z_][a-z0-9_]{0,62}$/;

/** LISTEN/NOTIFY on one dedicated connection per process, reconnecting with back-off. */
export class PgPubSub implements PubSub {
  private client: pg.Client | undefined;
  private connecting: Promise<pg.Client> | undefined;
  private readonly handlers = new Map<string, Set<(payload: string | undefined) => void>>();
  private closed = false;
  private retryMs = 100;
  /** The connection's queries, one after another (pg 9 no longer queues them for us). */
  private turn: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly url: string,
    private readonly log: Logger,
  ) {}

  async publish(channel: string, payload: string): Promise<void> {
    await this.query("SELECT pg_notify($1, $2)", [channel, payload]);
  }

  async subscribe(channel: string, handler: (payload: string | undefined) => void): Promise<Unsubscribe> {
    if (!CHANNEL.test(channel)) throw new Error(`invalid channel name ${channel}`);
    let set = this.handlers.get(channel);
    if (!set) {
      set = new Set();
      this.handlers.set(channel, set);
      await this.query(`LISTEN ${channel}`);
    }
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }

  private query(text: string, values?: unknown[]): Promise<unknown> {
    const run = this.turn.then(async () => (await this.connection()).query(text, values));
    this.turn = run.catch(() => undefined);
    return run;
  }

  private connection(): Promise<pg.Client> {
    if (this.client) return Promise.resolve(this.client);
    this.connecting ??= this.connect().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private async connect(): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: this.url, application_name: "agora-pubsub" });
    client.on("notification", (n) => {
      for (const handler of this.handlers.get(n.channel) ?? []) handler(n.payload ?? "");
    });
    client.on("error", (err) => {
      this.log.warn({ err: err.message }, "pub/sub connection lost");
      this.dropAndReconnect(client);
    });
    client.on("end", () => this.dropAndReconnect(client));
    await client.connect();
    for (const channel of this.handlers.keys()) await client.query(`LISTEN ${channel}`);
    this.client = client;
    this.retryMs = 100;
    return client;
  }

  private dropAndReconnect(client: pg.Client): void {
    if (this.client !== client || this.closed) return;
    this.client = undefined;
    const retry = () => {
      if (this.closed) return;
      this.connection()
        .then(() => {
          // Signals sent while we were away are lost: tell everyone to re-read.
          for (const set of this.handlers.values()) for (const handler of set) handler(undefined);
        })
        .catch(() => {
          this.retryMs = Math.min(this.retryMs * 2, 5000);
          setTimeout(retry, this.retryMs).unref();
        });
    };
    setTimeout(retry, this.retryMs).unref();
  }
}
