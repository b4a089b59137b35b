/**
 * The one conformance suite every server Store runs (SQLite: sqlite.test.ts; PostgreSQL:
 * postgres.test.ts). A store passes only if it passes all of it.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { hasCode } from '../../test-support/errors.js';
import { type OutputLimits, TRUNCATION_MARKER, isTruncationMarker } from './common.js';
import { StoreError } from './errors.js';
import type { ApiKeyRecord, NewAgentVersion, NewExecution, Store } from './types.js';

export interface StoreFixture {
  /** The store under test, new and empty. */
  readonly store: Store;
  /** Another handle on the same database (a second worker, or a reopen after close). */
  reopen(): Promise<Store>;
  /** Removes the database (after every handle was closed). */
  destroy(): Promise<void>;
}

export type OpenFixture = (options?: { readonly output?: Partial<OutputLimits> }) => Promise<StoreFixture>;

function archive(text: string): { codeArchive: Buffer; codeDigest: string } {
  const codeArchive = Buffer.from(text);
  return { codeArchive, codeDigest: `sha256:${createHash('sha256').update(codeArchive).digest('hex')}` };
}

export function agentVersion(name: string, code = 'code-1', at = 1000): NewAgentVersion {
  const manifestText = `name: ${name}\n# deployed at ${at}\n`;
  return {
    name,
    manifestDigest: `sha256:${createHash('sha256').update(manifestText).digest('hex')}`,
    manifestText,
    ...archive(code),
    createdAt: at,
    createdBy: 'ak_test',
  };
}

export function newExecution(id: string, agent: string, version: number, at: number): NewExecution {
  return { id, agent, version, args: ['a', 'b c'], stdin: null, env: {}, createdAt: at, createdBy: 'ak_test' };
}

function key(id: string, at = 1000): ApiKeyRecord {
  return {
    id,
    role: 'operator',
    hash: `scrypt$16384$8$1$c2FsdA==$${id}`,
    createdAt: at,
    expiresAt: null,
    revokedAt: null,
    createdBy: 'local:0',
  };
}

const END = {
  status: 'exited',
  exitCode: 0,
  durationMs: 12,
  summary: { executionId: 'x', status: 'exited', exitCode: 0 },
  at: 9000,
} as const;

export function runStoreConformance(name: string, open: OpenFixture): void {
  describe(`Store conformance: ${name}`, () => {
    const fixtures: StoreFixture[] = [];
    const handles: Store[] = [];
    const fresh = async (options?: { readonly output?: Partial<OutputLimits> }): Promise<StoreFixture> => {
      const fx = await open(options);
      fixtures.push(fx);
      handles.push(fx.store);
      return fx;
    };
    const second = async (fx: StoreFixture): Promise<Store> => {
      const s = await fx.reopen();
      handles.push(s);
      return s;
    };
    after(async () => {
      for (const h of handles) await h.close().catch(() => undefined);
      for (const fx of fixtures) await fx.destroy();
    });

    it('stores API keys (hash only), lists and revokes them once', async () => {
      const { store } = await fresh();
      await store.createKey(key('ak_01'));
      await store.createKey({ ...key('ak_02', 2000), role: 'admin', expiresAt: 99_000 });
      await assert.rejects(store.createKey(key('ak_01')), hasCode(StoreError, 'store.conflict'));
      assert.deepEqual(await store.getKey('ak_01'), key('ak_01'));
      assert.equal(await store.getKey('ak_nope'), null);
      assert.deepEqual(
        (await store.listKeys()).map((k) => [k.id, k.role, k.expiresAt]),
        [
          ['ak_01', 'operator', null],
          ['ak_02', 'admin', 99_000],
        ],
      );
      assert.equal(await store.revokeKey('ak_01', 5000), true);
      assert.equal(await store.revokeKey('ak_01', 6000), false);
      assert.equal(await store.revokeKey('ak_nope', 6000), false);
      assert.equal((await store.getKey('ak_01'))?.revokedAt, 5000);
    });

    it('allocates agent versions, keeps one code archive per digest, deletes names but keeps versions', async () => {
      const { store } = await fresh();
      const v1 = await store.putAgentVersion(agentVersion('echo', 'code-A', 1000));
      const v2 = await store.putAgentVersion(agentVersion('echo', 'code-A', 2000));
      const other = await store.putAgentVersion(agentVersion('other', 'code-B', 1500));
      assert.deepEqual([v1.version, v2.version, other.version], [1, 2, 1]);
      assert.equal(v1.codeDigest, v2.codeDigest);
      assert.deepEqual(await store.getAgent('echo'), v2);
      assert.deepEqual(await store.getAgentVersion('echo', 1), v1);
      assert.equal(await store.getAgentVersion('echo', 3), null);
      assert.deepEqual(await store.getCodeArchive(v1.codeDigest), Buffer.from('code-A'));
      assert.equal(await store.getCodeArchive(`sha256:${'0'.repeat(64)}`), null);
      assert.deepEqual(
        (await store.listAgents()).map((a) => [a.name, a.version]),
        [
          ['echo', 2],
          ['other', 1],
        ],
      );
      // A digest that is not the archive's is refused: archives are stored under their digest.
      await assert.rejects(
        store.putAgentVersion({ ...agentVersion('bad', 'code-C'), codeDigest: agentVersion('x', 'code-D').codeDigest }),
        hasCode(StoreError, 'store.invalid'),
      );
      assert.equal(await store.getAgent('bad'), null);

      assert.equal(await store.deleteAgent('echo', 3000), true);
      assert.equal(await store.deleteAgent('echo', 3001), false);
      assert.equal(await store.deleteAgent('never', 3001), false);
      assert.equal(await store.getAgent('echo'), null);
      assert.deepEqual(await store.getAgentVersion('echo', 2), v2, 'versions stay for the executions that name them');
      assert.deepEqual(
        (await store.listAgents()).map((a) => a.name),
        ['other'],
      );
      // Redeploying a deleted name continues its numbering.
      const v3 = await store.putAgentVersion(agentVersion('echo', 'code-E', 4000));
      assert.equal(v3.version, 3);
      assert.deepEqual(await store.getAgent('echo'), v3);
    });

    it('allocates versions atomically under concurrent deploys from two handles', async () => {
      const fx = await fresh();
      const b = await second(fx);
      const made = await Promise.all(
        Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? fx.store : b).putAgentVersion(agentVersion('race', `code-${i % 3}`, 1000 + i))),
      );
      assert.deepEqual(
        made.map((m) => m.version).sort((x, y) => x - y),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
      );
      assert.equal((await fx.store.getAgent('race'))?.version, 10);
    });

    it('creates, reads and filters executions, newest first, with the limit', async () => {
      const { store } = await fresh();
      await store.putAgentVersion(agentVersion('a1'));
      await store.putAgentVersion(agentVersion('a2'));
      const e = await store.createExecution({ ...newExecution('ex-1', 'a1', 1, 100), stdin: 'in', env: { K: 'v' } });
      assert.equal(e.status, 'queued');
      assert.deepEqual(e.args, ['a', 'b c']);
      assert.deepEqual(e.env, { K: 'v' });
      assert.equal(e.stdin, 'in');
      assert.equal(e.cancelRequested, false);
      assert.equal(e.worker, null);
      await store.createExecution(newExecution('ex-2', 'a2', 1, 200));
      await store.createExecution(newExecution('ex-3', 'a1', 1, 300));
      await assert.rejects(store.createExecution(newExecution('ex-1', 'a1', 1, 400)), hasCode(StoreError, 'store.conflict'));
      await assert.rejects(store.createExecution(newExecution('ex-9', 'a1', 7, 400)), hasCode(StoreError, 'store.not_found'));
      await assert.rejects(store.createExecution(newExecution('ex-9', 'nope', 1, 400)), hasCode(StoreError, 'store.not_found'));
      assert.deepEqual(await store.getExecution('ex-1'), e);
      assert.equal(await store.getExecution('ex-9'), null);
      const ids = async (f: Parameters<Store['listExecutions']>[0]): Promise<string[]> => (await store.listExecutions(f)).map((x) => x.id);
      assert.deepEqual(await ids({}), ['ex-3', 'ex-2', 'ex-1']);
      assert.deepEqual(await ids({ agent: 'a1' }), ['ex-3', 'ex-1']);
      assert.deepEqual(await ids({ since: 150, until: 300 }), ['ex-3', 'ex-2']);
      assert.deepEqual(await ids({ limit: 1 }), ['ex-3']);
      await store.claimQueued('w1', 1, 500);
      assert.deepEqual(await ids({ status: 'running' }), ['ex-1']);
      assert.deepEqual(await ids({ status: 'queued' }), ['ex-3', 'ex-2']);
      await assert.rejects(store.listExecutions({ limit: 0 }), hasCode(StoreError, 'store.invalid'));
    });

    it('claims queued executions oldest first, up to the limit, never one twice', async () => {
      const { store } = await fresh();
      await store.putAgentVersion(agentVersion('a'));
      for (let i = 1; i <= 5; i++) await store.createExecution(newExecution(`ex-${i}`, 'a', 1, 100 * i));
      assert.deepEqual(await store.claimQueued('w1', 0, 600), []);
      const first = await store.claimQueued('w1', 2, 600);
      assert.deepEqual(
        first.map((e) => [e.id, e.status, e.worker, e.startedAt]),
        [
          ['ex-1', 'running', 'w1', 600],
          ['ex-2', 'running', 'w1', 600],
        ],
      );
      const rest = await store.claimQueued('w2', 10, 700);
      assert.deepEqual(
        rest.map((e) => e.id),
        ['ex-3', 'ex-4', 'ex-5'],
      );
      assert.deepEqual(await store.claimQueued('w2', 10, 800), []);
    });

    it('never hands one execution to two concurrent claimers', async () => {
      const fx = await fresh();
      const b = await second(fx);
      await fx.store.putAgentVersion(agentVersion('a'));
      for (let i = 0; i < 30; i++) await fx.store.createExecution(newExecution(`ex-${String(i).padStart(2, '0')}`, 'a', 1, i));
      const claims = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? fx.store : b).claimQueued(`w${i % 2}`, 3, 100)));
      const ids = claims.flat().map((e) => e.id);
      assert.equal(ids.length, 30);
      assert.equal(new Set(ids).size, 30);
      for (const batch of claims) for (const e of batch) assert.equal((await fx.store.getExecution(e.id))?.worker, e.worker);
    });

    it('finishes an execution once (the first end wins), from running or queued', async () => {
      const { store } = await fresh();
      await store.putAgentVersion(agentVersion('a'));
      await store.createExecution(newExecution('ex-1', 'a', 1, 1));
      await store.createExecution(newExecution('ex-2', 'a', 1, 2));
      await store.claimQueued('w1', 1, 10);
      assert.equal(await store.finishExecution('ex-1', END), true);
      assert.equal(await store.finishExecution('ex-1', { ...END, status: 'killed', exitCode: 137 }), false);
      const done = await store.getExecution('ex-1');
      assert.equal(done?.status, 'exited');
      assert.equal(done?.exitCode, 0);
      assert.equal(done?.durationMs, 12);
      assert.equal(done?.finishedAt, 9000);
      assert.deepEqual(done?.summary, END.summary);
      assert.equal(
        await store.finishExecution('ex-2', { status: 'killed', exitCode: null, durationMs: null, summary: null, at: 20 }),
        true,
      );
      const killed = await store.getExecution('ex-2');
      assert.equal(killed?.status, 'killed');
      assert.equal(killed?.summary, null);
      assert.equal(await store.finishExecution('ex-none', END), false);
      assert.deepEqual(await store.claimQueued('w1', 5, 30), [], 'a finished queued execution is not claimable');
    });

    it('records cancel requests and lists them per worker for running executions', async () => {
      const { store } = await fresh();
      await store.putAgentVersion(agentVersion('a'));
      for (let i = 1; i <= 4; i++) await store.createExecution(newExecution(`ex-${i}`, 'a', 1, i));
      await store.claimQueued('w1', 2, 10); // ex-1, ex-2 on w1
      await store.claimQueued('w2', 1, 10); // ex-3 on w2
      assert.equal((await store.requestCancel('ex-2'))?.cancelRequested, true);
      assert.equal((await store.requestCancel('ex-3'))?.cancelRequested, true);
      assert.equal((await store.requestCancel('ex-4'))?.cancelRequested, true, 'a queued execution can be cancelled');
      assert.equal(await store.requestCancel('ex-none'), null);
      assert.deepEqual(await store.cancelRequested('w1'), ['ex-2']);
      assert.deepEqual(await store.cancelRequested('w2'), ['ex-3']);
      await store.finishExecution('ex-2', { ...END, status: 'killed' });
      assert.deepEqual(await store.cancelRequested('w1'), []);
      const after1 = await store.requestCancel('ex-2');
      assert.equal(after1?.status, 'killed');
      assert.equal(after1?.cancelRequested, true);
      await store.finishExecution('ex-1', END);
      assert.equal((await store.requestCancel('ex-1'))?.cancelRequested, false, 'an ended execution is not flagged');
    });

    it('appends output in order and reads it after a sequence number, in pages', async () => {
      const { store } = await fresh();
      await store.putAgentVersion(agentVersion('a'));
      await store.createExecution(newExecution('ex-1', 'a', 1, 1));
      await store.createExecution(newExecution('ex-2', 'a', 1, 1));
      const s1 = await store.appendOutput('ex-1', [
        { kind: 'stdout', data: 'hello ' },
        { kind: 'stderr', data: 'warn\n' },
      ]);
      assert.deepEqual(
        s1.map((c) => c.seq),
        [1, 2],
      );
      await store.appendOutput('ex-2', [{ kind: 'stdout', data: 'other' }]);
      const s2 = await store.appendOutput('ex-1', [
        { kind: 'stdout', data: 'wörld\n' },
        { kind: 'audit', data: '{"action":"run.exit"}' },
        { kind: 'exit', data: '{"status":"exited","exitCode":0}' },
      ]);
      assert.deepEqual(
        s2.map((c) => c.seq),
        [3, 4, 5],
      );
      assert.deepEqual(await store.appendOutput('ex-1', []), []);
      const all = await store.readOutput('ex-1', 0, 100);
      assert.deepEqual(all, [...s1, ...s2]);
      assert.deepEqual(await store.readOutput('ex-1', 2, 2), s2.slice(0, 2));
      assert.deepEqual(await store.readOutput('ex-1', 5, 10), []);
      assert.deepEqual(await store.readOutput('ex-2', 0, 10), [{ seq: 1, kind: 'stdout', data: 'other' }]);
      assert.deepEqual(await store.readOutput('ex-none', 0, 10), []);
      await assert.rejects(store.appendOutput('ex-none', [{ kind: 'stdout', data: 'x' }]), hasCode(StoreError, 'store.not_found'));
      await assert.rejects(store.readOutput('ex-1', -1, 10), hasCode(StoreError, 'store.invalid'));
      await assert.rejects(store.appendOutput('ex-1', [{ kind: 'bogus' as 'stdout', data: 'x' }]), hasCode(StoreError, 'store.invalid'));
      assert.equal((await store.readOutput('ex-1', 0, 100)).length, 5, 'a refused append stores nothing');
    });

    it('caps output per execution: one truncation marker, later output dropped, the exit kept', async () => {
      const { store } = await fresh({ output: { maxBytes: 10, maxChunks: 1000 } });
      await store.putAgentVersion(agentVersion('a'));
      await store.createExecution(newExecution('ex-1', 'a', 1, 1));
      await store.createExecution(newExecution('ex-2', 'a', 1, 1));
      const a = await store.appendOutput('ex-1', [
        { kind: 'stdout', data: '12345' },
        { kind: 'stdout', data: '1234' },
      ]);
      assert.equal(a.length, 2);
      const b = await store.appendOutput('ex-1', [
        { kind: 'stderr', data: 'xx' }, // 11 bytes: past the cap
        { kind: 'stdout', data: 'y' },
      ]);
      assert.deepEqual(b, [{ seq: 3, kind: 'stderr', data: TRUNCATION_MARKER }]);
      assert.ok(isTruncationMarker(b[0] ?? { kind: 'stdout', data: '' }));
      const c = await store.appendOutput('ex-1', [
        { kind: 'audit', data: '{}' },
        { kind: 'exit', data: '{"status":"exited"}' },
      ]);
      assert.deepEqual(c, [{ seq: 4, kind: 'exit', data: '{"status":"exited"}' }]);
      const stored = await store.readOutput('ex-1', 0, 100);
      assert.equal(stored.filter(isTruncationMarker).length, 1);
      assert.deepEqual(
        stored.map((x) => x.kind),
        ['stdout', 'stdout', 'stderr', 'exit'],
      );
      // The cap is per execution.
      assert.equal((await store.appendOutput('ex-2', [{ kind: 'stdout', data: '1234567890' }])).length, 1);

      const byCount = await fresh({ output: { maxBytes: 1_000_000, maxChunks: 3 } });
      await byCount.store.putAgentVersion(agentVersion('a'));
      await byCount.store.createExecution(newExecution('ex-1', 'a', 1, 1));
      const d = await byCount.store.appendOutput(
        'ex-1',
        Array.from({ length: 5 }, () => ({ kind: 'stdout' as const, data: 'l\n' })),
      );
      assert.deepEqual(
        d.map((x) => (isTruncationMarker(x) ? 'marker' : x.kind)),
        ['stdout', 'stdout', 'marker'],
      );
    });

    it('keeps pool sizes; 0 removes a pool', async () => {
      const { store } = await fresh();
      await store.setPool('b', 2);
      await store.setPool('a', 1);
      await store.setPool('b', 3);
      assert.deepEqual(await store.listPools(), [
        { agent: 'a', warm: 1 },
        { agent: 'b', warm: 3 },
      ]);
      await store.setPool('a', 0);
      await store.setPool('never', 0);
      assert.deepEqual(await store.listPools(), [{ agent: 'b', warm: 3 }]);
      await assert.rejects(store.setPool('a', -1), hasCode(StoreError, 'store.invalid'));
      await assert.rejects(store.setPool('a', 1.5), hasCode(StoreError, 'store.invalid'));
    });

    it("reaps the running executions of stale workers (and a restarted worker's own) as lost, once", async () => {
      const { store } = await fresh();
      await store.putAgentVersion(agentVersion('a'));
      for (let i = 1; i <= 5; i++) await store.createExecution(newExecution(`ex-${i}`, 'a', 1, i));
      await store.heartbeat('dead', 1000);
      await store.heartbeat('alive', 1000);
      await store.claimQueued('dead', 2, 1100); // ex-1, ex-2
      await store.claimQueued('alive', 1, 1100); // ex-3
      await store.claimQueued('ghost', 1, 1100); // ex-4: a worker that never sent a heartbeat
      await store.finishExecution('ex-2', END);
      await store.heartbeat('alive', 5000);
      await store.heartbeat('alive', 4000); // an older heartbeat never moves it back
      const lost = await store.reapLost(3000, 6000);
      assert.deepEqual(
        lost.map((e) => [e.id, e.status, e.worker, e.finishedAt]),
        [
          ['ex-1', 'lost', 'dead', 6000],
          ['ex-4', 'lost', 'ghost', 6000],
        ],
      );
      assert.equal((await store.getExecution('ex-1'))?.status, 'lost');
      assert.equal((await store.getExecution('ex-2'))?.status, 'exited', 'finished executions are not touched');
      assert.equal((await store.getExecution('ex-3'))?.status, 'running');
      assert.equal((await store.getExecution('ex-5'))?.status, 'queued', 'queued executions wait for a live worker');
      assert.deepEqual(await store.reapLost(3000, 7000), [], 'reaped once');
      assert.equal(await store.finishExecution('ex-1', END), false, 'a lost execution stays lost');
      const own = await store.reapLost(3000, 8000, 'alive');
      assert.deepEqual(
        own.map((e) => e.id),
        ['ex-3'],
      );
    });

    it('keeps everything across close and reopen; a closed handle refuses work', async () => {
      const fx = await fresh();
      await fx.store.createKey(key('ak_x'));
      await fx.store.putAgentVersion(agentVersion('a'));
      await fx.store.createExecution(newExecution('ex-1', 'a', 1, 1));
      await fx.store.appendOutput('ex-1', [{ kind: 'stdout', data: 'kept' }]);
      await fx.store.setPool('a', 2);
      await fx.store.close();
      await fx.store.close();
      await assert.rejects(fx.store.getKey('ak_x'), hasCode(StoreError, 'store.closed'));
      await assert.rejects(fx.store.appendOutput('ex-1', []), hasCode(StoreError, 'store.closed'));
      const again = await second(fx);
      assert.deepEqual(await again.getKey('ak_x'), key('ak_x'));
      assert.equal((await again.getAgent('a'))?.version, 1);
      assert.equal((await again.getExecution('ex-1'))?.status, 'queued');
      assert.deepEqual(await again.readOutput('ex-1', 0, 10), [{ seq: 1, kind: 'stdout', data: 'kept' }]);
      assert.deepEqual(await again.listPools(), [{ agent: 'a', warm: 2 }]);
    });
  });
}
