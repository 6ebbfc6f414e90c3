// Real server processes for end-to-end tests, started the way a user starts Agora
// (`node --import tsx src/main.ts`, which is what `npm start` runs through tsx).
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ADMIN, login, NO_RATE_LIMITS } from "./harness.js";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Settings main.ts reads; never inherited from the environment running the tests. */
const CONFIG_VARS = [
  "AUTH_ISSUER",
  "AUTH_AUDIENCE",
  "ACCESS_TOKEN_TTL_SECONDS",
  "REFRESH_TOKEN_TTL_SECONDS",
  "JWT_PRIVATE_KEY_FILE",
  "JWKS_URL",
  "ADMIN_USERNAME",
  "ADMIN_PASSWORD",
  "LOGIN_MAX_FAILURES_PER_USER",
  "LOGIN_MAX_FAILURES_PER_ADDRESS",
  "LOGIN_MAX_DELAY_SECONDS",
  "LOGIN_WINDOW_SECONDS",
  "TRUST_FORWARDED_FOR",
  "HOST",
  "PORT",
  "SERVICES",
  "DATABASE_URL",
  "DATA_DIR",
  "EMBEDDED_PG_PORT",
  "LOG_LEVEL",
  "MAX_MESSAGE_BYTES",
  "MAX_CONCURRENT_STREAMS",
  "SHUTDOWN_GRACE_MS",
  "SHUTDOWN_DELAY_MS",
  "HEARTBEAT_INTERVAL_MS",
  "DB_POOL_SIZE",
];

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** One JSON log line of the server (pino). */
export type LogLine = Record<string, unknown> & { msg?: string; level?: string };

const running = new Set<AgoraProcess>();
const tempDirs: string[] = [];

/**
 * A new empty directory under the system temp dir, mode 0755 (an embedded
 * PostgreSQL runs as the `postgres` user when we are root and must enter it);
 * removed by cleanupProcesses().
 */
export function tempDataDir(prefix = "agora-e2e-"): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755);
  tempDirs.push(dir);
  return dir;
}

/**
 * What every spawned server gets unless the test says otherwise: loopback, an
 * ephemeral port, the harness's first administrator, and a DATA_DIR outside the
 * repository (the signing key lives there; so does an embedded PostgreSQL when
 * DATABASE_URL is not set).
 */
function defaults(env: Record<string, string>): Record<string, string> {
  return {
    HOST: "127.0.0.1",
    PORT: "0",
    ADMIN_USERNAME: ADMIN.username,
    ADMIN_PASSWORD: ADMIN.password,
    ...NO_RATE_LIMITS,
    DATA_DIR: env.DATA_DIR ?? process.env.AGORA_TEST_DATA_DIR ?? tempDataDir(),
  };
}

/** A spawned `src/main.ts`: its output, its exit, and ways to stop it. */
export class AgoraProcess {
  readonly child: ChildProcess;
  /** Every complete stdout line, as written. */
  readonly stdoutLines: string[] = [];
  stderr = "";
  /** Resolves once the process has exited (never rejects). */
  readonly exited: Promise<Exit>;
  exit: Exit | undefined;
  private partial = "";
  private readonly listeners = new Set<() => void>();

  constructor(env: Record<string, string>) {
    const base = { ...process.env };
    for (const name of CONFIG_VARS) delete base[name];
    delete base.AGORA_TEST_DATABASE_URL;
    delete base.AGORA_TEST_APP_DATABASE_URL;
    this.child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
      cwd: REPO_ROOT,
      env: { ...base, ...defaults(env), ...env },
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group, so cleanup can also reach an embedded PostgreSQL it started.
      detached: true,
    });
    running.add(this);
    this.child.stdout!.setEncoding("utf8");
    this.child.stderr!.setEncoding("utf8");
    this.child.stdout!.on("data", (chunk: string) => {
      const parts = (this.partial + chunk).split("\n");
      this.partial = parts.pop() ?? "";
      this.stdoutLines.push(...parts);
      this.notify();
    });
    this.child.stderr!.on("data", (chunk: string) => {
      this.stderr += chunk;
      this.notify();
    });
    this.exited = new Promise<Exit>((resolve) => {
      this.child.once("error", (err) => {
        this.stderr += `spawn failed: ${err.message}\n`;
        this.exit ??= { code: null, signal: null };
        running.delete(this);
        this.notify();
        resolve(this.exit);
      });
      // "close" (not "exit"): stdout and stderr have been read to the end.
      this.child.once("close", (code, signal) => {
        this.exit = { code, signal };
        running.delete(this);
        this.notify();
        resolve(this.exit);
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** stdout lines that are JSON objects (the server's log). */
  logs(): LogLine[] {
    const out: LogLine[] = [];
    for (const line of this.stdoutLines) {
      try {
        const parsed: unknown = JSON.parse(line);
        if (parsed && typeof parsed === "object") out.push(parsed as LogLine);
      } catch {
        // not a log line
      }
    }
    return out;
  }

  /** stderr split into non-empty lines. */
  stderrLines(): string[] {
    return this.stderr.split("\n").filter((l) => l.trim() !== "");
  }

  /** Resolves with the first log line matching `match`; rejects on exit or after `timeoutMs`. */
  waitForLog(match: (line: LogLine) => boolean, what: string, timeoutMs = 60_000): Promise<LogLine> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.logs().find(match);
        if (found) return done(() => resolve(found));
        if (this.exit) {
          return done(() => reject(new Error(`process exited (${JSON.stringify(this.exit)}) before ${what}\n${this.describe()}`)));
        }
      };
      const timer = setTimeout(
        () => done(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${this.describe()}`))),
        timeoutMs,
      );
      const done = (settle: () => void) => {
        clearTimeout(timer);
        this.listeners.delete(check);
        settle();
      };
      this.listeners.add(check);
      check();
    });
  }

  /** Sends a signal to the server process only (not its group). */
  signal(signal: NodeJS.Signals): void {
    if (!this.exit) this.child.kill(signal);
  }

  /** SIGTERM, then waits for the exit (SIGKILL to the group after `timeoutMs`, and a rejection). */
  async stop(timeoutMs = 30_000): Promise<Exit> {
    this.signal("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.kill();
        reject(new Error(`process ${this.pid} did not exit within ${timeoutMs} ms of SIGTERM\n${this.describe()}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL to the whole process group (the server and anything it spawned); for cleanup. */
  kill(): void {
    try {
      process.kill(-this.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }

  /** Output summary for failure messages. */
  describe(): string {
    const tail = this.stdoutLines.slice(-15).join("\n");
    return `--- stdout (last lines) ---\n${tail}\n--- stderr ---\n${this.stderr}`;
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }
}

/** A server process that has logged "listening". */
export interface ListeningProcess {
  proc: AgoraProcess;
  port: number;
  url: string;
}

/** Spawns the server and waits (bounded) for its "listening" log line; kills it if that never comes. */
export async function startProcess(env: Record<string, string>, timeoutMs = 90_000): Promise<ListeningProcess> {
  const proc = new AgoraProcess(env);
  try {
    const line = await proc.waitForLog((l) => l.msg === "listening", 'the "listening" log line', timeoutMs);
    const port = line.port;
    if (typeof port !== "number" || port <= 0) throw new Error(`"listening" line without a port: ${JSON.stringify(line)}`);
    return { proc, port, url: `http://127.0.0.1:${port}` };
  } catch (err) {
    proc.kill();
    await proc.exited;
    throw err;
  }
}

/** Runs the server until it exits by itself (e.g. a start-up error); kills it after `timeoutMs`. */
export async function runToExit(
  env: Record<string, string>,
  timeoutMs = 30_000,
): Promise<{ exit: Exit; stdout: string[]; stderr: string; proc: AgoraProcess }> {
  const proc = new AgoraProcess(env);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      proc.kill();
      reject(new Error(`process did not exit within ${timeoutMs} ms\n${proc.describe()}`));
    }, timeoutMs);
  });
  try {
    const exit = await Promise.race([proc.exited, timeout]);
    return { exit, stdout: proc.stdoutLines, stderr: proc.stderr, proc };
  } finally {
    clearTimeout(timer);
  }
}

/** Kills (SIGKILL, whole group) every process spawned here that is still running, and waits for them. */
export async function killAll(): Promise<void> {
  const procs = [...running];
  for (const p of procs) p.kill();
  await Promise.all(procs.map((p) => p.exited));
}

/** killAll(), then removes the directories tempDataDir() made. */
export async function cleanupProcesses(): Promise<void> {
  await killAll();
  for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}

/** An access token of the harness's first administrator, signed in on `baseUrl`. */
export async function adminToken(baseUrl: string): Promise<string> {
  return (await login(baseUrl, ADMIN.username, ADMIN.password)).accessToken;
}
