/**
 * What the SQLite and PostgreSQL stores share: row decoding (stored rows are parsed defensively),
 * input checks, the output cap and its truncation marker. No I/O.
 */
import { createHash } from 'node:crypto';
import type { ExecutionStatus } from '../../orchestrator/types.js';
import { StoreError } from './errors.js';
import type { ApiKeyRecord, AgentVersionRecord, ExecutionRecord, OutputChunk, Role } from './types.js';

/**
 * Bounds on what one execution's output may hold in the store. Past either bound the store keeps
 * one marker chunk (TRUNCATION_MARKER, kind `stderr`) and drops every later stdout/stderr/audit
 * chunk of that execution; `exit` chunks are always kept, so a follower always sees the end.
 */
export interface OutputLimits {
  /** Bytes (UTF-8) of stdout, stderr and audit data per execution. Default 16 MiB. */
  readonly maxBytes: number;
  /** Chunks (rows) per execution. Default 100 000. */
  readonly maxChunks: number;
}

export const DEFAULT_OUTPUT_LIMITS: OutputLimits = { maxBytes: 16 * 1024 * 1024, maxChunks: 100_000 };

/** The text of the one chunk stored when an execution's output reaches its cap. */
export const TRUNCATION_MARKER = '\n[aegis: output truncated: this execution reached the stored output limit; later output was dropped]\n';

/** True for the marker chunk the store writes once when an execution's output is truncated. */
export function isTruncationMarker(c: Pick<OutputChunk, 'kind' | 'data'>): boolean {
  return c.kind === 'stderr' && c.data === TRUNCATION_MARKER;
}

/** listExecutions: default and maximum page size. */
export const LIST_DEFAULT = 100;
export const LIST_MAX = 1000;
/** readOutput: maximum chunks per call. */
export const READ_MAX = 10_000;

export const ROLES: readonly Role[] = ['admin', 'deployer', 'operator', 'auditor'];
export const STATUSES: readonly ExecutionStatus[] = ['queued', 'running', 'exited', 'oom', 'timeout', 'killed', 'failed_to_start', 'lost'];
const KINDS: readonly OutputChunk['kind'][] = ['stdout', 'stderr', 'audit', 'exit'];

export function resolveLimits(o: Partial<OutputLimits> | undefined): OutputLimits {
  const l = { ...DEFAULT_OUTPUT_LIMITS, ...o };
  if (!Number.isSafeInteger(l.maxBytes) || l.maxBytes < 1 || !Number.isSafeInteger(l.maxChunks) || l.maxChunks < 2)
    throw new StoreError('store.invalid', `invalid output limits ${JSON.stringify(l)}`);
  return l;
}

export function listLimit(limit: number | undefined): number {
  if (limit === undefined) return LIST_DEFAULT;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new StoreError('store.invalid', `invalid limit ${String(limit)}`);
  return Math.min(limit, LIST_MAX);
}

export function readLimit(afterSeq: number, limit: number): number {
  if (!Number.isSafeInteger(afterSeq) || afterSeq < 0) throw new StoreError('store.invalid', `invalid afterSeq ${String(afterSeq)}`);
  if (!Number.isSafeInteger(limit) || limit < 1) throw new StoreError('store.invalid', `invalid limit ${String(limit)}`);
  return Math.min(limit, READ_MAX);
}

export function claimLimit(limit: number): number {
  if (!Number.isSafeInteger(limit) || limit < 0) throw new StoreError('store.invalid', `invalid claim limit ${String(limit)}`);
  return limit;
}

/** The archive's digest must be the one it is stored under: archives are kept once per digest. */
export function checkCodeDigest(codeDigest: string, archive: Buffer): void {
  const actual = `sha256:${createHash('sha256').update(archive).digest('hex')}`;
  if (actual !== codeDigest) throw new StoreError('store.invalid', `code digest ${codeDigest} is not the archive's (${actual})`);
}

export function checkWarm(warm: number): void {
  if (!Number.isSafeInteger(warm) || warm < 0) throw new StoreError('store.invalid', `invalid pool size ${String(warm)}`);
}

export function checkChunks(chunks: readonly Omit<OutputChunk, 'seq'>[]): void {
  for (const c of chunks)
    if (!KINDS.includes(c.kind) || typeof c.data !== 'string')
      throw new StoreError('store.invalid', `invalid output chunk kind ${JSON.stringify(c.kind)}`);
}

/**
 * Which of `chunks` an execution keeps, given what it holds already (`bytes` of capped data in
 * `count` chunks, `truncated` once the marker was written). Pure; both stores call it inside the
 * transaction that appends.
 */
export function applyOutputCap(
  state: { bytes: number; count: number; truncated: boolean },
  chunks: readonly Omit<OutputChunk, 'seq'>[],
  limits: OutputLimits,
): { keep: Omit<OutputChunk, 'seq'>[]; bytes: number; count: number; truncated: boolean } {
  let { bytes, count, truncated } = state;
  const keep: Omit<OutputChunk, 'seq'>[] = [];
  for (const c of chunks) {
    if (c.kind === 'exit') {
      keep.push({ kind: c.kind, data: c.data });
      count++;
      continue;
    }
    if (truncated) continue;
    const size = Buffer.byteLength(c.data, 'utf8');
    // One row stays free for the marker (and exits are never refused).
    if (bytes + size > limits.maxBytes || count + 1 >= limits.maxChunks) {
      keep.push({ kind: 'stderr', data: TRUNCATION_MARKER });
      count++;
      truncated = true;
      continue;
    }
    keep.push({ kind: c.kind, data: c.data });
    bytes += size;
    count++;
  }
  return { keep, bytes, count, truncated };
}

// ---- row decoding: stored data is untrusted input ----

function corrupt(what: string): StoreError {
  return new StoreError('store.corrupt', `stored ${what} is malformed`);
}

export function str(v: unknown, what: string): string {
  if (typeof v !== 'string') throw corrupt(what);
  return v;
}

export function num(v: unknown, what: string): number {
  const n = typeof v === 'bigint' ? Number(v) : typeof v === 'string' && /^-?\d+$/u.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n)) throw corrupt(what);
  return n;
}

export function numOrNull(v: unknown, what: string): number | null {
  return v === null || v === undefined ? null : num(v, what);
}

function json(v: unknown, what: string): unknown {
  try {
    return JSON.parse(str(v, what)) as unknown;
  } catch (err) {
    if (err instanceof StoreError) throw err;
    throw corrupt(what);
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export type Row = Record<string, unknown>;

export function keyFromRow(r: Row): ApiKeyRecord {
  const role = str(r['role'], 'key role') as Role;
  if (!ROLES.includes(role)) throw corrupt('key role');
  return {
    id: str(r['id'], 'key id'),
    role,
    hash: str(r['hash'], 'key hash'),
    createdAt: num(r['created_at'], 'key time'),
    expiresAt: numOrNull(r['expires_at'], 'key expiry'),
    revokedAt: numOrNull(r['revoked_at'], 'key revocation'),
    createdBy: str(r['created_by'], 'key creator'),
  };
}

export function versionFromRow(r: Row): AgentVersionRecord {
  return {
    name: str(r['name'], 'agent name'),
    version: num(r['version'], 'agent version'),
    manifestDigest: str(r['manifest_digest'], 'manifest digest'),
    codeDigest: str(r['code_digest'], 'code digest'),
    manifestText: str(r['manifest_text'], 'manifest text'),
    createdAt: num(r['created_at'], 'agent time'),
    createdBy: str(r['created_by'], 'agent creator'),
  };
}

export function executionFromRow(r: Row): ExecutionRecord {
  const status = str(r['status'], 'execution status') as ExecutionStatus;
  if (!STATUSES.includes(status)) throw corrupt('execution status');
  const args = json(r['args'], 'execution args');
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) throw corrupt('execution args');
  const env = json(r['env'], 'execution env');
  if (!isPlainObject(env) || !Object.values(env).every((v) => typeof v === 'string')) throw corrupt('execution env');
  const summary = r['summary'] === null || r['summary'] === undefined ? null : json(r['summary'], 'execution summary');
  if (summary !== null && !isPlainObject(summary)) throw corrupt('execution summary');
  const stdin = r['stdin'];
  if (stdin !== null && stdin !== undefined && typeof stdin !== 'string') throw corrupt('execution stdin');
  const worker = r['worker'];
  if (worker !== null && worker !== undefined && typeof worker !== 'string') throw corrupt('execution worker');
  return {
    id: str(r['id'], 'execution id'),
    agent: str(r['agent'], 'execution agent'),
    version: num(r['version'], 'execution version'),
    status,
    args: args as string[],
    stdin: stdin ?? null,
    env: env as Record<string, string>,
    exitCode: numOrNull(r['exit_code'], 'exit code'),
    durationMs: numOrNull(r['duration_ms'], 'duration'),
    summary,
    createdAt: num(r['created_at'], 'execution time'),
    startedAt: numOrNull(r['started_at'], 'start time'),
    finishedAt: numOrNull(r['finished_at'], 'finish time'),
    worker: worker ?? null,
    createdBy: str(r['created_by'], 'execution creator'),
    cancelRequested: num(r['cancel_requested'], 'cancel flag') !== 0,
  };
}

export function chunkFromRow(r: Row): OutputChunk {
  const kind = str(r['kind'], 'chunk kind') as OutputChunk['kind'];
  if (!KINDS.includes(kind)) throw corrupt('chunk kind');
  return { seq: num(r['seq'], 'chunk seq'), kind, data: str(r['data'], 'chunk data') };
}
