import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { IdentityService, type Tokens } from "../../gen/agora/identity/v1/identity_pb.js";

/** Signs in, keeps the access token fresh (before expiry, and on demand), and adds it to every call. */
export class Auth {
  userId = "";
  private tokens: Tokens | undefined;
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private stopped = false;
  private readonly identity: Client<typeof IdentityService>;
  /** Every call through it carries the access token. */
  readonly transport: Transport;

  constructor(
    makeTransport: (interceptors: Interceptor[]) => Transport,
    readonly username: string,
    private readonly password: string,
  ) {
    this.transport = makeTransport([this.interceptor]);
    this.identity = createClient(IdentityService, this.transport);
  }

  /** Bearer token on every call; a unary call refused as UNAUTHENTICATED is retried once after a refresh. */
  readonly interceptor: Interceptor = (next) => async (req) => {
    if (this.tokens) req.header.set("authorization", `Bearer ${this.tokens.accessToken}`);
    if (req.stream || req.service.typeName === IdentityService.typeName) return next(req);
    try {
      return await next(req);
    } catch (err) {
      if (ConnectError.from(err).code !== Code.Unauthenticated) throw err;
      await this.refresh();
      req.header.set("authorization", `Bearer ${this.tokens!.accessToken}`);
      return next(req);
    }
  };

  async login(): Promise<void> {
    const res = await this.identity.login({ username: this.username, password: this.password }, { timeoutMs: 10_000 });
    this.userId = res.user?.id ?? "";
    this.accept(res.tokens);
  }

  /** New tokens from the refresh token; signs in again when that is refused. Concurrent callers share one attempt. */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const res = await this.identity.refresh({ refreshToken: this.tokens?.refreshToken ?? "" }, { timeoutMs: 10_000 });
        this.accept(res.tokens);
      } catch (err) {
        const code = ConnectError.from(err).code;
        if (code !== Code.Unauthenticated && code !== Code.InvalidArgument) throw err;
        await this.login();
      }
    })().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  /** Stops refreshing and revokes the session (best effort). */
  async logout(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.tokens) await this.identity.logout({ refreshToken: this.tokens.refreshToken }, { timeoutMs: 1_000 }).catch(() => {});
  }

  private accept(tokens: Tokens | undefined): void {
    if (!tokens) throw new Error("the server sent no tokens");
    this.tokens = tokens;
    clearTimeout(this.timer);
    if (this.stopped) return;
    const left = tokens.accessTokenExpireTime ? timestampMs(tokens.accessTokenExpireTime) - Date.now() : 60_000;
    this.schedule(Math.max(1_000, left - Math.min(60_000, left / 4)));
  }

  private schedule(ms: number): void {
    this.timer = setTimeout(() => this.refresh().catch(() => this.schedule(5_000)), ms);
    this.timer.unref();
  }
}

/**
 * The server and credentials of a command-line client: --server, --username,
 * --password, else AGORA_SERVER, AGORA_USERNAME, AGORA_PASSWORD; the password
 * is asked for on a terminal. Undefined after printing the usage for --help.
 */
export async function signInSettings(usage: string, help: string[]): Promise<{ server: string; username: string; password: string } | undefined> {
  const { values } = parseArgs({
    options: {
      server: { type: "string" },
      username: { type: "string" },
      password: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log([usage, ...help].join("\n"));
    return undefined;
  }
  const server = values.server ?? process.env.AGORA_SERVER ?? "http://127.0.0.1:8080";
  const username = values.username ?? process.env.AGORA_USERNAME;
  if (!username) throw new Error(`${usage}\n(or set AGORA_USERNAME)`);
  let password = values.password ?? process.env.AGORA_PASSWORD;
  if (!password) {
    if (!process.stdin.isTTY) throw new Error("set --password or AGORA_PASSWORD (no terminal to ask on)");
    password = await askPassword(`password for ${username}: `);
  }
  return { server, username, password };
}

async function askPassword(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.setEncoding("utf8");
  stdin.resume();
  return new Promise((resolve, reject) => {
    let value = "";
    const done = () => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write("\n");
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === "\r" || ch === "\n") return done(), resolve(value);
        if (ch === "\u0003" || ch === "\u0004") return done(), reject(new Error("no password given"));
        value = ch === "\u007f" || ch === "\b" ? value.slice(0, -1) : value + ch;
      }
    };
    stdin.on("data", onData);
  });
}

/** Runs a command-line client's `main` when its module is the program (not when a test imports it); exits with its code. */
export function runIfMain(moduleUrl: string, main: () => Promise<number>): void {
  if (!process.argv[1] || moduleUrl !== pathToFileURL(path.resolve(process.argv[1])).href) return;
  main().then(
    (code) => process.stdout.write("", () => process.exit(code)),
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(2);
    },
  );
}
