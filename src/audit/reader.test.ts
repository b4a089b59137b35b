import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditError } from './errors.js';
import { auditPaths, openAuditLog, openAuditReader, openStore, type Timers } from './index.js';
import { verifyConsistency, verifyInclusion } from './merkle/index.js';
import { FileStore } from './store/file-store.js';
import { entryBatch } from './store/types.js';

const DAY = 86_400_000;
const ENV = {};
const ev = (i: number, extra: object = {}) => ({
  actor: { agent: 'a1', execution: 'x1' },
  action: 'net.connect',
  decision: 'allow' as const,
  payload: { n: i },
  ...extra,
});

const manualTimers: Timers = { setInterval: () => 0, clearInterval: () => undefined };

async function withHome<T>(fn: (home: string) => Promise<T>): Promise<T> {
  const home = await mkdtemp(join(tmpdir(), 'aegis-reader-'));
  try {
    return await fn(home);
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

/** Every file and directory under `dir` with its mode and the SHA-256 of its bytes. */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const st = await stat(p);
      if (e.isDirectory()) {
        out.set(p, `dir ${st.mode.toString(8)}`);
        await walk(p);
      } else {
        out.set(
          p,
          `${st.mode.toString(8)} ${createHash('sha256')
            .update(await readFile(p))
            .digest('hex')}`,
        );
      }
    }
  };
  await walk(dir);
  return out;
}

/** A log written 200 days ago (its data keys are past the 90-day retention), 20 events. */
async function oldLog(home: string): Promise<void> {
  const then = Date.now() - 200 * DAY;
  const log = await openAuditLog({ home, env: ENV, clock: { now: () => then }, timers: manualTimers, inlineEncoding: true });
  await Promise.all(Array.from({ length: 20 }, (_, i) => log.append(ev(i, i === 3 ? { subject: 'user:dana' } : {}))));
  await log.close();
}

describe('AuditReader', () => {
  it('reads entries, proofs and the latest checkpoint without changing a byte under AEGIS_HOME', async () => {
    await withHome(async (home) => {
      await oldLog(home);
      const before = await snapshot(home);
      const reader = await openAuditReader({ home, env: ENV });
      assert.equal(reader.size, 20);
      const read = [];
      for await (const r of reader.read(0)) read.push(r);
      assert.equal(read.length, 20);
      assert.deepEqual(read[5]?.decoded?.event.payload, { n: 5 }, 'payload decrypted: retention was not applied');
      assert.match((await reader.latestCheckpoint()) ?? '', /\n20\n/u);
      const root = await reader.root();
      const p = await reader.inclusionProof(5, 20);
      assert.doesNotThrow(() => verifyInclusion(5, 20, p.leafHash, p.proof, root));
      const c = await reader.consistencyProof(7, 20);
      assert.deepEqual(c.root2, root);
      assert.doesNotThrow(() => verifyConsistency(7, 20, c.proof, c.root1, c.root2));
      await reader.refresh();
      await reader.close();
      assert.deepEqual(await snapshot(home), before);

      // The same steps through a writer do change the home (retention, today's data key,
      // checkpoint on close): what the comparison above would catch.
      const log = await openAuditLog({ home, env: ENV, timers: manualTimers, inlineEncoding: true });
      await log.close();
      assert.notDeepEqual(await snapshot(home), before);
    });
  });

  it('refuses every write through a read-only store (read-only), and creates no store on an empty home', async () => {
    await withHome(async (home) => {
      await assert.rejects(openAuditReader({ home, env: ENV }), (e: unknown) => e instanceof AuditError && e.code === 'audit.store_io');
      assert.deepEqual(await readdir(home), [], 'nothing created');
      await oldLog(home);
      const store = await openStore(home, ENV, { readOnly: true });
      const isReadOnly = (e: unknown): boolean => e instanceof AuditError && e.code === 'audit.read_only';
      await assert.rejects(store.append(20, entryBatch([{ leafHash: new Uint8Array(32), entry: new Uint8Array([1]) }])), isReadOnly);
      await assert.rejects(store.appendCheckpoint(20, 'x'), isReadOnly);
      await assert.rejects(store.putKey('k', new Uint8Array(60)), isReadOnly);
      await assert.rejects(store.deleteKey((await store.listKeyIds())[0] as string), isReadOnly);
      await assert.rejects(store.writeFrontier(20, new Uint8Array(0)), isReadOnly);
      await store.close();
      assert.equal(
        (await openStore(home, ENV).then(async (s) => [(await s.listKeyIds()).length, await s.close()]))[0],
        2,
        'both keys survive',
      );
    });
  });

  it('never creates a master key (audit.key_invalid when there is none)', async () => {
    await withHome(async (home) => {
      await oldLog(home);
      await rm(join(auditPaths(home).dir, 'master.key'));
      await assert.rejects(openAuditReader({ home, env: ENV }), (e: unknown) => e instanceof AuditError && e.code === 'audit.key_invalid');
      assert.equal(existsSync(join(auditPaths(home).dir, 'master.key')), false);
    });
  });

  it('reads a log on a host without its log.pub when the keys are given in the environment, creating nothing', async () => {
    await withHome(async (home) => {
      const { generateKeyPairSync, randomBytes } = await import('node:crypto');
      const env = {
        AEGIS_AUDIT_SIGNING_KEY: generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
        AEGIS_AUDIT_MASTER_KEY: randomBytes(32).toString('base64'),
      };
      const log = await openAuditLog({ home, env, timers: manualTimers, inlineEncoding: true });
      await log.appendMany([ev(0), ev(1), ev(2)]);
      await log.close();
      await rm(join(auditPaths(home).dir, 'log.pub'));
      const before = await snapshot(home);
      const reader = await openAuditReader({ home, env });
      const payloads = [];
      for await (const r of reader.read(0)) payloads.push(r.decoded?.event.payload);
      await reader.close();
      assert.deepEqual(payloads, [{ n: 0 }, { n: 1 }, { n: 2 }]);
      assert.deepEqual(await snapshot(home), before);
    });
  });

  it('refuses a store that disagrees with its signed checkpoint (audit.store_corrupt), like a writer', async () => {
    await withHome(async (home) => {
      await oldLog(home);
      // Append an entry behind the log's back, then a checkpoint file that claims a wrong root.
      const path = join(auditPaths(home).dir, 'checkpoints.jsonl');
      const lines = (await readFile(path, 'utf8')).trimEnd().split('\n');
      const last = JSON.parse(lines.at(-1) as string) as { size: number; note: string };
      const forged = last.note.replace(/\n20\n[A-Za-z0-9+/=]+\n/u, `\n20\n${Buffer.alloc(32, 7).toString('base64')}\n`);
      assert.notEqual(forged, last.note);
      await writeFile(path, `${lines.join('\n')}\n${JSON.stringify({ size: 20, note: forged })}\n`);
      await assert.rejects(
        openAuditReader({ home, env: ENV }),
        (e: unknown) => e instanceof AuditError && e.code === 'audit.store_corrupt',
      );
    });
  });

  it('reads beside a writer that appends and signs checkpoints meanwhile', async () => {
    await withHome(async (home) => {
      const fns: Array<() => void> = [];
      const timers: Timers = { setInterval: (fn) => (fns.push(fn), 0), clearInterval: () => undefined };
      const log = await openAuditLog({ home, env: ENV, timers, inlineEncoding: true, maxBatch: 7 });
      let writing = true;
      const writer = (async () => {
        for (let i = 0; writing; i++) {
          await log.appendMany(Array.from({ length: 13 }, (_, k) => ev(i * 13 + k)));
          if (i % 2 === 0) fns.forEach((f) => f());
          await log.checkpoint();
        }
      })();
      let lastSize = 0;
      let reads = 0;
      try {
        while (reads < 25) {
          const reader = await openAuditReader({ home, env: ENV });
          try {
            assert.ok(reader.size >= lastSize, 'the tree only grows');
            lastSize = reader.size;
            let n = 0;
            for await (const r of reader.read(0)) {
              assert.equal(r.error, undefined, r.error);
              n++;
            }
            assert.ok(n >= reader.size);
            await reader.refresh();
            assert.ok(reader.size >= lastSize);
          } finally {
            await reader.close();
          }
          reads++;
        }
      } finally {
        writing = false;
        await writer;
        await log.close();
      }
      assert.ok(lastSize > 0, 'the writer wrote while the readers read');
      const reader = await openAuditReader({ home, env: ENV });
      assert.deepEqual(await reader.root(), await log.root());
      await reader.close();
    });
  });

  it('opens a FileStore read-only without touching it, even an empty entries file', async () => {
    await withHome(async (home) => {
      const dir = auditPaths(home).dir;
      const { mkdir } = await import('node:fs/promises');
      await mkdir(dir);
      await writeFile(join(dir, 'entries.dat'), '');
      const before = await snapshot(home);
      const ro = await FileStore.open(dir, { readOnly: true });
      const { size, hashes } = await ro.readLeafHashes(0);
      assert.equal(size, 0);
      assert.equal(hashes.length, 0);
      await assert.rejects(
        ro.append(0, entryBatch([{ leafHash: new Uint8Array(32), entry: new Uint8Array([1]) }])),
        (e: unknown) => e instanceof AuditError && e.code === 'audit.read_only',
      );
      await ro.close();
      assert.deepEqual(await snapshot(home), before);
    });
  });
});
