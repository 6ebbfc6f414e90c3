/** What every scenario gets from the orchestrator, and the shape of what it returns. */
import type { Pinning } from "./proc.js";

export interface Settings {
  /** Measured runs per configuration (the median is reported). */
  runs: number;
  warmupSeconds: number;
  runSeconds: number;
  /** ghz workers and HTTP/2 connections for closed-loop (maximum throughput) runs. */
  ghzConcurrency: number;
  ghzConnections: number;
  chat: {
    /** Subscriber counts, one fan-out measurement each. */
    subscribers: number[];
    /** Distinct users the subscriber streams belong to (streams are spread over them round robin). */
    users: number;
    /** Messages in flight: a message counts as delivered once every subscriber has it. */
    window: number;
    runSeconds: number;
    /** Streams held open, and for how long, while RSS is sampled. */
    holdStreams: number;
    holdSeconds: number;
  };
  reservations: { clients: number; runSeconds: number };
  stock: { clients: number; products: number; runSeconds: number };
  catalog: { clients: number; products: number; runSeconds: number };
  files: { megabytes: number };
  monitoring: { clients: number; pointsPerBatch: number; runSeconds: number };
  /** Games played at once (twice as many players queue for them first). */
  game: { games: number };
}

export const FULL: Settings = {
  runs: 3,
  warmupSeconds: 3,
  runSeconds: 5,
  ghzConcurrency: 50,
  ghzConnections: 5,
  chat: { subscribers: [100, 1000], users: 100, window: 8, runSeconds: 5, holdStreams: 1000, holdSeconds: 300 },
  reservations: { clients: 32, runSeconds: 8 },
  stock: { clients: 32, products: 64, runSeconds: 8 },
  catalog: { clients: 16, products: 2000, runSeconds: 8 },
  files: { megabytes: 256 },
  monitoring: { clients: 8, pointsPerBatch: 100, runSeconds: 5 },
  game: { games: 500 },
};

export const QUICK: Settings = {
  runs: 1,
  warmupSeconds: 1,
  runSeconds: 2,
  ghzConcurrency: 50,
  ghzConnections: 5,
  chat: { subscribers: [50, 200], users: 50, window: 8, runSeconds: 2, holdStreams: 200, holdSeconds: 10 },
  reservations: { clients: 32, runSeconds: 3 },
  stock: { clients: 32, products: 64, runSeconds: 3 },
  catalog: { clients: 16, products: 300, runSeconds: 3 },
  files: { megabytes: 32 },
  monitoring: { clients: 4, pointsPerBatch: 100, runSeconds: 2 },
  game: { games: 25 },
};

export interface BenchContext {
  quick: boolean;
  settings: Settings;
  pinning: Pinning;
  /** Scratch space of this run (PostgreSQL, server data and logs); removed at the end. */
  runDir: string;
  /** PostgreSQL of the bench: a URL allowed to create databases, and the postmaster's pid. */
  databaseAdminUrl: string;
  postgresPid: number;
  /** Where server CPU profiles go (--profile), per scenario. */
  profileDir: string | undefined;
  log(line: string): void;
}

/** One line of a scenario's table: every metric is a finite number. */
export interface Row {
  name: string;
  metrics: Record<string, number>;
  /** Short remarks shown in the table (e.g. "load generator CPU saturated"). */
  notes?: string[];
}

export interface ScenarioResult {
  status: "ok" | "skipped" | "failed";
  /** Why it was skipped or how it failed. */
  reason?: string;
  seconds: number;
  /** What the rows measure, for the README and the JSON reader. */
  description: string;
  rows: Row[];
  /** Scenario-specific facts (settings used, checks, series). */
  details: Record<string, unknown>;
}

/** A column of a scenario's table: a metric key of its rows. */
export interface Column {
  key: string;
  label: string;
  digits?: number;
}

export interface Scenario {
  name: string;
  title: string;
  description: string;
  /** The first column shows each row's name under this label. */
  rowLabel: string;
  columns: Column[];
  run(ctx: BenchContext): Promise<Omit<ScenarioResult, "seconds" | "description">>;
}
