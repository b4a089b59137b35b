/**
 * The shared server Store conformance suite against a real PostgreSQL server, and claims from
 * two stores on one database (AEGIS_TEST_PG_URL, provided by scripts/pg-test.sh; scripts/test.sh
 * and CI set it). In CI (CI=true) a missing server is a failure, never a skip.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { hasCode } from '../../src/test-support/errors.js';
import { agentVersion, newExecution, runStoreConformance } from '../../src/server/store/conformance.js';
import { StoreError } from '../../src/server/store/errors.js';
import { PG_SCHEMA_VERSION, dropPostgresSchema, openPostgresStore } from '../../src/server/store/postgres.js';

const url = process.env['AEGIS_TEST_PG_URL'];
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
