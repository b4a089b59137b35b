/**
 * The shared AuditStore conformance suite against a real PostgreSQL server
 * (AEGIS_TEST_PG_URL, provided by scripts/pg-test.sh; scripts/test.sh and CI set it).
 * In CI (CI=true) a missing server is a failure, never a skip.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { openAuditLog, openAuditReader, openStore } from '../../src/audit/index.js';
import { storeConformance } from '../../src/audit/store/conformance.js';
import { PgStore } from '../../src/audit/store/pg-store.js';
import { AuditError } from '../../src/audit/errors.js';
import { entryBatch } from '../../src/audit/store/types.js';

const url = process.env['AEGIS_TEST_PG_URL'];
const inCi = process.env['CI'] === 'true';

if (url === undefined || url === '') {
  describe('AuditStore conformance: PostgreSQL', () => {
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
  storeConformance('PostgreSQL', async () => {
    const schema = `aegis_t_${randomBytes(6).toString('hex')}`;
    return { open: () => PgStore.open({ url: pgUrl, schema }), destroy: () => PgStore.dropSchema(pgUrl, schema) };
  });

  describe('PgStore', () => {
    it('refuses UPDATE and DELETE of entries at the database (append-only triggers)', async () => {
      const schema = `aegis_t_${randomBytes(6).toString('hex')}`;
      const s = await PgStore.open({ url: pgUrl, schema });
      try {
        const pg = (await import('pg')).default;
        const c = new pg.Client({ connectionString: pgUrl });
        await c.connect();
        await s.append(0, entryBatch([{ entry: Buffer.from('x'), leafHash: Buffer.alloc(32) }]));
        await assert.rejects(c.query(`DELETE FROM ${schema}.entries`), /append-only/u);
        await assert.rejects(c.query(`UPDATE ${schema}.entries SET entry = 'y'`), /append-only/u);
        await assert.rejects(c.query(`TRUNCATE ${schema}.entries`), /append-only/u);
        await c.end();
      } finally {
        await s.close();
        await PgStore.dropSchema(pgUrl, schema);
      }
    });

    it('reports an unreachable server as audit.store_io', async () => {
      await assert.rejects(
        PgStore.open({ url: 'postgres://nobody:x@127.0.0.1:1/none', schema: 'aegis_x' }),
        (err: unknown) => err instanceof AuditError && err.code === 'audit.store_io',
      );
    });

    it('backs `aegis audit verify`, which names an entry deleted at the database', async () => {
      const schema = `aegis_t_${randomBytes(6).toString('hex')}`;
      const home = await mkdtemp(join(tmpdir(), 'aegis-pg-cli-'));
      const env = { AEGIS_AUDIT_STORE: pgUrl, AEGIS_AUDIT_PG_SCHEMA: schema };
      const aegis = join(resolve(dirname(fileURLToPath(import.meta.url)), '../../..'), 'bin', 'aegis.js');
      const run = (args: string[]) =>
        promisify(execFile)(process.execPath, [aegis, ...args], {
          env: { PATH: process.env['PATH'] ?? '', AEGIS_HOME: home, ...env },
        }).then(
          (r) => ({ code: 0, stdout: r.stdout }),
          (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
        );
      try {
        const log = await openAuditLog({ home, env });
        await log.appendMany(
          Array.from({ length: 20 }, (_, i) => ({
            actor: { agent: 'pg' },
            action: 'test.event',
            decision: 'info' as const,
            payload: { i },
          })),
        );
        await log.close();
        const ok = await run(['audit', 'verify']);
        assert.equal(ok.code, 0, ok.stdout);
        assert.match(ok.stdout, /^ok: 20 entries, root /u);
        const pg = (await import('pg')).default;
        const c = new pg.Client({ connectionString: pgUrl });
        await c.connect();
        await c.query(`ALTER TABLE ${schema}.entries DISABLE TRIGGER append_only`);
        await c.query(`DELETE FROM ${schema}.entries WHERE idx = 5`);
        await c.end();
        const bad = await run(['audit', 'verify']);
        assert.equal(bad.code, 1);
        assert.match(bad.stdout, /^FAIL: entry 5: it records index 6/u);
      } finally {
        await PgStore.dropSchema(pgUrl, schema);
        await rm(home, { recursive: true, force: true });
      }
    });

    it('serves the read-only reader: entries and proofs read, nothing written, every write refused (read-only)', async () => {
      const schema = `aegis_t_${randomBytes(6).toString('hex')}`;
      const home = await mkdtemp(join(tmpdir(), 'aegis-pg-reader-'));
      const env = { AEGIS_AUDIT_STORE: pgUrl, AEGIS_AUDIT_PG_SCHEMA: schema };
      const pg = (await import('pg')).default;
      const c = new pg.Client({ connectionString: pgUrl });
      await c.connect();
      const counts = async (): Promise<string> =>
        JSON.stringify(
          await Promise.all(
            ['entries', 'checkpoints', 'keys', 'frontier'].map(
              async (t) => (await c.query(`SELECT count(*)::int AS n FROM ${schema}.${t}`)).rows[0],
            ),
          ),
        );
      try {
        const log = await openAuditLog({ home, env });
        await log.appendMany(
          Array.from({ length: 10 }, (_, i) => ({
            actor: { agent: 'pg' },
            action: 'test.event',
            decision: 'info' as const,
            payload: { i },
          })),
        );
        await log.close();
        const before = await counts();
        const reader = await openAuditReader({ home, env });
        try {
          assert.equal(reader.size, 10);
          const payloads = [];
          for await (const r of reader.read(0)) payloads.push((r.decoded?.event.payload as { i: number } | undefined)?.i);
          assert.deepEqual(payloads, [...Array(10).keys()]);
          const p = await reader.inclusionProof(3);
          assert.equal(p.proof.length > 0, true);
        } finally {
          await reader.close();
        }
        const store = await openStore(home, env, { readOnly: true });
        try {
          await assert.rejects(
            store.append(10, entryBatch([{ entry: Buffer.from('x'), leafHash: Buffer.alloc(32) }])),
            (e: unknown) => e instanceof AuditError && e.code === 'audit.read_only',
          );
          await assert.rejects(
            store.deleteKey((await store.listKeyIds())[0] as string),
            (e: unknown) => e instanceof AuditError && e.code === 'audit.read_only',
          );
        } finally {
          await store.close();
        }
        assert.equal(await counts(), before);
      } finally {
        await c.end();
        await PgStore.dropSchema(pgUrl, schema);
        await rm(home, { recursive: true, force: true });
      }
    });

    describe('when the log is opened for append from its saved frontier', () => {
      /** The store, counting the leaf hashes it hands out. */
      const counted = async (schema: string): Promise<{ store: PgStore; read: () => number }> => {
        const store = await PgStore.open({ url: pgUrl, schema });
        let read = 0;
        const orig = store.readLeafHashes.bind(store);
        store.readLeafHashes = async (from: number) => {
          const r = await orig(from);
          read += r.hashes.length / 32;
          return r;
        };
        return { store, read: () => read };
      };
      const ev = (i: number) => ({ actor: { agent: 'pg' }, action: 'test.event', decision: 'info' as const, payload: { i } });

      it('reads only the leaf hashes after the latest checkpoint; a forged frontier is refused; a missing one means a full rebuild', async () => {
        const schema = `aegis_t_${randomBytes(6).toString('hex')}`;
        const home = await mkdtemp(join(tmpdir(), 'aegis-pg-frontier-'));
        const env = { AEGIS_AUDIT_STORE: pgUrl, AEGIS_AUDIT_PG_SCHEMA: schema };
        try {
          const first = await openAuditLog({ home, env });
          for (let i = 0; i < 5000; i += 1000) await first.appendMany(Array.from({ length: 1000 }, (_, k) => ev(i + k)));
          await first.close();
          const a = await counted(schema);
          const log = await openAuditLog({ home, env, store: a.store, inlineEncoding: true });
          assert.equal(a.read(), 0);
          assert.equal(log.size, 5000);
          await log.appendMany([ev(5000), ev(5001)]);
          await log.close();

          const pg = (await import('pg')).default;
          const c = new pg.Client({ connectionString: pgUrl });
          await c.connect();
          try {
            // Forged: one subtree root changed, the torn-write checksum fixed up.
            const row = (await c.query<{ data: Buffer }>(`SELECT data FROM ${schema}.frontier`)).rows[0]!;
            const data = Buffer.from(row.data);
            data[16] = (data[16] as number) ^ 1;
            const { createHash } = await import('node:crypto');
            data.set(
              createHash('sha256')
                .update(data.subarray(0, data.length - 32))
                .digest(),
              data.length - 32,
            );
            await c.query(`UPDATE ${schema}.frontier SET data = $1`, [data]);
            await assert.rejects(
              openAuditLog({ home, env, inlineEncoding: true }),
              (err: unknown) => err instanceof AuditError && err.code === 'audit.store_corrupt',
            );

            await c.query(`DELETE FROM ${schema}.frontier`);
            const b = await counted(schema);
            const rebuilt = await openAuditLog({ home, env, store: b.store, inlineEncoding: true });
            assert.equal(b.read(), 5002);
            await rebuilt.close();
          } finally {
            await c.end();
          }
        } finally {
          await PgStore.dropSchema(pgUrl, schema);
          await rm(home, { recursive: true, force: true });
        }
      });
    });

    const tlsUrl = process.env['AEGIS_TEST_PG_TLS_URL'];
    // Outside CI a server without TLS skips these (with the reason); in CI scripts/pg-test.sh
    // always sets TLS up, so a missing URL is a failure.
    const noTls = tlsUrl === undefined && !inCi ? 'server offers no TLS (AEGIS_TEST_PG_TLS_URL unset)' : false;
    it('connects over TLS, verifying the server certificate against the given CA', { skip: noTls }, async () => {
      assert.ok(tlsUrl, 'AEGIS_TEST_PG_TLS_URL is not set: scripts/pg-test.sh could not enable TLS');
      const schema = `aegis_t_${randomBytes(6).toString('hex')}`;
      const s = await PgStore.open({ url: tlsUrl as string, schema, ca: process.env['AEGIS_TEST_PG_CA'] as string });
      await s.append(0, entryBatch([{ entry: Buffer.from('tls'), leafHash: Buffer.alloc(32) }]));
      assert.equal((await s.readLeafHashes(0)).size, 1);
      await s.close();
      await PgStore.dropSchema(pgUrl, schema);
    });
    it('refuses a TLS server whose certificate does not chain to the given CA (audit.store_io)', { skip: noTls }, async () => {
      assert.ok(tlsUrl, 'AEGIS_TEST_PG_TLS_URL is not set: scripts/pg-test.sh could not enable TLS');
      await assert.rejects(
        PgStore.open({ url: tlsUrl as string, schema: 'aegis_tls_wrong_ca', ca: '/etc/ssl/certs/ca-certificates.crt' }),
        (err: unknown) => err instanceof AuditError && err.code === 'audit.store_io' && /certificate/iu.test(err.message),
      );
    });
  });
}
