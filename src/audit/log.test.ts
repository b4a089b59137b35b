import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditError } from './errors.js';
import {
  openAuditLog,
  openStore,
  auditPaths,
  trustedVerifier,
  publishedCheckpoints,
  verifyLog,
  type AuditLog,
  type Timers,
} from './index.js';
import { parseEntry } from './entry.js';
import { FileStore } from './store/file-store.js';

const DAY = 86_400_000;

/** A clock and interval timer the test drives by hand. */
function fakeTime(start = Date.parse('2026-11-25T12:00:00.000Z')) {
  let now = start;
  const fns: Array<() => void> = [];
  const timers: Timers = { setInterval: (fn) => (fns.push(fn), fns.length - 1), clearInterval: () => undefined };
  return { clock: { now: () => now }, timers, advance: (ms: number) => void (now += ms), fire: () => fns.forEach((f) => f()) };
}

async function withHome<T>(fn: (home: string) => Promise<T>): Promise<T> {
  const home = await mkdtemp(join(tmpdir(), 'aegis-home-'));
  try {
    return await fn(home);
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

const ENV = {};
const ev = (i: number, extra: object = {}) => ({
  actor: { agent: 'a1', execution: 'x1' },
  action: 'net.connect',
  decision: 'allow' as const,
  payload: { host: `h${i}.example`, n: i },
  ...extra,
});

async function verify(home: string) {
  const store = await openStore(home, ENV);
  try {
    const { verifier } = await trustedVerifier(home, ENV);
    return await verifyLog({ store, verifier, origin: verifier.name, published: await publishedCheckpoints(home, ENV) });
  } finally {
    await store.close();
  }
}

async function entries(log: AuditLog, home: string) {
  const store = await FileStore.open(auditPaths(home).dir);
  const out = [];
  for await (const r of store.readEntries(0)) {
    assert.equal(r.error, undefined);
    if (r.error === undefined) out.push({ raw: Buffer.from(r.entry), dec: await log.decrypt(r.index, r.entry) });
  }
  await store.close();
  return out;
}

describe('AuditLog', () => {
  it('acknowledges appends, encrypts payloads, signs a checkpoint, and verifies', async () => {
    await withHome(async (home) => {
      const t = fakeTime();
      const log = await openAuditLog({ home, env: ENV, clock: t.clock, timers: t.timers });
      await Promise.all(Array.from({ length: 50 }, (_, i) => log.append(ev(i))));
      assert.equal(log.size, 50);
      t.fire();
      await log.flush();
      await log.checkpoint();
      const note = await log.latestCheckpoint();
      assert.match(note ?? '', /\n50\n/u);
      const es = await entries(log, home);
      assert.equal(es.length, 50);
      assert.ok(!es[7]!.raw.toString().includes('h7.example'), 'payload is not stored in the clear');
      assert.deepEqual(es[7]!.dec.event.payload, { host: 'h7.example', n: 7 });
      assert.equal(es[7]!.dec.event.actor.agent, 'a1');
      // ids are time-ordered UUIDv7
      const ids = es.map((e) => e.dec.event.id);
      assert.deepEqual([...ids].sort(), ids);
      await log.close();
      const r = await verify(home);
      assert.ok(r.ok, r.ok ? '' : r.problem);
      assert.equal(r.ok && r.size, 50);
      // keys are 0600
      const { stat } = await import('node:fs/promises');
      assert.equal((await stat(join(home, 'audit', 'log.key'))).mode & 0o777, 0o600);
      assert.equal((await stat(join(home, 'audit', 'master.key'))).mode & 0o777, 0o600);
    });
  });

  it('binds each ciphertext to its position (AAD): decrypting at another index fails', async () => {
    await withHome(async (home) => {
      const log = await openAuditLog({ home, env: ENV });
      await log.append(ev(0));
      await log.append(ev(1));
      const es = await entries(log, home);
      await assert.rejects(log.decrypt(1, es[0]!.raw), (err: unknown) => err instanceof AuditError && err.code === 'audit.decrypt_failed');
      await log.close();
    });
  });

  it('produces inclusion and consistency proofs for the stored tree', async () => {
    await withHome(async (home) => {
      const log = await openAuditLog({ home, env: ENV });
      for (let i = 0; i < 13; i++) await log.append(ev(i));
      const { verifyInclusion, verifyConsistency } = await import('./merkle/index.js');
      const p = await log.inclusionProof(5, 11);
      verifyInclusion(5, 11, p.leafHash, p.proof, p.root);
      const c = await log.consistencyProof(4, 13);
      verifyConsistency(4, 13, c.proof, c.root1, c.root2);
      await log.close();
    });
  });

  it('appendMany acknowledges a batch once, and appends nothing when one event is invalid', async () => {
    await withHome(async (home) => {
      const log = await openAuditLog({ home, env: ENV });
      await log.appendMany(Array.from({ length: 300 }, (_, i) => ev(i)));
      assert.equal(log.size, 300);
      await assert.rejects(
        log.appendMany([ev(1), { ...ev(2), decision: 'maybe' as never }]),
        (err: unknown) => err instanceof AuditError && err.code === 'audit.event_invalid',
      );
      await log.flush();
      assert.equal(log.size, 300);
      await log.close();
      const r = await verify(home);
      assert.ok(r.ok && r.size === 300);
    });
  });

  describe('when two processes write to the same store', () => {
    it('interleaves their batches without losing or duplicating any event', async () => {
      await withHome(async (home) => {
        const a = await openAuditLog({ home, env: ENV });
        const b = await openAuditLog({ home, env: ENV });
        await Promise.all([
          ...Array.from({ length: 200 }, (_, i) => a.append(ev(i, { action: 'a.write' }))),
          ...Array.from({ length: 200 }, (_, i) => b.append(ev(i, { action: 'b.write' }))),
        ]);
        await a.checkpoint();
        await b.checkpoint();
        await a.close();
        await b.close();
        const r = await verify(home);
        assert.ok(r.ok, r.ok ? '' : r.problem);
        assert.equal(r.ok && r.size, 400);
      });
    });
  });

  describe('when another writer signs a bigger checkpoint while this one is writing', () => {
    it('keeps its tree exact and signs only checkpoints consistent with the other writer', async () => {
      await withHome(async (home) => {
        const t = fakeTime();
        const a = await openAuditLog({ home, env: ENV, timers: t.timers });
        const b = await openAuditLog({ home, env: ENV, timers: t.timers });
        for (let round = 0; round < 5; round++) {
          await Promise.all(Array.from({ length: 20 }, (_, i) => b.append(ev(i, { action: 'b.write' }))));
          await b.checkpoint();
          const writes = Promise.all(Array.from({ length: 20 }, (_, i) => a.append(ev(i, { action: 'a.write' }))));
          await a.checkpoint(); // may run while a's batch is in flight
          await writes;
          await a.checkpoint();
        }
        await a.close();
        await b.close();
        const r = await verify(home);
        assert.ok(r.ok, r.ok ? '' : r.problem);
        assert.equal(r.ok && r.size, 200);
      });
    });
  });

  describe('retention', () => {
    it('destroys payload keys older than the period; hashes and proofs remain', async () => {
      await withHome(async (home) => {
        const t = fakeTime();
        const log = await openAuditLog({ home, env: ENV, clock: t.clock, timers: t.timers, retentionDays: 90 });
        await log.append(ev(1));
        t.advance(10 * DAY);
        await log.append(ev(2));
        t.advance(85 * DAY); // event 1 is now 95 days old, event 2 85 days
        const destroyed = await log.applyRetention();
        assert.equal(destroyed.length, 1);
        const es = await entries(log, home);
        assert.equal(es[0]!.dec.keyDestroyed, true);
        assert.equal(es[0]!.dec.event.payload, null);
        assert.deepEqual(es[1]!.dec.event.payload, { host: 'h2.example', n: 2 });
        await log.close();
        const r = await verify(home);
        assert.ok(r.ok, r.ok ? '' : r.problem);
      });
    });
  });

  describe('erasure', () => {
    it('forget() shreds the subject key, logs subject-erased, and the log still verifies', async () => {
      await withHome(async (home) => {
        const log = await openAuditLog({ home, env: ENV });
        await log.append(ev(1, { subject: 'user:alice' }));
        await log.append(ev(2, { subject: 'user:bob' }));
        await log.append(ev(3));
        await log.checkpoint();
        assert.equal(await log.forget('user:alice'), 1);
        const es = await entries(log, home);
        assert.equal(es.length, 4);
        assert.ok(!es[0]!.raw.toString().includes('alice'), 'the subject id is not stored in the clear');
        assert.equal(es[0]!.dec.keyDestroyed, true);
        assert.equal(es[1]!.dec.event.subject, 'user:bob');
        assert.deepEqual(es[2]!.dec.event.payload, { host: 'h3.example', n: 3 });
        assert.equal(es[3]!.dec.event.action, 'audit.subject-erased');
        assert.equal(parseEntry(es[3]!.raw).index, 3);
        assert.ok(!JSON.stringify(es[3]!.dec.event).includes('alice'));
        await log.close();
        const r = await verify(home);
        assert.ok(r.ok, r.ok ? '' : r.problem);
        assert.equal(r.ok && r.size, 4);
      });
    });
  });

  describe('when the event is invalid', () => {
    for (const [what, bad] of [
      ['the action is not a dotted name', { ...ev(0), action: 'Net Connect' }],
      ['the decision is unknown', { ...ev(0), decision: 'maybe' }],
      ['the payload is not JSON', { ...ev(0), payload: { n: Number.NaN } }],
      ['the payload is an array', { ...ev(0), payload: [] }],
      ['the id is not a UUIDv7', { ...ev(0), id: 'abc' }],
      ['the time is not RFC 3339 UTC', { ...ev(0), time: '2026-11-25 10:00' }],
    ] as const) {
      it(`rejects it with audit.event_invalid when ${what}`, async () => {
        await withHome(async (home) => {
          const log = await openAuditLog({ home, env: ENV });
          await assert.rejects(log.append(bad as never), (err: unknown) => err instanceof AuditError && err.code === 'audit.event_invalid');
          assert.equal(log.size, 0);
          await log.close();
        });
      });
    }
  });

  describe('when the store no longer matches its latest checkpoint', () => {
    it('refuses to open for appending (audit.store_corrupt)', async () => {
      await withHome(async (home) => {
        const log = await openAuditLog({ home, env: ENV });
        for (let i = 0; i < 5; i++) await log.append(ev(i));
        await log.close();
        const { truncate, stat } = await import('node:fs/promises');
        const path = join(home, 'audit', 'entries.dat');
        const data = await readFile(path);
        await truncate(path, data.length - 10); // cut the last record
        const st = await stat(path);
        assert.ok(st.size < data.length);
        // The reader stops before the incomplete record: 4 entries, checkpoint says 5.
        await assert.rejects(
          openAuditLog({ home, env: ENV }),
          (err: unknown) => err instanceof AuditError && err.code === 'audit.store_corrupt',
        );
      });
    });
  });

  it('takes the signing and master keys from the environment when given', async () => {
    await withHome(async (home) => {
      const { generateKeyPairSync, randomBytes } = await import('node:crypto');
      const { privateKey } = generateKeyPairSync('ed25519');
      const env = {
        AEGIS_AUDIT_SIGNING_KEY: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
        AEGIS_AUDIT_MASTER_KEY: randomBytes(32).toString('base64'),
        AEGIS_AUDIT_ORIGIN: 'example.org/shared-log',
      };
      const log = await openAuditLog({ home, env });
      await log.append(ev(1));
      await log.close();
      const { existsSync } = await import('node:fs');
      assert.equal(existsSync(join(home, 'audit', 'log.key')), false);
      assert.equal(existsSync(join(home, 'audit', 'master.key')), false);
      const pub = await readFile(join(home, 'audit', 'log.pub'), 'utf8');
      assert.match(pub, /^example\.org\/shared-log\+[0-9a-f]{8}\+/u);
      const { rawEd25519PublicKey } = await import('./checkpoint/note.js');
      const { createPublicKey } = await import('node:crypto');
      const raw = Buffer.from(rawEd25519PublicKey(createPublicKey(privateKey))).toString('base64');
      assert.equal(Buffer.from(pub.trim().split('+').slice(2).join('+'), 'base64').subarray(1).toString('base64'), raw);
      // Opening with another master key cannot decrypt the payload (audit.key_invalid on unwrap).
      const other = await openAuditLog({ home, env: { ...env, AEGIS_AUDIT_MASTER_KEY: randomBytes(32).toString('base64') } });
      const read = [];
      for await (const r of other.read(0)) read.push(r);
      assert.match(read[0]?.error ?? '', /does not unwrap/u);
      await other.close();
    });
  });

  describe('when the signing key changes under an existing log', () => {
    it('refuses to open (audit.key_invalid: log.pub does not match)', async () => {
      await withHome(async (home) => {
        const log = await openAuditLog({ home, env: ENV });
        await log.close();
        const { rm: rmf } = await import('node:fs/promises');
        await rmf(join(home, 'audit', 'log.key'));
        await assert.rejects(
          openAuditLog({ home, env: ENV }),
          (err: unknown) => err instanceof AuditError && err.code === 'audit.key_invalid',
        );
      });
    });
  });

  describe('when the key files are readable by others', () => {
    it('refuses them (audit.key_invalid)', async () => {
      await withHome(async (home) => {
        const log = await openAuditLog({ home, env: ENV });
        await log.close();
        const { chmod } = await import('node:fs/promises');
        await chmod(join(home, 'audit', 'log.key'), 0o644);
        await assert.rejects(
          openAuditLog({ home, env: ENV }),
          (err: unknown) => err instanceof AuditError && err.code === 'audit.key_invalid',
        );
      });
    });
  });
});

describe('when a configuration variable is invalid', () => {
  // Regression: these were reported as audit.key_invalid (retention) and audit.store_io (store setting).
  const isConfig = (err: unknown): boolean => err instanceof AuditError && err.code === 'audit.config_invalid';
  it('AEGIS_AUDIT_RETENTION_DAYS that is not a whole number of days is audit.config_invalid', async () => {
    await withHome(async (home) => {
      for (const bad of ['-1', '1.5', 'ninety', '7d']) {
        await assert.rejects(openAuditLog({ home, env: { AEGIS_AUDIT_RETENTION_DAYS: bad } }), isConfig, bad);
      }
    });
  });

  it('AEGIS_AUDIT_STORE that is neither "file" nor a postgres:// URL is audit.config_invalid', async () => {
    await withHome(async (home) => {
      await assert.rejects(openAuditLog({ home, env: { AEGIS_AUDIT_STORE: 'mysql://x' } }), isConfig);
      await assert.rejects(openStore(home, { AEGIS_AUDIT_STORE: 'sqlite' }), isConfig);
    });
  });
});
