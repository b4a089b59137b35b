import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { hasCode } from '../../test-support/errors.js';
import { agentVersion, newExecution, runStoreConformance } from './conformance.js';
import { StoreError } from './errors.js';
import { SQLITE_SCHEMA_VERSION, openSqliteStore } from './sqlite.js';

runStoreConformance('SQLite', async (options) => {
  const dir = await mkdtemp(join(tmpdir(), 'aegis-store-'));
  const path = join(dir, 'data', 'aegis.db');
  return {
    store: await openSqliteStore(path, options),
    reopen: () => openSqliteStore(path, options),
    destroy: () => rm(dir, { recursive: true, force: true }),
  };
});

describe('openSqliteStore', () => {
  const dirs: string[] = [];
  const tmp = async (): Promise<string> => {
    const d = await mkdtemp(join(tmpdir(), 'aegis-store-'));
    dirs.push(d);
    return d;
  };
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('creates the data folder 0700 and the database (and its WAL) 0600, in WAL mode with foreign keys', async () => {
    const dir = await tmp();
    const path = join(dir, 'data', 'aegis.db');
    const store = await openSqliteStore(path);
    await store.putAgentVersion(agentVersion('a'));
    assert.equal((await stat(join(dir, 'data'))).mode & 0o777, 0o700);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.equal((await stat(`${path}-wal`)).mode & 0o777, 0o600);
    await store.close();
    const db = new Database(path, { readonly: true });
    try {
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
      assert.equal((db.prepare('SELECT version FROM schema_version').get() as { version: number }).version, SQLITE_SCHEMA_VERSION);
    } finally {
      db.close();
    }
  });

  it('tightens a group-readable data folder of ours and a database file left 0644', async () => {
    const dir = await tmp();
    const data = join(dir, 'data');
    await mkdir(data, { mode: 0o755 });
    await chmod(data, 0o755);
    const path = join(data, 'aegis.db');
    await (await openSqliteStore(path)).close();
    await chmod(path, 0o644);
    await (await openSqliteStore(path)).close();
    assert.equal((await stat(data)).mode & 0o777, 0o700);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
  });

  it('refuses a database written by a newer schema and changes nothing', async () => {
    const dir = await tmp();
    const path = join(dir, 'aegis.db');
    await (await openSqliteStore(path)).close();
    const db = new Database(path);
    db.prepare('UPDATE schema_version SET version = ?').run(SQLITE_SCHEMA_VERSION + 1);
    db.close();
    await assert.rejects(openSqliteStore(path), hasCode(StoreError, 'store.schema_newer'));
    const check = new Database(path, { readonly: true });
    assert.equal((check.prepare('SELECT version FROM schema_version').get() as { version: number }).version, SQLITE_SCHEMA_VERSION + 1);
    check.close();
  });

  it('reads stored rows defensively: a tampered row is store.corrupt, not a crash or a wrong type', async () => {
    const dir = await tmp();
    const path = join(dir, 'aegis.db');
    const store = await openSqliteStore(path);
    await store.putAgentVersion(agentVersion('a'));
    await store.createExecution(newExecution('ex-1', 'a', 1, 1));
    await store.createExecution(newExecution('ex-2', 'a', 1, 2));
    const db = new Database(path);
    db.prepare(`UPDATE executions SET status = 'hijacked' WHERE id = 'ex-1'`).run();
    db.prepare(`UPDATE executions SET args = '{"not":"a list"}' WHERE id = 'ex-2'`).run();
    db.close();
    await assert.rejects(store.getExecution('ex-1'), hasCode(StoreError, 'store.corrupt'));
    await assert.rejects(store.getExecution('ex-2'), hasCode(StoreError, 'store.corrupt'));
    await store.close();
  });

  it('refuses invalid output limits', async () => {
    const dir = await tmp();
    await assert.rejects(openSqliteStore(join(dir, 'x.db'), { output: { maxBytes: 0 } }), hasCode(StoreError, 'store.invalid'));
  });
});
