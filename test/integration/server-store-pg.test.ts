/**
 * The shared server Store conformance suite against a real PostgreSQL server, and claims from
 * two stores on one database (AEGIS_TEST_PG_URL, provided by scripts/pg-test.sh; scripts/test.sh
 * and CI set it). In CI (CI=true) a missing server is a failure, never a skip.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { hasCode } from '../../src/test-support/errors.js';
import { agentVersion, newExecution, runStoreConformance } from '../../src/server/store/conformance.js';
import type { ExecutionEngine } from '../../src/orchestrator/types.js';
import { Dispatcher } from '../../src/server/dispatcher.js';
import { StoreError } from '../../src/server/store/errors.js';
import { PG_SCHEMA_VERSION, dropPostgresSchema, openPostgresStore } from '../../src/server/store/postgres.js';

const url = process.env['AEGIS_TEST_PG_URL'];

async function until<T>(
  what: string,
  fn: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  ms = 15_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== null && v !== undefined && v !== false) return v;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
const inCi = process.env['CI'] === 'true';

if (url === undefined || url === '') {
  describe('Store conformance: PostgreSQL', () => {
    if (inCi) {
      it('has a PostgreSQL server to test against', () => {
        assert.fail('AEGIS_TEST_PG_URL is not set in CI: run `eval "$(bash scripts/pg-test.sh)"` first');
      });
    } else {
      it(
        'is skipped: AEGIS_TEST_PG_URL is not set (run `eval "$(bash scripts/pg-test.sh)"` to provide a server)',
        { skip: 'no PostgreSQL server: AEGIS_TEST_PG_URL unset' },
        () => {},
      );
    }
  });
} else {
  const pgUrl = url;
  const newSchema = (): string => `aegis_st_${randomBytes(6).toString('hex')}`;

  runStoreConformance('PostgreSQL', async (options) => {
    const schema = newSchema();
    return {
      store: await openPostgresStore(pgUrl, { ...options, schema }),
      reopen: () => openPostgresStore(pgUrl, { ...options, schema }),
      destroy: () => dropPostgresSchema(pgUrl, schema),
    };
  });

  describe('openPostgresStore', () => {
    it('two stores on one database claiming from one queue never claim an execution twice', async () => {
      const schema = newSchema();
      const a = await openPostgresStore(pgUrl, { schema, connections: 6 });
      const b = await openPostgresStore(pgUrl, { schema, connections: 6 });
      try {
        await a.putAgentVersion(agentVersion('q'));
        const total = 200;
        for (let i = 0; i < total; i++) await (i % 2 === 0 ? a : b).createExecution(newExecution(`ex-${i}`, 'q', 1, i));
        // Each store runs several claimers at once, as a worker with free slots does, until the queue is empty.
        const claimed = new Map<string, string>();
        const claimer = async (s: typeof a, worker: string): Promise<void> => {
          for (;;) {
            const got = await s.claimQueued(worker, 3, 1);
            if (got.length === 0) return;
            for (const e of got) {
              assert.equal(claimed.has(e.id), false, `${e.id} claimed by ${claimed.get(e.id)} and ${worker}`);
              claimed.set(e.id, worker);
            }
          }
        };
        await Promise.all([
          ...Array.from({ length: 4 }, (_, i) => claimer(a, `A${i}`)),
          ...Array.from({ length: 4 }, (_, i) => claimer(b, `B${i}`)),
        ]);
        assert.equal(claimed.size, total);
        const workers = new Set(claimed.values());
        assert.ok([...workers].some((w) => w.startsWith('A')) && [...workers].some((w) => w.startsWith('B')), 'both stores claimed');
        // What the database says agrees with what each claimer got.
        const rows = await a.listExecutions({ status: 'running', limit: 1000 });
        assert.equal(rows.length, total);
        for (const e of rows) assert.equal(e.worker, claimed.get(e.id));
      } finally {
        await a.close();
        await b.close();
        await dropPostgresSchema(pgUrl, schema);
      }
    });

    it('two reapers report a lost execution once', async () => {
      const schema = newSchema();
      const a = await openPostgresStore(pgUrl, { schema });
      const b = await openPostgresStore(pgUrl, { schema });
      try {
        await a.putAgentVersion(agentVersion('q'));
        for (let i = 0; i < 20; i++) await a.createExecution(newExecution(`ex-${i}`, 'q', 1, i));
        await a.heartbeat('dead', 1);
        await a.claimQueued('dead', 20, 2);
        const [ra, rb] = await Promise.all([a.reapLost(100, 200), b.reapLost(100, 200)]);
        const ids = [...ra, ...rb].map((e) => e.id);
        assert.equal(ids.length, 20);
        assert.equal(new Set(ids).size, 20);
      } finally {
        await a.close();
        await b.close();
        await dropPostgresSchema(pgUrl, schema);
      }
    });

    it('wakes subscribers when any handle creates an execution, and again after their connection was killed', async () => {
      const schema = newSchema();
      const a = await openPostgresStore(pgUrl, { schema });
      const b = await openPostgresStore(pgUrl, { schema });
      const admin = new pg.Client({ connectionString: pgUrl });
      await admin.connect();
      try {
        await a.putAgentVersion(agentVersion('q'));
        let wakes = 0;
        const unsubscribe = await b.subscribeQueued!(() => wakes++);
        const base = wakes; // one wake-up at subscription (anything missed while connecting)
        await a.createExecution(newExecution('ex-1', 'q', 1, 1));
        await until('a wake-up', () => wakes > base);
        // The listening connection dies (a database restart, a proxy timeout): it is made again.
        const killed = await admin.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1 AND usename = current_user`,
          [`LISTEN ${schema}_queued`],
        );
        assert.equal(killed.rowCount, 1);
        const before = wakes;
        await until('the listener to come back', () => wakes > before); // the wake-up after reconnecting
        const after1 = wakes;
        await a.createExecution(newExecution('ex-2', 'q', 1, 2));
        await until('a wake-up after the reconnect', () => wakes > after1);
        await unsubscribe();
      } finally {
        await admin.end();
        await a.close();
        await b.close();
        await dropPostgresSchema(pgUrl, schema);
      }
    });

    it('an idle dispatcher claims what another handle queued at once, without waiting for its poll', async () => {
      const schema = newSchema();
      const a = await openPostgresStore(pgUrl, { schema });
      const b = await openPostgresStore(pgUrl, { schema });
      const dir = await mkdtemp(join(tmpdir(), 'aegis-pg-wake-'));
      const started: string[] = [];
      const engine: ExecutionEngine = {
        execute: (req) => {
          started.push(req.executionId);
          const summary = {
            executionId: req.executionId,
            status: 'exited' as const,
            exitCode: 0,
            durationMs: 0,
            cpuMs: 0,
            maxMemoryBytes: 0,
            warm: false,
          };
          return { executionId: req.executionId, cancel: () => undefined, done: Promise.resolve(summary) };
        },
        setPool: () => undefined,
        pools: () => [],
        metrics: () => ({ startLatency: { warm: [], cold: [] }, running: 0 }),
        shutdown: () => Promise.resolve(),
      };
      // Polls once a minute: only the wake-up can make it claim within the test.
      const d = new Dispatcher({
        store: b,
        engine,
        workerId: 'w-idle',
        dataDir: join(dir, 'data'),
        capacity: 2,
        audit: { append: () => undefined },
        pollMs: 60_000,
        heartbeatMs: 60_000,
        staleMs: 600_000,
        extract: async (archive, dest) => {
          await mkdir(dest);
          return { digest: `sha256:${createHash('sha256').update(archive).digest('hex')}` };
        },
      });
      try {
        await a.putAgentVersion(agentVersion('q'));
        await d.start();
        await new Promise((r) => setTimeout(r, 200)); // past the start's own claim
        await a.createExecution(newExecution('ex-1', 'q', 1, 1));
        await until('the idle worker to run ex-1', () => started.includes('ex-1'), 10_000);
        const rec = await until('ex-1 to end', async () => {
          const r = await a.getExecution('ex-1');
          return r?.status === 'exited' ? r : null;
        });
        assert.equal(rec.worker, 'w-idle');
      } finally {
        await d.stop();
        await a.close();
        await b.close();
        await dropPostgresSchema(pgUrl, schema);
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('refuses a schema written by a newer AEGIS, and an invalid schema name', async () => {
      const schema = newSchema();
      await (await openPostgresStore(pgUrl, { schema })).close();
      const c = new pg.Client({ connectionString: pgUrl });
      await c.connect();
      try {
        await c.query(`UPDATE ${schema}.schema_version SET version = $1`, [PG_SCHEMA_VERSION + 1]);
        await assert.rejects(openPostgresStore(pgUrl, { schema }), hasCode(StoreError, 'store.schema_newer'));
        const r = await c.query<{ version: number }>(`SELECT version FROM ${schema}.schema_version`);
        assert.equal(r.rows[0]?.version, PG_SCHEMA_VERSION + 1);
      } finally {
        await c.end();
        await dropPostgresSchema(pgUrl, schema);
      }
      await assert.rejects(openPostgresStore(pgUrl, { schema: 'x; DROP TABLE y' }), hasCode(StoreError, 'store.invalid'));
    });

    it('reads stored rows defensively: a tampered row is store.corrupt', async () => {
      const schema = newSchema();
      const s = await openPostgresStore(pgUrl, { schema });
      const c = new pg.Client({ connectionString: pgUrl });
      await c.connect();
      try {
        await s.putAgentVersion(agentVersion('q'));
        await s.createExecution(newExecution('ex-1', 'q', 1, 1));
        await c.query(`UPDATE ${schema}.executions SET env = '["x"]' WHERE id = 'ex-1'`);
        await assert.rejects(s.getExecution('ex-1'), hasCode(StoreError, 'store.corrupt'));
      } finally {
        await c.end();
        await s.close();
        await dropPostgresSchema(pgUrl, schema);
      }
    });
  });
}
