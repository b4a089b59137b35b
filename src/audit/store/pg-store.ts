/**
 * PostgreSQL audit store, for logs shared by several hosts. Same interface and conformance suite
 * as the embedded store.
 *
 * Tables (in schema `schema`, created on first use):
 *   entries(idx bigint primary key, leaf_hash bytea, entry bytea)
 *   checkpoints(seq bigserial primary key, size bigint, note text)
 *   keys(id text primary key, wrapped bytea)
 *   frontier(id = 1, size bigint, data bytea): the latest saved tree frontier (one row, replaced)
 * Appends run in one transaction under a transaction-scoped advisory lock, check that the table
 * holds exactly `start` entries, and are durable on COMMIT (synchronous_commit must stay on).
 * Triggers refuse UPDATE, DELETE and TRUNCATE on entries and checkpoints.
 *
 * TLS: use `sslmode=verify-full` (and `sslrootcert=<ca file>`) in the URL, or set
 * AEGIS_AUDIT_PG_CA to a CA file: the server certificate is then verified.
 * LIMITATION: the triggers stop accidents and unprivileged roles, not the database owner or a
 * superuser; tampering by them is what checkpoints and `aegis audit verify` catch. Deleted key
 * rows linger in dead tuples and WAL until VACUUM and WAL recycling.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { inTransaction } from '../../host/pg-transaction.js';
import { AuditError } from '../errors.js';
import { type AuditStore, type EntryBatch, type StoredRecord, batchEntry, batchLeafHash } from './types.js';

const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/u;
const PAGE = 20_000;

export interface PgStoreOptions {
  readonly url: string;
  /** Schema holding the log's tables (one log per schema). */
  readonly schema: string;
  /** CA certificate (PEM) to verify the server with; default from AEGIS_AUDIT_PG_CA. */
  readonly ca?: string;
  /**
   * Read only: no schema migration, every write refused ('audit.read_only'), and the sessions run with
   * default_transaction_read_only, so the server refuses writes too.
   */
  readonly readOnly?: boolean;
}

function io(what: string, cause: unknown): AuditError {
  return new AuditError('audit.store_io', `postgres: ${what}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
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

export class PgStore implements AuditStore {
  readonly location: string;
  private readonly t: { entries: string; checkpoints: string; keys: string; frontier: string };
  private readonly lockKey: string;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly schema: string,
    url: string,
    private readonly readOnly: boolean,
  ) {
    this.location = `${redact(url)} schema ${schema}`;
    this.t = { entries: `${schema}.entries`, checkpoints: `${schema}.checkpoints`, keys: `${schema}.keys`, frontier: `${schema}.frontier` };
    this.lockKey = `aegis-audit:${schema}`;
  }

  static async open(o: PgStoreOptions): Promise<PgStore> {
    if (!SCHEMA_RE.test(o.schema))
      throw new AuditError('audit.config_invalid', `invalid PostgreSQL schema name ${JSON.stringify(o.schema)}`);
    const caFile = o.ca;
    let config: pg.PoolConfig = { connectionString: o.url, max: 4 };
    if (caFile !== undefined && caFile !== '') {
      // pg lets URL parameters override `ssl`, so the URL's sslmode is replaced by an explicit,
      // verifying TLS configuration (certificate chain to this CA, and host name).
      const u = new URL(o.url);
      u.searchParams.delete('sslmode');
      let ca: string;
      try {
        ca = readFileSync(caFile, 'utf8');
      } catch (cause) {
        throw new AuditError('audit.store_io', `cannot read PostgreSQL CA certificate ${caFile}`, { cause });
      }
      config = { connectionString: u.toString(), max: 4, ssl: { ca, rejectUnauthorized: true } };
    }
    const readOnly = o.readOnly === true;
    if (readOnly) config = { ...config, options: '-c default_transaction_read_only=on' };
    const pool = new pg.Pool(config);
    pool.on('error', () => undefined); // idle-client errors surface on the next query instead
    const store = new PgStore(pool, o.schema, o.url, readOnly);
    if (readOnly) return store;
    try {
      await store.migrate();
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw err instanceof AuditError ? err : io('cannot initialise schema', err);
    }
    return store;
  }

  private writable(what: string): void {
    if (this.readOnly) throw new AuditError('audit.read_only', `${this.location} is open read-only: cannot ${what}`);
  }

  private async migrate(): Promise<void> {
    const s = this.schema;
    await this.tx(async (c) => {
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', ['aegis-audit:migrate']);
      await c.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
      await c.query(
        `CREATE TABLE IF NOT EXISTS ${this.t.entries} (idx bigint PRIMARY KEY CHECK (idx >= 0), leaf_hash bytea NOT NULL, entry bytea NOT NULL)`,
      );
      await c.query(
        `CREATE TABLE IF NOT EXISTS ${this.t.checkpoints} (seq bigserial PRIMARY KEY, size bigint NOT NULL, note text NOT NULL)`,
      );
      await c.query(`CREATE TABLE IF NOT EXISTS ${this.t.keys} (id text PRIMARY KEY, wrapped bytea NOT NULL)`);
      await c.query(
        `CREATE TABLE IF NOT EXISTS ${this.t.frontier} (id smallint PRIMARY KEY CHECK (id = 1), size bigint NOT NULL, data bytea NOT NULL)`,
      );
      await c.query(
        `CREATE OR REPLACE FUNCTION ${s}.append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'aegis audit tables are append-only'; END $$`,
      );
      for (const table of [this.t.entries, this.t.checkpoints]) {
        await c.query(
          `CREATE OR REPLACE TRIGGER append_only BEFORE UPDATE OR DELETE ON ${table} FOR EACH ROW EXECUTE FUNCTION ${s}.append_only()`,
        );
        await c.query(
          `CREATE OR REPLACE TRIGGER append_only_truncate BEFORE TRUNCATE ON ${table} FOR EACH STATEMENT EXECUTE FUNCTION ${s}.append_only()`,
        );
      }
    });
  }

  private async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    return inTransaction(this.pool, fn, {
      connect: (err) => io('cannot connect', err),
      failed: (err) => (err instanceof AuditError ? err : io('transaction failed', err)),
    });
  }

  private async q<R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(text, values);
    } catch (err) {
      throw io('query failed', err);
    }
  }

  private async count(c: pg.PoolClient | pg.Pool): Promise<number> {
    const r = await c.query<{ n: string }>(`SELECT coalesce(max(idx) + 1, 0)::text AS n FROM ${this.t.entries}`);
    return Number(r.rows[0]?.n ?? 0);
  }

  async readLeafHashes(from: number): Promise<{ size: number; hashes: Uint8Array }> {
    const parts: Buffer[] = [];
    let next = from;
    for (;;) {
      const r = await this.q<{ i: string; leaf_hash: Buffer }>(
        `SELECT idx::text AS i, leaf_hash FROM ${this.t.entries} WHERE idx >= $1 ORDER BY idx LIMIT ${PAGE}`,
        [next],
      );
      for (const row of r.rows) {
        if (Number(row.i) !== next) throw new AuditError('audit.store_corrupt', `${this.location}: entry ${next} is missing`);
        if (row.leaf_hash.length !== 32) throw new AuditError('audit.store_corrupt', `${this.location}: entry ${next} has a bad leaf hash`);
        parts.push(row.leaf_hash);
        next++;
      }
      if (r.rows.length < PAGE) break;
    }
    // Nothing at or after `from`: the size is what the table holds (possibly less than `from`).
    if (next === from && from > 0)
      return {
        size: await this.count(this.pool).catch((err: unknown) => Promise.reject(io('query failed', err))),
        hashes: new Uint8Array(0),
      };
    return { size: next, hashes: Buffer.concat(parts) };
  }

  async *readEntries(from: number, to?: number): AsyncIterable<StoredRecord> {
    // Positions are counted here, not taken from idx: a missing row shifts every later entry,
    // which verification then reports through the index recorded inside the entry.
    let pos = 0;
    let lastIdx = -1;
    for (;;) {
      const r = await this.q<{ i: string; leaf_hash: Buffer; entry: Buffer }>(
        `SELECT idx::text AS i, leaf_hash, entry FROM ${this.t.entries} WHERE idx > $1 ORDER BY idx LIMIT ${PAGE}`,
        [lastIdx],
      );
      for (const row of r.rows) {
        if (to !== undefined && pos >= to) return;
        if (pos >= from) yield { index: pos, leafHash: new Uint8Array(row.leaf_hash), entry: new Uint8Array(row.entry) };
        pos++;
        lastIdx = Number(row.i);
      }
      if (r.rows.length < PAGE) return;
    }
  }

  async append(start: number, batch: EntryBatch): Promise<void> {
    this.writable('append entries');
    if (batch.count === 0) return;
    const idx: string[] = [];
    const hashes: Buffer[] = [];
    const bodies: Buffer[] = [];
    for (let i = 0; i < batch.count; i++) {
      idx.push(String(start + i));
      hashes.push(Buffer.from(batchLeafHash(batch, i)));
      bodies.push(Buffer.from(batchEntry(batch, i)));
    }
    await this.tx(async (c) => {
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [this.lockKey]);
      const n = await this.count(c);
      if (n !== start) throw new AuditError('audit.conflict', `store holds ${n} entries, not ${start}`);
      await c.query(`INSERT INTO ${this.t.entries} (idx, leaf_hash, entry) SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])`, [
        idx,
        hashes,
        bodies,
      ]);
    });
  }

  async appendCheckpoint(size: number, note: string): Promise<void> {
    this.writable('store a checkpoint');
    await this.tx(async (c) => {
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [this.lockKey]);
      const r = await c.query<{ size: string }>(`SELECT size::text AS size FROM ${this.t.checkpoints} ORDER BY seq DESC LIMIT 1`);
      const last = r.rows[0];
      if (last !== undefined && Number(last.size) > size) {
        throw new AuditError('audit.checkpoint_inconsistent', `latest stored checkpoint has size ${last.size} > ${size}`);
      }
      await c.query(`INSERT INTO ${this.t.checkpoints} (size, note) VALUES ($1, $2)`, [size, note]);
    });
  }

  async readCheckpoints(): Promise<string[]> {
    const r = await this.q<{ note: string }>(`SELECT note FROM ${this.t.checkpoints} ORDER BY seq`);
    return r.rows.map((row) => row.note);
  }

  async putKey(id: string, wrapped: Uint8Array): Promise<void> {
    this.writable('store a key');
    await this.q(`INSERT INTO ${this.t.keys} (id, wrapped) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`, [id, Buffer.from(wrapped)]);
  }

  async getKey(id: string): Promise<Uint8Array | undefined> {
    const r = await this.q<{ wrapped: Buffer }>(`SELECT wrapped FROM ${this.t.keys} WHERE id = $1`, [id]);
    const row = r.rows[0];
    return row === undefined ? undefined : new Uint8Array(row.wrapped);
  }

  async listKeyIds(): Promise<string[]> {
    const r = await this.q<{ id: string }>(`SELECT id FROM ${this.t.keys} ORDER BY id`);
    return r.rows.map((row) => row.id);
  }

  async deleteKey(id: string): Promise<void> {
    this.writable('delete a key');
    await this.q(`DELETE FROM ${this.t.keys} WHERE id = $1`, [id]);
  }

  async writeFrontier(size: number, frontier: Uint8Array): Promise<void> {
    this.writable('save the frontier');
    await this.q(
      `INSERT INTO ${this.t.frontier} (id, size, data) VALUES (1, $1, $2) ON CONFLICT (id) DO UPDATE SET size = excluded.size, data = excluded.data`,
      [size, Buffer.from(frontier)],
    );
  }

  async readFrontier(): Promise<Uint8Array | undefined> {
    const r = await this.q<{ data: Buffer }>(`SELECT data FROM ${this.t.frontier} WHERE id = 1`);
    const row = r.rows[0];
    return row === undefined ? undefined : new Uint8Array(row.data);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  /** Drops the schema and everything in it (tests only). */
  static async dropSchema(url: string, schema: string): Promise<void> {
    if (!SCHEMA_RE.test(schema)) throw new AuditError('audit.store_io', 'invalid schema');
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    } finally {
      await c.end();
    }
  }
}
