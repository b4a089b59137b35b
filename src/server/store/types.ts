/**
 * The server's state (issue 11): API keys, agents and their versions, executions (a queue that
 * workers claim), their output, pools and workers. Two implementations share this interface and
 * one conformance suite: SQLite (embedded, the default, better-sqlite3) and PostgreSQL (several
 * workers, claims with FOR UPDATE SKIP LOCKED). All times are epoch milliseconds, passed in by
 * the caller (the store reads no clock). Every method is atomic; none leaves a half-written row.
 */
import type { ExecutionStatus, FinalStatus } from '../../orchestrator/types.js';

export type Role = 'admin' | 'deployer' | 'operator' | 'auditor';

export interface ApiKeyRecord {
  /** Public id (`ak_` + hex), also the key's prefix; never secret. */
  readonly id: string;
  readonly role: Role;
  /** The slow hash of the secret part (`scrypt$N$r$p$<salt b64>$<hash b64>`); the key itself is never stored. */
  readonly hash: string;
  readonly createdAt: number;
  readonly expiresAt: number | null;
  readonly revokedAt: number | null;
  /** Key id that created it, or `local:<uid>` for `aegis keys create`. */
  readonly createdBy: string;
}

export interface AgentVersionRecord {
  readonly name: string;
  readonly version: number;
  readonly manifestDigest: string;
  readonly codeDigest: string;
  readonly manifestText: string;
  readonly createdAt: number;
  readonly createdBy: string;
}

/** A deployed agent's latest version, with its code archive kept by the store (any worker can extract it). */
export interface NewAgentVersion {
  readonly name: string;
  readonly manifestDigest: string;
  readonly codeDigest: string;
  readonly manifestText: string;
  /** The uploaded `.tar.gz`, already checked; stored once per codeDigest. */
  readonly codeArchive: Buffer;
  readonly createdAt: number;
  readonly createdBy: string;
}

export interface ExecutionRecord {
  readonly id: string;
  readonly agent: string;
  readonly version: number;
  readonly status: ExecutionStatus;
  readonly args: readonly string[];
  readonly stdin: string | null;
  readonly env: Readonly<Record<string, string>>;
  readonly exitCode: number | null;
  readonly durationMs: number | null;
  /** The execution's summary (ExecutionSummary) once it ended. */
  readonly summary: Readonly<Record<string, unknown>> | null;
  readonly createdAt: number;
  readonly startedAt: number | null;
  readonly finishedAt: number | null;
  /** The worker that claimed it. */
  readonly worker: string | null;
  readonly createdBy: string;
  readonly cancelRequested: boolean;
}

export interface NewExecution {
  readonly id: string;
  readonly agent: string;
  readonly version: number;
  readonly args: readonly string[];
  readonly stdin: string | null;
  readonly env: Readonly<Record<string, string>>;
  readonly createdAt: number;
  readonly createdBy: string;
}

export interface ExecutionFilter {
  readonly agent?: string;
  readonly status?: ExecutionStatus;
  readonly since?: number;
  readonly until?: number;
  /** At most this many, newest first (the store caps it). */
  readonly limit?: number;
}

/** A piece of an execution's output or event stream, in order (`seq` from 1). */
export interface OutputChunk {
  readonly seq: number;
  readonly kind: 'stdout' | 'stderr' | 'audit' | 'exit';
  /** Text for stdout/stderr; JSON text for audit and exit. */
  readonly data: string;
}

export interface PoolRecord {
  readonly agent: string;
  readonly warm: number;
}

export interface Store {
  createKey(key: ApiKeyRecord): Promise<void>;
  getKey(id: string): Promise<ApiKeyRecord | null>;
  listKeys(): Promise<ApiKeyRecord[]>;
  /** false when there is no such key or it was revoked already. */
  revokeKey(id: string, at: number): Promise<boolean>;

  /** Allocates the next version of `name` (1 for a new name) atomically. */
  putAgentVersion(v: NewAgentVersion): Promise<AgentVersionRecord>;
  /** The latest version of a name that is not deleted. */
  getAgent(name: string): Promise<AgentVersionRecord | null>;
  getAgentVersion(name: string, version: number): Promise<AgentVersionRecord | null>;
  getCodeArchive(codeDigest: string): Promise<Buffer | null>;
  listAgents(): Promise<AgentVersionRecord[]>;
  /** Marks the name deleted (its versions stay for the executions that name them); false when unknown. */
  deleteAgent(name: string, at: number): Promise<boolean>;

  createExecution(e: NewExecution): Promise<ExecutionRecord>;
  getExecution(id: string): Promise<ExecutionRecord | null>;
  listExecutions(filter: ExecutionFilter): Promise<ExecutionRecord[]>;
  /** Moves up to `limit` queued executions, oldest first, to `running` on `worker`; never one twice. */
  claimQueued(worker: string, limit: number, at: number): Promise<ExecutionRecord[]>;
  /**
   * Ends a running (or queued) execution; false when it had ended already (the first end wins).
   */
  finishExecution(
    id: string,
    end: { status: FinalStatus; exitCode: number | null; durationMs: number | null; summary: Record<string, unknown> | null; at: number },
  ): Promise<boolean>;
  /** Sets cancelRequested; returns the record after, or null when unknown. */
  requestCancel(id: string): Promise<ExecutionRecord | null>;
  /** The running executions of this worker that have cancelRequested set. */
  cancelRequested(worker: string): Promise<string[]>;

  /**
   * Appends in order, atomically; returns the chunks as stored (with their seq), which may differ
   * from the input: past the store's output cap one truncation marker is stored and later
   * stdout/stderr/audit chunks are dropped (`exit` chunks are always kept). `store.not_found`
   * for an unknown execution.
   */
  appendOutput(id: string, chunks: readonly Omit<OutputChunk, 'seq'>[]): Promise<OutputChunk[]>;
  readOutput(id: string, afterSeq: number, limit: number): Promise<OutputChunk[]>;

  setPool(agent: string, warm: number): Promise<void>;
  listPools(): Promise<PoolRecord[]>;

  /** Records that `worker` is alive at `at`. */
  heartbeat(worker: string, at: number): Promise<void>;
  /**
   * Marks `lost` every running execution of a worker whose last heartbeat is older than
   * `staleBefore` (and of `worker` itself when given: a restarted worker's own leftovers);
   * returns them (the caller audits `execution.lost`).
   */
  reapLost(staleBefore: number, at: number, worker?: string): Promise<ExecutionRecord[]>;

  /**
   * Optional: calls `onQueued` soon after any handle on the same database creates an execution
   * (PostgreSQL LISTEN/NOTIFY), so idle workers need not wait for their next poll. Best effort:
   * a missed wake-up only delays a claim until the poll. Resolves to the unsubscribe function.
   */
  subscribeQueued?(onQueued: () => void): Promise<() => Promise<void>>;

  close(): Promise<void>;
}
