import { ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { eventually } from "./harness.js";

/** A Watch response: a oneof `kind` carrying an item (event, notification ...) or a heartbeat. */
type WatchMessage = { kind: { case: string | undefined; value?: unknown } };
/** What the non-heartbeat case of a Watch response carries. */
export type Carried<M extends WatchMessage> = Exclude<Extract<M["kind"], { case: string }>, { case: "heartbeat" }> extends { value: infer V } ? V : never;

/**
 * Reads a server stream in the background and records what it carries: the items,
 * the heartbeats, and the error that ended it (not the cancellation `close` causes).
 * The one helper behind every Watch stream the tests open.
 */
export class StreamRecorder<M extends WatchMessage> {
  readonly items: Carried<M>[] = [];
  heartbeats = 0;
  /** Messages of any kind; one proves the server-side subscription is live. */
  messages = 0;
  error: ConnectError | undefined;
  ended = false;
  /** Settles when the stream has ended (never rejects). */
  readonly done: Promise<void>;
  private readonly abort = new AbortController();

  /** `open` starts the stream with the recorder's signal, e.g. `(signal) => c.watchFiles({}, { signal })`. */
  constructor(open: (signal: AbortSignal) => AsyncIterable<M>) {
    this.done = (async () => {
      try {
        for await (const msg of open(this.abort.signal)) {
          this.messages++;
          if (msg.kind.case === "heartbeat") this.heartbeats++;
          else if (msg.kind.case !== undefined) this.items.push(msg.kind.value as Carried<M>);
        }
      } catch (err) {
        if (!this.abort.signal.aborted) this.error = ConnectError.from(err);
      } finally {
        this.ended = true;
      }
    })();
  }

  /** Resolves once the server has sent something (a heartbeat at the latest); throws the stream's error if it ended. */
  async ready(timeoutMs?: number): Promise<this> {
    await eventually(() => this.messages > 0 || this.ended, "the stream's first message", timeoutMs);
    if (this.error) throw this.error;
    if (this.messages === 0) throw new Error("the stream ended before its first message");
    return this;
  }

  /** Waits until `check` holds for the items (bounded), failing with the stream's error or `describe`'s summary. */
  async waitFor(check: (items: Carried<M>[]) => boolean, what: string, describe: (item: Carried<M>) => unknown = (i) => i): Promise<void> {
    await eventually(() => check(this.items) || this.ended, what);
    if (this.error) throw this.error;
    expect(check(this.items), `${what}; got ${JSON.stringify(this.items.map(describe), (_, v: unknown) => (typeof v === "bigint" ? v.toString() : v))}`).to.equal(true);
  }

  /** Cancels the stream; resolves when it has ended. */
  close(): Promise<void> {
    this.abort.abort();
    return this.done;
  }
}
