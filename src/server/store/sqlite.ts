/**
 * The embedded server store: one SQLite file (better-sqlite3 12), the default of `aegis serve`.
 *
 * - WAL journal, foreign keys on, `synchronous=NORMAL`; a busy timeout lets a second process
 *   (`aegis keys create` against a running server's --data) wait for the lock instead of failing.
 *   LIMITATION (durability): with NORMAL in WAL mode a commit survives a crash or SIGKILL of the
 *   server, but the last commits before a power loss or kernel crash may be lost (an execution
 *   just created, a key just revoked). FULL would fsync every commit: it took the time from
 *   creating an execution to the engine's execute() from 0.8 ms to 11 ms (p50) on this host,
 *   more than the whole warm-start budget. Key revocations commit with FULL (a revoked key must
 *   not come back), and the audit log keeps its own durability (docs/audit.md).
 * - Schema: a `schema_version` table (one row) and numbered migrations applied in one
 *   transaction at open; a database written by a newer AEGIS is refused (`store.schema_newer`).
 * - Every method is one transaction (writes take the write lock at BEGIN IMMEDIATE), so none
 *   leaves a half-written row and claims never hand one execution out twice.
 * - Files: the database (and its -wal/-shm, which SQLite creates with the database's mode) is
 *   created 0600; its folder is created 0700, tightened to 0700 when we own it, and refused
 *   (`store.insecure`) when someone else owns it and it is writable by group or others.
 * - API keys: only the record with its slow hash is stored (the caller hashes); code archives are
 *   stored once per codeDigest (checked against the bytes); output is capped per execution
 *   (common.ts: OutputLimits, one truncation marker).
 *
 * ARCHITECTURE NOTE: better-sqlite3 is synchronous; each call blocks the event loop for the time
 * of one short transaction. Output is appended in batches by the dispatcher for that reason.
 */
import { chmodSync, closeSync, fstatSync, lstatSync, mkdirSync, openSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
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

export interface SqliteStoreOptions {
  readonly output?: Partial<OutputLimits>;
  /** Milliseconds a writer waits for another process's write lock (default 5000). */
  readonly busyTimeoutMs?: number;
}

/** The migrations, in order; migration i brings the schema to version i + 1. Never edit one that shipped. */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('admin', 'deployer', 'operator', 'auditor')),
    hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    created_by TEXT NOT NULL
  ) STRICT;
  CREATE TABLE code_archives (
    digest TEXT PRIMARY KEY,
    data BLOB NOT NULL
  ) STRICT;
  CREATE TABLE agents (
    name TEXT PRIMARY KEY,
    latest INTEGER NOT NULL,
    deleted_at INTEGER
  ) STRICT;
  CREATE TABLE agent_versions (
    name TEXT NOT NULL REFERENCES agents(name),
    version INTEGER NOT NULL,
    manifest_digest TEXT NOT NULL,
    code_digest TEXT NOT NULL REFERENCES code_archives(digest),
    manifest_text TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (name, version)
  ) STRICT;
  CREATE TABLE executions (
    qseq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    agent TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    args TEXT NOT NULL,
    stdin TEXT,
    env TEXT NOT NULL,
    exit_code INTEGER,
    duration_ms INTEGER,
    summary TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    worker TEXT,
    created_by TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    out_seq INTEGER NOT NULL DEFAULT 0,
    out_bytes INTEGER NOT NULL DEFAULT 0,
    out_count INTEGER NOT NULL DEFAULT 0,
    out_truncated INTEGER NOT NULL DEFAULT 0,
    FOREIGN KEY (agent, version) REFERENCES agent_versions(name, version)
  ) STRICT;
  CREATE INDEX executions_status ON executions(status, qseq);
  CREATE INDEX executions_created ON executions(created_at);
  CREATE INDEX executions_worker ON executions(worker, status);
  CREATE TABLE output_chunks (
    execution_id TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('stdout', 'stderr', 'audit', 'exit')),
    data TEXT NOT NULL,
    PRIMARY KEY (execution_id, seq)
  ) STRICT, WITHOUT ROWID;
  CREATE TABLE pools (
    agent TEXT PRIMARY KEY,
    warm INTEGER NOT NULL CHECK (warm > 0)
  ) STRICT;
  CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    heartbeat_at INTEGER NOT NULL
  ) STRICT;
  `,
];

export const SQLITE_SCHEMA_VERSION = MIGRATIONS.length;

const EXEC_COLS = `id, agent, version, status, args, stdin, env, exit_code, duration_ms, summary, created_at, started_at,
  finished_at, worker, created_by, cancel_requested`;

function io(what: string, cause: unknown): StoreError {
  return new StoreError('store.io', `sqlite: ${what}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
}

/** Creates the folder 0700 (or tightens ours), refuses one another user controls. */
function secureFolder(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = lstatSync(dir);
    if (!st.isDirectory()) throw new StoreError('store.insecure', `${dir} is not a directory`);
    const uid = process.getuid?.() ?? st.uid;
    if (st.uid === uid) {
      if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
    } else if ((st.mode & 0o022) !== 0) {
      throw new StoreError('store.insecure', `${dir} belongs to uid ${st.uid} and is writable by others`);
    }
  } catch (err) {
    if (err instanceof StoreError) throw err;
    throw io(`cannot prepare data folder ${dir}`, err);
  }
}

/** Creates the database file 0600 before SQLite opens it (SQLite gives -wal/-shm the same mode). */
function secureFile(path: string): void {
  let fd: number;
  try {
    fd = openSync(path, 'a', 0o600);
  } catch (err) {
    throw io(`cannot open ${path}`, err);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new StoreError('store.insecure', `${path} is not a regular file`);
    const uid = process.getuid?.() ?? st.uid;
    if (st.uid !== uid) throw new StoreError('store.insecure', `${path} belongs to uid ${st.uid}`);
    if ((st.mode & 0o077) !== 0) chmodSync(path, 0o600);
  } finally {
    closeSync(fd);
  }
}

class SqliteStore implements Store {
  private closed = false;

  constructor(
    private readonly db: Database.Database,
    private readonly limits: OutputLimits,
  ) {}

  /** Runs `fn` in one transaction (IMMEDIATE for writes), mapping driver errors to store.io. */
  private tx<T>(kind: 'read' | 'write' | 'durable', fn: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new StoreError('store.closed', 'the store is closed'));
    try {
      const t = this.db.transaction(fn);
      if (kind === 'read') return Promise.resolve(t.deferred());
      if (kind === 'write') return Promise.resolve(t.immediate());
      // A write that must survive a power loss (a revocation): this commit, and every one before
      // it in the WAL, is fsync'd.
      this.db.pragma('synchronous = FULL');
      try {
        return Promise.resolve(t.immediate());
      } finally {
        this.db.pragma('synchronous = NORMAL');
      }
    } catch (err) {
      if (err instanceof StoreError) return Promise.reject(err);
      return Promise.reject(io('transaction failed', err));
    }
  }

  private all(sql: string, ...params: unknown[]): Row[] {
    return this.db.prepare(sql).all(...params) as Row[];
  }

  private one(sql: string, ...params: unknown[]): Row | undefined {
    return this.db.prepare(sql).get(...params) as Row | undefined;
  }

  private run(sql: string, ...params: unknown[]): number {
    return this.db.prepare(sql).run(...params).changes;
  }

  createKey(key: ApiKeyRecord): Promise<void> {
    return this.tx('write', () => {
      if (this.one('SELECT 1 FROM api_keys WHERE id = ?', key.id) !== undefined)
        throw new StoreError('store.conflict', `API key ${key.id} exists already`);
      this.run(
        'INSERT INTO api_keys (id, role, hash, created_at, expires_at, revoked_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)',
        key.id,
        key.role,
        key.hash,
        key.createdAt,
        key.expiresAt,
        key.revokedAt,
        key.createdBy,
      );
    });
  }

  getKey(id: string): Promise<ApiKeyRecord | null> {
    return this.tx('read', () => {
      const r = this.one('SELECT * FROM api_keys WHERE id = ?', id);
      return r === undefined ? null : keyFromRow(r);
    });
  }

  listKeys(): Promise<ApiKeyRecord[]> {
    return this.tx('read', () => this.all('SELECT * FROM api_keys ORDER BY created_at, id').map(keyFromRow));
  }

  revokeKey(id: string, at: number): Promise<boolean> {
    return this.tx('durable', () => this.run('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL', at, id) === 1);
  }

  putAgentVersion(v: NewAgentVersion): Promise<AgentVersionRecord> {
    return this.tx('write', () => {
      checkCodeDigest(v.codeDigest, v.codeArchive);
      this.run('INSERT INTO code_archives (digest, data) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING', v.codeDigest, v.codeArchive);
      const cur = this.one('SELECT latest FROM agents WHERE name = ?', v.name);
      const version = cur === undefined ? 1 : num(cur['latest'], 'latest version') + 1;
      if (cur === undefined) this.run('INSERT INTO agents (name, latest, deleted_at) VALUES (?, ?, NULL)', v.name, version);
      else this.run('UPDATE agents SET latest = ?, deleted_at = NULL WHERE name = ?', version, v.name);
      this.run(
        `INSERT INTO agent_versions (name, version, manifest_digest, code_digest, manifest_text, created_at, created_by)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
        v.name,
        version,
        v.manifestDigest,
        v.codeDigest,
        v.manifestText,
        v.createdAt,
        v.createdBy,
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

  getAgent(name: string): Promise<AgentVersionRecord | null> {
    return this.tx('read', () => {
      const r = this.one(
        `SELECT v.* FROM agents a JOIN agent_versions v ON v.name = a.name AND v.version = a.latest
         WHERE a.name = ? AND a.deleted_at IS NULL`,
        name,
      );
      return r === undefined ? null : versionFromRow(r);
    });
  }

  getAgentVersion(name: string, version: number): Promise<AgentVersionRecord | null> {
    return this.tx('read', () => {
      const r = this.one('SELECT * FROM agent_versions WHERE name = ? AND version = ?', name, version);
      return r === undefined ? null : versionFromRow(r);
    });
  }

  getCodeArchive(codeDigest: string): Promise<Buffer | null> {
    return this.tx('read', () => {
      const r = this.one('SELECT data FROM code_archives WHERE digest = ?', codeDigest);
      if (r === undefined) return null;
      const data = r['data'];
      if (!Buffer.isBuffer(data)) throw new StoreError('store.corrupt', `stored code archive ${codeDigest} is malformed`);
      return data;
    });
  }

  listAgents(): Promise<AgentVersionRecord[]> {
    return this.tx('read', () =>
      this.all(
        `SELECT v.* FROM agents a JOIN agent_versions v ON v.name = a.name AND v.version = a.latest
         WHERE a.deleted_at IS NULL ORDER BY a.name`,
      ).map(versionFromRow),
    );
  }

  deleteAgent(name: string, at: number): Promise<boolean> {
    return this.tx('write', () => this.run('UPDATE agents SET deleted_at = ? WHERE name = ? AND deleted_at IS NULL', at, name) === 1);
  }

  createExecution(e: NewExecution): Promise<ExecutionRecord> {
    return this.tx('write', () => {
      if (this.one('SELECT 1 FROM agent_versions WHERE name = ? AND version = ?', e.agent, e.version) === undefined)
        throw new StoreError('store.not_found', `agent ${e.agent} has no version ${e.version}`);
      if (this.one('SELECT 1 FROM executions WHERE id = ?', e.id) !== undefined)
        throw new StoreError('store.conflict', `execution ${e.id} exists already`);
      this.run(
        `INSERT INTO executions (id, agent, version, status, args, stdin, env, created_at, created_by)
         VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?)`,
        e.id,
        e.agent,
        e.version,
        JSON.stringify(e.args),
        e.stdin,
        JSON.stringify(e.env),
        e.createdAt,
        e.createdBy,
      );
      return executionFromRow(this.one(`SELECT ${EXEC_COLS} FROM executions WHERE id = ?`, e.id) ?? {});
    });
  }

  getExecution(id: string): Promise<ExecutionRecord | null> {
    return this.tx('read', () => {
      const r = this.one(`SELECT ${EXEC_COLS} FROM executions WHERE id = ?`, id);
      return r === undefined ? null : executionFromRow(r);
    });
  }

  listExecutions(filter: ExecutionFilter): Promise<ExecutionRecord[]> {
    return this.tx('read', () => {
      const limit = listLimit(filter.limit);
      const where: string[] = [];
      const params: unknown[] = [];
      const add = (cond: string, value: unknown): void => {
        where.push(cond);
        params.push(value);
      };
      if (filter.agent !== undefined) add('agent = ?', filter.agent);
      if (filter.status !== undefined) add('status = ?', filter.status);
      if (filter.since !== undefined) add('created_at >= ?', filter.since);
      if (filter.until !== undefined) add('created_at <= ?', filter.until);
      const sql = `SELECT ${EXEC_COLS} FROM executions ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
        ORDER BY created_at DESC, qseq DESC LIMIT ?`;
      return this.all(sql, ...params, limit).map(executionFromRow);
    });
  }

  claimQueued(worker: string, limit: number, at: number): Promise<ExecutionRecord[]> {
    return this.tx('write', () => {
      const n = claimLimit(limit);
      const ids = this.all(`SELECT id FROM executions WHERE status = 'queued' ORDER BY qseq LIMIT ?`, n).map((r) => str(r['id'], 'id'));
      const out: ExecutionRecord[] = [];
      for (const id of ids) {
        this.run(`UPDATE executions SET status = 'running', worker = ?, started_at = ? WHERE id = ? AND status = 'queued'`, worker, at, id);
        out.push(executionFromRow(this.one(`SELECT ${EXEC_COLS} FROM executions WHERE id = ?`, id) ?? {}));
      }
      return out;
    });
  }

  finishExecution(
    id: string,
    end: { status: FinalStatus; exitCode: number | null; durationMs: number | null; summary: Record<string, unknown> | null; at: number },
  ): Promise<boolean> {
    return this.tx(
      'write',
      () =>
        this.run(
          `UPDATE executions SET status = ?, exit_code = ?, duration_ms = ?, summary = ?, finished_at = ?
           WHERE id = ? AND status IN ('queued', 'running')`,
          end.status,
          end.exitCode,
          end.durationMs,
          end.summary === null ? null : JSON.stringify(end.summary),
          end.at,
          id,
        ) === 1,
    );
  }

  requestCancel(id: string): Promise<ExecutionRecord | null> {
    return this.tx('write', () => {
      this.run(`UPDATE executions SET cancel_requested = 1 WHERE id = ? AND status IN ('queued', 'running')`, id);
      const r = this.one(`SELECT ${EXEC_COLS} FROM executions WHERE id = ?`, id);
      return r === undefined ? null : executionFromRow(r);
    });
  }

  cancelRequested(worker: string): Promise<string[]> {
    return this.tx('read', () =>
      this.all(`SELECT id FROM executions WHERE worker = ? AND status = 'running' AND cancel_requested = 1 ORDER BY qseq`, worker).map(
        (r) => str(r['id'], 'id'),
      ),
    );
  }

  appendOutput(id: string, chunks: readonly Omit<OutputChunk, 'seq'>[]): Promise<OutputChunk[]> {
    return this.tx('write', () => {
      checkChunks(chunks);
      const r = this.one('SELECT out_seq, out_bytes, out_count, out_truncated FROM executions WHERE id = ?', id);
      if (r === undefined) throw new StoreError('store.not_found', `no execution ${id}`);
      let seq = num(r['out_seq'], 'output seq');
      const capped = applyOutputCap(
        {
          bytes: num(r['out_bytes'], 'output bytes'),
          count: num(r['out_count'], 'output count'),
          truncated: num(r['out_truncated'], 'flag') !== 0,
        },
        chunks,
        this.limits,
      );
      const ins = this.db.prepare('INSERT INTO output_chunks (execution_id, seq, kind, data) VALUES (?, ?, ?, ?)');
      const stored: OutputChunk[] = [];
      for (const c of capped.keep) {
        seq++;
        ins.run(id, seq, c.kind, c.data);
        stored.push({ seq, kind: c.kind, data: c.data });
      }
      this.run(
        'UPDATE executions SET out_seq = ?, out_bytes = ?, out_count = ?, out_truncated = ? WHERE id = ?',
        seq,
        capped.bytes,
        capped.count,
        capped.truncated ? 1 : 0,
        id,
      );
      return stored;
    });
  }

  readOutput(id: string, afterSeq: number, limit: number): Promise<OutputChunk[]> {
    return this.tx('read', () =>
      this.all(
        'SELECT seq, kind, data FROM output_chunks WHERE execution_id = ? AND seq > ? ORDER BY seq LIMIT ?',
        id,
        afterSeq,
        readLimit(afterSeq, limit),
      ).map(chunkFromRow),
    );
  }

  setPool(agent: string, warm: number): Promise<void> {
    return this.tx('write', () => {
      checkWarm(warm);
      if (warm === 0) this.run('DELETE FROM pools WHERE agent = ?', agent);
      else this.run('INSERT INTO pools (agent, warm) VALUES (?, ?) ON CONFLICT (agent) DO UPDATE SET warm = excluded.warm', agent, warm);
    });
  }

  listPools(): Promise<PoolRecord[]> {
    return this.tx('read', () =>
      this.all('SELECT agent, warm FROM pools ORDER BY agent').map((r) => ({
        agent: str(r['agent'], 'pool agent'),
        warm: num(r['warm'], 'pool size'),
      })),
    );
  }

  heartbeat(worker: string, at: number): Promise<void> {
    return this.tx('write', () => {
      this.run(
        'INSERT INTO workers (id, heartbeat_at) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET heartbeat_at = max(heartbeat_at, excluded.heartbeat_at)',
        worker,
        at,
      );
    });
  }

  reapLost(staleBefore: number, at: number, worker?: string): Promise<ExecutionRecord[]> {
    return this.tx('write', () => {
      // A running execution whose worker never sent a heartbeat is as good as lost too.
      const rows = this.all(
        `SELECT ${EXEC_COLS} FROM executions e WHERE e.status = 'running' AND (
           e.worker = ? OR NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = e.worker AND w.heartbeat_at >= ?))
         ORDER BY e.qseq`,
        worker ?? null,
        staleBefore,
      );
      const out: ExecutionRecord[] = [];
      for (const r of rows) {
        const e = executionFromRow(r);
        this.run(`UPDATE executions SET status = 'lost', finished_at = ? WHERE id = ? AND status = 'running'`, at, e.id);
        out.push({ ...e, status: 'lost', finishedAt: at });
      }
      return out;
    });
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    try {
      this.db.close();
    } catch (err) {
      return Promise.reject(io('close failed', err));
    }
    return Promise.resolve();
  }
}

function migrate(db: Database.Database, path: string): void {
  db.transaction(() => {
    db.exec('CREATE TABLE IF NOT EXISTS schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL) STRICT');
    const row = db.prepare('SELECT version FROM schema_version WHERE id = 1').get() as Row | undefined;
    const current = row === undefined ? 0 : num(row['version'], 'schema version');
    if (current > MIGRATIONS.length)
      throw new StoreError('store.schema_newer', `${path} has schema version ${current}; this AEGIS knows up to ${MIGRATIONS.length}`);
    for (let v = current; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v] ?? '');
    db.prepare('INSERT INTO schema_version (id, version) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET version = excluded.version').run(
      MIGRATIONS.length,
    );
  }).immediate();
}

/** Opens (creating and migrating when needed) the SQLite store at `path`. */
export function openSqliteStore(path: string, options: SqliteStoreOptions = {}): Promise<Store> {
  try {
    const limits = resolveLimits(options.output);
    const file = resolve(path);
    secureFolder(dirname(file));
    secureFile(file);
    let db: Database.Database;
    try {
      db = new Database(file, { timeout: options.busyTimeoutMs ?? 5000 });
    } catch (err) {
      throw io(`cannot open ${file}`, err);
    }
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      db.pragma('trusted_schema = OFF');
      migrate(db, file);
    } catch (err) {
      db.close();
      if (err instanceof StoreError) throw err;
      throw io(`cannot initialise ${file}`, err);
    }
    return Promise.resolve(new SqliteStore(db, limits));
  } catch (err) {
    return Promise.reject(err instanceof StoreError ? err : io('open failed', err));
  }
}
