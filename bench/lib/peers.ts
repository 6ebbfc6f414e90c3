/**
 * The baseline servers the bench compares Agora with (bench/peers/): bare
 * Connect-node, bare @grpc/grpc-js and bare grpc-go, each serving only
 * grpc.health.v1.Health/Check. The Go one is built into .tools/bin on first
 * use (again only when its sources change).
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
  const sources = ["main.go", "go.mod", "go.sum"].map((f) => fs.readFileSync(path.join(GO_PEER_DIR, f)));
  const stamp = createHash("sha256").update(Buffer.concat(sources)).digest("hex");
  const stampFile = `${path.dirname(GO_PEER_BIN)}/.agora-bench-go-health.version`;
  if (fs.existsSync(GO_PEER_BIN) && fs.existsSync(stampFile) && fs.readFileSync(stampFile, "utf8").trim() === stamp) return undefined;
  try {
    execFileSync("go", ["version"], { stdio: "ignore" });
  } catch {
    return "go is not installed (Go 1.24 or newer builds the grpc-go peer)";
  }
  log("building the grpc-go peer (go build, modules from the Go proxy)");
  fs.mkdirSync(path.dirname(GO_PEER_BIN), { recursive: true });
  execFileSync("go", ["build", "-trimpath", "-o", GO_PEER_BIN, "."], { cwd: GO_PEER_DIR, stdio: ["ignore", "ignore", "inherit"] });
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
  "grpc-go": () => [GO_PEER_BIN, ["-addr", "127.0.0.1:0"]] as const,
  /** GetProduct on Agora's database (bench/peers/grpcjs-product.ts). */
  "grpc-js-product": (databaseUrl: string) => [process.execPath, ["--import", "tsx", "bench/peers/grpcjs-product.ts", databaseUrl]] as const,
};
