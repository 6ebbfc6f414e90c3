// grpcurl and buf curl as a test drives them: one process per call, requests as
// JSON arguments or on stdin, responses parsed from stdout as they arrive,
// errors read from stderr and checked against the exit status each tool
// documents. Streams can be read until a condition holds and then ended, so a
// server stream never needs a fixed sleep.
import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { REPO_ROOT } from "./processes.js";
import type { MethodCoverage } from "./rpc-scenarios.js";

export const GRPCURL = path.join(REPO_ROOT, ".tools/bin/grpcurl");

/**
 * The buf binary itself. node_modules/.bin/buf is a Node wrapper that runs it
 * with spawnSync: a second process per call, and one that outlives a killed wrapper.
 */
export const BUF = (() => {
  const platforms: Record<string, string> = {
    "linux x64": "@bufbuild/buf-linux-x64",
    "linux arm64": "@bufbuild/buf-linux-aarch64",
    "darwin x64": "@bufbuild/buf-darwin-x64",
    "darwin arm64": "@bufbuild/buf-darwin-arm64",
  };
  const pkg = platforms[`${process.platform} ${process.arch}`];
  try {
    if (pkg) return createRequire(path.join(REPO_ROOT, "package.json")).resolve(`${pkg}/bin/buf`);
  } catch {
    // not installed under that name: the wrapper finds it
  }
  return path.join(REPO_ROOT, "node_modules/.bin/buf");
})();

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (killed after `timeoutMs`), for list/describe and other one-shot uses. */
export function runCommand(cmd: string, args: string[], timeoutMs = 30_000): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A JSON value as the tools print it (proto3 JSON mapping); `any`, so scenarios read fields directly. */
export type Json = any;

/** A gRPC status code by name, as grpcurl prints it ("NotFound") and Connect names it. */
export type CodeName = Exclude<keyof typeof Code, number>;

export interface RpcError {
  code: CodeName;
  message: string;
  /** Error details as the tool printed them (buf curl: JSON; grpcurl: text). */
  details: string;
}

export interface RpcResult {
  /** Every response message, in order. */
  messages: Json[];
  /** Set when the call ended with a non-OK status. */
  error?: RpcError;
  /** True when the test ended the call itself (a stream read far enough). */
  stopped: boolean;
  exitCode: number | null;
  stderr: string;
}

export interface OpenOptions {
  token?: string;
  /** The request; an array is sent as a stream of messages on stdin. */
  request?: Json | Json[];
  /** Keep stdin open for send()/end(): client and bidi streams driven step by step. */
  interactive?: boolean;
  /** Upper bound for the whole call (grpcurl -max-time; a kill for buf curl). */
  maxSeconds?: number;
}

/** Splits concatenated JSON objects (pretty-printed or not) as they arrive. */
export class JsonStreamParser {
  private text = "";
  private depth = 0;
  private start = -1;
  private inString = false;
  private escaped = false;
  private pos = 0;

  feed(chunk: string): Json[] {
    this.text += chunk;
    const out: Json[] = [];
    for (; this.pos < this.text.length; this.pos++) {
      const ch = this.text[this.pos];
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (ch === "\\") this.escaped = true;
        else if (ch === '"') this.inString = false;
        continue;
      }
      if (ch === '"') this.inString = true;
      else if (ch === "{") {
        if (this.depth++ === 0) this.start = this.pos;
      } else if (ch === "}" && this.depth > 0) {
        if (--this.depth === 0) {
          out.push(JSON.parse(this.text.slice(this.start, this.pos + 1)));
          this.text = this.text.slice(this.pos + 1);
          this.pos = -1;
        }
      }
    }
    return out;
  }
}

/** A running call: its responses so far, its stdin, and its end. */
export class RpcProcess {
  readonly messages: Json[] = [];
  readonly done: Promise<RpcResult>;
  private stderr = "";
  private stopping = false;
  private readonly child: ChildProcess;
  private readonly waiters = new Set<() => void>();
  private ended = false;
  private timer: NodeJS.Timeout | undefined;
  private timedOut = false;

  constructor(
    readonly label: string,
    cmd: string,
    args: string[],
    stdin: Json[] | undefined,
    interactive: boolean,
    maxSeconds: number,
    parseError: (stderr: string, exitCode: number | null) => RpcError | undefined,
  ) {
    // Its own process group, so ending it reaches everything it started.
    this.child = spawn(cmd, args, { cwd: REPO_ROOT, stdio: ["pipe", "pipe", "pipe"], detached: true });
    const parser = new JsonStreamParser();
    this.child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      this.messages.push(...parser.feed(chunk));
      this.notify();
    });
    this.child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (this.stderr += chunk));
    this.child.stdin!.on("error", () => undefined); // the process may exit before reading everything
    if (stdin) for (const m of stdin) this.child.stdin!.write(`${JSON.stringify(m)}\n`);
    if (!interactive) this.child.stdin!.end();
    // A safety net: grpcurl ends itself at -max-time; buf curl has no such flag.
    this.timer = setTimeout(() => {
      this.timedOut = true;
      this.kill("SIGKILL");
    }, (maxSeconds + 5) * 1000);
    this.done = new Promise((resolve, reject) => {
      const finish = (exitCode: number | null) => {
        clearTimeout(this.timer);
        this.ended = true;
        this.notify();
        const stopped = this.stopping;
        if (this.timedOut && !stopped) {
          reject(new Error(`${this.label}: killed after ${maxSeconds + 5} s; ${this.messages.length} message(s), stderr: ${this.stderr.slice(0, 1500)}`));
          return;
        }
        try {
          const error = stopped ? undefined : parseError(this.stderr, exitCode);
          resolve({ messages: this.messages, error, stopped, exitCode, stderr: this.stderr });
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      };
      this.child.once("error", (err) => {
        this.stderr += `spawn failed: ${err.message}\n`;
        finish(null);
      });
      this.child.once("close", (code) => finish(code));
    });
  }

  /** Writes one request message (interactive calls). */
  send(message: Json): void {
    this.child.stdin!.write(`${JSON.stringify(message)}\n`);
  }

  /** Half-closes: no more requests. */
  end(): void {
    this.child.stdin!.end();
  }

  /** Resolves once `predicate` holds for the messages so far; rejects if the call ends first or `timeoutMs` passes. */
  async waitFor(predicate: (messages: Json[]) => boolean, what: string, timeoutMs = 15_000): Promise<Json[]> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this.messages)) {
      if (this.ended) {
        const result = await this.done;
        throw new Error(`${this.label}: ended before ${what}; ${summarize(result)}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.label}: no ${what} within ${timeoutMs} ms; got ${JSON.stringify(this.messages).slice(0, 2000)}`);
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(t);
          this.waiters.delete(wake);
          resolve();
        };
        const t = setTimeout(wake, left);
        this.waiters.add(wake);
      });
    }
    return this.messages;
  }

  /** Ends the call from the client side (if still running) and returns what it got. */
  async stop(): Promise<RpcResult> {
    if (!this.ended) {
      this.stopping = true;
      this.kill("SIGTERM");
    }
    return this.done;
  }

  private kill(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.child.pid!, signal);
    } catch {
      // already gone
    }
  }

  private notify(): void {
    for (const wake of [...this.waiters]) wake();
  }
}

export function summarize(result: RpcResult): string {
  const error = result.error ? `${result.error.code}: ${result.error.message}` : "OK";
  return `status ${error} (exit ${result.exitCode}), ${result.messages.length} message(s)${result.stderr ? `, stderr: ${result.stderr.slice(0, 1500)}` : ""}`;
}

/** Service/Method, as tools and routes spell it. */
export function methodPath(method: DescMethod): string {
  return `${method.parent.typeName}/${method.name}`;
}

/** One way of calling the gateway from the command line. */
export abstract class RpcTool {
  constructor(
    readonly name: string,
    private readonly coverage?: MethodCoverage,
  ) {}

  /** Starts a call; read it with waitFor/done, end it with stop(). */
  open(method: DescMethod, o: OpenOptions = {}): RpcProcess {
    this.coverage?.record(method, this.name);
    const streamed = Array.isArray(o.request) || o.interactive === true;
    const stdin = Array.isArray(o.request) ? o.request : o.interactive && o.request !== undefined ? [o.request] : undefined;
    const maxSeconds = o.maxSeconds ?? 30;
    const args = this.args(method, o.token, streamed ? undefined : JSON.stringify(o.request ?? {}), maxSeconds);
    return new RpcProcess(`${this.name} ${methodPath(method)}`, this.command, args, stdin, o.interactive === true, maxSeconds, (stderr, exit) =>
      this.parseError(stderr, exit),
    );
  }

  /**
   * A google.protobuf.FieldMask as this tool takes it in JSON. The proto3 JSON
   * mapping is one string of lowerCamelCase paths; grpcurl's JSON decoder
   * (golang/protobuf jsonpb) only takes the message form, {"paths": [...]}
   * (fullstorydev/grpcurl#393).
   */
  fieldMask(paths: string[]): Json {
    return paths.map((p) => p.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase())).join(",");
  }

  /** Runs a call to its end. */
  call(method: DescMethod, request: Json | Json[], token?: string): Promise<RpcResult> {
    return this.open(method, { request, token }).done;
  }

  protected abstract readonly command: string;
  /** Arguments for one call; `body` is undefined when requests come on stdin. */
  protected abstract args(method: DescMethod, token: string | undefined, body: string | undefined, maxSeconds: number): string[];
  protected abstract parseError(stderr: string, exitCode: number | null): RpcError | undefined;

  /** A code name from its number, refusing numbers that are no gRPC code. */
  protected static codeName(n: number): CodeName | undefined {
    const name = Code[n] as CodeName | undefined;
    return n >= 1 && n <= 16 ? name : undefined;
  }
}

/** grpcurl -plaintext against host:port, schema from server reflection. */
export class Grpcurl extends RpcTool {
  protected readonly command = GRPCURL;

  constructor(
    private readonly target: string,
    coverage?: MethodCoverage,
    private readonly extra: string[] = [],
  ) {
    super("grpcurl", coverage);
  }

  override fieldMask(paths: string[]): Json {
    return { paths };
  }

  protected args(method: DescMethod, token: string | undefined, body: string | undefined, maxSeconds: number): string[] {
    return [
      "-plaintext",
      "-max-time",
      String(maxSeconds),
      ...(token ? ["-H", `authorization: Bearer ${token}`] : []),
      ...this.extra,
      "-d",
      body ?? "@",
      this.target,
      methodPath(method),
    ];
  }

  /**
   * grpcurl prints "ERROR:\n  Code: NotFound\n  Message: ..." (then any details) and exits
   * with 64 + the code. Both must agree.
   */
  protected parseError(stderr: string, exitCode: number | null): RpcError | undefined {
    if (exitCode === 0) return undefined;
    const code = /^\s*Code: (\w+)$/m.exec(stderr)?.[1];
    const message = /^\s*Message: (.*)$/m.exec(stderr)?.[1] ?? "";
    const fromExit = exitCode !== null && exitCode > 64 ? RpcTool.codeName(exitCode - 64) : undefined;
    if (!code || code !== fromExit) {
      throw new Error(`grpcurl: exit ${exitCode} does not match the printed status (${code ?? "none"}):\n${stderr}`);
    }
    return { code: fromExit, message, details: stderr.slice(stderr.indexOf(message) + message.length).trim() };
  }
}

export type BufProtocol = "grpc" | "grpcweb" | "connect";

/**
 * buf curl against the gateway URL, schema from server reflection. gRPC goes over
 * HTTP/2 (prior knowledge); gRPC-Web and Connect over HTTP/1.1 as browsers send
 * them, except bidi streams, which need HTTP/2.
 */
export class BufCurl extends RpcTool {
  protected readonly command = BUF;

  constructor(
    private readonly baseUrl: string,
    readonly protocol: BufProtocol,
    coverage?: MethodCoverage,
    private readonly extra: string[] = [],
  ) {
    super(`buf curl --protocol ${protocol}`, coverage);
  }

  protected args(method: DescMethod, token: string | undefined, body: string | undefined): string[] {
    const h2 = this.protocol === "grpc" || method.methodKind === "bidi_streaming";
    return [
      "curl",
      "--protocol",
      this.protocol,
      ...(h2 ? ["--http2-prior-knowledge"] : []),
      ...(token ? ["-H", `authorization: Bearer ${token}`] : []),
      ...this.extra,
      "-d",
      body ?? "@-",
      `${this.baseUrl}/${methodPath(method)}`,
    ];
  }

  /** buf curl prints the status as JSON ({"code": "not_found", ...}) and exits with 8 * the code. */
  protected parseError(stderr: string, exitCode: number | null): RpcError | undefined {
    if (exitCode === 0) return undefined;
    const status = new JsonStreamParser().feed(stderr).find((o: Json) => typeof o?.code === "string") as
      | { code: string; message?: string; details?: unknown[] }
      | undefined;
    const code = status?.code.replace(/(^|_)([a-z])/g, (_m, _s, c: string) => c.toUpperCase()) as CodeName | undefined;
    const fromExit = exitCode !== null && exitCode % 8 === 0 ? RpcTool.codeName(exitCode / 8) : undefined;
    if (!status || !fromExit || code !== fromExit) {
      throw new Error(`buf curl: exit ${exitCode} does not match the printed status (${status?.code ?? "none"}):\n${stderr}`);
    }
    return { code: fromExit, message: status.message ?? "", details: JSON.stringify(status.details ?? []) };
  }
}

/** Calls through one tool, with the assertions every scenario needs. */
export class Rpc {
  constructor(readonly tool: RpcTool) {}

  get name(): string {
    return this.tool.name;
  }

  /** A call that must succeed with one response (unary or client stream). */
  async ok(method: DescMethod, request: Json | Json[], token?: string): Promise<Json> {
    const result = await this.tool.call(method, request, token);
    if (result.error || result.messages.length !== 1) {
      throw new Error(`${this.name} ${methodPath(method)} ${JSON.stringify(request).slice(0, 300)}: expected one response, got ${summarize(result)}`);
    }
    return result.messages[0];
  }

  /**
   * A call that must fail with exactly `code` and carry `google.rpc` details, as every error Agora
   * raises does; returns the error. `from: "gateway"` marks an answer Envoy gives itself (jwt_authn's
   * 401 for a missing token), which has none.
   */
  async fails(
    method: DescMethod,
    request: Json | Json[],
    token: string | undefined,
    code: CodeName,
    message?: RegExp | string,
    options: { from?: "gateway" } = {},
  ): Promise<RpcError> {
    const result = await this.tool.call(method, request, token);
    const got = result.error?.code ?? "OK";
    if (got !== code) {
      throw new Error(`${this.name} ${methodPath(method)} ${JSON.stringify(request).slice(0, 300)}: expected ${code}, got ${summarize(result)}`);
    }
    const error = result.error!;
    if (message !== undefined && !(typeof message === "string" ? error.message.includes(message) : message.test(error.message))) {
      throw new Error(`${this.name} ${methodPath(method)}: ${code} as expected, but the message ${JSON.stringify(error.message)} does not match ${String(message)}`);
    }
    if (options.from !== "gateway" && !/ErrorInfo/.test(error.details)) {
      throw new Error(`${this.name} ${methodPath(method)}: ${code} "${error.message}" carries no google.rpc.ErrorInfo (details: ${error.details || "none"})`);
    }
    return error;
  }

  /** A server stream read until `until` holds for its messages, then ended by the client. */
  async stream(method: DescMethod, request: Json, token: string | undefined, until: (messages: Json[]) => boolean, what: string): Promise<Json[]> {
    const call = this.tool.open(method, { request, token });
    try {
      await call.waitFor(until, what);
    } finally {
      await call.stop();
    }
    return call.messages;
  }

  /** A stream left open while the test does other things (interactive: stdin stays open too). */
  open(method: DescMethod, request: Json | undefined, token: string | undefined, interactive = false): RpcProcess {
    return this.tool.open(method, { request, token, interactive });
  }
}
