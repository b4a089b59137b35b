/**
 * The shared server store: PostgreSQL (pg), for several `aegis serve` workers on one database
 * (docs/cluster.md). Same interface and conformance suite as the SQLite store.
 *
 * - Tables live in one schema (default `aegis_server`), created and migrated at open under a
 *   transaction-scoped advisory lock; `schema_version` holds the version, and a database written
 *   by a newer AEGIS is refused (`store.schema_newer`).
 * - Every method is one statement or one transaction. Claims are one
 *   `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)`: concurrent workers skip each
 *   other's locked rows, so an execution is never claimed twice and no worker waits on another.
 *   Version allocation is an upsert on the agent's row (its row lock serialises deploys); output
 *   appends lock the execution's row (`SELECT … FOR UPDATE`) so sequence numbers and the output
 *   cap hold across workers; reaping is one UPDATE, so two reapers never report one execution twice.
 * - New executions NOTIFY the channel `<schema>_queued` (in the INSERT's statement, sent at
 *   commit); subscribeQueued() LISTENs on its own connection (re-made when it drops) so idle
 *   workers claim at once. The dispatcher still polls: a lost wake-up only delays a claim.
 * - TLS: `sslmode=verify-full` in the URL, or a CA file (options.ca) to verify the server with.
 * - Durability: the sessions run with `synchronous_commit = off` (the commit does not wait for the
 *   WAL flush: create-to-execute p50 about 2.5 ms instead of 9.6 ms on this host). A crash of the
 *   database server may lose the last commits (never corrupt anything); revocations of API keys
 *   commit with `synchronous_commit = on`. The audit log's store keeps its own connections, with
 *   synchronous_commit on (docs/audit.md).
 *
 * LIMITATION: every worker's database role can read and write every table (keys' hashes, code
 * archives, all executions): a worker host is trusted with the whole cluster's state.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { inTransaction } from '../../host/pg-transaction.js';
import type { FinalStatus } from '../../orchestrator/types.js';
import {
  type OutputLimits,
  type Row,
  applyOutputCap,
  checkChunks,
  checkCodeDigest,
  checkWarm,
  chunkFromRow,
  claimLimit,
  executionFromRow,
  keyFromRow,
  listLimit,
  num,
  readLimit,
  resolveLimits,
  str,
  versionFromRow,
} from './common.js';
import { StoreError } from './errors.js';
import type {
  AgentVersionRecord,
  ApiKeyRecord,
  ExecutionFilter,
  ExecutionRecord,
  NewAgentVersion,
  NewExecution,
  OutputChunk,
  PoolRecord,
  Store,
} from './types.js';

export interface PostgresStoreOptions {
  /** Schema holding the server's tables (default `aegis_server`). */
  readonly schema?: string;
  /** A CA certificate file (PEM) to verify the server with (replaces the URL's sslmode). */
  readonly ca?: string;
  readonly output?: Partial<OutputLimits>;
  /** Connections in this handle's pool (default 10; one more while subscribeQueued listens). */
  readonly connections?: number;
}

const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/u;
export const DEFAULT_PG_SCHEMA = 'aegis_server';

/** Migration i brings the schema to version i + 1; `S.` is replaced by the schema. Never edit one that shipped. */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE S.api_keys (
    id text PRIMARY KEY,
    role text NOT NULL CHECK (role IN ('admin', 'deployer', 'operator', 'auditor')),
    hash text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint,
    revoked_at bigint,
    created_by text NOT NULL
  );
  CREATE TABLE S.code_archives (digest text PRIMARY KEY, data bytea NOT NULL);
  CREATE TABLE S.agents (name text PRIMARY KEY, latest integer NOT NULL, deleted_at bigint);
  CREATE TABLE S.agent_versions (
    name text NOT NULL REFERENCES S.agents(name),
    version integer NOT NULL,
    manifest_digest text NOT NULL,
    code_digest text NOT NULL REFERENCES S.code_archives(digest),
    manifest_text text NOT NULL,
    created_at bigint NOT NULL,
    created_by text NOT NULL,
    PRIMARY KEY (name, version)
  );
  CREATE TABLE S.executions (
    qseq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    agent text NOT NULL,
    version integer NOT NULL,
    status text NOT NULL,
    args text NOT NULL,
    stdin text,
    env text NOT NULL,
    exit_code integer,
    duration_ms bigint,
    summary text,
    created_at bigint NOT NULL,
    started_at bigint,
    finished_at bigint,
    worker text,
    created_by text NOT NULL,
    cancel_requested smallint NOT NULL DEFAULT 0,
    out_seq integer NOT NULL DEFAULT 0,
    out_bytes bigint NOT NULL DEFAULT 0,
    out_count integer NOT NULL DEFAULT 0,
    out_truncated smallint NOT NULL DEFAULT 0,
    FOREIGN KEY (agent, version) REFERENCES S.agent_versions(name, version)
  );
  CREATE INDEX executions_status ON S.executions(status, qseq);
  CREATE INDEX executions_created ON S.executions(created_at);
  CREATE INDEX executions_worker ON S.executions(worker, status);
  CREATE TABLE S.output_chunks (
    execution_id text NOT NULL REFERENCES S.executions(id) ON DELETE CASCADE,
    seq integer NOT NULL,
    kind text NOT NULL CHECK (kind IN ('stdout', 'stderr', 'audit', 'exit')),
    data text NOT NULL,
    PRIMARY KEY (execution_id, seq)
  );
  CREATE TABLE S.pools (agent text PRIMARY KEY, warm integer NOT NULL CHECK (warm > 0));
  CREATE TABLE S.workers (id text PRIMARY KEY, heartbeat_at bigint NOT NULL);
  `,
];

export const PG_SCHEMA_VERSION = MIGRATIONS.length;

const EXEC_COLS = `id, agent, version, status, args, stdin, env, exit_code, duration_ms, summary, created_at, started_at,
  finished_at, worker, created_by, cancel_requested`;

function io(what: string, cause: unknown): StoreError {
  return new StoreError('store.io', `postgres: ${what}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
}

function pgCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

type Q = pg.Pool | pg.PoolClient;

class PostgresStore implements Store {
  private closed = false;
  private readonly listeners = new Set<pg.Client>();
  /** The NOTIFY channel of this schema's queue. */
  readonly channel: string;
  private readonly t: Record<'keys' | 'archives' | 'agents' | 'versions' | 'executions' | 'chunks' | 'pools' | 'workers', string>;

  constructor(
    private readonly pool: pg.Pool,
    schema: string,
    private readonly limits: OutputLimits,
    private readonly clientConfig: pg.ClientConfig,
  ) {
    this.channel = `${schema}_queued`;
    this.t = {
      keys: `${schema}.api_keys`,
      archives: `${schema}.code_archives`,
      agents: `${schema}.agents`,
      versions: `${schema}.agent_versions`,
      executions: `${schema}.executions`,
      chunks: `${schema}.output_chunks`,
      pools: `${schema}.pools`,
      workers: `${schema}.workers`,
    };
  }

  private live(): void {
    if (this.closed) throw new StoreError('store.closed', 'the store is closed');
  }

  private async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    this.live();
    return inTransaction(this.pool, fn, {
      connect: (err) => io('cannot connect', err),
      failed: (err) => (err instanceof StoreError ? err : io('transaction failed', err)),
    });
  }

  private async q(text: string, values: unknown[] = [], on: Q = this.pool): Promise<pg.QueryResult<Row>> {
    this.live();
    try {
      return await on.query<Row>(text, values);
    } catch (err) {
      throw io('query failed', err);
    }
  }

  async createKey(key: ApiKeyRecord): Promise<void> {
    const r = await this.q(
      `INSERT INTO ${this.t.keys} (id, role, hash, created_at, expires_at, revoked_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (id) DO NOTHING`,
      [key.id, key.role, key.hash, key.createdAt, key.expiresAt, key.revokedAt, key.createdBy],
    );
    if (r.rowCount !== 1) throw new StoreError('store.conflict', `API key ${key.id} exists already`);
  }

  async getKey(id: string): Promise<ApiKeyRecord | null> {
    const r = await this.q(`SELECT * FROM ${this.t.keys} WHERE id = $1`, [id]);
    return r.rows[0] === undefined ? null : keyFromRow(r.rows[0]);
  }

  async listKeys(): Promise<ApiKeyRecord[]> {
    return (await this.q(`SELECT * FROM ${this.t.keys} ORDER BY created_at, id`)).rows.map(keyFromRow);
  }

  async revokeKey(id: string, at: number): Promise<boolean> {
    // A revoked key must not come back after a database crash: this commit waits for the WAL flush.
    return this.tx(async (c) => {
      await c.query('SET LOCAL synchronous_commit = on');
      const r = await c.query(`UPDATE ${this.t.keys} SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL`, [at, id]);
      return r.rowCount === 1;
    });
  }

  async putAgentVersion(v: NewAgentVersion): Promise<AgentVersionRecord> {
    checkCodeDigest(v.codeDigest, v.codeArchive);
    return this.tx(async (c) => {
      await c.query(`INSERT INTO ${this.t.archives} (digest, data) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING`, [
        v.codeDigest,
        v.codeArchive,
      ]);
      const r = await c.query<Row>(
        `INSERT INTO ${this.t.agents} AS a (name, latest, deleted_at) VALUES ($1, 1, NULL)
         ON CONFLICT (name) DO UPDATE SET latest = a.latest + 1, deleted_at = NULL RETURNING latest`,
        [v.name],
      );
      const version = num(r.rows[0]?.['latest'], 'latest version');
      await c.query(
        `INSERT INTO ${this.t.versions} (name, version, manifest_digest, code_digest, manifest_text, created_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)`,
        [v.name, version, v.manifestDigest, v.codeDigest, v.manifestText, v.createdAt, v.createdBy],
      );
      return {
        name: v.name,
        version,
        manifestDigest: v.manifestDigest,
        codeDigest: v.codeDigest,
        manifestText: v.manifestText,
        createdAt: v.createdAt,
        createdBy: v.createdBy,
      };
    });
  }

  async getAgent(name: string): Promise<AgentVersionRecord | null> {
    const r = await this.q(
      `SELECT v.* FROM ${this.t.agents} a JOIN ${this.t.versions} v ON v.name = a.name AND v.version = a.latest
       WHERE a.name = $1 AND a.deleted_at IS NULL`,
      [name],
    );
    return r.rows[0] === undefined ? null : versionFromRow(r.rows[0]);
  }

  async getAgentVersion(name: string, version: number): Promise<AgentVersionRecord | null> {
    const r = await this.q(`SELECT * FROM ${this.t.versions} WHERE name = $1 AND version = $2`, [name, version]);
    return r.rows[0] === undefined ? null : versionFromRow(r.rows[0]);
  }

  async getCodeArchive(codeDigest: string): Promise<Buffer | null> {
    const r = await this.q(`SELECT data FROM ${this.t.archives} WHERE digest = $1`, [codeDigest]);
    const row = r.rows[0];
    if (row === undefined) return null;
    const data = row['data'];
    if (!Buffer.isBuffer(data)) throw new StoreError('store.corrupt', `stored code archive ${codeDigest} is malformed`);
    return data;
  }

  async listAgents(): Promise<AgentVersionRecord[]> {
    const r = await this.q(
      `SELECT v.* FROM ${this.t.agents} a JOIN ${this.t.versions} v ON v.name = a.name AND v.version = a.latest
       WHERE a.deleted_at IS NULL ORDER BY a.name`,
    );
    return r.rows.map(versionFromRow);
  }

  async deleteAgent(name: string, at: number): Promise<boolean> {
    return (await this.q(`UPDATE ${this.t.agents} SET deleted_at = $1 WHERE name = $2 AND deleted_at IS NULL`, [at, name])).rowCount === 1;
  }

  async createExecution(e: NewExecution): Promise<ExecutionRecord> {
    let r: pg.QueryResult<Row>;
    this.live();
    try {
      // One statement: the row and the wake-up of idle workers (sent at commit).
      r = await this.pool.query<Row>(
        `WITH ins AS (
           INSERT INTO ${this.t.executions} (id, agent, version, status, args, stdin, env, created_at, created_by)
           VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8) RETURNING ${EXEC_COLS})
         SELECT ins.*, pg_notify($9, '') FROM ins`,
        [e.id, e.agent, e.version, JSON.stringify(e.args), e.stdin, JSON.stringify(e.env), e.createdAt, e.createdBy, this.channel],
      );
    } catch (err) {
      if (pgCode(err) === '23505') throw new StoreError('store.conflict', `execution ${e.id} exists already`);
      if (pgCode(err) === '23503') throw new StoreError('store.not_found', `agent ${e.agent} has no version ${e.version}`);
      throw io('query failed', err);
    }
    return executionFromRow(r.rows[0] ?? {});
  }

  async getExecution(id: string): Promise<ExecutionRecord | null> {
    const r = await this.q(`SELECT ${EXEC_COLS} FROM ${this.t.executions} WHERE id = $1`, [id]);
    return r.rows[0] === undefined ? null : executionFromRow(r.rows[0]);
  }

  async listExecutions(filter: ExecutionFilter): Promise<ExecutionRecord[]> {
    const limit = listLimit(filter.limit);
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (cond: string, value: unknown): void => {
      params.push(value);
      where.push(cond.replace('?', `$${params.length}`));
    };
    if (filter.agent !== undefined) add('agent = ?', filter.agent);
    if (filter.status !== undefined) add('status = ?', filter.status);
    if (filter.since !== undefined) add('created_at >= ?', filter.since);
    if (filter.until !== undefined) add('created_at <= ?', filter.until);
    params.push(limit);
    const r = await this.q(
      `SELECT ${EXEC_COLS} FROM ${this.t.executions} ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
       ORDER BY created_at DESC, qseq DESC LIMIT $${params.length}`,
      params,
    );
    return r.rows.map(executionFromRow);
  }

  async claimQueued(worker: string, limit: number, at: number): Promise<ExecutionRecord[]> {
    const n = claimLimit(limit);
    if (n === 0) {
      this.live();
      return [];
    }
    const r = await this.q(
      `UPDATE ${this.t.executions} e SET status = 'running', worker = $1, started_at = $2
       WHERE e.id IN (SELECT id FROM ${this.t.executions} WHERE status = 'queued' ORDER BY qseq LIMIT $3 FOR UPDATE SKIP LOCKED)
       RETURNING e.qseq, ${EXEC_COLS.split(',')
         .map((c) => `e.${c.trim()}`)
         .join(', ')}`,
      [worker, at, n],
    );
    return r.rows.sort((a, b) => num(a['qseq'], 'qseq') - num(b['qseq'], 'qseq')).map(executionFromRow);
  }

  async finishExecution(
    id: string,
    end: { status: FinalStatus; exitCode: number | null; durationMs: number | null; summary: Record<string, unknown> | null; at: number },
  ): Promise<boolean> {
    const r = await this.q(
      `UPDATE ${this.t.executions} SET status = $1, exit_code = $2, duration_ms = $3, summary = $4, finished_at = $5
       WHERE id = $6 AND status IN ('queued', 'running')`,
      [end.status, end.exitCode, end.durationMs, end.summary === null ? null : JSON.stringify(end.summary), end.at, id],
    );
    return r.rowCount === 1;
  }

  async requestCancel(id: string): Promise<ExecutionRecord | null> {
    return this.tx(async (c) => {
      await c.query(`UPDATE ${this.t.executions} SET cancel_requested = 1 WHERE id = $1 AND status IN ('queued', 'running')`, [id]);
      const r = await c.query<Row>(`SELECT ${EXEC_COLS} FROM ${this.t.executions} WHERE id = $1`, [id]);
      return r.rows[0] === undefined ? null : executionFromRow(r.rows[0]);
    });
  }

  async cancelRequested(worker: string): Promise<string[]> {
    const r = await this.q(
      `SELECT id FROM ${this.t.executions} WHERE worker = $1 AND status = 'running' AND cancel_requested = 1 ORDER BY qseq`,
      [worker],
    );
    return r.rows.map((row) => str(row['id'], 'id'));
  }

  async appendOutput(id: string, chunks: readonly Omit<OutputChunk, 'seq'>[]): Promise<OutputChunk[]> {
    checkChunks(chunks);
    return this.tx(async (c) => {
      const r = await c.query<Row>(
        `SELECT out_seq, out_bytes, out_count, out_truncated FROM ${this.t.executions} WHERE id = $1 FOR UPDATE`,
        [id],
      );
      const row = r.rows[0];
      if (row === undefined) throw new StoreError('store.not_found', `no execution ${id}`);
      let seq = num(row['out_seq'], 'output seq');
      const capped = applyOutputCap(
        {
          bytes: num(row['out_bytes'], 'output bytes'),
          count: num(row['out_count'], 'output count'),
          truncated: num(row['out_truncated'], 'flag') !== 0,
        },
        chunks,
        this.limits,
      );
      const stored: OutputChunk[] = [];
      for (const ch of capped.keep) stored.push({ seq: ++seq, kind: ch.kind, data: ch.data });
      if (stored.length > 0) {
        await c.query(
          `INSERT INTO ${this.t.chunks} (execution_id, seq, kind, data)
           SELECT $1, s, k, d FROM unnest($2::int[], $3::text[], $4::text[]) AS u(s, k, d)`,
          [id, stored.map((s) => s.seq), stored.map((s) => s.kind), stored.map((s) => s.data)],
        );
        await c.query(`UPDATE ${this.t.executions} SET out_seq = $1, out_bytes = $2, out_count = $3, out_truncated = $4 WHERE id = $5`, [
          seq,
          capped.bytes,
          capped.count,
          capped.truncated ? 1 : 0,
          id,
        ]);
      }
      return stored;
    });
  }

  async readOutput(id: string, afterSeq: number, limit: number): Promise<OutputChunk[]> {
    const n = readLimit(afterSeq, limit);
    const r = await this.q(`SELECT seq, kind, data FROM ${this.t.chunks} WHERE execution_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, [
      id,
      afterSeq,
      n,
    ]);
    return r.rows.map(chunkFromRow);
  }

  async setPool(agent: string, warm: number): Promise<void> {
    checkWarm(warm);
    if (warm === 0) await this.q(`DELETE FROM ${this.t.pools} WHERE agent = $1`, [agent]);
    else
      await this.q(`INSERT INTO ${this.t.pools} (agent, warm) VALUES ($1, $2) ON CONFLICT (agent) DO UPDATE SET warm = excluded.warm`, [
        agent,
        warm,
      ]);
  }

  async listPools(): Promise<PoolRecord[]> {
    const r = await this.q(`SELECT agent, warm FROM ${this.t.pools} ORDER BY agent`);
    return r.rows.map((row) => ({ agent: str(row['agent'], 'pool agent'), warm: num(row['warm'], 'pool size') }));
  }

  async heartbeat(worker: string, at: number): Promise<void> {
    await this.q(
      `INSERT INTO ${this.t.workers} AS w (id, heartbeat_at) VALUES ($1, $2)
       ON CONFLICT (id) DO UPDATE SET heartbeat_at = GREATEST(w.heartbeat_at, excluded.heartbeat_at)`,
      [worker, at],
    );
  }

  async reapLost(staleBefore: number, at: number, worker?: string): Promise<ExecutionRecord[]> {
    // One UPDATE: a second reaper blocks on the row locks, re-checks `status = 'running'` and skips them.
    const r = await this.q(
      `UPDATE ${this.t.executions} e SET status = 'lost', finished_at = $2
       WHERE e.status = 'running' AND (
         e.worker = $3 OR NOT EXISTS (SELECT 1 FROM ${this.t.workers} w WHERE w.id = e.worker AND w.heartbeat_at >= $1))
       RETURNING e.qseq, ${EXEC_COLS.split(',')
         .map((c) => `e.${c.trim()}`)
         .join(', ')}`,
      [staleBefore, at, worker ?? null],
    );
    return r.rows.sort((a, b) => num(a['qseq'], 'qseq') - num(b['qseq'], 'qseq')).map(executionFromRow);
  }

  async subscribeQueued(onQueued: () => void): Promise<() => Promise<void>> {
    this.live();
    let client: pg.Client | null = null;
    let stopped = false;
    let retry: NodeJS.Timeout | null = null;
    // One connection that LISTENs; when it drops, it is made again (after a second): meanwhile
    // the dispatcher's poll finds the work.
    const again = (): void => {
      if (stopped || this.closed || retry !== null) return;
      retry = setTimeout(() => {
        retry = null;
        connect().catch(again);
      }, 1000);
    };
    const connect = async (): Promise<void> => {
      const c = new pg.Client(this.clientConfig);
      c.on('error', () => undefined);
      c.on('notification', () => onQueued());
      c.on('end', () => {
        this.listeners.delete(c);
        again();
      });
      this.listeners.add(c);
      client = c;
      try {
        await c.connect();
        await c.query(`LISTEN ${this.channel}`);
      } catch (err) {
        this.listeners.delete(c);
        await c.end().catch(() => undefined);
        throw err;
      }
      // A wake-up may have been missed while (re)connecting.
      onQueued();
    };
    try {
      await connect();
    } catch (err) {
      stopped = true;
      if (retry !== null) clearTimeout(retry);
      throw io('cannot LISTEN', err);
    }
    return async () => {
      stopped = true;
      if (retry !== null) clearTimeout(retry);
      const c = client as pg.Client | null;
      if (c !== null) {
        this.listeners.delete(c);
        await c.end().catch(() => undefined);
      }
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.listeners) await c.end().catch(() => undefined);
    this.listeners.clear();
    try {
      await this.pool.end();
    } catch (err) {
      throw io('close failed', err);
    }
  }
}

async function migrate(pool: pg.Pool, schema: string): Promise<void> {
  const c = await pool.connect();
  try {
    await c.query('BEGIN');
    await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`aegis-server:migrate:${schema}`]);
    await c.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await c.query(`CREATE TABLE IF NOT EXISTS ${schema}.schema_version (id smallint PRIMARY KEY CHECK (id = 1), version integer NOT NULL)`);
    const r = await c.query<Row>(`SELECT version FROM ${schema}.schema_version WHERE id = 1`);
    const current = r.rows[0] === undefined ? 0 : num(r.rows[0]['version'], 'schema version');
    if (current > MIGRATIONS.length)
      throw new StoreError('store.schema_newer', `schema ${schema} has version ${current}; this AEGIS knows up to ${MIGRATIONS.length}`);
    for (let v = current; v < MIGRATIONS.length; v++) await c.query((MIGRATIONS[v] ?? '').replace(/\bS\./gu, `${schema}.`));
    await c.query(
      `INSERT INTO ${schema}.schema_version (id, version) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = excluded.version`,
      [MIGRATIONS.length],
    );
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    c.release();
  }
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://(unparsable URL)';
  }
}

/** Opens (creating and migrating when needed) the PostgreSQL store at `url`. */
export async function openPostgresStore(url: string, options: PostgresStoreOptions = {}): Promise<Store> {
  const schema = options.schema ?? DEFAULT_PG_SCHEMA;
  if (!SCHEMA_RE.test(schema)) throw new StoreError('store.invalid', `invalid PostgreSQL schema name ${JSON.stringify(schema)}`);
  const limits = resolveLimits(options.output);
  const max = options.connections ?? 10;
  // The queue's writes do not wait for the WAL flush (see the header); an `options` parameter in
  // the URL replaces this one (and keeps the server's default, synchronous_commit on).
  const sessionOptions = '-c synchronous_commit=off';
  let config: pg.PoolConfig = { connectionString: url, max, options: sessionOptions };
  if (options.ca !== undefined && options.ca !== '') {
    // pg lets URL parameters override `ssl`: the URL's sslmode is replaced by a verifying configuration.
    let u: URL;
    try {
      u = new URL(url);
    } catch (cause) {
      throw new StoreError('store.invalid', 'unparsable PostgreSQL URL', { cause });
    }
    u.searchParams.delete('sslmode');
    let ca: string;
    try {
      ca = readFileSync(options.ca, 'utf8');
    } catch (cause) {
      throw new StoreError('store.io', `cannot read PostgreSQL CA certificate ${options.ca}`, { cause });
    }
    config = { connectionString: u.toString(), max, options: sessionOptions, ssl: { ca, rejectUnauthorized: true } };
  }
  const pool = new pg.Pool(config);
  pool.on('error', () => undefined); // idle-client errors surface on the next query instead
  try {
    await migrate(pool, schema);
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw err instanceof StoreError ? err : io(`cannot initialise ${redact(url)} schema ${schema}`, err);
  }
  return new PostgresStore(
    pool,
    schema,
    limits,
    config.ssl === undefined
      ? { connectionString: config.connectionString }
      : { connectionString: config.connectionString, ssl: config.ssl },
  );
}

/** Drops a store's schema and everything in it (tests). */
export async function dropPostgresSchema(url: string, schema: string): Promise<void> {
  if (!SCHEMA_RE.test(schema)) throw new StoreError('store.invalid', `invalid PostgreSQL schema name ${JSON.stringify(schema)}`);
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await c.end();
  }
}
