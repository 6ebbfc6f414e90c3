/**
 * The baseline servers the bench compares Agora with (bench/peers/): bare
 * Connect-node, bare @grpc/grpc-js and bare grpc-go, each serving only
 * grpc.health.v1.Health/Check, and GetProduct's peers (@grpc/grpc-js + pg,
 * connect-go + pgx). The Go ones are built into .tools/bin on first use (again
 * only when their sources change), as is every Go program of the bench.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "../../scripts/cluster.js";
import { track } from "./children.js";

const GO_PEER_DIR = path.join(REPO_ROOT, "bench", "peers", "go-health");
export const GO_PEER_BIN = path.join(REPO_ROOT, ".tools", "bin", "agora-bench-go-health");

/** Builds the grpc-go peer unless the binary matches its sources; returns why it cannot be built, if so. */
export function ensureGoPeer(log: (line: string) => void): string | undefined {
  return ensureGoBinary({ what: "the grpc-go peer", dir: GO_PEER_DIR, bin: GO_PEER_BIN }, log);
}

const GO_PRODUCT_DIR = path.join(REPO_ROOT, "bench", "peers", "go-product");
const GO_PRODUCT_BIN = path.join(REPO_ROOT, ".tools", "bin", "agora-bench-go-product");

/** Builds the Go GetProduct peer (connect-go + pgx) unless the binary matches its sources; returns why it cannot be built, if so. */
export function ensureGoProductPeer(log: (line: string) => void): string | undefined {
  return ensureGoBinary({ what: "the Go GetProduct peer", dir: GO_PRODUCT_DIR, bin: GO_PRODUCT_BIN, ...GO_CLIENT_STUBS }, log);
}

/** What a Go program built on the Go client stubs of proto/ (examples/go/gen) is also made from, and how the stubs are made. */
export const GO_CLIENT_STUBS: Pick<GoProgram, "inputs" | "prepare"> = {
  inputs: [
    "buf.gen.go.yaml",
    "examples/go/go.mod",
    "examples/go/go.sum",
    ...fs
      .readdirSync(path.join(REPO_ROOT, "proto"), { recursive: true, encoding: "utf8" })
      .filter((f) => f.endsWith(".proto"))
      .sort()
      .map((f) => `proto/${f}`),
  ],
  prepare: () => execFileSync(path.join(REPO_ROOT, "node_modules", ".bin", "buf"), ["generate", "--template", "buf.gen.go.yaml"], { cwd: REPO_ROOT, stdio: ["ignore", "ignore", "inherit"] }),
};

export interface GoProgram {
  /** For messages: "the grpc-go peer". */
  what: string;
  dir: string;
  bin: string;
  /** What else the binary is built from (paths from the repository's root), and what makes the rest of it before a build. */
  inputs?: string[];
  prepare?: () => void;
}

/**
 * Builds the Go program in `dir` into `bin` (modules from the Go proxy) unless
 * the binary matches its sources (its .go files, go.mod, go.sum and `inputs`);
 * returns why it cannot be built, if so.
 */
export function ensureGoBinary({ what, dir, bin, inputs = [], prepare }: GoProgram, log: (line: string) => void): string | undefined {
  const own = fs.readdirSync(dir).filter((f) => f.endsWith(".go") || f === "go.mod" || f === "go.sum").sort();
  const sources = [...own.map((f) => path.join(dir, f)), ...inputs.map((f) => path.join(REPO_ROOT, f))];
  const stamp = createHash("sha256").update(Buffer.concat(sources.map((f) => fs.readFileSync(f)))).digest("hex");
  const stampFile = path.join(path.dirname(bin), `.${path.basename(bin)}.version`);
  if (fs.existsSync(bin) && fs.existsSync(stampFile) && fs.readFileSync(stampFile, "utf8").trim() === stamp) return undefined;
  try {
    execFileSync("go", ["version"], { stdio: "ignore" });
  } catch {
    return `go is not installed (Go 1.24 or newer builds ${what})`;
  }
  log(`building ${what} (go build, modules from the Go proxy)`);
  prepare?.();
  fs.mkdirSync(path.dirname(bin), { recursive: true });
  execFileSync("go", ["build", "-trimpath", "-o", bin, "."], { cwd: dir, stdio: ["ignore", "ignore", "inherit"] });
  fs.writeFileSync(stampFile, `${stamp}\n`);
  return undefined;
}

export interface Peer {
  name: string;
  pid: number;
  target: string;
  stop(): Promise<void>;
}

/** Starts a peer (pinned to `cpus` from its first instruction when given) and waits for "listening <port>". */
export async function startPeer(name: string, command: string, args: string[], cpus: string | undefined): Promise<Peer> {
  const [cmd, argv] = cpus ? ["taskset", ["-c", cpus, command, ...args]] : [command, args];
  const child: ChildProcess = spawn(cmd, argv, { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
  track(child);
  let output = "";
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 30 s:\n${output}`)), 30_000);
    const onData = (d: Buffer) => {
      output += d.toString();
      const m = /listening (\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        // What it writes from now on (a peer's access log) is read and dropped, not kept.
        child.stdout!.off("data", onData).resume();
        child.stderr!.off("data", onData).resume();
        resolve(Number(m[1]));
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) at start:\n${output}`));
    });
  });
  return {
    name,
    pid: child.pid!,
    target: `127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
        child.once("exit", () => {
          clearTimeout(timer);
          resolve();
        });
        child.kill("SIGTERM");
      }),
  };
}

export const PEERS = {
  "connect-node": () => [process.execPath, ["--import", "tsx", "bench/peers/connect-health.ts"]] as const,
  "grpc-js": () => [process.execPath, ["--import", "tsx", "bench/peers/grpcjs-health.ts"]] as const,
  /** The same server doing Agora's per-call work (request id, access log, metrics) in its handler. */
  "grpc-js with features": () => [process.execPath, ["--import", "tsx", "bench/peers/grpcjs-health.ts", "--features"]] as const,
  "grpc-go": () => [GO_PEER_BIN, ["-addr", "127.0.0.1:0"]] as const,
  /** GetProduct on Agora's database (bench/peers/grpcjs-product.ts). */
  "grpc-js-product": (databaseUrl: string) => [process.execPath, ["--import", "tsx", "bench/peers/grpcjs-product.ts", databaseUrl]] as const,
  /** The same in Go, connect-go + pgx (bench/peers/go-product; ensureGoProductPeer builds it). */
  "go-product": (databaseUrl: string) => [GO_PRODUCT_BIN, ["-db", databaseUrl, "-addr", "127.0.0.1:0"]] as const,
};
