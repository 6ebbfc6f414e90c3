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
