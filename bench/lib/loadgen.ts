/**
 * The bench's Go load generators (bench/loadgen): one program, built on first
 * use from the Go client stubs of proto/ (examples/go/gen), whose commands
 * read their settings as one JSON line on stdin and answer with lines on
 * stdout. It runs on the load generator's CPU like the bench itself.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import { REPO_ROOT } from "../../scripts/cluster.js";
import { track } from "./children.js";
import type { GhzSummary } from "./ghz.js";
import { ensureGoBinary, GO_CLIENT_STUBS } from "./peers.js";

const LOADGEN_DIR = path.join(REPO_ROOT, "bench", "loadgen");
const LOADGEN_BIN = path.join(REPO_ROOT, ".tools", "bin", "agora-bench-loadgen");

/** Builds the program unless it matches its sources; checked once per bench process. */
let built = false;
function ensureBuilt(log: (line: string) => void): void {
  if (built) return;
  const problem = ensureGoBinary(
    {
      what: "the Go load generators",
      dir: LOADGEN_DIR,
      bin: LOADGEN_BIN,
      ...GO_CLIENT_STUBS,
    },
    log,
  );
  if (problem) throw new Error(problem);
  built = true;
}

export class Loadgen {
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;

  /** Starts `command` with its settings; every line it writes goes to `onLine`. */
  constructor(command: "chat-subscribers" | "files" | "unary", settings: object, onLine: (line: string) => void, log: (line: string) => void) {
    ensureBuilt(log);
    this.child = track(spawn(LOADGEN_BIN, [command], { stdio: ["pipe", "pipe", "inherit"] }));
    // "close": after it exited and its output was read to the end.
    this.exited = new Promise((resolve) => this.child.once("close", () => resolve()));
    this.send(JSON.stringify(settings));
    readline.createInterface({ input: this.child.stdout! }).on("line", onLine);
  }

  /** Its CPU is the load generator's too. */
  get pid(): number {
    return this.child.pid!;
  }

  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  /** Ends its input, which ends every command; SIGKILL after `killAfterMs`. */
  async close(killAfterMs = 10_000): Promise<void> {
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), killAfterMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/**
 * Health/Check in closed loops over the Connect protocol or gRPC-Web (which ghz does not speak), `workers`
 * sharing `connections` HTTP/2 connections, for `seconds`; reported as ghz reports.
 */
export async function unaryLoad(
  settings: { url: string; protocol: "connect" | "grpc-web"; workers: number; connections: number; seconds: number },
  log: (line: string) => void,
): Promise<GhzSummary> {
  let line: string | undefined;
  const loadgen = new Loadgen("unary", settings, (l) => void (line ??= l), log);
  await loadgen.close(settings.seconds * 1000 + 10_000);
  if (!line) throw new Error(`the unary load generator answered nothing (${settings.protocol} on ${settings.url})`);
  const r = JSON.parse(line) as Omit<GhzSummary, "rps" | "loadgenCpuMs"> & { cpuMs: number };
  return { ...r, rps: r.ok / r.seconds, loadgenCpuMs: r.cpuMs };
}
